/* The op table: for every op of FORMAT.md, the prepare() that validates a node against the op's row
 * of the GRAPH table (which fields it uses, its tensors' dtype/rank/dims, its output shape), and the
 * kernel that computes it.
 *
 * prepare() runs once per node at load time, in node order, after the generic record checks of the
 * loader (op known, input id earlier, kernel/stride limits, pads < kernel, output dims non-zero and
 * within MAX_VALUE_ELEMENTS). node->in is the already-verified shape of the value it reads. */
#include <stdio.h>
#include <string.h>

#include "em_internal.h"
#include "opt/em_lut_int8_kernels.h"
#include "opt/em_opt_kernels.h"
#include "ref/em_ref_kernels.h"

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

/* Codebook of a LUT node: F32 [S_cb, C, r] with S_cb >= S (a shared codebook may be deeper). */
static em_status resolve_codebook(const em_model *model, em_node *node, uint32_t in_c, em_error *err)
{
    em_status st;
    node->segments = (uint32_t)(((uint64_t)in_c + node->seg_len - 1u) / node->seg_len);
    st = resolve_tensor(model, node, "codebook (weight)", node->weight_id, TENSOR_REQUIRED, EM_DTYPE_F32, 3,
                        &node->weight, err);
    if (st != EM_STATUS_OK) return st;
    if (node->weight->dims[1] != node->codewords || node->weight->dims[2] != node->seg_len ||
        node->weight->dims[0] < node->segments) {
        char got[64];
        format_dims(got, sizeof got, node->weight->dims, 3);
        return em_fail_node(err, EM_STATUS_CORRUPT, node,
                            "codebook tensor %" PRIu32 " has dims %s, expected [S_cb >= %" PRIu32 ", C=%" PRIu32
                            ", r=%" PRIu32 "] for %" PRIu32 " input channels",
                            node->weight_id, got, node->segments, node->codewords, node->seg_len, in_c);
    }
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

static em_status prepare_conv2d(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh, ow, expected[4];
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
    expected[3] = node->weight->dims[3]; /* Cout is the weight's to choose */
    st = expect_dims(node, "weight", node->weight_id, node->weight, expected, err);
    if (st == EM_STATUS_OK) st = resolve_bias(model, node, expected[3], err);
    if (st == EM_STATUS_OK) st = window_output_hw(node, &oh, &ow, err);
    if (st == EM_STATUS_OK) st = expect_output(node, oh, ow, expected[3], err);
    return st;
}

static em_status prepare_depthwise_conv2d(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh, ow, expected[4];
    uint64_t out_c;
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
    expected[3] = node->weight->dims[3]; /* depth multiplier M */
    st = expect_dims(node, "weight", node->weight_id, node->weight, expected, err);
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
    uint32_t oh, ow;
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

static em_status prepare_lut_conv2d(em_model *model, em_node *node, em_error *err)
{
    uint32_t oh, ow, out_c = 0, expected[4];
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
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * The table
 * --------------------------------------------------------------------------------------------- */

static const em_op_registration em_reference_ops[] = {
    {EM_OP_CONV2D, "CONV2D", "conv2d_ref", prepare_conv2d, em_conv2d_ref},
    {EM_OP_DEPTHWISE_CONV2D, "DEPTHWISE_CONV2D", "depthwise_conv2d_ref", prepare_depthwise_conv2d,
     em_depthwise_conv2d_ref},
    {EM_OP_DENSE, "DENSE", "dense_ref", prepare_dense, em_dense_ref},
    {EM_OP_MAX_POOL, "MAX_POOL", "max_pool_ref", prepare_pool, em_max_pool_ref},
    {EM_OP_AVG_POOL, "AVG_POOL", "avg_pool_ref", prepare_pool, em_avg_pool_ref},
    {EM_OP_GLOBAL_AVG_POOL, "GLOBAL_AVG_POOL", "global_avg_pool_ref", prepare_global_avg_pool,
     em_global_avg_pool_ref},
    {EM_OP_RESHAPE, "RESHAPE", "reshape_ref", prepare_reshape, em_reshape_ref},
    {EM_OP_LUT_CONV2D, "LUT_CONV2D", "lut_conv2d_ref", prepare_lut_conv2d, em_lut_conv2d_ref},
    {EM_OP_LUT_DENSE, "LUT_DENSE", "lut_dense_ref", prepare_lut_dense, em_lut_dense_ref},
    {EM_OP_ACTIVATION, "ACTIVATION", "activation_ref", prepare_activation, em_activation_ref},
};

#define EM_REFERENCE_OP_COUNT (sizeof em_reference_ops / sizeof em_reference_ops[0])

const em_op_registration *em_op_find(uint32_t op)
{
    /* Per-architecture tables are consulted here first once they exist (a later issue); the
     * reference table is always the fallback, so every op has a kernel. */
    size_t i;
    for (i = 0; i < EM_REFERENCE_OP_COUNT; ++i)
        if (em_reference_ops[i].op == op) return &em_reference_ops[i];
    return NULL;
}

const em_op_registration *em_op_find_kernel(const char *kernel_name)
{
    size_t i;
    if (kernel_name == NULL) return NULL;
    for (i = 0; i < EM_REFERENCE_OP_COUNT; ++i)
        if (strcmp(em_reference_ops[i].kernel_name, kernel_name) == 0) return &em_reference_ops[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Kernels and the choice between them
 * --------------------------------------------------------------------------------------------- */

/* The reference kernels, as kernels: eval only (their scratch was set by the op's prepare()). */
static const em_kernel em_reference_kernels[] = {
    {EM_OP_CONV2D, "conv2d_ref", NULL, NULL, NULL, NULL, em_conv2d_ref, NULL},
    {EM_OP_DEPTHWISE_CONV2D, "depthwise_conv2d_ref", NULL, NULL, NULL, NULL, em_depthwise_conv2d_ref, NULL},
    {EM_OP_DENSE, "dense_ref", NULL, NULL, NULL, NULL, em_dense_ref, NULL},
    {EM_OP_MAX_POOL, "max_pool_ref", NULL, NULL, NULL, NULL, em_max_pool_ref, NULL},
    {EM_OP_AVG_POOL, "avg_pool_ref", NULL, NULL, NULL, NULL, em_avg_pool_ref, NULL},
    {EM_OP_GLOBAL_AVG_POOL, "global_avg_pool_ref", NULL, NULL, NULL, NULL, em_global_avg_pool_ref, NULL},
    {EM_OP_RESHAPE, "reshape_ref", NULL, NULL, NULL, NULL, em_reshape_ref, NULL},
    {EM_OP_LUT_CONV2D, "lut_conv2d_ref", NULL, NULL, NULL, NULL, em_lut_conv2d_ref, NULL},
    {EM_OP_LUT_DENSE, "lut_dense_ref", NULL, NULL, NULL, NULL, em_lut_dense_ref, NULL},
    {EM_OP_ACTIVATION, "activation_ref", NULL, NULL, NULL, NULL, em_activation_ref, NULL},
};

/* The kernels on a micro-kernel table (matrix products, depthwise rows), once per table. Names:
 * <op>_f32_<algorithm>_<isa>. */
#define EM_MATRIX_KERNELS(isa, micro)                                                                          \
    {EM_OP_LUT_CONV2D, "lut_conv2d_f32_" isa, em_lut_conv2d_planar_supports, em_lut_conv2d_planar_plan,        \
     em_lut_conv2d_planar_pack, em_lut_conv2d_planar_run, NULL, &(micro)},                                     \
    {EM_OP_LUT_CONV2D, "lut_conv2d_f32_decoded_" isa, em_lut_f32_supports, em_lut_conv2d_decoded_plan,         \
     em_lut_conv2d_decoded_pack, em_lut_conv2d_decoded_run, NULL, &(micro)},                                   \
    {EM_OP_LUT_DENSE, "lut_dense_f32_" isa, em_lut_f32_supports, em_lut_dense_plan, em_lut_dense_pack,         \
     em_lut_dense_run, NULL, &(micro)},                                                                        \
    {EM_OP_LUT_CONV2D, "lut_conv2d_i8_" isa, em_lut_int8_supports, em_lut_int8_plan, em_lut_int8_pack,         \
     em_lut_int8_run, NULL, &(micro)},                                                                         \
    {EM_OP_LUT_DENSE, "lut_dense_i8_" isa, em_lut_int8_supports, em_lut_int8_plan, em_lut_int8_pack,           \
     em_lut_int8_run, NULL, &(micro)},                                                                         \
    {EM_OP_CONV2D, "conv2d_f32_direct_" isa, NULL, em_conv2d_direct_plan, NULL, em_conv2d_direct_run, NULL,    \
     &(micro)},                                                                                                \
    {EM_OP_DENSE, "dense_f32_gemv_" isa, NULL, em_opt_plan_no_scratch, NULL, em_dense_gemv_run, NULL, &(micro)}, \
    {EM_OP_DEPTHWISE_CONV2D, "depthwise_conv2d_f32_rows_" isa, em_depthwise_conv2d_rows_supports,             \
     em_opt_plan_no_scratch, NULL, em_depthwise_conv2d_rows_run, NULL, &(micro)}

static const em_kernel em_fast_kernels[] = {
    EM_MATRIX_KERNELS("generic", em_micro_generic),
#if defined(EM_HAVE_X86_SIMD)
    EM_MATRIX_KERNELS("sse2", em_micro_sse2),
    EM_MATRIX_KERNELS("avx2", em_micro_avx2),
    EM_MATRIX_KERNELS("avx512", em_micro_avx512),
#endif
#if defined(EM_HAVE_NEON)
    EM_MATRIX_KERNELS("neon", em_micro_neon),
#endif
#if defined(EM_HAVE_OPENBLAS)
    {EM_OP_CONV2D, "conv2d_f32_1x1_blas", em_conv2d_1x1_supports, em_opt_plan_no_scratch, NULL, em_conv2d_1x1_run,
     NULL, &em_micro_blas},
    {EM_OP_CONV2D, "conv2d_f32_im2col_blas", NULL, em_conv2d_im2col_plan, NULL, em_conv2d_im2col_run, NULL,
     &em_micro_blas},
    {EM_OP_DENSE, "dense_f32_gemv_blas", NULL, em_opt_plan_no_scratch, NULL, em_dense_gemv_run, NULL, &em_micro_blas},
#endif
    /* ops without a matrix product: one portable kernel serves every fast set */
    {EM_OP_DEPTHWISE_CONV2D, "depthwise_conv2d_f32_direct", NULL, em_opt_plan_no_scratch, NULL,
     em_depthwise_conv2d_direct_run, NULL, NULL},
    {EM_OP_MAX_POOL, "max_pool_f32", NULL, em_opt_plan_no_scratch, NULL, em_max_pool_run, NULL, NULL},
    {EM_OP_AVG_POOL, "avg_pool_f32", NULL, em_opt_plan_no_scratch, NULL, em_avg_pool_run, NULL, NULL},
    {EM_OP_GLOBAL_AVG_POOL, "global_avg_pool_f32", NULL, em_opt_plan_no_scratch, NULL, em_global_avg_pool_run, NULL,
     NULL},
    {EM_OP_RESHAPE, "reshape_f32_copy", NULL, em_opt_plan_no_scratch, NULL, em_copy_activate_run, NULL, NULL},
    {EM_OP_ACTIVATION, "activation_f32", NULL, em_opt_plan_no_scratch, NULL, em_copy_activate_run, NULL, NULL},
};

#define EM_COUNT(array) (sizeof(array) / sizeof((array)[0]))

const em_kernel *em_kernel_find(const char *name)
{
    size_t i;
    if (name == NULL) return NULL;
    for (i = 0; i < EM_COUNT(em_reference_kernels); ++i)
        if (strcmp(em_reference_kernels[i].name, name) == 0) return &em_reference_kernels[i];
    for (i = 0; i < EM_COUNT(em_fast_kernels); ++i)
        if (strcmp(em_fast_kernels[i].name, name) == 0) return &em_fast_kernels[i];
    return NULL;
}

/* The micro-kernel table of a fast set, or NULL if this build has none for it. */
static const em_micro *micro_for(uint32_t kernels)
{
    switch (kernels) {
    case EM_KERNELS_GENERIC: return &em_micro_generic;
#if defined(EM_HAVE_X86_SIMD)
    case EM_KERNELS_SSE2: return &em_micro_sse2;
    case EM_KERNELS_AVX2: return &em_micro_avx2;
    case EM_KERNELS_AVX512: return &em_micro_avx512;
#endif
#if defined(EM_HAVE_NEON)
    case EM_KERNELS_NEON: return &em_micro_neon;
#endif
    default: return NULL;
    }
}

static int kernel_in_set(const em_kernel *k, const em_micro *micro)
{
    if (k->micro == NULL) return 1; /* portable: part of every fast set */
#if defined(EM_HAVE_OPENBLAS)
    if (k->micro == &em_micro_blas) return 1; /* BLAS serves every fast set */
#endif
    return k->micro == micro;
}

size_t em_op_kernels_for(uint32_t op, uint32_t kernels, const em_kernel **out, size_t max)
{
    size_t i, n = 0;
    const em_micro *micro;
    if (kernels == EM_KERNELS_REFERENCE) {
        for (i = 0; i < EM_COUNT(em_reference_kernels); ++i)
            if (em_reference_kernels[i].op == op) {
                if (n < max) out[n] = &em_reference_kernels[i];
                ++n;
            }
        return n;
    }
    micro = micro_for(em_kernels_resolve(kernels));
    if (micro == NULL) return 0;
    for (i = 0; i < EM_COUNT(em_fast_kernels); ++i) {
        const em_kernel *k = &em_fast_kernels[i];
        if (k->op != op || !kernel_in_set(k, micro)) continue;
        if (n < max) out[n] = k;
        ++n;
    }
    return n;
}

/* The kernel named `algorithm`_<isa of micro> (just `algorithm` for the portable ones, micro NULL),
 * if it supports the node. */
static const em_kernel *find_algorithm(uint32_t op, const em_micro *micro, const char *algorithm, const em_node *node)
{
    const size_t len = strlen(algorithm);
    size_t i;
    for (i = 0; i < EM_COUNT(em_fast_kernels); ++i) {
        const em_kernel *k = &em_fast_kernels[i];
        if (k->op != op || k->micro != micro || strncmp(k->name, algorithm, len) != 0) continue;
        if (micro != NULL ? (k->name[len] != '_' || strcmp(k->name + len + 1, micro->isa) != 0) : k->name[len] != '\0')
            continue;
        return k->supports == NULL || k->supports(node) ? k : NULL;
    }
    return NULL;
}

static const em_kernel *portable_kernel(uint32_t op, const em_node *node)
{
    size_t i;
    for (i = 0; i < EM_COUNT(em_fast_kernels); ++i) {
        const em_kernel *k = &em_fast_kernels[i];
        if (k->op == op && k->micro == NULL && (k->supports == NULL || k->supports(node))) return k;
    }
    return NULL;
}

static const em_kernel *reference_kernel(uint32_t op)
{
    size_t i;
    for (i = 0; i < EM_COUNT(em_reference_kernels); ++i)
        if (em_reference_kernels[i].op == op) return &em_reference_kernels[i];
    return NULL;
}

/* Matrix products at least this large (multiply-adds) go to a linked BLAS: below it, OpenBLAS's
 * per-call overhead (argument checks, packing, thread dispatch) costs more than the runtime's own
 * unpacked micro-kernels save; see em_bench_kernels. */
#ifndef EM_BLAS_MIN_MACS
#define EM_BLAS_MIN_MACS (8u * 1024u * 1024u)
#endif

/* LUT_CONV2D nodes (this one included) whose table would equal this node's: same input, codebook, r, C,
 * window and padding (em_plan.c tables_compatible). Tasks that share an input and a merged first layer
 * build that table once (issue: "tasks that share an input share the first layer's tables"). */
static uint64_t lut_conv2d_table_sharers(const em_model *model, const em_node *node)
{
    uint64_t count = 0;
    uint32_t i;
    if (model == NULL) return 1;
    for (i = 0; i < model->node_count; ++i) {
        const em_node *o = &model->nodes[i];
        count += o->op == EM_OP_LUT_CONV2D && !(o->flags & EM_NODE_FLAG_INT8_TABLES) && o->input == node->input &&
                 o->weight_id == node->weight_id && o->seg_len == node->seg_len && o->codewords == node->codewords &&
                 o->kernel_h == node->kernel_h && o->kernel_w == node->kernel_w && o->stride_h == node->stride_h &&
                 o->stride_w == node->stride_w && o->pad_top == node->pad_top && o->pad_left == node->pad_left &&
                 o->pad_bottom == node->pad_bottom && o->pad_right == node->pad_right;
    }
    return count ? count : 1;
}

/* Whether a float-table LUT_CONV2D node runs faster as a direct convolution with its codebook decoded at
 * load. r = 1 always (the table would be x · codeword: no saving). Otherwise compare the work of the two
 * (em_opt_kernels.h "Cost model"): the table, H_in·W_in·S·r·C multiply-adds; the accumulation,
 * H_out·W_out·k_h·k_w·S·C_out gathered adds; the direct convolution, H_out·W_out·k_h·k_w·C_in·C_out.
 * Measured (em_bench_kernels, AVX-512): the LUT kernel wins where C is small against k²·C_out and r is
 * long (example pair at light/accu, held-out pair at light); the decoded one on narrow layers with
 * C = 128 (held-out `vgg conv1b accu` 39 vs 85 µs, `vgg conv2b accu` 29 vs 59 µs, a 3×3 stride-2
 * layer 62 vs 189 µs). */
static int lut_conv2d_prefers_decoded(const em_model *model, const em_node *node)
{
    const uint64_t r = node->seg_len, C = node->codewords;
    const uint64_t S = r ? (node->in.c + r - 1) / r : 0;
    const uint64_t taps = (uint64_t)node->kernel_h * node->kernel_w;
    const uint64_t out_px = (uint64_t)node->out.h * node->out.w, in_px = (uint64_t)node->in.h * node->in.w;
    uint64_t table_x10, lut_x10, direct_x10;
    if (r == 0 || taps * node->in.c * node->out.c * sizeof(float) > EM_LUT_DECODE_MAX_BYTES) return 0;
    if (r == 1) return 1;
    table_x10 = in_px * S * r * C * (C > 64 ? EM_LUT_COST_TABLE_X10 * 5u / 4u : EM_LUT_COST_TABLE_X10);
    table_x10 /= lut_conv2d_table_sharers(model, node); /* a shared table is built once for all of them */
    lut_x10 = table_x10 + out_px * taps * S * node->out.c * EM_LUT_COST_ADD_X10;
    direct_x10 = out_px * taps * node->in.c * node->out.c * EM_LUT_DECODE_MARGIN_X10;
    return lut_x10 > direct_x10;
}

const em_kernel *em_op_choose_kernel(const em_model *model, const em_node *node, uint32_t kernels)
{
    const em_micro *micro;
    const em_kernel *k = NULL;
    uint64_t macs = 0;
    if (kernels == EM_KERNELS_REFERENCE) return reference_kernel(node->op);
    micro = micro_for(kernels);
    if (micro == NULL) return reference_kernel(node->op); /* defensive: the loader checked availability */

    switch (node->op) {
    case EM_OP_LUT_CONV2D:
        if (node->flags & EM_NODE_FLAG_INT8_TABLES) { /* byte-shuffle lookups; the reference if too large */
            k = find_algorithm(node->op, micro, "lut_conv2d_i8", node);
            break;
        }
        if (lut_conv2d_prefers_decoded(model, node)) k = find_algorithm(node->op, micro, "lut_conv2d_f32_decoded", node);
        if (k == NULL) k = find_algorithm(node->op, micro, "lut_conv2d_f32", node);
        break;
    case EM_OP_LUT_DENSE:
        k = find_algorithm(node->op, micro, (node->flags & EM_NODE_FLAG_INT8_TABLES) ? "lut_dense_i8" : "lut_dense_f32",
                           node);
        break;
    case EM_OP_CONV2D:
        macs = (uint64_t)node->out.numel * node->kernel_h * node->kernel_w * node->in.c;
#if defined(EM_HAVE_OPENBLAS)
        if (macs >= EM_BLAS_MIN_MACS) {
            k = find_algorithm(node->op, &em_micro_blas, "conv2d_f32_1x1", node);
            if (k == NULL) k = find_algorithm(node->op, &em_micro_blas, "conv2d_f32_im2col", node);
            break;
        }
#endif
        k = find_algorithm(node->op, micro, "conv2d_f32_direct", node);
        break;
    case EM_OP_DENSE:
        macs = (uint64_t)node->in.numel * node->out.c;
#if defined(EM_HAVE_OPENBLAS)
        if (macs >= EM_BLAS_MIN_MACS) {
            k = find_algorithm(node->op, &em_micro_blas, "dense_f32_gemv", node);
            break;
        }
#endif
        k = find_algorithm(node->op, micro, "dense_f32_gemv", node);
        break;
    case EM_OP_DEPTHWISE_CONV2D: /* multiplier 1 on the ISA's micro-kernel, else the portable loop */
        k = find_algorithm(node->op, micro, "depthwise_conv2d_f32_rows", node);
        if (k == NULL) k = portable_kernel(node->op, node);
        break;
    default:
        k = portable_kernel(node->op, node); /* ops without a matrix product: one kernel for every set */
        break;
    }
    (void)macs;
    return k != NULL ? k : reference_kernel(node->op);
}
