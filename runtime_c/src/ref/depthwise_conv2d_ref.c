/* DEPTHWISE_CONV2D with depth multiplier M: input channel c feeds output channels c·M + m through
 * its own KH×KW filter W[:, :, c, m]. W is [KH, KW, Cin, M]; out-of-image cells read as zero. */
#include "em_ref_kernels.h"

void em_depthwise_conv2d_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t in_w = node->in.w, in_c = node->in.c;
    const uint32_t out_w = node->out.w, out_c = node->out.c;
    const uint32_t multiplier = out_c / in_c; /* prepare() checked out_c == in_c · M */
    const float *weights = em_tensor_f32(node->weight);
    const float *bias = em_tensor_f32(node->bias);
    uint32_t oy, ox, c, m, ky, kx;
    (void)scratch;

    for (oy = 0; oy < node->out.h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            for (c = 0; c < in_c; ++c) {
                for (m = 0; m < multiplier; ++m) {
                    const uint32_t co = c * multiplier + m;
                    float acc = 0.0f;
                    for (ky = 0; ky < node->kernel_h; ++ky) {
                        const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, node->in.h);
                        if (iy < 0) continue;
                        for (kx = 0; kx < node->kernel_w; ++kx) {
                            const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                            if (ix < 0) continue;
                            acc += input[((size_t)iy * in_w + (size_t)ix) * in_c + c] *
                                   weights[(((size_t)ky * node->kernel_w + kx) * in_c + c) * multiplier + m];
                        }
                    }
                    if (bias) acc += bias[co];
                    output[((size_t)oy * out_w + ox) * out_c + co] = em_activate(acc, node->activation);
                }
            }
        }
    }
}
