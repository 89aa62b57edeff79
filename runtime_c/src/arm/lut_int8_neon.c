/* int8-table accumulation with NEON table lookups (em_lut_int8_kernels.h). aarch64: vqtbl1q_s8 looks up
 * 16 channels in one 16-byte table row. armv7 has no 16-byte-table lookup: the row is split into two
 * 8-byte halves and vtbl2_s8 looks up 8 channels at a time (two per group). int8 terms are widened into
 * int16 sums (vaddw) and flushed into the int32 output every EM_LUT_INT8_FLUSH_TERMS terms. Up to 4 groups
 * of 16 output channels per pass share each table-row load. */
#include <arm_neon.h>

#include "../em_lut_int8.h"
#include "../opt/em_lut_int8_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define EM_LUT_INT8_INLINE static inline __attribute__((always_inline))
#else
#define EM_LUT_INT8_INLINE static __forceinline
#endif

EM_LUT_INT8_INLINE void pass(const int8_t *table, const uint32_t *offsets,
                            const uint8_t *idx, size_t terms, size_t groups, size_t g0, const size_t ng,
                            int32_t *acc)
{
    int16x8_t lo[4], hi[4];
    size_t t = 0, j;
    for (j = 0; j < 16u * ng; ++j) acc[g0 * 16u + j] = 0;
    while (t < terms) {
        const size_t end = terms - t < EM_LUT_INT8_FLUSH_TERMS ? terms : t + EM_LUT_INT8_FLUSH_TERMS;
        for (j = 0; j < ng; ++j) lo[j] = hi[j] = vdupq_n_s16(0);
        for (; t < end; ++t) {
            const int8x16_t row = vld1q_s8(table + offsets[t]);
            const uint8_t *ix = idx + (t * groups + g0) * 16u;
#if defined(__aarch64__)
            for (j = 0; j < ng; ++j) {
                const int8x16_t v = vqtbl1q_s8(row, vld1q_u8(ix + 16u * j));
                lo[j] = vaddw_s8(lo[j], vget_low_s8(v));
                hi[j] = vaddw_high_s8(hi[j], v);
            }
#else
            int8x8x2_t halves;
            halves.val[0] = vget_low_s8(row);
            halves.val[1] = vget_high_s8(row);
            for (j = 0; j < ng; ++j) {
                const int8x16_t i16 = vreinterpretq_s8_u8(vld1q_u8(ix + 16u * j));
                lo[j] = vaddw_s8(lo[j], vtbl2_s8(halves, vget_low_s8(i16)));
                hi[j] = vaddw_s8(hi[j], vtbl2_s8(halves, vget_high_s8(i16)));
            }
#endif
        }
        for (j = 0; j < ng; ++j) {
            int32_t *a = acc + (g0 + j) * 16u;
            vst1q_s32(a, vaddw_s16(vld1q_s32(a), vget_low_s16(lo[j])));
            vst1q_s32(a + 4, vaddw_s16(vld1q_s32(a + 4), vget_high_s16(lo[j])));
            vst1q_s32(a + 8, vaddw_s16(vld1q_s32(a + 8), vget_low_s16(hi[j])));
            vst1q_s32(a + 12, vaddw_s16(vld1q_s32(a + 12), vget_high_s16(hi[j])));
        }
    }
}

static void accumulate_neon(const int8_t *table, const uint32_t *offsets, const uint8_t *idx, size_t terms,
                            size_t groups, int32_t *acc)
{
    size_t g0 = 0;
    for (; g0 + 4u <= groups; g0 += 4u) pass(table, offsets, idx, terms, groups, g0, 4u, acc);
    switch (groups - g0) {
    case 3: pass(table, offsets, idx, terms, groups, g0, 3u, acc); break;
    case 2: pass(table, offsets, idx, terms, groups, g0, 2u, acc); break;
    case 1: pass(table, offsets, idx, terms, groups, g0, 1u, acc); break;
    default: break;
    }
}

/* em_lut_int8_absmax: the unsigned maximum of the bit patterns with the sign bit cleared, so NaN and Inf
 * come out as the scalar's */
static float absmax_neon(const float *src, size_t n)
{
    const uint32x4_t magnitude = vdupq_n_u32(0x7FFFFFFFu);
    uint32x4_t m4 = vdupq_n_u32(0);
    uint32_t lanes[4], m = 0;
    float result;
    size_t i = 0, k;
    for (; i + 4u <= n; i += 4u)
        m4 = vmaxq_u32(m4, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(src + i)), magnitude));
    vst1q_u32(lanes, m4);
    for (k = 0; k < 4u; ++k) m = lanes[k] > m ? lanes[k] : m;
    memcpy(&result, &m, sizeof result);
    if (i < n) {
        const float tail = em_lut_int8_absmax(src + i, n - i);
        uint32_t t;
        memcpy(&t, &tail, sizeof t);
        if (t > m) result = tail;
    }
    return result;
}

/* 16 entries per step: the float32 product and magic-number rounding of em_lut_int8_quantize (separate
 * multiply and adds, no fused multiply-add), then saturating narrows and a floor at -127. */
static void quantize_neon(const float *src, size_t n, float inverse, int8_t *dst)
{
    const float32x4_t inv = vdupq_n_f32(inverse), magic = vdupq_n_f32(12582912.0f);
    const int8x16_t floor = vdupq_n_s8(-127);
    size_t i = 0, k;
    for (; i + 16u <= n; i += 16u) {
        int16x4_t h[4];
        for (k = 0; k < 4; ++k) {
            const float32x4_t v = vmulq_f32(vld1q_f32(src + i + 4u * k), inv);
            h[k] = vqmovn_s32(vcvtq_s32_f32(vsubq_f32(vaddq_f32(v, magic), magic)));
        }
        vst1q_s8(dst + i, vmaxq_s8(vcombine_s8(vqmovn_s16(vcombine_s16(h[0], h[1])),
                                               vqmovn_s16(vcombine_s16(h[2], h[3]))),
                                   floor));
    }
    for (; i < n; ++i) dst[i] = (int8_t)em_lut_int8_quantize(src[i], inverse);
}

const em_lut_int8_micro em_lut_int8_neon = {"neon", accumulate_neon, absmax_neon, quantize_neon};
