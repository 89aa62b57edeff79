/* The fuzzing oracle: see em_fuzz_common.h. */
#include "em_fuzz_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_counting_alloc.h" /* tests/: an allocator that counts and can fail its n-th call */
#include "em_internal.h" /* the node fields, to bound the work of a run (tests may look inside) */

/* ---------------------------------------------------------------------------------------------
 * Failing loudly
 * --------------------------------------------------------------------------------------------- */

static void fuzz_fail(const char *fmt, ...) EM_PRINTF_LIKE(1, 2);
static void fuzz_fail(const char *fmt, ...)
{
    va_list args;
    fputs("em_fuzz: API contract broken: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

#define FUZZ_REQUIRE(cond, ...)                                                                             \
    do {                                                                                                   \
        if (!(cond)) fuzz_fail(__VA_ARGS__);                                                               \
    } while (0)

/* ---------------------------------------------------------------------------------------------
 * Loading
 * --------------------------------------------------------------------------------------------- */

static void check_error(em_status st, const em_error *err, const em_model *model, const char *what)
{
    size_t len = 0;
    FUZZ_REQUIRE(st >= 0 && st <= (em_status)EM_STATUS_UNSUPPORTED, "%s: status %d is not an em_status", what, st);
    FUZZ_REQUIRE(err->status == st, "%s: err.status %d, returned %d", what, err->status, st);
    while (len < EM_ERROR_MESSAGE_BYTES && err->message[len] != '\0') ++len;
    FUZZ_REQUIRE(len < EM_ERROR_MESSAGE_BYTES, "%s: the message is not NUL-terminated", what);
    if (st == EM_STATUS_OK) {
        FUZZ_REQUIRE(model != NULL, "%s: ok without a model", what);
    } else {
        FUZZ_REQUIRE(model == NULL, "%s: failed (%s) but *out_model is set", what, em_status_name(st));
        FUZZ_REQUIRE(len > 0, "%s: failed (%s) without a message", what, em_status_name(st));
    }
}

/* Loads an exact-size copy (so a sanitizer sees any read past the end) through a counting allocator. */
static em_status load_copy(const uint8_t *data, size_t size, em_model **model, em_counting_allocator *counter,
                           uint8_t **copy_out, const char *what)
{
    em_allocator allocator;
    em_error err;
    em_status st;
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    FUZZ_REQUIRE(copy != NULL, "out of memory copying %zu bytes", size);
    if (size) memcpy(copy, data, size);
    memset(counter, 0, sizeof *counter);
    em_counting_allocator_bind(&allocator, counter);
    memset(&err, 0x5A, sizeof err); /* garbage: the loader must set status and message itself */
    *model = (em_model *)(void *)&err;
    st = em_model_load(copy, size, &allocator, model, &err);
    check_error(st, &err, *model, what);
    if (st != EM_STATUS_OK) {
        FUZZ_REQUIRE(counter->live == 0, "%s: a failed load (%s) leaked %zu allocations", what, em_status_name(st),
                     counter->live);
        free(copy);
        copy = NULL;
    }
    *copy_out = copy;
    return st;
}

/* A load that fails at allocation n (1-based) must say "out of memory", free everything, and set nothing. */
static void check_failing_allocation(const uint8_t *data, size_t size, size_t n)
{
    em_counting_allocator counter;
    em_allocator allocator;
    em_model *model = NULL;
    em_error err;
    em_status st;
    memset(&counter, 0, sizeof counter);
    counter.fail_at = n;
    em_counting_allocator_bind(&allocator, &counter);
    st = em_model_load(data, size, &allocator, &model, &err);
    check_error(st, &err, model, "load with a failing allocator");
    FUZZ_REQUIRE(st == EM_STATUS_NO_MEMORY, "allocation %zu failing: status %s (%s)", n, em_status_name(st),
                 err.message);
    FUZZ_REQUIRE(counter.live == 0, "allocation %zu failing: %zu allocations leaked", n, counter.live);
}

/* ---------------------------------------------------------------------------------------------
 * Running
 * --------------------------------------------------------------------------------------------- */

/* About how many multiply-adds one em_run_all does: the bound that keeps slow valid models out. */
static double run_ops(const em_model *m)
{
    double total = 0.0;
    uint32_t i;
    for (i = 0; i < m->node_count; ++i) {
        const em_node *n = &m->nodes[i];
        const double out = (double)n->out.numel, window = (double)n->kernel_h * (double)n->kernel_w;
        double ops;
        switch (n->op) {
        case EM_OP_CONV2D: ops = out * window * (double)n->in.c; break;
        case EM_OP_DEPTHWISE_CONV2D: ops = out * window; break;
        case EM_OP_DENSE: ops = out * (double)n->in.numel; break;
        case EM_OP_MAX_POOL:
        case EM_OP_AVG_POOL: ops = out * window; break;
        case EM_OP_LUT_CONV2D:
            ops = (double)n->in.h * (double)n->in.w * (double)n->segments * (double)n->codewords * (double)n->seg_len +
                  out * window * (double)n->segments;
            break;
        case EM_OP_LUT_DENSE:
            ops = (double)n->segments * (double)n->codewords * (double)n->seg_len + out * (double)n->segments;
            break;
        case EM_OP_ADD:
        case EM_OP_CONCAT:
        case EM_OP_MUL: ops = out * (double)n->input_count; break; /* every input read once */
        case EM_OP_PAD: ops = out; break;
        default: ops = (double)n->in.numel; break;
        }
        total += ops + out + (double)n->in.numel;
    }
    return total;
}

typedef struct run_buffers {
    uint32_t input_count, task_count;
    float **inputs;
    float **outputs_a, **outputs_b;
    float *output_task;
    size_t max_classes;
} run_buffers;

static uint32_t lcg_next(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state;
}

static void free_run_buffers(run_buffers *b)
{
    uint32_t i;
    if (b->inputs)
        for (i = 0; i < b->input_count; ++i) free(b->inputs[i]);
    if (b->outputs_a)
        for (i = 0; i < b->task_count; ++i) free(b->outputs_a[i]);
    if (b->outputs_b)
        for (i = 0; i < b->task_count; ++i) free(b->outputs_b[i]);
    free(b->inputs);
    free(b->outputs_a);
    free(b->outputs_b);
    free(b->output_task);
}

/* Inputs of pseudo-random values in [-1, 1); outputs sized by the tasks. Returns the bytes they take. */
static size_t alloc_run_buffers(const em_model *m, run_buffers *b, uint32_t seed)
{
    size_t bytes = 0;
    uint32_t i, state = seed | 1u;
    memset(b, 0, sizeof *b);
    b->input_count = em_model_input_count(m);
    b->task_count = em_model_task_count(m);
    b->inputs = (float **)calloc(b->input_count, sizeof *b->inputs);
    b->outputs_a = (float **)calloc(b->task_count, sizeof *b->outputs_a);
    b->outputs_b = (float **)calloc(b->task_count, sizeof *b->outputs_b);
    FUZZ_REQUIRE(b->inputs && b->outputs_a && b->outputs_b, "out of memory");
    for (i = 0; i < b->input_count; ++i) {
        uint32_t h, w, c;
        size_t n, k;
        FUZZ_REQUIRE(em_model_input_shape(m, i, &h, &w, &c) == EM_STATUS_OK, "input %u has no shape", i);
        n = (size_t)h * w * c;
        b->inputs[i] = (float *)malloc(n * sizeof(float));
        FUZZ_REQUIRE(b->inputs[i] != NULL, "out of memory for input %u (%zu floats)", i, n);
        for (k = 0; k < n; ++k) b->inputs[i][k] = (float)(int32_t)lcg_next(&state) * (1.0f / 2147483648.0f);
        bytes += n * sizeof(float);
    }
    for (i = 0; i < b->task_count; ++i) {
        em_task_info info;
        FUZZ_REQUIRE(em_model_task_info(m, i, &info) == EM_STATUS_OK, "task %u has no info", i);
        b->outputs_a[i] = (float *)malloc(info.classes * sizeof(float));
        b->outputs_b[i] = (float *)malloc(info.classes * sizeof(float));
        FUZZ_REQUIRE(b->outputs_a[i] && b->outputs_b[i], "out of memory for outputs");
        if (info.classes > b->max_classes) b->max_classes = info.classes;
        bytes += 2u * info.classes * sizeof(float);
    }
    b->output_task = (float *)malloc(b->max_classes * sizeof(float));
    FUZZ_REQUIRE(b->output_task != NULL, "out of memory");
    return bytes;
}

/* Context memory of exactly `size` bytes starting `skew` bytes past a malloc'd address (so any alignment
 * is tried and a sanitizer sees any write past the end), pre-filled with `fill`. */
static uint8_t *context_memory(size_t size, size_t skew, uint8_t fill, uint8_t **block)
{
    *block = (uint8_t *)malloc(size + skew);
    FUZZ_REQUIRE(*block != NULL, "out of memory for a context of %zu bytes", size);
    memset(*block, fill, size + skew);
    return *block + skew;
}

static void run_model(const em_model *m, uint32_t seed)
{
    const size_t ctx_bytes = em_context_size(m);
    run_buffers b;
    uint8_t *block_a, *block_b, *mem_a, *mem_b;
    em_context *ctx_a = NULL, *ctx_b = NULL;
    em_error err;
    em_status st;
    uint32_t t, n;

    alloc_run_buffers(m, &b, seed);
    mem_a = context_memory(ctx_bytes, seed % 64u, 0xA5, &block_a);
    mem_b = context_memory(ctx_bytes, (seed / 64u) % 64u, 0xFF, &block_b); /* 0xFFFFFFFF: a NaN everywhere */
    st = em_context_init(m, mem_a, ctx_bytes, &ctx_a, &err);
    FUZZ_REQUIRE(st == EM_STATUS_OK && ctx_a != NULL, "context of em_context_size() bytes: %s", err.message);
    st = em_context_init(m, mem_b, ctx_bytes, &ctx_b, &err);
    FUZZ_REQUIRE(st == EM_STATUS_OK && ctx_b != NULL, "context of em_context_size() bytes: %s", err.message);

    st = em_run_all(ctx_a, (const float *const *)b.inputs, b.outputs_a, &err);
    FUZZ_REQUIRE(st == EM_STATUS_OK, "em_run_all: %s", err.message);
    st = em_run_all(ctx_b, (const float *const *)b.inputs, b.outputs_b, &err);
    FUZZ_REQUIRE(st == EM_STATUS_OK, "em_run_all: %s", err.message);
    for (t = 0; t < b.task_count; ++t) {
        em_task_info info;
        em_model_task_info(m, t, &info);
        /* the same computation in memory pre-filled differently: any read of memory a run did not
         * write first (activations, scratch) shows up as a difference */
        FUZZ_REQUIRE(memcmp(b.outputs_a[t], b.outputs_b[t], info.classes * sizeof(float)) == 0,
                     "task %u: em_run_all gives different logits in two contexts (a read of unwritten memory?)", t);
    }
    for (n = 0; n < em_model_node_count(m); ++n)
        FUZZ_REQUIRE(em_context_node_runs(ctx_a, n) == 1, "node %u ran %llu times in one em_run_all", n,
                     (unsigned long long)em_context_node_runs(ctx_a, n));

    /* every task alone, in the context that already ran: the same logits again */
    for (t = 0; t < b.task_count; ++t) {
        em_task_info info;
        size_t in_count;
        em_model_task_info(m, t, &info);
        in_count = (size_t)info.input_h * info.input_w * info.input_c;
        st = em_run_task(ctx_b, t, b.inputs[info.input_index], in_count, b.output_task, info.classes, &err);
        FUZZ_REQUIRE(st == EM_STATUS_OK, "em_run_task %u: %s", t, err.message);
        FUZZ_REQUIRE(memcmp(b.output_task, b.outputs_a[t], info.classes * sizeof(float)) == 0,
                     "task %u: em_run_task and em_run_all disagree", t);
        st = em_run_task(ctx_b, t, b.inputs[info.input_index], in_count + 1, b.output_task, info.classes, &err);
        FUZZ_REQUIRE(st == EM_STATUS_BAD_ARGUMENT, "em_run_task with a wrong input count: %s", em_status_name(st));
        st = em_run_task(ctx_b, t, b.inputs[info.input_index], in_count, b.output_task, (size_t)info.classes + 1,
                         &err);
        FUZZ_REQUIRE(st == EM_STATUS_BAD_ARGUMENT, "em_run_task with a wrong output count: %s", em_status_name(st));
    }
    st = em_run_task(ctx_b, b.task_count, b.inputs[0], 1, b.output_task, 1, &err);
    FUZZ_REQUIRE(st == EM_STATUS_BAD_ARGUMENT, "em_run_task past the last task: %s", em_status_name(st));

    free(block_a);
    free(block_b);
    free_run_buffers(&b);
}

/* Accessors, context sizing; runs the model when it is small enough. Returns 1 if it ran. */
static int exercise(const em_model *m, uint32_t seed)
{
    const uint32_t tasks = em_model_task_count(m), inputs = em_model_input_count(m), nodes = em_model_node_count(m);
    size_t ctx_bytes, run_bytes;
    uint8_t small[64];
    em_context *ctx;
    em_error err;
    uint32_t t, n;

    FUZZ_REQUIRE(em_model_format_version(m) >= EM_MIN_VERSION && em_model_format_version(m) <= EM_VERSION,
                 "format version %u", em_model_format_version(m));
    FUZZ_REQUIRE(tasks >= 1 && tasks <= EM_MAX_TASKS, "task count %u", tasks);
    FUZZ_REQUIRE(inputs >= 1 && inputs <= EM_MAX_INPUTS, "input count %u", inputs);
    FUZZ_REQUIRE(nodes >= 1 && nodes <= EM_MAX_NODES, "node count %u", nodes);
    for (t = 0; t < tasks; ++t) {
        em_task_info info;
        uint32_t h, w, c;
        size_t len;
        FUZZ_REQUIRE(em_model_task_info(m, t, &info) == EM_STATUS_OK, "task %u: no info", t);
        len = strlen(info.name);
        FUZZ_REQUIRE(len >= 1 && len < EM_TASK_NAME_BYTES, "task %u: name of %zu bytes", t, len);
        FUZZ_REQUIRE(em_model_find_task(m, info.name) == (int32_t)t, "task %u: found by name at another index", t);
        FUZZ_REQUIRE(info.input_index < inputs, "task %u: input %u", t, info.input_index);
        FUZZ_REQUIRE(em_model_input_shape(m, info.input_index, &h, &w, &c) == EM_STATUS_OK && h == info.input_h &&
                     w == info.input_w && c == info.input_c, "task %u: input shape disagrees", t);
        FUZZ_REQUIRE(info.classes >= 1, "task %u: 0 classes", t);
    }
    {
        em_task_info info;
        em_node_info ninfo;
        FUZZ_REQUIRE(em_model_task_info(m, tasks, &info) == EM_STATUS_BAD_ARGUMENT, "task past the last: not refused");
        FUZZ_REQUIRE(em_model_node_info(m, nodes, &ninfo) == EM_STATUS_BAD_ARGUMENT, "node past the last: not refused");
        FUZZ_REQUIRE(em_model_input_shape(m, inputs, NULL, NULL, NULL) == EM_STATUS_BAD_ARGUMENT,
                     "input past the last: not refused");
    }
    for (n = 0; n < nodes; ++n) {
        em_node_info info;
        FUZZ_REQUIRE(em_model_node_info(m, n, &info) == EM_STATUS_OK, "node %u: no info", n);
        FUZZ_REQUIRE(info.kernel != NULL && info.kernel[0] != '\0' && info.name != NULL, "node %u: no kernel name", n);
        FUZZ_REQUIRE(strcmp(em_op_name(info.op), "unknown") != 0, "node %u: op %u unknown after a load", n, info.op);
        FUZZ_REQUIRE(info.input < inputs + n, "node %u reads value %u", n, info.input);
        FUZZ_REQUIRE(info.input_count >= 1 && info.input_count <= EM_MAX_NODE_INPUTS, "node %u: %u inputs", n,
                     info.input_count);
        {
            uint32_t k, v = EM_NONE;
            for (k = 0; k < info.input_count; ++k) { /* the DAG the planner saw: every input computed before */
                FUZZ_REQUIRE(em_model_node_input(m, n, k, &v) == EM_STATUS_OK && v < inputs + n,
                             "node %u input %u reads value %u", n, k, v);
                FUZZ_REQUIRE(k != 0 || v == info.input, "node %u: input 0 is %u, info.input %u", n, v, info.input);
            }
            FUZZ_REQUIRE(em_model_node_input(m, n, info.input_count, &v) == EM_STATUS_BAD_ARGUMENT,
                         "node %u: input past the last not refused", n);
        }
        FUZZ_REQUIRE(info.out_h >= 1 && info.out_w >= 1 && info.out_c >= 1, "node %u: empty output", n);
    }

    ctx_bytes = em_context_size(m);
    FUZZ_REQUIRE(ctx_bytes > 0, "context size 0");
    /* too little memory: a clean refusal that sets nothing */
    ctx = (em_context *)(void *)small;
    FUZZ_REQUIRE(em_context_init(m, small, ctx_bytes - 1, &ctx, &err) == EM_STATUS_BAD_ARGUMENT && ctx == NULL,
                 "a context of em_context_size() - 1 bytes was not refused");

    if (ctx_bytes > EM_FUZZ_MAX_RUN_BYTES / 2 || run_ops(m) > EM_FUZZ_MAX_RUN_OPS) return 0;
    {
        run_bytes = 0;
        for (n = 0; n < inputs; ++n) {
            uint32_t h, w, c;
            em_model_input_shape(m, n, &h, &w, &c);
            run_bytes += (size_t)h * w * c * sizeof(float);
        }
        if (run_bytes + 2u * ctx_bytes > EM_FUZZ_MAX_RUN_BYTES) return 0;
    }
    run_model(m, seed);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points
 * --------------------------------------------------------------------------------------------- */

int em_fuzz_reseal(uint8_t *buf, size_t size, int fix_length)
{
    uint32_t count, i;
    if (size < EM_HEADER_BYTES) return 0;
    if (fix_length) {
        uint64_t len = (uint64_t)size;
        emb_put_u32(buf + 32, (uint32_t)len);
        emb_put_u32(buf + 36, (uint32_t)(len >> 32));
    }
    count = emb_get_u32(buf + 24);
    if (count > (size - EM_HEADER_BYTES) / EM_SECTION_ENTRY_BYTES)
        count = (uint32_t)((size - EM_HEADER_BYTES) / EM_SECTION_ENTRY_BYTES);
    for (i = 0; i < count; ++i) {
        uint8_t *e = buf + EM_HEADER_BYTES + (size_t)i * EM_SECTION_ENTRY_BYTES;
        const uint64_t off = emb_get_u64(e + 8), len = emb_get_u64(e + 16);
        if (off <= size && len <= size - off) emb_put_u32(e + 24, em_crc32(buf + off, (size_t)len));
    }
    emb_put_u32(buf + 48, em_crc32(buf + EM_HEADER_BYTES, (size_t)count * EM_SECTION_ENTRY_BYTES));
    emb_put_u32(buf + 60, em_crc32(buf, 60));
    return 1;
}

static uint32_t hash_bytes(const uint8_t *data, size_t size)
{
    uint32_t h = 2166136261u;
    size_t i, step = size > 4096 ? size / 4096 : 1; /* a sample is enough to vary the skews */
    for (i = 0; i < size; i += step) h = (h ^ data[i]) * 16777619u;
    return h ^ (uint32_t)size;
}

/* Loads `data`; when it loads, exercises it and replays the load with one allocation failing. */
static int check_loaded(const uint8_t *data, size_t size, em_status *status, em_fuzz_stats *stats,
                        const char *what)
{
    em_counting_allocator counter;
    em_model *model = NULL;
    uint8_t *copy = NULL;
    const uint32_t seed = hash_bytes(data, size);
    int ran;
    *status = load_copy(data, size, &model, &counter, &copy, what);
    if (*status != EM_STATUS_OK) return 0;
    FUZZ_REQUIRE(counter.calls >= 1 && counter.live >= 1, "%s: a loaded model holds no memory", what);
    ran = exercise(model, seed);
    if (stats) {
        if (ran) ++stats->ran;
        else ++stats->skipped_large;
    }
    em_model_free(model);
    FUZZ_REQUIRE(counter.live == 0, "%s: em_model_free left %zu allocations", what, counter.live);
    check_failing_allocation(copy, size, 1u + seed % counter.calls);
    free(copy);
    return 1;
}

int em_fuzz_one(const uint8_t *data, size_t size, em_fuzz_stats *stats)
{
    em_status raw, resealed;
    if (stats) ++stats->inputs;
    if (check_loaded(data, size, &raw, stats, "raw load") && stats) ++stats->loaded_raw;
    if (stats) ++stats->by_status[raw < 15 ? raw : 15];
    if (raw == EM_STATUS_BAD_CRC) {
        uint8_t *sealed = (uint8_t *)malloc(size ? size : 1);
        FUZZ_REQUIRE(sealed != NULL, "out of memory");
        if (size) memcpy(sealed, data, size);
        if (em_fuzz_reseal(sealed, size, 0) && check_loaded(sealed, size, &resealed, stats, "re-sealed load") && stats)
            ++stats->loaded_resealed;
        free(sealed);
    }
    return raw;
}

void em_fuzz_print_stats(const char *label, const em_fuzz_stats *s)
{
    int k;
    printf("%s: %llu inputs, %llu loaded as given, %llu loaded after re-sealing CRCs, %llu ran, %llu too large "
           "to run; raw load statuses:", label, (unsigned long long)s->inputs, (unsigned long long)s->loaded_raw,
           (unsigned long long)s->loaded_resealed, (unsigned long long)s->ran, (unsigned long long)s->skipped_large);
    for (k = 0; k < 16; ++k)
        if (s->by_status[k]) printf(" %s %llu", em_status_name(k), (unsigned long long)s->by_status[k]);
    printf("\n");
}
