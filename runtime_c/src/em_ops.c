/* The op table: for every op of FORMAT.md, its name and the prepare() that validates a node against the
 * op's row of the GRAPH table (which fields it uses, its tensors' dtype/rank/dims, its output shape) and
 * sets the scratch its reference kernel needs. Which kernel computes a node is the registry's business
 * (em_kernels.c, em_select.c).
 *
 * prepare() runs once per node at load time, in node order, after the generic record checks of the
 * loader (op known, input id earlier, kernel/stride limits, pads < kernel, output dims non-zero and
 * within MAX_VALUE_ELEMENTS). node->in is the already-verified shape of the value it reads. */
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "em_internal.h"
#include "ref/em_ref_kernels.h" /* em_idx_max */

uint32_t em_index_bits(uint32_t codewords)
{
    uint32_t bits = 1;
    while (bits < 32u && (1u << bits) < codewords) ++bits;
    return bits;
}

/* ---------------------------------------------------------------------------------------------
 * Field rules shared by several ops
 * --------------------------------------------------------------------------------------------- */

/* Ops without a window keep kernel and stride at 1 ("1 where not used"); pads are then 0 because
 * the loader already checked every pad < its kernel size. */
static em_status require_no_window(const em_node *node, em_error *err)
{
    if (node->kernel_h != 1 || node->kernel_w != 1 || node->stride_h != 1 || node->stride_w != 1)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "kernel %" PRIu32 "x%" PRIu32 " / stride %" PRIu32 "x%" PRIu32
                            " must be 1x1 / 1x1 for this op",
                            node->kernel_h, node->kernel_w, node->stride_h, node->stride_w);
    return EM_STATUS_OK;
}

static em_status require_no_lut_fields(const em_node *node, em_error *err)
{
    if (node->seg_len != 0 || node->codewords != 0)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "seg_len %" PRIu32 " / codewords %" PRIu32 " must be 0 for a non-LUT op",
                            node->seg_len, node->codewords);
    if (node->flags & EM_NODE_FLAG_INT8_TABLES)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "flag INT8_TABLES is only defined for LUT ops");
    if (node->flags & EM_NODE_FLAG_INT8_ACT)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "flag INT8_ACT is only defined for LUT ops");
    return EM_STATUS_OK;
}

static em_status check_lut_fields(const em_node *node, em_error *err)
{
    if (node->seg_len == 0)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "seg_len (r) is 0");
    if (node->seg_len > EM_MAX_SEG_LEN)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "seg_len (r) %" PRIu32 " exceeds MAX_SEG_LEN %u",
                            node->seg_len, EM_MAX_SEG_LEN);
    if (node->codewords < 2)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "codewords (C) %" PRIu32 " is below 2",
                            node->codewords);
    if (node->codewords > EM_MAX_CODEWORDS)
        return em_fail_node(err, EM_STATUS_LIMIT, node,
                            "codewords (C) %" PRIu32 " exceeds MAX_CODEWORDS %u", node->codewords,
                            EM_MAX_CODEWORDS);
    if ((node->flags & EM_NODE_FLAG_INT8_TABLES) && node->codewords != EM_INT8_TABLE_CODEWORDS)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "flag INT8_TABLES needs C = %u (4-bit indices), this node has C = %" PRIu32,
                            EM_INT8_TABLE_CODEWORDS, node->codewords);
    if ((node->flags & EM_NODE_FLAG_INT8_ACT) && (node->flags & EM_NODE_FLAG_INT8_TABLES))
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "flags INT8_ACT and INT8_TABLES exclude each other");
    if (node->flags & EM_NODE_FLAG_INT8_ACT) { /* FORMAT.md "int8 activations": sx > 0, 1 / sx finite */
        const float sx = node->input_scale;
        if (!(sx > 0.0f && sx <= FLT_MAX && 1.0f / sx <= FLT_MAX))
            return em_fail_node(err, EM_STATUS_CORRUPT, node,
                                "flag INT8_ACT: input scale %g is not a finite positive float with a finite inverse",
                                (double)sx);
    }
    return EM_STATUS_OK;
}

enum tensor_use { TENSOR_FORBIDDEN, TENSOR_OPTIONAL, TENSOR_REQUIRED };

/* Resolves one tensor reference of a node: NONE where the op has none, an existing tensor of the
 * expected dtype and rank where it has one. */
static em_status resolve_tensor(const em_model *model, const em_node *node, const char *field, uint32_t id,
                                enum tensor_use use, uint32_t dtype, uint32_t ndim, const em_tensor **out,
                                em_error *err)
{
    const em_tensor *t;
    *out = NULL;
    if (id == EM_NONE) {
        if (use == TENSOR_REQUIRED)
            return em_fail_node(err, EM_STATUS_CORRUPT, node, "%s tensor is NONE, this op needs one", field);
        return EM_STATUS_OK;
    }
    if (use == TENSOR_FORBIDDEN)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "%s tensor %" PRIu32 " given, this op takes none (NONE)",
                            field, id);
    if (id >= model->tensor_count)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "%s tensor %" PRIu32 " does not exist (TENSORS has %" PRIu32 ")", field, id,
                            model->tensor_count);
    t = &model->tensors[id];
    if (t->dtype != dtype)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "%s tensor %" PRIu32 " has dtype %s, expected %s",
                            field, id, t->dtype == EM_DTYPE_F32 ? "F32" : "IDX",
                            dtype == EM_DTYPE_F32 ? "F32" : "IDX");
    if (t->ndim != ndim)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "%s tensor %" PRIu32 " has rank %" PRIu32 ", expected %" PRIu32, field, id, t->ndim,
                            ndim);
    *out = t;
    return EM_STATUS_OK;
}

static void format_dims(char *buf, size_t size, const uint32_t *dims, uint32_t ndim)
{
    size_t used = 0;
    uint32_t i;
    buf[0] = '\0';
    for (i = 0; i < ndim && used < size; ++i) {
        int n = snprintf(buf + used, size - used, "%s%" PRIu32, i ? ", " : "[", dims[i]);
        if (n < 0) return;
        used += (size_t)n;
    }
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* Checks a resolved tensor's dims against `expected` (all ndim of them). */
static em_status expect_dims(const em_node *node, const char *field, uint32_t id, const em_tensor *t,
                             const uint32_t *expected, em_error *err)
{
    char got[64], want[64];
    uint32_t i;
    for (i = 0; i < t->ndim; ++i)
        if (t->dims[i] != expected[i]) break;
    if (i == t->ndim) return EM_STATUS_OK;
    format_dims(got, sizeof got, t->dims, t->ndim);
    format_dims(want, sizeof want, expected, t->ndim);
    return em_fail_node(err, EM_STATUS_CORRUPT, node, "%s tensor %" PRIu32 " has dims %s, expected %s", field, id,
                        got, want);
}

/* Optional bias: F32 [n]. */
static em_status resolve_bias(const em_model *model, em_node *node, uint32_t n, em_error *err)
{
    em_status st = resolve_tensor(model, node, "bias", node->bias_id, TENSOR_OPTIONAL, EM_DTYPE_F32, 1,
                                  &node->bias, err);
    if (st != EM_STATUS_OK || node->bias == NULL) return st;
    return expect_dims(node, "bias", node->bias_id, node->bias, &n, err);
}

/* Output size of a window op along one axis: (size + pads − kernel) / stride + 1, at least 1. */
static em_status window_output(const em_node *node, const char *axis, uint32_t size, uint32_t kernel,
                               uint32_t stride, uint32_t pad_a, uint32_t pad_b, uint32_t *out, em_error *err)
{
    /* size <= MAX_VALUE_ELEMENTS and pads < MAX_KERNEL: no overflow in 64 bits (or in 32) */
    const uint64_t padded = (uint64_t)size + pad_a + pad_b;
    if (padded < kernel)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "kernel %s %" PRIu32 " is larger than the padded input %s %" PRIu64, axis, kernel, axis,
                            padded);
    *out = (uint32_t)((padded - kernel) / stride + 1u);
    return EM_STATUS_OK;
}

/* The loader's central shape check: the declared output shape equals the one the op computes. */
static em_status expect_output(const em_node *node, uint32_t h, uint32_t w, uint32_t c, em_error *err)
{
    if (node->out.h == h && node->out.w == w && node->out.c == c) return EM_STATUS_OK;
    return em_fail_node(err, EM_STATUS_CORRUPT, node,
                        "declared output shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32 ") does not match the computed "
                        "(%" PRIu32 ", %" PRIu32 ", %" PRIu32 ") from input (%" PRIu32 ", %" PRIu32 ", %" PRIu32 ")",
                        node->out.h, node->out.w, node->out.c, h, w, c, node->in.h, node->in.w, node->in.c);
}

static em_status window_output_hw(const em_node *node, uint32_t *oh, uint32_t *ow, em_error *err)
{
    em_status st = window_output(node, "height", node->in.h, node->kernel_h, node->stride_h, node->pad_top,
                                 node->pad_bottom, oh, err);
    if (st != EM_STATUS_OK) return st;
    return window_output(node, "width", node->in.w, node->kernel_w, node->stride_w, node->pad_left,
                         node->pad_right, ow, err);
}

/* Proves every index of a LUT node's map is < C. The map's maximum is computed once per tensor (a
 * map may be shared by several nodes) and only where `bits` can hold values >= C. */
static em_status check_index_values(em_tensor *t, const em_node *node, em_error *err)
{
    uint64_t i;
    if ((1u << t->bits) <= node->codewords) return EM_STATUS_OK; /* every representable value is < C */
    if (!t->max_index_known) {
        t->max_index = em_idx_max(t);
        t->max_index_known = 1;
    }
    if (t->max_index < node->codewords) return EM_STATUS_OK;
    for (i = 0; i < t->numel; ++i) { /* failure path only: find the first offending element for the message */
        const uint32_t v = em_idx_get(t->data, t->bits, i);
        if (v >= node->codewords)
            return em_fail_node(err, EM_STATUS_CORRUPT, node,
                                "index tensor %" PRIu32 " holds index %" PRIu32 " at element %" PRIu64
                                ", past C=%" PRIu32,
                                node->index_id, v, i, node->codewords);
    }
    return EM_STATUS_OK; /* not reached: max_index >= C means some element is */
}

/* Index map of a LUT node: IDX of rank ndim, dims `expected` except the last (Cout / Out, the map's
 * to choose, returned in *out_count), bits = index_bits(C), every value < C. */
static em_status resolve_index_map(em_model *model, em_node *node, uint32_t ndim, uint32_t *expected,
                                   uint32_t *out_count, em_error *err)
{
    const uint32_t bits = em_index_bits(node->codewords);
    em_status st = resolve_tensor(model, node, "index", node->index_id, TENSOR_REQUIRED, EM_DTYPE_IDX, ndim,
                                  &node->index_map, err);
    if (st != EM_STATUS_OK) return st;
    if (node->index_map->bits != bits)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "index tensor %" PRIu32 " has %" PRIu32 " bits, expected %" PRIu32 " for C=%" PRIu32,
                            node->index_id, node->index_map->bits, bits, node->codewords);
    expected[ndim - 1] = node->index_map->dims[ndim - 1];
    st = expect_dims(node, "index", node->index_id, node->index_map, expected, err);
    if (st != EM_STATUS_OK) return st;
    *out_count = expected[ndim - 1];
    return check_index_values(&model->tensors[node->index_id], node, err);
}

/* Codebook of a LUT node: F32 [S_cb, C, r] with S_cb >= S (a codebook shared between tasks may be deeper),
 * or [1, C, r]: one layer-shared codebook for every segment (stride 0). */
static em_status resolve_codebook(const em_model *model, em_node *node, uint32_t in_c, em_error *err)
{
    em_status st;
    node->segments = (uint32_t)(((uint64_t)in_c + node->seg_len - 1u) / node->seg_len);
    st = resolve_tensor(model, node, "codebook (weight)", node->weight_id, TENSOR_REQUIRED, EM_DTYPE_F32, 3,
                        &node->weight, err);
    if (st != EM_STATUS_OK) return st;
    if (node->weight->dims[1] != node->codewords || node->weight->dims[2] != node->seg_len ||
        (node->weight->dims[0] < node->segments && node->weight->dims[0] != 1u)) {
        char got[64];
        format_dims(got, sizeof got, node->weight->dims, 3);
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "codebook tensor %" PRIu32 " has dims %s, expected [S_cb >= %" PRIu32 ", C=%" PRIu32
                            ", r=%" PRIu32 "] for %" PRIu32 " input channels (or [1, C, r], layer-shared)",
                            node->weight_id, got, node->segments, node->codewords, node->seg_len, in_c);
    }
    node->codebook_segment_stride = node->weight->dims[0] == 1u ? 0u : (size_t)node->codewords * node->seg_len;
    return EM_STATUS_OK;
}

/* int8 tables: the integer sum of one output (taps · S terms of at most 127) must fit in int32. */
static em_status check_int8_terms(const em_node *node, uint64_t taps, em_error *err)
{
    const uint64_t terms = taps * node->segments;
    if (!(node->flags & EM_NODE_FLAG_INT8_TABLES) || terms <= 0x7FFFFFFFu / 127u) return EM_STATUS_OK;
    return em_fail_node(err, EM_STATUS_LIMIT, node,
                        "%" PRIu64 " terms per output: too many for exact int32 sums of an int8 table", terms);
}

/* int8 activations (FORMAT.md): the node's codebook segments finite, KH·KW·S·r int8 products per output
 * summed exactly in int32; the reference's scratch grows by the int8 input and codebook (after the int32
 * table, which has the float table's size). */
static em_status check_int8_act(em_node *node, uint64_t taps, size_t pixels, em_error *err)
{
    const uint64_t products = taps * node->segments * node->seg_len;
    const float *codebook = em_tensor_f32(node->weight);
    const size_t cb_n = (size_t)em_lut_codebook_segments(node) * node->codewords * node->seg_len;
    size_t i, extra;
    if (!(node->flags & EM_NODE_FLAG_INT8_ACT)) return EM_STATUS_OK;
    if (products > EM_INT8_ACT_MAX_PRODUCTS)
        return em_fail_node(err, EM_STATUS_LIMIT, node,
                            "%" PRIu64 " int8 products per output exceed INT8_ACT_MAX_PRODUCTS %u (int32 sums)",
                            products, EM_INT8_ACT_MAX_PRODUCTS);
    for (i = 0; i < cb_n; ++i)
        if (!(fabsf(codebook[i]) <= FLT_MAX))
            return em_fail_node(err, EM_STATUS_CORRUPT, node,
                                "flag INT8_ACT: codebook entry %zu is not finite (no int8 scale)", i);
    if (!em_mul_size(pixels, (size_t)node->segments * node->seg_len, &extra) ||
        !em_add_size(extra, cb_n + 8u, &extra) || !em_add_size(node->scratch_bytes, extra, &node->scratch_bytes))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "int8 input of %zu pixels does not fit in memory", pixels);
    return EM_STATUS_OK;
}

/* Scratch bytes of a LUT table of `pixels` × S × C floats. */
static em_status lut_table_bytes(em_node *node, size_t pixels, em_error *err)
{
    size_t bytes;
    if (!em_mul_size(pixels, node->segments, &bytes) || !em_mul_size(bytes, node->codewords, &bytes) ||
        !em_mul_size(bytes, sizeof(float), &bytes))
        return em_fail_node(err, EM_STATUS_LIMIT, node,
                            "lookup table of %zu pixels x %" PRIu32 " segments x %" PRIu32
                            " codewords does not fit in memory (size_t)",
                            pixels, node->segments, node->codewords);
    node->scratch_bytes = bytes;
    return EM_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * prepare() of each op
 * --------------------------------------------------------------------------------------------- */

/* CONV2D and DEPTHWISE_CONV2D: no LUT fields, no index map, and a float weight [KH, KW, Cin, X] whose last
 * dimension X (Cout, or the depth multiplier M) is the weight's to choose; `expected` gets the four dims. */
static em_status resolve_window_weight(em_model *model, em_node *node, uint32_t expected[4], em_error *err)
{
    em_status st = require_no_lut_fields(node, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "weight", node->weight_id, TENSOR_REQUIRED, EM_DTYPE_F32, 4,
                            &node->weight, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "index", node->index_id, TENSOR_FORBIDDEN, 0, 0, &node->index_map, err);
    if (st != EM_STATUS_OK) return st;
    expected[0] = node->kernel_h;
    expected[1] = node->kernel_w;
    expected[2] = node->in.c;
    expected[3] = node->weight->dims[3];
    return expect_dims(node, "weight", node->weight_id, node->weight, expected, err);
}

static em_status prepare_conv2d(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh = 0, ow = 0, expected[4];
    em_status st = resolve_window_weight(model, node, expected, err); /* expected[3]: Cout */
    if (st == EM_STATUS_OK) st = resolve_bias(model, node, expected[3], err);
    if (st == EM_STATUS_OK) st = window_output_hw(node, &oh, &ow, err);
    if (st == EM_STATUS_OK) st = expect_output(node, oh, ow, expected[3], err);
    return st;
}

static em_status prepare_depthwise_conv2d(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh = 0, ow = 0, expected[4];
    uint64_t out_c;
    em_status st = resolve_window_weight(model, node, expected, err); /* expected[3]: multiplier M */
    if (st != EM_STATUS_OK) return st;
    out_c = (uint64_t)node->in.c * expected[3];
    if (out_c > EM_MAX_VALUE_ELEMENTS)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "Cin x M = %" PRIu64 " output channels exceed the limit",
                            out_c);
    st = resolve_bias(model, node, (uint32_t)out_c, err);
    if (st == EM_STATUS_OK) st = window_output_hw(node, &oh, &ow, err);
    if (st == EM_STATUS_OK) st = expect_output(node, oh, ow, (uint32_t)out_c, err);
    return st;
}

static em_status prepare_dense(em_model *model, em_node *node, em_error *err)
{
    uint32_t expected[2];
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_lut_fields(node, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "weight", node->weight_id, TENSOR_REQUIRED, EM_DTYPE_F32, 2,
                            &node->weight, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "index", node->index_id, TENSOR_FORBIDDEN, 0, 0, &node->index_map, err);
    if (st != EM_STATUS_OK) return st;
    expected[0] = node->in.numel; /* In = element count of the (flattened) input */
    expected[1] = node->weight->dims[1];
    st = expect_dims(node, "weight", node->weight_id, node->weight, expected, err);
    if (st == EM_STATUS_OK) st = resolve_bias(model, node, expected[1], err);
    if (st == EM_STATUS_OK) st = expect_output(node, 1, 1, expected[1], err);
    return st;
}

/* Ops that read no tensor at all: pools, reshape, activation. */
static em_status require_no_tensors(const em_model *model, em_node *node, em_error *err)
{
    em_status st = require_no_lut_fields(node, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "weight", node->weight_id, TENSOR_FORBIDDEN, 0, 0, &node->weight, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "index", node->index_id, TENSOR_FORBIDDEN, 0, 0, &node->index_map, err);
    if (st == EM_STATUS_OK)
        st = resolve_tensor(model, node, "bias", node->bias_id, TENSOR_FORBIDDEN, 0, 0, &node->bias, err);
    return st;
}

static em_status prepare_pool(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh = 0, ow = 0;
    em_status st = require_no_tensors(model, node, err);
    if (st == EM_STATUS_OK) st = window_output_hw(node, &oh, &ow, err);
    if (st == EM_STATUS_OK) st = expect_output(node, oh, ow, node->in.c, err);
    return st;
}

static em_status prepare_global_avg_pool(em_model *model, em_node *node, em_error *err)
{
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_tensors(model, node, err);
    if (st == EM_STATUS_OK) st = expect_output(node, 1, 1, node->in.c, err);
    return st;
}

static em_status prepare_reshape(em_model *model, em_node *node, em_error *err)
{
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_tensors(model, node, err);
    if (st != EM_STATUS_OK) return st;
    if (node->out.numel != node->in.numel)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "declared output shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32 ") holds %" PRIu32
                            " elements, the input (%" PRIu32 ", %" PRIu32 ", %" PRIu32 ") holds %" PRIu32,
                            node->out.h, node->out.w, node->out.c, node->out.numel, node->in.h, node->in.w,
                            node->in.c, node->in.numel);
    return EM_STATUS_OK;
}

static em_status prepare_activation(em_model *model, em_node *node, em_error *err)
{
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_tensors(model, node, err);
    if (st == EM_STATUS_OK) st = expect_output(node, node->in.h, node->in.w, node->in.c, err);
    return st;
}

/* ---- multi-input ops (FORMAT.md v2 "Multi-input ops") and PAD ---- */

static const em_shape *input_shape(const em_model *model, const em_node *node, uint32_t k)
{
    return &model->value_shapes[node->inputs[k]];
}

static em_status prepare_add(em_model *model, em_node *node, em_error *err)
{
    uint32_t k;
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_tensors(model, node, err);
    if (st != EM_STATUS_OK) return st;
    for (k = 1; k < node->input_count; ++k) {
        const em_shape *s = input_shape(model, node, k);
        if (s->h != node->in.h || s->w != node->in.w || s->c != node->in.c)
            return em_fail_node(err, EM_STATUS_CORRUPT, node,
                                "input %" PRIu32 " (value %" PRIu32 ") has shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32
                                "), input 0 (value %" PRIu32 ") has (%" PRIu32 ", %" PRIu32 ", %" PRIu32
                                "): ADD needs equal shapes (no broadcasting)",
                                k, node->inputs[k], s->h, s->w, s->c, node->inputs[0], node->in.h, node->in.w,
                                node->in.c);
    }
    return expect_output(node, node->in.h, node->in.w, node->in.c, err);
}

static em_status prepare_concat(em_model *model, em_node *node, em_error *err)
{
    uint64_t channels = 0;
    uint32_t k;
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_tensors(model, node, err);
    if (st != EM_STATUS_OK) return st;
    for (k = 0; k < node->input_count; ++k) {
        const em_shape *s = input_shape(model, node, k);
        if (s->h != node->in.h || s->w != node->in.w)
            return em_fail_node(err, EM_STATUS_CORRUPT, node,
                                "input %" PRIu32 " (value %" PRIu32 ") is %" PRIu32 "x%" PRIu32 ", input 0 (value %"
                                PRIu32 ") is %" PRIu32 "x%" PRIu32 ": CONCAT joins channels of equal spatial sizes",
                                k, node->inputs[k], s->h, s->w, node->inputs[0], node->in.h, node->in.w);
        channels += s->c; /* <= 64 · 2^28 */
    }
    if (channels * node->in.h * node->in.w > EM_MAX_VALUE_ELEMENTS)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "%" PRIu64 " concatenated channels of %" PRIu32 "x%" PRIu32
                            " exceed MAX_VALUE_ELEMENTS", channels, node->in.h, node->in.w);
    return expect_output(node, node->in.h, node->in.w, (uint32_t)channels, err);
}

static em_status prepare_mul(em_model *model, em_node *node, em_error *err)
{
    const em_shape *a = input_shape(model, node, 0), *b = input_shape(model, node, 1);
    const em_shape *big = a;
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = require_no_tensors(model, node, err);
    if (st != EM_STATUS_OK) return st;
    if (a->h == b->h && a->w == b->w && a->c == b->c) {
        big = a;
    } else if (a->c == b->c && b->h == 1 && b->w == 1) {
        big = a; /* (H, W, C) · (1, 1, C): squeeze-and-excite */
    } else if (a->c == b->c && a->h == 1 && a->w == 1) {
        big = b;
    } else {
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "input 0 (value %" PRIu32 ") has shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32 "), input 1 "
                            "(value %" PRIu32 ") has (%" PRIu32 ", %" PRIu32 ", %" PRIu32 "): MUL broadcasts only "
                            "equal shapes or (1, 1, C) with (H, W, C)",
                            node->inputs[0], a->h, a->w, a->c, node->inputs[1], b->h, b->w, b->c);
    }
    return expect_output(node, big->h, big->w, big->c, err);
}

static em_status prepare_pad(em_model *model, em_node *node, em_error *err)
{
    const uint64_t h = (uint64_t)node->in.h + node->pad_top + node->pad_bottom;
    const uint64_t w = (uint64_t)node->in.w + node->pad_left + node->pad_right;
    em_status st;
    /* the window fields: kernel and stride 1 (the parser allowed pads up to MAX_PAD for this op) */
    if (node->kernel_h != 1 || node->kernel_w != 1 || node->stride_h != 1 || node->stride_w != 1)
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "kernel %" PRIu32 "x%" PRIu32 " / stride %" PRIu32 "x%" PRIu32
                            " must be 1x1 / 1x1 for this op",
                            node->kernel_h, node->kernel_w, node->stride_h, node->stride_w);
    st = require_no_tensors(model, node, err);
    if (st != EM_STATUS_OK) return st;
    /* h, w < 2^28 + 2·MAX_PAD fit 32 bits; the declared output shape they must equal was bounded by
     * MAX_VALUE_ELEMENTS when the record was parsed */
    return expect_output(node, (uint32_t)h, (uint32_t)w, node->in.c, err);
}

static em_status prepare_lut_conv2d(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh = 0, ow = 0, out_c = 0, expected[4];
    em_status st = check_lut_fields(node, err);
    if (st == EM_STATUS_OK) st = resolve_codebook(model, node, node->in.c, err);
    if (st != EM_STATUS_OK) return st;
    expected[0] = node->kernel_h;
    expected[1] = node->kernel_w;
    expected[2] = node->segments;
    st = resolve_index_map(model, node, 4, expected, &out_c, err);
    if (st == EM_STATUS_OK) st = resolve_bias(model, node, out_c, err);
    if (st == EM_STATUS_OK) st = window_output_hw(node, &oh, &ow, err);
    if (st == EM_STATUS_OK) st = expect_output(node, oh, ow, out_c, err);
    if (st == EM_STATUS_OK) st = check_int8_terms(node, (uint64_t)node->kernel_h * node->kernel_w, err);
    if (st == EM_STATUS_OK) st = lut_table_bytes(node, (size_t)node->in.h * node->in.w, err);
    if (st == EM_STATUS_OK)
        st = check_int8_act(node, (uint64_t)node->kernel_h * node->kernel_w, (size_t)node->in.h * node->in.w, err);
    return st;
}

/* LUT_DEPTHWISE_CONV2D (FORMAT.md "Clustered depthwise"): r divides KH·KW, codebook F32 [1, C, r], index IDX
 * [KH·KW / r, Cin, M], optional bias [Cin·M], no node flags. The loader decodes the weights afterwards
 * (em_loader.c decode_clustered_depthwise) and runs the node as a DEPTHWISE_CONV2D. */
static em_status prepare_lut_depthwise_conv2d(em_model *model, em_node *node, em_error *err)
{
    const uint32_t taps = node->kernel_h * node->kernel_w; /* <= MAX_KERNEL², checked by the parser */
    uint32_t oh = 0, ow = 0, multiplier = 0, expected[3];
    uint64_t out_c;
    em_status st;
    if (node->flags != 0)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "flags 0x%08" PRIX32 ": no node flag is defined for a "
                            "clustered depthwise conv", node->flags);
    st = check_lut_fields(node, err);
    if (st != EM_STATUS_OK) return st;
    if (taps % node->seg_len != 0)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "seg_len (r) %" PRIu32 " does not divide KH x KW = %" PRIu32
                            " taps of a clustered depthwise conv", node->seg_len, taps);
    st = resolve_tensor(model, node, "codebook (weight)", node->weight_id, TENSOR_REQUIRED, EM_DTYPE_F32, 3,
                        &node->weight, err);
    if (st != EM_STATUS_OK) return st;
    expected[0] = 1u;
    expected[1] = node->codewords;
    expected[2] = node->seg_len;
    st = expect_dims(node, "codebook (weight)", node->weight_id, node->weight, expected, err);
    if (st != EM_STATUS_OK) return st;
    node->segments = taps / node->seg_len;
    expected[0] = node->segments;
    expected[1] = node->in.c;
    st = resolve_index_map(model, node, 3, expected, &multiplier, err); /* [KH·KW / r, Cin, M] */
    if (st != EM_STATUS_OK) return st;
    out_c = (uint64_t)node->in.c * multiplier;
    if (out_c > EM_MAX_VALUE_ELEMENTS)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "Cin x M = %" PRIu64 " output channels exceed the limit",
                            out_c);
    if (out_c * taps > EM_MAX_TENSOR_ELEMENTS)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "decoded weights of %" PRIu64 " floats exceed "
                            "MAX_TENSOR_ELEMENTS", out_c * taps);
    st = resolve_bias(model, node, (uint32_t)out_c, err);
    if (st == EM_STATUS_OK) st = window_output_hw(node, &oh, &ow, err);
    if (st == EM_STATUS_OK) st = expect_output(node, oh, ow, (uint32_t)out_c, err);
    return st;
}

static em_status prepare_lut_dense(em_model *model, em_node *node, em_error *err)
{
    uint32_t out_count = 0, expected[2];
    em_status st = require_no_window(node, err);
    if (st == EM_STATUS_OK) st = check_lut_fields(node, err);
    if (st == EM_STATUS_OK) st = resolve_codebook(model, node, node->in.numel, err);
    if (st != EM_STATUS_OK) return st;
    expected[0] = node->segments;
    st = resolve_index_map(model, node, 2, expected, &out_count, err);
    if (st == EM_STATUS_OK) st = resolve_bias(model, node, out_count, err);
    if (st == EM_STATUS_OK) st = expect_output(node, 1, 1, out_count, err);
    if (st == EM_STATUS_OK) st = check_int8_terms(node, 1, err);
    if (st == EM_STATUS_OK) st = lut_table_bytes(node, 1, err);
    if (st == EM_STATUS_OK) st = check_int8_act(node, 1, 1, err);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * The table
 * --------------------------------------------------------------------------------------------- */

static const em_op_registration em_ops[] = {
    {EM_OP_CONV2D, "CONV2D", prepare_conv2d, 1, 1},
    {EM_OP_DEPTHWISE_CONV2D, "DEPTHWISE_CONV2D", prepare_depthwise_conv2d, 1, 1},
    {EM_OP_DENSE, "DENSE", prepare_dense, 1, 1},
    {EM_OP_MAX_POOL, "MAX_POOL", prepare_pool, 1, 1},
    {EM_OP_AVG_POOL, "AVG_POOL", prepare_pool, 1, 1},
    {EM_OP_GLOBAL_AVG_POOL, "GLOBAL_AVG_POOL", prepare_global_avg_pool, 1, 1},
    {EM_OP_RESHAPE, "RESHAPE", prepare_reshape, 1, 1},
    {EM_OP_LUT_CONV2D, "LUT_CONV2D", prepare_lut_conv2d, 1, 1},
    {EM_OP_LUT_DENSE, "LUT_DENSE", prepare_lut_dense, 1, 1},
    {EM_OP_ACTIVATION, "ACTIVATION", prepare_activation, 1, 1},
    {EM_OP_ADD, "ADD", prepare_add, 2, EM_MAX_NODE_INPUTS},
    {EM_OP_CONCAT, "CONCAT", prepare_concat, 2, EM_MAX_NODE_INPUTS},
    {EM_OP_MUL, "MUL", prepare_mul, 2, 2},
    {EM_OP_PAD, "PAD", prepare_pad, 1, 1},
    {EM_OP_LUT_DEPTHWISE_CONV2D, "LUT_DEPTHWISE_CONV2D", prepare_lut_depthwise_conv2d, 1, 1},
};

const em_op_registration *em_op_find(uint32_t op)
{
    size_t i;
    for (i = 0; i < sizeof em_ops / sizeof em_ops[0]; ++i)
        if (em_ops[i].op == op) return &em_ops[i];
    return NULL;
}

const char *em_op_name(uint32_t op)
{
    const em_op_registration *reg = em_op_find(op);
    return reg != NULL ? reg->op_name : "unknown";
}
