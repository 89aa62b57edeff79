/* Format v2: graphs with branches (docs/FORMAT.md "GRAPH", "Multi-input ops", "Activations").
 *
 *   - every new op and activation against values computed here from the spec's formulas;
 *   - a residual block and a squeeze-and-excite block end to end, on every kernel set, against naive
 *     double-precision references (em_test_util);
 *   - liveness: a branching graph's arena is smaller than all its values together, and a value a branch
 *     still needs survives the other branch's nodes (the result says so);
 *   - v1 files keep loading, and the same chain written as v1 and as v2 gives the same bits;
 *   - hand-made corrupt v2 files (cycle, forward reference, broadcast mismatch, concat of mismatched spatial
 *     sizes, too many inputs, ...) are refused with a message naming the node, the input and the reason. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_internal.h"
#include "em_test_builder.h"
#include "em_test_util.h"

static const uint32_t kernel_sets[] = {EM_KERNELS_REFERENCE, EM_KERNELS_GENERIC, EM_KERNELS_AUTO};
#define KERNEL_SET_COUNT (sizeof kernel_sets / sizeof kernel_sets[0])

/* Loads buf with `kernels`, runs task 0 on `input`, writes its logits to out (classes floats). Returns the
 * status; *version gets the format version. */
static em_status run_file(const uint8_t *buf, size_t size, uint32_t kernels, const float *input, size_t input_count,
                          float *out, size_t classes, uint32_t *version, em_error *err)
{
    em_load_options options;
    em_model *model = NULL;
    em_context *ctx = NULL;
    void *memory;
    em_status st;
    memset(&options, 0, sizeof options);
    options.kernels = kernels;
    st = em_model_load_ex(buf, size, NULL, &options, &model, err);
    if (st != EM_STATUS_OK) return st;
    if (version != NULL) *version = em_model_format_version(model);
    memory = malloc(em_context_size(model));
    st = em_context_init(model, memory, em_context_size(model), &ctx, err);
    if (st == EM_STATUS_OK) st = em_run_task(ctx, 0, input, input_count, out, classes, err);
    free(memory);
    em_model_free(model);
    return st;
}

/* Builds the file, runs it on every kernel set and compares with want (tolerance tol). */
static void expect_outputs(emb_builder *b, const float *input, size_t input_count, const double *want, size_t classes,
                           double tol, const char *what)
{
    size_t size, k;
    uint8_t *buf = emb_finish(b, &size);
    float *out = (float *)malloc(classes * sizeof(float));
    char label[160];
    for (k = 0; k < KERNEL_SET_COUNT; ++k) {
        em_error err;
        em_status st;
        if (!em_kernels_available(kernel_sets[k])) continue;
        memset(&err, 0, sizeof err);
        st = run_file(buf, size, kernel_sets[k], input, input_count, out, classes, NULL, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        snprintf(label, sizeof label, "%s (kernels %s)", what, em_kernels_name(kernel_sets[k]));
        if (st == EM_STATUS_OK) CHECK(em_test_close(out, want, classes, tol, label));
    }
    free(out);
    free(buf);
}

static void fill(float *x, size_t n, uint32_t seed)
{
    em_test_rng rng;
    em_test_rng_seed(&rng, seed);
    em_test_fill(&rng, x, n, 4.0f);
}

/* ---- the activations of FORMAT.md, in double from the formulas ---- */
static double relu6d(double x)
{
    return x <= 0 ? 0 : (x > 6 ? 6 : x);
}

static double spec_activate(double x, uint32_t act)
{
    switch (act) {
    case EM_ACT_RELU: return x <= 0 ? 0 : x;
    case EM_ACT_RELU6: return relu6d(x);
    case EM_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case EM_ACT_HARD_SIGMOID: return relu6d(x + 3) / 6;
    case EM_ACT_HARD_SWISH: return x * relu6d(x + 3) / 6;
    case EM_ACT_SWISH: return x / (1.0 + exp(-x));
    default: return x;
    }
}

static void test_activations(void)
{
    /* the breakpoints of every activation (−3, 0, 3, 6) and values around them, on an ACTIVATION node */
    static const float xs[] = {-9.0f, -3.5f, -3.0f, -2.9f, -1.0f, -0.0f, 0.0f, 0.25f, 1.0f, 2.5f, 3.0f, 5.9f,
                               6.0f, 6.5f, 12.0f, -20.0f, 20.0f, 88.0f, -88.0f, 0.001f};
    const uint32_t n = (uint32_t)(sizeof xs / sizeof xs[0]);
    uint32_t act, i;
    for (act = EM_ACT_NONE; act <= EM_ACT_LAST; ++act) {
        emb_builder *b = emb_create();
        const uint32_t x = emb_input(b, 1, 1, n);
        emb_node node = emb_node_init(EM_OP_ACTIVATION, x);
        double want[32];
        char what[64];
        node.activation = act;
        emb_task_auto(b, "t", x, emb_add_op(b, node, 0));
        for (i = 0; i < n; ++i) want[i] = spec_activate(xs[i], act);
        snprintf(what, sizeof what, "activation %u", (unsigned)act);
        /* piecewise-linear ones are exact up to float rounding; sigmoid/swish use expf (FORMAT.md) */
        expect_outputs(b, xs, n, want, n, act == EM_ACT_SIGMOID || act == EM_ACT_SWISH ? 1e-6 : 1e-7, what);
        emb_destroy(b);
    }
    /* exact values the spec writes down: hard-sigmoid is relu6(x + 3) / 6, so 0 at −3 and 1 at 3 */
    {
        emb_builder *b = emb_create();
        static const float in[] = {-3.0f, 3.0f, 0.0f, -4.0f};
        const uint32_t x = emb_input(b, 1, 1, 4);
        emb_node node = emb_node_init(EM_OP_ACTIVATION, x);
        float out[4];
        uint8_t *buf;
        size_t size;
        em_error err;
        node.activation = EM_ACT_HARD_SIGMOID;
        emb_task_auto(b, "t", x, emb_add_op(b, node, 0));
        buf = emb_finish(b, &size);
        CHECK(run_file(buf, size, EM_KERNELS_REFERENCE, in, 4, out, 4, NULL, &err) == EM_STATUS_OK);
        CHECK(out[0] == 0.0f && out[1] == 1.0f && out[2] == 0.5f && out[3] == 0.0f);
        free(buf);
        emb_destroy(b);
    }
    /* non-finite inputs: FORMAT.md "Non-finite values" */
    {
        const float inf = (float)INFINITY, nan = (float)NAN;
        const float in[3] = {nan, inf, -inf};
        /* per activation: expected class of f(NaN), f(+Inf), f(−Inf): 'n' NaN, 'p' +Inf, else the value */
        static const struct {
            uint32_t act;
            char cls[3];
            float val[3];
        } rows[] = {{EM_ACT_SIGMOID, {'n', 'v', 'v'}, {0, 1.0f, 0.0f}},
                    {EM_ACT_HARD_SIGMOID, {'n', 'v', 'v'}, {0, 1.0f, 0.0f}},
                    {EM_ACT_HARD_SWISH, {'n', 'p', 'n'}, {0, 0, 0}},
                    {EM_ACT_SWISH, {'n', 'p', 'n'}, {0, 0, 0}}};
        size_t r, k;
        for (r = 0; r < sizeof rows / sizeof rows[0]; ++r)
            for (k = 0; k < KERNEL_SET_COUNT; ++k) {
                emb_builder *b = emb_create();
                const uint32_t x = emb_input(b, 1, 1, 3);
                emb_node node = emb_node_init(EM_OP_ACTIVATION, x);
                float out[3];
                uint8_t *buf;
                size_t size;
                em_error err;
                uint32_t j;
                if (!em_kernels_available(kernel_sets[k])) {
                    emb_destroy(b);
                    continue;
                }
                node.activation = rows[r].act;
                emb_task_auto(b, "t", x, emb_add_op(b, node, 0));
                buf = emb_finish(b, &size);
                CHECK(run_file(buf, size, kernel_sets[k], in, 3, out, 3, NULL, &err) == EM_STATUS_OK);
                for (j = 0; j < 3; ++j) {
                    if (rows[r].cls[j] == 'n') CHECKF(out[j] != out[j], "act %u input %u: %g, expected NaN",
                                                      (unsigned)rows[r].act, (unsigned)j, (double)out[j]);
                    else if (rows[r].cls[j] == 'p') CHECKF(out[j] == inf, "act %u input %u: %g, expected +Inf",
                                                           (unsigned)rows[r].act, (unsigned)j, (double)out[j]);
                    else CHECKF(out[j] == rows[r].val[j], "act %u input %u: %g, expected %g", (unsigned)rows[r].act,
                                (unsigned)j, (double)out[j], (double)rows[r].val[j]);
                }
                free(buf);
                emb_destroy(b);
            }
    }
}

/* ---- ADD, CONCAT, MUL, PAD against the spec's formulas ---- */

static void test_add(void)
{
    enum { H = 3, W = 5, C = 7, N = H * W * C };
    emb_builder *b = emb_create();
    const uint32_t x = emb_input(b, H, W, C);
    emb_node relu = emb_node_init(EM_OP_ACTIVATION, x);
    uint32_t r, values[3];
    float in[N];
    double want[N];
    int i;
    relu.activation = EM_ACT_RELU;
    r = emb_add_op(b, relu, 0);
    values[0] = x;
    values[1] = r;
    values[2] = x; /* a value may appear twice */
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, 3, EM_ACT_RELU6));
    fill(in, N, 11);
    for (i = 0; i < N; ++i) {
        const float s = (in[i] + (in[i] <= 0.0f ? 0.0f : in[i])) + in[i]; /* input order, float32 */
        want[i] = relu6d(s);
    }
    expect_outputs(b, in, N, want, N, 0.0, "ADD(x, relu(x), x) + relu6");
    emb_destroy(b);
}

static void test_concat(void)
{
    enum { H = 2, W = 3, C = 3, N = H * W * C };
    emb_builder *b = emb_create();
    const uint32_t x = emb_input(b, H, W, C);
    emb_node relu6 = emb_node_init(EM_OP_ACTIVATION, x);
    emb_node pool = emb_node_init(EM_OP_MAX_POOL, x);
    uint32_t r, p, values[3];
    float in[N];
    double want[H * W * (C + C + C)];
    int y, xx, c, o = 0;
    relu6.activation = EM_ACT_RELU6;
    r = emb_add_op(b, relu6, 0);
    pool.kernel_h = pool.kernel_w = 1; /* a 1x1 max pool: a copy of x, another value of the same size */
    p = emb_add_op(b, pool, 0);
    values[0] = r;
    values[1] = x;
    values[2] = p;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_CONCAT, values, 3, EM_ACT_NONE));
    fill(in, N, 12);
    for (y = 0; y < H; ++y)
        for (xx = 0; xx < W; ++xx) {
            const float *px = in + (y * W + xx) * C;
            for (c = 0; c < C; ++c) want[o++] = relu6d(px[c]);
            for (c = 0; c < C; ++c) want[o++] = px[c];
            for (c = 0; c < C; ++c) want[o++] = px[c];
        }
    expect_outputs(b, in, N, want, (size_t)o, 0.0, "CONCAT(relu6(x), x, pool(x))");
    emb_destroy(b);
}

static void test_mul(void)
{
    enum { H = 3, W = 4, C = 5, N = H * W * C };
    float in[N];
    double want[N];
    int order;
    fill(in, N, 13);
    /* same shape */
    {
        emb_builder *b = emb_create();
        const uint32_t x = emb_input(b, H, W, C);
        emb_node relu = emb_node_init(EM_OP_ACTIVATION, x);
        uint32_t values[2];
        int i;
        relu.activation = EM_ACT_RELU;
        values[0] = x;
        values[1] = emb_add_op(b, relu, 0);
        emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_MUL, values, 2, EM_ACT_NONE));
        for (i = 0; i < N; ++i) want[i] = (double)(in[i] * (in[i] <= 0.0f ? 0.0f : in[i]));
        expect_outputs(b, in, N, want, N, 0.0, "MUL(x, relu(x))");
        emb_destroy(b);
    }
    /* per-channel broadcast (1, 1, C) with (H, W, C), in both orders, with a fused activation */
    for (order = 0; order < 2; ++order) {
        emb_builder *b = emb_create();
        const uint32_t x = emb_input(b, H, W, C);
        const uint32_t s = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, x), 0);
        uint32_t values[2];
        double mean[C];
        float meanf[C];
        int i, c;
        values[order] = x;
        values[1 - order] = s;
        emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_MUL, values, 2, EM_ACT_SIGMOID));
        for (c = 0; c < C; ++c) { /* the pool's float32 sum in pixel order, as the reference computes it */
            float sum = 0.0f;
            for (i = 0; i < H * W; ++i) sum += in[i * C + c];
            meanf[c] = sum / (float)(H * W);
            mean[c] = meanf[c];
        }
        for (i = 0; i < N; ++i) want[i] = spec_activate((double)(in[i] * meanf[i % C]), EM_ACT_SIGMOID);
        (void)mean;
        expect_outputs(b, in, N, want, N, 1e-6, order == 0 ? "MUL(x, gap(x))" : "MUL(gap(x), x)");
        emb_destroy(b);
    }
}

static void test_pad(void)
{
    enum { H = 2, W = 3, C = 2, N = H * W * C, PT = 1, PL = 2, PB = 0, PR = 3 };
    enum { OH = H + PT + PB, OW = W + PL + PR };
    emb_builder *b = emb_create();
    const uint32_t x = emb_input(b, H, W, C);
    emb_node pad = emb_node_init(EM_OP_PAD, x);
    float in[N];
    double want[OH * OW * C];
    int y, xx, c;
    pad.pad_top = PT;
    pad.pad_left = PL;
    pad.pad_bottom = PB;
    pad.pad_right = PR;
    pad.out_h = OH;
    pad.out_w = OW;
    pad.out_c = C;
    pad.activation = EM_ACT_HARD_SIGMOID; /* padding is act(0) = 0.5 */
    emb_task_auto(b, "t", x, emb_add_node(b, &pad));
    fill(in, N, 14);
    for (y = 0; y < OH; ++y)
        for (xx = 0; xx < OW; ++xx)
            for (c = 0; c < C; ++c) {
                const int iy = y - PT, ix = xx - PL;
                const double v = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? (double)in[(iy * W + ix) * C + c] : 0.0;
                want[(y * OW + xx) * C + c] = spec_activate(v, EM_ACT_HARD_SIGMOID);
            }
    expect_outputs(b, in, N, want, OH * OW * C, 1e-7, "PAD (1, 2, 0, 3) + hard-sigmoid");
    emb_destroy(b);
}

/* ---- a residual block and an SE block, end to end ---- */

static uint32_t conv_node(emb_builder *b, em_test_rng *rng, uint32_t input, uint32_t cin, uint32_t cout, uint32_t k,
                          uint32_t stride, uint32_t act, float *w, float *bias)
{
    const uint32_t wdims[4] = {k, k, cin, cout}, bdims[1] = {cout};
    emb_node n = emb_node_init(EM_OP_CONV2D, input);
    em_test_fill(rng, w, (size_t)k * k * cin * cout, 0.5f);
    em_test_fill(rng, bias, cout, 0.2f);
    n.kernel_h = n.kernel_w = k;
    n.stride_h = n.stride_w = stride;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = k / 2;
    n.weight = emb_tensor_f32(b, 4, wdims, w);
    n.bias = emb_tensor_f32(b, 1, bdims, bias);
    n.activation = act;
    return emb_add_op(b, n, cout);
}

static double *to_double(const float *w, size_t n)
{
    double *d = (double *)malloc(n * sizeof *d);
    size_t i;
    for (i = 0; i < n; ++i) d[i] = w[i];
    return d;
}

static void naive_conv(const double *x, uint32_t h, uint32_t w, uint32_t cin, const float *weights, uint32_t cout,
                       const float *bias, uint32_t k, uint32_t act, double *out)
{
    /* em_test_naive_conv2d takes float input: round the double intermediate the way the runtime holds it */
    float *xf = (float *)malloc((size_t)h * w * cin * sizeof *xf);
    double *wd = to_double(weights, (size_t)k * k * cin * cout);
    em_test_window win;
    size_t i;
    for (i = 0; i < (size_t)h * w * cin; ++i) xf[i] = (float)x[i];
    win.kh = win.kw = k;
    win.sh = win.sw = 1;
    win.pt = win.pl = win.pb = win.pr = k / 2;
    em_test_naive_conv2d(xf, h, w, cin, wd, cout, bias, &win, act, out);
    free(xf);
    free(wd);
}

static void test_residual_block(void)
{
    enum { H = 7, W = 5, C = 6, N = H * W * C, CLASSES = 3 };
    emb_builder *b = emb_create();
    em_test_rng rng;
    const uint32_t x = emb_input(b, H, W, C);
    float w1[3 * 3 * C * C], b1[C], w2[C * C], b2[C], wd[C * CLASSES], bd[CLASSES], in[N];
    const uint32_t ddims[2] = {C, CLASSES}, bddims[1] = {CLASSES};
    double xd[N], h1[N], h2[N], sum[N], gap[C], want[CLASSES];
    uint32_t c1, c2, add, values[2];
    emb_node pool, dense;
    int i, c;
    em_test_rng_seed(&rng, 21);
    /* stem conv so the shortcut is a node output (kept alive across the branch), then the block */
    c1 = conv_node(b, &rng, x, C, C, 3, 1, EM_ACT_RELU, w1, b1);
    c2 = conv_node(b, &rng, c1, C, C, 1, 1, EM_ACT_NONE, w2, b2);
    values[0] = c2;
    values[1] = x;
    add = emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_RELU);
    pool = emb_node_init(EM_OP_GLOBAL_AVG_POOL, add);
    dense = emb_node_init(EM_OP_DENSE, emb_add_op(b, pool, 0));
    em_test_fill(&rng, wd, C * CLASSES, 0.5f);
    em_test_fill(&rng, bd, CLASSES, 0.1f);
    dense.weight = emb_tensor_f32(b, 2, ddims, wd);
    dense.bias = emb_tensor_f32(b, 1, bddims, bd);
    emb_task_auto(b, "residual", x, emb_add_op(b, dense, CLASSES));

    em_test_fill(&rng, in, N, 1.0f);
    for (i = 0; i < N; ++i) xd[i] = in[i];
    naive_conv(xd, H, W, C, w1, C, b1, 3, EM_ACT_RELU, h1);
    naive_conv(h1, H, W, C, w2, C, b2, 1, EM_ACT_NONE, h2);
    for (i = 0; i < N; ++i) sum[i] = spec_activate(h2[i] + xd[i], EM_ACT_RELU);
    for (c = 0; c < C; ++c) {
        gap[c] = 0;
        for (i = 0; i < H * W; ++i) gap[c] += sum[i * C + c];
        gap[c] /= H * W;
    }
    for (i = 0; i < CLASSES; ++i) {
        want[i] = bd[i];
        for (c = 0; c < C; ++c) want[i] += gap[c] * (double)wd[c * CLASSES + i];
    }
    expect_outputs(b, in, N, want, CLASSES, 1e-5, "residual block");
    emb_destroy(b);
}

static void test_se_block(void)
{
    enum { H = 4, W = 3, C = 6, R = 2, N = H * W * C };
    emb_builder *b = emb_create();
    em_test_rng rng;
    const uint32_t x = emb_input(b, H, W, C);
    float wa[C * R], ba[R], wb[R * C], bb[C], in[N];
    const uint32_t adims[2] = {C, R}, bdims[2] = {R, C}, rdim[1] = {R}, cdim[1] = {C};
    double gap[C], squeeze[R], excite[C], want[N];
    emb_node pool, da, db;
    uint32_t s, values[2];
    int i, c, r;
    em_test_rng_seed(&rng, 22);
    pool = emb_node_init(EM_OP_GLOBAL_AVG_POOL, x);
    da = emb_node_init(EM_OP_DENSE, emb_add_op(b, pool, 0));
    em_test_fill(&rng, wa, C * R, 0.8f);
    em_test_fill(&rng, ba, R, 0.2f);
    da.weight = emb_tensor_f32(b, 2, adims, wa);
    da.bias = emb_tensor_f32(b, 1, rdim, ba);
    da.activation = EM_ACT_RELU;
    db = emb_node_init(EM_OP_DENSE, emb_add_op(b, da, R));
    em_test_fill(&rng, wb, R * C, 0.8f);
    em_test_fill(&rng, bb, C, 0.2f);
    db.weight = emb_tensor_f32(b, 2, bdims, wb);
    db.bias = emb_tensor_f32(b, 1, cdim, bb);
    db.activation = EM_ACT_HARD_SIGMOID; /* MobileNetV3's gate */
    s = emb_add_op(b, db, C);
    values[0] = x;
    values[1] = s;
    emb_task_auto(b, "se", x, emb_add_multi(b, EM_OP_MUL, values, 2, EM_ACT_HARD_SWISH));

    em_test_fill(&rng, in, N, 2.0f);
    for (c = 0; c < C; ++c) {
        gap[c] = 0;
        for (i = 0; i < H * W; ++i) gap[c] += (double)in[i * C + c];
        gap[c] /= H * W;
    }
    for (r = 0; r < R; ++r) {
        squeeze[r] = ba[r];
        for (c = 0; c < C; ++c) squeeze[r] += gap[c] * (double)wa[c * R + r];
        squeeze[r] = spec_activate(squeeze[r], EM_ACT_RELU);
    }
    for (c = 0; c < C; ++c) {
        excite[c] = bb[c];
        for (r = 0; r < R; ++r) excite[c] += squeeze[r] * (double)wb[r * C + c];
        excite[c] = spec_activate(excite[c], EM_ACT_HARD_SIGMOID);
    }
    for (i = 0; i < N; ++i) want[i] = spec_activate((double)in[i] * excite[i % C], EM_ACT_HARD_SWISH);
    expect_outputs(b, in, N, want, N, 1e-5, "squeeze-and-excite block");
    emb_destroy(b);
}

/* ---- liveness ---- */

static void test_liveness(void)
{
    /* t0 = copy(x); a chain of 6 activations from t0; ADD(chain end, t0): t0 lives across the whole chain,
     * the chain's values do not, so the arena holds about 3 values, not 8. */
    enum { H = 16, W = 16, C = 8, N = H * W * C };
    emb_builder *b = emb_create();
    const uint32_t x = emb_input(b, H, W, C);
    emb_node copy = emb_node_init(EM_OP_ACTIVATION, x);
    uint32_t t0, v, values[2], k;
    float in[N];
    double want[N];
    size_t size, all_values = 0;
    uint8_t *buf;
    em_model *model = NULL;
    em_error err;
    em_status st;
    int i;
    t0 = emb_add_op(b, copy, 0);
    v = t0;
    for (k = 0; k < 6; ++k) {
        emb_node a = emb_node_init(EM_OP_ACTIVATION, v);
        a.activation = k % 2 ? EM_ACT_RELU6 : EM_ACT_RELU;
        v = emb_add_op(b, a, 0);
    }
    values[0] = v;
    values[1] = t0;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_NONE));
    fill(in, N, 31);
    for (i = 0; i < N; ++i) want[i] = relu6d((double)in[i]) + (double)in[i];
    expect_outputs(b, in, N, want, N, 1e-7, "a value kept alive across a branch");

    buf = emb_finish(b, &size);
    st = em_model_load(buf, size, NULL, &model, &err); /* CHECK_STATUS evaluates its argument more than once */
    CHECK_STATUS(st, EM_STATUS_OK, err);
    if (model != NULL) {
        for (k = 0; k < em_model_node_count(model); ++k) all_values += (size_t)N * sizeof(float);
        CHECKF(em_model_arena_bytes(model) < all_values / 2,
               "arena %zu bytes, all 8 values take %zu: buffers are not reused by liveness",
               em_model_arena_bytes(model), all_values);
        CHECK(em_model_arena_bytes(model) >= 2u * N * sizeof(float)); /* t0 and the chain's current value */
        CHECK(em_model_values_bytes(model) == all_values);
        em_model_free(model);
    }
    free(buf);
    emb_destroy(b);
}

/* ---- v1 files, v1 and v2 of one chain ---- */

static void test_v1_and_v2_agree(void)
{
    enum { H = 5, W = 4, C = 3, N = H * W * C };
    float in[N], out1[N], out2[N];
    uint8_t *buf1 = NULL, *buf2 = NULL;
    size_t size1, size2;
    uint32_t version1 = 0, version2 = 0;
    em_error err;
    em_status st;
    uint32_t version;
    fill(in, N, 41);
    for (version = 0; version <= 2; version += 2) {
        emb_builder *b = emb_create();
        const uint32_t x = emb_input(b, H, W, C);
        emb_node a = emb_node_init(EM_OP_ACTIVATION, x);
        emb_node p = emb_node_init(EM_OP_MAX_POOL, 0);
        a.activation = EM_ACT_RELU6;
        p.input = emb_add_op(b, a, 0);
        p.kernel_h = p.kernel_w = 2;
        emb_task_auto(b, "t", x, emb_add_op(b, p, 0));
        if (version) emb_set_version(b, version); /* 0: the builder picks v1 for a chain */
        if (version) buf2 = emb_finish(b, &size2);
        else buf1 = emb_finish(b, &size1);
        emb_destroy(b);
    }
    st = run_file(buf1, size1, EM_KERNELS_AUTO, in, N, out1, 4 * 3 * 3, &version1, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    st = run_file(buf2, size2, EM_KERNELS_AUTO, in, N, out2, 4 * 3 * 3, &version2, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    CHECK(version1 == 1 && version2 == 2);
    CHECK(size2 == size1 || size2 == size1 + 64); /* GRAPH grew by 8 bytes, sections stay 64-byte aligned */
    CHECK(memcmp(out1, out2, 4 * 3 * 3 * sizeof(float)) == 0);
    free(buf1);
    free(buf2);
}

/* ---- corrupt v2 files ---- */

static void expect_refused(emb_builder *b, em_status want, const char *needle, const char *label)
{
    size_t size;
    uint8_t *buf = emb_finish(b, &size);
    em_model *model = NULL;
    em_error err;
    em_status st;
    memset(&err, 0, sizeof err);
    st = em_model_load(buf, size, NULL, &model, &err);
    CHECKF(st == want, "%s: status %d (%s), expected %d (%s): %s", label, (int)st, em_status_name(st), (int)want,
           em_status_name(want), err.message);
    CHECKF(strstr(err.message, needle) != NULL, "%s: message \"%s\" does not mention \"%s\"", label, err.message,
           needle);
    CHECK(model == NULL);
    em_model_free(model);
    free(buf);
    emb_destroy(b);
}

static void test_corrupt_v2(void)
{
    emb_builder *b;
    uint32_t x, y, v, values[70], k;
    emb_node n;

    /* an input that refers forward: node 1 reads value 3, which node 2 produces later */
    b = emb_create();
    x = emb_input(b, 2, 2, 3);
    v = emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, x), 0);
    n = emb_node_init(EM_OP_ADD, v);
    n.out_h = n.out_w = 2;
    n.out_c = 3;
    n.extra_count = 1;
    n.extra[0] = v + 2;
    v = emb_add_node(b, &n);
    emb_task_auto(b, "t", x, emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, v), 0));
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 1 (ADD): input 1 reads value 3, which is not computed before it (this node produces value 2)",
                   "forward reference");

    /* a cycle: a node reading its own value (the only way a cycle could start: ids must decrease) */
    b = emb_create();
    x = emb_input(b, 2, 2, 3);
    n = emb_node_init(EM_OP_ADD, x);
    n.out_h = n.out_w = 2;
    n.out_c = 3;
    n.extra_count = 1;
    n.extra[0] = 1; /* value 1 is this node's own output */
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 0 (ADD): input 1 reads value 1, which is not computed before it "
                   "(this node produces value 1)", "cycle");

    /* broadcast mismatch: MUL of (2, 2, 3) and (1, 1, 4) */
    b = emb_create();
    x = emb_input(b, 2, 2, 4);
    n = emb_node_init(EM_OP_MAX_POOL, x);
    n.kernel_h = n.kernel_w = 1;
    n.out_h = n.out_w = 2;
    n.out_c = 4;
    v = emb_add_node(b, &n);
    y = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, x), 0); /* (1, 1, 4) */
    n = emb_node_init(EM_OP_DENSE, y);                              /* make it (1, 1, 3) */
    {
        const uint32_t dims[2] = {4, 3};
        static const float w[12] = {0};
        n.weight = emb_tensor_f32(b, 2, dims, w);
    }
    y = emb_add_op(b, n, 3);
    n = emb_node_init(EM_OP_MUL, v);
    n.out_h = n.out_w = 2;
    n.out_c = 4;
    n.extra_count = 1;
    n.extra[0] = y;
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_CORRUPT, "input 1 (value 3) has (1, 1, 3): MUL broadcasts only equal shapes or "
                   "(1, 1, C) with (H, W, C)", "broadcast mismatch");

    /* MUL of (2, 2, C) and (2, 1, C): only (1, 1, C) broadcasts */
    b = emb_create();
    x = emb_input(b, 2, 2, 4);
    n = emb_node_init(EM_OP_MAX_POOL, x);
    n.kernel_h = 1;
    n.kernel_w = 2; /* (2, 1, 4) */
    y = emb_add_op(b, n, 0);
    values[0] = x;
    values[1] = y;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_MUL, values, 2, EM_ACT_NONE));
    expect_refused(b, EM_STATUS_CORRUPT, "MUL broadcasts only", "row broadcast");

    /* concat of mismatched spatial sizes */
    b = emb_create();
    x = emb_input(b, 4, 4, 2);
    n = emb_node_init(EM_OP_MAX_POOL, x);
    n.kernel_h = n.kernel_w = n.stride_h = n.stride_w = 2; /* (2, 2, 2) */
    y = emb_add_op(b, n, 0);
    n = emb_node_init(EM_OP_CONCAT, x);
    n.out_h = n.out_w = 4;
    n.out_c = 4;
    n.extra_count = 1;
    n.extra[0] = y;
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 1 (CONCAT): input 1 (value 1) is 2x2, input 0 (value 0) is 4x4",
                   "concat spatial mismatch");

    /* ADD of different shapes */
    b = emb_create();
    x = emb_input(b, 4, 4, 2);
    n = emb_node_init(EM_OP_MAX_POOL, x);
    n.kernel_h = n.kernel_w = n.stride_h = n.stride_w = 2;
    y = emb_add_op(b, n, 0);
    n = emb_node_init(EM_OP_ADD, y);
    n.out_h = n.out_w = 2;
    n.out_c = 2;
    n.extra_count = 1;
    n.extra[0] = x;
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_CORRUPT, "input 1 (value 0) has shape (4, 4, 2), input 0 (value 1) has (2, 2, 2): ADD "
                   "needs equal shapes", "add shape mismatch");

    /* too many inputs: on a node (two nodes, so the list's own bound of node_count x 63 is not what trips) */
    b = emb_create();
    x = emb_input(b, 1, 1, 2);
    emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, x), 0);
    for (k = 0; k < EM_MAX_NODE_INPUTS + 1; ++k) values[k] = x;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, EM_MAX_NODE_INPUTS + 1, EM_ACT_NONE));
    expect_refused(b, EM_STATUS_LIMIT, "GRAPH node 1 (ADD): input_count 65 exceeds MAX_NODE_INPUTS 64",
                   "too many inputs");
    /* one node: the list's length is past what any valid file could hold */
    b = emb_create();
    x = emb_input(b, 1, 1, 2);
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, EM_MAX_NODE_INPUTS + 1, EM_ACT_NONE));
    expect_refused(b, EM_STATUS_LIMIT, "GRAPH: extra_input_count 64 exceeds node_count x (MAX_NODE_INPUTS - 1) = 63",
                   "too many extra inputs");

    /* at the limit: 64 inputs load */
    {
        size_t size;
        uint8_t *buf;
        em_model *model = NULL;
        em_error err;
        b = emb_create();
        x = emb_input(b, 1, 1, 2);
        emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_CONCAT, values, EM_MAX_NODE_INPUTS, EM_ACT_NONE));
        buf = emb_finish(b, &size);
        em_status st = em_model_load(buf, size, NULL, &model, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        em_model_free(model);
        free(buf);
        emb_destroy(b);
    }

    /* MUL takes two inputs; CONV2D one; ADD at least two */
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    values[0] = values[1] = values[2] = x;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_MUL, values, 3, EM_ACT_NONE));
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 0 (MUL): input_count 3, the op takes 2", "mul arity");
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    n = emb_node_init(EM_OP_ACTIVATION, x);
    n.out_h = n.out_w = n.out_c = 2;
    n.extra_count = 1;
    n.extra[0] = x;
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 0 (ACTIVATION): input_count 2, the op takes 1", "unary arity");
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, 1, EM_ACT_NONE));
    emb_set_version(b, 2);
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 0 (ADD): input_count 1, the op takes 2 to 64", "add arity");
    /* input_count 0 */
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    n = emb_node_init(EM_OP_ACTIVATION, x);
    n.reserved[0] = EM_NONE; /* written as input_count */
    emb_set_version(b, 2);
    emb_task_auto(b, "t", x, emb_add_op(b, n, 0));
    expect_refused(b, EM_STATUS_LIMIT, "input_count 4294967295 exceeds MAX_NODE_INPUTS", "input_count huge");

    /* extra_input_count disagreeing with the nodes: a node declares 3 inputs, the list holds 1 */
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    n = emb_node_init(EM_OP_ADD, x);
    n.out_h = n.out_w = n.out_c = 2;
    n.extra_count = 1;
    n.extra[0] = x;
    n.reserved[0] = 3;
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH: extra_input_count is 1, but the nodes' input_count fields need 2",
                   "extra count mismatch");

    /* a v1 file cannot hold a two-input op */
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    values[0] = values[1] = x;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_NONE));
    emb_set_version(b, 1);
    expect_refused(b, EM_STATUS_CORRUPT, "GRAPH node 0 (ADD): input_count 1, the op takes 2 to 64", "v1 with ADD");

    /* PAD past MAX_PAD */
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    n = emb_node_init(EM_OP_PAD, x);
    n.pad_top = EM_MAX_PAD + 1;
    n.out_h = 2 + EM_MAX_PAD + 1;
    n.out_w = n.out_c = 2;
    emb_task_auto(b, "t", x, emb_add_node(b, &n));
    expect_refused(b, EM_STATUS_LIMIT, "pad_top 257 exceeds the limit 256", "pad limit");

    /* a task whose output joins two graph inputs, fed only one */
    b = emb_create();
    x = emb_input(b, 2, 2, 2);
    y = emb_input(b, 2, 2, 2);
    values[0] = x;
    values[1] = y;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_NONE));
    expect_refused(b, EM_STATUS_CORRUPT, "TASKS task 0 ('t'): output value 2 is computed from graph input 1, not from "
                   "the task's input 0", "task joins two inputs");
}

/* ---- the fast ADD, MUL and CONCAT kernels (opt/graph_ops.c) give the reference's bits, for every
 * activation, with the values the activations and FORMAT.md "Non-finite values" single out ---- */
static void test_graph_ops_fast_bits(void)
{
    enum { H = 3, W = 5, C = 13, N = H * W * C, CASES = 6 };
    static const char *const op_kernel[CASES] = {"add_f32", "add_f32", "mul_f32", "mul_f32", "mul_f32", "concat_f32"};
    static const uint32_t sets[] = {EM_KERNELS_GENERIC, EM_KERNELS_SSE2, EM_KERNELS_AVX2, EM_KERNELS_AVX512,
                                    EM_KERNELS_NEON, EM_KERNELS_AUTO};
    const float specials[] = {(float)NAN, (float)INFINITY, -(float)INFINITY, -0.0f, 0.0f, 6.0f, -6.0f, 3.0f, -3.0f,
                              1e-40f, -1e-40f, 5.9999995f};
    float in[N];
    uint32_t act, c, i;
    fill(in, N, 21);
    for (i = 0; i < sizeof specials / sizeof specials[0]; ++i) in[i * 7u] = specials[i];
    for (act = EM_ACT_NONE; act <= EM_ACT_LAST; ++act)
        for (c = 0; c < CASES; ++c) {
            emb_builder *b = emb_create();
            const uint32_t x = emb_input(b, H, W, C);
            emb_node relu6 = emb_node_init(EM_OP_ACTIVATION, x);
            uint32_t second, gap, values[3], out, count = 2, op = EM_OP_ADD, out_n = N;
            float *ref = (float *)malloc(3u * N * sizeof(float)), *fast = (float *)malloc(3u * N * sizeof(float));
            uint8_t *buf;
            size_t size, k;
            em_error err;
            em_status st;
            relu6.activation = EM_ACT_RELU6; /* a second operand that differs from x */
            second = emb_add_op(b, relu6, 0);
            gap = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, x), 0);
            values[0] = x;
            values[1] = second;
            values[2] = x;
            if (c == 1) count = 3; /* ((x + relu6(x)) + x) */
            if (c >= 2 && c <= 4) op = EM_OP_MUL;
            if (c == 3) values[1] = gap; /* per-channel gate second, then first */
            if (c == 4) {
                values[0] = gap;
                values[1] = x;
            }
            if (c == 5) {
                op = EM_OP_CONCAT;
                count = 3;
                out_n = 3u * N;
            }
            out = emb_add_multi(b, op, values, count, act);
            emb_task_auto(b, "t", x, out);
            buf = emb_finish(b, &size);
            CHECK(run_file(buf, size, EM_KERNELS_REFERENCE, in, N, ref, out_n, NULL, &err) == EM_STATUS_OK);
            for (k = 0; k < sizeof sets / sizeof sets[0]; ++k) {
                em_load_options options;
                em_model *model = NULL;
                em_node_info info;
                if (!em_kernels_available(sets[k])) continue;
                memset(&options, 0, sizeof options);
                options.kernels = sets[k];
                st = em_model_load_ex(buf, size, NULL, &options, &model, &err);
                CHECK_STATUS(st, EM_STATUS_OK, err);
                if (model == NULL) continue;
                em_model_node_info(model, out - 1u, &info);
                CHECKF(strcmp(info.kernel, op_kernel[c]) == 0, "case %u act %u (%s): kernel %s, expected %s",
                       (unsigned)c, (unsigned)act, em_kernels_name(sets[k]), info.kernel, op_kernel[c]);
                em_model_free(model);
                CHECK(run_file(buf, size, sets[k], in, N, fast, out_n, NULL, &err) == EM_STATUS_OK);
                CHECKF(memcmp(ref, fast, out_n * sizeof(float)) == 0, "case %u act %u (%s): not the reference's bits",
                       (unsigned)c, (unsigned)act, em_kernels_name(sets[k]));
            }
            free(ref);
            free(fast);
            free(buf);
            emb_destroy(b);
        }
}

/* ---- residual ADD fused into the conv's epilogue (fast kernel sets) ---- */

typedef struct fused_case {
    uint32_t h, w, cin, cout, k, stride, stem, act, conv_act, extra_consumer, lut;
} fused_case;

/* The main conv as a merged layer: LUT_CONV2D with r = 1 and C = 8 codewords, which the fast sets run as a
 * convolution with decoded weights (the ResNet blocks of a merged words net) and so fuse like CONV2D. */
static uint32_t lut_conv_node(emb_builder *b, em_test_rng *rng, uint32_t input, uint32_t cin, uint32_t cout, uint32_t k,
                              uint32_t stride, uint32_t act, float *bias)
{
    enum { C = 8 };
    const uint32_t cb_dims[3] = {cin, C, 1}, idx_dims[4] = {k, k, cin, cout}, bdims[1] = {cout};
    const size_t entries = (size_t)k * k * cin * cout;
    float *cb = (float *)malloc((size_t)cin * C * sizeof(float));
    uint32_t *idx = (uint32_t *)malloc(entries * sizeof(uint32_t));
    emb_node n = emb_node_init(EM_OP_LUT_CONV2D, input);
    size_t i;
    em_test_fill(rng, cb, (size_t)cin * C, 0.5f);
    for (i = 0; i < entries; ++i) idx[i] = em_test_rand_below(rng, C);
    em_test_fill(rng, bias, cout, 0.2f);
    n.seg_len = 1;
    n.codewords = C;
    n.kernel_h = n.kernel_w = k;
    n.stride_h = n.stride_w = stride;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = k / 2;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, 3, idx);
    n.bias = emb_tensor_f32(b, 1, bdims, bias);
    n.activation = act;
    free(cb);
    free(idx);
    return emb_add_op(b, n, cout);
}

/* x -> [stem conv3x3 relu] -> main conv (k, stride) -> ADD(main, shortcut) with `act`; the shortcut is the
 * (stem's or graph's) value itself, or a 1x1 projection conv when the shape changes. Returns the ADD's node. */
static uint32_t build_residual(emb_builder *b, const fused_case *fc, uint32_t *add_node)
{
    em_test_rng rng;
    float *w = (float *)malloc((size_t)fc->k * fc->k * fc->cin * fc->cout * sizeof(float) + 4096 * sizeof(float));
    float bias[64];
    const uint32_t x = emb_input(b, fc->h, fc->w, fc->cin);
    uint32_t v = x, main_v, shortcut, values[2];
    em_test_rng_seed(&rng, fc->h * 31u + fc->cin);
    if (fc->stem) v = conv_node(b, &rng, x, fc->cin, fc->cin, 3, 1, EM_ACT_RELU, w, bias);
    main_v = fc->lut ? lut_conv_node(b, &rng, v, fc->cin, fc->cout, fc->k, fc->stride, fc->conv_act, bias)
                     : conv_node(b, &rng, v, fc->cin, fc->cout, fc->k, fc->stride, fc->conv_act, w, bias);
    shortcut = v;
    if (fc->stride != 1 || fc->cin != fc->cout) shortcut = conv_node(b, &rng, v, fc->cin, fc->cout, 1, fc->stride,
                                                                     EM_ACT_NONE, w, bias);
    values[0] = main_v;
    values[1] = shortcut;
    *add_node = emb_add_multi(b, EM_OP_ADD, values, 2, fc->act) - 1u;
    if (fc->extra_consumer) { /* a second reader of the main conv's value: fusing would lose it */
        const uint32_t pooled = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, main_v), 0);
        emb_task_auto(b, "side", x, pooled);
    }
    free(w);
    return x;
}

static void test_fused_residual_add(void)
{
    static const fused_case cases[] = {
        {7, 5, 3, 3, 1, 1, 0, EM_ACT_RELU, EM_ACT_NONE, 0, 0},    /* point-wise, identity shortcut (graph input) */
        {9, 7, 6, 6, 3, 1, 1, EM_ACT_NONE, EM_ACT_NONE, 0, 0},    /* 3x3 after a stem (ResNet), no activation */
        {8, 9, 5, 7, 3, 2, 1, EM_ACT_RELU6, EM_ACT_NONE, 0, 0},   /* stride 2 with a projection shortcut */
        {13, 11, 17, 17, 1, 1, 1, EM_ACT_RELU, EM_ACT_NONE, 0, 0}, /* MobileNetV2 project conv, odd width */
        {45, 47, 5, 17, 1, 1, 0, EM_ACT_RELU6, EM_ACT_NONE, 0, 0}, /* 2115 pixels: several 1x1 bands + a remainder */
        {1, 1, 3, 3, 1, 1, 0, EM_ACT_HARD_SWISH, EM_ACT_NONE, 0, 0},
        {6, 5, 24, 24, 3, 1, 0, EM_ACT_RELU, EM_ACT_NONE, 0, 0},
        {5, 5, 4, 4, 3, 1, 0, EM_ACT_RELU, EM_ACT_RELU, 0, 0},    /* conv has its own ReLU: not fusable */
        {5, 5, 4, 4, 1, 1, 0, EM_ACT_RELU, EM_ACT_NONE, 1, 0},    /* conv read by another node: not fusable */
        /* merged (LUT, decoded) main convs: the words ResNet's blocks, a projection, a 1x1 */
        {9, 8, 6, 6, 3, 1, 1, EM_ACT_RELU, EM_ACT_NONE, 0, 1},
        {8, 9, 5, 7, 3, 2, 1, EM_ACT_RELU, EM_ACT_NONE, 0, 1},
        {13, 11, 17, 17, 1, 1, 1, EM_ACT_RELU6, EM_ACT_NONE, 0, 1},
        {5, 5, 4, 4, 3, 1, 0, EM_ACT_RELU, EM_ACT_RELU, 0, 1}, /* LUT conv with its own ReLU: not fusable */
    };
    size_t c, k;
    for (c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        const fused_case *fc = &cases[c];
        const int fusable = fc->conv_act == EM_ACT_NONE && !fc->extra_consumer;
        emb_builder *b = emb_create();
        uint32_t add_node, x = build_residual(b, fc, &add_node), oh, ow, oc;
        size_t size, in_n = (size_t)fc->h * fc->w * fc->cin, out_n;
        float *in, *ref, *fused, *plain;
        uint8_t *buf;
        em_error err;
        emb_value_shape(b, add_node + 1u, &oh, &ow, &oc);
        out_n = (size_t)oh * ow * oc;
        emb_task_auto(b, "t", x, add_node + 1u); /* after the "side" task, if any: found by name below */
        buf = emb_finish(b, &size);
        in = (float *)malloc(in_n * sizeof(float));
        ref = (float *)malloc(out_n * sizeof(float));
        fused = (float *)malloc(out_n * sizeof(float));
        plain = (float *)malloc(out_n * sizeof(float));
        fill(in, in_n, (uint32_t)c + 50u);
        /* the reference first (its output is the yardstick), then every fast set this CPU has */
        static const uint32_t sets[] = {EM_KERNELS_REFERENCE, EM_KERNELS_GENERIC, EM_KERNELS_SSE2, EM_KERNELS_AVX2,
                                        EM_KERNELS_AVX512, EM_KERNELS_NEON, EM_KERNELS_AUTO};
        for (k = 0; k < sizeof sets / sizeof sets[0]; ++k) {
            const uint32_t set = sets[k];
            em_load_options options;
            em_model *with = NULL, *without = NULL;
            em_node_info info;
            uint32_t task;
            em_status st;
            if (!em_kernels_available(set)) continue;
            memset(&options, 0, sizeof options);
            options.kernels = set;
            st = em_model_load_ex(buf, size, NULL, &options, &with, &err);
            CHECK_STATUS(st, EM_STATUS_OK, err);
            options.flags = EM_LOAD_NO_FUSED_ADD;
            st = em_model_load_ex(buf, size, NULL, &options, &without, &err);
            CHECK_STATUS(st, EM_STATUS_OK, err);
            if (with == NULL || without == NULL) {
                em_model_free(with);
                em_model_free(without);
                continue;
            }
            task = (uint32_t)em_model_find_task(with, "t");
            em_model_node_info(with, add_node, &info);
            if (set == EM_KERNELS_REFERENCE) { /* the spec runs every node as written */
                CHECK(strcmp(info.kernel, "add_ref") == 0);
            } else {
                CHECKF((strcmp(info.kernel, "add_f32_fused_into_conv") == 0) == fusable,
                       "case %zu (%s): ADD kernel %s, fusable %d", c, em_kernels_name(set), info.kernel, fusable);
                if (fusable) CHECK(em_model_arena_bytes(with) <= em_model_arena_bytes(without));
            }
            {
                void *m1 = malloc(em_context_size(with)), *m2 = malloc(em_context_size(without));
                em_context *c1 = NULL, *c2 = NULL;
                float *dst = set == EM_KERNELS_REFERENCE ? ref : fused;
                CHECK(em_context_init(with, m1, em_context_size(with), &c1, &err) == EM_STATUS_OK);
                CHECK(em_context_init(without, m2, em_context_size(without), &c2, &err) == EM_STATUS_OK);
                st = em_run_task(c1, task, in, in_n, dst, out_n, &err);
                CHECK_STATUS(st, EM_STATUS_OK, err);
                st = em_run_task(c2, task, in, in_n, plain, out_n, &err);
                CHECK_STATUS(st, EM_STATUS_OK, err);
                /* fused = conv then ADD, bit for bit: the same float32 operations */
                CHECKF(memcmp(dst, plain, out_n * sizeof(float)) == 0, "case %zu (%s): fused and unfused differ", c,
                       em_kernels_name(set));
                if (set != EM_KERNELS_REFERENCE) { /* and the reference within float rounding */
                    double *want = (double *)malloc(out_n * sizeof(double));
                    size_t i;
                    char what[96];
                    for (i = 0; i < out_n; ++i) want[i] = ref[i];
                    snprintf(what, sizeof what, "fused residual case %zu (%s)", c, em_kernels_name(set));
                    CHECK(em_test_close(fused, want, out_n, 1e-5, what));
                    free(want);
                }
                free(m1);
                free(m2);
            }
            em_model_free(with);
            em_model_free(without);
        }
        free(in);
        free(ref);
        free(fused);
        free(plain);
        free(buf);
        emb_destroy(b);
    }
}

/* ---- LUT_DEPTHWISE_CONV2D (FORMAT.md "Clustered depthwise"): decoded at load, every kernel set gives the
 * spec's W[ky, kx, c, m] = codebook[0, index[t / r, c, m], t mod r] depthwise convolution, for single taps
 * (r = 1) and whole kernels (r = KH·KW), multiplier 1 (the row micro-kernels) and 2 ---- */
static void check_clustered_depthwise(uint32_t r, uint32_t mult, uint32_t stride)
{
    enum { H = 7, W = 6, C = 3, K = 3, CW = 5 };
    const uint32_t taps = K * K, segs = taps / r, cout = C * mult;
    const uint32_t oh = (H + 2 - K) / stride + 1, ow = (W + 2 - K) / stride + 1;
    const uint32_t cb_dims[3] = {1, CW, r}, idx_dims[3] = {segs, C, mult}, bias_dims[1] = {cout};
    emb_builder *b = emb_create();
    const uint32_t x = emb_input(b, H, W, C);
    emb_node n = emb_node_init(EM_OP_LUT_DEPTHWISE_CONV2D, x);
    float codebook[CW * 9], bias[C * 2], in[H * W * C];
    uint32_t index[9 * C * 2];
    double *want = (double *)malloc((size_t)oh * ow * cout * sizeof(double));
    char what[96];
    em_test_rng rng;
    uint32_t oy, ox, c, m, t, i;
    em_test_rng_seed(&rng, 40 + r + mult);
    em_test_fill(&rng, codebook, (size_t)CW * r, 1.0f);
    em_test_fill(&rng, bias, cout, 0.3f);
    for (i = 0; i < segs * C * mult; ++i) index[i] = (i * 7u + r) % CW;
    fill(in, H * W * C, 41);
    emb_node_window(&n, K, K, stride, stride, 1, 1, 1, 1);
    n.seg_len = r;
    n.codewords = CW;
    n.weight = emb_tensor_f32(b, 3, cb_dims, codebook);
    n.index = emb_tensor_idx(b, 3, idx_dims, em_index_bits(CW), index);
    n.bias = emb_tensor_f32(b, 1, bias_dims, bias);
    n.activation = EM_ACT_RELU6;
    emb_task_auto(b, "t", x, emb_add_op(b, n, cout));
    for (oy = 0; oy < oh; ++oy)
        for (ox = 0; ox < ow; ++ox)
            for (c = 0; c < C; ++c)
                for (m = 0; m < mult; ++m) {
                    double acc = bias[c * mult + m];
                    for (t = 0; t < taps; ++t) {
                        const int iy = (int)(oy * stride + t / K) - 1, ix = (int)(ox * stride + t % K) - 1;
                        const double wv = codebook[index[((t / r) * C + c) * mult + m] * r + t % r];
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            acc += (double)in[((uint32_t)iy * W + (uint32_t)ix) * C + c] * wv;
                    }
                    want[(oy * ow + ox) * cout + c * mult + m] = relu6d(acc);
                }
    snprintf(what, sizeof what, "LUT_DEPTHWISE_CONV2D r=%u M=%u stride %u", (unsigned)r, (unsigned)mult,
             (unsigned)stride);
    expect_outputs(b, in, H * W * C, want, (size_t)oh * ow * cout, 1e-5, what);
    free(want);
    emb_destroy(b);
}

static void test_clustered_depthwise(void)
{
    check_clustered_depthwise(1, 1, 1);
    check_clustered_depthwise(1, 2, 2);
    check_clustered_depthwise(9, 1, 2);
    check_clustered_depthwise(9, 2, 1);
    check_clustered_depthwise(3, 1, 1);
}

int main(void)
{
    test_activations();
    test_add();
    test_concat();
    test_mul();
    test_pad();
    test_residual_block();
    test_se_block();
    test_liveness();
    test_v1_and_v2_agree();
    test_corrupt_v2();
    test_graph_ops_fast_bits();
    test_fused_residual_add();
    test_clustered_depthwise();
    return em_test_summary("test_graph_v2");
}
