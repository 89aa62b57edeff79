/* RESHAPE (Flatten: the element order is unchanged, so it is a copy) and ACTIVATION. Both apply the
 * node's activation field, like every other op. */
#include "em_ref_kernels.h"

void em_reshape_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    uint32_t i;
    (void)scratch;
    for (i = 0; i < node->out.numel; ++i) output[i] = em_activate(input[i], node->activation);
}

void em_activation_ref(const em_node *node, const float *input, float *output, float *scratch)
{
    uint32_t i;
    (void)scratch;
    for (i = 0; i < node->out.numel; ++i) output[i] = em_activate(input[i], node->activation);
}
