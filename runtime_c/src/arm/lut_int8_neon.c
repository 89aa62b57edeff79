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

void em_lut_int8_accumulate_neon(const int8_t *table, const uint32_t *offsets, const uint8_t *idx, size_t terms,
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
