/* Kernels, their registry and their selection.
 *
 * A kernel computes one op. It is described by typed fields, never by its name: the op, the algorithm
 * (em_algorithm), where it runs (em_isa: the reference set, portable C, one set's micro-kernel table,
 * a linked BLAS) and, for fast kernels, that micro-kernel table. The name is for people only (reports:
 * em_run --info, edgemerge inspect, em_model_node_info), spelled <op>_<dtype>_<algorithm>_<set>.
 *
 * The reference kernels (src/ref/) have only `eval`. Fast kernels (src/opt/ algorithms over the per-ISA
 * micro-kernels of src/x86/, src/arm/) add:
 *   plan(): after the op's prepare() validated the node, sets node->scratch_bytes, packed_bytes,
 *           table_bytes and table_shareable for this kernel (may fail with LIMIT);
 *   pack(): fills node->packed (packed_bytes, 64-byte aligned, model-owned) once at load;
 *   run():  computes, with the run environment (scratch, shared table, profiling);
 *   fused_run(): optional, one matrix product over the pixels of a fused run group (em_plan.c), whose
 *           members' inputs and outputs lie back to back; fusable() says for which nodes.
 *
 *   em_kernels.c   the registry: every kernel of this build, and a per-set config (em_arch_config)
 *   em_select.c    the choice of one kernel per node at load (algorithm by op, shape and a cost model)
 * The loader (em_loader.c), the planner (em_plan.c) and the executor (em_runtime.c) only call through
 * node->kernel and these functions; none of them names a kernel. */
#ifndef EDGEMERGE_EM_KERNELS_H
#define EDGEMERGE_EM_KERNELS_H

#include "em_internal.h"

struct em_micro;

/* How a kernel computes its op. One op may have several (LUT_CONV2D: tables, decoded, int8). */
typedef enum em_algorithm {
    EM_ALGO_REFERENCE = 0, /* the spec in code (src/ref/) */
    EM_ALGO_LUT_TABLES,    /* float lookup tables, then gathered sums (lut_conv2d_f32, lut_dense_f32) */
    EM_ALGO_LUT_DECODED,   /* LUT_CONV2D as a direct convolution, codebook decoded at load */
    EM_ALGO_LUT_INT8,      /* int8 tables, byte-shuffle lookups (flag INT8_TABLES) */
    EM_ALGO_DIRECT,        /* convolution as an implicit GEMM, or a plain loop for ops without a product */
    EM_ALGO_1X1,           /* 1×1 convolution, the input used in place as a matrix */
    EM_ALGO_IM2COL,        /* convolution through im2col bands and a GEMM */
    EM_ALGO_GEMV,          /* DENSE as one matrix-vector product */
    EM_ALGO_ROWS,          /* depthwise convolution, multiplier 1, one output row per micro-kernel call */
    EM_ALGO_COPY,          /* RESHAPE / ACTIVATION: copy with the activation */
    EM_ALGO_FUSED,         /* nothing left to do: the op was fused into the node that feeds it */
    EM_ALGO_LUT_INT8_ACT,  /* int8 input and codebook, int32 sums: an int8 GEMM (flag INT8_ACT) */
    EM_ALGO_LUT_INT8_ACT_TABLES, /* the same as int32 tables (sdot build) and sums by index (flag INT8_ACT) */
    EM_ALGO_COUNT
} em_algorithm;

#define EM_ALGO_BIT(algorithm) (1u << (uint32_t)(algorithm))

/* Where a kernel runs, which decides which kernel sets (EM_KERNELS_*) it belongs to. */
typedef enum em_isa {
    EM_ISA_REFERENCE = 0, /* the reference set only */
    EM_ISA_PORTABLE,      /* portable C without micro-kernels: part of every fast set */
    EM_ISA_MICRO,         /* one set's micro-kernel table (em_kernel.micro) */
    EM_ISA_BLAS           /* the linked BLAS: part of every fast set */
} em_isa;

typedef struct em_kernel_env {
    float *scratch;             /* node->scratch_bytes (less table_bytes when the table is shared) */
    float *shared_table;        /* the node's table group buffer, or NULL: the table is in scratch */
    unsigned char *table_ready; /* with shared_table: 1 when it already holds this run's table */
    em_profile_counters *profile; /* NULL unless profiling: kernels add table_ns / accumulate_ns */
    /* A residual ADD fused into this node (node->residual != EM_NONE): the value to add to the output, same
     * shape, after bias and before node->residual_activation; NULL otherwise. */
    const float *residual;
} em_kernel_env;

typedef int (*em_kernel_supports_fn)(const em_node *node);
typedef em_status (*em_kernel_plan_fn)(const em_model *model, em_node *node, em_error *err);
typedef void (*em_kernel_pack_fn)(const em_model *model, em_node *node);
typedef void (*em_kernel_run_fn)(const em_node *node, const float *input, float *output, const em_kernel_env *env);
/* The reference kernels' signature: scratch is node->scratch_bytes as the op's prepare() set it. */
typedef void (*em_eval_fn)(const em_node *node, const float *input, float *output, float *scratch);
/* The reference kernels of multi-input ops (FORMAT.md v2): inputs[k] holds the value of node->inputs[k]. */
typedef void (*em_eval_n_fn)(const em_node *node, const float *const *inputs, float *output, float *scratch);
/* One product over `pixels` rows of node->in.c floats at input to rows of node->out.c at output. */
typedef void (*em_kernel_fused_run_fn)(const em_node *node, const float *input, float *output, size_t pixels);

/* Splitting one run of a node over a pool's workers (em_runtime.c run_split; nodes whose cost reaches
 * EM_SPLIT_MIN_COST, em_select.c). A kernel with split() describes its run as steps 0, 1, ...:
 * split(node, env, step, &units) returns 0 past the last step, else the step's kind (EM_STEP_*, for the
 * profile) with *units set to the step's pieces (0: nothing to do this run, e.g. a shared table already
 * built). The pieces of a step write bytes no other piece of it writes and compute each output element with
 * the same operations in the same order as run() does (whole output rows, output channels, or blocks of
 * EM_SPLIT_COLUMNS columns, which the micro-kernels' vector blocking divides), so any grouping of pieces over
 * any threads gives run()'s bits. run_part(..., step, begin, end) computes pieces [begin, end) of a step;
 * steps run in order, each finished before the next. split() runs on the calling thread between steps, so it
 * may do a step's serial bookkeeping (mark a shared table built). */
#define EM_STEP_TABLE 1u  /* building a lookup table (profile: table_ns) */
#define EM_STEP_OUTPUT 2u /* computing output values (profile: accumulate_ns) */
/* Column blocks of split matrix-vector products: a multiple of 4 vectors on every ISA (AVX-512's 16 lanes
 * included), the widest block gemv_t and lut_accumulate_gather run before their tail code. */
#define EM_SPLIT_COLUMNS 64u
typedef uint32_t (*em_kernel_split_fn)(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units);
typedef void (*em_kernel_run_part_fn)(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                      uint32_t step, uint32_t begin, uint32_t end);

typedef struct em_kernel {
    uint32_t op;
    em_algorithm algorithm;
    em_isa isa;
    const char *name; /* <op>_<dtype>_<algorithm>_<set>, e.g. "lut_conv2d_f32_avx2"; "<op>_ref" for the spec */
    em_kernel_supports_fn supports; /* NULL: every valid node of the op; else whether it can run this one */
    em_kernel_plan_fn plan; /* NULL: the op's prepare() already set the scratch */
    em_kernel_pack_fn pack; /* NULL: no packed data */
    em_kernel_run_fn run;   /* NULL: call eval (reference kernels) */
    em_eval_fn eval;
    em_eval_n_fn eval_n; /* multi-input ops (ADD, CONCAT, MUL): instead of eval */
    const struct em_micro *micro; /* the micro-kernels a fast kernel runs on (EM_ISA_MICRO, EM_ISA_BLAS) */
    em_kernel_supports_fn fusable;    /* with fused_run: the nodes it can fuse (NULL: every node it runs) */
    em_kernel_fused_run_fn fused_run; /* NULL: the kernel cannot run a fused group */
    int residual_add; /* run() can add env->residual in its epilogue (fused residual ADD, em_plan.c) */
    em_kernel_split_fn split;       /* NULL: the kernel runs a node on one thread */
    em_kernel_run_part_fn run_part; /* with split */
} em_kernel;

/* ---- the registry (em_kernels.c) ---- */

/* What one kernel set of this build offers (XNNPACK's gemm-config): its micro-kernel table and the
 * algorithms it has. */
typedef struct em_arch_config {
    uint32_t kernels;             /* EM_KERNELS_* (never AUTO) */
    const struct em_micro *micro; /* the set's micro-kernel table; NULL for the reference set */
    uint32_t algorithms;          /* EM_ALGO_BIT() of every algorithm the set can choose */
    int blas;                     /* a linked BLAS takes the large matrix products (em_select.c) */
} em_arch_config;

/* The config of kernel set `kernels` (AUTO resolved), or NULL where this build has no such set. */
const em_arch_config *em_arch_config_for(uint32_t kernels);
/* The kernel of `op` with this algorithm and isa in the set `config` (for EM_ISA_MICRO: on the set's
 * micro-kernels), if it supports `node`; else NULL. */
const em_kernel *em_kernel_lookup(const em_arch_config *config, uint32_t op, em_algorithm algorithm, em_isa isa,
                                  const em_node *node);
/* Every kernel this build has for `op` under the set `kernels` (for parity tests and benchmarks),
 * whether or not it supports a given node: writes up to `max` pointers, returns how many there are. */
size_t em_kernel_list(uint32_t op, uint32_t kernels, const em_kernel **out, size_t max);
/* A kernel by name, or NULL: tests and benchmarks force one by the name they print. */
const em_kernel *em_kernel_find(const char *name);
/* Whether the node's kernel can run it as a member of a fused run group (em_plan.c). */
int em_kernel_fusable(const em_node *node);
/* The kernel of an ADD node whose sum its producing conv computes in its epilogue (runs nothing). */
extern const em_kernel em_add_fused_kernel;

/* ---- the choice (em_select.c) ---- */

/* The single place that chooses a node's kernel from the set `kernels` (never AUTO), by op, shape and
 * what the set offers. Called after prepare() succeeded; never NULL (the reference kernel is the
 * fallback). */
const em_kernel *em_kernel_choose(const em_model *model, const em_node *node, uint32_t kernels);

/* Estimated work of one run of the node with its chosen kernel, in the cost model's units (one multiply-add
 * of the direct convolution, em_select.c). Nodes below EM_SPLIT_MIN_COST (about 12 µs of one x86-64 core's
 * work, measured: em_select.c) run on one thread: splitting them would cost more in handoffs than it saves. */
uint64_t em_node_cost(const em_node *node);
#ifndef EM_SPLIT_MIN_COST
#define EM_SPLIT_MIN_COST 1048576u
#endif

#endif /* EDGEMERGE_EM_KERNELS_H */
