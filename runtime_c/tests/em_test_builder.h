/* Builds .emm files in memory, following docs/FORMAT.md directly (independently of the loader: its own
 * little-endian writers, bit packer and bitwise CRC32), for the C tests.
 *
 * The builder does not validate: tests make invalid files on purpose by passing bad fields, or patch a
 * finished buffer with the helpers at the end and re-seal it with emb_fix_crcs(). */
#ifndef EDGEMERGE_EM_TEST_BUILDER_H
#define EDGEMERGE_EM_TEST_BUILDER_H

#include <stddef.h>
#include <stdint.h>

#include "edgemerge/em_format.h"
#include "em_test_bytes.h"

typedef struct emb_builder emb_builder;

#define EMB_MAX_EXTRA_INPUTS 70u /* more than MAX_NODE_INPUTS - 1, for the limit tests */

/* struct em_node of FORMAT.md, field for field, plus the node's extra inputs (v2). */
typedef struct emb_node {
    uint32_t op, input, activation, flags;
    uint32_t out_h, out_w, out_c;
    uint32_t kernel_h, kernel_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left, pad_bottom, pad_right;
    uint32_t seg_len, codewords;
    uint32_t weight, index, bias;
    /* v1: the reserved words as written. v2: reserved[0] is input_count; the builder writes
     * 1 + extra_count there unless reserved[0] is set (corrupt-file tests). */
    uint32_t reserved[4];
    uint32_t extra_count;                        /* inputs 1.. (v2 extra-input list) */
    uint32_t extra[EMB_MAX_EXTRA_INPUTS];
} emb_node;

/* A new builder whose META already holds the keys FORMAT.md requires. */
emb_builder *emb_create(void);
void emb_destroy(emb_builder *b);

void emb_meta_u64(emb_builder *b, const char *key, uint64_t value);
void emb_meta_i64(emb_builder *b, const char *key, int64_t value);
void emb_meta_f64(emb_builder *b, const char *key, double value);
void emb_meta_string(emb_builder *b, const char *key, const char *value);
/* Any bytes as a value of any type (for corrupt-file tests). */
void emb_meta_raw(emb_builder *b, const char *key, uint32_t type, const void *value, uint32_t len);
void emb_meta_clear(emb_builder *b); /* drops every entry, the required ones too */

/* Format version of the file emb_finish writes: 1 or 2 (any other value is written as is, for tests),
 * 0 (the default): 2 if some node has extra inputs, else 1. */
void emb_set_version(emb_builder *b, uint32_t version);
/* A multi-input node (ADD, CONCAT, MUL) reading values[0..count) with the output shape computed per
 * FORMAT.md (ADD, MUL: the larger input's shape; CONCAT: channels summed). Returns its value id. */
uint32_t emb_add_multi(emb_builder *b, uint32_t op, const uint32_t *values, uint32_t count, uint32_t activation);

/* Returns the value id of the new graph input. */
uint32_t emb_input(emb_builder *b, uint32_t h, uint32_t w, uint32_t c);
/* Tensors: values are copied. Return the tensor id. */
uint32_t emb_tensor_f32(emb_builder *b, uint32_t ndim, const uint32_t *dims, const float *values);
uint32_t emb_tensor_idx(emb_builder *b, uint32_t ndim, const uint32_t *dims, uint32_t bits, const uint32_t *values);

/* A node record for `op` reading `input`: kernel and stride 1, pads 0, no tensors (NONE), r = C = 0,
 * output shape still 0 (set it, or use emb_add_op which computes it). */
emb_node emb_node_init(uint32_t op, uint32_t input);
/* Appends a node as given; returns its value id. */
uint32_t emb_add_node(emb_builder *b, const emb_node *node);
/* Sets a node's window: kernel, strides and pads (top, left, bottom, right). */
void emb_node_window(emb_node *n, uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw, uint32_t pt, uint32_t pl,
                     uint32_t pb, uint32_t pr);
/* Appends a node after computing its output shape from its input's shape per FORMAT.md (out_c: the
 * output channel count for conv/dense/LUT ops, ignored by the others). Returns its value id. */
uint32_t emb_add_op(emb_builder *b, emb_node node, uint32_t out_c);
/* A DENSE node without bias and activation from `input` (flattened: In = h·w·c of its shape) to `out` outputs,
 * its weights w[In · out] ([In, Out]) in a new tensor. Returns its value id. */
uint32_t emb_add_dense(emb_builder *b, uint32_t input, uint32_t out, const float *w);
void emb_value_shape(const emb_builder *b, uint32_t value, uint32_t *h, uint32_t *w, uint32_t *c);

void emb_task(emb_builder *b, const char *name, uint32_t input, uint32_t output, uint32_t classes);
/* A task whose classes are its output value's element count. */
void emb_task_auto(emb_builder *b, const char *name, uint32_t input, uint32_t output);

/* An extension section placed before required section `before` (0 = before META, 5 = after DATA). */
void emb_extension(emb_builder *b, uint32_t kind, const void *payload, uint32_t len, uint32_t before);

/* The finished file (malloc'd; free() it). The builder stays usable. */
uint8_t *emb_finish(const emb_builder *b, size_t *size);
/* The one-task model: task "t" from `input` to `output`, the file finished and the builder destroyed. */
uint8_t *emb_finish_one_task(emb_builder *b, uint32_t input, uint32_t output, size_t *size);

/* ---- helpers for patching finished files (and em_test_bytes.h: emb_get_u32, emb_put_u32, ...) ---- */
uint32_t emb_crc32(const void *data, size_t size); /* bitwise, independent of src/em_crc32.c */
/* Recomputes every section CRC, the section table CRC and the header CRC. */
void emb_fix_crcs(uint8_t *buf, size_t size);
/* File offset and size of the payload of the first section of `kind`; returns its table index or -1. */
int emb_find_section(const uint8_t *buf, uint32_t kind, size_t *offset, size_t *payload);
/* File offsets of records (the node records' offset depends on the file's version). */
size_t emb_section_entry_offset(uint32_t index);
size_t emb_node_record_offset(const uint8_t *buf, uint32_t node);
size_t emb_tensor_record_offset(const uint8_t *buf, uint32_t tensor);
size_t emb_task_record_offset(const uint8_t *buf, uint32_t task);
size_t emb_tensor_data_offset(const uint8_t *buf, uint32_t tensor); /* file offset of its payload */

/* ---- one-node LUT models of the int8 kernel tests (test_lut_int8, test_int8_act) ---- */
typedef struct emb_lut_layer {
    uint32_t op; /* EM_OP_LUT_CONV2D, or EM_OP_LUT_DENSE (h = w = 1, the window unused) */
    uint32_t h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, C, act, bias;
} emb_lut_layer;

typedef struct emb_lut_model {
    uint8_t *file;
    size_t size;
    float *codebook; /* [S, C, r], or [1, C, r] when layer-shared */
    uint32_t codebook_segments; /* S, or 1 (layer-shared) */
    float *x;        /* one input sample of nx values; the output has ny */
    size_t nx, ny;
    float scale; /* the INT8_ACT input scale written into the node (0: none) */
} emb_lut_model;

/* The layer as the only node of a one-task model with node flags `flags`, drawn in this order from a generator
 * seeded with `seed`: the codebook (scale 0.3), the indices below C (the middle one C - 1, so the last
 * codeword is read), the bias (0.5) when the layer has one, and the input (1.0). Free with emb_lut_model_free. */
void emb_lut_model_build(const emb_lut_layer *layer, uint32_t flags, uint32_t seed, emb_lut_model *out);
/* The same with `shared` != 0: one layer-shared codebook [1, C, r] for every segment. */
void emb_lut_model_build_shared(const emb_lut_layer *layer, uint32_t flags, uint32_t seed, int shared,
                                emb_lut_model *out);
void emb_lut_model_free(emb_lut_model *m);

/* Byte offsets of fields inside a node record (4 × the field number of struct em_node). */
enum {
    EMB_NODE_OP = 0, EMB_NODE_INPUT = 4, EMB_NODE_ACTIVATION = 8, EMB_NODE_FLAGS = 12, EMB_NODE_OUT_H = 16,
    EMB_NODE_OUT_W = 20, EMB_NODE_OUT_C = 24, EMB_NODE_KERNEL_H = 28, EMB_NODE_KERNEL_W = 32,
    EMB_NODE_STRIDE_H = 36, EMB_NODE_STRIDE_W = 40, EMB_NODE_PAD_TOP = 44, EMB_NODE_PAD_LEFT = 48,
    EMB_NODE_PAD_BOTTOM = 52, EMB_NODE_PAD_RIGHT = 56, EMB_NODE_SEG_LEN = 60, EMB_NODE_CODEWORDS = 64,
    EMB_NODE_WEIGHT = 68, EMB_NODE_INDEX = 72, EMB_NODE_BIAS = 76, EMB_NODE_RESERVED = 80
};

#endif /* EDGEMERGE_EM_TEST_BUILDER_H */
