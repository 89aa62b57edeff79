/* LUT ops with int8 tables (flag INT8_TABLES, C = 16; FORMAT.md "int8 tables"): the fast kernels
 * lut_conv2d_i8_<isa> and lut_dense_i8_<isa> (opt/lut_int8.c) and their byte-shuffle micro-kernels.
 *
 * The table of one input pixel and segment is 16 int8 entries: one 128-bit register. The indices of
 * 16 output channels at one term (tap, segment) are 16 bytes, unpacked at load. A byte shuffle
 * (pshufb / vqtbl1q / vtbl2) of the first by the second looks up 16 output channels' terms at once:
 *
 *   src/opt/lut_int8.c         generic C (also the sse2 set's: pshufb is SSSE3, not in the x86-64 baseline)
 *   src/x86/lut_int8_avx2.c    SSSE3 _mm_shuffle_epi8 + AVX2 widening (the avx2 and avx512 sets; every
 *                              AVX-512F CPU has AVX2; a 512-bit vpshufb would need AVX-512BW)
 *   src/arm/lut_int8_neon.c    vqtbl1q_s8 on aarch64, vtbl2_s8 pairs on armv7 NEON
 *
 * Micro-kernel contract, for one output pixel: for g < groups, l < 16,
 *   acc[g·16 + l] = Σ_{t < terms} table[offsets[t] + idx[(t·groups + g)·16 + l]]
 * exactly (int16 partial sums flushed to int32 at least every EM_LUT_INT8_FLUSH_TERMS terms). */
#ifndef EDGEMERGE_EM_LUT_INT8_KERNELS_H
#define EDGEMERGE_EM_LUT_INT8_KERNELS_H

#include "../em_kernels.h"

/* The per-ISA inner loops of an int8-table LUT op. absmax and quantize compute exactly what the scalar
 * helpers of em_lut_int8.h compute (max is order-free; the rounding is the same float32 operations). */
typedef struct em_lut_int8_micro {
    const char *isa; /* "generic", "avx2", "neon" */
    /* acc[g·16 + l] = Σ_{t < terms} table[offsets[t] + idx[(t·groups + g)·16 + l]] for g < groups, l < 16 */
    void (*accumulate)(const int8_t *table, const uint32_t *offsets, const uint8_t *idx, size_t terms,
                       size_t groups, int32_t *acc);
    /* em_lut_int8_absmax(src, n) */
    float (*absmax)(const float *src, size_t n);
    /* dst[i] = em_lut_int8_quantize(src[i], inverse) for i < n */
    void (*quantize)(const float *src, size_t n, float inverse, int8_t *dst);
} em_lut_int8_micro;

extern const em_lut_int8_micro em_lut_int8_generic;
#if defined(EM_HAVE_X86_SIMD)
extern const em_lut_int8_micro em_lut_int8_avx2;
#endif
#if defined(EM_HAVE_NEON)
extern const em_lut_int8_micro em_lut_int8_neon;
#endif
/* The micro-kernels a kernel set (EM_KERNELS_*) uses: avx2 for the avx2 and avx512 sets, neon for neon,
 * generic otherwise (sse2 included: pshufb is SSSE3, not in the x86-64 baseline). */
const em_lut_int8_micro *em_lut_int8_micro_for(uint32_t kernels);

/* Kernels (the em_kernel shape): supports() only nodes with flag INT8_TABLES; the float LUT kernels
 * support only nodes without it (em_lut_f32_supports). */
int em_lut_int8_supports(const em_node *node);
int em_lut_f32_supports(const em_node *node);
em_status em_lut_int8_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_int8_pack(const em_model *model, em_node *node);
void em_lut_int8_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);

/* int8 activations (flag INT8_ACT; opt/lut_int8_act.c on the tiles of em_int8_gemm.h): supports() only
 * flagged nodes. */
int em_lut_int8_act_supports(const em_node *node);
em_status em_lut_int8_act_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_int8_act_pack(const em_model *model, em_node *node);
void em_lut_int8_act_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
/* ... and the table form (opt/lut_int8_act_tables.c, micro-kernels em_i8a_tables.h): supports() flagged nodes
 * whose int32 table fits EM_LUT_TABLE_BUDGET_BYTES in one band. */
int em_lut_int8_act_tables_supports(const em_node *node);
em_status em_lut_int8_act_tables_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_int8_act_tables_pack(const em_model *model, em_node *node);
void em_lut_int8_act_tables_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);

#endif /* EDGEMERGE_EM_LUT_INT8_KERNELS_H */
