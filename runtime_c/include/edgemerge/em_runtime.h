/* edgemerge C runtime: loads a .emm model from a caller-owned byte buffer and runs its tasks.
 *
 * C99, no global state, no allocation during a run. Memory:
 *   - em_model_load() allocates the small parsed model (node/tensor tables) through the caller's
 *     allocator (NULL: malloc/free); tensor data is used in place from the caller's buffer, which must
 *     outlive the model and be aligned to at least 4 bytes (64 recommended).
 *   - Activations and scratch live in a context whose memory the caller provides
 *     (em_context_size() bytes); one context per thread, any number of contexts per model.
 * Errors are status codes plus a message that names the field and the reason. */
#ifndef EDGEMERGE_EM_RUNTIME_H
#define EDGEMERGE_EM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "em_format.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int em_status; /* EM_STATUS_* */
/* What the status codes mean here:
 *   BAD_MAGIC, FUTURE_VERSION   not an .emm file / written by a newer format version
 *   TRUNCATED                   the buffer ends before the data it declares
 *   BAD_CRC                     a header, section-table or section checksum does not match
 *   CORRUPT                     a field breaks a rule of docs/FORMAT.md (the message names it)
 *   LIMIT                       a count, dim or size is past a FORMAT.md limit or past size_t
 *   UNSUPPORTED                 well-formed, but needs a newer runtime (unknown op, flags) or host
 *   NO_MEMORY                   the allocator returned NULL
 *   BAD_ARGUMENT, MISALIGNED    the caller's arguments (NULLs, sizes, a buffer not 4-byte aligned) */

#define EM_ERROR_MESSAGE_BYTES 256

typedef struct em_error {
    em_status status;
    char message[EM_ERROR_MESSAGE_BYTES];
} em_error;

typedef struct em_allocator {
    void *(*alloc)(void *user, size_t bytes); /* returns NULL on failure; memory aligned to 16 */
    void (*free)(void *user, void *ptr);
    void *user;
} em_allocator;

typedef struct em_model em_model;
typedef struct em_context em_context;

typedef struct em_task_info {
    const char *name;      /* NUL-terminated, points into the model */
    uint32_t input_index;  /* graph input read by the task */
    uint32_t input_h, input_w, input_c;
    uint32_t classes;      /* output element count (logits) */
} em_task_info;

typedef struct em_node_info {
    uint32_t op;           /* EM_OP_* */
    uint32_t input;        /* value id read */
    uint32_t out_h, out_w, out_c;
    uint32_t seg_len, codewords;
    const char *name;      /* from metadata node.N.name, or "" */
    const char *kernel;    /* name of the kernel chosen for this node, e.g. "lut_conv2d_ref" */
} em_node_info;

/* Human-readable name of a status code ("truncated", "bad CRC", ...). */
const char *em_status_name(em_status status);

/* Validates the whole buffer (header, sections, CRCs, every record and tensor reference, shapes)
 * before returning a model. On failure *out_model is NULL and err (if not NULL) says why. */
em_status em_model_load(const void *data, size_t size, const em_allocator *allocator,
                        em_model **out_model, em_error *err);
void em_model_free(em_model *model);

uint32_t em_model_format_version(const em_model *model);
uint32_t em_model_task_count(const em_model *model);
em_status em_model_task_info(const em_model *model, uint32_t task, em_task_info *out);
/* Index of the task with this name, or -1. */
int32_t em_model_find_task(const em_model *model, const char *name);
uint32_t em_model_input_count(const em_model *model);
em_status em_model_input_shape(const em_model *model, uint32_t input, uint32_t *h, uint32_t *w, uint32_t *c);
uint32_t em_model_node_count(const em_model *model);
em_status em_model_node_info(const em_model *model, uint32_t node, em_node_info *out);

/* Bytes of caller memory a context needs (activations of every value + kernel scratch + bookkeeping). */
size_t em_context_size(const em_model *model);
/* Lays a context out in `memory` (any alignment; the runtime aligns inside). No other allocation. */
em_status em_context_init(const em_model *model, void *memory, size_t size, em_context **out_ctx,
                          em_error *err);

/* Runs one task on one sample: input has input_h*input_w*input_c floats (NHWC), output gets
 * `classes` logits. Only the nodes the task needs are computed. */
em_status em_run_task(em_context *ctx, uint32_t task, const float *input, size_t input_count,
                      float *output, size_t output_count, em_error *err);
/* Runs every task once: inputs[i] is graph input i (em_model_input_count() of them, sizes from the
 * tasks that read them), outputs[t] receives task t's logits. Every node runs once, so a trunk shared
 * by tasks that read the same input is computed once. */
em_status em_run_all(em_context *ctx, const float *const *inputs, float *const *outputs, em_error *err);

/* How many times node `node` has run in this context since em_context_init (profiling, tests). */
uint64_t em_context_node_runs(const em_context *ctx, uint32_t node);

/* Name of an op as FORMAT.md spells it ("LUT_CONV2D"), or "unknown". */
const char *em_op_name(uint32_t op);
/* The CPU this build targets and the kernel set it uses, e.g. "aarch64, scalar reference kernels". */
const char *em_runtime_cpu_features(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEMERGE_EM_RUNTIME_H */
