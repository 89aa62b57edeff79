/* NEON micro-kernels (128-bit, 4 floats) for aarch64 and for armv7 built with NEON
 * (-mfpu=neon-vfpv4 -mfloat-abi=hard). On armv7 there is no fused multiply-add in the base NEON
 * intrinsics we rely on (vmlaq_f32 rounds twice), and no 64-bit lane sums; both are handled below.
 * Table lookups are scalar loads into lanes: NEON has no float gather. */
#if defined(__ARM_NEON) || defined(__ARM_NEON__) || defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#include "../em_internal.h"
#include "../opt/em_micro.h"

typedef float32x4_t emv;
#define EMV_W 4
#if defined(__aarch64__)
#define EMV_GEMM_MR 8 /* 32 Q registers: 8 × 2 accumulators */
/* FMLA by element: acc + b · a[lane] (same single rounding as vfmaq_f32) */
#define EMV_FMA_LANE(acc, b, a, lane) vfmaq_laneq_f32((acc), (b), (a), (lane))
#else
#define EMV_GEMM_MR 6 /* 16 Q registers on armv7 */
#endif
#define EMV_FN(name) name##_neon

#define emv_zero() vdupq_n_f32(0.0f)
#define emv_set1(x) vdupq_n_f32(x)
#define emv_loadu(p) vld1q_f32(p)
#define emv_storeu(p, v) vst1q_f32((p), (v))
#define emv_add(a, b) vaddq_f32((a), (b))
/* ReLU as em_activate: FMAX / FMIN (VMAX / VMIN) return NaN when an operand is NaN, and max(-0, +0) = +0 */
static inline float32x4_t emv_relu(float32x4_t v)
{
    return vmaxq_f32(v, vdupq_n_f32(0.0f));
}
static inline float32x4_t emv_relu6(float32x4_t v)
{
    return vminq_f32(emv_relu(v), vdupq_n_f32(6.0f));
}
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
#define emv_fma(a, b, c) vfmaq_f32((c), (a), (b))
#else
#define emv_fma(a, b, c) vmlaq_f32((c), (a), (b))
#endif

/* Tails (n < 4 lanes) with lane loads and stores, not a memcpy through the stack: the planar LUT
 * accumulation and the gemm edges take a partial vector per term, and a memcpy call there was about a
 * tenth of em_run's instructions on aarch64 (armperf). */
static inline float32x4_t emv_load_part(const float *p, size_t n)
{
    float32x4_t v = vdupq_n_f32(0.0f);
    if (n == 0) return v;
    v = vld1q_lane_f32(p, v, 0);
    if (n > 1) v = vld1q_lane_f32(p + 1, v, 1);
    if (n > 2) v = vld1q_lane_f32(p + 2, v, 2);
    return v;
}

static inline void emv_store_part(float *p, float32x4_t v, size_t n)
{
    if (n == 0) return;
    vst1q_lane_f32(p, v, 0);
    if (n > 1) vst1q_lane_f32(p + 1, v, 1);
    if (n > 2) vst1q_lane_f32(p + 2, v, 2);
}

static inline float emv_hsum(float32x4_t v)
{
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    const float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
}

static inline float32x4_t emv_gather16(const float *table, const uint16_t *ix)
{
    float32x4_t v = vdupq_n_f32(table[ix[0]]);
    v = vld1q_lane_f32(table + ix[1], v, 1);
    v = vld1q_lane_f32(table + ix[2], v, 2);
    v = vld1q_lane_f32(table + ix[3], v, 3);
    return v;
}

/* [r0, r1, r2, r3] → the four rows of the transposed 4×4 block */
static inline void transpose4(float32x4_t *r)
{
    const float32x4x2_t p01 = vtrnq_f32(r[0], r[1]); /* [a0 b0 a2 b2], [a1 b1 a3 b3] */
    const float32x4x2_t p23 = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(p01.val[0]), vget_low_f32(p23.val[0]));
    r[1] = vcombine_f32(vget_low_f32(p01.val[1]), vget_low_f32(p23.val[1]));
    r[2] = vcombine_f32(vget_high_f32(p01.val[0]), vget_high_f32(p23.val[0]));
    r[3] = vcombine_f32(vget_high_f32(p01.val[1]), vget_high_f32(p23.val[1]));
}

static inline float32x4_t emv_reduce_rows(const float32x4_t *v)
{
#if defined(__aarch64__)
    return vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3]));
#else
    float32x4_t r[4];
    r[0] = v[0];
    r[1] = v[1];
    r[2] = v[2];
    r[3] = v[3];
    transpose4(r);
    return vaddq_f32(vaddq_f32(r[0], r[1]), vaddq_f32(r[2], r[3]));
#endif
}

#define EMV_TB 4
static inline void emv_transpose_block(const float *src, size_t ss, float *dst, size_t ds)
{
    float32x4_t r[4];
    r[0] = vld1q_f32(src);
    r[1] = vld1q_f32(src + ss);
    r[2] = vld1q_f32(src + 2 * ss);
    r[3] = vld1q_f32(src + 3 * ss);
    transpose4(r);
    vst1q_f32(dst, r[0]);
    vst1q_f32(dst + ds, r[1]);
    vst1q_f32(dst + 2 * ds, r[2]);
    vst1q_f32(dst + 3 * ds, r[3]);
}

#include "../opt/micro_template.h"


const em_micro em_micro_neon = {
    EM_KERNELS_NEON, "neon", EMV_W,
    gemm_neon, conv_gemm_neon, gemv_t_neon, gemv_n_neon, lut_accumulate_planar_neon, lut_accumulate_gather_neon,
    transpose_neon, depthwise_row_neon,
};
#else
/* Built without NEON: CMake does not define EM_HAVE_NEON then, and nothing refers to em_micro_neon. */
typedef int em_micro_neon_unavailable;
#endif
