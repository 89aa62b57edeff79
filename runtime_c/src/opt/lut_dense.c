/* LUT_DENSE (E-FC): table[s, c] = codebook[s, c, :] · x[s·r .. s·r + r) as S small matrix-vector
 * products, then y[o] = Σ_s table[s, index[s, o]] vectorised over outputs (gathers; on AVX-512,
 * in-register permutes for C ≤ 64). The indices are unpacked once at load to uint16, in blocks of
 * EM_SPLIT_COLUMNS outputs ([block][S][block width]), the order the accumulation reads them: each block is
 * one accumulation call, so a run split over threads (em_kernels.h) hands out whole blocks. The blocks are
 * multiples of the micro-kernel's widest output block, so each output is summed exactly as in one call over
 * all outputs. The table (S·C floats) is small and shareable between LUT_DENSE
 * nodes reading the same value with the same codebook and r. */
#include "em_opt_kernels.h"

em_status em_lut_dense_plan(const em_model *model, em_node *node, em_error *err)
{
    size_t floats, idx_bytes;
    (void)model;
    if (!em_mul_size(node->segments, node->codewords, &floats) ||
        !em_mul_size((size_t)node->segments * 2u, node->out.c, &idx_bytes))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "lookup table does not fit in size_t");
    node->table_bytes = em_opt_align_floats(floats) * sizeof(float);
    node->scratch_bytes = node->table_bytes;
    node->table_shareable = 1;
    node->packed_bytes = idx_bytes;
    return EM_STATUS_OK;
}

void em_lut_dense_pack(const em_model *model, em_node *node)
{
    uint16_t *idx = (uint16_t *)node->packed;
    const uint32_t out = node->out.c, S = node->segments;
    uint32_t o0, s, o;
    (void)model;
    for (o0 = 0; o0 < out; o0 += EM_SPLIT_COLUMNS) { /* block o0: [S][width], at o0 · S */
        const uint32_t width = out - o0 < EM_SPLIT_COLUMNS ? out - o0 : EM_SPLIT_COLUMNS;
        for (s = 0; s < S; ++s)
            for (o = 0; o < width; ++o)
                *idx++ = (uint16_t)em_idx_get(node->index_map->data, node->index_map->bits, (uint64_t)s * out + o0 + o);
    }
}

/* Table rows of segments [begin, end): table[s, c] = codebook[s, c, :] · x[s·r .. s·r + r). */
static void build_table_rows(const em_node *node, const float *input, float *table, uint32_t begin, uint32_t end)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t r = node->seg_len, C = node->codewords, in_count = node->in.numel;
    const float *codebook = em_tensor_f32(node->weight);
    uint32_t s;
    for (s = begin; s < end; ++s) {
        const uint32_t first = s * r;
        const uint32_t len = in_count - first < r ? in_count - first : r;
        micro->gemv_n(C, len, codebook + s * node->codebook_segment_stride, r, input + first, table + (size_t)s * C);
    }
}

/* Outputs of blocks [begin, end) of EM_SPLIT_COLUMNS, bias and activation included. */
static void accumulate_blocks(const em_node *node, const float *table, float *output, uint32_t begin, uint32_t end)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t out = node->out.c, S = node->segments;
    const float *bias = em_tensor_f32(node->bias);
    uint32_t b;
    for (b = begin; b < end; ++b) {
        const uint32_t o0 = b * EM_SPLIT_COLUMNS;
        const uint32_t width = out - o0 < EM_SPLIT_COLUMNS ? out - o0 : EM_SPLIT_COLUMNS;
        micro->lut_accumulate_gather(table, node->codewords, S, (const uint16_t *)node->packed + (size_t)o0 * S, width,
                                     output + o0);
        em_opt_bias_activate(output + o0, 1, width, bias != NULL ? bias + o0 : NULL, node->activation);
    }
}

static uint32_t output_blocks(const em_node *node)
{
    return (node->out.c + EM_SPLIT_COLUMNS - 1u) / EM_SPLIT_COLUMNS;
}

void em_lut_dense_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const int shared = env->shared_table != NULL;
    float *table = shared ? env->shared_table : env->scratch;
    const int built = !shared || !*env->table_ready;
    uint64_t t0 = 0, t1 = 0;

    if (env->profile) t0 = em_platform_now_ns();
    if (built) {
        build_table_rows(node, input, table, 0, node->segments);
        if (shared) *env->table_ready = 1;
    }
    if (env->profile) t1 = em_platform_now_ns();
    accumulate_blocks(node, table, output, 0, output_blocks(node));
    if (env->profile) {
        if (built) env->profile->table_ns += t1 - t0;
        env->profile->accumulate_ns += em_platform_now_ns() - t1;
    }
}

/* Split (em_kernels.h): step 0 the table's segments (none when a shared table is already built), step 1 the
 * output blocks. */
uint32_t em_lut_dense_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units)
{
    const int shared = env->shared_table != NULL;
    if (step == 0) {
        *units = !shared || !*env->table_ready ? node->segments : 0u;
        return EM_STEP_TABLE;
    }
    if (step == 1) {
        if (shared) *env->table_ready = 1; /* step 0 finished: the table holds this run's values */
        *units = output_blocks(node);
        return EM_STEP_OUTPUT;
    }
    return 0;
}

void em_lut_dense_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                           uint32_t step, uint32_t begin, uint32_t end)
{
    float *table = env->shared_table != NULL ? env->shared_table : env->scratch;
    if (step == 0) build_table_rows(node, input, table, begin, end);
    else accumulate_blocks(node, table, output, begin, end);
}

/* ---- LUT_DENSE with weights decoded at load --------------------------------------------------------
 * A head whose outputs are fewer than its codewords (MobileNetV2's 1280 -> 10 classifier at `light`, C = 64)
 * spends more on its table (in·C multiply-adds) than a plain matrix-vector product on the decoded weights
 * (in·out): 21 µs against about 2 µs on the AVX-512 host. Here the codebook is expanded once at load into
 * W[i, o] = codebook[s, index[s, o], i − s·r] (s = i / r; FORMAT.md), the dense layer's weight layout, and
 * the node runs the micro-kernel's gemv like DENSE. em_kernel_choose (em_select.c) bounds the decoded size
 * (EM_LUT_DECODE_MAX_BYTES) and compares the costs. */
em_status em_lut_dense_decoded_plan(const em_model *model, em_node *node, em_error *err)
{
    size_t floats, packed;
    (void)model;
    if (!em_mul_size(node->in.numel, node->out.c, &floats) || !em_mul_size(floats, sizeof(float), &packed))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "decoded weights do not fit in size_t");
    node->scratch_bytes = 0;
    node->table_bytes = 0;
    node->table_shareable = 0;
    node->packed_bytes = packed;
    return EM_STATUS_OK;
}

void em_lut_dense_decoded_pack(const em_model *model, em_node *node)
{
    float *w = (float *)node->packed;
    const float *codebook = em_tensor_f32(node->weight);
    const uint32_t in = node->in.numel, out = node->out.c, r = node->seg_len;
    uint32_t i, o;
    (void)model;
    for (i = 0; i < in; ++i) {
        const uint32_t s = i / r, j = i % r;
        for (o = 0; o < out; ++o) {
            const uint32_t c = em_idx_get(node->index_map->data, node->index_map->bits, (uint64_t)s * out + o);
            w[(size_t)i * out + o] = codebook[s * node->codebook_segment_stride + (size_t)c * r + j];
        }
    }
}

void em_lut_dense_decoded_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    node->kernel->micro->gemv_t(node->in.numel, node->out.c, input, (const float *)node->packed, node->out.c, output);
    em_opt_bias_activate(output, 1, node->out.c, em_tensor_f32(node->bias), node->activation);
}
