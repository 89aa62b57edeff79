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

static void build_planar_sdot(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks, int32_t *table,
                              size_t ldt)
{
    size_t c0, b, q;
    for (c0 = 0; c0 < c4; c0 += 4) {
        int32_t *t0 = table + c0 * ldt, *t1 = t0 + ldt, *t2 = t1 + ldt, *t3 = t2 + ldt;
        for (b = 0; b < blocks; ++b) {
            const int8_t *xq = x + b * k4 * 64, *cq = cb + c0 / 4 * k4 * 16;
            int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00;
            int32x4_t a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00;
            int32x4_t a33 = a00;
            for (q = 0; q < k4; ++q, xq += 64, cq += 16) {
                const int8x16_t w = vld1q_s8(cq);
                const int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16), x2 = vld1q_s8(xq + 32),
                                x3 = vld1q_s8(xq + 48);
                a00 = vdotq_laneq_s32(a00, x0, w, 0);
                a01 = vdotq_laneq_s32(a01, x1, w, 0);
                a02 = vdotq_laneq_s32(a02, x2, w, 0);
                a03 = vdotq_laneq_s32(a03, x3, w, 0);
                a10 = vdotq_laneq_s32(a10, x0, w, 1);
                a11 = vdotq_laneq_s32(a11, x1, w, 1);
                a12 = vdotq_laneq_s32(a12, x2, w, 1);
                a13 = vdotq_laneq_s32(a13, x3, w, 1);
                a20 = vdotq_laneq_s32(a20, x0, w, 2);
                a21 = vdotq_laneq_s32(a21, x1, w, 2);
                a22 = vdotq_laneq_s32(a22, x2, w, 2);
                a23 = vdotq_laneq_s32(a23, x3, w, 2);
                a30 = vdotq_laneq_s32(a30, x0, w, 3);
                a31 = vdotq_laneq_s32(a31, x1, w, 3);
                a32 = vdotq_laneq_s32(a32, x2, w, 3);
                a33 = vdotq_laneq_s32(a33, x3, w, 3);
            }
            vst1q_s32(t0 + 16 * b, a00);
            vst1q_s32(t0 + 16 * b + 4, a01);
            vst1q_s32(t0 + 16 * b + 8, a02);
            vst1q_s32(t0 + 16 * b + 12, a03);
            vst1q_s32(t1 + 16 * b, a10);
            vst1q_s32(t1 + 16 * b + 4, a11);
            vst1q_s32(t1 + 16 * b + 8, a12);
            vst1q_s32(t1 + 16 * b + 12, a13);
            vst1q_s32(t2 + 16 * b, a20);
            vst1q_s32(t2 + 16 * b + 4, a21);
            vst1q_s32(t2 + 16 * b + 8, a22);
            vst1q_s32(t2 + 16 * b + 12, a23);
            vst1q_s32(t3 + 16 * b, a30);
            vst1q_s32(t3 + 16 * b + 4, a31);
            vst1q_s32(t3 + 16 * b + 8, a32);
            vst1q_s32(t3 + 16 * b + 12, a33);
        }
    }
}

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
