/* The kernel registry: every kernel this build has, described by typed fields (em_kernels.h), and what
 * each kernel set offers (em_arch_config). Adding a kernel is one row here plus its code; choosing
 * between kernels is em_select.c's job. */
#include <string.h>

#include "em_kernels.h"
#include "opt/em_lut_int8_kernels.h"
#include "opt/em_opt_kernels.h"
#include "ref/em_ref_kernels.h"

#define EM_COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* The reference kernels: eval only (their scratch was set by the op's prepare()). */
#define EM_REFERENCE_KERNEL(op_, name_, eval_)                                                                 \
    {.op = (op_), .algorithm = EM_ALGO_REFERENCE, .isa = EM_ISA_REFERENCE, .name = (name_), .eval = (eval_)}

/* The reference kernels of multi-input ops: eval_n, every input's value. */
#define EM_REFERENCE_KERNEL_N(op_, name_, eval_n_)                                                             \
    {.op = (op_), .algorithm = EM_ALGO_REFERENCE, .isa = EM_ISA_REFERENCE, .name = (name_), .eval_n = (eval_n_)}

/* A fast kernel on the micro-kernel table `micro_` (EM_ISA_MICRO) or the BLAS (EM_ISA_BLAS). */
#define EM_FAST_KERNEL(op_, algorithm_, isa_, name_, supports_, plan_, pack_, run_, micro_)                     \
    {.op = (op_), .algorithm = (algorithm_), .isa = (isa_), .name = (name_), .supports = (supports_),            \
     .plan = (plan_), .pack = (pack_), .run = (run_), .micro = (micro_)}
/* The same with a split over threads (em_kernels.h split / run_part). */
#define EM_SPLIT_KERNEL(op_, algorithm_, isa_, name_, supports_, plan_, pack_, run_, micro_, split_, run_part_)  \
    {.op = (op_), .algorithm = (algorithm_), .isa = (isa_), .name = (name_), .supports = (supports_),            \
     .plan = (plan_), .pack = (pack_), .run = (run_), .micro = (micro_), .split = (split_), .run_part = (run_part_)}

/* The kernels on one set's micro-kernel table (matrix products, depthwise rows). Names:
 * <op>_<dtype>_<algorithm>_<set>. The direct convolution also runs fused run groups of 1×1 nodes. */
#define EM_MATRIX_KERNELS(set_, micro_)                                                                          \
    EM_SPLIT_KERNEL(EM_OP_LUT_CONV2D, EM_ALGO_LUT_TABLES, EM_ISA_MICRO, "lut_conv2d_f32_" set_,                  \
                    em_lut_conv2d_planar_supports, em_lut_conv2d_planar_plan, em_lut_conv2d_planar_pack,       \
                    em_lut_conv2d_planar_run, &(micro_), em_lut_conv2d_planar_split,                           \
                    em_lut_conv2d_planar_run_part),                                                            \
    {.op = EM_OP_LUT_CONV2D, .algorithm = EM_ALGO_LUT_DECODED, .isa = EM_ISA_MICRO,                            \
     .name = "lut_conv2d_f32_decoded_" set_, .supports = em_lut_f32_supports, .plan = em_lut_conv2d_decoded_plan,  \
     .pack = em_lut_conv2d_decoded_pack, .run = em_lut_conv2d_decoded_run, .micro = &(micro_),                  \
     .residual_add = 1, .split = em_conv2d_direct_split, .run_part = em_lut_conv2d_decoded_run_part},            \
    EM_SPLIT_KERNEL(EM_OP_LUT_DENSE, EM_ALGO_LUT_TABLES, EM_ISA_MICRO, "lut_dense_f32_" set_, em_lut_f32_supports, \
                    em_lut_dense_plan, em_lut_dense_pack, em_lut_dense_run, &(micro_), em_lut_dense_split,      \
                    em_lut_dense_run_part),                                                                    \
    EM_FAST_KERNEL(EM_OP_LUT_DENSE, EM_ALGO_LUT_DECODED, EM_ISA_MICRO, "lut_dense_f32_decoded_" set_,              \
                   em_lut_f32_supports, em_lut_dense_decoded_plan, em_lut_dense_decoded_pack,                   \
                   em_lut_dense_decoded_run, &(micro_)),                                                        \
    EM_FAST_KERNEL(EM_OP_LUT_CONV2D, EM_ALGO_LUT_INT8, EM_ISA_MICRO, "lut_conv2d_i8_" set_, em_lut_int8_supports, \
                   em_lut_int8_plan, em_lut_int8_pack, em_lut_int8_run, &(micro_)),                             \
    EM_FAST_KERNEL(EM_OP_LUT_DENSE, EM_ALGO_LUT_INT8, EM_ISA_MICRO, "lut_dense_i8_" set_, em_lut_int8_supports,   \
                   em_lut_int8_plan, em_lut_int8_pack, em_lut_int8_run, &(micro_)),                             \
    EM_FAST_KERNEL(EM_OP_LUT_CONV2D, EM_ALGO_LUT_INT8_ACT, EM_ISA_MICRO, "lut_conv2d_i8a_" set_,                 \
                   em_lut_int8_act_supports, em_lut_int8_act_plan, em_lut_int8_act_pack, em_lut_int8_act_run,     \
                   &(micro_)),                                                                                  \
    EM_FAST_KERNEL(EM_OP_LUT_DENSE, EM_ALGO_LUT_INT8_ACT, EM_ISA_MICRO, "lut_dense_i8a_" set_,                   \
                   em_lut_int8_act_supports, em_lut_int8_act_plan, em_lut_int8_act_pack, em_lut_int8_act_run,     \
                   &(micro_)),                                                                                  \
    EM_FAST_KERNEL(EM_OP_LUT_CONV2D, EM_ALGO_LUT_INT8_ACT_TABLES, EM_ISA_MICRO, "lut_conv2d_i8a_tables_" set_,   \
                   em_lut_int8_act_tables_supports, em_lut_int8_act_tables_plan, em_lut_int8_act_tables_pack,  \
                   em_lut_int8_act_tables_run, &(micro_)),                                                     \
    EM_FAST_KERNEL(EM_OP_LUT_DENSE, EM_ALGO_LUT_INT8_ACT_TABLES, EM_ISA_MICRO, "lut_dense_i8a_tables_" set_,     \
                   em_lut_int8_act_tables_supports, em_lut_int8_act_tables_plan, em_lut_int8_act_tables_pack,  \
                   em_lut_int8_act_tables_run, &(micro_)),                                                     \
    {.op = EM_OP_CONV2D, .algorithm = EM_ALGO_DIRECT, .isa = EM_ISA_MICRO, .name = "conv2d_f32_direct_" set_,    \
     .plan = em_conv2d_direct_plan, .run = em_conv2d_direct_run, .micro = &(micro_),                            \
     .fusable = em_conv2d_1x1_supports, .fused_run = em_conv2d_direct_fused_run, .residual_add = 1,            \
     .split = em_conv2d_direct_split, .run_part = em_conv2d_direct_run_part},                                   \
    EM_SPLIT_KERNEL(EM_OP_DENSE, EM_ALGO_GEMV, EM_ISA_MICRO, "dense_f32_gemv_" set_, NULL, em_opt_plan_no_scratch, \
                    NULL, em_dense_gemv_run, &(micro_), em_dense_gemv_split, em_dense_gemv_run_part),            \
    EM_SPLIT_KERNEL(EM_OP_DEPTHWISE_CONV2D, EM_ALGO_ROWS, EM_ISA_MICRO, "depthwise_conv2d_f32_rows_" set_,       \
                    em_depthwise_conv2d_rows_supports, em_opt_plan_no_scratch, NULL, em_depthwise_conv2d_rows_run, \
                    &(micro_), em_opt_split_rows, em_depthwise_conv2d_rows_run_part)

/* Ops without a matrix product: one portable kernel serves every fast set. */
#define EM_PORTABLE_KERNEL(op_, algorithm_, name_, run_)                                                        \
    EM_FAST_KERNEL(op_, algorithm_, EM_ISA_PORTABLE, name_, NULL, em_opt_plan_no_scratch, NULL, run_, NULL)

/* ... of multi-input ops (eval_n, every input's value; elementwise, never split) */
#define EM_PORTABLE_KERNEL_N(op_, name_, eval_n_)                                                               \
    {.op = (op_), .algorithm = EM_ALGO_DIRECT, .isa = EM_ISA_PORTABLE, .name = (name_),                         \
     .plan = em_opt_plan_no_scratch, .eval_n = (eval_n_)}

/* ... whose runs split into output rows over threads */
#define EM_PORTABLE_ROW_KERNEL(op_, name_, run_, run_part_)                                                     \
    EM_SPLIT_KERNEL(op_, EM_ALGO_DIRECT, EM_ISA_PORTABLE, name_, NULL, em_opt_plan_no_scratch, NULL, run_, NULL,  \
                    em_opt_split_rows, run_part_)

static const em_kernel em_registry[] = {
    EM_REFERENCE_KERNEL(EM_OP_CONV2D, "conv2d_ref", em_conv2d_ref),
    EM_REFERENCE_KERNEL(EM_OP_DEPTHWISE_CONV2D, "depthwise_conv2d_ref", em_depthwise_conv2d_ref),
    EM_REFERENCE_KERNEL(EM_OP_DENSE, "dense_ref", em_dense_ref),
    EM_REFERENCE_KERNEL(EM_OP_MAX_POOL, "max_pool_ref", em_max_pool_ref),
    EM_REFERENCE_KERNEL(EM_OP_AVG_POOL, "avg_pool_ref", em_avg_pool_ref),
    EM_REFERENCE_KERNEL(EM_OP_GLOBAL_AVG_POOL, "global_avg_pool_ref", em_global_avg_pool_ref),
    EM_REFERENCE_KERNEL(EM_OP_RESHAPE, "reshape_ref", em_reshape_ref),
    EM_REFERENCE_KERNEL(EM_OP_LUT_CONV2D, "lut_conv2d_ref", em_lut_conv2d_ref),
    EM_REFERENCE_KERNEL(EM_OP_LUT_DENSE, "lut_dense_ref", em_lut_dense_ref),
    EM_REFERENCE_KERNEL(EM_OP_ACTIVATION, "activation_ref", em_activation_ref),
    EM_REFERENCE_KERNEL(EM_OP_PAD, "pad_ref", em_pad_ref),
    EM_REFERENCE_KERNEL_N(EM_OP_ADD, "add_ref", em_add_ref),
    EM_REFERENCE_KERNEL_N(EM_OP_CONCAT, "concat_ref", em_concat_ref),
    EM_REFERENCE_KERNEL_N(EM_OP_MUL, "mul_ref", em_mul_ref),

    EM_MATRIX_KERNELS("generic", em_micro_generic),
#if defined(EM_HAVE_X86_SIMD)
    EM_MATRIX_KERNELS("sse2", em_micro_sse2),
    EM_MATRIX_KERNELS("avx2", em_micro_avx2),
    EM_MATRIX_KERNELS("avx512", em_micro_avx512),
#endif
#if defined(EM_HAVE_NEON)
    EM_MATRIX_KERNELS("neon", em_micro_neon),
#endif
#if defined(EM_HAVE_OPENBLAS)
    {.op = EM_OP_CONV2D, .algorithm = EM_ALGO_1X1, .isa = EM_ISA_BLAS, .name = "conv2d_f32_1x1_blas",
     .supports = em_conv2d_1x1_supports, .plan = em_opt_plan_no_scratch, .run = em_conv2d_1x1_run,
     .micro = &em_micro_blas, .fused_run = em_conv2d_1x1_fused_run},
    EM_FAST_KERNEL(EM_OP_CONV2D, EM_ALGO_IM2COL, EM_ISA_BLAS, "conv2d_f32_im2col_blas", NULL, em_conv2d_im2col_plan,
                   NULL, em_conv2d_im2col_run, &em_micro_blas),
    EM_FAST_KERNEL(EM_OP_DENSE, EM_ALGO_GEMV, EM_ISA_BLAS, "dense_f32_gemv_blas", NULL, em_opt_plan_no_scratch, NULL,
                   em_dense_gemv_run, &em_micro_blas),
#endif
    EM_PORTABLE_ROW_KERNEL(EM_OP_DEPTHWISE_CONV2D, "depthwise_conv2d_f32_direct", em_depthwise_conv2d_direct_run,
                           em_depthwise_conv2d_direct_run_part),
    EM_PORTABLE_ROW_KERNEL(EM_OP_MAX_POOL, "max_pool_f32", em_max_pool_run, em_pool_run_part),
    EM_PORTABLE_ROW_KERNEL(EM_OP_AVG_POOL, "avg_pool_f32", em_avg_pool_run, em_pool_run_part),
    EM_PORTABLE_KERNEL(EM_OP_GLOBAL_AVG_POOL, EM_ALGO_DIRECT, "global_avg_pool_f32", em_global_avg_pool_run),
    EM_PORTABLE_KERNEL(EM_OP_RESHAPE, EM_ALGO_COPY, "reshape_f32_copy", em_copy_activate_run),
    EM_PORTABLE_KERNEL(EM_OP_ACTIVATION, EM_ALGO_COPY, "activation_f32", em_copy_activate_run),
    EM_PORTABLE_KERNEL_N(EM_OP_ADD, "add_f32", em_add_f32_run),
    EM_PORTABLE_KERNEL_N(EM_OP_MUL, "mul_f32", em_mul_f32_run),
    EM_PORTABLE_KERNEL_N(EM_OP_CONCAT, "concat_f32", em_concat_f32_run),
};

/* ---- kernel sets ---------------------------------------------------------------------------------- */

#define EM_FAST_ALGORITHMS                                                                                     \
    (EM_ALGO_BIT(EM_ALGO_LUT_TABLES) | EM_ALGO_BIT(EM_ALGO_LUT_DECODED) | EM_ALGO_BIT(EM_ALGO_LUT_INT8) |        \
     EM_ALGO_BIT(EM_ALGO_LUT_INT8_ACT) | EM_ALGO_BIT(EM_ALGO_LUT_INT8_ACT_TABLES) |                           \
     EM_ALGO_BIT(EM_ALGO_DIRECT) | EM_ALGO_BIT(EM_ALGO_GEMV) | EM_ALGO_BIT(EM_ALGO_ROWS) |                       \
     EM_ALGO_BIT(EM_ALGO_COPY) | EM_BLAS_ALGORITHMS)
#if defined(EM_HAVE_OPENBLAS)
#define EM_BLAS_ALGORITHMS (EM_ALGO_BIT(EM_ALGO_1X1) | EM_ALGO_BIT(EM_ALGO_IM2COL))
#define EM_HAS_BLAS 1
#else
#define EM_BLAS_ALGORITHMS 0u
#define EM_HAS_BLAS 0
#endif

static const em_arch_config em_arch_configs[] = {
    {EM_KERNELS_REFERENCE, NULL, EM_ALGO_BIT(EM_ALGO_REFERENCE), 0},
    {EM_KERNELS_GENERIC, &em_micro_generic, EM_FAST_ALGORITHMS, EM_HAS_BLAS},
#if defined(EM_HAVE_X86_SIMD)
    {EM_KERNELS_SSE2, &em_micro_sse2, EM_FAST_ALGORITHMS, EM_HAS_BLAS},
    {EM_KERNELS_AVX2, &em_micro_avx2, EM_FAST_ALGORITHMS, EM_HAS_BLAS},
    {EM_KERNELS_AVX512, &em_micro_avx512, EM_FAST_ALGORITHMS, EM_HAS_BLAS},
#endif
#if defined(EM_HAVE_NEON)
    {EM_KERNELS_NEON, &em_micro_neon, EM_FAST_ALGORITHMS, EM_HAS_BLAS},
#endif
};

const em_arch_config *em_arch_config_for(uint32_t kernels)
{
    size_t i;
    kernels = em_kernels_resolve(kernels);
    for (i = 0; i < EM_COUNT(em_arch_configs); ++i)
        if (em_arch_configs[i].kernels == kernels) return &em_arch_configs[i];
    return NULL;
}

/* Whether kernel k belongs to the set `config`. */
static int kernel_in_set(const em_kernel *k, const em_arch_config *config)
{
    switch (k->isa) {
    case EM_ISA_REFERENCE: return config->micro == NULL;
    case EM_ISA_PORTABLE: return config->micro != NULL;
    case EM_ISA_MICRO: return config->micro != NULL && k->micro == config->micro;
    case EM_ISA_BLAS: return config->micro != NULL && config->blas;
    default: return 0;
    }
}

const em_kernel *em_kernel_lookup(const em_arch_config *config, uint32_t op, em_algorithm algorithm, em_isa isa,
                                  const em_node *node)
{
    size_t i;
    if (config == NULL || !(config->algorithms & EM_ALGO_BIT(algorithm))) return NULL;
    for (i = 0; i < EM_COUNT(em_registry); ++i) {
        const em_kernel *k = &em_registry[i];
        if (k->op != op || k->algorithm != algorithm || k->isa != isa || !kernel_in_set(k, config)) continue;
        return k->supports == NULL || k->supports(node) ? k : NULL;
    }
    return NULL;
}

size_t em_kernel_list(uint32_t op, uint32_t kernels, const em_kernel **out, size_t max)
{
    const em_arch_config *config = em_arch_config_for(kernels);
    size_t i, n = 0;
    if (config == NULL) return 0;
    for (i = 0; i < EM_COUNT(em_registry); ++i) {
        const em_kernel *k = &em_registry[i];
        if (k->op != op || !kernel_in_set(k, config)) continue;
        if (n < max) out[n] = k;
        ++n;
    }
    return n;
}

const em_kernel *em_kernel_find(const char *name)
{
    size_t i;
    if (name == NULL) return NULL;
    for (i = 0; i < EM_COUNT(em_registry); ++i)
        if (strcmp(em_registry[i].name, name) == 0) return &em_registry[i];
    return NULL;
}

static void add_fused_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)node; /* the conv node->fused_into wrote this node's output (its epilogue added the residual) */
    (void)input;
    (void)output;
    (void)env;
}

/* Not in the registry (never chosen for a node by em_kernel_choose): em_plan.c puts it on an ADD it fused. */
const em_kernel em_add_fused_kernel = {.op = EM_OP_ADD, .algorithm = EM_ALGO_FUSED, .isa = EM_ISA_PORTABLE,
                                       .name = "add_f32_fused_into_conv", .run = add_fused_run};

int em_kernel_fusable(const em_node *node)
{
    const em_kernel *k = node->kernel;
    return k->fused_run != NULL && (k->fusable == NULL || k->fusable(node));
}
