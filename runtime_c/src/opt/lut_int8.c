/* LUT_CONV2D and LUT_DENSE with int8 tables (flag INT8_TABLES, C = 16): the reference's semantics
 * (ref/lut_int8_ref.c, FORMAT.md "int8 tables") with the lookups done 16 output channels at a time by
 * byte shuffles (em_lut_int8_kernels.h).
 *
 * Steps per run:
 *   1. float table [pixel][s][16] = input segments · codebook, one gemm per segment over all pixels (the
 *      codebook is transposed at load to [s][j][16] so the gemm reads it row-major; LUT_DENSE is the
 *      one-pixel case);
 *   2. m = max |table|, then the int8 table q[padded pixel][s][16] with the padding pixels' rows 0 (so
 *      the accumulation needs no bounds checks: a term that reads padding adds 0, i.e. is left out);
 *   3. per output pixel, the micro-kernel sums q over the terms (tap, segment) for all output channels;
 *      term t reads q at pixel_offset(oy, ox) + offsets[t], a constant per term; the sums times m / 127,
 *      then bias and activation.
 *
 * Only step 1 can differ from the reference: the gemm of a SIMD set (FMA, other summation order) may
 * round an entry differently, which moves its q by one step at most where the product sat on a rounding
 * boundary. Given the same float table, q and the integer sums are identical to the reference's.
 *
 * The whole table is kept (no bands, no table sharing): with C = 16 it is 64 bytes of floats and 16 of
 * int8 per input pixel and segment, and the scale needs the maximum over all of it before any lookup.
 *
 * Packed (model-owned, filled at load): layout | codebook^T [S or 1 (shared)][r][16] f32 | offsets [terms] u32 |
 * idx [terms][groups][16] u8, with idx 0 for the channels past Cout of the last group.
 * Scratch: float table | int8 table (padded) | int32 sums [groups · 16]. */
#include <string.h>

#include "../em_lut_int8.h"
#include "em_lut_int8_kernels.h"
#include "em_opt_kernels.h"

#define LANES 16u /* = EM_INT8_TABLE_CODEWORDS: one table row (pixel, segment) is one 16-byte register */

typedef struct lut_int8_layout {
    uint32_t in_h, in_w, in_c; /* LUT_DENSE: 1, 1, In (the flattened input) */
    uint32_t hp, wp;           /* padded input */
    uint32_t segments, taps, terms, groups;
    size_t ftable_floats; /* in_h · in_w · S · 16 */
    size_t qtable_bytes;  /* hp · wp · S · 16 */
    size_t cbt_offset, offsets_offset, idx_offset, packed_bytes; /* bytes from the layout */
    size_t qtable_offset, acc_offset, scratch_bytes;             /* bytes from the scratch */
} lut_int8_layout;

static size_t align64(size_t x)
{
    return (x + 63u) & ~(size_t)63u;
}

static int compute_layout(const em_node *node, lut_int8_layout *L)
{
    const int dense = node->op == EM_OP_LUT_DENSE;
    uint64_t hp, wp, qbytes, fbytes, terms, groups, idx_bytes;
    memset(L, 0, sizeof *L);
    if (!(node->flags & EM_NODE_FLAG_INT8_TABLES) || node->codewords != LANES) return 0;
    L->in_h = dense ? 1u : node->in.h;
    L->in_w = dense ? 1u : node->in.w;
    L->in_c = dense ? node->in.numel : node->in.c;
    hp = (uint64_t)L->in_h + (dense ? 0u : node->pad_top + node->pad_bottom);
    wp = (uint64_t)L->in_w + (dense ? 0u : node->pad_left + node->pad_right);
    L->segments = node->segments;
    L->taps = dense ? 1u : node->kernel_h * node->kernel_w;
    terms = (uint64_t)L->taps * node->segments;
    groups = (node->out.c + LANES - 1u) / LANES;
    qbytes = hp * wp * node->segments * LANES;
    fbytes = (uint64_t)L->in_h * L->in_w * node->segments * LANES * 4u;
    idx_bytes = terms * groups * LANES;
    /* u32 offsets into the int8 table; exact int32 sums (the loader also refuses terms · 127 > INT32_MAX) */
    if (qbytes >= 0xFFFFFFFFull || terms * EM_LUT_INT8_MAX > 0x7FFFFFFFull || fbytes > (uint64_t)SIZE_MAX / 2u ||
        idx_bytes > (uint64_t)SIZE_MAX / 2u)
        return 0;
    L->hp = (uint32_t)hp;
    L->wp = (uint32_t)wp;
    L->terms = (uint32_t)terms;
    L->groups = (uint32_t)groups;
    L->ftable_floats = (size_t)(fbytes / 4u);
    L->qtable_bytes = (size_t)qbytes;
    L->cbt_offset = align64(sizeof *L);
    L->offsets_offset =
        L->cbt_offset + align64((size_t)em_lut_codebook_segments(node) * node->seg_len * LANES * sizeof(float));
    L->idx_offset = L->offsets_offset + align64((size_t)terms * sizeof(uint32_t));
    L->packed_bytes = L->idx_offset + (size_t)idx_bytes;
    L->qtable_offset = align64((size_t)fbytes);
    L->acc_offset = L->qtable_offset + align64(L->qtable_bytes);
    L->scratch_bytes = L->acc_offset + (size_t)groups * LANES * sizeof(int32_t);
    return 1;
}

int em_lut_int8_supports(const em_node *node)
{
    lut_int8_layout L;
    return compute_layout(node, &L);
}

int em_lut_f32_supports(const em_node *node)
{
    return !(node->flags & (EM_NODE_FLAG_INT8_TABLES | EM_NODE_FLAG_INT8_ACT));
}

em_status em_lut_int8_plan(const em_model *model, em_node *node, em_error *err)
{
    lut_int8_layout L;
    (void)model;
    if (!compute_layout(node, &L)) /* em_kernel_choose checked supports(); defensive */
        return em_fail_node(err, EM_STATUS_LIMIT, node, "too large for kernel %s", node->kernel->name);
    node->packed_bytes = L.packed_bytes;
    node->scratch_bytes = L.scratch_bytes;
    node->table_bytes = 0;
    node->table_shareable = 0;
    return EM_STATUS_OK;
}

void em_lut_int8_pack(const em_model *model, em_node *node)
{
    lut_int8_layout *L = (lut_int8_layout *)node->packed;
    unsigned char *base = (unsigned char *)node->packed;
    float *cbt;
    uint32_t *offsets;
    uint8_t *idx;
    const float *codebook = em_tensor_f32(node->weight);
    const uint32_t r = node->seg_len, S = node->segments, cout = node->out.c;
    const uint32_t kw = node->op == EM_OP_LUT_DENSE ? 1u : node->kernel_w;
    uint32_t s, j, c, tap, g, l;
    (void)model;
    compute_layout(node, L);
    cbt = (float *)(void *)(base + L->cbt_offset);
    offsets = (uint32_t *)(void *)(base + L->offsets_offset);
    idx = base + L->idx_offset;
    for (s = 0; s < em_lut_codebook_segments(node); ++s) /* one [r][16] block when the codebook is shared */
        for (j = 0; j < r; ++j)
            for (c = 0; c < LANES; ++c)
                cbt[((size_t)s * r + j) * LANES + c] = codebook[((size_t)s * LANES + c) * r + j];
    for (tap = 0; tap < L->taps; ++tap) {
        const uint32_t ky = tap / kw, kx = tap % kw;
        for (s = 0; s < S; ++s) {
            const uint32_t t = tap * S + s;
            offsets[t] = (uint32_t)((((size_t)ky * L->wp + kx) * S + s) * LANES);
            for (g = 0; g < L->groups; ++g)
                for (l = 0; l < LANES; ++l) {
                    const uint32_t co = g * LANES + l;
                    idx[((size_t)t * L->groups + g) * LANES + l] =
                        co < cout ? (uint8_t)em_idx_get(node->index_map->data, node->index_map->bits,
                                                        (uint64_t)t * cout + co)
                                  : 0u;
                }
        }
    }
}

/* The gemm that builds the float table (16 columns). On the avx512 set, AVX2's: its register tile is 2 × 8
 * columns, exactly 16, where AVX-512's is 32 wide and would run half empty (measured ~1.3x slower here). */
static const em_micro *table_gemm_micro(const em_micro *micro)
{
#if defined(EM_HAVE_X86_SIMD)
    if (micro->kernels == EM_KERNELS_AVX512) return &em_micro_avx2;
#endif
    return micro;
}

void em_lut_int8_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const lut_int8_layout *L = (const lut_int8_layout *)node->packed;
    const unsigned char *base = (const unsigned char *)node->packed;
    const float *cbt = (const float *)(const void *)(base + L->cbt_offset);
    const uint32_t *offsets = (const uint32_t *)(const void *)(base + L->offsets_offset);
    const uint8_t *idx = base + L->idx_offset;
    const em_micro *micro = node->kernel->micro;
    const em_lut_int8_micro *i8 = em_lut_int8_micro_for(micro->kernels);
    const int dense = node->op == EM_OP_LUT_DENSE;
    const uint32_t r = node->seg_len, S = L->segments, cout = node->out.c;
    const uint32_t out_h = node->out.h, out_w = node->out.w;
    const uint32_t sh = dense ? 1u : node->stride_h, sw = dense ? 1u : node->stride_w;
    const uint32_t pt = dense ? 0u : node->pad_top, pl = dense ? 0u : node->pad_left;
    const size_t row = (size_t)S * LANES; /* table bytes (int8) or floats of one pixel */
    float *ftable = env->scratch;
    int8_t *qtable = (int8_t *)(void *)((unsigned char *)env->scratch + L->qtable_offset);
    int32_t *acc = (int32_t *)(void *)((unsigned char *)env->scratch + L->acc_offset);
    float inverse, scale;
    uint32_t s, y, oy, ox, co;
    uint64_t t0 = 0, t1 = 0;

    if (env->profile) t0 = em_platform_now_ns();
    for (s = 0; s < S; ++s) {
        const uint32_t first = s * r;
        const uint32_t len = L->in_c - first < r ? L->in_c - first : r; /* the last segment may be short */
        table_gemm_micro(micro)->gemm((size_t)L->in_h * L->in_w, LANES, len, input + first, L->in_c,
                                      cbt + (node->codebook_segment_stride ? (size_t)s * r * LANES : 0u), LANES,
                                      ftable + (size_t)s * LANES, row);
    }
    {
        const float absmax = i8->absmax(ftable, L->ftable_floats);
        if (!em_lut_int8_finite(absmax)) { /* as the reference: no scale, every output NaN */
            em_lut_int8_fill_nan(output, node->out.numel);
            if (env->profile) env->profile->table_ns += em_platform_now_ns() - t0;
            return;
        }
        inverse = em_lut_int8_inverse(absmax);
        scale = em_lut_int8_scale(absmax);
    }
    memset(qtable, 0, L->qtable_bytes);
    for (y = 0; y < L->in_h; ++y) /* an input row is contiguous in both tables (padding is between rows) */
        i8->quantize(ftable + (size_t)y * L->in_w * row, (size_t)L->in_w * row, inverse,
                     qtable + ((size_t)(y + pt) * L->wp + pl) * row);
    if (env->profile) t1 = em_platform_now_ns();
    for (oy = 0; oy < out_h; ++oy)
        for (ox = 0; ox < out_w; ++ox) {
            float *out = output + ((size_t)oy * out_w + ox) * cout;
            i8->accumulate(qtable + ((size_t)oy * sh * L->wp + (size_t)ox * sw) * row, offsets, idx, L->terms,
                           L->groups, acc);
            for (co = 0; co < cout; ++co) out[co] = (float)acc[co] * scale;
        }
    em_opt_bias_activate(output, (size_t)out_h * out_w, cout, em_tensor_f32(node->bias), node->activation);
    if (env->profile) {
        env->profile->table_ns += t1 - t0;
        env->profile->accumulate_ns += em_platform_now_ns() - t1;
    }
}

static void em_lut_int8_accumulate_generic(const int8_t *table, const uint32_t *offsets, const uint8_t *idx,
                                           size_t terms, size_t groups, int32_t *acc)
{
    const size_t lanes = groups * LANES;
    size_t t, i;
    for (i = 0; i < lanes; ++i) acc[i] = 0;
    for (t = 0; t < terms; ++t) {
        const int8_t *entries = table + offsets[t];
        const uint8_t *ix = idx + t * lanes;
        for (i = 0; i < lanes; ++i) acc[i] += entries[ix[i]];
    }
}

static float absmax_generic(const float *src, size_t n)
{
    return em_lut_int8_absmax(src, n);
}

static void quantize_generic(const float *src, size_t n, float inverse, int8_t *dst)
{
    size_t i;
    for (i = 0; i < n; ++i) dst[i] = (int8_t)em_lut_int8_quantize(src[i], inverse);
}

const em_lut_int8_micro em_lut_int8_generic = {"generic", em_lut_int8_accumulate_generic, absmax_generic,
                                               quantize_generic};

const em_lut_int8_micro *em_lut_int8_micro_for(uint32_t kernels)
{
#if defined(EM_HAVE_X86_SIMD)
    if (kernels == EM_KERNELS_AVX2 || kernels == EM_KERNELS_AVX512) return &em_lut_int8_avx2;
#endif
#if defined(EM_HAVE_NEON)
    if (kernels == EM_KERNELS_NEON) return &em_lut_int8_neon;
#endif
    (void)kernels;
    return &em_lut_int8_generic;
}
