/* (f) The limits of docs/FORMAT.md ("Limits (v1)"): for each one a file exactly at the limit loads (and runs,
 * where a run is cheap), and a file just past it is refused with EM_STATUS_LIMIT and a message naming the
 * limit. Nothing here needs gigabytes: the large cases are crafted (a header or a record patched, models whose
 * big values are never materialised), and "at the limit" for those means the limit check passes and the
 * loader stops at the next, unrelated check.
 *
 * Limits covered: MAX_SECTIONS, MAX_TASKS, MAX_INPUTS, MAX_NODES, MAX_TENSORS, MAX_META_ENTRIES,
 * MAX_KEY_BYTES, MAX_STRING_BYTES, MAX_DIM, MAX_TENSOR_ELEMENTS, MAX_VALUE_ELEMENTS, MAX_KERNEL,
 * MAX_STRIDE, MAX_SEG_LEN, MAX_CODEWORDS, MAX_FILE_BYTES. */
#if defined(__unix__) || defined(__APPLE__)
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <sys/mman.h>
#define EM_HAVE_MMAP 1
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_test_builder.h"
#include "em_test_util.h"

/* Loads a private exact-size copy; returns the status, err filled. With `out`, a loaded model is returned
 * with its buffer (free both with release()); otherwise the model is freed here. */
typedef struct loaded {
    em_model *model;
    uint8_t *buffer;
} loaded;

static em_status load(const uint8_t *buf, size_t size, loaded *out, em_error *err)
{
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    em_model *model = NULL;
    em_status st;
    memcpy(copy, buf, size);
    st = em_model_load(copy, size, NULL, &model, err);
    if (out != NULL) {
        out->model = model;
        out->buffer = copy;
        return st;
    }
    em_model_free(model);
    free(copy);
    return st;
}

static void release(loaded *l)
{
    em_model_free(l->model);
    free(l->buffer);
    l->model = NULL;
    l->buffer = NULL;
}

static void expect_status(const uint8_t *buf, size_t size, em_status want, const char *needle, const char *label)
{
    em_error err;
    em_status st;
    memset(&err, 0, sizeof err);
    st = load(buf, size, NULL, &err);
    CHECKF(st == want, "%s: status %d (%s), expected %d (%s): %s", label, st, em_status_name(st), want,
           em_status_name(want), err.message);
    if (needle != NULL)
        CHECKF(strstr(err.message, needle) != NULL, "%s: message \"%s\" does not mention \"%s\"", label, err.message,
               needle);
}

/* Runs every task once on zeros (inputs sized by the model) and returns 1 if every run succeeded. */
static int run_all_tasks(const em_model *model, float *first_logit)
{
    const size_t bytes = em_context_size(model);
    const uint32_t inputs = em_model_input_count(model), tasks = em_model_task_count(model);
    void *memory = malloc(bytes);
    float **in = (float **)calloc(inputs, sizeof *in), **out = (float **)calloc(tasks, sizeof *out);
    em_context *ctx = NULL;
    em_error err;
    uint32_t i;
    int ok = memory != NULL && em_context_init(model, memory, bytes, &ctx, &err) == EM_STATUS_OK;
    for (i = 0; i < inputs; ++i) {
        uint32_t h, w, c;
        em_model_input_shape(model, i, &h, &w, &c);
        in[i] = (float *)calloc((size_t)h * w * c, sizeof(float));
    }
    for (i = 0; i < tasks; ++i) {
        em_task_info info;
        em_model_task_info(model, i, &info);
        out[i] = (float *)calloc(info.classes, sizeof(float));
    }
    if (ok) ok = em_run_all(ctx, (const float *const *)in, out, &err) == EM_STATUS_OK;
    if (ok && first_logit != NULL) *first_logit = out[0][0];
    for (i = 0; i < inputs; ++i) free(in[i]);
    for (i = 0; i < tasks; ++i) free(out[i]);
    free(in);
    free(out);
    free(memory);
    return ok;
}

static void expect_loads(const uint8_t *buf, size_t size, int run, const char *label)
{
    em_error err;
    loaded l;
    em_status st = load(buf, size, &l, &err);
    CHECKF(st == EM_STATUS_OK, "%s: at the limit, status %s: %s", label, em_status_name(st), err.message);
    if (st == EM_STATUS_OK && run) CHECKF(run_all_tasks(l.model, NULL), "%s: the run failed", label);
    release(&l);
}

/* input (1,1,4) -> ACTIVATION, the cheapest valid graph; `extra` lets a case add to it first. */
static uint32_t tiny_graph(emb_builder *b, uint32_t *input)
{
    *input = emb_input(b, 1, 1, 4);
    return emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, *input), 0);
}

static uint8_t *finish(emb_builder *b, size_t *size)
{
    uint8_t *file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

/* ---------------------------------------------------------------------------------------------
 * Counts and lengths: one builder per limit, given how many of the thing the file holds
 * --------------------------------------------------------------------------------------------- */

static uint8_t *with_sections(uint32_t count, size_t *size)
{
    emb_builder *b = emb_create();
    uint32_t in, v = tiny_graph(b, &in), k;
    emb_task_auto(b, "t", in, v);
    /* 5 required sections; DATA (empty here) stays last */
    for (k = 0; k + 5 < count; ++k) emb_extension(b, 0x1000u + k, "x", 1, k % 5);
    return finish(b, size);
}

static uint8_t *with_tasks(uint32_t count, size_t *size)
{
    emb_builder *b = emb_create();
    uint32_t in, v = tiny_graph(b, &in), k;
    for (k = 0; k < count; ++k) {
        char name[16];
        snprintf(name, sizeof name, "t%u", (unsigned)k);
        emb_task_auto(b, name, in, v);
    }
    return finish(b, size);
}

static uint8_t *with_inputs(uint32_t count, size_t *size)
{
    emb_builder *b = emb_create();
    uint32_t k, v;
    for (k = 0; k < count; ++k) emb_input(b, 1, 1, 2);
    v = emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, count - 1), 0); /* reads the last input */
    emb_task_auto(b, "t", count - 1, v);
    return finish(b, size);
}

static uint8_t *with_nodes(uint32_t count, size_t *size)
{
    emb_builder *b = emb_create();
    uint32_t in = emb_input(b, 1, 1, 3), v = in, k;
    for (k = 0; k < count; ++k) {
        emb_node n = emb_node_init(EM_OP_ACTIVATION, v);
        n.activation = k % 2 ? EM_ACT_RELU : EM_ACT_RELU6;
        v = emb_add_op(b, n, 0);
    }
    emb_task_auto(b, "chain", in, v);
    return finish(b, size);
}

static uint8_t *with_tensors(uint32_t count, size_t *size)
{
    const uint32_t one = 1;
    const float w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, x = 0.5f;
    emb_builder *b = emb_create();
    uint32_t in = emb_input(b, 1, 1, 4), v, k;
    v = emb_add_dense(b, in, 2, w);
    emb_task_auto(b, "t", in, v);
    for (k = 1; k < count; ++k) emb_tensor_f32(b, 1, &one, &x); /* unused tensors are valid */
    return finish(b, size);
}

static uint8_t *with_meta_entries(uint32_t count, size_t *size)
{
    emb_builder *b = emb_create(); /* holds the 3 required keys */
    uint32_t in, v = tiny_graph(b, &in), k;
    emb_task_auto(b, "t", in, v);
    for (k = 3; k < count; ++k) {
        char key[24];
        snprintf(key, sizeof key, "x.%u", (unsigned)k);
        emb_meta_u64(b, key, k);
    }
    return finish(b, size);
}

static uint8_t *with_key_bytes(uint32_t len, size_t *size)
{
    char key[EM_MAX_KEY_BYTES + 2];
    emb_builder *b = emb_create();
    uint32_t in, v = tiny_graph(b, &in);
    memset(key, 'k', len);
    key[len] = '\0';
    emb_meta_u64(b, key, 1);
    emb_task_auto(b, "t", in, v);
    return finish(b, size);
}

static uint8_t *with_string_bytes(uint32_t len, size_t *size)
{
    char *value = (char *)malloc((size_t)len + 1);
    emb_builder *b = emb_create();
    uint32_t in, v = tiny_graph(b, &in);
    memset(value, 'a', len);
    value[len] = '\0';
    emb_meta_string(b, "x.big", value);
    free(value);
    emb_task_auto(b, "t", in, v);
    return finish(b, size);
}

/* A file with `limit` of the thing loads (and runs every task when `run`); one with limit + 1 is refused with
 * EM_STATUS_LIMIT and a message holding `message`. */
static const struct count_limit {
    const char *what;
    uint32_t limit;
    uint8_t *(*build)(uint32_t count, size_t *size);
    int run;
    const char *message;
} count_limits[] = {
    {"sections", EM_MAX_SECTIONS, with_sections, 1, "exceeds MAX_SECTIONS 64"},
    {"tasks", EM_MAX_TASKS, with_tasks, 1, "TASKS: count 65 exceeds MAX_TASKS 64"},
    {"inputs", EM_MAX_INPUTS, with_inputs, 1, "GRAPH: input_count 65 exceeds MAX_INPUTS 64"},
    {"nodes", EM_MAX_NODES, with_nodes, 1, "GRAPH: node_count 4097 exceeds MAX_NODES 4096"},
    {"tensors", EM_MAX_TENSORS, with_tensors, 1, "TENSORS: count 16385 exceeds MAX_TENSORS 16384"},
    {"META entries", EM_MAX_META_ENTRIES, with_meta_entries, 0, "META: 65537 entries exceed MAX_META_ENTRIES 65536"},
    {"bytes of a META key", EM_MAX_KEY_BYTES, with_key_bytes, 0, "key_len 256 exceeds MAX_KEY_BYTES 255"},
    {"bytes of a META string", EM_MAX_STRING_BYTES, with_string_bytes, 0,
     "string of 1048577 bytes exceeds MAX_STRING_BYTES"},
};

static void test_count_limits(void)
{
    size_t i;
    for (i = 0; i < sizeof count_limits / sizeof count_limits[0]; ++i) {
        const struct count_limit *c = &count_limits[i];
        uint32_t count;
        for (count = c->limit; count <= c->limit + 1; ++count) {
            char label[64];
            size_t size;
            uint8_t *file = c->build(count, &size);
            snprintf(label, sizeof label, "%u %s", (unsigned)count, c->what);
            if (count == c->limit)
                expect_loads(file, size, c->run, label);
            else
                expect_status(file, size, EM_STATUS_LIMIT, c->message, label);
            free(file);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Tensor dims and elements, value elements
 * --------------------------------------------------------------------------------------------- */

static void test_dims_and_elements(void)
{
    /* an unused 1-bit IDX tensor of MAX_DIM elements: 2 MiB of data */
    uint32_t *values = (uint32_t *)calloc(EM_MAX_DIM, sizeof(uint32_t));
    const uint32_t dim = EM_MAX_DIM;
    emb_builder *b = emb_create();
    uint32_t in, v = tiny_graph(b, &in);
    size_t size, rec;
    uint8_t *file;
    emb_task_auto(b, "t", in, v);
    values[EM_MAX_DIM - 1] = 1;
    emb_tensor_idx(b, 1, &dim, 1, values);
    free(values);
    file = finish(b, &size);
    expect_loads(file, size, 1, "dims[0] = MAX_DIM");

    rec = emb_tensor_record_offset(file, 0);
    emb_put_u32(file + rec + 8, EM_MAX_DIM + 1u);
    emb_fix_crcs(file, size);
    expect_status(file, size, EM_STATUS_LIMIT, "dims[0] 16777217 exceeds MAX_DIM", "dims[0] = MAX_DIM + 1");

    /* numel: 2^16 x (2^15 - 1) is the largest product below MAX_TENSOR_ELEMENTS = 2^31 - 1 (a prime, so no
     * shape reaches it exactly with dims <= MAX_DIM): past the limit check, refused for its nbytes instead */
    emb_put_u32(file + rec + 4, 2);
    emb_put_u32(file + rec + 8, 1u << 16);
    emb_put_u32(file + rec + 12, (1u << 15) - 1u);
    emb_fix_crcs(file, size);
    expect_status(file, size, EM_STATUS_CORRUPT, "TENSORS tensor 0: nbytes 2097152, expected 268427264",
                  "2^31 - 2^16 elements (limit check passes)");
    emb_put_u32(file + rec + 12, 1u << 15);
    emb_fix_crcs(file, size);
    expect_status(file, size, EM_STATUS_LIMIT, "hold more than MAX_TENSOR_ELEMENTS", "2^31 elements");
    free(file);

    /* values: a graph input of exactly MAX_VALUE_ELEMENTS (never materialised: inputs are the caller's) read
     * by a pool, and a node whose output holds MAX_VALUE_ELEMENTS (its context is over 1 GiB, only measured) */
    {
        loaded l;
        em_error err;
        em_status st;
        size_t graph;
        b = emb_create();
        in = emb_input(b, 1u << 14, 1u << 14, 1);
        v = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, in), 0);
        emb_task_auto(b, "t", in, v);
        {
            emb_node n = emb_node_init(EM_OP_RESHAPE, in);
            n.out_h = n.out_w = 1;
            n.out_c = EM_MAX_VALUE_ELEMENTS;
            emb_add_node(b, &n);
        }
        file = finish(b, &size);
        st = load(file, size, &l, &err);
        CHECKF(st == EM_STATUS_OK, "values of MAX_VALUE_ELEMENTS: %s", err.message);
        if (st == EM_STATUS_OK)
            CHECKF(em_context_size(l.model) > (size_t)4 * EM_MAX_VALUE_ELEMENTS,
                   "context of %zu bytes for a value of 2^28 floats", em_context_size(l.model));
        release(&l);
        /* one more element in the input (GRAPH: counts, then input 0's h, w, c at +8), then in the output */
        emb_find_section(file, EM_SECTION_GRAPH, &graph, NULL);
        rec = graph + 16;
        emb_put_u32(file + rec, 2);
        emb_fix_crcs(file, size);
        expect_status(file, size, EM_STATUS_LIMIT, "GRAPH input 0: shape (16384, 16384, 2) holds more than "
                      "MAX_VALUE_ELEMENTS", "input of 2^28 + 2^28 elements");
        emb_put_u32(file + rec, 1);
        emb_put_u32(file + emb_node_record_offset(file, 1) + EMB_NODE_OUT_W, 2);
        emb_fix_crcs(file, size);
        expect_status(file, size, EM_STATUS_LIMIT, "GRAPH node 1 (RESHAPE): declared output shape (1, 2, 268435456) "
                      "holds more than MAX_VALUE_ELEMENTS", "node output of 2^29 elements");
        free(file);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Window and LUT fields
 * --------------------------------------------------------------------------------------------- */

/* Sets the u32 field at `field` (EMB_NODE_...) of node 0 to `value` and re-seals the CRCs. */
static void set_node0_field(uint8_t *file, size_t size, size_t field, uint32_t value)
{
    emb_put_u32(file + emb_node_record_offset(file, 0) + field, value);
    emb_fix_crcs(file, size);
}

static void test_window(void)
{
    emb_builder *b = emb_create();
    uint32_t in = emb_input(b, EM_MAX_KERNEL, EM_MAX_KERNEL, 2), v;
    emb_node n = emb_node_init(EM_OP_MAX_POOL, in);
    size_t size;
    uint8_t *file;
    n.kernel_h = n.kernel_w = EM_MAX_KERNEL;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = EM_MAX_KERNEL - 1u; /* pads < kernel: the largest */
    n.stride_h = n.stride_w = EM_MAX_STRIDE;
    v = emb_add_op(b, n, 0);
    emb_task_auto(b, "t", in, v);
    file = finish(b, &size);
    expect_loads(file, size, 1, "kernel 64x64, pads 63, stride 16");
    set_node0_field(file, size, EMB_NODE_KERNEL_H, EM_MAX_KERNEL + 1u);
    expect_status(file, size, EM_STATUS_LIMIT, "kernel_h 65 exceeds the limit 64", "kernel 65");
    set_node0_field(file, size, EMB_NODE_KERNEL_H, EM_MAX_KERNEL);
    set_node0_field(file, size, EMB_NODE_STRIDE_H, EM_MAX_STRIDE + 1u);
    expect_status(file, size, EM_STATUS_LIMIT, "stride_h 17 exceeds the limit 16", "stride 17");
    free(file);
}

static void test_lut_limits(void)
{
    /* r = MAX_SEG_LEN: LUT_DENSE over 256 inputs in one segment */
    {
        const uint32_t cb_dims[3] = {1, 2, EM_MAX_SEG_LEN}, idx_dims[2] = {1, 3}, idx[3] = {1, 0, 1};
        float cb[2 * EM_MAX_SEG_LEN];
        emb_builder *b = emb_create();
        uint32_t in = emb_input(b, 1, 1, EM_MAX_SEG_LEN), v;
        emb_node n = emb_node_init(EM_OP_LUT_DENSE, in);
        size_t size;
        uint8_t *file;
        em_test_rng rng;
        em_test_rng_seed(&rng, 3);
        em_test_fill(&rng, cb, 2 * EM_MAX_SEG_LEN, 1.0f);
        n.seg_len = EM_MAX_SEG_LEN;
        n.codewords = 2;
        n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
        n.index = emb_tensor_idx(b, 2, idx_dims, 1, idx);
        v = emb_add_op(b, n, 3);
        emb_task_auto(b, "t", in, v);
        file = finish(b, &size);
        expect_loads(file, size, 1, "r = 256");
        set_node0_field(file, size, EMB_NODE_SEG_LEN, EM_MAX_SEG_LEN + 1u);
        expect_status(file, size, EM_STATUS_LIMIT, "seg_len (r) 257 exceeds MAX_SEG_LEN 256", "r = 257");
        free(file);
    }
    /* C = MAX_CODEWORDS: 16-bit indices, the largest value (C - 1) must select the last codeword */
    {
        const uint32_t cb_dims[3] = {1, EM_MAX_CODEWORDS, 1}, idx_dims[2] = {1, 2}, idx[2] = {EM_MAX_CODEWORDS - 1u, 0};
        float *cb = (float *)malloc(EM_MAX_CODEWORDS * sizeof(float));
        emb_builder *b = emb_create();
        uint32_t in = emb_input(b, 1, 1, 1), v, k;
        emb_node n = emb_node_init(EM_OP_LUT_DENSE, in);
        loaded l;
        em_error err;
        em_status st;
        size_t size;
        uint8_t *file;
        for (k = 0; k < EM_MAX_CODEWORDS; ++k) cb[k] = (float)k;
        n.seg_len = 1;
        n.codewords = EM_MAX_CODEWORDS;
        n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
        n.index = emb_tensor_idx(b, 2, idx_dims, 16, idx);
        v = emb_add_op(b, n, 2);
        emb_task_auto(b, "t", in, v);
        free(cb);
        file = finish(b, &size);
        st = load(file, size, &l, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        if (l.model != NULL) {
            const em_model *model = l.model;
            const size_t bytes = em_context_size(model);
            void *memory = malloc(bytes);
            em_context *ctx = NULL;
            const float x = 2.0f;
            float y[2] = {0, 0};
            CHECK(em_context_init(model, memory, bytes, &ctx, &err) == EM_STATUS_OK);
            CHECK(em_run_task(ctx, 0, &x, 1, y, 2, &err) == EM_STATUS_OK);
            CHECKF(y[0] == 2.0f * 65535.0f && y[1] == 0.0f, "C = 65536: logits %g %g, expected 131070 0",
                   (double)y[0], (double)y[1]);
            free(memory);
        }
        release(&l);
        set_node0_field(file, size, EMB_NODE_CODEWORDS, EM_MAX_CODEWORDS + 1u);
        expect_status(file, size, EM_STATUS_LIMIT, "codewords (C) 65537 exceeds MAX_CODEWORDS 65536", "C = 65537");
        free(file);
    }
}

/* ---------------------------------------------------------------------------------------------
 * MAX_FILE_BYTES
 * --------------------------------------------------------------------------------------------- */

static void test_file_bytes(void)
{
    emb_builder *b = emb_create();
    uint32_t in, v = tiny_graph(b, &in);
    size_t size;
    uint8_t *file;
    emb_task_auto(b, "t", in, v);
    file = finish(b, &size);

    /* header.file_bytes past the limit is refused as a limit, before it is compared with the buffer */
    emb_put_u64(file + 32, (uint64_t)EM_MAX_FILE_BYTES + 1u);
    emb_fix_crcs(file, size);
    expect_status(file, size, EM_STATUS_LIMIT, "header.file_bytes: 4294967296 exceeds MAX_FILE_BYTES 4294967295",
                  "file_bytes = MAX_FILE_BYTES + 1");
    /* at the limit it is only truncated (the buffer is small) */
    emb_put_u64(file + 32, EM_MAX_FILE_BYTES);
    emb_fix_crcs(file, size);
    expect_status(file, size, EM_STATUS_TRUNCATED, "header.file_bytes: 4294967295, but the buffer has",
                  "file_bytes = MAX_FILE_BYTES, small buffer");
    emb_put_u64(file + 32, size);
    emb_fix_crcs(file, size);

#if defined(EM_HAVE_MMAP) && defined(MAP_ANONYMOUS) && defined(MAP_NORESERVE)
    if (sizeof(size_t) > 4) {
        /* real buffers of 2^32 - 1 and 2^32 bytes: an untouched anonymous mapping costs no memory, and the
         * loader reads only the small model at its start */
        const size_t map_bytes = (size_t)EM_MAX_FILE_BYTES + 4096u;
        void *map = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (map == MAP_FAILED) {
            printf("test_limits: no 4 GiB mapping on this host, buffer-size cases skipped\n");
        } else {
            uint8_t *big = (uint8_t *)map;
            em_model *model = NULL;
            em_error err;
            em_status st;
            memcpy(big, file, size);
            emb_put_u64(big + 32, EM_MAX_FILE_BYTES);
            emb_fix_crcs(big, size); /* the sections are the small model's; the header says 2^32 - 1 */
            emb_put_u32(big + 60, emb_crc32(big, 60));
            st = em_model_load(big, EM_MAX_FILE_BYTES, NULL, &model, &err);
            CHECKF(st == EM_STATUS_CORRUPT && strstr(err.message, "after the end of the last section") != NULL,
                   "a buffer of exactly MAX_FILE_BYTES: %s (%s), expected the trailing-bytes error", em_status_name(st),
                   err.message);
            st = em_model_load(big, (size_t)EM_MAX_FILE_BYTES + 1u, NULL, &model, &err);
            CHECKF(st == EM_STATUS_LIMIT && strstr(err.message, "exceeds MAX_FILE_BYTES") != NULL && model == NULL,
                   "a buffer of MAX_FILE_BYTES + 1: %s (%s)", em_status_name(st), err.message);
            munmap(map, map_bytes);
        }
    }
#endif
    free(file);
}

int main(void)
{
    test_count_limits();
    test_dims_and_elements();
    test_window();
    test_lut_limits();
    test_file_bytes();
    return em_test_summary("test_limits");
}
