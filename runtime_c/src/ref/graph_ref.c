/* Ops of graphs with branches (FORMAT.md v2 "Multi-input ops"): ADD, CONCAT, MUL, and PAD. Plain loops
 * in the order the spec writes the math; the loader proved the shapes (em_ops.c prepare_add & co.). */
#include "em_ref_kernels.h"

/* The shape of input k (the loader verified it). */
static const em_shape *shape_of(const em_node *node, uint32_t k)
{
    return &node->value_shapes[node->inputs[k]];
}

void em_add_ref(const em_node *node, const float *const *inputs, float *output, float *scratch)
{
    uint32_t i, k;
    (void)scratch;
    for (i = 0; i < node->out.numel; ++i) {
        float acc = inputs[0][i];
        for (k = 1; k < node->input_count; ++k) acc += inputs[k][i]; /* input order: ((x0 + x1) + x2) ... */
        output[i] = em_activate(acc, node->activation);
    }
}

void em_concat_ref(const em_node *node, const float *const *inputs, float *output, float *scratch)
{
    /* input k's channel count: its share of the pixels' elements (every input has the output's h·w) */
    const uint32_t pixels = node->out.h * node->out.w;
    uint32_t p, k, c, offset = 0;
    (void)scratch;
    for (k = 0; k < node->input_count; ++k) {
        const uint32_t channels = shape_of(node, k)->c;
        for (p = 0; p < pixels; ++p)
            for (c = 0; c < channels; ++c)
                output[(size_t)p * node->out.c + offset + c] =
                    em_activate(inputs[k][(size_t)p * channels + c], node->activation);
        offset += channels;
    }
}

void em_mul_ref(const em_node *node, const float *const *inputs, float *output, float *scratch)
{
    /* equal shapes, or one input (1, 1, C) scaling every pixel of the other: an input with fewer elements
     * than the output is the per-channel vector (the loader proved the pair is one of these cases) */
    const uint32_t channels = node->out.c;
    const int a_per_channel = shape_of(node, 0)->numel != node->out.numel;
    const int b_per_channel = shape_of(node, 1)->numel != node->out.numel;
    uint32_t i;
    (void)scratch;
    for (i = 0; i < node->out.numel; ++i) {
        const float a = inputs[0][a_per_channel ? i % channels : i];
        const float b = inputs[1][b_per_channel ? i % channels : i];
        output[i] = em_activate(a * b, node->activation);
    }
}

void em_pad_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    uint32_t oy, ox, c;
    const float zero = em_activate(0.0f, node->activation);
    (void)scratch;
    for (oy = 0; oy < node->out.h; ++oy)
        for (ox = 0; ox < node->out.w; ++ox) {
            const int inside = oy >= node->pad_top && oy - node->pad_top < node->in.h && ox >= node->pad_left &&
                               ox - node->pad_left < node->in.w;
            float *dst = output + ((size_t)oy * node->out.w + ox) * node->out.c;
            const float *src = inside ? input + ((size_t)(oy - node->pad_top) * node->in.w + (ox - node->pad_left)) *
                                                    node->in.c
                                      : NULL;
            for (c = 0; c < node->out.c; ++c) dst[c] = src != NULL ? em_activate(src[c], node->activation) : zero;
        }
}
