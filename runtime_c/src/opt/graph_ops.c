/* Fast kernels of the multi-input ops ADD, MUL and CONCAT (FORMAT.md v2 "Multi-input ops"), and the
 * elementwise activate and add-and-activate that the ACTIVATION / RESHAPE copy (opt/portable.c) and the fused
 * residual ADD of the convolutions (opt/conv2d.c) use.
 *
 * Why they exist: the reference loops call em_activate() per element, a switch plus, for ReLU, a compare
 * and branch on the value's sign. On real activations the sign is random, so the branch mispredicts about
 * half the time: the ResNet-8 words net's three ReLU ADDs (16 K, 8 K and 4 K values) took 0.17 ms of a
 * 0.33 ms inference on the AVX-512 host (perf: em_add_ref 48 % of em_run's samples). Here the activation
 * is chosen once per node and the loop body is a select the compiler turns into vector compares and
 * blends (portable C, vectorised for the build's base ISA: the ops are memory-bound, so they need no
 * per-ISA copies).
 *
 * Same bits as the reference: the same float32 operations in the same order (x0 + x1, then + x2, ...),
 * and the activations written exactly as em_activate writes them (x <= 0 ? 0 : x keeps NaN and turns −0
 * into +0). Activations other than NONE, RELU and RELU6 call em_activate itself. */
#include <string.h>

#include "em_opt_kernels.h"
#include "../ref/em_ref_kernels.h"

void em_opt_activate(float *y, size_t n, uint32_t activation)
{
    size_t i;
    switch (activation) {
    case EM_ACT_NONE:
        return;
    case EM_ACT_RELU:
        for (i = 0; i < n; ++i) {
            const float v = y[i];
            y[i] = v <= 0.0f ? 0.0f : v;
        }
        return;
    case EM_ACT_RELU6:
        for (i = 0; i < n; ++i) {
            const float v = y[i];
            y[i] = v <= 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        }
        return;
    default:
        for (i = 0; i < n; ++i) y[i] = em_activate(y[i], activation);
        return;
    }
}

void em_opt_add_activate(float *y, const float *a, const float *b, size_t n, uint32_t activation)
{
    size_t i;
    switch (activation) {
    case EM_ACT_NONE:
        for (i = 0; i < n; ++i) y[i] = a[i] + b[i];
        return;
    case EM_ACT_RELU:
        for (i = 0; i < n; ++i) {
            const float v = a[i] + b[i];
            y[i] = v <= 0.0f ? 0.0f : v;
        }
        return;
    case EM_ACT_RELU6:
        for (i = 0; i < n; ++i) {
            const float v = a[i] + b[i];
            y[i] = v <= 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        }
        return;
    default:
        for (i = 0; i < n; ++i) y[i] = em_activate(a[i] + b[i], activation);
        return;
    }
}

void em_add_f32_run(const em_node *node, const float *const *inputs, float *output, float *scratch)
{
    const size_t n = node->out.numel;
    uint32_t k;
    (void)scratch;
    if (node->input_count == 2) {
        em_opt_add_activate(output, inputs[0], inputs[1], n, node->activation);
        return;
    }
    /* ((x0 + x1) + x2) + ...: the sum so far stays in the output (no input shares the output's buffer: an
     * input's value lives through the step of the node that reads it, em_plan.c) */
    em_opt_add_activate(output, inputs[0], inputs[1], n, EM_ACT_NONE);
    for (k = 2; k + 1 < node->input_count; ++k) em_opt_add_activate(output, output, inputs[k], n, EM_ACT_NONE);
    em_opt_add_activate(output, output, inputs[node->input_count - 1u], n, node->activation);
}

void em_mul_f32_run(const em_node *node, const float *const *inputs, float *output, float *scratch)
{
    /* equal shapes, or one input (1, 1, C) scaling every pixel of the other (the loader proved which) */
    const size_t n = node->out.numel, channels = node->out.c;
    const int a_per_channel = node->value_shapes[node->inputs[0]].numel != node->out.numel;
    const int b_per_channel = node->value_shapes[node->inputs[1]].numel != node->out.numel;
    size_t i, p;
    (void)scratch;
    if (!a_per_channel && !b_per_channel) {
        for (i = 0; i < n; ++i) output[i] = inputs[0][i] * inputs[1][i];
    } else {
        /* a · b in the reference's operand order (a NaN's payload comes from the first operand) */
        for (p = 0; p < n; p += channels) {
            float *y = output + p;
            size_t c;
            if (a_per_channel) {
                const float *a = inputs[0], *b = inputs[1] + p;
                for (c = 0; c < channels; ++c) y[c] = a[c] * b[c];
            } else {
                const float *a = inputs[0] + p, *b = inputs[1];
                for (c = 0; c < channels; ++c) y[c] = a[c] * b[c];
            }
        }
    }
    em_opt_activate(output, n, node->activation);
}

void em_concat_f32_run(const em_node *node, const float *const *inputs, float *output, float *scratch)
{
    const size_t pixels = (size_t)node->out.h * node->out.w, out_c = node->out.c;
    size_t p, offset = 0;
    uint32_t k;
    (void)scratch;
    for (k = 0; k < node->input_count; ++k) {
        const size_t channels = node->value_shapes[node->inputs[k]].c;
        for (p = 0; p < pixels; ++p)
            memcpy(output + p * out_c + offset, inputs[k] + p * channels, channels * sizeof(float));
        offset += channels;
    }
    em_opt_activate(output, pixels * out_c, node->activation);
}
