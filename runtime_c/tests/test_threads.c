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

#include "em_test_builder.h"
#include "em_test_util.h"

#define THREADS 8
#define SAMPLES 24
#define ROUNDS 3

/* Two inputs, three tasks: a LUT conv trunk shared by tasks "a" and "b" (forking after the pool), and
 * task "c" on its own input through conv, depthwise and a LUT dense layer. */
static uint8_t *build_model(size_t *size)
{
    const uint32_t cb_dims[3] = {3, 6, 3}, idx_dims[4] = {3, 3, 3, 8}, fc_cb_dims[3] = {8, 5, 4}, head_dims[2] = {6, 4}, conv_dims[4] = {3, 3, 2, 4},
                   dw_dims[4] = {3, 3, 4, 2}, dense_dims[2] = {8, 3}, eight = 8;
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
    n.kernel_h = n.kernel_w = 3;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = 1;
    n.activation = EM_ACT_RELU;
    n.seg_len = 3;
    n.codewords = 6;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, 3, idx);
    n.bias = emb_tensor_f32(b, 1, &eight, bias);
    v = emb_add_op(b, n, 8);
    n = emb_node_init(EM_OP_MAX_POOL, v);
    n.kernel_h = n.kernel_w = n.stride_h = n.stride_w = 2;
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
    n = emb_node_init(EM_OP_DENSE, v);
    n.weight = emb_tensor_f32(b, 2, head_dims, head);
    v = emb_add_op(b, n, 4);
    emb_task_auto(b, "a", in_a, v);
    n = emb_node_init(EM_OP_AVG_POOL, pool);
    n.kernel_h = n.kernel_w = 3;
    n.stride_h = n.stride_w = 2;
    n.pad_bottom = n.pad_right = 1;
    v = emb_add_op(b, n, 0);
    v = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, v), 0); /* (3,3,8) -> flat 72 */
    {
        const uint32_t dims[2] = {72, 3};
        float w[216];
        em_test_fill(&rng, w, 216, 0.2f);
        n = emb_node_init(EM_OP_DENSE, v);
        n.weight = emb_tensor_f32(b, 2, dims, w);
        v = emb_add_op(b, n, 3);
    }
    emb_task_auto(b, "b", in_a, v);

    n = emb_node_init(EM_OP_CONV2D, in_c);
    n.kernel_h = n.kernel_w = 3;
    n.stride_h = n.stride_w = 2;
    n.pad_top = n.pad_left = 1;
    n.activation = EM_ACT_RELU;
    n.weight = emb_tensor_f32(b, 4, conv_dims, conv);
    v = emb_add_op(b, n, 4);
    n = emb_node_init(EM_OP_DEPTHWISE_CONV2D, v);
    n.kernel_h = n.kernel_w = 3;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = 1;
    n.weight = emb_tensor_f32(b, 4, dw_dims, dw);
    v = emb_add_op(b, n, 8);
    v = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
    n = emb_node_init(EM_OP_DENSE, v);
    n.weight = emb_tensor_f32(b, 2, dense_dims, dense);
    v = emb_add_op(b, n, 3);
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
