/* NaN and ±Inf (docs/FORMAT.md "Non-finite values"): the reference kernels follow the spec, and every
 * kernel of every kernel set this CPU runs (forced onto the node as in test_fast_kernels.c) gives the same
 * class of result per output: NaN where the reference gives NaN, the same infinity where it gives one,
 * and a finite value within the parity tolerance elsewhere.
 *
 *   relu(NaN) = NaN, relu(+Inf) = +Inf, relu(-Inf) = 0, relu(-0) = +0; relu6(NaN) = NaN, relu6(+Inf) = 6
 *   max pool: a NaN in the window gives NaN; avg pools and every sum: IEEE-754
 *   int8 tables: a NaN or infinite table entry makes every output of the node NaN
 *
 * Before NaN semantics were written down, the reference and the fast ReLU (x > 0 ? x : 0, maxps(v, 0))
 * turned NaN into 0, and max pool kept NaN only when it was the window's first cell. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_internal.h"
#include "em_kernels.h"
#include "em_test_builder.h"
#include "em_test_util.h"

#define TOL 1e-5

typedef struct one_node {
    uint32_t op, h, w, cin, cout, k, stride, pad, r, C, flags, activation;
} one_node;

static uint32_t index_bits(uint32_t codewords)
{
    uint32_t bits = 1;
    while ((1u << bits) < codewords) ++bits;
    return bits;
}

static uint8_t *build(const one_node *c, size_t *size, size_t *nx, size_t *ny)
{
    emb_builder *b = emb_create();
    em_test_rng rng;
    emb_node n;
    uint32_t in, out, oh, ow, oc, out_c = c->cout;
    const int flat = c->op == EM_OP_DENSE || c->op == EM_OP_LUT_DENSE;
    uint8_t *file;
    em_test_rng_seed(&rng, 7u + c->op * 31u + c->cin);
    in = flat ? emb_input(b, 1, 1, c->cin) : emb_input(b, c->h, c->w, c->cin);
    n = emb_node_init(c->op, in);
    n.activation = c->activation;
    n.flags = c->flags;
    if (!flat && c->op != EM_OP_ACTIVATION && c->op != EM_OP_RESHAPE && c->op != EM_OP_GLOBAL_AVG_POOL) {
        n.kernel_h = n.kernel_w = c->k;
        n.stride_h = n.stride_w = c->stride;
        n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = c->pad;
    }
    if (c->op == EM_OP_CONV2D || c->op == EM_OP_DENSE || c->op == EM_OP_DEPTHWISE_CONV2D) {
        const uint32_t dims4[4] = {c->k, c->k, c->cin, c->cout}, dims2[2] = {c->cin, c->cout};
        const size_t count = flat ? (size_t)c->cin * c->cout : (size_t)c->k * c->k * c->cin * c->cout;
        float *w = (float *)malloc(count * sizeof(float));
        em_test_fill(&rng, w, count, 0.2f);
        n.weight = flat ? emb_tensor_f32(b, 2, dims2, w) : emb_tensor_f32(b, 4, dims4, w);
        free(w);
        if (c->op == EM_OP_DEPTHWISE_CONV2D) out_c = c->cin * c->cout;
    } else if (c->op == EM_OP_LUT_CONV2D || c->op == EM_OP_LUT_DENSE) {
        const uint32_t S = (c->cin + c->r - 1) / c->r, taps = flat ? 1 : c->k * c->k;
        const uint32_t cb_dims[3] = {S, c->C, c->r}, idx4[4] = {c->k, c->k, S, c->cout}, idx2[2] = {S, c->cout};
        const size_t cb_count = (size_t)S * c->C * c->r, idx_count = (size_t)taps * S * c->cout;
        float *cb = (float *)malloc(cb_count * sizeof(float));
        uint32_t *idx = (uint32_t *)malloc(idx_count * sizeof(uint32_t));
        size_t i;
        em_test_fill(&rng, cb, cb_count, 0.3f);
        for (i = 0; i < idx_count; ++i) idx[i] = em_test_rand_below(&rng, c->C);
        n.seg_len = c->r;
        n.codewords = c->C;
        n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
        n.index = flat ? emb_tensor_idx(b, 2, idx2, index_bits(c->C), idx)
                       : emb_tensor_idx(b, 4, idx4, index_bits(c->C), idx);
        free(cb);
        free(idx);
    }
    out = emb_add_op(b, n, out_c);
    emb_task_auto(b, "t", in, out);
    emb_value_shape(b, out, &oh, &ow, &oc);
    file = emb_finish(b, size);
    emb_destroy(b);
    *nx = flat ? c->cin : (size_t)c->h * c->w * c->cin;
    *ny = (size_t)oh * ow * oc;
    return file;
}

static int run(const uint8_t *file, size_t size, uint32_t set, const em_kernel *force, const float *x, size_t nx,
               float *y, size_t ny, const char *what)
{
    em_model *model = NULL;
    em_context *ctx = NULL;
    em_error err;
    void *memory = NULL;
    int ok = 0;
    em_status st = em_model_load_forced(file, size, NULL, set, force, &model, &err);
    if (CHECKF(st == EM_STATUS_OK, "%s: load: %s", what, err.message)) {
        memory = malloc(em_context_size(model));
        st = em_context_init(model, memory, em_context_size(model), &ctx, &err);
        if (CHECKF(st == EM_STATUS_OK, "%s: context: %s", what, err.message)) {
            memset(y, 0x55, ny * sizeof(float));
            st = em_run_task(ctx, 0, x, nx, y, ny, &err);
            ok = CHECKF(st == EM_STATUS_OK, "%s: run: %s", what, err.message);
        }
    }
    free(memory);
    em_model_free(model);
    return ok;
}

/* Same class per output (NaN / same infinity / finite), finite values within the parity tolerance. */
static int same_class(const float *got, const float *want, size_t n, const char *what)
{
    double scale = 0.0;
    size_t i;
    for (i = 0; i < n; ++i)
        if (isfinite(want[i]) && fabs((double)want[i]) > scale) scale = fabs((double)want[i]);
    for (i = 0; i < n; ++i) {
        int ok;
        if (isnan(want[i])) ok = isnan(got[i]);
        else if (isinf(want[i])) ok = got[i] == want[i];
        else ok = isfinite(got[i]) && fabs((double)got[i] - (double)want[i]) <= TOL * (1.0 + scale);
        if (!CHECKF(ok, "%s: output %zu is %.9g, reference %.9g", what, i, (double)got[i], (double)want[i])) return 0;
    }
    return 1;
}

/* The reference, then every kernel of every available set for this node, on input x. `want` receives the
 * reference output. */
static void parity(const one_node *c, const char *name, const float *x_in, size_t x_len, float *want_out)
{
    size_t size, nx, ny;
    uint8_t *file = build(c, &size, &nx, &ny);
    float *x = (float *)malloc(nx * sizeof(float)), *want = (float *)malloc(ny * sizeof(float));
    float *got = (float *)malloc(ny * sizeof(float));
    em_test_rng rng;
    size_t i;
    em_test_rng_seed(&rng, 99);
    em_test_fill(&rng, x, nx, 1.0f);
    for (i = 0; i < x_len && i < nx; ++i)
        if (x_in[i] != 12345.0f) x[i] = x_in[i]; /* 12345: keep the random value */
    if (run(file, size, EM_KERNELS_REFERENCE, NULL, x, nx, want, ny, name)) {
        em_test_set_kernel kernels[EM_TEST_MAX_SET_KERNELS];
        const size_t count = em_test_available_kernels(c->op, NULL, kernels, EM_TEST_MAX_SET_KERNELS);
        size_t k;
        if (want_out != NULL) memcpy(want_out, want, ny * sizeof(float));
        for (k = 0; k < count; ++k) {
            const em_kernel *kernel = kernels[k].kernel;
            char what[200];
            em_model *probe = NULL;
            em_error err;
            int supported = 1;
            if (kernel->supports != NULL) {
                if (em_model_load_forced(file, size, NULL, EM_KERNELS_REFERENCE, NULL, &probe, &err) != EM_STATUS_OK)
                    continue;
                supported = kernel->supports(&probe->nodes[0]);
                em_model_free(probe);
            }
            if (!supported) continue;
            snprintf(what, sizeof what, "%s, kernel %s", name, kernel->name);
            if (run(file, size, kernels[k].set, kernel, x, nx, got, ny, what)) same_class(got, want, ny, what);
        }
    }
    free(x);
    free(want);
    free(got);
    free(file);
}

static int is_pos_zero(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits == 0;
}

/* relu / relu6 element by element, as the spec writes them (ACTIVATION and RESHAPE nodes). */
static void test_activations(void)
{
    static const float x[9] = {NAN, INFINITY, -INFINITY, -1.0f, -0.0f, 0.5f, 3.0f, 7.0f, -NAN};
    static const float relu[9] = {NAN, INFINITY, 0.0f, 0.0f, 0.0f, 0.5f, 3.0f, 7.0f, NAN};
    static const float relu6[9] = {NAN, 6.0f, 0.0f, 0.0f, 0.0f, 0.5f, 3.0f, 6.0f, NAN};
    const uint32_t ops[2] = {EM_OP_ACTIVATION, EM_OP_RESHAPE};
    uint32_t o, i;
    for (o = 0; o < 2; ++o) {
        one_node c = {0, 1, 3, 3, 0, 1, 1, 0, 0, 0, 0, EM_ACT_RELU};
        float y[9];
        c.op = ops[o];
        parity(&c, "relu", x, 9, y);
        for (i = 0; i < 9; ++i)
            CHECKF(isnan(relu[i]) ? isnan(y[i]) : (y[i] == relu[i] && (relu[i] != 0.0f || is_pos_zero(y[i]))),
                   "%s relu(%g) = %g, expected %g", em_op_name(c.op), (double)x[i], (double)y[i], (double)relu[i]);
        c.activation = EM_ACT_RELU6;
        parity(&c, "relu6", x, 9, y);
        for (i = 0; i < 9; ++i)
            CHECKF(isnan(relu6[i]) ? isnan(y[i]) : (y[i] == relu6[i] && (relu6[i] != 0.0f || is_pos_zero(y[i]))),
                   "%s relu6(%g) = %g, expected %g", em_op_name(c.op), (double)x[i], (double)y[i], (double)relu6[i]);
    }
}

/* 2x2 windows, stride 2, one channel: NaN anywhere in a window wins; Inf and -Inf as values. */
static void test_pools(void)
{
    /* a 2x8 image: windows {NaN,1 | 2,3}, {1,NaN | 2,3}, {1,2 | 3,NaN}, {Inf,NaN | 0,0}, ... */
    static const float x[16] = {NAN, 1, 1, NAN, 1, 2, INFINITY, NAN, 2, 3, 2, 3, 3, NAN, 0, 0};
    static const float x2[8] = {-INFINITY, -INFINITY, INFINITY, -1, -INFINITY, -INFINITY, 2, 3};
    one_node c = {EM_OP_MAX_POOL, 2, 8, 1, 0, 2, 2, 0, 0, 0, 0, EM_ACT_NONE};
    float y[4];
    uint32_t i;
    parity(&c, "max pool with NaN", x, 16, y);
    for (i = 0; i < 4; ++i) CHECKF(isnan(y[i]), "max pool window %u with a NaN gives %g", (unsigned)i, (double)y[i]);
    c.w = 4;
    parity(&c, "max pool of infinities", x2, 8, y);
    CHECKF(y[0] == -INFINITY && y[1] == INFINITY, "max pool of infinities: %g %g", (double)y[0], (double)y[1]);
    c.activation = EM_ACT_RELU;
    parity(&c, "max pool + relu of infinities", x2, 8, y);
    CHECKF(is_pos_zero(y[0]) && y[1] == INFINITY, "max pool + relu: %g %g", (double)y[0], (double)y[1]);
    c.w = 8;
    c.op = EM_OP_AVG_POOL;
    parity(&c, "avg pool with NaN", x, 16, y);
    for (i = 0; i < 4; ++i) CHECKF(isnan(y[i]), "avg pool window %u with a NaN gives %g", (unsigned)i, (double)y[i]);
    c.op = EM_OP_GLOBAL_AVG_POOL;
    parity(&c, "global avg pool with NaN", x, 16, y);
    CHECK(isnan(y[0]));
    /* wider, with channel counts off the vector widths and a NaN in one channel only */
    {
        one_node w = {EM_OP_MAX_POOL, 6, 6, 19, 0, 3, 2, 1, 0, 0, 0, EM_ACT_RELU6};
        float xin[6 * 6 * 19];
        for (i = 0; i < 6 * 6 * 19; ++i) xin[i] = 12345.0f;
        xin[7 * 19 + 4] = NAN;
        xin[20 * 19 + 18] = INFINITY;
        xin[30 * 19 + 0] = -INFINITY;
        parity(&w, "max pool 6x6x19 relu6", xin, 6 * 6 * 19, NULL);
        w.op = EM_OP_AVG_POOL;
        parity(&w, "avg pool 6x6x19 relu6", xin, 6 * 6 * 19, NULL);
    }
}

/* Matrix-product ops with a fused activation: NaN and ±Inf inputs reach the epilogue of every kernel. */
static void test_products(void)
{
    static const one_node cases[] = {
        {EM_OP_DENSE, 1, 1, 33, 17, 1, 1, 0, 0, 0, 0, EM_ACT_RELU},
        {EM_OP_DENSE, 1, 1, 300, 70, 1, 1, 0, 0, 0, 0, EM_ACT_RELU6},
        {EM_OP_CONV2D, 7, 7, 33, 17, 1, 1, 0, 0, 0, 0, EM_ACT_RELU},
        {EM_OP_CONV2D, 9, 7, 5, 19, 3, 1, 1, 0, 0, 0, EM_ACT_RELU6},
        {EM_OP_DEPTHWISE_CONV2D, 9, 11, 19, 1, 3, 2, 1, 0, 0, 0, EM_ACT_RELU},
        {EM_OP_DEPTHWISE_CONV2D, 16, 16, 16, 1, 3, 1, 1, 0, 0, 0, EM_ACT_RELU6},
        {EM_OP_DEPTHWISE_CONV2D, 6, 6, 17, 3, 5, 1, 2, 0, 0, 0, EM_ACT_RELU},
        {EM_OP_LUT_CONV2D, 9, 7, 5, 6, 3, 1, 1, 2, 5, 0, EM_ACT_RELU},
        {EM_OP_LUT_CONV2D, 8, 8, 24, 20, 3, 1, 1, 8, 64, 0, EM_ACT_RELU6},
        {EM_OP_LUT_CONV2D, 8, 8, 1, 32, 5, 1, 0, 1, 32, 0, EM_ACT_RELU}, /* decoded weights */
        {EM_OP_LUT_DENSE, 1, 1, 96, 40, 1, 1, 0, 16, 32, 0, EM_ACT_RELU},
        {EM_OP_LUT_DENSE, 1, 1, 70, 33, 1, 1, 0, 7, 17, 0, EM_ACT_RELU6},
    };
    size_t k, i;
    for (k = 0; k < sizeof cases / sizeof cases[0]; ++k) {
        const one_node *c = &cases[k];
        const size_t nx = (c->op == EM_OP_DENSE || c->op == EM_OP_LUT_DENSE) ? c->cin : (size_t)c->h * c->w * c->cin;
        float *x = (float *)malloc(nx * sizeof(float));
        char name[96];
        uint32_t variant;
        for (variant = 0; variant < 3; ++variant) {
            for (i = 0; i < nx; ++i) x[i] = 12345.0f;
            if (variant == 0) x[nx / 3] = NAN;                                  /* one NaN */
            if (variant == 1) x[nx / 2] = INFINITY;                             /* one +Inf */
            if (variant == 2) x[nx / 5] = INFINITY, x[nx - 1] = -INFINITY;      /* both infinities */
            snprintf(name, sizeof name, "%s %ux%ux%u variant %u", em_op_name(c->op), (unsigned)c->h, (unsigned)c->w,
                     (unsigned)c->cin, (unsigned)variant);
            if (variant == 0 && (c->op == EM_OP_DENSE || c->op == EM_OP_LUT_DENSE)) {
                /* every output of a dense layer reads the NaN: all NaN after relu */
                float *y = (float *)malloc((size_t)c->cout * sizeof(float));
                parity(c, name, x, nx, y);
                for (i = 0; i < c->cout; ++i) CHECKF(isnan(y[i]), "%s: output %zu is %g", name, i, (double)y[i]);
                free(y);
            } else {
                parity(c, name, x, nx, NULL);
            }
        }
        free(x);
    }
}

/* int8 tables: a NaN or infinite table entry leaves no scale, every output is NaN (reference and fast). */
static void test_int8_tables(void)
{
    static const one_node cases[] = {
        {EM_OP_LUT_DENSE, 1, 1, 64, 37, 1, 1, 0, 4, 16, EM_NODE_FLAG_INT8_TABLES, EM_ACT_RELU},
        {EM_OP_LUT_CONV2D, 9, 7, 8, 19, 3, 1, 1, 2, 16, EM_NODE_FLAG_INT8_TABLES, EM_ACT_RELU6},
    };
    size_t k, i;
    uint32_t variant;
    for (k = 0; k < 2; ++k) {
        const one_node *c = &cases[k];
        const size_t nx = c->op == EM_OP_LUT_DENSE ? c->cin : (size_t)c->h * c->w * c->cin;
        const size_t ny = c->op == EM_OP_LUT_DENSE ? c->cout : (size_t)c->h * c->w * c->cout;
        float *x = (float *)malloc(nx * sizeof(float)), *y = (float *)malloc(ny * sizeof(float));
        for (variant = 0; variant < 3; ++variant) {
            char name[96];
            for (i = 0; i < nx; ++i) x[i] = 12345.0f;
            x[nx - 1] = variant == 0 ? NAN : (variant == 1 ? INFINITY : -INFINITY);
            snprintf(name, sizeof name, "int8 %s, input %g", em_op_name(c->op), (double)x[nx - 1]);
            parity(c, name, x, nx, y);
            for (i = 0; i < ny; ++i)
                if (!CHECKF(isnan(y[i]), "%s: output %zu is %g, expected NaN", name, i, (double)y[i])) break;
        }
        /* finite inputs stay finite (the NaN path is not taken by accident) */
        for (i = 0; i < nx; ++i) x[i] = 12345.0f;
        parity(c, "int8 finite", x, nx, y);
        for (i = 0; i < ny; ++i)
            if (!CHECKF(isfinite(y[i]), "int8 finite: output %zu is %g", i, (double)y[i])) break;
        free(x);
        free(y);
    }
}

int main(void)
{
    test_activations();
    test_pools();
    test_products();
    test_int8_tables();
    return em_test_summary("test_nonfinite");
}
