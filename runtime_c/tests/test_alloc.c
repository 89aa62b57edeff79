/* (d) Allocation failures: an allocator that fails the n-th allocation, for every n, makes
 * em_model_load return EM_STATUS_NO_MEMORY with nothing leaked; loads that fail for any other reason
 * (every truncation) leak nothing either; contexts and runs never allocate, with any kernel set. */
#include <stdlib.h>
#include <string.h>

#include "em_test_builder.h"
#include "em_counting_alloc.h"
#include "em_test_util.h"


/* Two tasks, named nodes (so every allocation of the loader happens: model, META scratch, tasks,
 * value shapes, nodes, tensors, plans, names). */
static uint8_t *build_model(size_t *size)
{
    const uint32_t cb_dims[3] = {2, 4, 3}, idx_dims[4] = {3, 3, 2, 5}, fc_cb_dims[3] = {2, 3, 4},
                   fc_idx_dims[2] = {2, 6};
    float cb[24], fc_cb[24], w[10];
    uint32_t idx[90], fc_idx[12], i, in, v, gap;
    emb_builder *b = emb_create();
    emb_node n;
    uint8_t *file;
    em_test_rng rng;

    em_test_rng_seed(&rng, 41);
    em_test_fill(&rng, cb, 24, 1.0f);
    em_test_fill(&rng, fc_cb, 24, 1.0f);
    em_test_fill(&rng, w, 10, 1.0f);
    for (i = 0; i < 90; ++i) idx[i] = em_test_rand_below(&rng, 4);
    for (i = 0; i < 12; ++i) fc_idx[i] = em_test_rand_below(&rng, 3);
    emb_meta_string(b, "node.0.name", "trunk/conv");
    emb_meta_string(b, "node.2.name", "a/fc");
    emb_meta_string(b, "node.3.name", "b/head");

    in = emb_input(b, 5, 5, 4);
    n = emb_node_init(EM_OP_LUT_CONV2D, in);
    n.kernel_h = n.kernel_w = 3;
    n.seg_len = 3;
    n.codewords = 4;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, 2, idx);
    v = emb_add_op(b, n, 5);
    gap = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
    n = emb_node_init(EM_OP_LUT_DENSE, gap);
    n.seg_len = 4;
    n.codewords = 3;
    n.weight = emb_tensor_f32(b, 3, fc_cb_dims, fc_cb);
    n.index = emb_tensor_idx(b, 2, fc_idx_dims, 2, fc_idx);
    v = emb_add_op(b, n, 6);
    emb_task_auto(b, "a", in, v);
    v = emb_add_dense(b, gap, 2, w);
    emb_task_auto(b, "b", in, v);
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

/* A format-v2 model (a conv feeding a residual ADD, a CONCAT of three values): the node-input table and the
 * task planner's marks fail cleanly too, on every kernel set (the fused ADD on the fast ones). */
static void test_v2(const em_allocator *allocator, em_counting_allocator *counter)
{
    const uint32_t w_dims[4] = {1, 1, 3, 3};
    float w[9];
    uint32_t x, v, values[3], set;
    emb_builder *b = emb_create();
    em_test_rng rng;
    emb_node n;
    size_t size, needed, k;
    uint8_t *file;
    em_model *model = NULL;
    em_error err;
    em_status st;

    em_test_rng_seed(&rng, 43);
    em_test_fill(&rng, w, 9, 1.0f);
    x = emb_input(b, 4, 3, 3);
    n = emb_node_init(EM_OP_CONV2D, x);
    n.weight = emb_tensor_f32(b, 4, w_dims, w);
    v = emb_add_op(b, n, 3);
    values[0] = v;
    values[1] = x;
    v = emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_RELU);
    values[0] = v;
    values[1] = x;
    values[2] = v;
    emb_task_auto(b, "t", x, emb_add_multi(b, EM_OP_CONCAT, values, 3, EM_ACT_NONE));
    file = emb_finish(b, &size);
    emb_destroy(b);

    for (set = EM_KERNELS_AUTO; set < EM_KERNELS_COUNT; ++set) {
        em_load_options options;
        if (!em_kernels_available(set)) continue;
        memset(&options, 0, sizeof options);
        options.kernels = set;
        memset(counter, 0, sizeof *counter);
        st = em_model_load_ex(file, size, allocator, &options, &model, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        needed = counter->calls;
        {
            void *memory = model != NULL ? malloc(em_context_size(model)) : NULL;
            float in[36], out[108];
            em_context *ctx = NULL;
            memset(in, 0, sizeof in);
            if (memory != NULL && em_context_init(model, memory, em_context_size(model), &ctx, &err) == EM_STATUS_OK)
                CHECK(em_run_task(ctx, 0, in, 36, out, 108, &err) == EM_STATUS_OK);
            CHECKF(counter->calls == needed, "v2, kernel set %s: a run allocated", em_kernels_name(set));
            free(memory);
        }
        em_model_free(model);
        CHECK(counter->live == 0);
        for (k = 1; k <= needed; ++k) {
            memset(counter, 0, sizeof *counter);
            counter->fail_at = k;
            st = em_model_load_ex(file, size, allocator, &options, &model, &err);
            CHECKF(st == EM_STATUS_NO_MEMORY && model == NULL && counter->live == 0,
                   "v2, kernel set %s, allocation %zu failing: status %s, %zu leaked (%s)", em_kernels_name(set), k,
                   em_status_name(st), counter->live, err.message);
        }
    }
    free(file);
}

int main(void)
{
    size_t size, n, needed;
    uint8_t *file = build_model(&size);
    em_counting_allocator counter;
    em_allocator allocator;
    em_model *model = NULL;
    em_context *ctx = NULL;
    em_error err;
    em_status st;

    em_counting_allocator_bind(&allocator, &counter);

    /* how many allocations a successful load makes */
    memset(&counter, 0, sizeof counter);
    st = em_model_load(file, size, &allocator, &model, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    needed = counter.calls;
    CHECKF(needed >= 8, "a successful load made %zu allocations, expected every table to be allocated", needed);
    /* the META scratch table, the task planner's node marks and the context planner's two work spaces
     * (schedule, buffers) are freed before returning */
    CHECK(counter.live == needed - 4);

    /* contexts and runs do not allocate */
    if (model != NULL) {
        void *memory = malloc(em_context_size(model));
        float x[5 * 5 * 4], ya[6], yb[2];
        const float *inputs[1];
        float *outputs[2];
        memset(x, 0, sizeof x);
        inputs[0] = x;
        outputs[0] = ya;
        outputs[1] = yb;
        st = em_context_init(model, memory, em_context_size(model), &ctx, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        st = em_run_all(ctx, inputs, outputs, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        st = em_run_task(ctx, 1, x, 100, yb, 2, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(counter.calls == needed);
        free(memory);
    }
    em_model_free(model);
    CHECKF(counter.live == 0, "%zu allocations leaked after em_model_free", counter.live);

    /* every kernel set: all memory is planned at load (packed indices, tables, the context arena), so
     * after em_model_load nothing allocates, whatever kernels run */
    {
        uint32_t set;
        for (set = EM_KERNELS_AUTO; set < EM_KERNELS_COUNT; ++set) {
            em_load_options options;
            size_t after_load;
            void *memory;
            float x[5 * 5 * 4], ya[6], yb[2];
            const float *inputs[1];
            float *outputs[2];
            int r;
            if (!em_kernels_available(set)) continue;
            memset(&options, 0, sizeof options);
            options.kernels = set;
            memset(&counter, 0, sizeof counter);
            st = em_model_load_ex(file, size, &allocator, &options, &model, &err);
            if (!CHECK_STATUS(st, EM_STATUS_OK, err)) continue;
            after_load = counter.calls;
            memory = malloc(em_context_size(model));
            memset(x, 0, sizeof x);
            x[7] = 1.0f;
            inputs[0] = x;
            outputs[0] = ya;
            outputs[1] = yb;
            st = em_context_init(model, memory, em_context_size(model), &ctx, &err);
            CHECK_STATUS(st, EM_STATUS_OK, err);
            em_context_enable_profiling(ctx, 1);
            for (r = 0; r < 3; ++r) {
                st = em_run_all(ctx, inputs, outputs, &err);
                CHECK_STATUS(st, EM_STATUS_OK, err);
                st = em_run_task(ctx, 0, x, 100, ya, 6, &err);
                CHECK_STATUS(st, EM_STATUS_OK, err);
            }
            CHECKF(counter.calls == after_load, "kernel set %s: %zu allocations after load", em_kernels_name(set),
                   counter.calls - after_load);
            free(memory);
            em_model_free(model);
            CHECKF(counter.live == 0, "kernel set %s: %zu allocations leaked", em_kernels_name(set), counter.live);
        }
    }

    /* fail the n-th allocation, for every n */
    for (n = 1; n <= needed; ++n) {
        memset(&counter, 0, sizeof counter);
        counter.fail_at = n;
        model = (em_model *)(void *)&counter; /* must be reset to NULL */
        st = em_model_load(file, size, &allocator, &model, &err);
        CHECKF(st == EM_STATUS_NO_MEMORY, "allocation %zu failing: status %s (%s)", n, em_status_name(st), err.message);
        CHECKF(strstr(err.message, "out of memory allocating") != NULL, "allocation %zu: message %s", n, err.message);
        CHECK(model == NULL);
        CHECKF(counter.live == 0, "allocation %zu failing: %zu allocations leaked", n, counter.live);
    }
    memset(&counter, 0, sizeof counter);
    counter.fail_at = needed + 1; /* past the last one: succeeds */
    st = em_model_load(file, size, &allocator, &model, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    em_model_free(model);
    CHECK(counter.live == 0);

    /* every other kind of failure leaks nothing either: each truncation fails at a different stage,
     * and a late failure (after most tables exist) */
    for (n = 0; n < size; ++n) {
        uint8_t *prefix = (uint8_t *)malloc(n ? n : 1);
        memcpy(prefix, file, n);
        memset(&counter, 0, sizeof counter);
        st = em_model_load(prefix, n, &allocator, &model, &err);
        CHECK(st == EM_STATUS_TRUNCATED && model == NULL && counter.live == 0);
        free(prefix);
    }
    {
        /* task "b" classes 2 -> 3: found after every section was parsed */
        const size_t classes_at = emb_task_record_offset(file, 1) + 40;
        emb_put_u32(file + classes_at, 3);
        emb_fix_crcs(file, size);
        memset(&counter, 0, sizeof counter);
        st = em_model_load(file, size, &allocator, &model, &err);
        CHECK_STATUS(st, EM_STATUS_CORRUPT, err);
        CHECKF(counter.live == 0 && counter.calls >= 6, "late failure: %zu calls, %zu leaked", counter.calls,
               counter.live);
    }
    free(file);
    test_v2(&allocator, &counter);
    return em_test_summary("test_alloc");
}
