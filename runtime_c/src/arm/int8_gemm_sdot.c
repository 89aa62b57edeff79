/* int8 tiles with the ARMv8.2 dot product (em_int8_gemm.h): `sdot` adds four int8 products per int32 lane,
 * so one instruction covers 4 output channels × 4 depths of one row. 4 rows × 16 channels = 16
 * accumulators. Per 4 depth steps: one 16-byte load of each row's 16 depths, 16 weight loads and 64 sdot by
 * element (the row's step q is lane q of its load: no broadcast per step); 2 steps left: 8-byte loads and
 * the 64-bit lane form; 1 step: a broadcast load. A last block of ≤ 8 channels runs 8 accumulators (the
 * other 8 columns of its packed weights are zero). gemm_rows keeps the sums in registers through the
 * epilogue (em_neon_int8_store_row), no int32 tile and no second pass.
 * Compiled for armv8.2-a+dotprod by the pragma below (the rest of the library keeps the board's flags);
 * em_int8_gemm_micro_for calls it only where em_cpu_has_arm_dotprod() (HWCAP asimddp). */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif
#include <arm_neon.h>
#include <string.h>

#include "em_neon_int8.h"

#include "../opt/em_int8_gemm.h"

/* the 4 bytes at a in every 32-bit lane (one ld1r) */
EM_NEON_INLINE int8x16_t broadcast4(const int8_t *a)
{
    int32_t v;
    memcpy(&v, a, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

/* acc += sdot(w, x) (by element: lane `lane` of x). Intrinsics: a one-instruction asm per sdot (as the VNNI
 * tile's, x86/int8_gemm_avx512vnni.c) let GCC 12 hoist all 16 weight loads of the 4-step loop above it and
 * spill accumulators, and gained nothing in the shorter blocks (armperf A76). */
#define EM_SDOT(acc, w, x) ((acc) = vdotq_s32((acc), (w), (x)))
#define EM_SDOT_LANEQ(acc, w, x, lane) ((acc) = vdotq_laneq_s32((acc), (w), (x), lane))
#define EM_SDOT_LANE(acc, w, x, lane) ((acc) = vdotq_lane_s32((acc), (w), (x), lane))

/* acc[4i + g] += rows i < 4 × channels 4g..4g+3 (g < groups) of depth step `lane` of xs[i] (DOT: the 128- or
 * 64-bit lane form) */
#define SDOT_STEP(DOT, xs, lane)                                                                               \
    do {                                                                                                       \
        for (g = 0; g < groups; ++g) w[g] = vld1q_s8(b + 64 * (lane) + 16 * g);                                \
        for (i = 0; i < 4; ++i)                                                                                \
            for (g = 0; g < groups; ++g) DOT(acc[4 * i + g], w[g], xs[i], lane);                               \
    } while (0)

/* The 4 rows' sums (em_int8_tile_rows_fn's depths) for channels 4g..4g+3, g < groups (4, or 2) */
EM_NEON_INLINE void accumulate(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                               const int8_t *b, const size_t groups, int32x4_t acc[16])
{
    const int8_t *a[4];
    int8x16_t w[4];
    size_t s, q, i, g;
    for (i = 0; i < 4; ++i) a[i] = rows[i];
    for (i = 0; i < 16; ++i) acc[i] = vdupq_n_s32(0);
    for (s = 0; s < segments; ++s) {
        for (q = 0; q + 4 <= seg_k4; q += 4, b += 256) {
            int8x16_t x[4];
            for (i = 0; i < 4; ++i) x[i] = vld1q_s8(a[i] + 4 * q);
            SDOT_STEP(EM_SDOT_LANEQ, x, 0);
            SDOT_STEP(EM_SDOT_LANEQ, x, 1);
            SDOT_STEP(EM_SDOT_LANEQ, x, 2);
            SDOT_STEP(EM_SDOT_LANEQ, x, 3);
        }
        if (q + 2 <= seg_k4) {
            int8x8_t h[4];
            for (i = 0; i < 4; ++i) h[i] = vld1_s8(a[i] + 4 * q);
            SDOT_STEP(EM_SDOT_LANE, h, 0);
            SDOT_STEP(EM_SDOT_LANE, h, 1);
            q += 2;
            b += 128;
        }
        if (q < seg_k4) {
            int8x16_t x[4];
            for (i = 0; i < 4; ++i) x[i] = broadcast4(a[i] + 4 * q);
            for (g = 0; g < groups; ++g) w[g] = vld1q_s8(b + 16 * g);
            for (i = 0; i < 4; ++i)
                for (g = 0; g < groups; ++g) EM_SDOT(acc[4 * i + g], w[g], x[i]);
            b += 64;
        }
        for (i = 0; i < 4; ++i) a[i] += seg_stride;
    }
}
#undef SDOT_STEP

static void tile_rows_sdot(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                           const int8_t *b, int32_t *c)
{
    int32x4_t acc[16];
    size_t i;
    accumulate(rows, segments, seg_stride, seg_k4, b, 4, acc);
    for (i = 0; i < 16; ++i) vst1q_s32(c + 4 * i, acc[i]);
}

static void tile_sdot(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    em_int8_tile_by_rows(tile_rows_sdot, a, lda, b, k4, c);
}

/* em_int8_gemm_rows_fn, one instance per activation and bias (em_neon_int8_store_row). Blocks of 16 or 8
 * channels store from registers (rows unrolled: a loop over the rows indexed the accumulators on the
 * stack); another last block goes through a tile and the store. */
EM_NEON_INLINE void gemm_rows_impl(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                   const int8_t *b, uint32_t cout, float scale, const float *bias, const int has_bias,
                                   const uint32_t activation, float *out, uint32_t valid_rows)
{
    const float32x4_t k = vdupq_n_f32(scale);
    const size_t block = segments * seg_k4 * 64;
    uint32_t first;
    for (first = 0; first < cout; first += 16, b += block) {
        const uint32_t cols = cout - first < 16u ? cout - first : 16u;
        const float *bb = has_bias ? bias + first : NULL;
        float *y = out + first;
        float32x4_t bv[4];
        int32x4_t acc[16];
#define EM_STORE_ROWS(groups)                                                                                  \
    do {                                                                                                       \
        accumulate(rows, segments, seg_stride, seg_k4, b, groups, acc);                                        \
        em_neon_int8_load_bias(bb, has_bias, groups, bv);                                                      \
        em_neon_int8_store_row(acc, groups, k, bv, has_bias, activation, y);                                   \
        if (valid_rows > 1u) em_neon_int8_store_row(acc + 4, groups, k, bv, has_bias, activation, y + cout);   \
        if (valid_rows > 2u) em_neon_int8_store_row(acc + 8, groups, k, bv, has_bias, activation, y + 2 * cout); \
        if (valid_rows > 3u) em_neon_int8_store_row(acc + 12, groups, k, bv, has_bias, activation, y + 3 * cout); \
    } while (0)
        if (cols == 16u) {
            EM_STORE_ROWS(4);
        } else if (cols == 8u) {
            EM_STORE_ROWS(2);
        } else {
            int32_t tile[64];
            size_t i;
            accumulate(rows, segments, seg_stride, seg_k4, b, 4, acc);
            for (i = 0; i < 16; ++i) vst1q_s32(tile + 4 * i, acc[i]);
            em_int8_store_neon(tile, valid_rows, cols, scale, bb, activation, y, cout);
        }
#undef EM_STORE_ROWS
    }
}

static void gemm_rows_sdot(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                           const int8_t *b, const int32_t *offsets, uint32_t cout, float scale, const float *bias,
                           uint32_t activation, float *out, uint32_t valid_rows)
{
#define EM_GEMM_ROWS(has_bias, act)                                                                            \
    gemm_rows_impl(rows, segments, seg_stride, seg_k4, b, cout, scale, bias, has_bias, act, out, valid_rows)
    (void)offsets; /* sdot is signed: no u8 correction */
    EM_NEON_INT8_DISPATCH(EM_GEMM_ROWS, bias != NULL, activation);
#undef EM_GEMM_ROWS
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

const em_int8_gemm_micro em_int8_gemm_sdot = {"sdot", tile_sdot, em_int8_store_neon, tile_rows_sdot, gemm_rows_sdot,
                                              em_int8_quantize_neon};
