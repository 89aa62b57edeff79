/* LUT_CONV2D (NeuralMerger's E-Conv), computed the way FORMAT.md "LUT ops" writes it:
 *
 *   table[p, s, c] = Σ_j x[p, s·r + j] · codebook[s, c, j]        (x zero beyond Cin)
 *   y[oy, ox, co]  = act(bias[co] + Σ_{ky, kx, s} table[(oy·sh + ky − pt, ox·sw + kx − pl), s,
 *                                                       index[ky, kx, s, co]])
 *
 * Terms whose input pixel lies in the padding are left out. The table costs H·W·S·C·r multiply-adds
 * and replaces the KH·KW·Cin·Cout multiply-adds per output pixel of a plain convolution by
 * KH·KW·S additions: that is where the speed-up comes from when C is small next to Cout.
 *
 * Scratch: the table, [in_h · in_w, S, C] floats (node->scratch_bytes). */
#include "em_ref_kernels.h"

void em_lut_conv2d_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t in_h = node->in.h, in_w = node->in.w, in_c = node->in.c;
    const uint32_t out_w = node->out.w, out_c = node->out.c;
    const uint32_t segments = node->segments, codewords = node->codewords;
    const size_t pixel_table = (size_t)segments * codewords; /* floats of table per input pixel */
    const float *codebook = em_tensor_f32(node->weight);     /* [S_cb >= S, C, r]: first S used; or [1, C, r] shared */
    const uint8_t *index = node->index_map->data;                /* IDX [KH, KW, S, Cout] */
    const uint32_t bits = node->index_map->bits;
    const float *bias = em_tensor_f32(node->bias);
    float *table = scratch;
    size_t p;
    uint32_t oy, ox, co, ky, kx, s;

    if (node->flags & EM_NODE_FLAG_INT8_ACT) { /* FORMAT.md "int8 activations" */
        em_lut_int8_act_ref(node, input, output, scratch);
        return;
    }
    if (node->flags & EM_NODE_FLAG_INT8_TABLES) { /* FORMAT.md "int8 tables" */
        em_lut_conv2d_int8_ref(node, input, output, scratch);
        return;
    }

    for (p = 0; p < (size_t)in_h * in_w; ++p)
        em_lut_build_table_ref(input + p * in_c, in_c, node->seg_len, segments, codewords, codebook,
                               node->codebook_segment_stride, table + p * pixel_table);

    for (oy = 0; oy < node->out.h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            for (co = 0; co < out_c; ++co) {
                float acc = 0.0f;
                for (ky = 0; ky < node->kernel_h; ++ky) {
                    const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, in_h);
                    if (iy < 0) continue;
                    for (kx = 0; kx < node->kernel_w; ++kx) {
                        const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                        const float *pixel;
                        const uint64_t tap = ((uint64_t)ky * node->kernel_w + kx) * segments;
                        if (ix < 0) continue;
                        pixel = table + ((size_t)iy * in_w + (size_t)ix) * pixel_table;
                        for (s = 0; s < segments; ++s) {
                            const uint32_t c = em_idx_get(index, bits, (tap + s) * out_c + co);
                            acc += pixel[(size_t)s * codewords + c];
                        }
                    }
                }
                if (bias) acc += bias[co];
                output[((size_t)oy * out_w + ox) * out_c + co] = em_activate(acc, node->activation);
            }
        }
    }
}
