/* Private declarations shared by the loader, the op table, the runtime and the kernels.
 *
 * Trust boundary: everything in an em_model has been validated by em_model_load() against
 * docs/FORMAT.md (shapes recomputed, tensor references checked, every index < C). Kernels therefore
 * do no validation of their own; they only read what the loader proved to be in bounds. */
#ifndef EDGEMERGE_EM_INTERNAL_H
#define EDGEMERGE_EM_INTERNAL_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#include "edgemerge/em_runtime.h"
#include "em_error.h"

/* Context memory is handed out in chunks aligned to this (a cache line, and enough for any SIMD load). */
#define EM_CONTEXT_ALIGNMENT 64u

/* ---------------------------------------------------------------------------------------------
 * Parsed model
 * --------------------------------------------------------------------------------------------- */

/* Shape of an activation value: NHWC with batch 1. numel <= EM_MAX_VALUE_ELEMENTS (checked). */
typedef struct em_shape {
    uint32_t h, w, c;
    uint32_t numel;
} em_shape;

typedef struct em_tensor {
    uint32_t dtype; /* EM_DTYPE_* */
    uint32_t ndim;
    uint32_t dims[4];
    uint32_t bits;          /* 32 for F32, 1..16 for IDX */
    uint32_t numel;         /* <= EM_MAX_TENSOR_ELEMENTS */
    size_t nbytes;          /* fits the buffer, so fits size_t */
    const uint8_t *data;    /* in place in the caller's buffer; 4-byte aligned for F32 */
    /* IDX only: largest index in the map, computed once when the first LUT node that needs it
     * is prepared (the scan is the only O(numel) step of the loader). */
    int max_index_known;
    uint32_t max_index;
} em_tensor;

struct em_op_registration;
struct em_kernel;

typedef struct em_node {
    uint32_t id;    /* position in GRAPH, for messages */
    uint32_t op;    /* EM_OP_* */
    uint32_t input; /* value id of input 0 (== inputs[0]) */
    uint32_t input_count;   /* 1..MAX_NODE_INPUTS (FORMAT.md v2); 1 for every v1 node */
    const uint32_t *inputs; /* [input_count] value ids, each < the node's own (the parser checked) */
    const em_shape *value_shapes; /* the model's value shapes: multi-input kernels read their inputs' shapes */
    uint32_t activation;
    uint32_t flags; /* EM_NODE_FLAG_* (INT8_TABLES, INT8_ACT: LUT ops only, checked by prepare()) */
    float input_scale; /* INT8_ACT: sx of FORMAT.md "int8 activations" (record word 21); else 0 */
    em_shape in;  /* shape of input 0 (other inputs: model->value_shapes[inputs[k]]) */
    em_shape out; /* declared output shape, verified by the op's prepare() */
    uint32_t kernel_h, kernel_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left, pad_bottom, pad_right;
    uint32_t seg_len;   /* r (LUT ops) */
    uint32_t codewords; /* C (LUT ops) */
    uint32_t segments;  /* S = ceil(Cin / r) (LUT ops), set by prepare() */
    /* Floats between the codebooks of segments s and s + 1 (LUT ops, set by prepare()): C·r for a codebook
     * [S_cb >= S, C, r] with one codebook per segment, 0 for a layer-shared codebook [1, C, r] that serves
     * every segment (FORMAT.md "LUT ops"). Kernels index segment s at s · stride, never a copied codebook. */
    size_t codebook_segment_stride;
    uint32_t weight_id, index_id, bias_id; /* tensor ids as stored, EM_NONE if absent */
    const em_tensor *weight;               /* NULL where absent */
    const em_tensor *index_map;
    const em_tensor *bias;
    const char *name; /* from META node.N.name, or "" */
    const struct em_op_registration *reg;
    size_t scratch_bytes; /* set by prepare() for the reference kernel, then by the chosen kernel's plan() */

    /* Chosen at load by em_kernel_choose() (em_select.c), after prepare() validated the node. */
    const struct em_kernel *kernel;
    void *packed;        /* model-owned data the kernel prepared at load (unpacked indices...), or NULL */
    size_t packed_bytes; /* set by the kernel's plan() */
    /* Table sharing (LUT ops): the part of scratch_bytes that is the lookup table, at the start of the
     * scratch, and whether another node reading the same value with the same codebook, r and table
     * layout may reuse it (set by plan()). table_group is EM_NONE or the node's group in the model. */
    size_t table_bytes;
    int table_shareable;
    uint32_t table_group;

    /* The context plan (em_plan.c): byte offsets in the context arena, and the last node that reads
     * this node's value (node_count: kept to the end of a run, e.g. a task output). */
    size_t output_offset;
    size_t scratch_offset;
    uint32_t last_use;
    /* The run schedule (em_plan.c): the node's step in em_run_all, and its run group (EM_NONE: it runs
     * alone). step orders every buffer lifetime above. */
    uint32_t step;
    uint32_t run_group;
    /* Residual ADD fused into a conv's epilogue (em_plan.c fuse_residual_adds): on the conv, the value it adds
     * to its output and the ADD's activation (residual EM_NONE: not fused); on the ADD, the conv that computes
     * its output in its place (fused_into EM_NONE: it runs itself). */
    uint32_t residual;
    uint32_t residual_activation;
    uint32_t fused_into;
    /* EM_LOAD_PARALLEL_TASKS (em_plan.c plan_lanes): the task whose lane runs this node (the only task that
     * needs it), or EM_NONE for a node several tasks need, run before the lanes start. */
    uint32_t lane;
    /* Threads (em_plan.c): the node's estimated work (em_node_cost), and whether a run with a pool splits it
     * over the workers (its kernel has split() and cost >= EM_SPLIT_MIN_COST). */
    uint64_t cost;
    int split;
} em_node;

/* Codebook segments a LUT node reads: S, or 1 for a layer-shared codebook. */
static inline uint32_t em_lut_codebook_segments(const em_node *node)
{
    return node->codebook_segment_stride ? node->segments : 1u;
}

/* Nodes that share one lookup table: the first of them to run in a run builds it, the others reuse it. */
typedef struct em_table_group {
    uint32_t first_node, last_node;
    size_t bytes;
    size_t offset; /* in the context arena */
} em_table_group;

/* Nodes of different tasks that apply the same weights (same op, tensors, window and activation; e.g.
 * the point-wise convs zippering shares) to different values: em_run_all runs them as one step, members
 * in schedule[first .. first + count). fused: 1×1 convolutions whose inputs and outputs the plan put
 * back to back in the arena, so the step is one matrix product over all members' pixels (the weights
 * read once for every feature map); otherwise the members run one after the other within the step. */
typedef struct em_run_group {
    uint32_t first, count;
    int fused;
} em_run_group;

typedef struct em_task {
    char name[EM_TASK_NAME_BYTES]; /* NUL-terminated copy */
    uint32_t input;                /* graph input index */
    uint32_t output;               /* value id */
    uint32_t classes;
    uint32_t first_plan_node; /* this task's nodes are plan_nodes[first .. first + count) */
    uint32_t plan_node_count;
} em_task;

struct em_model {
    em_allocator allocator;
    const uint8_t *data;
    size_t size;
    uint32_t version;
    uint32_t input_count;
    uint32_t node_count;
    uint32_t value_count; /* input_count + node_count */
    uint32_t tensor_count;
    uint32_t task_count;
    em_shape *value_shapes; /* [value_count] */
    em_node *nodes;         /* [node_count] */
    uint32_t *node_inputs;  /* every node's inputs, node by node (em_node.inputs points here) */
    em_tensor *tensors;     /* [tensor_count] */
    em_task *tasks;         /* [task_count] */
    uint32_t *plan_nodes;   /* per task, the node indices it needs, in schedule order */
    uint32_t *schedule;     /* [node_count]: em_run_all's order, a topological order with each run group's
                               members adjacent (em_plan.c) */
    em_run_group *run_groups; /* [run_group_count], or NULL */
    uint32_t run_group_count;
    char *name_pool;        /* NUL-terminated node names */
    size_t max_scratch_bytes;
    size_t context_bytes;
    uint32_t kernels;            /* EM_KERNELS_* the nodes' kernels were chosen from (never AUTO) */
    uint32_t x86_vnni_sets;      /* em_cpu_x86_vnni_sets(), asked once at load where a node has INT8_ACT */
    uint32_t load_flags;         /* em_load_options.flags */
    unsigned char *packed_arena; /* one allocation holding every node's packed data, or NULL */
    size_t packed_bytes;         /* packed_arena's size + the decoded depthwise weights' (em_model_packed_bytes) */
    /* LUT_DEPTHWISE_CONV2D nodes: their weights decoded at load (one allocation for all of them) and the
     * F32 tensors describing them, which those nodes' `weight` then points to; NULL when there are none */
    float *decoded_weights;
    em_tensor *decoded_tensors;
    em_table_group *table_groups; /* [table_group_count], or NULL */
    uint32_t table_group_count;
    size_t arena_bytes; /* the planned activations + scratch + shared tables of one context */
    /* EM_LOAD_PARALLEL_TASKS: schedule[0 .. prefix_steps) are the nodes several tasks need, the rest lane
     * nodes (node.lane); lane_count = task_count, or 0 when the model was planned serially. */
    uint32_t lane_count;
    uint32_t prefix_steps;
    /* Work estimates (em_node_cost) for choosing, per run with a pool, between the task lanes and splitting
     * nodes: of the prefix's and of all nodes, each as the part in split nodes and the rest, and the number
     * of split nodes; lane_cost[t] is lane t's (lane plans only). */
    uint64_t prefix_cost_split, prefix_cost_serial, cost_split, cost_serial;
    uint32_t prefix_split_nodes, split_nodes;
    uint64_t lane_cost[EM_MAX_TASKS];
};

/* Per-node profiling counters of a context (em_node_profile, kept internally). */
typedef struct em_profile_counters {
    uint64_t runs, total_ns, table_ns, accumulate_ns;
} em_profile_counters;

struct em_context {
    const em_model *model;
    const float **inputs; /* [input_count], bound only for the duration of a run */
    float **node_outputs; /* [node_count], each node's value in the arena (buffers reused by liveness) */
    float **node_scratch; /* [node_count] */
    uint64_t *node_runs;  /* [node_count] */
    em_profile_counters *profile; /* [node_count] */
    unsigned char *table_ready;   /* [table_group_count]: the group's table holds this run's values */
    int profiling;
    unsigned char *arena;
    em_pool *pool; /* em_context_set_pool, or NULL */
};

/* Walks the context layout: with base == NULL only measures (*total = bytes em_context_size reports,
 * including the slack to align any caller pointer); with a 64-byte aligned base also lays the
 * context out there and returns it in *out_ctx. Returns 0 if a size overflows size_t. */
int em_context_layout(const em_model *model, unsigned char *base, size_t *total, em_context **out_ctx);

/* The context plan (em_plan.c), run at the end of em_model_load: last uses, table-sharing groups, and
 * arena offsets of every node's output and scratch and of every group's table, so that buffers whose
 * lifetimes do not overlap share memory. Its temporary memory comes from the model's allocator. */
em_status em_plan_context(em_model *model, em_error *err);

/* Monotonic nanoseconds for profiling (em_platform.c; a board without a clock returns 0). */
uint64_t em_platform_now_ns(void);

/* `allocator` itself, or malloc/free when it is NULL (em_platform.c): the one default of em_model_load and
 * em_pool_create. */
em_allocator em_allocator_or_default(const em_allocator *allocator);
/* Resolves the kernel set AUTO to the best set this CPU supports (em_cpu.c); other sets unchanged. */
uint32_t em_kernels_resolve(uint32_t kernels);
/* Bit (1 << set) for each x86 kernel set whose VNNI int8 tile this CPU and build run (em_cpu_has_x86_vnni
 * of the avx512 and avx2 sets); 0 elsewhere. CPUID: slow where a hypervisor traps it, so asked once per load. */
uint32_t em_cpu_x86_vnni_sets(void);

/* ---------------------------------------------------------------------------------------------
 * Op table (TFLM style, em_ops.c). prepare() validates a node once at load time against the op's
 * rules in FORMAT.md (field usage, tensor dtype/rank/dims, recomputed output shape) and sets
 * node->scratch_bytes for the op's reference kernel. Kernels (em_kernels.h) then run without checks:
 * everything they could check was proved by prepare().
 * --------------------------------------------------------------------------------------------- */
typedef em_status (*em_prepare_fn)(em_model *model, em_node *node, em_error *err);

typedef struct em_op_registration {
    uint32_t op;
    const char *op_name; /* "LUT_CONV2D", as in FORMAT.md */
    em_prepare_fn prepare;
    uint32_t min_inputs, max_inputs; /* input_count the op accepts (checked by the loader before prepare()) */
} em_op_registration;

/* The registration of `op`, or NULL for an op this runtime does not know. */
const em_op_registration *em_op_find(uint32_t op);

/* em_model_load_ex with `force` used for every node of force->op that it supports (other nodes get
 * the set's choice): parity tests and benchmarks run one particular kernel through the whole loader
 * (plan, pack, context plan). force may be NULL. */
em_status em_model_load_forced(const void *data, size_t size, const em_allocator *allocator, uint32_t kernels,
                               const struct em_kernel *force, em_model **out_model, em_error *err);

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------------------------------- */

uint32_t em_crc32(const void *data, size_t size);

/* Bits an index map uses for C codewords: max(1, ceil(log2 C)). */
uint32_t em_index_bits(uint32_t codewords);

/* Element i of a bit-packed IDX stream (FORMAT.md "Bit packing": LSB first). Reads only the bytes
 * that hold the element, so it never touches memory past the tensor's last byte. */
static inline uint32_t em_idx_get(const uint8_t *data, uint32_t bits, uint64_t i)
{
    const uint64_t first_bit = i * bits;
    const uint8_t *p = data + (size_t)(first_bit >> 3);
    const uint32_t shift = (uint32_t)(first_bit & 7u);
    const uint32_t byte_count = (shift + bits + 7u) >> 3; /* 1..3 for bits <= 16 */
    uint32_t word = 0;
    uint32_t b;
    for (b = 0; b < byte_count; ++b) word |= (uint32_t)p[b] << (8u * b);
    return (word >> shift) & ((1u << bits) - 1u);
}

/* Checked arithmetic: return 1 and store the result, or return 0 on overflow. */
static inline int em_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static inline int em_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

/* Rounds x up to a multiple of `alignment` (a power of two). */
static inline int em_align_size(size_t x, size_t alignment, size_t *out)
{
    if (x > SIZE_MAX - (alignment - 1u)) return 0;
    *out = (x + (alignment - 1u)) & ~(alignment - 1u);
    return 1;
}

static inline int em_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static inline int em_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}

static inline const float *em_tensor_f32(const em_tensor *t)
{
    /* The loader proved the offset is 4-byte aligned (64-byte aligned within a 4-byte aligned buffer). */
    return t ? (const float *)(const void *)t->data : NULL;
}

#endif /* EDGEMERGE_EM_INTERNAL_H */
