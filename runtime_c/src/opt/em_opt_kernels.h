/* Fast kernels: algorithms in portable C over the micro-kernel tables of em_micro.h. Each has the
 * em_kernel shape (plan / pack / run, see em_kernels.h); em_kernels.c registers them once per ISA under
 * names <op>_f32_<algorithm>_<isa> and em_kernel_choose() (em_select.c) picks one per node.
 *
 * Tuning constants are macros so a board can override them with -D (they only change speed and
 * memory, never results beyond float rounding). */
#ifndef EDGEMERGE_EM_OPT_KERNELS_H
#define EDGEMERGE_EM_OPT_KERNELS_H

#include "../em_kernels.h"
#include "em_micro.h"

/* LUT_CONV2D keeps the table of a band of output rows, not of the whole image, once the whole table
 * would exceed this many bytes (a budget sized for a typical L2 share; the band is never so thin that
 * recomputing its halo rows costs more than about half the table). */
#ifndef EM_LUT_TABLE_BUDGET_BYTES
/* 256 KiB: within a Cortex-A cluster's shared L2 (512 KiB - 1 MiB) and small next to an x86 core's. A
 * bigger budget trades memory for speed on layers with big tables: 512 KiB makes LeNet's conv2 at
 * preset accu (a 401 KiB table) a single band, about 12 us faster on an AVX-512 host, and the
 * context about 100 KiB larger (em_bench_kernels shows both). */
#define EM_LUT_TABLE_BUDGET_BYTES (256u * 1024u)
#endif
/* LUT_CONV2D accumulates about this many floats of output rows per pass (whole rows). */
#ifndef EM_LUT_CHUNK_FLOATS
#define EM_LUT_CHUNK_FLOATS 256u
#endif
/* im2col convolutions expand a band of output rows at a time into at most this many bytes. */
#ifndef EM_IM2COL_BUDGET_BYTES
#define EM_IM2COL_BUDGET_BYTES (128u * 1024u)
#endif

/* ---- shared helpers (opt/portable.c) ---- */
/* y[p·channels + c] = act(y[...] + bias[c]) (bias may be NULL). */
void em_opt_bias_activate(float *y, size_t pixels, uint32_t channels, const float *bias, uint32_t activation);
/* y[i] = act(y[i]), and y[i] = act(a[i] + b[i]) (y may be a or b), with the activation chosen once per call, not
 * per value (opt/graph_ops.c); the bits of em_activate. */
void em_opt_activate(float *y, size_t n, uint32_t activation);
void em_opt_add_activate(float *y, const float *a, const float *b, size_t n, uint32_t activation);
/* Rounds a float count up so the next buffer starts 64-byte aligned. */
size_t em_opt_align_floats(size_t floats);
em_status em_opt_plan_no_scratch(const em_model *model, em_node *node, em_error *err);
/* plan() of a kernel whose packed data and scratch are its own (no table shared with other nodes); LIMIT
 * when !fits. */
em_status em_opt_plan_own_bytes(em_node *node, int fits, size_t packed_bytes, size_t scratch_bytes, em_error *err);

/* ---- LUT_CONV2D: planar tables (opt/lut_conv2d.c) ---- */
int em_lut_conv2d_planar_supports(const em_node *node);
em_status em_lut_conv2d_planar_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_conv2d_planar_pack(const em_model *model, em_node *node);
void em_lut_conv2d_planar_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
uint32_t em_lut_conv2d_planar_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units);
void em_lut_conv2d_planar_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                   uint32_t step, uint32_t begin, uint32_t end);

/* ---- LUT_CONV2D as a convolution with weights decoded at load (opt/conv2d.c) ---- */
em_status em_lut_conv2d_decoded_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_conv2d_decoded_pack(const em_model *model, em_node *node);
void em_lut_conv2d_decoded_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
void em_lut_conv2d_decoded_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                    uint32_t step, uint32_t begin, uint32_t end);

/* ---- LUT_DENSE (opt/lut_dense.c) ---- */
em_status em_lut_dense_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_dense_pack(const em_model *model, em_node *node);
void em_lut_dense_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
uint32_t em_lut_dense_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units);
void em_lut_dense_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                           uint32_t step, uint32_t begin, uint32_t end);

/* ---- ADD, MUL, CONCAT (opt/graph_ops.c): the reference's bits without a branch per value ---- */
void em_add_f32_run(const em_node *node, const float *const *inputs, float *output, float *scratch);
void em_mul_f32_run(const em_node *node, const float *const *inputs, float *output, float *scratch);
void em_concat_f32_run(const em_node *node, const float *const *inputs, float *output, float *scratch);

/* ---- LUT_DENSE as a matrix-vector product on weights decoded at load (opt/lut_dense.c) ---- */
em_status em_lut_dense_decoded_plan(const em_model *model, em_node *node, em_error *err);
void em_lut_dense_decoded_pack(const em_model *model, em_node *node);
void em_lut_dense_decoded_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);

/* ---- CONV2D and DENSE over gemm/gemv (opt/conv2d.c) ---- */
em_status em_conv2d_direct_plan(const em_model *model, em_node *node, em_error *err);
void em_conv2d_direct_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
/* split for the direct kernel and the decoded LUT kernel: step 0 the padded copy, step 1 the output rows */
uint32_t em_conv2d_direct_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units);
void em_conv2d_direct_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                               uint32_t step, uint32_t begin, uint32_t end);
int em_conv2d_1x1_supports(const em_node *node);
void em_conv2d_1x1_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
/* Fused run groups of 1×1 nodes (em_plan.c): one product over all the members' pixel rows. */
void em_conv2d_direct_fused_run(const em_node *node, const float *input, float *output, size_t pixels);
void em_conv2d_1x1_fused_run(const em_node *node, const float *input, float *output, size_t pixels);
em_status em_conv2d_im2col_plan(const em_model *model, em_node *node, em_error *err);
void em_conv2d_im2col_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
void em_dense_gemv_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
uint32_t em_dense_gemv_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units);
void em_dense_gemv_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                            uint32_t step, uint32_t begin, uint32_t end);

/* ---- DEPTHWISE_CONV2D, multiplier 1, on the micro-kernels' depthwise_rows (opt/portable.c) ---- */
int em_depthwise_conv2d_rows_supports(const em_node *node);
void em_depthwise_conv2d_rows_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
void em_depthwise_conv2d_rows_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                       uint32_t step, uint32_t begin, uint32_t end);

/* ---- ops without a matrix product, portable C (opt/portable.c) ---- */
void em_depthwise_conv2d_direct_run(const em_node *node, const float *input, float *output,
                                    const em_kernel_env *env);
void em_max_pool_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
void em_avg_pool_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
/* split of the row kernels (depthwise, pools): one step, one piece per output row */
uint32_t em_opt_split_rows(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units);
void em_depthwise_conv2d_direct_run_part(const em_node *node, const float *input, float *output,
                                         const em_kernel_env *env, uint32_t step, uint32_t begin, uint32_t end);
void em_pool_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                      uint32_t step, uint32_t begin, uint32_t end); /* MAX_POOL and AVG_POOL */
void em_global_avg_pool_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);
void em_copy_activate_run(const em_node *node, const float *input, float *output, const em_kernel_env *env);

#endif /* EDGEMERGE_EM_OPT_KERNELS_H */
