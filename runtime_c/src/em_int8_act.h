/* int8 activations for LUT ops (flag INT8_ACT; FORMAT.md "int8 activations"): the quantisation every kernel,
 * reference and fast, performs in exactly this way, so that their int32 sums and outputs agree bit for bit.
 *
 *   ix  = f32(1 / sx)                                 sx: the node's input scale (record word 21)
 *   qx  = clamp(round_half_even(x · ix), −127, 127)   the input
 *   m   = max |codebook| over the node's S segments (a shared codebook: its C·r entries)
 *   qcb = clamp(round_half_even(cb · f32(127 / m)), −127, 127)      (0 when m = 0)
 *   k   = f32(sx · f32(m / 127))
 *   y   = act(f32(f32(acc) · k) + bias)               acc: the exact int32 sum of qx · qcb products
 *
 * The rounding is em_lut_int8_quantize's (float32 product, magic-number rounding, clamp at ±127). */
#ifndef EDGEMERGE_EM_INT8_ACT_H
#define EDGEMERGE_EM_INT8_ACT_H

#include "em_internal.h"
#include "em_lut_int8.h"

/* Input elements: LUT_DENSE reads the flattened input, LUT_CONV2D rows of in.c channels. */
static inline uint32_t em_int8_act_in_c(const em_node *node)
{
    return node->op == EM_OP_LUT_DENSE ? node->in.numel : node->in.c;
}

static inline float em_int8_act_input_inverse(const em_node *node)
{
    return 1.0f / node->input_scale;
}

/* m of the node's codebook segments [S, C, r], or of a shared codebook's [1, C, r] (finite: the loader checked). */
static inline float em_int8_act_codebook_absmax(const em_node *node)
{
    return em_lut_int8_absmax(em_tensor_f32(node->weight),
                              (size_t)em_lut_codebook_segments(node) * node->codewords * node->seg_len);
}

/* k: the float value of one unit of acc. */
static inline float em_int8_act_output_scale(const em_node *node, float codebook_absmax)
{
    return node->input_scale * em_lut_int8_scale(codebook_absmax);
}

#endif /* EDGEMERGE_EM_INT8_ACT_H */
