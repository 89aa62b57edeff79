/* LUT_CONV2D / LUT_DENSE with flag INT8_TABLES (FORMAT.md "int8 tables"): the float table of the plain
 * LUT ops, quantised to int8 with one scale per node and run (em_lut_int8.h), summed in integers:
 *
 *   table[p, s, c] = Σ_j x[p, s·r + j] · codebook[s, c, j]               (as em_lut_build_table_ref)
 *   m              = max |table|;  q = clamp(round_half_even(table · 127 / m), ±127)
 *   y[oy, ox, co]  = act(bias[co] + (float)(Σ_{ky, kx, s} q[(oy·sh + ky − pt, ox·sw + kx − pl), s,
 *                                                               index[ky, kx, s, co]]) · (m / 127))
 *
 * A NaN or infinite table entry leaves no scale: every output is NaN. Terms in the padding are left out (q = 0). Scratch: the float table, as for the float ops; entries are
 * quantised where they are read. */
#include "../em_lut_int8.h"
#include "em_ref_kernels.h"

void em_lut_conv2d_int8_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t in_h = node->in.h, in_w = node->in.w, in_c = node->in.c;
    const uint32_t out_w = node->out.w, out_c = node->out.c;
    const uint32_t segments = node->segments, codewords = node->codewords;
    const size_t pixel_table = (size_t)segments * codewords;
    const float *codebook = em_tensor_f32(node->weight);
    const uint8_t *index = node->index_map->data;
    const uint32_t bits = node->index_map->bits;
    const float *bias = em_tensor_f32(node->bias);
    float *table = scratch;
    float inverse, scale;
    size_t p;
    uint32_t oy, ox, co, ky, kx, s;

    for (p = 0; p < (size_t)in_h * in_w; ++p)
        em_lut_build_table_ref(input + p * in_c, in_c, node->seg_len, segments, codewords, codebook,
                               node->codebook_segment_stride, table + p * pixel_table);
    {
        const float absmax = em_lut_int8_absmax(table, (size_t)in_h * in_w * pixel_table);
        if (!em_lut_int8_finite(absmax)) {
            em_lut_int8_fill_nan(output, node->out.numel);
            return;
        }
        inverse = em_lut_int8_inverse(absmax);
        scale = em_lut_int8_scale(absmax);
    }

    for (oy = 0; oy < node->out.h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            for (co = 0; co < out_c; ++co) {
                int32_t acc = 0;
                float y;
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
                            acc += em_lut_int8_quantize(pixel[(size_t)s * codewords + c], inverse);
                        }
                    }
                }
                y = (float)acc * scale;
                if (bias) y += bias[co];
                output[((size_t)oy * out_w + ox) * out_c + co] = em_activate(y, node->activation);
            }
        }
    }
}

void em_lut_dense_int8_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t segments = node->segments, codewords = node->codewords;
    const uint32_t out_count = node->out.c;
    const uint8_t *index = node->index_map->data;
    const uint32_t bits = node->index_map->bits;
    const float *bias = em_tensor_f32(node->bias);
    float *table = scratch;
    float inverse, scale;
    uint32_t o, s;

    em_lut_build_table_ref(input, node->in.numel, node->seg_len, segments, codewords, em_tensor_f32(node->weight),
                           node->codebook_segment_stride, table);
    {
        const float absmax = em_lut_int8_absmax(table, (size_t)segments * codewords);
        if (!em_lut_int8_finite(absmax)) {
            em_lut_int8_fill_nan(output, node->out.numel);
            return;
        }
        inverse = em_lut_int8_inverse(absmax);
        scale = em_lut_int8_scale(absmax);
    }
    for (o = 0; o < out_count; ++o) {
        int32_t acc = 0;
        float y;
        for (s = 0; s < segments; ++s)
            acc += em_lut_int8_quantize(table[(size_t)s * codewords +
                                              em_idx_get(index, bits, (uint64_t)s * out_count + o)],
                                        inverse);
        y = (float)acc * scale;
        if (bias) y += bias[o];
        output[o] = em_activate(y, node->activation);
    }
}
