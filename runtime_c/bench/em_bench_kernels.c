/* em_bench_kernels: every kernel against the reference on LeNet-sized layers, and whole models.
 *
 *   em_bench_kernels [--runs N] [--warmup N] [--filter TEXT] [--kernel TEXT] [--no-kernels] [MODEL.emm ...]
 *
 * --filter keeps the cases whose name contains TEXT, --kernel the kernels whose name does (the
 * reference runs as the baseline unless --no-ref), --no-kernels skips the cases (models only).
 *
 * Kernels: each case is a one-node model built in memory; every kernel this build and CPU have for
 * the op (all kernel sets, BLAS variants included) is loaded through the normal loader (forced onto the
 * node) and timed with em_run_task after a warm-up. Models: em_run_all of each .emm with each kernel
 * set, then a per-node profile (table build vs accumulation for LUT ops) with the default set.
 * Times: min / median / p95 over the runs, in microseconds, single thread (BLAS is set to 1 thread).
 * Not a test: numbers depend on the machine; the parity tests are in tests/test_fast_kernels.c. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "em_kernels.h"
#include "em_test_builder.h"
#include "em_test_util.h"
#include "opt/em_int8_gemm.h"

typedef struct bench_options {
    long runs, warmup;
    const char *filter;
    const char *kernel_filter;
    int kernels;
    int reference;
} bench_options;

typedef struct stats {
    double min_us, median_us, p95_us;
} stats;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

static stats summarize(double *times, long n)
{
    stats s;
    qsort(times, (size_t)n, sizeof *times, by_value);
    s.min_us = times[0];
    s.median_us = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
    s.p95_us = times[(long)((double)(n - 1) * 0.95 + 0.5)];
    return s;
}

/* ---- kernel cases ------------------------------------------------------------------------------ */

typedef struct kernel_case {
    const char *name;
    uint32_t op;
    uint32_t h, w, cin, cout;
    uint32_t k, stride, same; /* square kernel, stride, 'same' padding (else 'valid') */
    uint32_t r, C;            /* LUT ops */
    uint32_t flags;           /* EM_NODE_FLAG_INT8_TABLES: int8 tables (C = 16); INT8_ACT: int8 activations */
} kernel_case;

#define I8 EM_NODE_FLAG_INT8_TABLES
#define A8 EM_NODE_FLAG_INT8_ACT

static const kernel_case cases[] = {
    /* the example pair (LeNet Fashion 32×32 and the 3-conv words net) at presets light / accu */
    {"lenet conv1 light (32x32x1 5x5 ->32, r1 C32)", EM_OP_LUT_CONV2D, 32, 32, 1, 32, 5, 1, 0, 1, 32, 0},
    {"lenet conv1 accu (32x32x1 5x5 ->32, r1 C64)", EM_OP_LUT_CONV2D, 32, 32, 1, 32, 5, 1, 0, 1, 64, 0},
    {"lenet conv2 light (14x14x32 5x5 ->64, r16 C64)", EM_OP_LUT_CONV2D, 14, 14, 32, 64, 5, 1, 0, 16, 64, 0},
    {"lenet conv2 accu (14x14x32 5x5 ->64, r8 C128)", EM_OP_LUT_CONV2D, 14, 14, 32, 64, 5, 1, 0, 8, 128, 0},
    {"words conv2 light (16x16x16 3x3 same ->32, r16 C64)", EM_OP_LUT_CONV2D, 16, 16, 16, 32, 3, 1, 1, 16, 64, 0},
    {"words conv3 light (8x8x32 3x3 same ->64, r16 C64)", EM_OP_LUT_CONV2D, 8, 8, 32, 64, 3, 1, 1, 16, 64, 0},
    /* held-out models (examples/heldout): VGG-style 3x3 pairs, strided 5x5 convs */
    {"vgg conv1b light (32x32x16 3x3 same ->16, r16 C64)", EM_OP_LUT_CONV2D, 32, 32, 16, 16, 3, 1, 1, 16, 64, 0},
    {"vgg conv1b accu (32x32x16 3x3 same ->16, r8 C128)", EM_OP_LUT_CONV2D, 32, 32, 16, 16, 3, 1, 1, 8, 128, 0},
    {"vgg conv2b accu (16x16x32 3x3 same ->32, r8 C128)", EM_OP_LUT_CONV2D, 16, 16, 32, 32, 3, 1, 1, 8, 128, 0},
    {"vgg conv2a light (16x16x16 3x3 same ->32, r16 C64)", EM_OP_LUT_CONV2D, 16, 16, 16, 32, 3, 1, 1, 16, 64, 0},
    {"vgg conv2b light (16x16x32 3x3 same ->32, r16 C64)", EM_OP_LUT_CONV2D, 16, 16, 32, 32, 3, 1, 1, 16, 64, 0},
    {"vgg conv3b light (8x8x64 3x3 same ->64, r16 C64)", EM_OP_LUT_CONV2D, 8, 8, 64, 64, 3, 1, 1, 16, 64, 0},
    {"strided conv2 light (16x16x24 5x5 same s2 ->48, r16 C64)", EM_OP_LUT_CONV2D, 16, 16, 24, 48, 5, 2, 2, 16, 64, 0},
    {"stride 2 (32x32x32 3x3 same s2 ->64, r8 C128)", EM_OP_LUT_CONV2D, 32, 32, 32, 64, 3, 2, 1, 8, 128, 0},
    {"banded (56x56x64 3x3 same ->64, r8 C128)", EM_OP_LUT_CONV2D, 56, 56, 64, 64, 3, 1, 1, 8, 128, 0},
    /* C = 16 with int8 tables (preset light4: byte-shuffle lookups) and the same layers with float tables */
    {"lenet conv1 light4 (32x32x1 5x5 ->32, r1 C16 int8)", EM_OP_LUT_CONV2D, 32, 32, 1, 32, 5, 1, 0, 1, 16, I8},
    {"lenet conv1 C16 float (32x32x1 5x5 ->32, r1 C16)", EM_OP_LUT_CONV2D, 32, 32, 1, 32, 5, 1, 0, 1, 16, 0},
    {"lenet conv2 light4 (14x14x32 5x5 ->64, r16 C16 int8)", EM_OP_LUT_CONV2D, 14, 14, 32, 64, 5, 1, 0, 16, 16, I8},
    {"lenet conv2 C16 float (14x14x32 5x5 ->64, r16 C16)", EM_OP_LUT_CONV2D, 14, 14, 32, 64, 5, 1, 0, 16, 16, 0},
    {"words conv2 light4 (16x16x16 3x3 same ->32, r16 C16 int8)", EM_OP_LUT_CONV2D, 16, 16, 16, 32, 3, 1, 1, 16, 16,
     I8},
    {"words conv3 light4 (8x8x32 3x3 same ->64, r16 C16 int8)", EM_OP_LUT_CONV2D, 8, 8, 32, 64, 3, 1, 1, 16, 16, I8},
    {"lenet fc1 light4 (1600 ->1024, r32 C16 int8)", EM_OP_LUT_DENSE, 1, 1, 1600, 1024, 1, 1, 0, 32, 16, I8},
    {"lenet fc1 C16 float (1600 ->1024, r32 C16)", EM_OP_LUT_DENSE, 1, 1, 1600, 1024, 1, 1, 0, 32, 16, 0},
    {"words fc1 light4 (1024 ->256, r32 C16 int8)", EM_OP_LUT_DENSE, 1, 1, 1024, 256, 1, 1, 0, 32, 16, I8},
    {"lenet fc1 light (1600 ->1024, r32 C32)", EM_OP_LUT_DENSE, 1, 1, 1600, 1024, 1, 1, 0, 32, 32, 0},
    {"lenet fc1 accu (1600 ->1024, r16 C64)", EM_OP_LUT_DENSE, 1, 1, 1600, 1024, 1, 1, 0, 16, 64, 0},
    {"fc C=256 (1600 ->1024, r8 C256)", EM_OP_LUT_DENSE, 1, 1, 1600, 1024, 1, 1, 0, 8, 256, 0},
    {"words fc1 light (1024 ->256, r32 C32)", EM_OP_LUT_DENSE, 1, 1, 1024, 256, 1, 1, 0, 32, 32, 0},
    /* int8 activations (lut_*_i8a_*: int8 GEMM tiles, VNNI where the CPU has it) and the same layers in
     * float: the words ResNet-8 and MobileNetV2 layers of the residual pair at preset light (r4 C64) */
    {"words block0 conv i8a (32x32x16 3x3 same ->16, r4 C64 int8-act)", EM_OP_LUT_CONV2D, 32, 32, 16, 16, 3, 1, 1, 4,
     64, A8},
    {"words block0 conv float (32x32x16 3x3 same ->16, r4 C64)", EM_OP_LUT_CONV2D, 32, 32, 16, 16, 3, 1, 1, 4, 64, 0},
    {"words block2 conv i8a (8x8x64 3x3 same ->64, r4 C64 int8-act)", EM_OP_LUT_CONV2D, 8, 8, 64, 64, 3, 1, 1, 4, 64,
     A8},
    {"words block2 conv float (8x8x64 3x3 same ->64, r4 C64)", EM_OP_LUT_CONV2D, 8, 8, 64, 64, 3, 1, 1, 4, 64, 0},
    {"mnv2 Conv1 i8a (64x64x3 3x3 same s2 ->16, r1 C32 int8-act)", EM_OP_LUT_CONV2D, 64, 64, 3, 16, 3, 2, 1, 1, 32,
     A8},
    {"mnv2 Conv1 float (64x64x3 3x3 same s2 ->16, r1 C32)", EM_OP_LUT_CONV2D, 64, 64, 3, 16, 3, 2, 1, 1, 32, 0},
    {"mnv2 expand i8a (32x32x8 1x1 ->48, r4 C64 int8-act)", EM_OP_LUT_CONV2D, 32, 32, 8, 48, 1, 1, 0, 4, 64, A8},
    {"mnv2 expand float (32x32x8 1x1 ->48, r4 C64)", EM_OP_LUT_CONV2D, 32, 32, 8, 48, 1, 1, 0, 4, 64, 0},
    {"mnv2 Conv_1 i8a (2x2x112 1x1 ->1280, r4 C64 int8-act)", EM_OP_LUT_CONV2D, 2, 2, 112, 1280, 1, 1, 0, 4, 64, A8},
    {"mnv2 Conv_1 float (2x2x112 1x1 ->1280, r4 C64)", EM_OP_LUT_CONV2D, 2, 2, 112, 1280, 1, 1, 0, 4, 64, 0},
    {"lenet conv2 plain (14x14x32 5x5 ->64)", EM_OP_CONV2D, 14, 14, 32, 64, 5, 1, 0, 0, 0, 0},
    {"conv 3x3 plain (32x32x32 same ->64)", EM_OP_CONV2D, 32, 32, 32, 64, 3, 1, 1, 0, 0, 0},
    {"conv 1x1 plain (28x28x64 ->128)", EM_OP_CONV2D, 28, 28, 64, 128, 1, 1, 0, 0, 0, 0},
    {"lenet fc1 plain (1600 ->1024)", EM_OP_DENSE, 1, 1, 1600, 1024, 1, 1, 0, 0, 0, 0},
    {"head (1024 ->10)", EM_OP_DENSE, 1, 1, 1024, 10, 1, 1, 0, 0, 0, 0},
    {"depthwise (32x32x64 3x3 same)", EM_OP_DEPTHWISE_CONV2D, 32, 32, 64, 64, 3, 1, 1, 0, 0, 0},
    /* the MobileNet pair of examples/mobilenets: dw1 (16x16x16), dw3 (8x8x64), dw4 (8x8x64 stride 2) */
    {"mobilenet dw1 (16x16x16 3x3 same)", EM_OP_DEPTHWISE_CONV2D, 16, 16, 16, 16, 3, 1, 1, 0, 0, 0},
    {"mobilenet dw3 (8x8x64 3x3 same)", EM_OP_DEPTHWISE_CONV2D, 8, 8, 64, 64, 3, 1, 1, 0, 0, 0},
    {"mobilenet dw4 (8x8x64 3x3 same s2)", EM_OP_DEPTHWISE_CONV2D, 8, 8, 64, 64, 3, 2, 1, 0, 0, 0},
    {"mobilenet pw3 (8x8x64 1x1 ->64)", EM_OP_CONV2D, 8, 8, 64, 64, 1, 1, 0, 0, 0, 0},
    {"max pool (28x28x32 2x2)", EM_OP_MAX_POOL, 28, 28, 32, 32, 2, 2, 0, 0, 0, 0},
};

/* A one-node model for a case; returns the file (free()) and its input/output sizes. */
static uint8_t *build_case(const kernel_case *c, size_t *size, size_t *nx, size_t *ny)
{
    emb_builder *b = emb_create();
    em_test_rng rng;
    emb_node n;
    uint32_t in, out, oh, ow, oc, total_pad, S, i;
    uint8_t *file;
    em_test_rng_seed(&rng, 7);
    if (c->op == EM_OP_LUT_DENSE || c->op == EM_OP_DENSE)
        in = emb_input(b, 1, 1, c->cin);
    else
        in = emb_input(b, c->h, c->w, c->cin);
    n = emb_node_init(c->op, in);
    n.activation = EM_ACT_RELU;
    n.flags = c->flags;
    if (c->flags & EM_NODE_FLAG_INT8_ACT) { /* input scale: the inputs are em_test_fill(…, 1.0f), |x| ≤ 1 */
        const float input_scale = 1.0f / 127.0f;
        memcpy(&n.reserved[1], &input_scale, sizeof input_scale);
    }
    if (c->op != EM_OP_DENSE && c->op != EM_OP_LUT_DENSE) {
        n.kernel_h = n.kernel_w = c->k;
        n.stride_h = n.stride_w = c->stride;
        if (c->same) {
            /* TensorFlow 'same': total pad so that out = ceil(in / stride), the extra cell at the end */
            const uint32_t out_size = (c->h + c->stride - 1) / c->stride;
            const uint32_t need = (out_size - 1) * c->stride + c->k;
            total_pad = need > c->h ? need - c->h : 0;
            n.pad_top = n.pad_left = total_pad / 2;
            n.pad_bottom = n.pad_right = total_pad - total_pad / 2;
        }
    }
    oc = c->cout;
    if (c->op == EM_OP_CONV2D || c->op == EM_OP_DEPTHWISE_CONV2D || c->op == EM_OP_DENSE) {
        const uint32_t mult = c->op == EM_OP_DEPTHWISE_CONV2D ? c->cout / c->cin : c->cout;
        const uint32_t dims4[4] = {c->k, c->k, c->cin, mult}, dims2[2] = {c->cin, c->cout};
        const size_t count = c->op == EM_OP_DENSE ? (size_t)c->cin * c->cout : (size_t)c->k * c->k * c->cin * mult;
        float *w = (float *)malloc(count * sizeof(float));
        em_test_fill(&rng, w, count, 0.1f);
        n.weight = c->op == EM_OP_DENSE ? emb_tensor_f32(b, 2, dims2, w) : emb_tensor_f32(b, 4, dims4, w);
        free(w);
    } else if (c->op == EM_OP_LUT_CONV2D || c->op == EM_OP_LUT_DENSE) {
        const uint32_t taps = c->op == EM_OP_LUT_CONV2D ? c->k * c->k : 1;
        uint32_t cb_dims[3], idx_dims[4], bits = 1;
        size_t cb_count, idx_count;
        float *cb;
        uint32_t *idx;
        S = (c->cin + c->r - 1) / c->r;
        while ((1u << bits) < c->C) ++bits;
        cb_dims[0] = S;
        cb_dims[1] = c->C;
        cb_dims[2] = c->r;
        cb_count = (size_t)S * c->C * c->r;
        idx_count = (size_t)taps * S * c->cout;
        cb = (float *)malloc(cb_count * sizeof(float));
        idx = (uint32_t *)malloc(idx_count * sizeof(uint32_t));
        em_test_fill(&rng, cb, cb_count, 0.3f);
        for (i = 0; i < idx_count; ++i) idx[i] = em_test_rand_below(&rng, c->C);
        n.seg_len = c->r;
        n.codewords = c->C;
        n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
        if (c->op == EM_OP_LUT_CONV2D) {
            idx_dims[0] = idx_dims[1] = c->k;
            idx_dims[2] = S;
            idx_dims[3] = c->cout;
            n.index = emb_tensor_idx(b, 4, idx_dims, bits, idx);
        } else {
            idx_dims[0] = S;
            idx_dims[1] = c->cout;
            n.index = emb_tensor_idx(b, 2, idx_dims, bits, idx);
        }
        free(cb);
        free(idx);
    }
    if (c->op == EM_OP_CONV2D || c->op == EM_OP_LUT_CONV2D || c->op == EM_OP_DENSE || c->op == EM_OP_LUT_DENSE) {
        float *bias = (float *)malloc(c->cout * sizeof(float));
        em_test_fill(&rng, bias, c->cout, 0.1f);
        n.bias = emb_tensor_f32(b, 1, &c->cout, bias);
        free(bias);
    }
    out = emb_add_op(b, n, oc);
    emb_value_shape(b, out, &oh, &ow, &oc);
    emb_task_auto(b, "t", in, out);
    file = emb_finish(b, size);
    *nx = (c->op == EM_OP_LUT_DENSE || c->op == EM_OP_DENSE) ? c->cin : (size_t)c->h * c->w * c->cin;
    *ny = (size_t)oh * ow * oc;
    emb_destroy(b);
    return file;
}

/* Times em_run_task of task 0; returns 0 if the model does not load with that kernel. */
static int time_task(const uint8_t *file, size_t size, uint32_t kernels, const em_kernel *force, const float *x,
                     size_t nx, float *y, size_t ny, const bench_options *o, stats *out, size_t *context_bytes)
{
    em_model *model = NULL;
    em_context *ctx = NULL;
    em_error err;
    void *memory;
    double *times;
    long i;
    if (em_model_load_forced(file, size, NULL, kernels, force, &model, &err) != EM_STATUS_OK) return 0;
    if (force != NULL) { /* a kernel that does not support the node (e.g. int8 vs float tables): skip it */
        em_node_info info;
        em_model_node_info(model, 0, &info);
        if (strcmp(info.kernel, force->name) != 0) {
            em_model_free(model);
            return 0;
        }
    }
    *context_bytes = em_context_size(model);
    memory = malloc(*context_bytes);
    times = (double *)malloc((size_t)o->runs * sizeof(double));
    em_context_init(model, memory, *context_bytes, &ctx, &err);
    for (i = 0; i < o->warmup; ++i) em_run_task(ctx, 0, x, nx, y, ny, &err);
    for (i = 0; i < o->runs; ++i) {
        const double t0 = now_us();
        em_run_task(ctx, 0, x, nx, y, ny, &err);
        times[i] = now_us() - t0;
    }
    *out = summarize(times, o->runs);
    free(times);
    free(memory);
    em_model_free(model);
    return 1;
}

static void bench_kernels(const bench_options *o)
{
    size_t c;
    printf("== kernels: min / median / p95 in us over %ld runs (%ld warm-up), 1 thread ==\n", o->runs, o->warmup);
    for (c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        const kernel_case *kc = &cases[c];
        size_t size, nx, ny, ctx_bytes, seen_count = 0, i, count, k;
        const char *seen[64];
        em_test_set_kernel ks[EM_TEST_MAX_SET_KERNELS];
        uint8_t *file;
        float *x, *y;
        stats ref, s;
        em_test_rng rng;
        if (o->filter && strstr(kc->name, o->filter) == NULL) continue;
        file = build_case(kc, &size, &nx, &ny);
        x = (float *)malloc(nx * sizeof(float));
        y = (float *)malloc(ny * sizeof(float));
        em_test_rng_seed(&rng, 3);
        em_test_fill(&rng, x, nx, 1.0f);
        printf("%s\n", kc->name);
        if (!o->reference) {
            ref.min_us = ref.median_us = ref.p95_us = 0.0;
        } else if (!time_task(file, size, EM_KERNELS_REFERENCE, NULL, x, nx, y, ny, o, &ref, &ctx_bytes)) {
            printf("  (does not load)\n");
            continue;
        } else printf("  %-34s %9.1f %9.1f %9.1f   1.00x  context %zu B\n", em_op_find(kc->op) ? "reference" : "?",
               ref.min_us, ref.median_us, ref.p95_us, ctx_bytes);
        count = em_test_available_kernels(kc->op, o->kernel_filter, ks, EM_TEST_MAX_SET_KERNELS);
        for (k = 0; k < count; ++k) {
            const em_kernel *kernel = ks[k].kernel;
            int dup = 0;
            for (i = 0; i < seen_count; ++i) dup |= strcmp(seen[i], kernel->name) == 0;
            if (dup || seen_count == 64) continue;
            seen[seen_count++] = kernel->name;
            if (!time_task(file, size, ks[k].set, kernel, x, nx, y, ny, o, &s, &ctx_bytes)) continue;
            printf("  %-34s %9.1f %9.1f %9.1f %6.2fx  context %zu B\n", kernel->name, s.min_us, s.median_us,
                   s.p95_us, ref.median_us / s.median_us, ctx_bytes);
        }
        free(x);
        free(y);
        free(file);
    }
}

/* ---- int8 tiles --------------------------------------------------------------------------------- */

/* Every int8 tile this build and CPU have (em_int8_gemm_micro_list: generic, avx2 vpmaddwd, avx512_vnni,
 * avx_vnni; neon / sdot on ARM) on the depths of the int8-activation layers above: one band of 64 rows
 * × 16 columns per call batch; ns per 4×16 tile (median) and the MAC rate. */
static void bench_int8_tiles(const bench_options *o)
{
    static const size_t depths4[] = {4, 28, 36, 144};
    const em_int8_gemm_micro *tiles[8];
    const size_t count = em_int8_gemm_micro_list(tiles, 8);
    size_t t, d;
    em_test_rng rng;
    if (o->filter != NULL && strstr("int8 tiles", o->filter) == NULL) return;
    em_test_rng_seed(&rng, 11);
    printf("== int8 tiles (4x16, em_int8_gemm.h): ns per tile (median of %ld batches of 16 tiles), GMAC/s ==\n",
           o->runs);
    for (d = 0; d < sizeof depths4 / sizeof depths4[0]; ++d) {
        const size_t k4 = depths4[d], lda = 4 * k4;
        int8_t *a = (int8_t *)malloc(64 * lda), *b = (int8_t *)malloc(k4 * 64);
        double *times = (double *)malloc((size_t)o->runs * sizeof(double));
        int32_t c[64];
        size_t i;
        for (i = 0; i < 64 * lda; ++i) a[i] = (int8_t)((int)em_test_rand_below(&rng, 255) - 127);
        for (i = 0; i < k4 * 64; ++i) b[i] = (int8_t)((int)em_test_rand_below(&rng, 255) - 127);
        printf("  depth %4zu:", 4 * k4);
        for (t = 0; t < count && t < 8; ++t) {
            long r;
            stats st;
            for (r = 0; r < o->warmup + o->runs; ++r) {
                const double t0 = now_us();
                for (i = 0; i < 16; ++i) tiles[t]->tile(a + i * 4 * lda, lda, b, k4, c);
                if (r >= o->warmup) times[r - o->warmup] = (now_us() - t0) * 1e3 / 16.0;
            }
            st = summarize(times, o->runs);
            printf("  %s %7.1f ns %6.1f GMAC/s", tiles[t]->isa, st.median_us, 256.0 * (double)k4 / st.median_us);
        }
        printf("\n");
        free(a);
        free(b);
        free(times);
    }
}

/* ---- whole models ------------------------------------------------------------------------------ */

static uint8_t *read_file(const char *path, size_t *size, void **block)
{
    FILE *f = fopen(path, "rb");
    long len;
    uint8_t *data;
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *block = malloc((size_t)len + 64);
    data = (uint8_t *)(((uintptr_t)*block + 63u) & ~(uintptr_t)63u);
    if (fread(data, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(*block);
        return NULL;
    }
    fclose(f);
    *size = (size_t)len;
    return data;
}

static void bench_model(const char *path, const bench_options *o)
{
    void *block = NULL;
    size_t size = 0;
    uint8_t *data = read_file(path, &size, &block);
    uint32_t set;
    em_test_rng rng;
    em_test_rng_seed(&rng, 5);
    if (data == NULL) {
        printf("%s: cannot read\n", path);
        return;
    }
    printf("== model %s (%zu bytes): em_run_all, min / median / p95 in us over %ld runs ==\n", path, size, o->runs);
    for (set = EM_KERNELS_REFERENCE; set < EM_KERNELS_COUNT; ++set) {
        em_load_options opt;
        em_model *model = NULL;
        em_context *ctx = NULL;
        em_error err;
        const float **inputs;
        float **outputs;
        void *memory;
        double *times;
        uint32_t i, profile_pass;
        long r;
        if (!em_kernels_available(set)) continue;
        memset(&opt, 0, sizeof opt);
        opt.kernels = set;
        if (em_model_load_ex(data, size, NULL, &opt, &model, &err) != EM_STATUS_OK) {
            printf("  %s: %s\n", em_kernels_name(set), err.message);
            continue;
        }
        inputs = (const float **)malloc(em_model_input_count(model) * sizeof *inputs);
        outputs = (float **)malloc(em_model_task_count(model) * sizeof *outputs);
        for (i = 0; i < em_model_input_count(model); ++i) {
            uint32_t h, w, c;
            float *x;
            em_model_input_shape(model, i, &h, &w, &c);
            x = (float *)malloc((size_t)h * w * c * sizeof(float));
            em_test_fill(&rng, x, (size_t)h * w * c, 1.0f);
            inputs[i] = x;
        }
        for (i = 0; i < em_model_task_count(model); ++i) {
            em_task_info ti;
            em_model_task_info(model, i, &ti);
            outputs[i] = (float *)malloc(ti.classes * sizeof(float));
        }
        memory = malloc(em_context_size(model));
        times = (double *)malloc((size_t)o->runs * sizeof(double));
        em_context_init(model, memory, em_context_size(model), &ctx, &err);
        for (profile_pass = 0; profile_pass < 2; ++profile_pass) {
            if (profile_pass == 1) {
                if (set != em_kernels_resolve(EM_KERNELS_AUTO) && set != EM_KERNELS_REFERENCE) break;
                em_context_enable_profiling(ctx, 1);
            }
            for (r = 0; r < o->warmup; ++r) em_run_all(ctx, inputs, outputs, &err);
            for (r = 0; r < o->runs; ++r) {
                const double t0 = now_us();
                em_run_all(ctx, inputs, outputs, &err);
                times[r] = now_us() - t0;
            }
            if (profile_pass == 0) {
                const stats s = summarize(times, o->runs);
                printf("  %-8s %9.1f %9.1f %9.1f   context %zu B\n", em_kernels_name(set), s.min_us, s.median_us,
                       s.p95_us, em_context_size(model));
            } else {
                printf("    per node (%s, mean us over %ld profiled runs incl. warm-up):\n", em_kernels_name(set),
                       o->runs + o->warmup);
                for (i = 0; i < em_model_node_count(model); ++i) {
                    em_node_info ni;
                    em_node_profile p;
                    em_model_node_info(model, i, &ni);
                    em_context_node_profile(ctx, i, &p);
                    printf("    %3u %-24s %-30s %8.1f", (unsigned)i, ni.name, ni.kernel,
                           p.runs ? (double)p.total_ns / 1e3 / (double)p.runs : 0.0);
                    if (p.table_ns || p.accumulate_ns)
                        printf("  (table %.1f, accumulate %.1f)", (double)p.table_ns / 1e3 / (double)p.runs,
                               (double)p.accumulate_ns / 1e3 / (double)p.runs);
                    printf("\n");
                }
            }
        }
        for (i = 0; i < em_model_input_count(model); ++i) free((void *)(uintptr_t)inputs[i]);
        for (i = 0; i < em_model_task_count(model); ++i) free(outputs[i]);
        free(inputs);
        free(outputs);
        free(times);
        free(memory);
        em_model_free(model);
    }
    free(block);
}

/* Residual ADD fused into the conv that feeds it (em_plan.c) against the same model loaded with
 * EM_LOAD_NO_FUSED_ADD, in one run: MobileNetV2 inverted-residual shapes (expand 1x1 + ReLU6, depthwise 3x3
 * + ReLU6, project 1x1, ADD with the block input) and a ResNet basic block (3x3 + ReLU, 3x3, ADD). */
static uint32_t bench_conv(emb_builder *b, em_test_rng *rng, uint32_t input, uint32_t cin, uint32_t cout, uint32_t k,
                           uint32_t depthwise, uint32_t act)
{
    const size_t n = (size_t)k * k * cin * (depthwise ? 1u : cout);
    float *w = (float *)malloc(n * sizeof(float)), *bias = (float *)malloc(cout * sizeof(float));
    const uint32_t wdims[4] = {k, k, cin, depthwise ? 1u : cout}, bdims[1] = {cout};
    emb_node node = emb_node_init(depthwise ? EM_OP_DEPTHWISE_CONV2D : EM_OP_CONV2D, input);
    em_test_fill(rng, w, n, 0.3f);
    em_test_fill(rng, bias, cout, 0.1f);
    node.kernel_h = node.kernel_w = k;
    node.pad_top = node.pad_left = node.pad_bottom = node.pad_right = k / 2;
    node.weight = emb_tensor_f32(b, 4, wdims, w);
    node.bias = emb_tensor_f32(b, 1, bdims, bias);
    node.activation = act;
    free(w);
    free(bias);
    return emb_add_op(b, node, cout);
}

static void bench_residual(const bench_options *o)
{
    static const struct {
        const char *name;
        uint32_t hw, c, expand, resnet;
    } blocks[] = {{"mnv2 56x56 c24 t6", 56, 24, 144, 0}, {"mnv2 28x28 c32 t6", 28, 32, 192, 0},
                  {"mnv2 14x14 c64 t6", 14, 64, 384, 0}, {"mnv2 7x7 c160 t6", 7, 160, 960, 0},
                  {"resnet 32x32 c16", 32, 16, 16, 1},   {"resnet 8x8 c64", 8, 64, 64, 1}};
    size_t i;
    printf("== residual ADD fused into its conv vs conv then ADD (kernels auto): us, min / median ==\n");
    for (i = 0; i < sizeof blocks / sizeof blocks[0]; ++i) {
        emb_builder *b = emb_create();
        em_test_rng rng;
        const uint32_t c = blocks[i].c, hw = blocks[i].hw;
        const uint32_t x = emb_input(b, hw, hw, c);
        uint32_t v, values[2], flags;
        size_t size, n = (size_t)hw * hw * c;
        uint8_t *file;
        float *in = (float *)malloc(n * sizeof(float)), *out = (float *)malloc(n * sizeof(float));
        stats st[2];
        size_t ctx[2];
        if (o->filter != NULL && strstr(blocks[i].name, o->filter) == NULL && strstr("residual", o->filter) == NULL) {
            emb_destroy(b);
            free(in);
            free(out);
            continue;
        }
        em_test_rng_seed(&rng, 7u + (uint32_t)i);
        if (blocks[i].resnet) {
            v = bench_conv(b, &rng, x, c, c, 3, 0, EM_ACT_RELU);
            v = bench_conv(b, &rng, v, c, c, 3, 0, EM_ACT_NONE);
        } else {
            v = bench_conv(b, &rng, x, c, blocks[i].expand, 1, 0, EM_ACT_RELU6);
            v = bench_conv(b, &rng, v, blocks[i].expand, blocks[i].expand, 3, 1, EM_ACT_RELU6);
            v = bench_conv(b, &rng, v, blocks[i].expand, c, 1, 0, EM_ACT_NONE);
        }
        values[0] = v;
        values[1] = x;
        emb_task_auto(b, "block", x, emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_NONE));
        file = emb_finish(b, &size);
        em_test_fill(&rng, in, n, 1.0f);
        for (flags = 0; flags < 2; ++flags) {
            em_load_options options;
            em_model *model = NULL;
            em_context *cx = NULL;
            em_error err;
            double *times = (double *)malloc((size_t)o->runs * sizeof(double));
            void *memory;
            long r;
            memset(&options, 0, sizeof options);
            options.flags = flags ? EM_LOAD_NO_FUSED_ADD : 0u;
            if (em_model_load_ex(file, size, NULL, &options, &model, &err) != EM_STATUS_OK) {
                printf("  %s: %s\n", blocks[i].name, err.message);
                free(times);
                break;
            }
            ctx[flags] = em_model_arena_bytes(model);
            memory = malloc(em_context_size(model));
            em_context_init(model, memory, em_context_size(model), &cx, &err);
            for (r = 0; r < o->warmup; ++r) em_run_task(cx, 0, in, n, out, n, &err);
            for (r = 0; r < o->runs; ++r) {
                const double t0 = now_us();
                em_run_task(cx, 0, in, n, out, n, &err);
                times[r] = now_us() - t0;
            }
            st[flags] = summarize(times, o->runs);
            free(times);
            free(memory);
            em_model_free(model);
        }
        if (flags == 2)
            printf("  %-20s fused %9.1f / %9.1f   unfused %9.1f / %9.1f   median ratio %.3f   arena %zu vs %zu bytes\n",
                   blocks[i].name, st[0].min_us, st[0].median_us, st[1].min_us, st[1].median_us,
                   st[1].median_us / st[0].median_us, ctx[0], ctx[1]);
        free(file);
        free(in);
        free(out);
        emb_destroy(b);
    }
}

int main(int argc, char **argv)
{
    bench_options o;
    int i, models = 0;
    o.runs = 200;
    o.warmup = 20;
    o.filter = NULL;
    o.kernel_filter = NULL;
    o.kernels = 1;
    o.reference = 1;
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            o.runs = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) {
            o.warmup = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            o.filter = argv[++i];
        } else if (strcmp(argv[i], "--kernel") == 0 && i + 1 < argc) {
            o.kernel_filter = argv[++i];
        } else if (strcmp(argv[i], "--no-ref") == 0) {
            o.reference = 0;
        } else if (strcmp(argv[i], "--no-kernels") == 0) {
            o.kernels = 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: em_bench_kernels [--runs N] [--warmup N] [--filter TEXT] [--kernel TEXT] "
                            "[--no-ref] [--no-kernels] [MODEL.emm ...]\n");
            return 2;
        } else {
            ++models;
        }
    }
    if (o.runs < 1) o.runs = 1;
    if (o.warmup < 0) o.warmup = 0;
    em_runtime_set_blas_threads(1);
    printf("cpu: %s\n", em_runtime_cpu_features());
    if (o.kernels) bench_kernels(&o);
    if (o.kernels) bench_residual(&o);
    if (o.kernels) bench_int8_tiles(&o);
    for (i = 1; i < argc; ++i) {
        if (argv[i][0] == '-') {
            if (strcmp(argv[i], "--no-kernels") != 0 && strcmp(argv[i], "--no-ref") != 0) ++i; /* skip its value */
            continue;
        }
        bench_model(argv[i], &o);
    }
    (void)models;
    return 0;
}
