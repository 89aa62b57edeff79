/* int8 tiles with the ARMv8.2 dot product (em_int8_gemm.h): `sdot` adds four int8 products per int32 lane,
 * so one instruction covers 4 output channels × 4 depths of one row. 4 rows × 16 channels = 16
 * accumulators; per 4 depths: 4 weight loads, 4 broadcast loads of the rows' 4-byte patches, 16 sdot.
 * Compiled for armv8.2-a+dotprod by the pragma below (the rest of the library keeps the board's flags);
 * em_int8_gemm_micro_for calls it only where em_cpu_has_arm_dotprod() (HWCAP asimddp). */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif
#include <arm_neon.h>
#include <string.h>

#include "../opt/em_int8_gemm.h"

static inline int8x16_t patch(const int8_t *a)
{
    int32_t v;
    memcpy(&v, a, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

static void tile_sdot(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    int32x4_t c00 = vdupq_n_s32(0), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    int32x4_t c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const int8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    size_t q;
    for (q = 0; q < k4; ++q, b += 64) {
        const int8x16_t b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16), b2 = vld1q_s8(b + 32), b3 = vld1q_s8(b + 48);
        const int8x16_t x0 = patch(a0 + 4 * q), x1 = patch(a1 + 4 * q), x2 = patch(a2 + 4 * q),
                        x3 = patch(a3 + 4 * q);
        c00 = vdotq_s32(c00, b0, x0);
        c01 = vdotq_s32(c01, b1, x0);
        c02 = vdotq_s32(c02, b2, x0);
        c03 = vdotq_s32(c03, b3, x0);
        c10 = vdotq_s32(c10, b0, x1);
        c11 = vdotq_s32(c11, b1, x1);
        c12 = vdotq_s32(c12, b2, x1);
        c13 = vdotq_s32(c13, b3, x1);
        c20 = vdotq_s32(c20, b0, x2);
        c21 = vdotq_s32(c21, b1, x2);
        c22 = vdotq_s32(c22, b2, x2);
        c23 = vdotq_s32(c23, b3, x2);
        c30 = vdotq_s32(c30, b0, x3);
        c31 = vdotq_s32(c31, b1, x3);
        c32 = vdotq_s32(c32, b2, x3);
        c33 = vdotq_s32(c33, b3, x3);
    }
    vst1q_s32(c, c00);
    vst1q_s32(c + 4, c01);
    vst1q_s32(c + 8, c02);
    vst1q_s32(c + 12, c03);
    vst1q_s32(c + 16, c10);
    vst1q_s32(c + 20, c11);
    vst1q_s32(c + 24, c12);
    vst1q_s32(c + 28, c13);
    vst1q_s32(c + 32, c20);
    vst1q_s32(c + 36, c21);
    vst1q_s32(c + 40, c22);
    vst1q_s32(c + 44, c23);
    vst1q_s32(c + 48, c30);
    vst1q_s32(c + 52, c31);
    vst1q_s32(c + 56, c32);
    vst1q_s32(c + 60, c33);
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

const em_int8_gemm_micro em_int8_gemm_sdot = {"sdot", tile_sdot, NULL, NULL, NULL};
