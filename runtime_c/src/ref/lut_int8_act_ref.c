/* LUT_CONV2D / LUT_DENSE with flag INT8_ACT (FORMAT.md "int8 activations"), the paper's table way in
 * integers:
 *
 *   qx[p, i]        = clamp(round_half_even(x[p, i] · f32(1 / sx)), ±127)          (0 for i ≥ Cin)
 *   qcb[s, c, j]    = clamp(round_half_even(codebook[s, c, j] · f32(127 / m)), ±127)  m = max |codebook|
 *                     (a layer-shared codebook [1, C, r]: qcb[0, c, j] for every s, m over its C·r entries)
 *   table[p, s, c]  = Σ_j qx[p, s·r + j] · qcb[s, c, j]                               (int32, exact)
 *   y[oy, ox, co]   = act(f32(f32(Σ_{ky, kx, s} table[...]) · f32(sx · f32(m / 127))) + bias[co])
 *
 * A non-finite input element leaves no int8 image: every output is NaN. Terms in the padding are left
 * out. Scratch (em_ops.c check_int8_act): int32 table [P, S, C] | int8 qx [P, S·r] | int8 qcb [S, C, r]. */
#include "../em_int8_act.h"
#include "em_ref_kernels.h"

void em_lut_int8_act_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const int dense = node->op == EM_OP_LUT_DENSE;
    const uint32_t in_h = dense ? 1u : node->in.h, in_w = dense ? 1u : node->in.w;
    const uint32_t in_c = em_int8_act_in_c(node);
    const uint32_t out_h = node->out.h, out_w = node->out.w, out_c = node->out.c;
    const uint32_t kh = dense ? 1u : node->kernel_h, kw = dense ? 1u : node->kernel_w;
    const uint32_t r = node->seg_len, segments = node->segments, codewords = node->codewords;
    const size_t pixels = (size_t)in_h * in_w, depth = (size_t)segments * r;
    const size_t pixel_table = (size_t)segments * codewords;
    const float *codebook = em_tensor_f32(node->weight);
    const uint8_t *index = node->index_map->data;
    const uint32_t bits = node->index_map->bits;
    const float *bias = em_tensor_f32(node->bias);
    int32_t *table = (int32_t *)(void *)scratch;
    int8_t *qx = (int8_t *)(table + pixels * pixel_table);
    int8_t *qcb = qx + pixels * depth;
    float input_inverse, cb_absmax, cb_inverse, scale;
    size_t p, i;
    uint32_t s, c, j, oy, ox, co, ky, kx;

    if (!em_lut_int8_finite(em_lut_int8_absmax(input, pixels * in_c))) {
        em_lut_int8_fill_nan(output, node->out.numel);
        return;
    }
    input_inverse = em_int8_act_input_inverse(node);
    for (p = 0; p < pixels; ++p)
        for (i = 0; i < depth; ++i)
            qx[p * depth + i] = (int8_t)(i < in_c ? em_lut_int8_quantize(input[p * in_c + i], input_inverse) : 0);
    cb_absmax = em_int8_act_codebook_absmax(node);
    cb_inverse = em_lut_int8_inverse(cb_absmax);
    scale = em_int8_act_output_scale(node, cb_absmax);
    for (i = 0; i < (size_t)em_lut_codebook_segments(node) * codewords * r; ++i)
        qcb[i] = (int8_t)em_lut_int8_quantize(codebook[i], cb_inverse);

    for (p = 0; p < pixels; ++p)
        for (s = 0; s < segments; ++s)
            for (c = 0; c < codewords; ++c) {
                int32_t t = 0;
                for (j = 0; j < r; ++j)
                    t += (int32_t)qx[p * depth + (size_t)s * r + j] *
                         qcb[s * node->codebook_segment_stride + (size_t)c * r + j];
                table[p * pixel_table + (size_t)s * codewords + c] = t;
            }

    for (oy = 0; oy < out_h; ++oy)
        for (ox = 0; ox < out_w; ++ox)
            for (co = 0; co < out_c; ++co) {
                int32_t acc = 0;
                float y;
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t iy = dense ? 0 : em_input_coord(oy, node->stride_h, ky, node->pad_top, in_h);
                    if (iy < 0) continue;
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t ix = dense ? 0 : em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                        const uint64_t tap = ((uint64_t)ky * kw + kx) * segments;
                        const int32_t *pixel;
                        if (ix < 0) continue;
                        pixel = table + ((size_t)iy * in_w + (size_t)ix) * pixel_table;
                        for (s = 0; s < segments; ++s)
                            acc += pixel[(size_t)s * codewords + em_idx_get(index, bits, (tap + s) * out_c + co)];
                    }
                }
                y = (float)acc * scale;
                if (bias) y += bias[co];
                output[((size_t)oy * out_w + ox) * out_c + co] = em_activate(y, node->activation);
            }
}
