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

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
/* The depth loop in assembly, for segments whose depth is a multiple of 16 bytes (seg_k4 % 4 == 0: every
 * layer with Cin % 16 == 0). Per 4 depth steps: the 4 rows' 16-byte loads, the weights as ldp pairs a step
 * ahead of their sdots, and 64 sdots into the 16 accumulators. The intrinsics' loop (below, kept for the
 * other depths) compiles with GCC 12 to the same loads and sdots plus 8-10 register moves per 64 sdots (GCC
 * rotates the accumulators; -O3, -fno-schedule-insns, -fsched-pressure and -fira-* left them): armperf A76,
 * words task of the MobileNetV2 + ResNet-8 pair, 106 k mov.16b of gemm_rows_sdot's 1.38 M instructions.
 * The accumulators are the asm's 16 outputs (write-only: an in-out operand counts twice against GCC's 30);
 * the scalars come through a small array. Same products per lane in the same order: the same int32 sums. */
#define EM_SDOT_ASM(c, w, x, lane) "sdot %[c" #c "].4s, v" #w ".16b, v" #x ".4b[" #lane "]\n\t"
/* 16 sdots of one depth step (`lane` of the rows' loads v0-v3) with the 4 groups' weights in v(a)..v(d):
 * acc[4i + g] (operand c(4i + g)) += group g × row i */
#define EM_SDOT_STEP4(a, b, c, d, lane)                                                                        \
    EM_SDOT_ASM(0, a, 0, lane) EM_SDOT_ASM(1, b, 0, lane) EM_SDOT_ASM(2, c, 0, lane)                           \
        EM_SDOT_ASM(3, d, 0, lane) EM_SDOT_ASM(4, a, 1, lane) EM_SDOT_ASM(5, b, 1, lane)                       \
            EM_SDOT_ASM(6, c, 1, lane) EM_SDOT_ASM(7, d, 1, lane) EM_SDOT_ASM(8, a, 2, lane)                   \
                EM_SDOT_ASM(9, b, 2, lane) EM_SDOT_ASM(10, c, 2, lane) EM_SDOT_ASM(11, d, 2, lane)             \
                    EM_SDOT_ASM(12, a, 3, lane) EM_SDOT_ASM(13, b, 3, lane) EM_SDOT_ASM(14, c, 3, lane)        \
                        EM_SDOT_ASM(15, d, 3, lane)
/* weights of depth step `step` (64 bytes: 4 groups × 16) at x14 + 64 · step; offsets, not post-increments,
 * so the block's 8 loads do not form a chain through x14 (llvm-mca: 48 -> 35 cycles per block) */
#define EM_SDOT_LOAD4(a, b, c, d, step)                                                                        \
    "ldp q" #a ", q" #b ", [x14, #" #step "*64]\n\t" "ldp q" #c ", q" #d ", [x14, #" #step "*64+32]\n\t"
/* a block of 4 depth steps, the weights double-buffered in v4-v7 / v8-v11 (each step's load is issued a
 * step ahead of its sdots) */
#define EM_SDOT_BLOCK4                                                                                         \
    EM_SDOT_LOAD4(4, 5, 6, 7, 0) EM_SDOT_LOAD4(8, 9, 10, 11, 1) EM_SDOT_STEP4(4, 5, 6, 7, 0)                   \
        EM_SDOT_LOAD4(4, 5, 6, 7, 2) EM_SDOT_STEP4(8, 9, 10, 11, 1) EM_SDOT_LOAD4(8, 9, 10, 11, 3)             \
            EM_SDOT_STEP4(4, 5, 6, 7, 2) EM_SDOT_STEP4(8, 9, 10, 11, 3) "add x14, x14, #256\n\t"
/* the same for 2 groups (a block of 8 channels): each step's other 32 weight bytes are skipped */
#define EM_SDOT_STEP2(a, b, lane)                                                                              \
    EM_SDOT_ASM(0, a, 0, lane) EM_SDOT_ASM(1, b, 0, lane) EM_SDOT_ASM(4, a, 1, lane)                           \
        EM_SDOT_ASM(5, b, 1, lane) EM_SDOT_ASM(8, a, 2, lane) EM_SDOT_ASM(9, b, 2, lane)                       \
            EM_SDOT_ASM(12, a, 3, lane) EM_SDOT_ASM(13, b, 3, lane)
#define EM_SDOT_LOAD2(a, b, step) "ldp q" #a ", q" #b ", [x14, #" #step "*64]\n\t"
#define EM_SDOT_BLOCK2                                                                                         \
    EM_SDOT_LOAD2(4, 5, 0) EM_SDOT_LOAD2(8, 9, 1) EM_SDOT_STEP2(4, 5, 0) EM_SDOT_LOAD2(4, 5, 2)                \
        EM_SDOT_STEP2(8, 9, 1) EM_SDOT_LOAD2(8, 9, 3) EM_SDOT_STEP2(4, 5, 2) EM_SDOT_STEP2(8, 9, 3)            \
            "add x14, x14, #256\n\t"
/* args: rows 0-3, blocks per segment (seg_k4 / 4), the rows' advance after a segment, segments; b the
 * packed weights. Rows advance 16 bytes per block. */
#define EM_SDOT_LOOP(BLOCK)                                                                                    \
    __asm__ volatile("ldp x9, x10, [%[args]]\n\t"                                                              \
                     "ldp x11, x12, [%[args], #16]\n\t"                                                        \
                     "ldp x13, x15, [%[args], #32]\n\t"                                                        \
                     "ldr x16, [%[args], #48]\n\t"                                                             \
                     "mov x14, %[b]\n\t"                                                                       \
                     "movi %[c0].4s, #0\n\t"                                                                   \
                     "movi %[c1].4s, #0\n\t"                                                                   \
                     "movi %[c2].4s, #0\n\t"                                                                   \
                     "movi %[c3].4s, #0\n\t"                                                                   \
                     "movi %[c4].4s, #0\n\t"                                                                   \
                     "movi %[c5].4s, #0\n\t"                                                                   \
                     "movi %[c6].4s, #0\n\t"                                                                   \
                     "movi %[c7].4s, #0\n\t"                                                                   \
                     "movi %[c8].4s, #0\n\t"                                                                   \
                     "movi %[c9].4s, #0\n\t"                                                                   \
                     "movi %[c10].4s, #0\n\t"                                                                  \
                     "movi %[c11].4s, #0\n\t"                                                                  \
                     "movi %[c12].4s, #0\n\t"                                                                  \
                     "movi %[c13].4s, #0\n\t"                                                                  \
                     "movi %[c14].4s, #0\n\t"                                                                  \
                     "movi %[c15].4s, #0\n\t"                                                                  \
                     "1:\n\t"                                                                                  \
                     "mov x17, x13\n\t"                                                                        \
                     "2:\n\t"                                                                                  \
                     "ldr q0, [x9], #16\n\t"                                                                   \
                     "ldr q1, [x10], #16\n\t"                                                                  \
                     "ldr q2, [x11], #16\n\t"                                                                  \
                     "ldr q3, [x12], #16\n\t" BLOCK "subs x17, x17, #1\n\t"                                    \
                     "b.ne 2b\n\t"                                                                             \
                     "add x9, x9, x15\n\t"                                                                     \
                     "add x10, x10, x15\n\t"                                                                   \
                     "add x11, x11, x15\n\t"                                                                   \
                     "add x12, x12, x15\n\t"                                                                   \
                     "subs x16, x16, #1\n\t"                                                                   \
                     "b.ne 1b\n\t"                                                                             \
                     : [c0] "=&w"(acc[0]), [c1] "=&w"(acc[1]), [c2] "=&w"(acc[2]), [c3] "=&w"(acc[3]),         \
                       [c4] "=&w"(acc[4]), [c5] "=&w"(acc[5]), [c6] "=&w"(acc[6]), [c7] "=&w"(acc[7]),         \
                       [c8] "=&w"(acc[8]), [c9] "=&w"(acc[9]), [c10] "=&w"(acc[10]), [c11] "=&w"(acc[11]),     \
                       [c12] "=&w"(acc[12]), [c13] "=&w"(acc[13]), [c14] "=&w"(acc[14]), [c15] "=&w"(acc[15])  \
                     : [args] "r"(args), [b] "r"(b)                                                            \
                     : "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17", "v0", "v1", "v2", "v3",   \
                       "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "cc", "memory")

/* accumulate()'s sums for seg_k4 % 4 == 0 (segments ≥ 1, seg_k4 ≥ 4) */
EM_NEON_INLINE void accumulate_asm(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                   const int8_t *b, const size_t groups, int32x4_t acc[16])
{
    /* the advance wraps like the pointer sum it stands for when a segment's stride is shorter than its depth */
    const uintptr_t args[7] = {(uintptr_t)rows[0], (uintptr_t)rows[1], (uintptr_t)rows[2], (uintptr_t)rows[3],
                               (uintptr_t)(seg_k4 / 4), (uintptr_t)(seg_stride - 4 * seg_k4), (uintptr_t)segments};
    if (groups == 4)
        EM_SDOT_LOOP(EM_SDOT_BLOCK4);
    else
        EM_SDOT_LOOP(EM_SDOT_BLOCK2);
}
#undef EM_SDOT_LOOP
#undef EM_SDOT_BLOCK2
#undef EM_SDOT_LOAD2
#undef EM_SDOT_STEP2
#undef EM_SDOT_BLOCK4
#undef EM_SDOT_LOAD4
#undef EM_SDOT_STEP4
#undef EM_SDOT_ASM
#define EM_SDOT_HAS_ASM 1
#else
#define EM_SDOT_HAS_ASM 0
#endif

/* Whether a call's tiles take the assembly loop (the same for every tile of a call: the callers pick it
 * once, so each path's instance keeps its accumulators in registers; a choice per tile left GCC holding
 * them on the stack for both) */
static inline int use_asm_loop(size_t segments, size_t seg_k4)
{
#if EM_SDOT_HAS_ASM
    return segments > 0 && seg_k4 > 0 && seg_k4 % 4 == 0;
#else
    (void)segments;
    (void)seg_k4;
    return 0;
#endif
}

/* The 4 rows' sums (em_int8_tile_rows_fn's depths) for channels 4g..4g+3, g < groups (4, or 2); with
 * use_asm (a constant where inlined; use_asm_loop's answer) the assembly loop */
EM_NEON_INLINE void accumulate(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                               const int8_t *b, const size_t groups, const int use_asm, int32x4_t acc[16])
{
    const int8_t *a[4];
    int8x16_t w[4];
    size_t s, q, i, g;
#if EM_SDOT_HAS_ASM
    if (use_asm) {
        accumulate_asm(rows, segments, seg_stride, seg_k4, b, groups, acc);
        return;
    }
#else
    (void)use_asm;
#endif
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
    if (use_asm_loop(segments, seg_k4))
        accumulate(rows, segments, seg_stride, seg_k4, b, 4, 1, acc);
    else
        accumulate(rows, segments, seg_stride, seg_k4, b, 4, 0, acc);
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
                                   const uint32_t activation, const int use_asm, float *out, uint32_t valid_rows)
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
        accumulate(rows, segments, seg_stride, seg_k4, b, groups, use_asm, acc);                               \
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
            accumulate(rows, segments, seg_stride, seg_k4, b, 4, use_asm, acc);
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
#define EM_GEMM_ROWS_ASM(has_bias, act)                                                                        \
    gemm_rows_impl(rows, segments, seg_stride, seg_k4, b, cout, scale, bias, has_bias, act, 1, out, valid_rows)
#define EM_GEMM_ROWS(has_bias, act)                                                                            \
    gemm_rows_impl(rows, segments, seg_stride, seg_k4, b, cout, scale, bias, has_bias, act, 0, out, valid_rows)
    (void)offsets; /* sdot is signed: no u8 correction */
    if (use_asm_loop(segments, seg_k4))
        EM_NEON_INT8_DISPATCH(EM_GEMM_ROWS_ASM, bias != NULL, activation);
    else
        EM_NEON_INT8_DISPATCH(EM_GEMM_ROWS, bias != NULL, activation);
#undef EM_GEMM_ROWS
#undef EM_GEMM_ROWS_ASM
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

const em_int8_gemm_micro em_int8_gemm_sdot = {"sdot", tile_sdot, em_int8_store_neon, tile_rows_sdot, gemm_rows_sdot,
                                              em_int8_quantize_neon};
