/* (b) Whole models: two tasks that share one input and a trunk, and two tasks on different inputs that
 * share codebooks; em_run_all runs each node once (em_context_node_runs), em_run_task computes only the
 * ancestors of its output, both agree bit for bit and match a naive composition of the ops.
 * (e) Argument checks of the run API: wrong sizes, indices and NULLs give EM_STATUS_BAD_ARGUMENT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_test_builder.h"
#include "em_test_util.h"

#define TOL 1e-5

static float *to_float(const double *d, size_t n)
{
    float *f = (float *)malloc(n * sizeof(float));
    size_t i;
    for (i = 0; i < n; ++i) f[i] = (float)d[i];
    return f;
}

static float *random_floats(em_test_rng *rng, size_t n, float scale)
{
    float *f = (float *)malloc(n * sizeof(float));
    em_test_fill(rng, f, n, scale);
    return f;
}

static uint32_t *random_indices(em_test_rng *rng, size_t n, uint32_t codewords)
{
    uint32_t *idx = (uint32_t *)malloc(n * sizeof(uint32_t));
    size_t i;
    for (i = 0; i < n; ++i) idx[i] = em_test_rand_below(rng, codewords);
    return idx;
}

static emb_node window(uint32_t op, uint32_t input, uint32_t k, uint32_t s, uint32_t pad, uint32_t activation)
{
    emb_node n = emb_node_init(op, input);
    n.kernel_h = n.kernel_w = k;
    n.stride_h = n.stride_w = s;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = pad;
    n.activation = activation;
    return n;
}

/* The model `b` describes (emb_finish; `b` is destroyed) into *file, loaded with the default kernels into *model,
 * with a context in *memory (malloc'd). Returns the context, or NULL when the load or the context failed (CHECKed);
 * the caller frees *memory, *model and *file either way. */
static em_context *load_with_context(emb_builder *b, uint8_t **file, em_model **model, void **memory)
{
    size_t size;
    em_context *ctx = NULL;
    em_error err;
    em_status st;
    *file = emb_finish(b, &size);
    emb_destroy(b);
    *model = NULL;
    *memory = NULL;
    st = em_model_load(*file, size, NULL, model, &err);
    if (!CHECK_STATUS(st, EM_STATUS_OK, err)) return NULL;
    *memory = malloc(em_context_size(*model));
    st = em_context_init(*model, *memory, em_context_size(*model), &ctx, &err);
    return CHECK_STATUS(st, EM_STATUS_OK, err) ? ctx : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Model 1: one input, a shared trunk forking into two task branches, plus a node no task needs.
 *
 *   in (9,9,3) -> n0 LUT_CONV2D 3x3 same r=2 C=5 ->6 relu -> n1 CONV2D 3x3/2 valid ->8 relu6
 *     n1 -> n2 MAX_POOL 2x2/2 -> n3 RESHAPE -> n4 DENSE ->5          task "alpha"
 *     n1 -> n5 GLOBAL_AVG_POOL -> n6 LUT_DENSE r=3 C=7 ->4            task "beta"
 *     n0 -> n7 AVG_POOL 3x3/2 same                                     (no task)
 * --------------------------------------------------------------------------------------------- */
typedef struct trunk_model {
    float *cb0, *b0, *w1, *b1, *w4, *b4, *cb6, *b6;
    uint32_t *idx0, *idx6;
} trunk_model;

static uint8_t *build_trunk_model(em_test_rng *rng, trunk_model *t, size_t *size)
{
    const uint32_t cb0_dims[3] = {2, 5, 2}, idx0_dims[4] = {3, 3, 2, 6}, w1_dims[4] = {3, 3, 6, 8};
    const uint32_t w4_dims[2] = {32, 5}, cb6_dims[3] = {3, 7, 3}, idx6_dims[2] = {3, 4};
    const uint32_t six = 6, eight = 8, five = 5, four = 4;
    emb_builder *b = emb_create();
    uint32_t in, v0, v1, v2, v3, v4, v5, v6;
    emb_node n;
    uint8_t *file;

    t->cb0 = random_floats(rng, 2 * 5 * 2, 0.5f);
    t->idx0 = random_indices(rng, 3 * 3 * 2 * 6, 5);
    t->b0 = random_floats(rng, 6, 0.3f);
    t->w1 = random_floats(rng, 3 * 3 * 6 * 8, 0.3f);
    t->b1 = random_floats(rng, 8, 0.3f);
    t->w4 = random_floats(rng, 32 * 5, 0.5f);
    t->b4 = random_floats(rng, 5, 0.5f);
    t->cb6 = random_floats(rng, 3 * 7 * 3, 0.5f);
    t->idx6 = random_indices(rng, 3 * 4, 7);
    t->b6 = random_floats(rng, 4, 0.5f);

    emb_meta_string(b, "node.0.name", "trunk/conv1");
    emb_meta_string(b, "node.1.name", "trunk/conv2");
    emb_meta_string(b, "node.4.name", "alpha/head");
    emb_meta_string(b, "node.6.name", "beta/head");
    emb_meta_string(b, "node.9.name", "a node that does not exist"); /* ignored */
    emb_meta_string(b, "merge.preset", "accu");
    emb_meta_f64(b, "custom.score", 0.5);
    emb_meta_i64(b, "custom.offset", -3);
    emb_meta_string(b, "source.0.task", "alpha");

    in = emb_input(b, 9, 9, 3);
    n = window(EM_OP_LUT_CONV2D, in, 3, 1, 1, EM_ACT_RELU);
    n.seg_len = 2;
    n.codewords = 5;
    n.weight = emb_tensor_f32(b, 3, cb0_dims, t->cb0);
    n.index = emb_tensor_idx(b, 4, idx0_dims, 3, t->idx0);
    n.bias = emb_tensor_f32(b, 1, &six, t->b0);
    v0 = emb_add_op(b, n, 6);
    n = window(EM_OP_CONV2D, v0, 3, 2, 0, EM_ACT_RELU6);
    n.weight = emb_tensor_f32(b, 4, w1_dims, t->w1);
    n.bias = emb_tensor_f32(b, 1, &eight, t->b1);
    v1 = emb_add_op(b, n, 8);
    v2 = emb_add_op(b, window(EM_OP_MAX_POOL, v1, 2, 2, 0, EM_ACT_NONE), 0);
    v3 = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, v2), 0);
    n = emb_node_init(EM_OP_DENSE, v3);
    n.weight = emb_tensor_f32(b, 2, w4_dims, t->w4);
    n.bias = emb_tensor_f32(b, 1, &five, t->b4);
    v4 = emb_add_op(b, n, 5);
    v5 = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v1), 0);
    n = emb_node_init(EM_OP_LUT_DENSE, v5);
    n.seg_len = 3;
    n.codewords = 7;
    n.weight = emb_tensor_f32(b, 3, cb6_dims, t->cb6);
    n.index = emb_tensor_idx(b, 2, idx6_dims, 3, t->idx6);
    n.bias = emb_tensor_f32(b, 1, &four, t->b6);
    v6 = emb_add_op(b, n, 4);
    emb_add_op(b, window(EM_OP_AVG_POOL, v0, 3, 2, 1, EM_ACT_NONE), 0);
    emb_task(b, "alpha", in, v4, 5);
    emb_task(b, "beta", in, v6, 4);
    emb_extension(b, 0x1234, "skipped", 7, 2); /* between TASKS and GRAPH: readers skip it */
    emb_extension(b, 0xFFFF, "", 0, 5);        /* an empty one after DATA */
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

static void free_trunk_model(trunk_model *t)
{
    free(t->cb0);
    free(t->b0);
    free(t->w1);
    free(t->b1);
    free(t->w4);
    free(t->b4);
    free(t->cb6);
    free(t->b6);
    free(t->idx0);
    free(t->idx6);
}

/* The same graph computed naively, op by op, in double (rounded to float between ops). */
static void naive_trunk(const trunk_model *t, const float *x, double *alpha, double *beta)
{
    const em_test_window same3 = {3, 3, 1, 1, 1, 1, 1, 1}, valid3s2 = {3, 3, 2, 2, 0, 0, 0, 0};
    const em_test_window pool2 = {2, 2, 2, 2, 0, 0, 0, 0};
    double *w0 = em_test_decode_lut(t->cb0, 5, 2, t->idx0, 9, 3, 6);
    double *w1 = (double *)malloc(3 * 3 * 6 * 8 * sizeof(double));
    double *w4 = (double *)malloc(32 * 5 * sizeof(double));
    double *w6 = em_test_decode_lut(t->cb6, 7, 3, t->idx6, 1, 8, 4);
    double y0[9 * 9 * 6], y1[4 * 4 * 8], y2[2 * 2 * 8], gap[8];
    float *f0, *f1, *f2, *fg;
    size_t i, p;

    for (i = 0; i < 3 * 3 * 6 * 8; ++i) w1[i] = (double)t->w1[i];
    for (i = 0; i < 32 * 5; ++i) w4[i] = (double)t->w4[i];
    em_test_naive_conv2d(x, 9, 9, 3, w0, 6, t->b0, &same3, EM_ACT_RELU, y0);
    f0 = to_float(y0, 9 * 9 * 6);
    em_test_naive_conv2d(f0, 9, 9, 6, w1, 8, t->b1, &valid3s2, EM_ACT_RELU6, y1);
    f1 = to_float(y1, 4 * 4 * 8);
    em_test_naive_pool(f1, 4, 4, 8, &pool2, 0, EM_ACT_NONE, y2);
    f2 = to_float(y2, 32);
    em_test_naive_dense(f2, 32, w4, 5, t->b4, EM_ACT_NONE, alpha);
    for (i = 0; i < 8; ++i) {
        gap[i] = 0.0;
        for (p = 0; p < 16; ++p) gap[i] += (double)f1[p * 8 + i];
        gap[i] /= 16.0;
    }
    fg = to_float(gap, 8);
    em_test_naive_dense(fg, 8, w6, 4, t->b6, EM_ACT_NONE, beta);
    free(w0);
    free(w1);
    free(w4);
    free(w6);
    free(f0);
    free(f1);
    free(f2);
    free(fg);
}

static void check_runs(const em_context *ctx, const uint64_t *want, const char *when)
{
    uint32_t n;
    for (n = 0; n < 8; ++n)
        CHECKF(em_context_node_runs(ctx, n) == want[n], "%s: node %u ran %lu times, expected %lu", when, (unsigned)n,
               (unsigned long)em_context_node_runs(ctx, n), (unsigned long)want[n]);
}

/* Once with the reference kernels (whose names it checks) and once with the default, fastest set. */
static void test_shared_trunk(uint32_t kernels)
{
    em_load_options options;
    static const char *const names[8] = {"trunk/conv1", "trunk/conv2", "", "", "alpha/head", "", "beta/head", ""};
    static const char *const ref_kernels[8] = {"lut_conv2d_ref", "conv2d_ref", "max_pool_ref", "reshape_ref",
                                               "dense_ref", "global_avg_pool_ref", "lut_dense_ref", "avg_pool_ref"};
    em_test_rng rng;
    trunk_model t;
    size_t size, ctx_bytes;
    uint8_t *file;
    em_model *model = NULL;
    em_context *ctx = NULL, *ctx2 = NULL;
    unsigned char *memory, *memory2;
    em_error err;
    em_status st;
    em_task_info ti;
    em_node_info ni;
    float x[9 * 9 * 3], x_copy[9 * 9 * 3], alpha[5], beta[4], alpha_all[5], beta_all[4];
    double want_alpha[5], want_beta[4];
    uint32_t h, w, c, n;
    const float *inputs[1];
    float *outputs[2];

    em_test_rng_seed(&rng, 21);
    file = build_trunk_model(&rng, &t, &size);
    em_test_fill(&rng, x, 9 * 9 * 3, 1.0f);
    memcpy(x_copy, x, sizeof x);
    memset(&options, 0, sizeof options);
    options.kernels = kernels;
    st = em_model_load_ex(file, size, NULL, &options, &model, &err);
    if (!CHECK_STATUS(st, EM_STATUS_OK, err)) {
        free(file);
        free_trunk_model(&t);
        return;
    }
    CHECK(kernels == EM_KERNELS_REFERENCE ? em_model_kernels(model) == EM_KERNELS_REFERENCE
                                          : em_model_kernels(model) != EM_KERNELS_AUTO);

    /* description */
    CHECK(em_model_format_version(model) == 1);
    CHECK(em_model_task_count(model) == 2);
    CHECK(em_model_input_count(model) == 1);
    CHECK(em_model_node_count(model) == 8);
    CHECK(em_model_find_task(model, "beta") == 1);
    CHECK(em_model_find_task(model, "alpha") == 0);
    CHECK(em_model_find_task(model, "gamma") == -1);
    CHECK(em_model_task_info(model, 0, &ti) == EM_STATUS_OK && strcmp(ti.name, "alpha") == 0 && ti.input_index == 0 &&
          ti.input_h == 9 && ti.input_w == 9 && ti.input_c == 3 && ti.classes == 5);
    CHECK(em_model_task_info(model, 2, &ti) == EM_STATUS_BAD_ARGUMENT);
    CHECK(em_model_input_shape(model, 0, &h, &w, &c) == EM_STATUS_OK && h == 9 && w == 9 && c == 3);
    CHECK(em_model_input_shape(model, 1, &h, &w, &c) == EM_STATUS_BAD_ARGUMENT);
    for (n = 0; n < 8; ++n) {
        if (!CHECK(em_model_node_info(model, n, &ni) == EM_STATUS_OK)) continue;
        CHECKF(strcmp(ni.name, names[n]) == 0, "node %u name '%s', expected '%s'", (unsigned)n, ni.name, names[n]);
        if (kernels == EM_KERNELS_REFERENCE)
            CHECKF(strcmp(ni.kernel, ref_kernels[n]) == 0, "node %u kernel %s, expected %s", (unsigned)n, ni.kernel,
                   ref_kernels[n]);
        else /* same op, a fast kernel: "lut_conv2d_ref" -> "lut_conv2d_f32..." */
            CHECKF(strncmp(ni.kernel, ref_kernels[n], strlen(ref_kernels[n]) - 3) == 0 &&
                       strstr(ni.kernel, "_f32") != NULL,
                   "node %u kernel %s, expected a fast kernel for %s", (unsigned)n, ni.kernel, ref_kernels[n]);
    }
    CHECK(em_model_node_info(model, 0, &ni) == EM_STATUS_OK && ni.op == EM_OP_LUT_CONV2D && ni.seg_len == 2 &&
          ni.codewords == 5 && ni.out_h == 9 && ni.out_w == 9 && ni.out_c == 6 && ni.input == 0);
    CHECK(em_model_node_info(model, 7, &ni) == EM_STATUS_OK && ni.out_h == 5 && ni.out_w == 5 && ni.out_c == 6);
    CHECK(em_model_node_info(model, 8, &ni) == EM_STATUS_BAD_ARGUMENT);
    CHECK(strcmp(em_op_name(EM_OP_LUT_DENSE), "LUT_DENSE") == 0);
    CHECK(strcmp(em_op_name(99), "unknown") == 0);
    CHECK(strstr(em_runtime_cpu_features(), "kernels: ") != NULL && strstr(em_runtime_cpu_features(), " ref") != NULL);

    /* a context in memory that is deliberately not 64-byte aligned */
    ctx_bytes = em_context_size(model);
    CHECK(ctx_bytes > 0);
    memory = (unsigned char *)malloc(ctx_bytes + 1);
    st = em_context_init(model, memory, ctx_bytes - 1, &ctx, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECK(ctx == NULL && strstr(err.message, "em_context_size") != NULL);
    st = em_context_init(model, memory + 1, ctx_bytes, &ctx, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);

    /* em_run_all: every node once, including n7 that no task needs */
    inputs[0] = x;
    outputs[0] = alpha_all;
    outputs[1] = beta_all;
    st = em_run_all(ctx, inputs, outputs, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    {
        const uint64_t once[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        check_runs(ctx, once, "after em_run_all");
    }
    naive_trunk(&t, x, want_alpha, want_beta);
    em_test_close(alpha_all, want_alpha, 5, TOL, "run_all alpha vs naive");
    em_test_close(beta_all, want_beta, 4, TOL, "run_all beta vs naive");

    /* em_run_task: only the task's ancestors */
    st = em_run_task(ctx, 0, x, 9 * 9 * 3, alpha, 5, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    {
        const uint64_t after_alpha[8] = {2, 2, 2, 2, 2, 1, 1, 1};
        check_runs(ctx, after_alpha, "after em_run_task(alpha)");
    }
    st = em_run_task(ctx, 1, x, 9 * 9 * 3, beta, 4, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    {
        const uint64_t after_beta[8] = {3, 3, 2, 2, 2, 2, 2, 1};
        check_runs(ctx, after_beta, "after em_run_task(beta)");
    }
    CHECK(memcmp(alpha, alpha_all, sizeof alpha) == 0); /* same kernels, same order: bit for bit */
    CHECK(memcmp(beta, beta_all, sizeof beta) == 0);
    CHECK(memcmp(x, x_copy, sizeof x) == 0); /* the input is only read */
    CHECK(em_context_node_runs(ctx, 8) == 0);
    CHECK(em_context_node_runs(NULL, 0) == 0);

    /* a second context on the same model is independent */
    memory2 = (unsigned char *)malloc(ctx_bytes);
    st = em_context_init(model, memory2, ctx_bytes, &ctx2, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    CHECK(em_context_node_runs(ctx2, 0) == 0);
    st = em_run_task(ctx2, 0, x, 9 * 9 * 3, alpha, 5, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    CHECK(memcmp(alpha, alpha_all, sizeof alpha) == 0);
    CHECK(em_context_node_runs(ctx2, 0) == 1 && em_context_node_runs(ctx, 0) == 3);

    /* (e) argument checks */
    st = em_run_task(ctx, 0, x, 9 * 9 * 3 - 1, alpha, 5, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECKF(strstr(err.message, "expects 243 input floats (9x9x3), got 242") != NULL, "message: %s", err.message);
    st = em_run_task(ctx, 1, x, 9 * 9 * 3, beta, 5, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECKF(strstr(err.message, "produces 4 logits") != NULL, "message: %s", err.message);
    st = em_run_task(ctx, 2, x, 9 * 9 * 3, beta, 4, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECKF(strstr(err.message, "out of range") != NULL, "message: %s", err.message);
    st = em_run_task(ctx, 0, NULL, 9 * 9 * 3, alpha, 5, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    st = em_run_task(ctx, 0, x, 9 * 9 * 3, NULL, 5, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECK(em_run_task(NULL, 0, x, 9 * 9 * 3, alpha, 5, NULL) == EM_STATUS_BAD_ARGUMENT); /* err may be NULL */
    inputs[0] = NULL;
    st = em_run_all(ctx, inputs, outputs, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECKF(strstr(err.message, "inputs[0]") != NULL, "message: %s", err.message);
    inputs[0] = x;
    outputs[1] = NULL;
    st = em_run_all(ctx, inputs, outputs, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECKF(strstr(err.message, "outputs[1]") != NULL, "message: %s", err.message);
    CHECK(em_run_all(ctx, NULL, outputs, &err) == EM_STATUS_BAD_ARGUMENT);
    {
        const uint64_t unchanged[8] = {3, 3, 2, 2, 2, 2, 2, 1}; /* failed calls run nothing */
        check_runs(ctx, unchanged, "after failed calls");
    }
    CHECK(em_context_init(model, NULL, ctx_bytes, &ctx2, &err) == EM_STATUS_BAD_ARGUMENT);
    CHECK(em_context_init(NULL, memory2, ctx_bytes, &ctx2, &err) == EM_STATUS_BAD_ARGUMENT);

    free(memory);
    free(memory2);
    em_model_free(model);
    free(file);
    free_trunk_model(&t);
}

/* ---------------------------------------------------------------------------------------------
 * Model 2: two tasks on two inputs sharing codebooks (the NeuralMerger layout); the shallower task
 * uses only the first S segments of the deeper codebook.
 *   task a: in (8,8,3) -> LUT_CONV2D 3x3 same r=2 C=6 ->4 relu -> MAX_POOL 2/2 -> RESHAPE (64)
 *           -> LUT_DENSE r=4 C=8 ->7 relu6 -> DENSE ->5
 *   task b: in (10,10,5) -> same ops with ->5 channels (S=3 conv segments, 125 -> S=32 fc segments) -> 3
 * --------------------------------------------------------------------------------------------- */
typedef struct branch {
    uint32_t hw, cin, cout, classes;
    uint32_t *idx_conv, *idx_fc;
    float *b_conv, *b_fc, *w_head, *b_head;
} branch;

static void test_two_inputs_shared_codebooks(void)
{
    const uint32_t cb_conv_dims[3] = {3, 6, 2}, cb_fc_dims[3] = {40, 8, 4};
    const em_test_window same3 = {3, 3, 1, 1, 1, 1, 1, 1}, pool2 = {2, 2, 2, 2, 0, 0, 0, 0};
    branch br[2] = {{8, 3, 4, 5, NULL, NULL, NULL, NULL, NULL, NULL}, {10, 5, 5, 3, NULL, NULL, NULL, NULL, NULL, NULL}};
    em_test_rng rng;
    emb_builder *b = emb_create();
    float *cb_conv, *cb_fc, *xs[2], *outs[2], *single[2];
    uint32_t t_cb_conv, t_cb_fc, in[2], k;
    uint8_t *file;
    em_model *model;
    em_context *ctx;
    void *memory;
    em_error err;
    em_status st;

    em_test_rng_seed(&rng, 22);
    cb_conv = random_floats(&rng, 3 * 6 * 2, 0.5f);
    cb_fc = random_floats(&rng, 40 * 8 * 4, 0.3f);
    t_cb_conv = emb_tensor_f32(b, 3, cb_conv_dims, cb_conv);
    t_cb_fc = emb_tensor_f32(b, 3, cb_fc_dims, cb_fc);
    for (k = 0; k < 2; ++k) in[k] = emb_input(b, br[k].hw, br[k].hw, br[k].cin);
    for (k = 0; k < 2; ++k) {
        branch *r = &br[k];
        const uint32_t s_conv = (r->cin + 1) / 2, flat = (r->hw / 2) * (r->hw / 2) * r->cout, s_fc = (flat + 3) / 4;
        const uint32_t idx_conv_dims[4] = {3, 3, s_conv, r->cout}, idx_fc_dims[2] = {s_fc, 7};
        const uint32_t seven = 7, head_dims[2] = {7, r->classes};
        emb_node n;
        uint32_t v;
        r->idx_conv = random_indices(&rng, 9 * s_conv * r->cout, 6);
        r->idx_fc = random_indices(&rng, (size_t)s_fc * 7, 8);
        r->b_conv = random_floats(&rng, r->cout, 0.1f);
        r->b_fc = random_floats(&rng, 7, 0.1f);
        r->w_head = random_floats(&rng, 7 * r->classes, 1.0f);
        r->b_head = random_floats(&rng, r->classes, 1.0f);
        n = window(EM_OP_LUT_CONV2D, in[k], 3, 1, 1, EM_ACT_RELU);
        n.seg_len = 2;
        n.codewords = 6;
        n.weight = t_cb_conv;
        n.index = emb_tensor_idx(b, 4, idx_conv_dims, 3, r->idx_conv);
        n.bias = emb_tensor_f32(b, 1, &r->cout, r->b_conv);
        v = emb_add_op(b, n, r->cout);
        v = emb_add_op(b, window(EM_OP_MAX_POOL, v, 2, 2, 0, EM_ACT_NONE), 0);
        v = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, v), 0);
        n = emb_node_init(EM_OP_LUT_DENSE, v);
        n.activation = EM_ACT_RELU6;
        n.seg_len = 4;
        n.codewords = 8;
        n.weight = t_cb_fc;
        n.index = emb_tensor_idx(b, 2, idx_fc_dims, 3, r->idx_fc);
        n.bias = emb_tensor_f32(b, 1, &seven, r->b_fc);
        v = emb_add_op(b, n, 7);
        n = emb_node_init(EM_OP_DENSE, v);
        n.weight = emb_tensor_f32(b, 2, head_dims, r->w_head);
        n.bias = emb_tensor_f32(b, 1, &r->classes, r->b_head);
        v = emb_add_op(b, n, r->classes);
        emb_task(b, k == 0 ? "a" : "b", in[k], v, r->classes);
    }
    ctx = load_with_context(b, &file, &model, &memory);
    if (ctx != NULL) {
        for (k = 0; k < 2; ++k) {
            const size_t nx = (size_t)br[k].hw * br[k].hw * br[k].cin;
            xs[k] = random_floats(&rng, nx, 1.0f);
            outs[k] = (float *)malloc(br[k].classes * sizeof(float));
            single[k] = (float *)malloc(br[k].classes * sizeof(float));
        }
        st = em_run_all(ctx, (const float *const *)xs, outs, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        for (k = 0; k < 10; ++k) CHECK(em_context_node_runs(ctx, k) == 1);
        for (k = 0; k < 2; ++k) {
            /* naive: decode, convolve, pool, flatten, decode the fc, dense, head */
            branch *r = &br[k];
            const size_t nx = (size_t)r->hw * r->hw * r->cin, n1 = (size_t)r->hw * r->hw * r->cout;
            const uint32_t flat = (r->hw / 2) * (r->hw / 2) * r->cout;
            double *wc = em_test_decode_lut(cb_conv, 6, 2, r->idx_conv, 9, r->cin, r->cout);
            double *wf = em_test_decode_lut(cb_fc, 8, 4, r->idx_fc, 1, flat, 7);
            double *wh = (double *)malloc(7 * r->classes * sizeof(double));
            double *y1 = (double *)malloc(n1 * sizeof(double)), *y2 = (double *)malloc(flat * sizeof(double));
            double y3[7], want[8];
            float *f1, *f2, *f3;
            size_t i;
            for (i = 0; i < 7 * r->classes; ++i) wh[i] = (double)r->w_head[i];
            em_test_naive_conv2d(xs[k], r->hw, r->hw, r->cin, wc, r->cout, r->b_conv, &same3, EM_ACT_RELU, y1);
            f1 = to_float(y1, n1);
            em_test_naive_pool(f1, r->hw, r->hw, r->cout, &pool2, 0, EM_ACT_NONE, y2);
            f2 = to_float(y2, flat);
            em_test_naive_dense(f2, flat, wf, 7, r->b_fc, EM_ACT_RELU6, y3);
            f3 = to_float(y3, 7);
            em_test_naive_dense(f3, 7, wh, r->classes, r->b_head, EM_ACT_NONE, want);
            em_test_close(outs[k], want, r->classes, TOL, k == 0 ? "task a vs naive" : "task b vs naive");
            st = em_run_task(ctx, k, xs[k], nx, single[k], r->classes, &err);
            CHECK_STATUS(st, EM_STATUS_OK, err);
            CHECK(memcmp(single[k], outs[k], r->classes * sizeof(float)) == 0);
            free(wc);
            free(wf);
            free(wh);
            free(y1);
            free(y2);
            free(f1);
            free(f2);
            free(f3);
        }
        for (k = 0; k < 10; ++k) CHECK(em_context_node_runs(ctx, k) == 2); /* each task ran its own 5 nodes */
        for (k = 0; k < 2; ++k) {
            free(xs[k]);
            free(outs[k]);
            free(single[k]);
        }
    }
    free(memory);
    em_model_free(model);
    free(file);
    free(cb_conv);
    free(cb_fc);
    for (k = 0; k < 2; ++k) {
        free(br[k].idx_conv);
        free(br[k].idx_fc);
        free(br[k].b_conv);
        free(br[k].b_fc);
        free(br[k].w_head);
        free(br[k].b_head);
    }
}

/* A task whose logits are its input value: nothing to compute, the input is copied (also in place). */
static void test_task_reading_its_input(void)
{
    emb_builder *b = emb_create();
    uint32_t in, v;
    uint8_t *file;
    em_model *model;
    em_context *ctx;
    void *memory;
    em_error err;
    em_status st;
    float x[12], y[12];
    size_t i;

    for (i = 0; i < 12; ++i) x[i] = (float)i - 5.0f;
    in = emb_input(b, 2, 2, 3);
    v = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, in), 0);
    emb_task(b, "identity", in, in, 12);
    emb_task(b, "flat", in, v, 12);
    ctx = load_with_context(b, &file, &model, &memory);
    if (ctx != NULL) {
        st = em_run_task(ctx, 0, x, 12, y, 12, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(memcmp(x, y, sizeof x) == 0 && em_context_node_runs(ctx, 0) == 0);
        st = em_run_task(ctx, 0, x, 12, x, 12, &err); /* output aliasing the input */
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(memcmp(x, y, sizeof x) == 0);
        st = em_run_task(ctx, 1, x, 12, y, 12, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(memcmp(x, y, sizeof x) == 0 && em_context_node_runs(ctx, 0) == 1);
    }
    free(memory);
    em_model_free(model);
    free(file);
}

/* ---------------------------------------------------------------------------------------------
 * Model 3: run groups (after zippering: point-wise convs shared across tasks). Both tasks read one
 * input (h × h × 4):
 *   task "a": n0 DEPTHWISE 3x3 same (own) -> n1 CONV2D 1x1 ->16 (W1) -> n2 CONV2D 1x1 ->8 (W2) -> n3 GAP -> n4 DENSE ->5
 *   task "b": n5 DEPTHWISE 3x3 same (own) -> n6 CONV2D 1x1 ->16 (W1) -> n7 CONV2D 1x1 ->8 (W2) -> n8 GAP -> n9 DENSE ->3
 * {n1, n6} and {n2, n7} apply the same weights: em_run_all runs each pair as one step; fused (one product
 * over both tasks' pixels, the second group reading the first's output block) on the fast kernels when
 * every value is a multiple of 64 bytes (h = 8), run back to back otherwise (h = 5) and on the reference.
 * Outputs are bit-identical to em_run_task (members alone) and to a load without run groups.
 * --------------------------------------------------------------------------------------------- */
static uint8_t *build_group_model(em_test_rng *rng, uint32_t hw, size_t *size)
{
    const uint32_t dw_dims[4] = {3, 3, 4, 1}, w1_dims[4] = {1, 1, 4, 16}, w2_dims[4] = {1, 1, 16, 8};
    const uint32_t b1_dims[1] = {16}, wa_dims[2] = {8, 5}, wb_dims[2] = {8, 3};
    float dwa[36], dwb[36], w1[64], b1[16], w2[128], wa[40], wb[24];
    uint32_t in, t1, t2, t3, v, task, out[2];
    emb_builder *b = emb_create();
    emb_node n;
    uint8_t *file;
    em_test_fill(rng, dwa, 36, 0.5f);
    em_test_fill(rng, dwb, 36, 0.5f);
    em_test_fill(rng, w1, 64, 0.5f);
    em_test_fill(rng, b1, 16, 0.2f);
    em_test_fill(rng, w2, 128, 0.5f);
    em_test_fill(rng, wa, 40, 0.5f);
    em_test_fill(rng, wb, 24, 0.5f);
    in = emb_input(b, hw, hw, 4);
    t1 = emb_tensor_f32(b, 4, w1_dims, w1);
    t2 = emb_tensor_f32(b, 1, b1_dims, b1);
    t3 = emb_tensor_f32(b, 4, w2_dims, w2);
    for (task = 0; task < 2; ++task) {
        n = window(EM_OP_DEPTHWISE_CONV2D, in, 3, 1, 1, EM_ACT_RELU6);
        n.weight = emb_tensor_f32(b, 4, dw_dims, task == 0 ? dwa : dwb);
        v = emb_add_op(b, n, 4);
        n = emb_node_init(EM_OP_CONV2D, v);
        n.weight = t1;
        n.bias = t2;
        n.activation = EM_ACT_RELU6;
        v = emb_add_op(b, n, 16);
        n = emb_node_init(EM_OP_CONV2D, v);
        n.weight = t3;
        n.activation = EM_ACT_RELU;
        v = emb_add_op(b, n, 8);
        v = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
        n = emb_node_init(EM_OP_DENSE, v);
        n.weight = task == 0 ? emb_tensor_f32(b, 2, wa_dims, wa) : emb_tensor_f32(b, 2, wb_dims, wb);
        out[task] = emb_add_op(b, n, task == 0 ? 5 : 3);
    }
    emb_task_auto(b, "a", in, out[0]);
    emb_task_auto(b, "b", in, out[1]);
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

/* Task 0 into ya[na] and task 1 into yb[nb] by em_run_task, then both by em_run_all into ya_all and yb_all (every
 * status CHECKed); with `profile_run_all` profiling is switched on between them, so profiles count em_run_all
 * only. Returns 1 if every run succeeded. */
static int run_tasks_then_all(em_context *ctx, const float *x, size_t nx, float *ya, float *ya_all, size_t na,
                              float *yb, float *yb_all, size_t nb, int profile_run_all)
{
    const float *inputs[1];
    float *outputs[2];
    em_error err;
    em_status st; /* CHECK_STATUS reads its status more than once: never pass it a call */
    int ok;
    st = em_run_task(ctx, 0, x, nx, ya, na, &err);
    ok = CHECK_STATUS(st, EM_STATUS_OK, err);
    st = em_run_task(ctx, 1, x, nx, yb, nb, &err);
    ok &= CHECK_STATUS(st, EM_STATUS_OK, err);
    if (profile_run_all) em_context_enable_profiling(ctx, 1);
    inputs[0] = x;
    outputs[0] = ya_all;
    outputs[1] = yb_all;
    st = em_run_all(ctx, inputs, outputs, &err);
    ok &= CHECK_STATUS(st, EM_STATUS_OK, err);
    return ok;
}

static void test_run_groups(uint32_t kernels, uint32_t hw)
{
    static const uint32_t group_of[10] = {EM_NONE, 0, 1, EM_NONE, EM_NONE, EM_NONE, 0, 1, EM_NONE, EM_NONE};
    const int fused = kernels != EM_KERNELS_REFERENCE && hw == 8;
    em_test_rng rng;
    size_t size, i;
    uint8_t *file;
    float *x, ya[5], yb[3], ya_all[5], yb_all[3], ya_plain[5], yb_plain[3];
    const float *inputs[1];
    float *outputs[2];
    int variant;
    em_error err;
    em_status st;

    em_test_rng_seed(&rng, 40 + hw);
    file = build_group_model(&rng, hw, &size);
    x = random_floats(&rng, (size_t)hw * hw * 4, 1.0f);
    inputs[0] = x;
    outputs[0] = ya_all;
    outputs[1] = yb_all;
    for (variant = 0; variant < 2; ++variant) { /* 0: run groups (the default), 1: EM_LOAD_NO_RUN_GROUPS */
        em_load_options options;
        em_model *model = NULL;
        em_context *ctx = NULL;
        unsigned char *memory;
        em_node_profile lead, other;
        uint32_t n;
        memset(&options, 0, sizeof options);
        options.kernels = kernels;
        options.flags = variant == 1 ? EM_LOAD_NO_RUN_GROUPS : 0u;
        st = em_model_load_ex(file, size, NULL, &options, &model, &err);
        if (!CHECK_STATUS(st, EM_STATUS_OK, err)) break;
        CHECKF(em_model_run_group_count(model) == (variant == 0 ? 2u : 0u), "h=%u variant %d: %u run groups",
               (unsigned)hw, variant, (unsigned)em_model_run_group_count(model));
        for (n = 0; n < 10; ++n) {
            em_node_info ni;
            em_model_node_info(model, n, &ni);
            CHECKF(ni.run_group == (variant == 0 ? group_of[n] : EM_NONE), "h=%u node %u: run group %u", (unsigned)hw,
                   (unsigned)n, (unsigned)ni.run_group);
            CHECKF(ni.run_group_fused == (uint32_t)(variant == 0 && group_of[n] != EM_NONE && fused),
                   "h=%u kernels %s node %u: fused %u", (unsigned)hw, em_kernels_name(kernels), (unsigned)n,
                   (unsigned)ni.run_group_fused);
        }
        memory = (unsigned char *)malloc(em_context_size(model));
        st = em_context_init(model, memory, em_context_size(model), &ctx, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        /* each task alone first, then all tasks: the same bits */
        run_tasks_then_all(ctx, x, (size_t)hw * hw * 4, ya, ya_all, 5, yb, yb_all, 3, 1);
        CHECKF(memcmp(ya, ya_all, sizeof ya) == 0 && memcmp(yb, yb_all, sizeof yb) == 0,
               "h=%u kernels %s variant %d: em_run_all differs from em_run_task", (unsigned)hw,
               em_kernels_name(kernels), variant);
        for (n = 0; n < 10; ++n) /* every node: once per em_run_task that needs it, once in em_run_all */
            CHECKF(em_context_node_runs(ctx, n) == 2, "node %u ran %lu times", (unsigned)n,
                   (unsigned long)em_context_node_runs(ctx, n));
        /* profiling: one entry per group, on its first member; every member counts its run */
        em_context_node_profile(ctx, 1, &lead);
        em_context_node_profile(ctx, 6, &other);
        CHECK(lead.runs == 1 && other.runs == 1);
        if (variant == 0) CHECK(other.total_ns == 0);
        if (variant == 0) {
            memcpy(ya_plain, ya_all, sizeof ya_plain);
            memcpy(yb_plain, yb_all, sizeof yb_plain);
        } else {
            CHECK(memcmp(ya_plain, ya_all, sizeof ya_plain) == 0 && memcmp(yb_plain, yb_all, sizeof yb_plain) == 0);
        }
        /* a second run on the same context: same bits (no state left behind) */
        for (i = 0; i < 5; ++i) ya_all[i] = -1.0f;
        st = em_run_all(ctx, inputs, outputs, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(memcmp(ya, ya_all, sizeof ya) == 0);
        free(memory);
        em_model_free(model);
    }
    {
        em_load_options options;
        em_model *model = NULL;
        memset(&options, 0, sizeof options);
        options.flags = 0x80u;
        st = em_model_load_ex(file, size, NULL, &options, &model, &err);
        CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    }
    free(x);
    free(file);
}

/* MAX_NODES nodes that all apply one weight tensor, two chains of 1x1 convs: every pair of layers is a run
 * group; planning stays near-linear (this loads in milliseconds), and the grouped run matches em_run_task. */
static void test_run_groups_many(void)
{
    const uint32_t dims[4] = {1, 1, 4, 4}, per_task = (EM_MAX_NODES - 2u) / 2u;
    em_test_rng rng;
    float w[16], x[2 * 2 * 4], ya[16], yb[16], ya_all[16], yb_all[16];
    emb_builder *b = emb_create();
    uint32_t in, t, v[2], k, i;
    uint8_t *file;
    em_model *model;
    em_context *ctx;
    void *memory;
    em_test_rng_seed(&rng, 77);
    em_test_fill(&rng, w, 16, 0.5f);
    em_test_fill(&rng, x, 16, 1.0f);
    in = emb_input(b, 2, 2, 4);
    t = emb_tensor_f32(b, 4, dims, w);
    for (k = 0; k < 2; ++k) {
        v[k] = in;
        for (i = 0; i < per_task; ++i) {
            emb_node n = emb_node_init(EM_OP_CONV2D, v[k]);
            n.weight = t;
            n.activation = EM_ACT_RELU6;
            v[k] = emb_add_op(b, n, 4);
        }
    }
    emb_task_auto(b, "a", in, v[0]);
    emb_task_auto(b, "b", in, v[1]);
    ctx = load_with_context(b, &file, &model, &memory);
    if (ctx != NULL) {
        /* the first layers read the same value (the input): they would compute the same thing, not grouped */
        CHECKF(em_model_run_group_count(model) == per_task - 1, "%u run groups",
               (unsigned)em_model_run_group_count(model));
        run_tasks_then_all(ctx, x, 16, ya, ya_all, 16, yb, yb_all, 16, 0);
        CHECK(memcmp(ya, ya_all, sizeof ya) == 0 && memcmp(yb, yb_all, sizeof yb) == 0);
    }
    free(memory);
    em_model_free(model);
    free(file);
}

int main(void)
{
    test_task_reading_its_input();
    test_shared_trunk(EM_KERNELS_REFERENCE);
    test_shared_trunk(EM_KERNELS_AUTO);
    test_two_inputs_shared_codebooks();
    test_run_groups(EM_KERNELS_REFERENCE, 8);
    test_run_groups(EM_KERNELS_AUTO, 8);
    test_run_groups(EM_KERNELS_AUTO, 5);
    test_run_groups_many();
    {
        uint32_t set;
        for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set)
            if (em_kernels_available(set)) test_run_groups(set, 8);
    }
    return em_test_summary("test_models");
}
