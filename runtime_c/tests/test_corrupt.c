/* (c) Hand-made corrupt files: each is rejected with the expected status and a message naming the
 * field, never a crash. Most start from one valid model and patch a field, then re-seal every CRC
 * (emb_fix_crcs) so the loader has to find the deeper problem itself; a few are built wrong directly.
 * Also: every truncation and every single-bit flip of the valid file is rejected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_test_builder.h"
#include "em_test_util.h"

static uint8_t *g_valid;
static size_t g_valid_size;

/* Loads a copy of buf in its own exact-size allocation (so ASan sees any read past the end). */
static em_status load_copy(const uint8_t *buf, size_t size, em_error *err)
{
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    em_model *model = (em_model *)(void *)&model; /* not NULL, to check it is reset */
    em_status st;
    if (size) memcpy(copy, buf, size);
    st = em_model_load(copy, size, NULL, &model, err);
    if (st == EM_STATUS_OK)
        em_model_free(model);
    else
        CHECKF(model == NULL, "a failed load left *out_model set");
    free(copy);
    return st;
}

static void expect_reject(const uint8_t *buf, size_t size, em_status want, const char *needle, const char *label)
{
    em_error err;
    em_status st;
    memset(&err, 0, sizeof err);
    st = load_copy(buf, size, &err);
    CHECKF(st == want, "%s: status %d (%s), expected %d (%s): %s", label, st, em_status_name(st), want,
           em_status_name(want), err.message);
    CHECKF(err.status == st, "%s: err.status %d != returned %d", label, err.status, st);
    CHECKF(strstr(err.message, needle) != NULL, "%s: message \"%s\" does not mention \"%s\"", label, err.message,
           needle);
}

/* A patched copy of the valid file: u32 or u64 at `offset`, then every CRC fixed unless told not to. */
static uint8_t *patched(size_t offset, uint64_t value, int width, int fix)
{
    uint8_t *buf = (uint8_t *)malloc(g_valid_size);
    memcpy(buf, g_valid, g_valid_size);
    if (width == 8)
        emb_put_u64(buf + offset, value);
    else
        emb_put_u32(buf + offset, (uint32_t)value);
    if (fix) emb_fix_crcs(buf, g_valid_size);
    return buf;
}

static void expect_patch(size_t offset, uint64_t value, int width, em_status want, const char *needle,
                         const char *label)
{
    uint8_t *buf = patched(offset, value, width, 1);
    expect_reject(buf, g_valid_size, want, needle, label);
    free(buf);
}

static void expect_node_patch(uint32_t node, size_t field, uint32_t value, em_status want, const char *needle,
                              const char *label)
{
    expect_patch(emb_node_record_offset(g_valid, node) + field, value, 4, want, needle, label);
}

static void expect_tensor_patch(uint32_t tensor, size_t field, uint64_t value, int width, em_status want,
                                const char *needle, const char *label)
{
    expect_patch(emb_tensor_record_offset(g_valid, tensor) + field, value, width, want, needle, label);
}

/* ---------------------------------------------------------------------------------------------
 * The valid model: in (6,6,3) -> n0 LUT_CONV2D 3x3 same r=2 C=5 ->4 relu -> n1 MAX_POOL 2/2
 *   -> n2 RESHAPE (36) -> n3 DENSE ->3; task "t". Tensors: 0 codebook [2,5,2], 1 index [3,3,2,4]
 *   (3 bits), 2 bias [4], 3 dense weight [36,3], 4 dense bias [3].
 * --------------------------------------------------------------------------------------------- */
typedef struct base_options {
    uint32_t index_bits;  /* bits of tensor 1 (3 is right for C=5) */
    uint32_t index_value; /* element 0 of tensor 1 */
    void (*meta)(emb_builder *b);
} base_options;

static uint8_t *build_base(const base_options *o, size_t *size)
{
    const uint32_t cb_dims[3] = {2, 5, 2}, idx_dims[4] = {3, 3, 2, 4}, four = 4, three = 3, w_dims[2] = {36, 3};
    float cb[20], bias[4], w[108], hb[3];
    uint32_t idx[72], i, in, v;
    emb_builder *b = emb_create();
    emb_node n;
    uint8_t *file;
    em_test_rng rng;

    em_test_rng_seed(&rng, 31);
    em_test_fill(&rng, cb, 20, 1.0f);
    em_test_fill(&rng, bias, 4, 1.0f);
    em_test_fill(&rng, w, 108, 1.0f);
    em_test_fill(&rng, hb, 3, 1.0f);
    for (i = 0; i < 72; ++i) idx[i] = em_test_rand_below(&rng, 5);
    idx[0] = o->index_value;
    if (o->meta) o->meta(b);
    emb_meta_string(b, "node.0.name", "conv");

    in = emb_input(b, 6, 6, 3);
    n = emb_node_init(EM_OP_LUT_CONV2D, in);
    n.kernel_h = n.kernel_w = 3;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = 1;
    n.activation = EM_ACT_RELU;
    n.seg_len = 2;
    n.codewords = 5;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, o->index_bits, idx);
    n.bias = emb_tensor_f32(b, 1, &four, bias);
    v = emb_add_op(b, n, 4);
    n = emb_node_init(EM_OP_MAX_POOL, v);
    n.kernel_h = n.kernel_w = n.stride_h = n.stride_w = 2;
    v = emb_add_op(b, n, 0);
    v = emb_add_op(b, emb_node_init(EM_OP_RESHAPE, v), 0);
    n = emb_node_init(EM_OP_DENSE, v);
    n.weight = emb_tensor_f32(b, 2, w_dims, w);
    n.bias = emb_tensor_f32(b, 1, &three, hb);
    v = emb_add_op(b, n, 3);
    emb_task(b, "t", in, v, 3);
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

static void expect_built(const base_options *o, em_status want, const char *needle, const char *label)
{
    size_t size;
    uint8_t *file = build_base(o, &size);
    expect_reject(file, size, want, needle, label);
    free(file);
}

/* ---------------------------------------------------------------------------------------------
 * Header and section table
 * --------------------------------------------------------------------------------------------- */
static void test_header(void)
{
    uint8_t *buf;
    size_t off, len;

    buf = patched(0, 0x46554747u /* "GGUF" */, 4, 1);
    expect_reject(buf, g_valid_size, EM_STATUS_BAD_MAGIC, "header.magic", "bad magic");
    free(buf);
    expect_patch(4, 3, 4, EM_STATUS_FUTURE_VERSION, "future version 3, this reader supports 1 to 2", "future version");
    expect_patch(4, 0, 4, EM_STATUS_CORRUPT, "invalid version 0", "version 0");
    expect_patch(8, 0x0D0C0B0Au, 4, EM_STATUS_CORRUPT, "header.sentinel_u32", "byte-swapped u32 sentinel");
    expect_patch(12, 0x3FC00000u /* +1.5f */, 4, EM_STATUS_CORRUPT, "header.sentinel_f32", "bad f32 sentinel");
    buf = patched(60, emb_get_u32(g_valid + 60) ^ 1u, 4, 0);
    expect_reject(buf, g_valid_size, EM_STATUS_BAD_CRC, "header.header_crc32", "bad header CRC");
    free(buf);
    buf = patched(20, 32, 4, 0); /* a changed field without a fixed CRC: the CRC catches it first */
    emb_put_u32(buf + 60, emb_get_u32(g_valid + 60));
    expect_reject(buf, g_valid_size, EM_STATUS_BAD_CRC, "header_crc32", "header field changed, CRC stale");
    free(buf);
    expect_patch(16, 128, 4, EM_STATUS_CORRUPT, "header.header_bytes", "header_bytes");
    expect_patch(20, 32, 4, EM_STATUS_CORRUPT, "header.alignment", "alignment");
    expect_patch(28, 1, 4, EM_STATUS_UNSUPPORTED, "header.flags", "header flags");
    expect_patch(52, 1, 4, EM_STATUS_CORRUPT, "reserved", "header reserved0");
    expect_patch(56, 1, 4, EM_STATUS_CORRUPT, "reserved", "header reserved1");
    expect_patch(32, g_valid_size + 1, 8, EM_STATUS_TRUNCATED, "truncated", "file_bytes past the buffer");
    expect_patch(32, g_valid_size - 1, 8, EM_STATUS_CORRUPT, "header.file_bytes", "file_bytes short of the buffer");
    expect_patch(24, 4, 4, EM_STATUS_CORRUPT, "header.section_count", "section_count 4");
    expect_patch(24, 65, 4, EM_STATUS_LIMIT, "MAX_SECTIONS", "section_count 65");
    expect_patch(40, 128, 8, EM_STATUS_CORRUPT, "section_table_offset", "section table offset");

    /* a section table entry changed, the table CRC left stale (header CRC fixed) */
    buf = patched(emb_section_entry_offset(1) + 16, 1, 8, 0);
    emb_put_u32(buf + 60, emb_crc32(buf, 60));
    expect_reject(buf, g_valid_size, EM_STATUS_BAD_CRC, "section table: CRC mismatch", "section table CRC");
    free(buf);

    /* a byte of DATA flipped: that section's CRC */
    emb_find_section(g_valid, EM_SECTION_DATA, &off, &len);
    buf = patched(0, emb_get_u32(g_valid), 4, 0);
    buf[off + len / 2] ^= 0x40;
    expect_reject(buf, g_valid_size, EM_STATUS_BAD_CRC, "section 4 (DATA): CRC mismatch", "bad section CRC");
    free(buf);
}

static void test_sections(void)
{
    uint8_t *buf;
    size_t off, len, next;
    int graph = emb_find_section(g_valid, EM_SECTION_GRAPH, &off, &len);

    expect_patch(emb_section_entry_offset((uint32_t)graph) + 8, off + 4, 8, EM_STATUS_CORRUPT,
                 "section 2 (GRAPH): offset", "misaligned section offset");
    {
        em_error err;
        buf = patched(emb_section_entry_offset((uint32_t)graph) + 8, off + 4, 8, 1);
        load_copy(buf, g_valid_size, &err);
        CHECKF(strstr(err.message, "not a multiple of the alignment 64") != NULL, "message: %s", err.message);
        free(buf);
    }
    expect_patch(emb_section_entry_offset(0) + 8, 192, 8, EM_STATUS_CORRUPT, "section 0 (META): offset 192, expected 256",
                 "first section not right after the table");
    expect_patch(emb_section_entry_offset(1), EM_SECTION_GRAPH, 4, EM_STATUS_CORRUPT, "out of order",
                 "GRAPH where TASKS belongs");
    expect_patch(emb_section_entry_offset(1), 7, 4, EM_STATUS_CORRUPT, "unknown kind 7", "unknown section kind");
    expect_patch(emb_section_entry_offset(4), 0x1000, 4, EM_STATUS_CORRUPT, "required section DATA is missing",
                 "DATA replaced by an extension");
    expect_patch(emb_section_entry_offset(2) + 4, 1, 4, EM_STATUS_UNSUPPORTED, "section 2 (GRAPH): flags",
                 "section flags");
    expect_patch(emb_section_entry_offset(2) + 28, 1, 4, EM_STATUS_CORRUPT, "section 2 (GRAPH): reserved",
                 "section reserved");
    /* GRAPH moved onto TASKS: overlap */
    emb_find_section(g_valid, EM_SECTION_TASKS, &next, NULL);
    expect_patch(emb_section_entry_offset(2) + 8, next, 8, EM_STATUS_CORRUPT, "does not increase", "overlap");
    /* a size that runs past the end of the file */
    expect_patch(emb_section_entry_offset(2) + 16, g_valid_size, 8, EM_STATUS_TRUNCATED, "truncated",
                 "section past the end");
    expect_patch(emb_section_entry_offset(2) + 16, UINT64_MAX - 8, 8, EM_STATUS_TRUNCATED, "truncated",
                 "section size overflowing offset + size");

    /* non-zero padding between META and TASKS */
    emb_find_section(g_valid, EM_SECTION_META, &off, &len);
    emb_find_section(g_valid, EM_SECTION_TASKS, &next, NULL);
    if (CHECK(off + len < next)) {
        buf = patched(0, emb_get_u32(g_valid), 4, 0);
        buf[off + len] = 1;
        emb_fix_crcs(buf, g_valid_size);
        expect_reject(buf, g_valid_size, EM_STATUS_CORRUPT, "padding", "non-zero padding between sections");
        free(buf);
    }
    /* non-zero padding between the section table and META */
    buf = patched(0, emb_get_u32(g_valid), 4, 0);
    buf[64 + 5 * 32] = 1;
    emb_fix_crcs(buf, g_valid_size);
    expect_reject(buf, g_valid_size, EM_STATUS_CORRUPT, "padding", "non-zero padding after the table");
    free(buf);

    /* truncated in the middle of DATA with file_bytes fixed (tests/corrupt.py "truncated_section") */
    emb_find_section(g_valid, EM_SECTION_DATA, &off, &len);
    buf = patched(32, off + len / 2, 8, 0);
    emb_fix_crcs(buf, off + len / 2);
    expect_reject(buf, off + len / 2, EM_STATUS_TRUNCATED, "truncated", "truncated section");
    free(buf);

    /* bytes after the last section */
    buf = (uint8_t *)calloc(g_valid_size + 64, 1);
    memcpy(buf, g_valid, g_valid_size);
    emb_put_u64(buf + 32, g_valid_size + 64);
    emb_fix_crcs(buf, g_valid_size + 64);
    expect_reject(buf, g_valid_size + 64, EM_STATUS_CORRUPT, "after the end of the last section", "trailing bytes");
    free(buf);
}

/* Every prefix of the valid file fails cleanly, and so does every single-bit flip. */
static void test_truncations_and_flips(void)
{
    em_error err;
    size_t n, truncated = 0, rejected = 0;
    for (n = 0; n < g_valid_size; ++n)
        if (load_copy(g_valid, n, &err) == EM_STATUS_TRUNCATED && strstr(err.message, "truncated") != NULL) ++truncated;
    CHECKF(truncated == g_valid_size, "%zu of %zu truncations reported as truncated", truncated, g_valid_size);
    for (n = 0; n < g_valid_size; ++n) {
        uint8_t *buf = patched(0, emb_get_u32(g_valid), 4, 0);
        buf[n] ^= (uint8_t)(1u << (n % 8));
        if (load_copy(buf, g_valid_size, &err) != EM_STATUS_OK) ++rejected;
        free(buf);
    }
    CHECKF(rejected == g_valid_size, "%zu of %zu single-bit flips rejected", rejected, g_valid_size);
}

/* ---------------------------------------------------------------------------------------------
 * META, TASKS
 * --------------------------------------------------------------------------------------------- */
static void meta_duplicate(emb_builder *b) { emb_meta_u64(b, "source.count", 2); }
static void meta_bad_char(emb_builder *b) { emb_meta_u64(b, "Source.extra", 2); }
static void meta_wrong_type(emb_builder *b) { emb_meta_u64(b, "node.0.sources", 3); }
static void meta_bad_utf8(emb_builder *b) { emb_meta_string(b, "tensor.0.name", "code\xC3(book"); }
static void meta_overlong_utf8(emb_builder *b) { emb_meta_string(b, "tensor.0.name", "\xC0\xAF"); }
static void meta_unknown_type(emb_builder *b) { emb_meta_raw(b, "x.y", 9, "12345678", 8); }
static void meta_missing_required(emb_builder *b)
{
    emb_meta_clear(b);
    emb_meta_string(b, "edgemerge.tool_version", "x");
    emb_meta_u64(b, "source.count", 1);
}
static void meta_node_name_not_string(emb_builder *b) { emb_meta_u64(b, "node.1.name", 7); }

/* META that the loader refuses as corrupt, with the words its message must hold */
static const struct {
    void (*meta)(emb_builder *b);
    const char *needle, *label;
} bad_meta[] = {
    {meta_duplicate, "duplicate key \"source.count\"", "duplicate META key"},
    {meta_bad_char, "outside [a-z0-9_.-]", "META key charset"},
    {meta_wrong_type, "(node.0.sources): type u64, expected string", "META key type"},
    {meta_bad_utf8, "not valid UTF-8", "META bad UTF-8"},
    {meta_overlong_utf8, "not valid UTF-8", "META overlong UTF-8"},
    {meta_unknown_type, "unknown value type 9", "META value type"},
    {meta_missing_required, "required key \"edgemerge.original_bytes\" is missing", "META required key"},
    {meta_node_name_not_string, "expected string", "node name type"},
};
static void meta_good_extras(emb_builder *b)
{
    emb_meta_string(b, "merge.preset", "light");
    emb_meta_u64(b, "merge.seed", 7);
    emb_meta_string(b, "node.00.name", "not canonical: an unknown key, ignored");
    emb_meta_string(b, "unicode.ok", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
    emb_meta_i64(b, "x-y_z.w", -1);
}

static void test_meta_and_tasks(void)
{
    base_options o = {3, 4, NULL};
    size_t off, len, i;
    uint8_t *file;
    em_error err;

    o.meta = meta_good_extras;
    file = build_base(&o, &len);
    CHECKF(load_copy(file, len, &err) == EM_STATUS_OK, "valid extras rejected: %s", err.message);
    free(file);
    for (i = 0; i < sizeof bad_meta / sizeof bad_meta[0]; ++i) {
        o.meta = bad_meta[i].meta;
        expect_built(&o, EM_STATUS_CORRUPT, bad_meta[i].needle, bad_meta[i].label);
    }

    emb_find_section(g_valid, EM_SECTION_META, &off, &len);
    expect_patch(off, EM_MAX_META_ENTRIES + 1, 4, EM_STATUS_LIMIT, "MAX_META_ENTRIES", "META count over the limit");
    expect_patch(off, 60000, 4, EM_STATUS_TRUNCATED, "META: 60000 entries need", "META count past the section");
    expect_patch(off + 4, 0, 4, EM_STATUS_CORRUPT, "META entry 0: key_len is 0", "META key_len 0");
    expect_patch(off + 4, 256, 4, EM_STATUS_LIMIT, "MAX_KEY_BYTES", "META key_len 256");
    expect_patch(off + 4, 200, 4, EM_STATUS_TRUNCATED, "META entry", "META key past the section");

    /* TASKS: record 0 at TASKS + 4 */
    off = emb_task_record_offset(g_valid, 0);
    expect_patch(off - 4, 0, 4, EM_STATUS_CORRUPT, "TASKS: count is 0", "no tasks");
    expect_patch(off - 4, 65, 4, EM_STATUS_LIMIT, "MAX_TASKS", "65 tasks");
    expect_patch(off - 4, 2, 4, EM_STATUS_TRUNCATED, "TASKS task 1: truncated", "task count past the section");
    expect_patch(off, 0, 4, EM_STATUS_CORRUPT, "name is empty", "empty task name");
    expect_patch(off, 0x00200074u /* "t" NUL " " */, 4, EM_STATUS_CORRUPT, "not NUL-padded", "task name padding");
    expect_patch(off, 0x00002174u /* "t!" */, 4, EM_STATUS_CORRUPT, "outside [A-Za-z0-9_.-]", "task name charset");
    {
        uint8_t *buf = patched(0, emb_get_u32(g_valid), 4, 0);
        memset(buf + off, 'x', 32);
        emb_fix_crcs(buf, g_valid_size);
        expect_reject(buf, g_valid_size, EM_STATUS_CORRUPT, "not NUL-terminated", "task name of 32 bytes");
        free(buf);
    }
    expect_patch(off + 32, 1, 4, EM_STATUS_CORRUPT, "TASKS task 0 ('t'): input 1 does not exist", "task input");
    expect_patch(off + 36, 9, 4, EM_STATUS_CORRUPT, "output value 9 does not exist", "task output");
    expect_patch(off + 40, 4, 4, EM_STATUS_CORRUPT, "classes 4, but output value 4", "task classes");
    expect_patch(off + 44, 1, 4, EM_STATUS_CORRUPT, "reserved", "task reserved");
    expect_patch(off + 36, 3, 4, EM_STATUS_CORRUPT, "classes 3, but output value 3 (1, 1, 36)", "task output mid-graph");
}

/* Tasks with the same name, and a task whose output is computed from another input. */
static void test_task_graph_consistency(void)
{
    float w[24];
    emb_builder *b = emb_create();
    uint32_t in0, in1, v;
    size_t size;
    uint8_t *file;
    memset(w, 0, sizeof w);
    in0 = emb_input(b, 2, 2, 3);
    in1 = emb_input(b, 2, 2, 3);
    v = emb_add_dense(b, in0, 2, w);
    emb_task(b, "a", in0, v, 2);
    emb_task(b, "b", in1, v, 2);
    file = emb_finish(b, &size);
    expect_reject(file, size, EM_STATUS_CORRUPT, "TASKS task 1 ('b'): output value 2 is computed from graph input 0, "
                  "not from the task's input 1", "task fed the wrong input");
    free(file);
    emb_destroy(b);

    b = emb_create();
    in0 = emb_input(b, 2, 2, 3);
    v = emb_add_dense(b, in0, 2, w);
    emb_task(b, "same", in0, v, 2);
    emb_task(b, "same", in0, v, 2);
    file = emb_finish(b, &size);
    expect_reject(file, size, EM_STATUS_CORRUPT, "duplicate name 'same'", "duplicate task names");
    free(file);
    emb_destroy(b);
}

/* ---------------------------------------------------------------------------------------------
 * GRAPH
 * --------------------------------------------------------------------------------------------- */
static void test_graph(void)
{
    size_t off;
    emb_find_section(g_valid, EM_SECTION_GRAPH, &off, NULL);
    expect_patch(off, 0, 4, EM_STATUS_CORRUPT, "GRAPH: input_count is 0", "no inputs");
    expect_patch(off, 65, 4, EM_STATUS_LIMIT, "MAX_INPUTS", "65 inputs");
    expect_patch(off + 4, 0, 4, EM_STATUS_CORRUPT, "GRAPH: node_count is 0", "no nodes");
    expect_patch(off + 4, 4097, 4, EM_STATUS_LIMIT, "MAX_NODES", "4097 nodes");
    expect_patch(off + 4, 5, 4, EM_STATUS_TRUNCATED, "GRAPH node 4: truncated", "node count past the section");
    expect_patch(off + 4, 3, 4, EM_STATUS_CORRUPT, "GRAPH: 96 unexpected bytes after the last node", "trailing node");
    expect_patch(off + 8, 0, 4, EM_STATUS_CORRUPT, "GRAPH input 0: shape (0, 6, 3) has a zero dimension", "input dim 0");
    expect_patch(off + 8, 0x10000000u, 4, EM_STATUS_LIMIT, "MAX_VALUE_ELEMENTS", "input too large");
    expect_patch(off + 20, 1, 4, EM_STATUS_CORRUPT, "GRAPH input 0: reserved", "input reserved");

    expect_node_patch(2, EMB_NODE_OP, 99, EM_STATUS_UNSUPPORTED, "GRAPH node 2: unknown op 99", "unknown op");
    expect_node_patch(2, EMB_NODE_OP, 0, EM_STATUS_UNSUPPORTED, "unknown op 0", "op 0");
    expect_node_patch(1, EMB_NODE_INPUT, 3, EM_STATUS_CORRUPT,
                      "GRAPH node 1 (MAX_POOL): reads value 3, which is not computed before it", "reads a later value");
    expect_node_patch(1, EMB_NODE_INPUT, 2, EM_STATUS_CORRUPT, "reads value 2", "reads its own value");
    expect_node_patch(0, EMB_NODE_ACTIVATION, EM_ACT_LAST + 1, EM_STATUS_CORRUPT, "unknown activation 7", "unknown activation");
    expect_node_patch(0, EMB_NODE_FLAGS, 4, EM_STATUS_UNSUPPORTED, "flags", "node flags"); /* 0x4: unknown bit */
    expect_node_patch(0, EMB_NODE_RESERVED + 8, 5, EM_STATUS_CORRUPT, "reserved[2] is 5", "node reserved");
    expect_node_patch(0, EMB_NODE_KERNEL_H, 0, EM_STATUS_CORRUPT, "kernel_h is 0", "kernel 0");
    expect_node_patch(0, EMB_NODE_KERNEL_W, 65, EM_STATUS_LIMIT, "kernel_w 65 exceeds the limit 64", "kernel 65");
    expect_node_patch(0, EMB_NODE_STRIDE_H, 0, EM_STATUS_CORRUPT, "stride_h is 0", "stride 0");
    expect_node_patch(0, EMB_NODE_STRIDE_W, 17, EM_STATUS_LIMIT, "stride_w 17 exceeds the limit 16", "stride 17");
    expect_node_patch(0, EMB_NODE_PAD_BOTTOM, 3, EM_STATUS_CORRUPT, "pad_bottom 3 is not smaller than kernel_h 3",
                      "pad >= kernel");
    /* output shapes are recomputed and compared */
    expect_node_patch(0, EMB_NODE_OUT_H, 5, EM_STATUS_CORRUPT,
                      "GRAPH node 0 (LUT_CONV2D): declared output shape (5, 6, 4) does not match the computed (6, 6, 4) "
                      "from input (6, 6, 3)", "LUT conv output shape");
    expect_node_patch(1, EMB_NODE_OUT_C, 5, EM_STATUS_CORRUPT, "declared output shape (3, 3, 5)", "pool output shape");
    expect_node_patch(2, EMB_NODE_OUT_C, 35, EM_STATUS_CORRUPT, "holds 35 elements, the input", "reshape count");
    expect_node_patch(3, EMB_NODE_OUT_H, 2, EM_STATUS_CORRUPT, "declared output shape (2, 1, 3)", "dense shape");
    expect_node_patch(0, EMB_NODE_OUT_W, 0, EM_STATUS_CORRUPT, "has a zero dimension", "zero output dim");
    expect_node_patch(0, EMB_NODE_OUT_C, 0xFFFFFFFFu, EM_STATUS_LIMIT, "MAX_VALUE_ELEMENTS", "huge output shape");
    expect_node_patch(1, EMB_NODE_KERNEL_H, 7, EM_STATUS_CORRUPT,
                      "kernel height 7 is larger than the padded input height 6", "kernel larger than the input");
    /* field usage per op */
    expect_node_patch(3, EMB_NODE_KERNEL_H, 3, EM_STATUS_CORRUPT, "(DENSE): kernel 3x1 / stride 1x1 must be 1x1",
                      "window on DENSE");
    expect_node_patch(1, EMB_NODE_SEG_LEN, 2, EM_STATUS_CORRUPT, "must be 0 for a non-LUT op", "r on MAX_POOL");
    expect_node_patch(1, EMB_NODE_WEIGHT, 3, EM_STATUS_CORRUPT, "weight tensor 3 given, this op takes none",
                      "weight on MAX_POOL");
    expect_node_patch(3, EMB_NODE_WEIGHT, EM_NONE, EM_STATUS_CORRUPT, "weight tensor is NONE", "DENSE without weight");
    expect_node_patch(3, EMB_NODE_WEIGHT, 5, EM_STATUS_CORRUPT, "weight tensor 5 does not exist (TENSORS has 5)",
                      "weight id out of range");
    expect_node_patch(3, EMB_NODE_WEIGHT, 1, EM_STATUS_CORRUPT, "weight tensor 1 has dtype IDX, expected F32",
                      "IDX as weight");
    expect_node_patch(3, EMB_NODE_WEIGHT, 0, EM_STATUS_CORRUPT, "weight tensor 0 has rank 3, expected 2",
                      "rank mismatch");
    expect_node_patch(3, EMB_NODE_BIAS, 2, EM_STATUS_CORRUPT, "bias tensor 2 has dims [4], expected [3]",
                      "bias length");
    expect_node_patch(3, EMB_NODE_INDEX, 1, EM_STATUS_CORRUPT, "index tensor 1 given", "index on DENSE");
    /* LUT fields */
    expect_node_patch(0, EMB_NODE_CODEWORDS, 1, EM_STATUS_CORRUPT, "codewords (C) 1 is below 2", "C = 1");
    expect_node_patch(0, EMB_NODE_CODEWORDS, 65537, EM_STATUS_LIMIT, "MAX_CODEWORDS", "C too large");
    expect_node_patch(0, EMB_NODE_SEG_LEN, 0, EM_STATUS_CORRUPT, "seg_len (r) is 0", "r = 0");
    expect_node_patch(0, EMB_NODE_SEG_LEN, 257, EM_STATUS_LIMIT, "MAX_SEG_LEN", "r too large");
    expect_node_patch(0, EMB_NODE_CODEWORDS, 6, EM_STATUS_CORRUPT,
                      "codebook tensor 0 has dims [2, 5, 2], expected [S_cb >= 2, C=6, r=2]", "codebook C mismatch");
    expect_node_patch(0, EMB_NODE_SEG_LEN, 1, EM_STATUS_CORRUPT, "expected [S_cb >= 3, C=5, r=1]", "codebook too shallow");
    expect_node_patch(0, EMB_NODE_INDEX, EM_NONE, EM_STATUS_CORRUPT, "index tensor is NONE", "LUT without index");
    expect_node_patch(0, EMB_NODE_INDEX, 2, EM_STATUS_CORRUPT, "index tensor 2 has dtype F32, expected IDX",
                      "F32 as index");
    expect_node_patch(0, EMB_NODE_KERNEL_W, 2, EM_STATUS_CORRUPT, "index tensor 1 has dims [3, 3, 2, 4], expected [3, 2, 2, 4]",
                      "index dims vs kernel");
}

/* ---------------------------------------------------------------------------------------------
 * TENSORS, DATA, index values
 * --------------------------------------------------------------------------------------------- */
static void test_tensors(void)
{
    base_options o = {3, 4, NULL};
    size_t off, data_off;
    uint8_t *buf;

    emb_find_section(g_valid, EM_SECTION_TENSORS, &off, NULL);
    expect_patch(off, EM_MAX_TENSORS + 1, 4, EM_STATUS_LIMIT, "MAX_TENSORS", "too many tensors");
    expect_patch(off, 6, 4, EM_STATUS_TRUNCATED, "TENSORS: 6 records need", "tensor count past the section");
    expect_patch(off, 4, 4, EM_STATUS_CORRUPT, "TENSORS: 48 unexpected bytes", "tensor count short");
    expect_tensor_patch(0, 0, 3, 4, EM_STATUS_CORRUPT, "TENSORS tensor 0: unknown dtype 3", "dtype");
    expect_tensor_patch(0, 4, 0, 4, EM_STATUS_CORRUPT, "ndim 0 outside 1..4", "ndim 0");
    expect_tensor_patch(0, 4, 5, 4, EM_STATUS_CORRUPT, "ndim 5 outside 1..4", "ndim 5");
    expect_tensor_patch(0, 8, 0, 4, EM_STATUS_CORRUPT, "dims[0] is 0", "dim 0");
    expect_tensor_patch(0, 8, EM_MAX_DIM + 1, 4, EM_STATUS_LIMIT, "exceeds MAX_DIM", "dim too large");
    expect_tensor_patch(0, 20, 1, 4, EM_STATUS_CORRUPT, "dims[3] is 1 past ndim 3", "dim past ndim");
    expect_tensor_patch(0, 24, 16, 4, EM_STATUS_CORRUPT, "F32 tensor with bits 16", "F32 bits");
    expect_tensor_patch(1, 24, 17, 4, EM_STATUS_CORRUPT, "IDX tensor with bits 17", "IDX bits 17");
    expect_tensor_patch(0, 28, 1, 4, EM_STATUS_CORRUPT, "TENSORS tensor 0: reserved", "tensor reserved");
    expect_tensor_patch(0, 40, 79, 8, EM_STATUS_CORRUPT, "nbytes 79, expected 80", "nbytes");
    expect_tensor_patch(1, 32, 0, 8, EM_STATUS_CORRUPT, "TENSORS tensor 1: offset 0, expected 128", "offset");
    expect_tensor_patch(1, 32, 64, 8, EM_STATUS_CORRUPT, "offset 64, expected 128", "offset overlapping");
    {
        /* dims [MAX_DIM, MAX_DIM, MAX_DIM]: 2^72 elements, past 64 bits (tests/corrupt.py "shape_overflow") */
        buf = patched(emb_tensor_record_offset(g_valid, 0) + 8, EM_MAX_DIM, 4, 0);
        emb_put_u32(buf + emb_tensor_record_offset(g_valid, 0) + 12, EM_MAX_DIM);
        emb_put_u32(buf + emb_tensor_record_offset(g_valid, 0) + 16, EM_MAX_DIM);
        emb_fix_crcs(buf, g_valid_size);
        expect_reject(buf, g_valid_size, EM_STATUS_LIMIT, "TENSORS tensor 0: dims[0..1] hold more than MAX_TENSOR_ELEMENTS",
                      "huge dims (overflow)");
        free(buf);
    }
    /* the last tensor's data past the end of DATA */
    expect_tensor_patch(4, 8, 30, 4, EM_STATUS_CORRUPT, "TENSORS tensor 4: nbytes 12, expected 120", "dims vs nbytes");
    {
        buf = patched(emb_tensor_record_offset(g_valid, 4) + 8, 30, 4, 0);
        emb_put_u64(buf + emb_tensor_record_offset(g_valid, 4) + 40, 120);
        emb_fix_crcs(buf, g_valid_size);
        expect_reject(buf, g_valid_size, EM_STATUS_CORRUPT, "extends past the end of DATA", "data past DATA");
        free(buf);
    }
    /* non-zero DATA padding between tensors 0 and 1 (the codebook is 80 bytes, tensor 1 starts at 128) */
    data_off = emb_tensor_data_offset(g_valid, 0);
    buf = patched(0, emb_get_u32(g_valid), 4, 0);
    buf[data_off + 100] = 0x5A;
    emb_fix_crcs(buf, g_valid_size);
    expect_reject(buf, g_valid_size, EM_STATUS_CORRUPT, "padding byte before tensor 1", "DATA padding");
    free(buf);
    /* unused bits of the index map's last byte: 72 × 3 = 216 bits = 27 bytes exactly, so use the bits knob */
    o.index_bits = 5; /* 72 × 5 = 360 bits = 45 bytes exactly: still no unused bits */
    expect_built(&o, EM_STATUS_CORRUPT, "index tensor 1 has 5 bits, expected 3 for C=5", "bits mismatch");
    o.index_bits = 2;
    expect_built(&o, EM_STATUS_CORRUPT, "has 2 bits, expected 3 for C=5", "bits too few");
    o.index_bits = 3;

    /* index >= C: the builder packs 7 at element 0 (3 bits hold 0..7, C = 5) */
    o.index_value = 7;
    expect_built(&o, EM_STATUS_CORRUPT, "GRAPH node 0 (LUT_CONV2D): index tensor 1 holds index 7 at element 0, past C=5",
                 "index >= C");
    o.index_value = 5;
    expect_built(&o, EM_STATUS_CORRUPT, "holds index 5 at element 0, past C=5", "index == C");
    o.index_value = 4;
    /* the same by patching packed bits of the last element (index 71 -> stream bits 213..215 of byte 26) */
    data_off = emb_tensor_data_offset(g_valid, 1);
    buf = patched(0, emb_get_u32(g_valid), 4, 0);
    buf[data_off + 26] = (uint8_t)(buf[data_off + 26] | 0xE0);
    emb_fix_crcs(buf, g_valid_size);
    expect_reject(buf, g_valid_size, EM_STATUS_CORRUPT, "holds index 7 at element 71, past C=5", "last index >= C");
    free(buf);
}

/* A tensor whose packed stream leaves unused bits in its last byte, set to non-zero. */
static void test_unused_index_bits(void)
{
    const uint32_t dims[1] = {3};
    const uint32_t values[3] = {1, 2, 3};
    float w[8];
    emb_builder *b = emb_create();
    uint32_t in, v;
    size_t size, data_off;
    uint8_t *file;
    memset(w, 0, sizeof w);
    in = emb_input(b, 1, 1, 4);
    v = emb_add_dense(b, in, 2, w);
    emb_tensor_idx(b, 1, dims, 2, values); /* unused by any node: 6 bits in 1 byte */
    emb_task_auto(b, "t", in, v);
    file = emb_finish(b, &size);
    {
        em_error err;
        CHECKF(load_copy(file, size, &err) == EM_STATUS_OK, "unused IDX tensor rejected: %s", err.message);
    }
    data_off = emb_tensor_data_offset(file, 1);
    file[data_off] = (uint8_t)(file[data_off] | 0x80);
    emb_fix_crcs(file, size);
    expect_reject(file, size, EM_STATUS_CORRUPT, "TENSORS tensor 1: unused bits of the last byte are not zero",
                  "unused bits");
    free(file);
    emb_destroy(b);
}

static int fake_free_called;
static void *no_alloc(void *user, size_t bytes)
{
    (void)user;
    (void)bytes;
    return NULL;
}
static void fake_free(void *user, void *ptr)
{
    (void)user;
    (void)ptr;
    ++fake_free_called;
}

static void test_arguments(void)
{
    em_model *model = NULL;
    em_error err;
    em_allocator half = {no_alloc, NULL, NULL}, failing = {no_alloc, fake_free, NULL};
    uint8_t *buf = (uint8_t *)malloc(g_valid_size + 8);
    em_status st;

    memcpy(buf + 1, g_valid, g_valid_size);
    st = em_model_load(buf + 1, g_valid_size, NULL, &model, &err);
    CHECK_STATUS(st, EM_STATUS_MISALIGNED, err);
    CHECK(model == NULL && strstr(err.message, "4-byte aligned") != NULL);
    memcpy(buf + 4, g_valid, g_valid_size); /* 4-byte aligned is enough */
    st = em_model_load(buf + 4, g_valid_size, NULL, &model, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    em_model_free(model);
    model = NULL;
    free(buf);

    st = em_model_load(NULL, 10, NULL, &model, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    CHECK(em_model_load(g_valid, g_valid_size, NULL, NULL, &err) == EM_STATUS_BAD_ARGUMENT);
    st = em_model_load(g_valid, g_valid_size, &half, &model, &err);
    CHECK_STATUS(st, EM_STATUS_BAD_ARGUMENT, err);
    st = em_model_load(g_valid, g_valid_size, &failing, &model, &err);
    CHECK_STATUS(st, EM_STATUS_NO_MEMORY, err);
    CHECK(fake_free_called == 0 && model == NULL);
    CHECK(em_model_load(g_valid, 3, NULL, &model, NULL) == EM_STATUS_TRUNCATED); /* err may be NULL */
    em_model_free(NULL);
}

int main(void)
{
    base_options o = {3, 4, NULL};
    em_error err;
    g_valid = build_base(&o, &g_valid_size);
    if (!CHECKF(load_copy(g_valid, g_valid_size, &err) == EM_STATUS_OK, "the base model does not load: %s",
                err.message))
        return em_test_summary("test_corrupt");
    test_header();
    test_sections();
    test_truncations_and_flips();
    test_meta_and_tasks();
    test_task_graph_consistency();
    test_graph();
    test_tensors();
    test_unused_index_bits();
    test_arguments();
    free(g_valid);
    return em_test_summary("test_corrupt");
}
