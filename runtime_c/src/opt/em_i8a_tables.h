/* LUT ops with int8 activations (flag INT8_ACT; FORMAT.md "int8 activations") in the TABLE form: the kernels
 * lut_conv2d_i8a_tables_<set> / lut_dense_i8a_tables_<set> (opt/lut_int8_act_tables.c). The int32 table
 * table[pixel, s, c] = Σ_j qx[pixel, s·r + j] · qcb[s, c, j] is built with dot-product instructions (`sdot`:
 * 16 multiply-adds per instruction, against 4 for the float table's FMLA), then summed by index in int32, so
 * the result is the reference's bit for bit (integer sums are exact in any order). The other form, the
 * codebook decoded into int8 weights and one int8 GEMM (opt/lut_int8_act.c), gives up the table's saving;
 * em_select.c chooses between the two by a cost estimate.
 *
 * Operand layout of the table build: a segment's r values are padded with zeros to k4 groups of 4 (k4 =
 * ceil(r / 4)), and the codebook rows to a multiple of 4 codewords (C4), zero rows past C. Both operands
 * are in `sdot`'s 4-byte groups:
 *   cb  [C4 / 4][k4][4 codewords][4]   one 16-byte vector: four codewords' group q
 *   x   [blocks][k4][16 pixels][4]     one 16-byte vector: four pixels' group q
 *
 *   opt/lut_int8_act_tables.c     generic C (every x86 set: on avx2 / avx512 em_select.c keeps the decoded GEMM's
 *                                 vpmaddwd / VNNI tiles for LUT_CONV2D and takes the tables for LUT_DENSE only)
 *   x86/i8a_tables_avx2.c         LUT_DENSE table rows with vpmaddubsw + vpmaddwd (the avx2 and avx512 sets)
 *   x86/i8a_tables_avx512.c       the avx512 set's LUT_DENSE gather: vpermt2d of a table row by 16 indices
 *   arm/i8a_tables_neon.c         NEON smull + sadalp (ARMv8.0 and armv7: Cortex-A53, A72), the int32
 *                                 accumulation and gather with bias and ReLU in registers
 *   arm/i8a_tables_sdot.c         the ARMv8.2 dot product build (Cortex-A55, A76), where HWCAP has asimddp */
#ifndef EDGEMERGE_EM_I8A_TABLES_H
#define EDGEMERGE_EM_I8A_TABLES_H

#include <stddef.h>
#include <stdint.h>

typedef struct em_i8a_tables_micro {
    const char *isa; /* "generic", "neon", "sdot" */
    /* Planar table of one segment, pixels in blocks of 16:
     *   table[c·ldt + b·16 + i] = Σ_{q < k4} Σ_{e < 4} cb[((c / 4)·k4 + q)·16 + (c % 4)·4 + e] · x[((b·k4 + q)·16 + i)·4 + e]
     * for c < c4 (a multiple of 4), b < blocks, i < 16: exact in int32 (|values| ≤ 127; the loader bounds the
     * depth of every sum, INT8_ACT_MAX_PRODUCTS). */
    void (*build_planar)(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks, int32_t *table,
                         size_t ldt);
    /* One vector of table entries (LUT_DENSE): table[c] = Σ_{q < k4} Σ_{e < 4} cb[((c / 4)·k4 + q)·16 + (c % 4)·4 + e] · x[4q + e]
     * for c < c4 (a multiple of 16). */
    void (*build_row)(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table);
    /* Planar accumulation of one output channel over `vectors` runs of 4 pixels, run v starting at table
     * column start[v] (only the columns of output pixels: a row's run of out_w pixels, not the padding
     * columns between rows), then the reference's epilogue:
     *   out[4v + l] = act(f32(f32(Σ_{t < count} table[offset[t] + start[v] + l]) · scale) + bias)   l < 4
     * (bias 0 when NULL; act NONE, RELU or RELU6 as em_activate; no fused multiply-add). */
    void (*accumulate_planar)(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                              size_t vectors, float scale, const float *bias, uint32_t activation, float *out);
    /* LUT_DENSE: y[o] = act(f32(f32(Σ_{s < segments} table[s·ldt + idx[s·n + o]]) · scale) + bias[o]) for o < n
     * (bias NULL: no bias). */
    void (*gather)(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n, float scale,
                   const float *bias, uint32_t activation, float *y);
} em_i8a_tables_micro;

extern const em_i8a_tables_micro em_i8a_tables_generic;
#if defined(EM_HAVE_X86_SIMD)
/* the avx2 set (x86/i8a_tables_avx2.c): LUT_DENSE table rows with int8 dot products, the rest the generic C's */
extern const em_i8a_tables_micro em_i8a_tables_avx2;
void em_i8a_build_row_avx2(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table);
/* the avx512 set (x86/i8a_tables_avx512.c): the LUT_DENSE gather in registers, the avx2 row build, the rest the
 * generic C's */
extern const em_i8a_tables_micro em_i8a_tables_avx512;
#endif
#if defined(EM_HAVE_NEON)
extern const em_i8a_tables_micro em_i8a_tables_neon;
/* the NEON accumulation and gather, which the sdot set shares */
void em_i8a_accumulate_planar_neon(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                                   size_t vectors, float scale, const float *bias, uint32_t activation, float *out);
void em_i8a_gather_neon(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n, float scale,
                        const float *bias, uint32_t activation, float *y);
#if defined(EM_HAVE_ARM_DOTPROD) /* (only with NEON) */
extern const em_i8a_tables_micro em_i8a_tables_sdot;
#endif
#endif

/* em_i8a_tables_micro_for: what kernel set `kernels` runs on this CPU (sdot on the neon set where the CPU has
 * the dot product, else NEON smull/sadalp; generic C on every other set); em_i8a_tables_micro_list: every
 * implementation this build has and this CPU runs, up to `max` of them into `out` (for parity tests). */
const em_i8a_tables_micro *em_i8a_tables_micro_for(uint32_t kernels);
size_t em_i8a_tables_micro_list(const em_i8a_tables_micro **out, size_t max);

#endif /* EDGEMERGE_EM_I8A_TABLES_H */
