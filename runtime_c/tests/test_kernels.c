/* (a) Every reference kernel against a naive, independent computation on odd shapes: each op is wrapped
 * in a one-node model built per FORMAT.md and run through the public API, so the loader's prepare() and
 * the kernel are exercised together. Also: CRC32, index bits, and the bit-unpack helper. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_internal.h"
#include "em_test_builder.h"
#include "em_test_util.h"
#include "ref/em_ref_kernels.h"

#define TOL 1e-5

/* Loads the built model, checks node 0's kernel name, runs task 0; returns malloc'd logits or NULL. */
static float *run_model(const emb_builder *b, const float *x, size_t nx, size_t ny, const char *kernel)
{
    size_t size;
    uint8_t *file = emb_finish(b, &size);
    em_model *model = NULL;
    em_context *ctx = NULL;
    void *memory = NULL;
    float *y = NULL;
    em_node_info info;
    em_error err;
    em_load_options options;
    em_status st;
    memset(&options, 0, sizeof options);
    options.kernels = EM_KERNELS_REFERENCE; /* this file checks the reference kernels; test_fast_kernels the rest */
    st = em_model_load_ex(file, size, NULL, &options, &model, &err);
    if (CHECK_STATUS(st, EM_STATUS_OK, err)) {
        if (CHECK(em_model_node_info(model, 0, &info) == EM_STATUS_OK))
            CHECKF(strcmp(info.kernel, kernel) == 0, "kernel %s, expected %s", info.kernel, kernel);
        memory = malloc(em_context_size(model));
        st = em_context_init(model, memory, em_context_size(model), &ctx, &err);
        if (CHECK_STATUS(st, EM_STATUS_OK, err)) {
            y = (float *)malloc(ny * sizeof(float));
            st = em_run_task(ctx, 0, x, nx, y, ny, &err);
            if (!CHECK_STATUS(st, EM_STATUS_OK, err)) {
                free(y);
                y = NULL;
            } else {
                CHECK(em_context_node_runs(ctx, 0) == 1);
            }
        }
    }
    free(memory);
    em_model_free(model);
    free(file);
    return y;
}

typedef struct conv_case {
    uint32_t h, w, cin, cout;
    em_test_window win;
    uint32_t activation;
    int bias;
} conv_case;

/* h, w, cin, cout, {kh, kw, sh, sw, pt, pl, pb, pr}, activation, bias */
static const conv_case conv_cases[] = {
    {9, 7, 5, 6, {3, 3, 1, 1, 1, 1, 1, 1}, EM_ACT_RELU, 1},   /* 'same', odd sizes */
    {8, 8, 1, 4, {5, 5, 1, 1, 0, 0, 0, 0}, EM_ACT_NONE, 1},   /* LeNet first layer, 'valid' */
    {11, 10, 7, 3, {3, 3, 2, 2, 0, 0, 1, 1}, EM_ACT_RELU6, 0}, /* stride 2, TF 'same' (extra pad bottom/right) */
    {6, 5, 16, 9, {1, 1, 1, 1, 0, 0, 0, 0}, EM_ACT_NONE, 1},  /* point-wise */
    {12, 12, 9, 8, {5, 3, 2, 1, 2, 1, 2, 1}, EM_ACT_NONE, 1}, /* non-square kernel, mixed strides */
    {5, 5, 3, 2, {3, 3, 3, 3, 1, 1, 1, 1}, EM_ACT_NONE, 1},   /* stride equal to the kernel */
    {1, 1, 4, 3, {1, 1, 1, 1, 0, 0, 0, 0}, EM_ACT_RELU, 1},   /* a single pixel */
    {4, 9, 2, 5, {4, 2, 1, 2, 3, 0, 0, 1}, EM_ACT_RELU, 1},   /* pad_top = kernel_h − 1: windows mostly padding */
    {7, 3, 11, 4, {2, 3, 2, 1, 0, 1, 1, 1}, EM_ACT_NONE, 0},  /* even kernel, asymmetric pads */
};
#define CONV_CASES (sizeof conv_cases / sizeof conv_cases[0])

static emb_node window_node(uint32_t op, uint32_t input, const em_test_window *win, uint32_t activation)
{
    emb_node n = emb_node_init(op, input);
    emb_node_window(&n, win->kh, win->kw, win->sh, win->sw, win->pt, win->pl, win->pb, win->pr);
    n.activation = activation;
    return n;
}

static void test_conv2d(void)
{
    size_t i;
    em_test_rng rng;
    em_test_rng_seed(&rng, 11);
    for (i = 0; i < CONV_CASES; ++i) {
        const conv_case *cc = &conv_cases[i];
        const uint32_t oh = em_test_out_size(cc->h, cc->win.kh, cc->win.sh, cc->win.pt, cc->win.pb);
        const uint32_t ow = em_test_out_size(cc->w, cc->win.kw, cc->win.sw, cc->win.pl, cc->win.pr);
        const size_t nx = (size_t)cc->h * cc->w * cc->cin, ny = (size_t)oh * ow * cc->cout;
        const size_t nw = (size_t)cc->win.kh * cc->win.kw * cc->cin * cc->cout;
        const uint32_t wdims[4] = {cc->win.kh, cc->win.kw, cc->cin, cc->cout};
        float *x = (float *)malloc(nx * sizeof(float)), *w = (float *)malloc(nw * sizeof(float));
        float bias[16];
        double *wd = (double *)malloc(nw * sizeof(double)), *want = (double *)malloc(ny * sizeof(double));
        emb_builder *b = emb_create();
        emb_node n;
        uint32_t in, out;
        float *y;
        size_t k;
        char what[64];

        em_test_fill(&rng, x, nx, 1.0f);
        em_test_fill(&rng, w, nw, 0.5f);
        em_test_fill(&rng, bias, 16, 1.0f);
        for (k = 0; k < nw; ++k) wd[k] = w[k];
        in = emb_input(b, cc->h, cc->w, cc->cin);
        n = window_node(EM_OP_CONV2D, in, &cc->win, cc->activation);
        n.weight = emb_tensor_f32(b, 4, wdims, w);
        if (cc->bias) n.bias = emb_tensor_f32(b, 1, &cc->cout, bias);
        out = emb_add_op(b, n, cc->cout);
        emb_task_auto(b, "t", in, out);
        y = run_model(b, x, nx, ny, "conv2d_ref");
        em_test_naive_conv2d(x, cc->h, cc->w, cc->cin, wd, cc->cout, cc->bias ? bias : NULL, &cc->win,
                             cc->activation, want);
        snprintf(what, sizeof what, "conv2d case %zu", i);
        if (y) em_test_close(y, want, ny, TOL, what);
        free(y);
        free(x);
        free(w);
        free(wd);
        free(want);
        emb_destroy(b);
    }
}

static void test_depthwise_conv2d(void)
{
    size_t i;
    uint32_t m;
    em_test_rng rng;
    em_test_rng_seed(&rng, 12);
    for (i = 0; i < CONV_CASES; ++i) {
        for (m = 1; m <= 3; ++m) {
            const conv_case *cc = &conv_cases[i];
            const uint32_t oh = em_test_out_size(cc->h, cc->win.kh, cc->win.sh, cc->win.pt, cc->win.pb);
            const uint32_t ow = em_test_out_size(cc->w, cc->win.kw, cc->win.sw, cc->win.pl, cc->win.pr);
            const uint32_t cout = cc->cin * m;
            const size_t nx = (size_t)cc->h * cc->w * cc->cin, ny = (size_t)oh * ow * cout;
            const size_t nw = (size_t)cc->win.kh * cc->win.kw * cout;
            const uint32_t wdims[4] = {cc->win.kh, cc->win.kw, cc->cin, m};
            float *x = (float *)malloc(nx * sizeof(float)), *w = (float *)malloc(nw * sizeof(float));
            float *bias = (float *)malloc(cout * sizeof(float));
            double *want = (double *)malloc(ny * sizeof(double));
            emb_builder *b = emb_create();
            emb_node n;
            uint32_t in, out;
            float *y;
            char what[64];

            em_test_fill(&rng, x, nx, 1.0f);
            em_test_fill(&rng, w, nw, 0.5f);
            em_test_fill(&rng, bias, cout, 1.0f);
            in = emb_input(b, cc->h, cc->w, cc->cin);
            n = window_node(EM_OP_DEPTHWISE_CONV2D, in, &cc->win, cc->activation);
            n.weight = emb_tensor_f32(b, 4, wdims, w);
            if (cc->bias) n.bias = emb_tensor_f32(b, 1, &cout, bias);
            out = emb_add_op(b, n, cout);
            emb_task_auto(b, "t", in, out);
            y = run_model(b, x, nx, ny, "depthwise_conv2d_ref");
            em_test_naive_depthwise(x, cc->h, cc->w, cc->cin, w, m, cc->bias ? bias : NULL, &cc->win, cc->activation,
                                    want);
            snprintf(what, sizeof what, "depthwise case %zu M=%u", i, (unsigned)m);
            if (y) em_test_close(y, want, ny, TOL, what);
            free(y);
            free(x);
            free(w);
            free(bias);
            free(want);
            emb_destroy(b);
        }
    }
}

/* Random indices < C, with C − 1 present so the largest legal index is exercised. */
static uint32_t *random_indices(em_test_rng *rng, size_t n, uint32_t codewords)
{
    uint32_t *idx = (uint32_t *)malloc(n * sizeof(uint32_t));
    size_t i;
    for (i = 0; i < n; ++i) idx[i] = em_test_rand_below(rng, codewords);
    idx[n / 2] = codewords - 1;
    return idx;
}

static void test_lut_conv2d(void)
{
    /* (r, C) pairs: r dividing Cin or not, r > Cin, C a power of two or not, 1..9 index bits */
    static const uint32_t rc[][2] = {{1, 2}, {2, 5}, {3, 3}, {4, 16}, {2, 17}, {16, 64}, {5, 300}};
    size_t i, p;
    int shared;
    em_test_rng rng;
    em_test_rng_seed(&rng, 13);
    for (shared = 0; shared < 2; ++shared) /* per-segment codebooks, then one layer-shared [1, C, r] */
    for (i = 0; i < CONV_CASES; ++i) {
        for (p = 0; p < sizeof rc / sizeof rc[0]; ++p) {
            const conv_case *cc = &conv_cases[i];
            const uint32_t r = rc[p][0], C = rc[p][1];
            /* codebooks shared between tasks go deeper; a layer-shared one has one segment */
            const uint32_t S = (cc->cin + r - 1) / r, S_cb = shared ? 1u : S + (uint32_t)(p % 3);
            const uint32_t taps = cc->win.kh * cc->win.kw;
            const uint32_t oh = em_test_out_size(cc->h, cc->win.kh, cc->win.sh, cc->win.pt, cc->win.pb);
            const uint32_t ow = em_test_out_size(cc->w, cc->win.kw, cc->win.sw, cc->win.pl, cc->win.pr);
            const size_t nx = (size_t)cc->h * cc->w * cc->cin, ny = (size_t)oh * ow * cc->cout;
            const size_t ncb = (size_t)S_cb * C * r, nidx = (size_t)taps * S * cc->cout;
            const uint32_t cb_dims[3] = {S_cb, C, r};
            const uint32_t idx_dims[4] = {cc->win.kh, cc->win.kw, S, cc->cout};
            float *x = (float *)malloc(nx * sizeof(float)), *cb = (float *)malloc(ncb * sizeof(float));
            uint32_t *idx = random_indices(&rng, nidx, C);
            float bias[16];
            double *want = (double *)malloc(ny * sizeof(double)), *wd;
            emb_builder *b = emb_create();
            emb_node n;
            uint32_t in, out;
            float *y;
            char what[80];

            em_test_fill(&rng, x, nx, 1.0f);
            em_test_fill(&rng, cb, ncb, 0.5f);
            em_test_fill(&rng, bias, 16, 1.0f);
            in = emb_input(b, cc->h, cc->w, cc->cin);
            n = window_node(EM_OP_LUT_CONV2D, in, &cc->win, cc->activation);
            n.seg_len = r;
            n.codewords = C;
            n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
            n.index = emb_tensor_idx(b, 4, idx_dims, em_index_bits(C), idx);
            if (cc->bias) n.bias = emb_tensor_f32(b, 1, &cc->cout, bias);
            out = emb_add_op(b, n, cc->cout);
            emb_task_auto(b, "t", in, out);
            y = run_model(b, x, nx, ny, "lut_conv2d_ref");
            /* independent path: decode the weights, then a plain convolution */
            wd = em_test_decode_lut_shared(cb, C, r, idx, taps, cc->cin, cc->cout, shared);
            em_test_naive_conv2d(x, cc->h, cc->w, cc->cin, wd, cc->cout, cc->bias ? bias : NULL, &cc->win,
                                 cc->activation, want);
            snprintf(what, sizeof what, "lut_conv2d case %zu r=%u C=%u%s", i, (unsigned)r, (unsigned)C,
                     shared ? " shared" : "");
            if (y) em_test_close(y, want, ny, TOL, what);
            free(y);
            free(x);
            free(cb);
            free(idx);
            free(wd);
            free(want);
            emb_destroy(b);
        }
    }
}

static void test_dense_and_lut_dense(void)
{
    /* input shape, Out, r, C (for LUT_DENSE) */
    static const uint32_t cases[][6] = {
        {1, 1, 13, 7, 4, 8},   {2, 3, 5, 4, 7, 300}, {1, 1, 1, 3, 1, 2},
        {3, 3, 2, 5, 256, 3},  {1, 1, 3, 2, 1, 65536}, {4, 4, 8, 10, 16, 33},
    };
    size_t i;
    uint32_t act;
    int shared;
    em_test_rng rng;
    em_test_rng_seed(&rng, 14);
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        for (act = EM_ACT_NONE; act <= EM_ACT_RELU6; ++act) {
            const uint32_t h = cases[i][0], w = cases[i][1], c = cases[i][2], out_count = cases[i][3];
            const uint32_t r = cases[i][4], C = cases[i][5];
            const uint32_t in_count = h * w * c, S = (in_count + r - 1) / r;
            const uint32_t wdims[2] = {in_count, out_count}, cb_dims[3] = {S + 1, C, r}, idx_dims[2] = {S, out_count};
            const uint32_t shared_dims[3] = {1, C, r}; /* a layer-shared codebook: cb's first C·r floats */
            const size_t ncb = (size_t)(S + 1) * C * r;
            float *x = (float *)malloc(in_count * sizeof(float));
            float *wt = (float *)malloc((size_t)in_count * out_count * sizeof(float));
            float *cb = (float *)malloc(ncb * sizeof(float));
            uint32_t *idx = random_indices(&rng, (size_t)S * out_count, C);
            double *wd = (double *)malloc((size_t)in_count * out_count * sizeof(double)), *wl;
            double want[16];
            float bias[16];
            emb_builder *b;
            emb_node n;
            uint32_t in, out;
            float *y;
            size_t k;
            char what[80];

            em_test_fill(&rng, x, in_count, 2.0f);
            em_test_fill(&rng, wt, (size_t)in_count * out_count, 1.0f);
            em_test_fill(&rng, cb, ncb, 1.0f);
            em_test_fill(&rng, bias, 16, 1.0f);
            for (k = 0; k < (size_t)in_count * out_count; ++k) wd[k] = wt[k];

            b = emb_create(); /* DENSE over a non-flat input: In = h·w·c */
            in = emb_input(b, h, w, c);
            n = emb_node_init(EM_OP_DENSE, in);
            n.activation = act;
            n.weight = emb_tensor_f32(b, 2, wdims, wt);
            n.bias = emb_tensor_f32(b, 1, &out_count, bias);
            out = emb_add_op(b, n, out_count);
            emb_task_auto(b, "t", in, out);
            y = run_model(b, x, in_count, out_count, "dense_ref");
            em_test_naive_dense(x, in_count, wd, out_count, bias, act, want);
            snprintf(what, sizeof what, "dense case %zu act %u", i, (unsigned)act);
            if (y) em_test_close(y, want, out_count, TOL, what);
            free(y);
            emb_destroy(b);

            for (shared = 0; shared < 2; ++shared) { /* per-segment, then the same indices over [1, C, r] */
                if (shared && S == 1) continue;
                b = emb_create();
                in = emb_input(b, h, w, c);
                n = emb_node_init(EM_OP_LUT_DENSE, in);
                n.activation = act;
                n.seg_len = r;
                n.codewords = C;
                n.weight = emb_tensor_f32(b, 3, shared ? shared_dims : cb_dims, cb);
                n.index = emb_tensor_idx(b, 2, idx_dims, em_index_bits(C), idx);
                if (act != EM_ACT_RELU) n.bias = emb_tensor_f32(b, 1, &out_count, bias);
                out = emb_add_op(b, n, out_count);
                emb_task_auto(b, "t", in, out);
                y = run_model(b, x, in_count, out_count, "lut_dense_ref");
                wl = em_test_decode_lut_shared(cb, C, r, idx, 1, in_count, out_count, shared);
                em_test_naive_dense(x, in_count, wl, out_count, act != EM_ACT_RELU ? bias : NULL, act, want);
                snprintf(what, sizeof what, "lut_dense%s case %zu r=%u C=%u act %u", shared ? " shared" : "", i,
                         (unsigned)r, (unsigned)C, (unsigned)act);
                if (y) em_test_close(y, want, out_count, TOL, what);
                free(y);
                free(wl);
                emb_destroy(b);
            }

            free(x);
            free(wt);
            free(cb);
            free(idx);
            free(wd);
        }
    }
}

static void test_pools(void)
{
    /* h, w, c, window */
    static const struct {
        uint32_t h, w, c;
        em_test_window win;
    } cases[] = {
        {8, 8, 3, {2, 2, 2, 2, 0, 0, 0, 0}}, /* classic 2×2/2 */
        {7, 9, 2, {3, 3, 2, 2, 1, 1, 1, 1}}, /* 'same' with border cells */
        {5, 6, 4, {3, 2, 1, 1, 1, 0, 1, 1}}, /* stride 1, asymmetric pads */
        {9, 9, 1, {2, 2, 3, 3, 1, 1, 1, 1}}, /* stride larger than the kernel */
        {3, 3, 5, {3, 3, 1, 1, 2, 2, 2, 2}}, /* windows that hold a single input cell */
        {1, 7, 2, {1, 4, 1, 3, 0, 2, 0, 1}},
    };
    size_t i;
    int average;
    em_test_rng rng;
    em_test_rng_seed(&rng, 15);
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        for (average = 0; average <= 1; ++average) {
            const em_test_window *win = &cases[i].win;
            const uint32_t h = cases[i].h, w = cases[i].w, c = cases[i].c;
            const uint32_t oh = em_test_out_size(h, win->kh, win->sh, win->pt, win->pb);
            const uint32_t ow = em_test_out_size(w, win->kw, win->sw, win->pl, win->pr);
            const size_t nx = (size_t)h * w * c, ny = (size_t)oh * ow * c;
            float *x = (float *)malloc(nx * sizeof(float));
            double *want = (double *)malloc(ny * sizeof(double));
            const uint32_t act = (uint32_t)i % 3u;
            emb_builder *b = emb_create();
            uint32_t in, out;
            float *y;
            char what[64];

            em_test_fill(&rng, x, nx, 8.0f); /* negative everywhere in places: padding must not read as 0 */
            in = emb_input(b, h, w, c);
            out = emb_add_op(b, window_node(average ? EM_OP_AVG_POOL : EM_OP_MAX_POOL, in, win, act), 0);
            emb_task_auto(b, "t", in, out);
            y = run_model(b, x, nx, ny, average ? "avg_pool_ref" : "max_pool_ref");
            em_test_naive_pool(x, h, w, c, win, average, act, want);
            snprintf(what, sizeof what, "%s case %zu", average ? "avg_pool" : "max_pool", i);
            if (y) em_test_close(y, want, ny, TOL, what);
            free(y);
            free(x);
            free(want);
            emb_destroy(b);
        }
    }
}

static void test_global_pool_reshape_activation(void)
{
    static const uint32_t shapes[][3] = {{7, 5, 3}, {1, 1, 4}, {2, 9, 1}};
    size_t i, k, p;
    em_test_rng rng;
    em_test_rng_seed(&rng, 16);
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        const uint32_t h = shapes[i][0], w = shapes[i][1], c = shapes[i][2];
        const size_t nx = (size_t)h * w * c;
        float *x = (float *)malloc(nx * sizeof(float));
        double *want = (double *)malloc(nx * sizeof(double));
        uint32_t act;
        emb_builder *b;
        uint32_t in, out;
        emb_node n;
        float *y;

        em_test_fill(&rng, x, nx, 10.0f);

        b = emb_create();
        in = emb_input(b, h, w, c);
        n = emb_node_init(EM_OP_GLOBAL_AVG_POOL, in);
        out = emb_add_op(b, n, 0);
        emb_task_auto(b, "t", in, out);
        y = run_model(b, x, nx, c, "global_avg_pool_ref");
        for (k = 0; k < c; ++k) {
            double sum = 0.0;
            for (p = 0; p < (size_t)h * w; ++p) sum += (double)x[p * c + k];
            want[k] = sum / (double)(h * w);
        }
        if (y) em_test_close(y, want, c, TOL, "global_avg_pool");
        free(y);
        emb_destroy(b);

        for (act = EM_ACT_NONE; act <= EM_ACT_RELU6; ++act) {
            b = emb_create();
            in = emb_input(b, h, w, c);
            n = emb_node_init(EM_OP_RESHAPE, in);
            n.activation = act;
            out = emb_add_op(b, n, 0); /* flatten to (1, 1, h·w·c) */
            emb_task_auto(b, "t", in, out);
            y = run_model(b, x, nx, nx, "reshape_ref");
            for (k = 0; k < nx; ++k) want[k] = em_test_activate((double)x[k], act);
            if (y) em_test_close(y, want, nx, 0.0, "reshape");
            free(y);
            emb_destroy(b);

            b = emb_create();
            in = emb_input(b, h, w, c);
            n = emb_node_init(EM_OP_ACTIVATION, in);
            n.activation = act;
            out = emb_add_op(b, n, 0);
            emb_task_auto(b, "t", in, out);
            y = run_model(b, x, nx, nx, "activation_ref");
            if (y) em_test_close(y, want, nx, 0.0, "activation");
            free(y);
            emb_destroy(b);
        }
        free(x);
        free(want);
    }
}

static void test_crc32_and_index_bits(void)
{
    static const uint32_t bits_of[][2] = {{2, 1},  {3, 2},   {4, 2},   {5, 3},     {8, 3},    {9, 4},
                                          {17, 5}, {256, 8}, {257, 9}, {300, 9}, {65535, 16}, {65536, 16}};
    uint8_t data[1000];
    em_test_rng rng;
    size_t i;
    em_test_rng_seed(&rng, 17);
    CHECK(em_crc32("", 0) == 0u);
    CHECK(em_crc32("123456789", 9) == 0xCBF43926u); /* the standard check value (zlib.crc32) */
    for (i = 0; i < sizeof data; ++i) data[i] = (uint8_t)em_test_rand_u32(&rng);
    for (i = 0; i <= sizeof data; i += 37) CHECK(em_crc32(data, i) == emb_crc32(data, i));
    for (i = 0; i < sizeof bits_of / sizeof bits_of[0]; ++i)
        CHECKF(em_index_bits(bits_of[i][0]) == bits_of[i][1], "index bits of C=%u: %u, expected %u",
               (unsigned)bits_of[i][0], (unsigned)em_index_bits(bits_of[i][0]), (unsigned)bits_of[i][1]);
}

static void test_bit_unpack(void)
{
    em_test_rng rng;
    uint32_t bits;
    em_test_rng_seed(&rng, 18);
    for (bits = 1; bits <= 16; ++bits) {
        enum { N = 53 };
        uint32_t values[N], max = 0;
        uint8_t packed[N * 2 + 1];
        em_tensor t;
        size_t i, k;
        memset(packed, 0, sizeof packed);
        for (i = 0; i < N; ++i) {
            values[i] = em_test_rand_u32(&rng) & ((1u << bits) - 1u);
            if (values[i] > max) max = values[i];
            for (k = 0; k < bits; ++k) /* FORMAT.md: stream bit i·b + k is bit (i·b + k) mod 8 of byte /8 */
                if ((values[i] >> k) & 1u) packed[(i * bits + k) / 8] |= (uint8_t)(1u << ((i * bits + k) % 8));
        }
        for (i = 0; i < N; ++i)
            if (!CHECKF(em_idx_get(packed, bits, i) == values[i], "bits %u element %zu: %u, expected %u",
                        (unsigned)bits, i, (unsigned)em_idx_get(packed, bits, i), (unsigned)values[i]))
                break;
        memset(&t, 0, sizeof t);
        t.data = packed;
        t.bits = bits;
        t.numel = N;
        CHECK(em_idx_max(&t) == max);
    }
    /* a hand-checked byte: 3-bit values 5, 2, 7 -> bits 101 010 111 LSB first -> 0b11010101 0b1 */
    {
        const uint8_t bytes[2] = {0xD5, 0x01};
        CHECK(em_idx_get(bytes, 3, 0) == 5);
        CHECK(em_idx_get(bytes, 3, 1) == 2);
        CHECK(em_idx_get(bytes, 3, 2) == 7);
    }
}

int main(void)
{
    test_crc32_and_index_bits();
    test_bit_unpack();
    test_conv2d();
    test_depthwise_conv2d();
    test_lut_conv2d();
    test_dense_and_lut_dense();
    test_pools();
    test_global_pool_reshape_activation();
    return em_test_summary("test_kernels");
}
