/* LUT_DENSE (E-FC): table[s, c] = codebook[s, c, :] · x[s·r .. s·r + r) as S small matrix-vector
 * products, then y[o] = Σ_s table[s, index[s, o]] vectorised over outputs (gathers; on AVX-512,
 * in-register permutes for C ≤ 64). The indices are unpacked once at load to uint16 [S][Out], the
 * order the accumulation reads them. The table (S·C floats) is small and shareable between LUT_DENSE
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
    const uint64_t count = (uint64_t)node->segments * node->out.c;
    uint64_t i;
    (void)model;
    for (i = 0; i < count; ++i) idx[i] = (uint16_t)em_idx_get(node->index_map->data, node->index_map->bits, i);
}

void em_lut_dense_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t r = node->seg_len, C = node->codewords, in_count = node->in.numel;
    const float *codebook = em_tensor_f32(node->weight);
    const int shared = env->shared_table != NULL;
    float *table = shared ? env->shared_table : env->scratch;
    const int built = !shared || !*env->table_ready;
    uint64_t t0 = 0, t1 = 0;
    uint32_t s;

    if (env->profile) t0 = em_platform_now_ns();
    if (built) {
        for (s = 0; s < node->segments; ++s) {
            const uint32_t first = s * r;
            const uint32_t len = in_count - first < r ? in_count - first : r;
            micro->gemv_n(C, len, codebook + (size_t)s * C * r, r, input + first, table + (size_t)s * C);
        }
        if (shared) *env->table_ready = 1;
    }
    if (env->profile) t1 = em_platform_now_ns();
    micro->lut_accumulate_gather(table, C, node->segments, (const uint16_t *)node->packed, node->out.c, output);
    em_opt_bias_activate(output, 1, node->out.c, em_tensor_f32(node->bias), node->activation);
    if (env->profile) {
        if (built) env->profile->table_ns += t1 - t0;
        env->profile->accumulate_ns += em_platform_now_ns() - t1;
    }
}
