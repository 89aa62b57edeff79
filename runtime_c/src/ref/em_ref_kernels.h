/* Scalar reference kernels: the executable form of docs/FORMAT.md's op semantics.
 *
 * Deliberately plain (loops in the order the spec writes the math, float32 accumulation, no
 * blocking) so they can be read against the spec line by line. Fast kernels (src/opt/ over the
 * micro-kernels of src/x86/, src/arm/) compute the same ops and are checked against these by parity tests.
 *
 * Every kernel has the em_eval_fn signature (em_kernels.h) and relies on em_model_load() having validated the
 * node: shapes agree, tensors exist with the right dims, every index is < C, and `scratch` holds at
 * least node->scratch_bytes. Layouts are NHWC, batch 1, row-major. */
#ifndef EDGEMERGE_EM_REF_KERNELS_H
#define EDGEMERGE_EM_REF_KERNELS_H

#include <math.h>

#include "em_internal.h"

static inline float em_relu6(float x)
{
    return x <= 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
}

/* The fused activation every op applies to its output (FORMAT.md "Activations", the exact order of
 * operations written there; "Non-finite values" for NaN and infinities). */
static inline float em_activate(float x, uint32_t activation)
{
    switch (activation) {
    case EM_ACT_RELU: /* NaN stays NaN (TensorFlow's Relu), -0 gives +0: FORMAT.md "Non-finite values" */
        return x <= 0.0f ? 0.0f : x;
    case EM_ACT_RELU6:
        return em_relu6(x);
    case EM_ACT_SIGMOID: /* expf(+Inf) = +Inf gives 0 for x = -Inf; NaN stays NaN */
        return 1.0f / (1.0f + expf(-x));
    case EM_ACT_HARD_SIGMOID:
        return em_relu6(x + 3.0f) / 6.0f;
    case EM_ACT_HARD_SWISH: /* -Inf · 0 = NaN, as in TensorFlow */
        return x * (em_relu6(x + 3.0f) / 6.0f);
    case EM_ACT_SWISH:
        return x * (1.0f / (1.0f + expf(-x)));
    default: /* EM_ACT_NONE; the loader rejects unknown values */
        return x;
    }
}

/* Row of the input that output row `o`, kernel tap `k` reads, or -1 if that row is padding.
 * In unsigned arithmetic: o·stride + k is at most h + pad_before + pad_after − 1 (the loader checked
 * the output size), so nothing here can overflow. */
static inline int32_t em_input_coord(uint32_t o, uint32_t stride, uint32_t k, uint32_t pad_before,
                                     uint32_t size)
{
    const uint32_t padded = o * stride + k;
    if (padded < pad_before || padded - pad_before >= size) return -1;
    return (int32_t)(padded - pad_before);
}

void em_conv2d_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_depthwise_conv2d_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_dense_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_max_pool_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_avg_pool_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_global_avg_pool_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_reshape_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_activation_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_pad_ref(const em_node *node, const float *input, float *output, float *scratch);
/* Multi-input ops (ref/graph_ref.c): inputs[k] is the value of node->inputs[k] (em_eval_n_fn). */
void em_add_ref(const em_node *node, const float *const *inputs, float *output, float *scratch);
void em_concat_ref(const em_node *node, const float *const *inputs, float *output, float *scratch);
void em_mul_ref(const em_node *node, const float *const *inputs, float *output, float *scratch);
void em_lut_conv2d_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_lut_dense_ref(const em_node *node, const float *input, float *output, float *scratch);
/* The same ops with flag INT8_TABLES (ref/lut_int8_ref.c); em_lut_conv2d_ref / em_lut_dense_ref call them
 * for flagged nodes, so the reference kernel of an op is always the spec of the node it runs. */
void em_lut_conv2d_int8_ref(const em_node *node, const float *input, float *output, float *scratch);
void em_lut_dense_int8_ref(const em_node *node, const float *input, float *output, float *scratch);
/* Both LUT ops with flag INT8_ACT (ref/lut_int8_act_ref.c, FORMAT.md "int8 activations"), reached through
 * em_lut_conv2d_ref / em_lut_dense_ref. */
void em_lut_int8_act_ref(const em_node *node, const float *input, float *output, float *scratch);

/* LUT ops' first step (ref/lut_table_ref.c), shared by LUT_CONV2D and LUT_DENSE, float and int8: for one
 * input pixel x (Cin channels),
 * table[s, c] = dot(x[s·r .. s·r + r − 1], codebook[s, c, :]) with x zero-padded past Cin; segment s's
 * codebook starts at codebook + s · codebook_stride (node->codebook_segment_stride: 0 when shared). */
void em_lut_build_table_ref(const float *x, uint32_t in_c, uint32_t seg_len, uint32_t segments,
                            uint32_t codewords, const float *codebook, size_t codebook_stride, float *table);

/* Largest index in an IDX tensor (the loader's one-time scan that proves every index < C). */
uint32_t em_idx_max(const em_tensor *tensor);

#endif /* EDGEMERGE_EM_REF_KERNELS_H */
