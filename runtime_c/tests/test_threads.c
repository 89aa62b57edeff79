/* (e) Concurrency: one loaded model shared by 8 threads, each with its own context, gives results identical
 * (bit for bit) to a serial run. The model is read-only after em_model_load and a run touches only its
 * context, so nothing may differ; under ThreadSanitizer or Helgrind this test also shows there is no race.
 *
 * Every thread runs every sample, in its own order (rotated by its id), mixing em_run_all and em_run_task,
 * several rounds, and compares each result with the serial reference computed before the threads start. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_kernels.h"
#include "em_test_builder.h"
#include "em_test_util.h"

#define THREADS 8
#define SAMPLES 24
#define ROUNDS 3

/* Two inputs, three tasks: a LUT conv trunk shared by tasks "a" and "b" (forking after the pool), and
 * task "c" on its own input through conv, depthwise and a LUT dense layer. */
static uint8_t *build_model(size_t *size)
{
    const uint32_t cb_dims[3] = {3, 6, 3}, idx_dims[4] = {3, 3, 3, 8}, fc_cb_dims[3] = {8, 5, 4}, conv_dims[4] = {3, 3, 2, 4},
                   dw_dims[4] = {3, 3, 4, 2}, eight = 8;
    float cb[54], fc_cb[160], head[24], conv[72], dw[72], dense[24], bias[8];
    uint32_t idx[216], fc_idx[48], i, in_a, in_c, v, pool, gap;
    emb_builder *b = emb_create();
    emb_node n;
    uint8_t *file;
    em_test_rng rng;

    em_test_rng_seed(&rng, 77);
    em_test_fill(&rng, cb, 54, 1.0f);
    em_test_fill(&rng, fc_cb, 160, 0.5f);
    em_test_fill(&rng, head, 24, 1.0f);
    em_test_fill(&rng, conv, 72, 1.0f);
    em_test_fill(&rng, dw, 72, 1.0f);
    em_test_fill(&rng, dense, 24, 1.0f);
    em_test_fill(&rng, bias, 8, 0.3f);
    for (i = 0; i < 216; ++i) idx[i] = em_test_rand_below(&rng, 6);
    for (i = 0; i < 48; ++i) fc_idx[i] = em_test_rand_below(&rng, 5);

    in_a = emb_input(b, 12, 12, 7);
    in_c = emb_input(b, 9, 9, 2);
    n = emb_node_init(EM_OP_LUT_CONV2D, in_a);
    emb_node_window(&n, 3, 3, 1, 1, 1, 1, 1, 1);
    n.activation = EM_ACT_RELU;
    n.seg_len = 3;
    n.codewords = 6;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, 3, idx);
    n.bias = emb_tensor_f32(b, 1, &eight, bias);
    v = emb_add_op(b, n, 8);
    n = emb_node_init(EM_OP_MAX_POOL, v);
    emb_node_window(&n, 2, 2, 2, 2, 0, 0, 0, 0);
    pool = emb_add_op(b, n, 0);
    gap = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, pool), 0);
    n = emb_node_init(EM_OP_LUT_DENSE, gap);
    n.seg_len = 4; /* In = 8: S = 2 segments of a codebook 8 deep */
    n.codewords = 5;
    n.activation = EM_ACT_RELU6;
    n.weight = emb_tensor_f32(b, 3, fc_cb_dims, fc_cb);
    {
        const uint32_t dims[2] = {2, 6};
        n.index = emb_tensor_idx(b, 2, dims, 3, fc_idx);
    }
    v = emb_add_op(b, n, 6);
    v = emb_add_dense(b, v, 4, head);
    emb_task_auto(b, "a", in_a, v);
    n = emb_node_init(EM_OP_AVG_POOL, pool);
    emb_node_window(&n, 3, 3, 2, 2, 0, 0, 1, 1);
    v = emb_add_op(b, n, 0);
    v = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, v), 0); /* (3,3,8) -> flat 72 */
    {
        float w[216]; /* [72, 3] */
        em_test_fill(&rng, w, 216, 0.2f);
        v = emb_add_dense(b, v, 3, w);
    }
    emb_task_auto(b, "b", in_a, v);

    n = emb_node_init(EM_OP_CONV2D, in_c);
    emb_node_window(&n, 3, 3, 2, 2, 1, 1, 0, 0);
    n.activation = EM_ACT_RELU;
    n.weight = emb_tensor_f32(b, 4, conv_dims, conv);
    v = emb_add_op(b, n, 4);
    n = emb_node_init(EM_OP_DEPTHWISE_CONV2D, v);
    emb_node_window(&n, 3, 3, 1, 1, 1, 1, 1, 1);
    n.weight = emb_tensor_f32(b, 4, dw_dims, dw);
    v = emb_add_op(b, n, 8);
    v = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
    v = emb_add_dense(b, v, 3, dense);
    emb_task_auto(b, "c", in_c, v);
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

typedef struct shared_state {
    const em_model *model;
    uint32_t input_count, task_count;
    size_t input_numel[2];
    uint32_t classes[3], task_input[3];
    float *inputs[SAMPLES][2];
    float *expected[SAMPLES][3]; /* serial em_run_all results */
    pthread_mutex_t lock;
    pthread_cond_t go;
    int started, released;
} shared_state;

typedef struct worker {
    shared_state *s;
    int id;
    int mismatches, failures;
    unsigned long runs;
} worker;

static void *worker_main(void *arg)
{
    worker *w = (worker *)arg;
    shared_state *s = w->s;
    const size_t bytes = em_context_size(s->model);
    void *memory = malloc(bytes);
    em_context *ctx = NULL;
    em_error err;
    float out[3][8];
    int round, k;
    uint32_t t;

    if (memory == NULL || em_context_init(s->model, memory, bytes, &ctx, &err) != EM_STATUS_OK) {
        ++w->failures;
        free(memory);
        return NULL;
    }
    /* wait until every thread is ready, so that the runs really overlap */
    pthread_mutex_lock(&s->lock);
    ++s->started;
    while (!s->released) pthread_cond_wait(&s->go, &s->lock);
    pthread_mutex_unlock(&s->lock);

    for (round = 0; round < ROUNDS; ++round) {
        for (k = 0; k < SAMPLES; ++k) {
            const int sample = (k + w->id * 5 + round) % SAMPLES;
            const float *in[2];
            float *outs[3];
            in[0] = s->inputs[sample][0];
            in[1] = s->inputs[sample][1];
            for (t = 0; t < 3; ++t) outs[t] = out[t];
            if ((sample + w->id + round) % 2 == 0) {
                if (em_run_all(ctx, in, outs, &err) != EM_STATUS_OK) ++w->failures;
            } else {
                for (t = 0; t < s->task_count; ++t)
                    if (em_run_task(ctx, t, in[s->task_input[t]], s->input_numel[s->task_input[t]], out[t],
                                    s->classes[t], &err) != EM_STATUS_OK)
                        ++w->failures;
            }
            for (t = 0; t < s->task_count; ++t)
                if (memcmp(out[t], s->expected[sample][t], s->classes[t] * sizeof(float)) != 0) ++w->mismatches;
            ++w->runs;
        }
    }
    free(memory);
    return NULL;
}

/* (f) The runtime's own threads: a model loaded with EM_LOAD_PARALLEL_TASKS runs its task lanes on pools of
 * 1, 2 and 4 workers (and with no pool), on every kernel set of this CPU; every output must have the bits of
 * the serial plan's em_run_all. Two contexts share one pool from two threads at once too (a run that finds
 * the pool busy does its lanes itself): same bits. */
typedef struct pool_user {
    em_context *ctx;
    const float *const *in;
    float out[3][8];
    int failures;
} pool_user;

static void *pool_user_main(void *arg)
{
    pool_user *u = (pool_user *)arg;
    float *outs[3];
    em_error err;
    int k;
    outs[0] = u->out[0];
    outs[1] = u->out[1];
    outs[2] = u->out[2];
    for (k = 0; k < 50; ++k)
        if (em_run_all(u->ctx, u->in, outs, &err) != EM_STATUS_OK) ++u->failures;
    return NULL;
}

static void check_pools(const uint8_t *file, size_t size, const shared_state *s)
{
    static const uint32_t pool_sizes[4] = {0, 1, 2, 4};
    uint32_t kernels;
    for (kernels = EM_KERNELS_REFERENCE; kernels < EM_KERNELS_COUNT; ++kernels) {
        em_model *model = NULL;
        em_error err;
        size_t p;
        if (!em_kernels_available(kernels)) continue;
        if (em_test_load_with(file, size, NULL, kernels, EM_LOAD_PARALLEL_TASKS, &model, &err) != EM_STATUS_OK) {
            CHECKF(0, "load with EM_LOAD_PARALLEL_TASKS on %s: %s", em_kernels_name(kernels), err.message);
            continue;
        }
        CHECKF(em_model_task_lanes(model) == 3, "%u lanes on %s", (unsigned)em_model_task_lanes(model),
               em_kernels_name(kernels));
        for (p = 0; p < 4; ++p) {
            em_model *serial = NULL;
            em_pool *pool = NULL;
            em_context *ctx = NULL;
            void *memory = malloc(em_context_size(model));
            int sample, mismatches = 0;
            uint32_t t;
            if (em_test_load_with(file, size, NULL, kernels, 0, &serial, &err) != EM_STATUS_OK || memory == NULL ||
                em_context_init(model, memory, em_context_size(model), &ctx, &err) != EM_STATUS_OK ||
                (pool_sizes[p] > 0 && em_pool_create(pool_sizes[p], NULL, &pool, &err) != EM_STATUS_OK)) {
                CHECKF(0, "set-up for %u threads: %s", (unsigned)pool_sizes[p], err.message);
                free(memory);
                em_model_free(serial);
                continue;
            }
            em_context_set_pool(ctx, pool);
            for (sample = 0; sample < SAMPLES; ++sample) {
                float got[3][8], want[3][8];
                float *outs[3] = {got[0], got[1], got[2]}, *wants[3] = {want[0], want[1], want[2]};
                const float *in[2] = {s->inputs[sample][0], s->inputs[sample][1]};
                void *serial_memory = malloc(em_context_size(serial));
                em_context *serial_ctx = NULL;
                if (serial_memory == NULL ||
                    em_context_init(serial, serial_memory, em_context_size(serial), &serial_ctx, &err) != EM_STATUS_OK ||
                    em_run_all(serial_ctx, in, wants, &err) != EM_STATUS_OK || em_run_all(ctx, in, outs, &err) != EM_STATUS_OK) {
                    CHECKF(0, "run: %s", err.message);
                    free(serial_memory);
                    break;
                }
                free(serial_memory);
                for (t = 0; t < s->task_count; ++t)
                    if (memcmp(got[t], want[t], s->classes[t] * sizeof(float)) != 0) ++mismatches;
            }
            CHECKF(mismatches == 0, "%s, %u threads: %d task outputs differ from the serial plan", em_kernels_name(kernels),
                   (unsigned)pool_sizes[p], mismatches);
            CHECKF(em_context_node_runs(ctx, 0) == SAMPLES, "node 0 ran %llu times",
                   (unsigned long long)em_context_node_runs(ctx, 0));
            if (pool_sizes[p] == 2) { /* two contexts, one pool, two threads at once */
                pool_user users[2];
                pthread_t handles[2];
                void *more = malloc(em_context_size(model));
                const float *in[2] = {s->inputs[3][0], s->inputs[3][1]};
                int u;
                memset(users, 0, sizeof users);
                users[0].ctx = ctx;
                users[0].in = in;
                users[1].in = in;
                if (more != NULL && em_context_init(model, more, em_context_size(model), &users[1].ctx, &err) == EM_STATUS_OK) {
                    em_context_set_pool(users[1].ctx, pool);
                    for (u = 0; u < 2; ++u) pthread_create(&handles[u], NULL, pool_user_main, &users[u]);
                    for (u = 0; u < 2; ++u) pthread_join(handles[u], NULL);
                    for (u = 0; u < 2; ++u) {
                        CHECK(users[u].failures == 0);
                        for (t = 0; t < s->task_count; ++t)
                            CHECKF(memcmp(users[u].out[t], s->expected[3][t], s->classes[t] * sizeof(float)) == 0 ||
                                       kernels != em_model_kernels(s->model),
                                   "shared pool: context %d task %u differs", u, (unsigned)t);
                    }
                }
                free(more);
            }
            em_pool_free(pool);
            free(memory);
            em_model_free(serial);
        }
        em_model_free(model);
    }
    {
        em_pool *pool = NULL;
        em_error err;
        CHECK(em_pool_create(0, NULL, &pool, &err) == EM_STATUS_BAD_ARGUMENT && pool == NULL);
        CHECK(em_pool_create(EM_MAX_THREADS + 1u, NULL, &pool, &err) == EM_STATUS_BAD_ARGUMENT);
    }
    printf("test_threads: lane plans on pools of 0/1/2/4 workers give the serial plan's bits on every kernel set\n");
}

/* ---- (g) nodes split over the pool's threads ------------------------------------------------------------
 * A model with a node for every splitting kernel:
 * planar LUT convolutions (stride 1, stride 2, banded, a shared table), a decoded r = 1 LUT convolution,
 * direct 3×3 (padded) and 1×1 convolutions, depthwise (multiplier 1 and 2), max / average pools, dense and
 * LUT dense layers (outputs not multiples of EM_SPLIT_COLUMNS, a shared table). Four tasks, two inputs:
 * in_a is 20·scale_a square (8 channels), in_b 16·scale_b square (1 channel). The pieces are checked on
 * the small model (1, 1: quick under qemu); whole runs on a grown one (2, 3), 12 or more of whose nodes pass
 * EM_SPLIT_MIN_COST (about 1 M cost units, em_kernels.h), so the pool really splits them. */
static uint32_t add_random(emb_builder *b, em_test_rng *rng, uint32_t ndim, const uint32_t *dims, float scale)
{
    size_t n = 1, i;
    uint32_t id;
    float *v;
    for (i = 0; i < ndim; ++i) n *= dims[i];
    v = (float *)malloc(n * sizeof(float));
    em_test_fill(rng, v, n, scale);
    id = emb_tensor_f32(b, ndim, dims, v);
    free(v);
    return id;
}

static uint32_t add_random_idx(emb_builder *b, em_test_rng *rng, uint32_t ndim, const uint32_t *dims, uint32_t codewords)
{
    size_t n = 1, i;
    uint32_t id, bits = 1;
    uint32_t *v;
    while ((1u << bits) < codewords) ++bits;
    for (i = 0; i < ndim; ++i) n *= dims[i];
    v = (uint32_t *)malloc(n * sizeof(uint32_t));
    for (i = 0; i < n; ++i) v[i] = em_test_rand_below(rng, codewords);
    id = emb_tensor_idx(b, ndim, dims, bits, v);
    free(v);
    return id;
}

/* a LUT conv k×k, 'same' padding for stride 1, codebook `codebook` (0: a new one) */
static uint32_t add_lut_conv(emb_builder *b, em_test_rng *rng, uint32_t in, uint32_t cin, uint32_t cout, uint32_t k,
                             uint32_t stride, uint32_t r, uint32_t C, uint32_t *codebook)
{
    const uint32_t S = (cin + r - 1u) / r, cb_dims[3] = {S, C, r}, idx_dims[4] = {k, k, S, cout};
    emb_node n = emb_node_init(EM_OP_LUT_CONV2D, in);
    emb_node_window(&n, k, k, stride, stride, k / 2u, k / 2u, stride == 1 ? k / 2u : 0u, stride == 1 ? k / 2u : 0u);
    n.activation = EM_ACT_RELU;
    n.seg_len = r;
    n.codewords = C;
    if (*codebook == 0) *codebook = add_random(b, rng, 3, cb_dims, 0.5f);
    n.weight = *codebook;
    n.index = add_random_idx(b, rng, 4, idx_dims, C);
    n.bias = add_random(b, rng, 1, &cout, 0.2f);
    return emb_add_op(b, n, cout);
}

static uint32_t add_window(emb_builder *b, em_test_rng *rng, uint32_t op, uint32_t in, uint32_t cin, uint32_t cout,
                           uint32_t k, uint32_t stride, uint32_t pad, uint32_t activation)
{
    emb_node n = emb_node_init(op, in);
    emb_node_window(&n, k, k, stride, stride, pad, pad, pad, pad);
    n.activation = activation;
    if (op == EM_OP_CONV2D || op == EM_OP_DEPTHWISE_CONV2D) {
        const uint32_t dims[4] = {k, k, cin, op == EM_OP_CONV2D ? cout : cout / cin};
        n.weight = add_random(b, rng, 4, dims, 0.3f);
        n.bias = add_random(b, rng, 1, &cout, 0.2f);
    }
    return emb_add_op(b, n, op == EM_OP_CONV2D || op == EM_OP_DEPTHWISE_CONV2D ? cout : 0u);
}

static uint32_t add_dense(emb_builder *b, em_test_rng *rng, uint32_t in, uint32_t in_count, uint32_t out,
                          uint32_t r, uint32_t C, uint32_t *codebook)
{
    emb_node n = emb_node_init(r ? EM_OP_LUT_DENSE : EM_OP_DENSE, in);
    n.activation = EM_ACT_RELU6;
    if (r) {
        const uint32_t S = (in_count + r - 1u) / r, cb_dims[3] = {S, C, r}, idx_dims[2] = {S, out};
        n.seg_len = r;
        n.codewords = C;
        if (*codebook == 0) *codebook = add_random(b, rng, 3, cb_dims, 0.3f);
        n.weight = *codebook;
        n.index = add_random_idx(b, rng, 2, idx_dims, C);
    } else {
        const uint32_t dims[2] = {in_count, out};
        n.weight = add_random(b, rng, 2, dims, 0.1f);
    }
    n.bias = add_random(b, rng, 1, &out, 0.2f);
    return emb_add_op(b, n, out);
}

static uint8_t *build_split_model(uint32_t scale_a, uint32_t scale_b, size_t *size)
{
    emb_builder *b = emb_create();
    em_test_rng rng;
    uint32_t in_a, in_b, v, trunk, flat, none = 0, first_cb = 0, dense_cb = 0;
    uint8_t *file;
    em_test_rng_seed(&rng, 1717);
    in_a = emb_input(b, 20u * scale_a, 20u * scale_a, 8);
    in_b = emb_input(b, 16u * scale_b, 16u * scale_b, 1);
    /* task x: LUT convs (stride 1, banded, stride 2), depthwise ×2, direct conv, pools, dense, LUT dense */
    trunk = add_lut_conv(b, &rng, in_a, 8, 24, 3, 1, 8, 16, &first_cb);
    v = add_lut_conv(b, &rng, trunk, 24, 8, 3, 1, 24, 160, &none); /* a 290 KB table: banded */
    v = add_window(b, &rng, EM_OP_DEPTHWISE_CONV2D, v, 8, 8, 3, 1, 1, EM_ACT_RELU);
    none = 0;
    v = add_lut_conv(b, &rng, trunk, 24, 20, 3, 2, 6, 20, &none); /* stride 2: four phase planes */
    v = add_window(b, &rng, EM_OP_CONV2D, v, 20, 36, 3, 1, 1, EM_ACT_RELU6);
    v = add_window(b, &rng, EM_OP_DEPTHWISE_CONV2D, v, 36, 72, 3, 1, 1, EM_ACT_NONE);
    v = add_window(b, &rng, EM_OP_MAX_POOL, v, 72, 0, 2, 2, 0, EM_ACT_NONE);
    v = add_window(b, &rng, EM_OP_AVG_POOL, v, 72, 0, 3, 1, 1, EM_ACT_RELU);
    flat = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, v), 0);
    v = add_dense(b, &rng, flat, 25u * scale_a * scale_a * 72u, 200, 0, 0, &none);
    none = 0;
    v = add_dense(b, &rng, v, 200, 300, 8, 32, &dense_cb);
    v = add_dense(b, &rng, v, 300, 10, 0, 0, &none);
    emb_task_auto(b, "x", in_a, v);
    /* task z: the first layer's table again (same input, codebook, r, C, window): a shared table */
    v = add_lut_conv(b, &rng, in_a, 8, 16, 3, 1, 8, 16, &first_cb);
    v = add_window(b, &rng, EM_OP_MAX_POOL, v, 16, 0, 2, 2, 0, EM_ACT_NONE);
    v = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
    none = 0;
    v = add_dense(b, &rng, v, 16, 4, 0, 0, &none);
    emb_task_auto(b, "z", in_a, v);
    /* task y: a decoded r = 1 LUT conv, a 1×1 conv, LUT dense layers sharing a table */
    none = 0;
    v = add_lut_conv(b, &rng, in_b, 1, 16, 5, 1, 1, 8, &none);
    v = add_window(b, &rng, EM_OP_CONV2D, v, 16, 32, 1, 1, 0, EM_ACT_RELU);
    flat = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, add_window(b, &rng, EM_OP_MAX_POOL, v, 32, 0, 2, 2, 0,
                                                                   EM_ACT_NONE)), 0);
    dense_cb = 0;
    v = add_dense(b, &rng, flat, 64u * scale_b * scale_b * 32u, 200, 16, 64, &dense_cb);
    emb_task_auto(b, "y", in_b, v);
    v = add_dense(b, &rng, flat, 64u * scale_b * scale_b * 32u, 130, 16, 64, &dense_cb);
    emb_task_auto(b, "w", in_b, v);
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

/* run_part against run, node by node: every splitting kernel of the model on every kernel set, its steps'
 * pieces run one at a time from the last to the first, and in groups of three, on random inputs (and a
 * random residual where the node fuses one), with its table in scratch and shared; the output must have
 * run()'s bits, and be close to the reference kernel's. */
static int split_pieces(const em_node *node, const float *input, float *output, em_kernel_env *env, uint32_t group)
{
    uint32_t step, units, pieces = 0;
    for (step = 0; node->kernel->split(node, env, step, &units) != 0; ++step) {
        if (group == 0) {
            uint32_t u;
            for (u = units; u-- > 0;) node->kernel->run_part(node, input, output, env, step, u, u + 1u);
        } else {
            uint32_t u;
            for (u = 0; u < units; u += group)
                node->kernel->run_part(node, input, output, env, step, u, u + group < units ? u + group : units);
        }
        pieces += units;
    }
    return pieces > 0;
}

static void check_split_parts(const uint8_t *file, size_t size)
{
    uint32_t kernels, seen[EM_ALGO_COUNT] = {0};
    em_model *ref = NULL;
    em_error err;
    em_test_rng rng;
    em_test_rng_seed(&rng, 99);
    if (em_model_load(file, size, NULL, &ref, &err) != EM_STATUS_OK) { /* AUTO only for the node shapes */
        CHECKF(0, "load: %s", err.message);
        return;
    }
    em_model_free(ref);
    ref = NULL;
    {
        em_load_options options;
        memset(&options, 0, sizeof options);
        options.kernels = EM_KERNELS_REFERENCE;
        if (em_model_load_ex(file, size, NULL, &options, &ref, &err) != EM_STATUS_OK) {
            CHECKF(0, "load on ref: %s", err.message);
            return;
        }
    }
    for (kernels = EM_KERNELS_REFERENCE + 1u; kernels < EM_KERNELS_COUNT; ++kernels) {
        em_load_options options;
        em_model *model = NULL;
        uint32_t n;
        if (!em_kernels_available(kernels)) continue;
        memset(&options, 0, sizeof options);
        options.kernels = kernels;
        if (em_model_load_ex(file, size, NULL, &options, &model, &err) != EM_STATUS_OK) {
            CHECKF(0, "load on %s: %s", em_kernels_name(kernels), err.message);
            continue;
        }
        for (n = 0; n < model->node_count; ++n) {
            const em_node *node = &model->nodes[n], *ref_node = &ref->nodes[n];
            const size_t in_numel = node->in.numel, out_numel = node->out.numel;
            float *input, *want, *got, *scratch, *table, *residual, *ref_out, *ref_scratch;
            double *ref_double;
            int shared, group;
            size_t i;
            if (node->kernel->split == NULL) continue;
            CHECKF(node->kernel->run_part != NULL, "%s has split() but no run_part", node->kernel->name);
            if (node->kernel->run_part == NULL) continue;
            input = (float *)malloc(in_numel * sizeof(float));
            residual = (float *)malloc(out_numel * sizeof(float));
            want = (float *)malloc(out_numel * sizeof(float));
            got = (float *)malloc(out_numel * sizeof(float));
            ref_out = (float *)malloc(out_numel * sizeof(float));
            ref_double = (double *)malloc(out_numel * sizeof(double));
            scratch = (float *)malloc(node->scratch_bytes + 64u);
            table = (float *)malloc(node->table_bytes + 64u);
            ref_scratch = (float *)malloc(ref_node->scratch_bytes + 64u);
            em_test_fill(&rng, input, in_numel, 1.0f);
            em_test_fill(&rng, residual, out_numel, 1.0f);
            ref_node->kernel->eval(ref_node, input, ref_out, ref_scratch);
            for (i = 0; i < out_numel; ++i) ref_double[i] = ref_out[i];
            for (shared = 0; shared < 2; ++shared) {
                em_kernel_env env;
                unsigned char ready = 0;
                if (shared && !node->table_shareable) continue;
                memset(&env, 0, sizeof env);
                env.scratch = scratch;
                env.residual = node->residual != EM_NONE ? residual : NULL;
                if (shared) {
                    env.shared_table = table;
                    env.table_ready = &ready;
                }
                node->kernel->run(node, input, want, &env);
                if (node->residual == EM_NONE)
                    em_test_close(want, ref_double, out_numel, 1e-4, node->kernel->name);
                for (group = 0; group < 4; group += 3) {
                    ready = 0;
                    memset(got, 0xA5, out_numel * sizeof(float));
                    CHECKF(split_pieces(node, input, got, &env, (uint32_t)group), "%s: no pieces", node->kernel->name);
                    CHECKF(memcmp(got, want, out_numel * sizeof(float)) == 0,
                           "%s node %u (%s table, pieces %s): run_part differs from run", node->kernel->name,
                           (unsigned)n, shared ? "shared" : "own", group ? "by 3" : "one by one, backwards");
                    if (shared) { /* a table another node built: the table step has no pieces, same bits */
                        memset(got, 0xA5, out_numel * sizeof(float));
                        split_pieces(node, input, got, &env, (uint32_t)group);
                        CHECK(memcmp(got, want, out_numel * sizeof(float)) == 0);
                    }
                }
            }
            ++seen[node->kernel->algorithm];
            free(input);
            free(residual);
            free(want);
            free(got);
            free(ref_out);
            free(ref_double);
            free(scratch);
            free(table);
            free(ref_scratch);
        }
        em_model_free(model);
    }
    em_model_free(ref);
    CHECKF(seen[EM_ALGO_LUT_TABLES] > 0 && seen[EM_ALGO_LUT_DECODED] > 0 && seen[EM_ALGO_DIRECT] > 0 &&
               seen[EM_ALGO_ROWS] > 0 && seen[EM_ALGO_GEMV] > 0,
           "splitting kernels seen: tables %u decoded %u direct %u rows %u gemv %u", seen[EM_ALGO_LUT_TABLES],
           seen[EM_ALGO_LUT_DECODED], seen[EM_ALGO_DIRECT], seen[EM_ALGO_ROWS], seen[EM_ALGO_GEMV]);
    printf("test_threads: run_part pieces in any grouping give run()'s bits (and the reference's values) for every "
           "splitting kernel on every kernel set\n");
}

/* The whole model on pools of 1, 2 and 4 workers (and none), serial plan and lane plan, em_run_all and
 * em_run_task, every kernel set: the same bits as without a pool; and the nodes really are split. */
static void check_split_runs(const uint8_t *file, size_t size, size_t in_a_numel, size_t in_b_numel)
{
    static const uint32_t pool_sizes[3] = {1, 2, 4};
    uint32_t kernels;
    em_test_rng rng;
    float *inputs[2];
    em_test_rng_seed(&rng, 4242);
    inputs[0] = (float *)malloc(in_a_numel * sizeof(float));
    inputs[1] = (float *)malloc(in_b_numel * sizeof(float));
    em_test_fill(&rng, inputs[0], in_a_numel, 1.0f);
    em_test_fill(&rng, inputs[1], in_b_numel, 1.0f);
    for (kernels = EM_KERNELS_REFERENCE; kernels < EM_KERNELS_COUNT; ++kernels) {
        uint32_t flags;
        if (!em_kernels_available(kernels)) continue;
        for (flags = 0; flags <= EM_LOAD_PARALLEL_TASKS; flags += EM_LOAD_PARALLEL_TASKS) {
            em_load_options options;
            em_model *model = NULL;
            em_error err;
            float want[4][300], want_task[4][300];
            uint32_t t, n, split = 0, p;
            memset(&options, 0, sizeof options);
            options.kernels = kernels;
            options.flags = flags;
            if (em_model_load_ex(file, size, NULL, &options, &model, &err) != EM_STATUS_OK) {
                CHECKF(0, "load on %s: %s", em_kernels_name(kernels), err.message);
                continue;
            }
            for (n = 0; n < model->node_count; ++n) split += model->nodes[n].split != 0;
            CHECKF(kernels == EM_KERNELS_REFERENCE ? split == 0 : split >= 12, "%s: %u nodes split",
                   em_kernels_name(kernels), (unsigned)split);
            for (p = 0; p < 4; ++p) {
                void *memory = malloc(em_context_size(model));
                em_context *ctx = NULL;
                em_pool *pool = NULL;
                float got[4][300];
                float *outs[4] = {got[0], got[1], got[2], got[3]};
                int mismatches = 0, round;
                if (memory == NULL || em_context_init(model, memory, em_context_size(model), &ctx, &err) != EM_STATUS_OK ||
                    (p > 0 && em_pool_create(pool_sizes[p - 1], NULL, &pool, &err) != EM_STATUS_OK)) {
                    CHECKF(0, "set-up: %s", err.message);
                    free(memory);
                    continue;
                }
                em_context_set_pool(ctx, pool);
                for (round = 0; round < 3; ++round) { /* again: shared tables are rebuilt every run */
                    if (em_run_all(ctx, (const float *const *)inputs, outs, &err) != EM_STATUS_OK) {
                        CHECKF(0, "run_all: %s", err.message);
                        break;
                    }
                    for (t = 0; t < model->task_count; ++t) {
                        const em_task *task = &model->tasks[t];
                        float one[300];
                        if (p == 0 && round == 0) memcpy(want[t], got[t], task->classes * sizeof(float));
                        else if (memcmp(got[t], want[t], task->classes * sizeof(float)) != 0) ++mismatches;
                        if (em_run_task(ctx, t, inputs[task->input], model->value_shapes[task->input].numel, one,
                                        task->classes, &err) != EM_STATUS_OK) {
                            CHECKF(0, "run_task: %s", err.message);
                            continue;
                        }
                        if (p == 0 && round == 0) memcpy(want_task[t], one, task->classes * sizeof(float));
                        else if (memcmp(one, want_task[t], task->classes * sizeof(float)) != 0) ++mismatches;
                        if (memcmp(one, want[t], task->classes * sizeof(float)) != 0) ++mismatches;
                    }
                }
                CHECKF(mismatches == 0, "%s%s, %u threads: %d outputs differ from the run without a pool",
                       em_kernels_name(kernels), flags ? " (lanes)" : "", p ? (unsigned)pool_sizes[p - 1] : 0u,
                       mismatches);
                em_pool_free(pool);
                free(memory);
            }
            em_model_free(model);
        }
    }
    free(inputs[0]);
    free(inputs[1]);
    printf("test_threads: split nodes on pools of 1/2/4 workers give the bits of the run without a pool on every "
           "kernel set\n");
}

int main(void)
{
    size_t size, bytes;
    uint8_t *file = build_model(&size);
    em_model *model = NULL;
    em_context *ctx = NULL;
    void *memory;
    em_error err;
    em_status st;
    shared_state s;
    worker workers[THREADS];
    pthread_t threads[THREADS];
    em_test_rng rng;
    uint32_t t, i;
    int k, mismatches = 0, failures = 0, created = 0;
    unsigned long runs = 0;

    st = em_model_load(file, size, NULL, &model, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    if (st != EM_STATUS_OK) return em_test_summary("test_threads");
    memset(&s, 0, sizeof s);
    s.model = model;
    s.input_count = em_model_input_count(model);
    s.task_count = em_model_task_count(model);
    CHECK(s.input_count == 2 && s.task_count == 3);
    for (i = 0; i < s.input_count; ++i) {
        uint32_t h, w, c;
        em_model_input_shape(model, i, &h, &w, &c);
        s.input_numel[i] = (size_t)h * w * c;
    }
    for (t = 0; t < s.task_count; ++t) {
        em_task_info info;
        em_model_task_info(model, t, &info);
        s.classes[t] = info.classes;
        s.task_input[t] = info.input_index;
    }

    /* the serial reference */
    bytes = em_context_size(model);
    memory = malloc(bytes);
    st = em_context_init(model, memory, bytes, &ctx, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    em_test_rng_seed(&rng, 5);
    for (k = 0; k < SAMPLES; ++k) {
        float *outs[3];
        for (i = 0; i < s.input_count; ++i) {
            s.inputs[k][i] = (float *)malloc(s.input_numel[i] * sizeof(float));
            em_test_fill(&rng, s.inputs[k][i], s.input_numel[i], 1.0f);
        }
        for (t = 0; t < s.task_count; ++t) outs[t] = s.expected[k][t] = (float *)malloc(s.classes[t] * sizeof(float));
        st = em_run_all(ctx, (const float *const *)s.inputs[k], outs, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
    }
    free(memory);

    /* the same on 8 threads at once */
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.go, NULL);
    for (k = 0; k < THREADS; ++k) {
        workers[k].s = &s;
        workers[k].id = k;
        workers[k].mismatches = workers[k].failures = 0;
        workers[k].runs = 0;
        if (pthread_create(&threads[k], NULL, worker_main, &workers[k]) == 0) ++created;
    }
    CHECKF(created == THREADS, "created %d of %d threads", created, THREADS);
    for (;;) { /* release them together once all are waiting */
        int ready;
        pthread_mutex_lock(&s.lock);
        ready = s.started == created;
        if (ready) {
            s.released = 1;
            pthread_cond_broadcast(&s.go);
        }
        pthread_mutex_unlock(&s.lock);
        if (ready) break;
    }
    for (k = 0; k < created; ++k) {
        pthread_join(threads[k], NULL);
        mismatches += workers[k].mismatches;
        failures += workers[k].failures;
        runs += workers[k].runs;
    }
    CHECKF(failures == 0, "%d runs failed on the threads", failures);
    CHECKF(mismatches == 0, "%d task results on the threads differ from the serial run", mismatches);
    CHECKF(runs == (unsigned long)THREADS * ROUNDS * SAMPLES, "%lu runs on the threads", runs);
    printf("test_threads: %d threads, %lu concurrent runs, all identical to the serial run\n", created, runs);

    check_pools(file, size, &s);
    {
        size_t split_size;
        uint8_t *split_file = build_split_model(1, 1, &split_size);
        check_split_parts(split_file, split_size);
        free(split_file);
        split_file = build_split_model(2, 3, &split_size);
        check_split_runs(split_file, split_size, 40u * 40u * 8u, 48u * 48u);
        free(split_file);
    }
    pthread_cond_destroy(&s.go);
    pthread_mutex_destroy(&s.lock);
    for (k = 0; k < SAMPLES; ++k) {
        for (i = 0; i < s.input_count; ++i) free(s.inputs[k][i]);
        for (t = 0; t < s.task_count; ++t) free(s.expected[k][t]);
    }
    em_model_free(model);
    free(file);
    return em_test_summary("test_threads");
}
