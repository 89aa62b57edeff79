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
 *   x86/int8_gemm_avx2.c    AVX2 vpmaddwd on sign-extended int16 (the avx2 and avx512 sets) */
#ifndef EDGEMERGE_EM_INT8_GEMM_H
#define EDGEMERGE_EM_INT8_GEMM_H

#include <stddef.h>
#include <stdint.h>

typedef void (*em_int8_tile_fn)(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c);

typedef struct em_int8_gemm_micro {
    const char *isa; /* "generic", "neon", "sdot", "avx2" */
    em_int8_tile_fn tile;
} em_int8_gemm_micro;

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

/* The tiles kernel set `kernels` runs on this CPU: sdot on the neon set where the CPU has the dot product
 * (em_cpu_has_arm_dotprod), else smull/sadalp; avx2 on the avx2 and avx512 sets; generic otherwise. */
const em_int8_gemm_micro *em_int8_gemm_micro_for(uint32_t kernels);
/* Every tile implementation this build has and this CPU runs (for parity tests and benchmarks). */
size_t em_int8_gemm_micro_list(const em_int8_gemm_micro **out, size_t max);

#endif /* EDGEMERGE_EM_INT8_GEMM_H */
