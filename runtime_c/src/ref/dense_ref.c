/* DENSE over the flattened input: y[o] = act(bias[o] + Σ_i x[i] · W[i, o]), W is [In, Out]. */
#include "em_ref_kernels.h"

void em_dense_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t in_count = node->in.numel;
    const uint32_t out_count = node->out.c;
    const float *weights = em_tensor_f32(node->weight);
    const float *bias = em_tensor_f32(node->bias);
    uint32_t i, o;
    (void)scratch;

    for (o = 0; o < out_count; ++o) {
        float acc = 0.0f;
        for (i = 0; i < in_count; ++i) acc += input[i] * weights[(size_t)i * out_count + o];
        if (bias) acc += bias[o];
        output[o] = em_activate(acc, node->activation);
    }
}
