/* int8 tiles on ARMv8.0 / armv7 NEON (em_int8_gemm.h), for cores without the dot product (Cortex-A53,
 * A72): `smull` multiplies 8 int8 pairs into int16 (2 channels × 4 depths), `sadalp` adds adjacent int16
 * products pairwise into int32 lanes (channel n: depths 0+1 and 2+3), and a final pairwise add joins the
 * two halves of each channel. Exact: |product| ≤ 127² fits int16. One row at a time (8 accumulators of
 * pairs + 4 weight registers fit the register file); the weights are re-read per row from L1. */
#include <arm_neon.h>
#include <string.h>

#include "em_neon_int8.h"

#include "../opt/em_int8_gemm.h"


static void tile_neon(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    size_t i, q, g;
    for (i = 0; i < 4; ++i) {
        const int8_t *row = a + i * lda;
        const int8_t *bq = b;
        int32x4_t lo[4], hi[4];
        for (g = 0; g < 4; ++g) lo[g] = hi[g] = vdupq_n_s32(0);
        for (q = 0; q < k4; ++q, bq += 64) {
            int32_t v;
            int8x8_t x;
            memcpy(&v, row + 4 * q, sizeof v);
            x = vreinterpret_s8_s32(vdup_n_s32(v));
            for (g = 0; g < 4; ++g) {
                const int8x16_t w = vld1q_s8(bq + 16 * g);
                lo[g] = vpadalq_s16(lo[g], vmull_s8(vget_low_s8(w), x));
                hi[g] = vpadalq_s16(hi[g], vmull_s8(vget_high_s8(w), x));
            }
        }
        for (g = 0; g < 4; ++g) vst1q_s32(c + i * 16 + 4 * g, em_neon_pair_sums(lo[g], hi[g]));
    }
}

const em_int8_gemm_micro em_int8_gemm_neon = {"neon", tile_neon, NULL, NULL, NULL};
