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
    uint32_t input;        /* value id of input 0 */
    uint32_t out_h, out_w, out_c;
    uint32_t seg_len, codewords;
    const char *name;      /* from metadata node.N.name, or "" */
    const char *kernel;    /* name of the kernel chosen for this node, e.g. "lut_conv2d_ref" */
    /* em_run_all runs nodes of different tasks that apply the same weights to different values (after
     * zippering: the shared point-wise convs) as one step, a run group: its index, or EM_NONE where the
     * node runs alone. Fused: the step is one matrix product over all the members' pixels (1×1 convs on
     * the fast kernels), the weights read once for all of them; else the members run back to back.
     * Profiling puts a group's time on its first member in the schedule. em_run_task runs members alone. */
    uint32_t run_group;
    uint32_t run_group_fused;
    uint32_t input_count; /* values read (format v2); `input` is input 0, em_model_node_input gives the others */
} em_node_info;

/* Kernel sets: which implementation of every op a model uses, chosen once at load (em_model_load_ex, or
 * the EM_KERNELS environment variable for em_model_load). Every set computes what the reference computes
 * (docs/FORMAT.md); fast sets differ from it only by float rounding (summation order). */
#define EM_KERNELS_AUTO 0u      /* the fastest set this CPU and build support (the default) */
#define EM_KERNELS_REFERENCE 1u /* src/ref/: plain scalar kernels, the spec in code ("ref") */
#define EM_KERNELS_GENERIC 2u   /* fast algorithms in portable C, no intrinsics ("generic") */
#define EM_KERNELS_SSE2 3u      /* x86: fast algorithms, 128-bit SSE2 micro-kernels ("sse2") */
#define EM_KERNELS_AVX2 4u      /* x86: 256-bit AVX2 + FMA micro-kernels ("avx2") */
#define EM_KERNELS_AVX512 5u    /* x86: 512-bit AVX-512F micro-kernels ("avx512") */
#define EM_KERNELS_NEON 6u      /* ARM: 128-bit NEON micro-kernels ("neon") */
#define EM_KERNELS_COUNT 7u

/* The largest run context (em_context_size) a model may need: em_model_load refuses a model (with its
 * kernel set) that needs more with EM_STATUS_LIMIT and a message naming the size, instead of letting a
 * caller attempt a huge allocation. 2 GiB: a size_t on every target; a build may lower (or raise) it with
 * -DEM_MAX_CONTEXT_BYTES=N. docs/FORMAT.md "Limits". */
#ifndef EM_MAX_CONTEXT_BYTES
#define EM_MAX_CONTEXT_BYTES ((size_t)1 << 31)
#endif

/* em_load_options.flags */
#define EM_LOAD_NO_RUN_GROUPS 1u /* em_run_all runs every node alone (no run groups): for comparisons */
#define EM_LOAD_NO_FUSED_ADD 2u  /* no residual ADD fused into the conv that feeds it: for comparisons */
/* Plan for threads (em_context_set_pool): em_run_all runs the nodes shared by several tasks first, then each
 * task's own nodes (its lane) on the pool's threads, the lanes in parallel. The arena gives every lane its
 * own bytes (no sharing between lanes: a larger context than the serial plan), and there are no run groups
 * (their members belong to different lanes). Without a pool such a model runs the same steps serially. */
#define EM_LOAD_PARALLEL_TASKS 4u
typedef struct em_load_options {
    uint32_t kernels;     /* EM_KERNELS_*; a set this CPU or build lacks fails the load with UNSUPPORTED */
    uint32_t flags;       /* EM_LOAD_* */
    uint32_t reserved[6]; /* 0 */
} em_load_options;

/* Time one node spent in its kernel while profiling was enabled (see em_context_enable_profiling). */
typedef struct em_node_profile {
    uint64_t runs;          /* runs counted while profiling */
    uint64_t total_ns;      /* wall time in the kernel, monotonic clock */
    uint64_t table_ns;      /* LUT ops with a fast kernel: building the lookup table (0 when it was shared) */
    uint64_t accumulate_ns; /* LUT ops with a fast kernel: accumulating table entries by index */
} em_node_profile;

/* Human-readable name of a status code ("truncated", "bad CRC", ...). */
const char *em_status_name(em_status status);

/* Validates the whole buffer (header, sections, CRCs, every record and tensor reference, shapes)
 * before returning a model. On failure *out_model is NULL and err (if not NULL) says why. */
em_status em_model_load(const void *data, size_t size, const em_allocator *allocator,
                        em_model **out_model, em_error *err);
/* em_model_load with options (NULL: the defaults, as em_model_load). em_model_load itself uses
 * EM_KERNELS_AUTO unless the environment variable EM_KERNELS names a set ("ref", "generic", "avx2", ...). */
em_status em_model_load_ex(const void *data, size_t size, const em_allocator *allocator,
                           const em_load_options *options, em_model **out_model, em_error *err);
void em_model_free(em_model *model);
/* The kernel set the model was loaded with (never EM_KERNELS_AUTO: the set AUTO resolved to). */
uint32_t em_model_kernels(const em_model *model);

uint32_t em_model_format_version(const em_model *model);
uint32_t em_model_task_count(const em_model *model);
em_status em_model_task_info(const em_model *model, uint32_t task, em_task_info *out);
/* Index of the task with this name, or -1. */
int32_t em_model_find_task(const em_model *model, const char *name);
uint32_t em_model_input_count(const em_model *model);
em_status em_model_input_shape(const em_model *model, uint32_t input, uint32_t *h, uint32_t *w, uint32_t *c);
uint32_t em_model_node_count(const em_model *model);
/* Run groups of em_run_all (see em_node_info.run_group). */
uint32_t em_model_run_group_count(const em_model *model);
em_status em_model_node_info(const em_model *model, uint32_t node, em_node_info *out);

/* Bytes of caller memory a context needs (activations of every value + kernel scratch + bookkeeping). */
size_t em_context_size(const em_model *model);
/* The peak of a run: the arena that holds every node's output, scratch and shared tables, with buffers
 * reused by liveness (a value lives from its node's step to its last consumer's, on any branch; the
 * arena is sized at load, a run allocates nothing). Part of em_context_size. */
size_t em_model_arena_bytes(const em_model *model);
/* What the node outputs would take without reuse (each rounded up to 64 bytes): the peak's yardstick. */
size_t em_model_values_bytes(const em_model *model);
/* Bytes the loader allocated for kernel data derived from the file: the kernels' packed data (decoded
 * weights of LUT layers run decoded, unpacked indices, tables' offsets; with its alignment slack) and the
 * decoded weights of clustered depthwise layers. Model memory beyond the file, which the runtime reads in
 * place (the parsed node and tensor records, a few hundred bytes per node, are not counted). */
size_t em_model_packed_bytes(const em_model *model);
/* Value id of input k of a node (k < em_node_info.input_count). */
em_status em_model_node_input(const em_model *model, uint32_t node, uint32_t k, uint32_t *value);
/* Lays a context out in `memory` (any alignment; the runtime aligns inside). No other allocation. */
em_status em_context_init(const em_model *model, void *memory, size_t size, em_context **out_ctx,
                          em_error *err);

/* Runs one task on one sample: input has input_h*input_w*input_c floats (NHWC), output gets
 * `classes` logits. Only the nodes the task needs are computed. */
em_status em_run_task(em_context *ctx, uint32_t task, const float *input, size_t input_count,
                      float *output, size_t output_count, em_error *err);
/* Runs every task once: inputs[i] is graph input i (em_model_input_count() of them, sizes from the
 * tasks that read them), outputs[t] receives task t's logits. Every node runs once, so a trunk shared
 * by tasks that read the same input is computed once, and nodes that share weights across tasks run as
 * one step (em_node_info.run_group); the outputs have the same bits as em_run_task's. */
em_status em_run_all(em_context *ctx, const float *const *inputs, float *const *outputs, em_error *err);

/* Threads: a worker pool of `threads` workers (the calling thread is worker 0, so threads-1 pthreads are
 * started here; 1..EM_MAX_THREADS). Create it once, hand it to contexts with em_context_set_pool; a run then
 * starts no thread and allocates nothing. A pool may serve several contexts: a run that finds the pool busy
 * with another context's run does its work on the calling thread instead of waiting. Large nodes (above a
 * cost threshold) are split over the workers by output rows / channels / column blocks, or em_run_all runs
 * the task lanes in parallel where the cost model favours that. Outputs have the same bits for every thread
 * count: each output element is computed by one thread with the serial operations, and no reduction is split. A build without pthreads (-DEM_THREADS=0) accepts only threads = 1 (UNSUPPORTED otherwise).
 * Free the pool after the last run of every context that uses it. */
#define EM_MAX_THREADS 64u
typedef struct em_pool em_pool;
em_status em_pool_create(uint32_t threads, const em_allocator *allocator, em_pool **out_pool, em_error *err);
void em_pool_free(em_pool *pool);
uint32_t em_pool_threads(const em_pool *pool);
/* Attach a pool to a context (NULL: run serially, the default). em_run_task and em_run_all split large nodes
 * over it; task lanes need a model loaded with EM_LOAD_PARALLEL_TASKS and at least two lanes. */
em_status em_context_set_pool(em_context *ctx, em_pool *pool);
/* Lanes em_run_all can run in parallel: the tasks with nodes of their own, planned with
 * EM_LOAD_PARALLEL_TASKS; 0 when the model was planned serially (no flag, one task, or a node no task needs). */
uint32_t em_model_task_lanes(const em_model *model);

/* How many times node `node` has run in this context since em_context_init (profiling, tests). */
uint64_t em_context_node_runs(const em_context *ctx, uint32_t node);

/* Per-node timing. Enabling clears the counters; while disabled (the default) a run reads no clock.
 * Times come from the platform's monotonic clock (clock_gettime on POSIX; 0 where a build has none). */
em_status em_context_enable_profiling(em_context *ctx, int enable);
em_status em_context_node_profile(const em_context *ctx, uint32_t node, em_node_profile *out);

/* Name of an op as FORMAT.md spells it ("LUT_CONV2D"), or "unknown". */
const char *em_op_name(uint32_t op);
/* The CPU this build targets, the SIMD kernel sets this CPU can run and the BLAS linked in, e.g.
 * "x86_64; kernels: avx512 avx2 sse2 generic ref; BLAS: OpenBLAS". */
const char *em_runtime_cpu_features(void);
/* Kernel sets: whether this build on this CPU can run `kernels` (AUTO and REFERENCE always can), its
 * name ("avx2"), and the set a name stands for (returns 0 for an unknown name). */
int em_kernels_available(uint32_t kernels);
const char *em_kernels_name(uint32_t kernels);
int em_kernels_from_name(const char *name, uint32_t *out_kernels);
/* Threads a linked BLAS may use (OpenBLAS is process-wide); a no-op without BLAS. The runtime's own threads
 * are a pool's (em_pool_create); benchmarks set this to 1. */
void em_runtime_set_blas_threads(int threads);

#ifdef __cplusplus
}
#endif

#endif /* EDGEMERGE_EM_RUNTIME_H */
