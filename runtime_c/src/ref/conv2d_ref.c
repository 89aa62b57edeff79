/* CONV2D: y[oy, ox, co] = act(bias[co] + Σ_{ky, kx, ci} x[oy·sh + ky − pt, ox·sw + kx − pl, ci] · W[ky, kx, ci, co]),
 * out-of-image cells read as zero (their terms are left out). W is [KH, KW, Cin, Cout]. */
#include "em_ref_kernels.h"

void em_conv2d_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t in_w = node->in.w, in_c = node->in.c;
    const uint32_t out_w = node->out.w, out_c = node->out.c;
    const float *weights = em_tensor_f32(node->weight);
    const float *bias = em_tensor_f32(node->bias);
    uint32_t oy, ox, co, ky, kx, ci;
    (void)scratch;

    for (oy = 0; oy < node->out.h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            for (co = 0; co < out_c; ++co) {
                float acc = 0.0f;
                for (ky = 0; ky < node->kernel_h; ++ky) {
                    const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, node->in.h);
                    if (iy < 0) continue;
                    for (kx = 0; kx < node->kernel_w; ++kx) {
                        const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                        const float *x;
                        const float *w;
                        if (ix < 0) continue;
                        x = input + ((size_t)iy * in_w + (size_t)ix) * in_c;
                        w = weights + ((size_t)ky * node->kernel_w + kx) * in_c * out_c;
                        for (ci = 0; ci < in_c; ++ci) acc += x[ci] * w[(size_t)ci * out_c + co];
                    }
                }
                if (bias) acc += bias[co];
                output[((size_t)oy * out_w + ox) * out_c + co] = em_activate(acc, node->activation);
            }
        }
    }
}
