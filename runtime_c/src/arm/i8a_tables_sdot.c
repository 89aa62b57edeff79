/* Table build with the ARMv8.2 dot product for LUT ops with int8 activations (em_i8a_tables.h): `sdot` by
 * element adds, per int32 lane (one pixel), the 4-depth dot product with one codeword's group, so one
 * instruction is 16 multiply-adds. Planar build: 4 codewords × 16 pixels = 16 accumulators; per group of 4
 * depths 4 pixel loads, 1 codebook load, 16 sdot. The accumulation and the gather are the NEON ones
 * (arm/i8a_tables_neon.c). Compiled for armv8.2-a+dotprod by the pragma below, as arm/int8_gemm_sdot.c;
 * em_i8a_tables_micro_for calls it only where em_cpu_has_arm_dotprod() (HWCAP asimddp). */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif
#include <arm_neon.h>
#include <string.h>

#include "../opt/em_i8a_tables.h"

/* acc[lane][v] += sdot of pixel vector v with codeword `lane`'s group (the lane must be a constant) */
#define I8A_DOT_LANE(lane)                                                                                     \
    for (v = 0; v < 4; ++v) acc[lane][v] = vdotq_laneq_s32(acc[lane][v], xv[v], w, lane)

static void build_planar_sdot(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks, int32_t *table,
                              size_t ldt)
{
    size_t c0, b, q, i, v;
    for (c0 = 0; c0 < c4; c0 += 4)
        for (b = 0; b < blocks; ++b) {
            const int8_t *xq = x + b * k4 * 64, *cq = cb + c0 / 4 * k4 * 16;
            int32x4_t acc[4][4];
            for (i = 0; i < 4; ++i)
                for (v = 0; v < 4; ++v) acc[i][v] = vdupq_n_s32(0);
            for (q = 0; q < k4; ++q, xq += 64, cq += 16) {
                const int8x16_t w = vld1q_s8(cq);
                int8x16_t xv[4];
                for (v = 0; v < 4; ++v) xv[v] = vld1q_s8(xq + 16 * v);
                I8A_DOT_LANE(0);
                I8A_DOT_LANE(1);
                I8A_DOT_LANE(2);
                I8A_DOT_LANE(3);
            }
            for (i = 0; i < 4; ++i)
                for (v = 0; v < 4; ++v) vst1q_s32(table + (c0 + i) * ldt + 16 * b + 4 * v, acc[i][v]);
        }
}
#undef I8A_DOT_LANE

/* 16 codewords at a time (c4 is a multiple of 16): one broadcast of the input's group, four codebook vectors,
 * four sdot */
static void build_row_sdot(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table)
{
    size_t c0, q, i;
    for (c0 = 0; c0 < c4; c0 += 16) {
        const int8_t *cq = cb + c0 / 4 * k4 * 16;
        int32x4_t acc[4];
        for (i = 0; i < 4; ++i) acc[i] = vdupq_n_s32(0);
        for (q = 0; q < k4; ++q) {
            int32_t v;
            int8x16_t xd;
            memcpy(&v, x + 4 * q, sizeof v);
            xd = vreinterpretq_s8_s32(vdupq_n_s32(v));
            for (i = 0; i < 4; ++i) acc[i] = vdotq_s32(acc[i], vld1q_s8(cq + (i * k4 + q) * 16), xd);
        }
        for (i = 0; i < 4; ++i) vst1q_s32(table + c0 + 4 * i, acc[i]);
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

const em_i8a_tables_micro em_i8a_tables_sdot = {"sdot", build_planar_sdot, build_row_sdot,
                                                em_i8a_accumulate_planar_neon, em_i8a_gather_neon};
