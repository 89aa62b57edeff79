/* int8 × int8 → int32 matrix tiles for LUT ops with int8 activations (flag INT8_ACT; FORMAT.md "int8
 * activations"; the kernels lut_conv2d_i8a_<set> / lut_dense_i8a_<set> of opt/lut_int8_act.c).
 *
 * Contract of one tile, 4 rows × 16 columns, exact in int32:
 *   c[i·16 + n] = Σ_{q < k4} Σ_{e < 4} a[i·lda + 4q + e] · b[q·64 + n·4 + e]        i < 4, n < 16
 * `a`: 4 rows of int8 (row i at a + i·lda, 4-byte aligned, k4·4 bytes each: the input patch);
 * `b`: the packed weights of 16 output channels, 4 consecutive depths of a channel next to each other (the
 * operand layout of `sdot`'s 4-byte groups). Every |value| ≤ 127, so every product fits int16 and every sum
 * int32 (the loader bounds the depth: INT8_ACT_MAX_PRODUCTS).
 *
 *   opt/lut_int8_act.c      generic C
 *   arm/int8_gemm_neon.c    ARMv8.0 / armv7 NEON: smull + sadalp (Cortex-A53, A72)
 *   arm/int8_gemm_sdot.c    ARMv8.2 dot product: sdot (Cortex-A55, A76), used when HWCAP has asimddp
 *   x86/int8_gemm_avx2.c    AVX2 vpmaddwd on sign-extended int16 (the avx2 and avx512 sets)
 *   x86/int8_gemm_avx512vnni.c  AVX-512 VNNI vpdpbusd on zmm (the avx512 set where the CPU has avx512_vnni)
 *   x86/int8_gemm_avxvnni.c     AVX-VNNI vpdpbusd on ymm (the avx2 set where the CPU has avx_vnni) */
#ifndef EDGEMERGE_EM_INT8_GEMM_H
#define EDGEMERGE_EM_INT8_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "edgemerge/em_format.h" /* EM_ACT_* */

typedef void (*em_int8_tile_fn)(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c);

/* A tile's store: rows × cols (≤ 4 × 16) of c (row stride 16) to out (row stride ldo) as
 *   out = f32(c) · scale, then + bias[n] (bias NULL: none), then ReLU / ReLU6 (x ≤ 0 → +0, x > 6 → 6)
 * in that order, no FMA: the reference's values bit for bit. activation: EM_ACT_NONE, RELU or RELU6. */
typedef void (*em_int8_store_fn)(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                                 uint32_t activation, float *out, size_t ldo);

/* The same sums with the 4 rows' depths in `segments` pieces (an implicit im2col: a conv's kernel rows in a
 * padded image):
 *   c[i·16 + n] = Σ_{s < segments} Σ_{q < seg_k4} Σ_{e < 4} rows[i][s·seg_stride + 4q + e] · b[(s·seg_k4 + q)·64 + n·4 + e]
 * i.e. the tile with k4 = segments · seg_k4 where row i's depths 4·(s·seg_k4 + q) + e lie at
 * rows[i] + s·seg_stride + 4q + e. */
typedef void (*em_int8_tile_rows_fn)(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                     const int8_t *b, int32_t *c);

/* Tiles and store in one call, for 4 rows (as tile_rows) × every column: for each block of 16 output
 * channels nb (b + nb·segments·seg_k4·64, the packed weights), the tile_rows sums stored as em_int8_store_fn
 * does to out + r·cout + 16·nb, rows r < valid_rows, channels < cout; bias NULL or cout values.
 * `offsets`: em_int8_column_offsets of b (the u8 trick's correction of the VNNI tiles, computed once). */
typedef void (*em_int8_gemm_rows_fn)(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                     const int8_t *b, const int32_t *offsets, uint32_t cout, float scale,
                                     const float *bias, uint32_t activation, float *out, uint32_t valid_rows);

/* dst[i] = em_lut_int8_quantize(src[i], inverse) for i < n, in one pass with the non-finite check: returns the
 * largest |src[i]|'s bit pattern (sign cleared), ≥ EM_INT8_NONFINITE_BITS where a value is Inf or NaN (dst
 * is then of no use). */
typedef uint32_t (*em_int8_quantize_fn)(const float *src, size_t n, float inverse, int8_t *dst);
#define EM_INT8_NONFINITE_BITS 0x7F800000u

/* The plain tile as one piece of tile_rows: rows i < 4 at a + i·lda (for sets whose tile is their tile_rows) */
static inline void em_int8_tile_by_rows(em_int8_tile_rows_fn tile_rows, const int8_t *a, size_t lda, const int8_t *b,
                                        size_t k4, int32_t *c)
{
    const int8_t *rows[4];
    rows[0] = a;
    rows[1] = a + lda;
    rows[2] = a + 2 * lda;
    rows[3] = a + 3 * lda;
    tile_rows(rows, 1, 0, k4, b, c);
}

/* offsets[nb·16 + n] = 128 · Σ_{q < k4, e < 4} b[(nb·k4 + q)·64 + n·4 + e] for n16 blocks of packed weights:
 * what vpdpbusd's unsigned operand a xor 0x80 = a + 128 adds to each column's sum */
void em_int8_column_offsets(const int8_t *b, size_t k4, size_t n16, int32_t *offsets);

typedef struct em_int8_gemm_micro {
    const char *isa; /* "generic", "neon", "sdot", "avx2", "avx512_vnni", "avx_vnni" */
    em_int8_tile_fn tile;
    em_int8_store_fn store; /* NULL: the kernel stores f32(c) · scale (em_int8_store_generic), then adds bias
                             * and activation in a separate pass */
    em_int8_tile_rows_fn tile_rows; /* NULL: the kernel builds im2col rows for the plain tile */
    em_int8_gemm_rows_fn gemm_rows; /* NULL: tile_rows + store per block of 16 channels */
    em_int8_quantize_fn quantize;   /* NULL: the kernel set's absmax pass, then its quantize */
} em_int8_gemm_micro;

/* em_int8_tile_rows_fn in C (the parity tests' reference for tile_rows) */
void em_int8_tile_rows_generic(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                               const int8_t *b, int32_t *c);

void em_int8_store_generic(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                           uint32_t activation, float *out, size_t ldo);

extern const em_int8_gemm_micro em_int8_gemm_generic;
#if defined(EM_HAVE_NEON)
extern const em_int8_gemm_micro em_int8_gemm_neon;
#endif
#if defined(EM_HAVE_ARM_DOTPROD)
extern const em_int8_gemm_micro em_int8_gemm_sdot;
#endif
#if defined(EM_HAVE_X86_SIMD)
extern const em_int8_gemm_micro em_int8_gemm_avx2;
#endif
#if defined(EM_HAVE_X86_SIMD)
/* x86/int8_gemm_avx2.c: the avx2 and avx_vnni tiles' store */
void em_int8_store_avx2(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                        uint32_t activation, float *out, size_t ldo);
#endif
#if defined(EM_HAVE_X86_AVX512_VNNI)
extern const em_int8_gemm_micro em_int8_gemm_avx512_vnni;
#endif
#if defined(EM_HAVE_X86_AVX_VNNI)
extern const em_int8_gemm_micro em_int8_gemm_avx_vnni;
#endif

/* The tiles kernel set `kernels` runs on this CPU: sdot on the neon set where the CPU has the dot product
 * (em_cpu_has_arm_dotprod), else smull/sadalp; on the avx512 set avx512_vnni where the CPU has it, on the
 * avx2 set avx_vnni where the CPU has it (bits of `x86_vnni_sets`: em_cpu_x86_vnni_sets(), the model's
 * x86_vnni_sets), else avx2 on both; generic otherwise. */
const em_int8_gemm_micro *em_int8_gemm_micro_for(uint32_t kernels, uint32_t x86_vnni_sets);
/* Every tile implementation this build has and this CPU runs (for parity tests and benchmarks). */
size_t em_int8_gemm_micro_list(const em_int8_gemm_micro **out, size_t max);

#endif /* EDGEMERGE_EM_INT8_GEMM_H */
