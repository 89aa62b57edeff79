/* Index-map helpers. Element access itself is em_idx_get() in em_internal.h (inline: kernels call it
 * in their inner loop). */
#include "em_ref_kernels.h"

uint32_t em_idx_max(const em_tensor *tensor)
{
    uint32_t max = 0;
    uint64_t i;
    for (i = 0; i < tensor->numel; ++i) {
        const uint32_t v = em_idx_get(tensor->data, tensor->bits, i);
        if (v > max) max = v;
    }
    return max;
}
