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

#if defined(__aarch64__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* The four indices in one 64-bit load, split with shifts: a load per index made the LUT_DENSE accumulation
 * load-bound (armperf, Cortex-A57 model: 32 loads per 16 outputs and segment, 23 with this). */
static inline float32x4_t emv_gather16(const float *table, const uint16_t *ix)
{
    uint64_t four;
    float32x4_t v;
    memcpy(&four, ix, sizeof four);
    v = vdupq_n_f32(table[four & 0xFFFFu]);
    v = vld1q_lane_f32(table + ((four >> 16) & 0xFFFFu), v, 1);
    v = vld1q_lane_f32(table + ((four >> 32) & 0xFFFFu), v, 2);
    v = vld1q_lane_f32(table + (four >> 48), v, 3);
    return v;
}
#else
static inline float32x4_t emv_gather16(const float *table, const uint16_t *ix)
{
    float32x4_t v = vdupq_n_f32(table[ix[0]]);
    v = vld1q_lane_f32(table + ix[1], v, 1);
    v = vld1q_lane_f32(table + ix[2], v, 2);
    v = vld1q_lane_f32(table + ix[3], v, 3);
    return v;
}
#endif

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

#if defined(__aarch64__)
/* aarch64 supplies conv_gemm (and so gemm) itself: full 8 × 8 tiles in the hand-unrolled kernel below,
 * edges in the template's tiles. */
#define EMV_CUSTOM_CONV_GEMM 1
static void conv_gemm_neon(size_t m, size_t n, size_t kblocks, size_t kin, const float *a, size_t lda,
                           size_t a_block, const float *b, size_t ldb, float *c, size_t ldc, const float *bias,
                           uint32_t activation);
#endif

#include "../opt/micro_template.h"

#if defined(__aarch64__)
/* One full tile, 8 (or 4) rows × 8 columns (two vectors), of the template's gemm_tile with the same sums in
 * the same order (so the same bits): four k at a time by FMLA by element, then single k. Written with 16 named
 * accumulators instead of the template's arrays and `i < mr` guards: from those GCC 12 kept the tile on
 * the stack and stored all 16 accumulators back every four k (armperf: the README pair's decoded first
 * convolutions ran at 0.8 instructions per multiply-add; this tile runs at about 0.35). */
static inline __attribute__((always_inline)) void conv_tile_neon(const int rows, size_t kblocks, size_t kin,
                                                                   const float *a, size_t lda, size_t a_block,
                                                                   const float *b, size_t ldb, float *c, size_t ldc,
                                                                   const float *bias, uint32_t activation)
{
    float32x4_t c0a = vdupq_n_f32(0.0f), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a, c3a = c0a,
                c3b = c0a, c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a, c6a = c0a, c6b = c0a, c7a = c0a, c7b = c0a;
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    const size_t high = rows > 4 ? lda : 0; /* a 4-row tile never reads rows 4-7 */
    const float *a4 = a + 4 * high, *a5 = a + 5 * high, *a6 = a + 6 * high, *a7 = a + 7 * high;
    size_t kb, p;
/* STEP(row) for rows 0-3, and 4-7 in the 8-row tile */
#define EM_TILE_EACH_ROW(STEP)                                                                                  \
    do {                                                                                                        \
        STEP(0);                                                                                                \
        STEP(1);                                                                                                \
        STEP(2);                                                                                                \
        STEP(3);                                                                                                \
        if (rows > 4) {                                                                                         \
            STEP(4);                                                                                            \
            STEP(5);                                                                                            \
            STEP(6);                                                                                            \
            STEP(7);                                                                                            \
        }                                                                                                       \
    } while (0)
    for (kb = 0; kb < kblocks; ++kb) {
        const size_t off = kb * a_block;
        const float *bb = b + kb * kin * ldb;
        for (p = 0; p + 4 <= kin; p += 4) {
            const float *br = bb + p * ldb;
            const float32x4_t b0a = vld1q_f32(br), b0b = vld1q_f32(br + 4);
            const float32x4_t b1a = vld1q_f32(br + ldb), b1b = vld1q_f32(br + ldb + 4);
            const float32x4_t b2a = vld1q_f32(br + 2 * ldb), b2b = vld1q_f32(br + 2 * ldb + 4);
            const float32x4_t b3a = vld1q_f32(br + 3 * ldb), b3b = vld1q_f32(br + 3 * ldb + 4);
#define EM_TILE_ROW4(row)                                                                                       \
    do {                                                                                                        \
        const float32x4_t av = vld1q_f32(a##row + off + p);                                                    \
        c##row##a = vfmaq_laneq_f32(c##row##a, b0a, av, 0);                                                    \
        c##row##a = vfmaq_laneq_f32(c##row##a, b1a, av, 1);                                                    \
        c##row##a = vfmaq_laneq_f32(c##row##a, b2a, av, 2);                                                    \
        c##row##a = vfmaq_laneq_f32(c##row##a, b3a, av, 3);                                                    \
        c##row##b = vfmaq_laneq_f32(c##row##b, b0b, av, 0);                                                    \
        c##row##b = vfmaq_laneq_f32(c##row##b, b1b, av, 1);                                                    \
        c##row##b = vfmaq_laneq_f32(c##row##b, b2b, av, 2);                                                    \
        c##row##b = vfmaq_laneq_f32(c##row##b, b3b, av, 3);                                                    \
    } while (0)
            EM_TILE_EACH_ROW(EM_TILE_ROW4);
#undef EM_TILE_ROW4
        }
        for (; p < kin; ++p) {
            const float *br = bb + p * ldb;
            const float32x4_t ba = vld1q_f32(br), bv = vld1q_f32(br + 4);
#define EM_TILE_ROW1(row)                                                                                       \
    do {                                                                                                        \
        const float32x4_t av = vdupq_n_f32(a##row[off + p]);                                                   \
        c##row##a = vfmaq_f32(c##row##a, av, ba);                                                              \
        c##row##b = vfmaq_f32(c##row##b, av, bv);                                                              \
    } while (0)
            EM_TILE_EACH_ROW(EM_TILE_ROW1);
#undef EM_TILE_ROW1
        }
    }
#define EM_TILE_STORE(row)                                                                                      \
    do {                                                                                                        \
        float32x4_t va = c##row##a, vb = c##row##b;                                                             \
        if (bias != NULL || activation != EM_ACT_NONE) {                                                        \
            va = epilogue_neon(va, bias, 4, activation);                                                        \
            vb = epilogue_neon(vb, bias != NULL ? bias + 4 : NULL, 4, activation);                             \
        }                                                                                                       \
        vst1q_f32(c + (row) * ldc, va);                                                                         \
        vst1q_f32(c + (row) * ldc + 4, vb);                                                                     \
    } while (0)
    EM_TILE_EACH_ROW(EM_TILE_STORE);
#undef EM_TILE_STORE
#undef EM_TILE_EACH_ROW
}

static void conv_gemm_neon(size_t m, size_t n, size_t kblocks, size_t kin, const float *a, size_t lda,
                           size_t a_block, const float *b, size_t ldb, float *c, size_t ldc, const float *bias,
                           uint32_t activation)
{
    size_t j;
    for (j = 0; j < n; j += 8) {
        const size_t cols = n - j < 8 ? n - j : 8;
        const float *bj = bias != NULL ? bias + j : NULL;
        size_t i = 0;
        if (cols == 8) {
            for (; i + 8 <= m; i += 8)
                conv_tile_neon(8, kblocks, kin, a + i * lda, lda, a_block, b + j, ldb, c + i * ldc + j, ldc, bj,
                               activation);
            if (i + 4 <= m) { /* e.g. 28 = 3 · 8 + 4 output columns of LeNet's first conv */
                conv_tile_neon(4, kblocks, kin, a + i * lda, lda, a_block, b + j, ldb, c + i * ldc + j, ldc, bj,
                               activation);
                i += 4;
            }
        }
        if (i < m)
            gemm_columns_neon(m - i, cols, kblocks, kin, a + i * lda, lda, a_block, b + j, ldb, c + i * ldc + j,
                              ldc, bj, activation);
    }
}
#endif


const em_micro em_micro_neon = {
    EM_KERNELS_NEON, "neon", EMV_W,
    gemm_neon, conv_gemm_neon, gemv_t_neon, gemv_n_neon, lut_accumulate_planar_neon, lut_accumulate_gather_neon,
    transpose_neon, depthwise_rows_neon,
};
#else
/* Built without NEON: CMake does not define EM_HAVE_NEON then, and nothing refers to em_micro_neon. */
typedef int em_micro_neon_unavailable;
#endif
