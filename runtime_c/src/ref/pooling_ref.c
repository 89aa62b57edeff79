/* MAX_POOL, AVG_POOL and GLOBAL_AVG_POOL. Padded cells take no part: max over the cells inside the
 * input, mean over the cells inside the input (TensorFlow's 'SAME' semantics). A NaN in a window makes
 * its maximum NaN (FORMAT.md "Non-finite values"). Because every pad is
 * smaller than its kernel (checked by the loader), each window holds at least one input cell. */
#include "em_ref_kernels.h"

/* Shared window walk; `average` selects the reduction. */
static void pool_ref(const em_node *node, const float *input, float *output, int average)
{
    const uint32_t in_w = node->in.w, channels = node->in.c;
    const uint32_t out_w = node->out.w;
    uint32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < node->out.h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            for (c = 0; c < channels; ++c) {
                float sum = 0.0f;
                float max = 0.0f;
                uint32_t cells = 0;
                for (ky = 0; ky < node->kernel_h; ++ky) {
                    const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, node->in.h);
                    if (iy < 0) continue;
                    for (kx = 0; kx < node->kernel_w; ++kx) {
                        const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                        float v;
                        if (ix < 0) continue;
                        v = input[((size_t)iy * in_w + (size_t)ix) * channels + c];
                        if (cells == 0 || v > max || v != v) max = v; /* a NaN in the window wins */
                        sum += v;
                        ++cells;
                    }
                }
                output[((size_t)oy * out_w + ox) * channels + c] =
                    em_activate(average ? sum / (float)cells : max, node->activation);
            }
        }
    }
}

void em_max_pool_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    (void)scratch;
    pool_ref(node, input, output, 0);
}

void em_avg_pool_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    (void)scratch;
    pool_ref(node, input, output, 1);
}

void em_global_avg_pool_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    const uint32_t channels = node->in.c;
    const size_t pixels = (size_t)node->in.h * node->in.w;
    size_t p;
    uint32_t c;
    (void)scratch;

    for (c = 0; c < channels; ++c) {
        float sum = 0.0f;
        for (p = 0; p < pixels; ++p) sum += input[p * channels + c];
        output[c] = em_activate(sum / (float)pixels, node->activation);
    }
}
