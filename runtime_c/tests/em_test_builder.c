#include "em_test_builder.h"

#include "em_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct emb_bytes {
    uint8_t *data;
    size_t size, cap;
} emb_bytes;

typedef struct emb_shape {
    uint32_t h, w, c;
} emb_shape;

typedef struct emb_ext {
    uint32_t kind, before;
    emb_bytes payload;
} emb_ext;

struct emb_builder {
    emb_bytes meta, tasks, inputs, nodes, tensor_table, data, extra_inputs;
    emb_bytes node_input_counts; /* v2 input_count of every node, as emb_add_node was given it */
    uint32_t version, extra_count;
    uint32_t meta_count, task_count, input_count, node_count, tensor_count;
    emb_shape *values; /* shape of every value, inputs first */
    size_t values_cap;
    emb_ext *exts;
    uint32_t ext_count;
};

static void die(const char *what)
{
    fprintf(stderr, "em_test_builder: %s\n", what);
    abort();
}

static void bytes_reserve(emb_bytes *b, size_t extra)
{
    if (b->size + extra <= b->cap) return;
    while (b->size + extra > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
    b->data = (uint8_t *)realloc(b->data, b->cap);
    if (b->data == NULL) die("out of memory");
}

static void bytes_append(emb_bytes *b, const void *p, size_t n)
{
    bytes_reserve(b, n);
    if (n) memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void bytes_zeros(emb_bytes *b, size_t n)
{
    if (n == 0) return;
    bytes_reserve(b, n);
    memset(b->data + b->size, 0, n);
    b->size += n;
}

static void bytes_u32(emb_bytes *b, uint32_t v)
{
    uint8_t p[4];
    emb_put_u32(p, v);
    bytes_append(b, p, 4);
}

static void bytes_u64(emb_bytes *b, uint64_t v)
{
    uint8_t p[8];
    emb_put_u64(p, v);
    bytes_append(b, p, 8);
}

static size_t align64(size_t x)
{
    return (x + 63u) & ~(size_t)63u;
}

uint32_t emb_crc32(const void *data, size_t size)
{
    const uint8_t *p = (const uint8_t *)data;
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < size; ++i) {
        crc ^= p[i];
        for (k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

emb_builder *emb_create(void)
{
    emb_builder *b = (emb_builder *)calloc(1, sizeof *b);
    if (b == NULL) die("out of memory");
    emb_meta_string(b, "edgemerge.tool_version", "c-test-builder");
    emb_meta_u64(b, "edgemerge.original_bytes", 4096);
    emb_meta_u64(b, "source.count", 1);
    return b;
}

void emb_destroy(emb_builder *b)
{
    uint32_t i;
    if (b == NULL) return;
    free(b->meta.data);
    free(b->tasks.data);
    free(b->extra_inputs.data);
    free(b->node_input_counts.data);
    free(b->inputs.data);
    free(b->nodes.data);
    free(b->tensor_table.data);
    free(b->data.data);
    free(b->values);
    for (i = 0; i < b->ext_count; ++i) free(b->exts[i].payload.data);
    free(b->exts);
    free(b);
}

void emb_meta_raw(emb_builder *b, const char *key, uint32_t type, const void *value, uint32_t len)
{
    bytes_u32(&b->meta, (uint32_t)strlen(key));
    bytes_append(&b->meta, key, strlen(key));
    bytes_u32(&b->meta, type);
    if (type == EM_META_STRING) bytes_u32(&b->meta, len);
    bytes_append(&b->meta, value, len);
    ++b->meta_count;
}

void emb_meta_u64(emb_builder *b, const char *key, uint64_t value)
{
    uint8_t p[8];
    emb_put_u64(p, value);
    emb_meta_raw(b, key, EM_META_U64, p, 8);
}

void emb_meta_i64(emb_builder *b, const char *key, int64_t value)
{
    uint8_t p[8];
    emb_put_u64(p, (uint64_t)value);
    emb_meta_raw(b, key, EM_META_I64, p, 8);
}

void emb_meta_f64(emb_builder *b, const char *key, double value)
{
    uint8_t p[8];
    uint64_t bits;
    memcpy(&bits, &value, 8);
    emb_put_u64(p, bits);
    emb_meta_raw(b, key, EM_META_F64, p, 8);
}

void emb_meta_string(emb_builder *b, const char *key, const char *value)
{
    emb_meta_raw(b, key, EM_META_STRING, value, (uint32_t)strlen(value));
}

void emb_meta_clear(emb_builder *b)
{
    b->meta.size = 0;
    b->meta_count = 0;
}

static void push_value(emb_builder *b, uint32_t h, uint32_t w, uint32_t c)
{
    const size_t n = (size_t)b->input_count + b->node_count;
    if (n + 1 > b->values_cap) {
        b->values_cap = b->values_cap ? 2 * b->values_cap : 16;
        b->values = (emb_shape *)realloc(b->values, b->values_cap * sizeof *b->values);
        if (b->values == NULL) die("out of memory");
    }
    b->values[n].h = h;
    b->values[n].w = w;
    b->values[n].c = c;
}

uint32_t emb_input(emb_builder *b, uint32_t h, uint32_t w, uint32_t c)
{
    if (b->node_count != 0) die("add every input before the first node (value ids would shift)");
    push_value(b, h, w, c);
    bytes_u32(&b->inputs, h);
    bytes_u32(&b->inputs, w);
    bytes_u32(&b->inputs, c);
    bytes_u32(&b->inputs, 0);
    return b->input_count++;
}

static uint32_t add_tensor(emb_builder *b, uint32_t dtype, uint32_t ndim, const uint32_t *dims, uint32_t bits,
                           const void *payload, size_t nbytes)
{
    uint32_t d;
    size_t offset = align64(b->data.size);
    bytes_zeros(&b->data, offset - b->data.size);
    bytes_append(&b->data, payload, nbytes);
    bytes_u32(&b->tensor_table, dtype);
    bytes_u32(&b->tensor_table, ndim);
    for (d = 0; d < 4; ++d) bytes_u32(&b->tensor_table, d < ndim ? dims[d] : 0);
    bytes_u32(&b->tensor_table, bits);
    bytes_u32(&b->tensor_table, 0);
    bytes_u64(&b->tensor_table, offset);
    bytes_u64(&b->tensor_table, nbytes);
    return b->tensor_count++;
}

static size_t numel_of(uint32_t ndim, const uint32_t *dims)
{
    size_t n = 1;
    uint32_t d;
    for (d = 0; d < ndim; ++d) n *= dims[d];
    return n;
}

uint32_t emb_tensor_f32(emb_builder *b, uint32_t ndim, const uint32_t *dims, const float *values)
{
    const size_t n = numel_of(ndim, dims);
    uint8_t *payload = (uint8_t *)malloc(4 * n + 1);
    size_t i;
    uint32_t id;
    if (payload == NULL) die("out of memory");
    for (i = 0; i < n; ++i) {
        uint32_t bits;
        memcpy(&bits, &values[i], 4);
        emb_put_u32(payload + 4 * i, bits);
    }
    id = add_tensor(b, EM_DTYPE_F32, ndim, dims, 32, payload, 4 * n);
    free(payload);
    return id;
}

uint32_t emb_tensor_idx(emb_builder *b, uint32_t ndim, const uint32_t *dims, uint32_t bits, const uint32_t *values)
{
    const size_t n = numel_of(ndim, dims), nbytes = (n * bits + 7) / 8;
    uint8_t *payload = (uint8_t *)calloc(nbytes + 1, 1);
    size_t i;
    uint32_t k, id;
    if (payload == NULL) die("out of memory");
    /* FORMAT.md "Bit packing": element i at stream bits [i·b, i·b + b), LSB first, bit k of the stream
     * is bit k mod 8 of byte k / 8 */
    for (i = 0; i < n; ++i)
        for (k = 0; k < bits; ++k)
            if ((values[i] >> k) & 1u) {
                const size_t pos = i * bits + k;
                payload[pos / 8] = (uint8_t)(payload[pos / 8] | (1u << (pos % 8)));
            }
    id = add_tensor(b, EM_DTYPE_IDX, ndim, dims, bits, payload, nbytes);
    free(payload);
    return id;
}

emb_node emb_node_init(uint32_t op, uint32_t input)
{
    emb_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.input = input;
    n.kernel_h = n.kernel_w = n.stride_h = n.stride_w = 1;
    n.weight = n.index = n.bias = EM_NONE;
    return n;
}

void emb_node_window(emb_node *n, uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw, uint32_t pt, uint32_t pl,
                     uint32_t pb, uint32_t pr)
{
    n->kernel_h = kh;
    n->kernel_w = kw;
    n->stride_h = sh;
    n->stride_w = sw;
    n->pad_top = pt;
    n->pad_left = pl;
    n->pad_bottom = pb;
    n->pad_right = pr;
}

uint32_t emb_add_node(emb_builder *b, const emb_node *n)
{
    const uint32_t f[24] = {n->op, n->input, n->activation, n->flags, n->out_h, n->out_w, n->out_c, n->kernel_h,
                            n->kernel_w, n->stride_h, n->stride_w, n->pad_top, n->pad_left, n->pad_bottom,
                            n->pad_right, n->seg_len, n->codewords, n->weight, n->index, n->bias, n->reserved[0],
                            n->reserved[1], n->reserved[2], n->reserved[3]};
    uint32_t k;
    for (k = 0; k < 20; ++k) bytes_u32(&b->nodes, f[k]);
    /* word 20: v1 reserved[0]; v2 input_count. Both forms are kept until emb_finish knows the version. */
    bytes_u32(&b->nodes, f[20]);
    for (k = 21; k < 24; ++k) bytes_u32(&b->nodes, f[k]);
    bytes_u32(&b->node_input_counts, n->reserved[0] != 0 ? n->reserved[0] : 1u + n->extra_count);
    if (n->extra_count > EMB_MAX_EXTRA_INPUTS) die("too many extra inputs");
    for (k = 0; k < n->extra_count; ++k) bytes_u32(&b->extra_inputs, n->extra[k]);
    b->extra_count += n->extra_count;
    push_value(b, n->out_h, n->out_w, n->out_c);
    ++b->node_count;
    return b->input_count + b->node_count - 1;
}

void emb_set_version(emb_builder *b, uint32_t version)
{
    b->version = version;
}

uint32_t emb_add_multi(emb_builder *b, uint32_t op, const uint32_t *values, uint32_t count, uint32_t activation)
{
    emb_node n = emb_node_init(op, values[0]);
    uint32_t k, h, w, c;
    if (count - 1u > EMB_MAX_EXTRA_INPUTS) die("too many inputs");
    emb_value_shape(b, values[0], &n.out_h, &n.out_w, &n.out_c);
    n.activation = activation;
    n.extra_count = count - 1u;
    for (k = 1; k < count; ++k) {
        n.extra[k - 1] = values[k];
        emb_value_shape(b, values[k], &h, &w, &c);
        if (op == EM_OP_CONCAT) n.out_c += c;
        else if (h * w > n.out_h * n.out_w) { /* MUL broadcast: the (H, W, C) input's shape */
            n.out_h = h;
            n.out_w = w;
            n.out_c = c;
        }
    }
    return emb_add_node(b, &n);
}

void emb_value_shape(const emb_builder *b, uint32_t value, uint32_t *h, uint32_t *w, uint32_t *c)
{
    if (value >= b->input_count + b->node_count) die("value id out of range");
    *h = b->values[value].h;
    *w = b->values[value].w;
    *c = b->values[value].c;
}

uint32_t emb_add_op(emb_builder *b, emb_node n, uint32_t out_c)
{
    uint32_t h, w, c;
    emb_value_shape(b, n.input, &h, &w, &c);
    switch (n.op) {
    case EM_OP_CONV2D:
    case EM_OP_DEPTHWISE_CONV2D:
    case EM_OP_LUT_CONV2D:
    case EM_OP_LUT_DEPTHWISE_CONV2D:
    case EM_OP_MAX_POOL:
    case EM_OP_AVG_POOL:
        n.out_h = (h + n.pad_top + n.pad_bottom - n.kernel_h) / n.stride_h + 1;
        n.out_w = (w + n.pad_left + n.pad_right - n.kernel_w) / n.stride_w + 1;
        n.out_c = (n.op == EM_OP_MAX_POOL || n.op == EM_OP_AVG_POOL) ? c : out_c;
        break;
    case EM_OP_DENSE:
    case EM_OP_LUT_DENSE:
        n.out_h = n.out_w = 1;
        n.out_c = out_c;
        break;
    case EM_OP_GLOBAL_AVG_POOL:
        n.out_h = n.out_w = 1;
        n.out_c = c;
        break;
    case EM_OP_RESHAPE:
        n.out_h = n.out_w = 1;
        n.out_c = h * w * c;
        break;
    default:
        n.out_h = h;
        n.out_w = w;
        n.out_c = c;
        break;
    }
    return emb_add_node(b, &n);
}

uint32_t emb_add_dense(emb_builder *b, uint32_t input, uint32_t out, const float *w)
{
    uint32_t h, w_, c, dims[2];
    emb_node n = emb_node_init(EM_OP_DENSE, input);
    emb_value_shape(b, input, &h, &w_, &c);
    dims[0] = h * w_ * c;
    dims[1] = out;
    n.weight = emb_tensor_f32(b, 2, dims, w);
    return emb_add_op(b, n, out);
}

void emb_task(emb_builder *b, const char *name, uint32_t input, uint32_t output, uint32_t classes)
{
    uint8_t rec[EM_TASK_RECORD_BYTES];
    memset(rec, 0, sizeof rec);
    memcpy(rec, name, strlen(name) < 32 ? strlen(name) : 32);
    emb_put_u32(rec + 32, input);
    emb_put_u32(rec + 36, output);
    emb_put_u32(rec + 40, classes);
    bytes_append(&b->tasks, rec, sizeof rec);
    ++b->task_count;
}

void emb_task_auto(emb_builder *b, const char *name, uint32_t input, uint32_t output)
{
    uint32_t h, w, c;
    emb_value_shape(b, output, &h, &w, &c);
    emb_task(b, name, input, output, h * w * c);
}

void emb_extension(emb_builder *b, uint32_t kind, const void *payload, uint32_t len, uint32_t before)
{
    emb_ext *e;
    b->exts = (emb_ext *)realloc(b->exts, (b->ext_count + 1) * sizeof *b->exts);
    if (b->exts == NULL) die("out of memory");
    e = &b->exts[b->ext_count++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->before = before;
    bytes_append(&e->payload, payload, len);
}

uint8_t *emb_finish(const emb_builder *b, size_t *size)
{
    emb_bytes sec[5];
    const emb_bytes *payload[5 + 64];
    uint32_t kinds[5 + 64];
    uint32_t count = 0, i, k, version;
    emb_bytes file;
    size_t cursor, table_end;
    uint8_t *h;

    memset(sec, 0, sizeof sec);
    memset(&file, 0, sizeof file);
    bytes_u32(&sec[0], b->meta_count);
    bytes_append(&sec[0], b->meta.data, b->meta.size);
    bytes_u32(&sec[1], b->task_count);
    bytes_append(&sec[1], b->tasks.data, b->tasks.size);
    version = b->version != 0 ? b->version : (b->extra_count > 0 ? 2u : 1u);
    bytes_u32(&sec[2], b->input_count);
    bytes_u32(&sec[2], b->node_count);
    if (version >= 2) {
        bytes_u32(&sec[2], b->extra_count);
        bytes_u32(&sec[2], 0);
    }
    bytes_append(&sec[2], b->inputs.data, b->inputs.size);
    {
        const size_t nodes_at = sec[2].size;
        bytes_append(&sec[2], b->nodes.data, b->nodes.size);
        if (version >= 2)
            for (i = 0; i < b->node_count; ++i) /* word 20 of every record: input_count */
                memcpy(sec[2].data + nodes_at + (size_t)EM_NODE_RECORD_BYTES * i + 80,
                       b->node_input_counts.data + 4u * i, 4);
    }
    if (version >= 2) bytes_append(&sec[2], b->extra_inputs.data, b->extra_inputs.size);
    bytes_u32(&sec[3], b->tensor_count);
    bytes_append(&sec[3], b->tensor_table.data, b->tensor_table.size);
    bytes_append(&sec[4], b->data.data, b->data.size);

    if (b->ext_count > 64) die("too many extension sections");
    for (k = 0; k <= 5; ++k) {
        for (i = 0; i < b->ext_count; ++i)
            if (b->exts[i].before == k) {
                kinds[count] = b->exts[i].kind;
                payload[count++] = &b->exts[i].payload;
            }
        if (k < 5) {
            kinds[count] = EM_SECTION_META + k;
            payload[count++] = &sec[k];
        }
    }

    table_end = EM_HEADER_BYTES + (size_t)EM_SECTION_ENTRY_BYTES * count;
    bytes_zeros(&file, align64(table_end));
    for (i = 0; i < count; ++i) {
        uint8_t *e;
        if (i > 0) bytes_zeros(&file, align64(file.size) - file.size);
        cursor = file.size;
        bytes_append(&file, payload[i]->data, payload[i]->size);
        e = file.data + EM_HEADER_BYTES + (size_t)EM_SECTION_ENTRY_BYTES * i;
        emb_put_u32(e, kinds[i]);
        emb_put_u32(e + 4, 0);
        emb_put_u64(e + 8, cursor);
        emb_put_u64(e + 16, payload[i]->size);
        emb_put_u32(e + 24, 0);
        emb_put_u32(e + 28, 0);
    }
    h = file.data;
    emb_put_u32(h + 0, EM_MAGIC_U32);
    emb_put_u32(h + 4, version);
    emb_put_u32(h + 8, EM_SENTINEL_U32);
    emb_put_u32(h + 12, EM_SENTINEL_F32_BITS);
    emb_put_u32(h + 16, EM_HEADER_BYTES);
    emb_put_u32(h + 20, EM_ALIGNMENT);
    emb_put_u32(h + 24, count);
    emb_put_u32(h + 28, 0);
    emb_put_u64(h + 32, file.size);
    emb_put_u64(h + 40, EM_HEADER_BYTES);
    emb_fix_crcs(file.data, file.size);
    for (k = 0; k < 5; ++k) free(sec[k].data);
    *size = file.size;
    return file.data;
}

void emb_fix_crcs(uint8_t *buf, size_t size)
{
    uint32_t count = emb_get_u32(buf + 24);
    uint32_t i;
    /* patched files may declare more sections than they hold: seal only what is there */
    if (size < EM_HEADER_BYTES) return;
    if (count > (size - EM_HEADER_BYTES) / EM_SECTION_ENTRY_BYTES)
        count = (uint32_t)((size - EM_HEADER_BYTES) / EM_SECTION_ENTRY_BYTES);
    for (i = 0; i < count; ++i) {
        uint8_t *e = buf + emb_section_entry_offset(i);
        const uint64_t off = emb_get_u64(e + 8), len = emb_get_u64(e + 16);
        if (off <= size && len <= size - off) emb_put_u32(e + 24, emb_crc32(buf + off, (size_t)len));
    }
    emb_put_u32(buf + 48, emb_crc32(buf + 64, (size_t)count * 32));
    emb_put_u32(buf + 60, emb_crc32(buf, 60));
}

size_t emb_section_entry_offset(uint32_t index)
{
    return EM_HEADER_BYTES + (size_t)EM_SECTION_ENTRY_BYTES * index;
}

int emb_find_section(const uint8_t *buf, uint32_t kind, size_t *offset, size_t *payload)
{
    const uint32_t count = emb_get_u32(buf + 24);
    uint32_t i;
    for (i = 0; i < count; ++i) {
        const uint8_t *e = buf + emb_section_entry_offset(i);
        if (emb_get_u32(e) == kind) {
            if (offset) *offset = (size_t)emb_get_u64(e + 8);
            if (payload) *payload = (size_t)emb_get_u64(e + 16);
            return (int)i;
        }
    }
    return -1;
}

size_t emb_node_record_offset(const uint8_t *buf, uint32_t node)
{
    size_t off = 0; /* emb_find_section leaves it unset when the section is missing */
    emb_find_section(buf, EM_SECTION_GRAPH, &off, NULL);
    const size_t graph_header = emb_get_u32(buf + 4) >= 2 ? EM_GRAPH_HEADER_BYTES : EM_GRAPH_HEADER_BYTES_V1;
    return off + graph_header + (size_t)EM_INPUT_RECORD_BYTES * emb_get_u32(buf + off) +
           (size_t)EM_NODE_RECORD_BYTES * node;
}

size_t emb_tensor_record_offset(const uint8_t *buf, uint32_t tensor)
{
    size_t off = 0; /* emb_find_section leaves it unset when the section is missing */
    emb_find_section(buf, EM_SECTION_TENSORS, &off, NULL);
    return off + 4 + (size_t)EM_TENSOR_RECORD_BYTES * tensor;
}

size_t emb_task_record_offset(const uint8_t *buf, uint32_t task)
{
    size_t off = 0; /* emb_find_section leaves it unset when the section is missing */
    emb_find_section(buf, EM_SECTION_TASKS, &off, NULL);
    return off + 4 + (size_t)EM_TASK_RECORD_BYTES * task;
}

size_t emb_tensor_data_offset(const uint8_t *buf, uint32_t tensor)
{
    size_t data = 0; /* emb_find_section leaves it unset when the section is missing */
    emb_find_section(buf, EM_SECTION_DATA, &data, NULL);
    return data + (size_t)emb_get_u64(buf + emb_tensor_record_offset(buf, tensor) + 32);
}

uint8_t *emb_finish_one_task(emb_builder *b, uint32_t input, uint32_t output, size_t *size)
{
    uint8_t *file;
    emb_task_auto(b, "t", input, output);
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

void emb_lut_model_build(const emb_lut_layer *c, uint32_t flags, uint32_t seed, emb_lut_model *out)
{
    emb_lut_model_build_shared(c, flags, seed, 0, out);
}

void emb_lut_model_build_shared(const emb_lut_layer *c, uint32_t flags, uint32_t seed, int shared,
                                emb_lut_model *out)
{
    emb_builder *b = emb_create();
    em_test_rng rng;
    const int dense = c->op == EM_OP_LUT_DENSE;
    const uint32_t S = (c->cin + c->r - 1) / c->r, taps = dense ? 1 : c->kh * c->kw, S_cb = shared ? 1u : S;
    const uint32_t cb_dims[3] = {S_cb, c->C, c->r};
    const size_t cb_count = (size_t)S_cb * c->C * c->r, idx_count = (size_t)taps * S * c->cout;
    uint32_t *idx = (uint32_t *)malloc(idx_count * sizeof(uint32_t));
    uint32_t in, o, oh, ow, oc, bits = 1;
    emb_node n = emb_node_init(c->op, 0);
    size_t i;
    while ((1u << bits) < c->C) ++bits;
    em_test_rng_seed(&rng, seed);
    in = dense ? emb_input(b, 1, 1, c->cin) : emb_input(b, c->h, c->w, c->cin);
    n.input = in;
    n.flags = flags;
    n.activation = c->act;
    if (!dense) emb_node_window(&n, c->kh, c->kw, c->sh, c->sw, c->pt, c->pl, c->pb, c->pr);
    out->codebook = (float *)malloc(cb_count * sizeof(float));
    out->codebook_segments = S_cb;
    em_test_fill(&rng, out->codebook, cb_count, 0.3f);
    for (i = 0; i < idx_count; ++i) idx[i] = em_test_rand_below(&rng, c->C);
    idx[idx_count / 2] = c->C - 1;
    n.seg_len = c->r;
    n.codewords = c->C;
    n.weight = emb_tensor_f32(b, 3, cb_dims, out->codebook);
    if (dense) {
        const uint32_t dims[2] = {S, c->cout};
        n.index = emb_tensor_idx(b, 2, dims, bits, idx);
    } else {
        const uint32_t dims[4] = {c->kh, c->kw, S, c->cout};
        n.index = emb_tensor_idx(b, 4, dims, bits, idx);
    }
    if (c->bias) {
        float *bias = (float *)malloc(c->cout * sizeof(float));
        em_test_fill(&rng, bias, c->cout, 0.5f);
        n.bias = emb_tensor_f32(b, 1, &c->cout, bias);
        free(bias);
    }
    o = emb_add_op(b, n, c->cout);
    emb_task_auto(b, "t", in, o);
    emb_value_shape(b, o, &oh, &ow, &oc);
    out->file = emb_finish(b, &out->size);
    emb_destroy(b);
    free(idx);
    out->nx = dense ? c->cin : (size_t)c->h * c->w * c->cin;
    out->ny = (size_t)oh * ow * oc;
    out->x = (float *)malloc(out->nx * sizeof(float));
    em_test_fill(&rng, out->x, out->nx, 1.0f);
    out->scale = 0.0f;
}

void emb_lut_model_free(emb_lut_model *m)
{
    free(m->file);
    free(m->codebook);
    free(m->x);
    m->file = NULL;
    m->codebook = m->x = NULL;
}
