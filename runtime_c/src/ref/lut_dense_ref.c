/* LUT_DENSE (NeuralMerger's E-FC): the 1×1 case of LUT_CONV2D over the flattened input.
 *
 *   table[s, c] = Σ_j x[s·r + j] · codebook[s, c, j]        (x zero beyond In)
 *   y[o]        = act(bias[o] + Σ_s table[s, index[s, o]])
 *
 * Scratch: the table, S·C floats. */
#include "em_ref_kernels.h"

void em_lut_dense_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t segments = node->segments, codewords = node->codewords;
    const uint32_t out_count = node->out.c;
    const uint8_t *index = node->index_map->data; /* IDX [S, Out] */
    const uint32_t bits = node->index_map->bits;
    const float *bias = em_tensor_f32(node->bias);
    float *table = scratch;
    uint32_t o, s;

    if (node->flags & EM_NODE_FLAG_INT8_ACT) { /* FORMAT.md "int8 activations" */
        em_lut_int8_act_ref(node, input, output, scratch);
        return;
    }
    if (node->flags & EM_NODE_FLAG_INT8_TABLES) { /* FORMAT.md "int8 tables" */
        em_lut_dense_int8_ref(node, input, output, scratch);
        return;
    }

    em_lut_build_table_ref(input, node->in.numel, node->seg_len, segments, codewords,
                           em_tensor_f32(node->weight), node->codebook_segment_stride, table);
    for (o = 0; o < out_count; ++o) {
        float acc = 0.0f;
        for (s = 0; s < segments; ++s)
            acc += table[(size_t)s * codewords + em_idx_get(index, bits, (uint64_t)s * out_count + o)];
        if (bias) acc += bias[o];
        output[o] = em_activate(acc, node->activation);
    }
}
