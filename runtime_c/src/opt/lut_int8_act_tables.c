/* LUT_CONV2D and LUT_DENSE with int8 activations (flag INT8_ACT; FORMAT.md "int8 activations") in the table
 * form: the kernels lut_conv2d_i8a_tables_<set> / lut_dense_i8a_tables_<set> (micro-kernels: em_i8a_tables.h).
 * Their result is the reference's (ref/lut_int8_act_ref.c) bit for bit: the same int8 input and codebook,
 * the same int32 table entries and exact int32 sums (any order), then f32(acc) · k, + bias, act.
 *
 * LUT_CONV2D per run: (1) non-finite check and quantisation of the input into rows of S·k4·4 bytes (each
 * segment zero-padded to whole 4-byte groups); (2) those groups copied into the planar operand of the build
 * (em_i8a_tables.h: x [S][blocks][k4][16 pixels][4]); the pixel axis is the zero-padded input split into
 * stride phases, as in the float planar kernel (opt/lut_conv2d.c), so a padded pixel's entries are 0 and
 * every tap is a constant offset; (3) per segment one build of table[s, c, pixel] (sdot: 16 products per
 * instruction); (4) per output channel the planar int32 accumulation with one precomputed offset per term
 * and the epilogue in registers over runs of 4 output pixels of each row (not the padding columns between
 * rows), into a float tile [co][row][vpr·4], then transposed to NHWC rows.
 * One band only: a node whose int32 table exceeds EM_LUT_TABLE_BUDGET_BYTES is not supported here (the
 * decoded int8 GEMM, opt/lut_int8_act.c, takes it).
 *
 * LUT_DENSE per run: quantisation (segments padded as above), one build_row per segment (table [S][C4]),
 * one gather over the outputs with the epilogue.
 *
 * Packed (model-owned, at load). conv: layout | codebook [cb segments][C4/4][k4][4][4] int8 | offset[Cout][terms]
 * uint32 | source pixel of every plane position int32 (−1: padding) | start column of every run of a chunk
 * uint32. dense: layout | codebook | idx [S][Cout]
 * uint16. Scratch: conv: qx rows | x | table [S][C4][ldt] int32 + slack | tile [Cout][tile_ld] float; dense:
 * qx | table. */
#include <string.h>

#include "../em_int8_act.h"
#include "../ref/em_ref_kernels.h"
#include "em_i8a_tables.h"
#include "em_lut_int8_kernels.h"
#include "em_opt_kernels.h"

#define TABLE_SLACK 16u /* zeroed int32 after the table: the accumulation's last vector may read past the plane */

typedef struct i8a_tables_layout {
    uint32_t k4, c4, cb_segments, row_bytes; /* row_bytes: S·k4·4, one quantised pixel (or the dense input) */
    uint32_t taps, terms, phases, hq, wq, blocks, chunk_rows, vpr, tile_ld; /* vpr: runs of 4 per output row */
    size_t plane, ldt;                       /* plane positions, and the table's row stride (blocks · 16) */
    float scale;                             /* k of FORMAT.md */
    size_t cb_offset, offsets_offset, src_offset, start_offset, idx_offset, packed_bytes;
    size_t x_offset, table_offset, tile_offset, scratch_bytes;
} i8a_tables_layout;

static size_t align64(size_t x)
{
    return (x + 63u) & ~(size_t)63u;
}

static int compute_layout(const em_node *node, i8a_tables_layout *L)
{
    const int dense = node->op == EM_OP_LUT_DENSE;
    const uint64_t r = node->seg_len, S = node->segments, C = node->codewords;
    const uint64_t k4 = (r + 3u) / 4u;
    const uint64_t c4 = dense ? (C + 15u) / 16u * 16u : (C + 3u) / 4u * 4u; /* build_row: 16 codewords a step */
    const uint64_t cb_segments = em_lut_codebook_segments(node);
    uint64_t cb_bytes, table, qx;
    memset(L, 0, sizeof *L);
    if (!(node->flags & EM_NODE_FLAG_INT8_ACT) || r == 0 || S == 0 || C == 0 || C > 65536u) return 0;
    L->k4 = (uint32_t)k4;
    L->c4 = (uint32_t)c4;
    L->cb_segments = (uint32_t)cb_segments;
    L->row_bytes = (uint32_t)(S * k4 * 4u);
    cb_bytes = cb_segments * c4 * k4 * 4u;
    L->cb_offset = align64(sizeof *L);
    if (dense) {
        uint64_t idx = S * node->out.c * 2u;
        table = S * c4 * 4u;
        if (table > EM_LUT_TABLE_BUDGET_BYTES || cb_bytes + idx > ((uint64_t)64u << 20)) return 0;
        L->idx_offset = L->cb_offset + align64((size_t)cb_bytes);
        L->packed_bytes = L->idx_offset + (size_t)idx;
        L->table_offset = align64(L->row_bytes);
        L->scratch_bytes = L->table_offset + (size_t)table;
        return 1;
    }
    {
        const uint64_t sh = node->stride_h, sw = node->stride_w;
        const uint64_t hp = (uint64_t)node->in.h + node->pad_top + node->pad_bottom;
        const uint64_t wp = (uint64_t)node->in.w + node->pad_left + node->pad_right;
        const uint64_t hq = (hp + sh - 1u) / sh, wq = (wp + sw - 1u) / sw;
        const uint64_t plane = sh * sw * hq * wq, blocks = (plane + 15u) / 16u;
        uint64_t chunk_rows, terms, offsets, src;
        table = S * c4 * blocks * 16u * 4u;
        if (table > EM_LUT_TABLE_BUDGET_BYTES) return 0; /* one band only: the decoded GEMM takes larger nodes */
        terms = (uint64_t)node->kernel_h * node->kernel_w * S;
        chunk_rows = EM_LUT_CHUNK_FLOATS / wq;
        if (chunk_rows < 1u) chunk_rows = 1u;
        if (chunk_rows > node->out.h) chunk_rows = node->out.h;
        L->taps = node->kernel_h * node->kernel_w;
        L->terms = (uint32_t)terms;
        L->phases = (uint32_t)(sh * sw);
        L->hq = (uint32_t)hq;
        L->wq = (uint32_t)wq;
        L->blocks = (uint32_t)blocks;
        L->plane = (size_t)plane;
        L->ldt = (size_t)blocks * 16u;
        L->chunk_rows = (uint32_t)chunk_rows;
        L->vpr = (node->out.w + 3u) / 4u;
        L->tile_ld = (uint32_t)(chunk_rows * L->vpr * 4u);
        offsets = terms * node->out.c * 4u;
        src = plane * 4u;
        qx = (uint64_t)node->in.h * node->in.w * L->row_bytes;
        if (offsets > ((uint64_t)64u << 20) || qx > ((uint64_t)64u << 20)) return 0;
        L->offsets_offset = L->cb_offset + align64((size_t)cb_bytes);
        L->src_offset = L->offsets_offset + align64((size_t)offsets);
        L->start_offset = L->src_offset + align64((size_t)src);
        L->packed_bytes = L->start_offset + (size_t)chunk_rows * L->vpr * 4u;
        L->x_offset = align64((size_t)qx);
        L->table_offset = L->x_offset + align64((size_t)(S * blocks * k4 * 64u));
        L->tile_offset = L->table_offset + align64((size_t)table + TABLE_SLACK * 4u);
        L->scratch_bytes = L->tile_offset + (size_t)node->out.c * L->tile_ld * sizeof(float);
        return 1;
    }
}

int em_lut_int8_act_tables_supports(const em_node *node)
{
    i8a_tables_layout L;
    return compute_layout(node, &L);
}

em_status em_lut_int8_act_tables_plan(const em_model *model, em_node *node, em_error *err)
{
    i8a_tables_layout L;
    const int fits = compute_layout(node, &L);
    (void)model;
    return em_opt_plan_own_bytes(node, fits, L.packed_bytes, L.scratch_bytes, err);
}

/* The quantised codebook in the build's operand layout: [cb segment][C4 / 4][k4][4 codewords][4]. */
static void pack_codebook(const em_node *node, const i8a_tables_layout *L, int8_t *cb)
{
    const float *codebook = em_tensor_f32(node->weight);
    const uint32_t r = node->seg_len, C = node->codewords;
    const float inverse = em_lut_int8_inverse(em_int8_act_codebook_absmax(node));
    uint32_t s, c, q, e;
    for (s = 0; s < L->cb_segments; ++s)
        for (c = 0; c < L->c4; ++c)
            for (q = 0; q < L->k4; ++q)
                for (e = 0; e < 4u; ++e) {
                    const uint32_t j = 4u * q + e;
                    int8_t v = 0;
                    if (c < C && j < r)
                        v = (int8_t)em_lut_int8_quantize(codebook[(size_t)s * C * r + (size_t)c * r + j], inverse);
                    cb[((((size_t)s * (L->c4 / 4u) + c / 4u) * L->k4 + q) * 4u + c % 4u) * 4u + e] = v;
                }
}

void em_lut_int8_act_tables_pack(const em_model *model, em_node *node)
{
    i8a_tables_layout *L = (i8a_tables_layout *)node->packed;
    unsigned char *packed = (unsigned char *)node->packed;
    const uint32_t S = node->segments, cout = node->out.c;
    (void)model;
    compute_layout(node, L);
    L->scale = em_int8_act_output_scale(node, em_int8_act_codebook_absmax(node));
    pack_codebook(node, L, (int8_t *)(packed + L->cb_offset));
    if (node->op == EM_OP_LUT_DENSE) {
        uint16_t *idx = (uint16_t *)(void *)(packed + L->idx_offset);
        uint32_t s, o;
        for (s = 0; s < S; ++s)
            for (o = 0; o < cout; ++o)
                idx[(size_t)s * cout + o] =
                    (uint16_t)em_idx_get(node->index_map->data, node->index_map->bits, (uint64_t)s * cout + o);
        return;
    }
    {
        uint32_t *offset = (uint32_t *)(void *)(packed + L->offsets_offset);
        int32_t *src = (int32_t *)(void *)(packed + L->src_offset);
        uint32_t *start = (uint32_t *)(void *)(packed + L->start_offset);
        const uint32_t sh = node->stride_h, sw = node->stride_w;
        uint32_t ky, kx, s, co, py, px, yq, xq, v;
        /* run v of a chunk: output row v / vpr, pixels 4·(v % vpr) .. +3 (past out_w: computed, not stored) */
        for (v = 0; v < L->chunk_rows * L->vpr; ++v) start[v] = v / L->vpr * L->wq + v % L->vpr * 4u;
        /* offset[co][s·taps + tap], as the float planar kernel: segment s, codeword c = index[tap, s, co], the
         * tap's shift into the phase planes */
        for (co = 0; co < cout; ++co)
            for (ky = 0; ky < node->kernel_h; ++ky)
                for (kx = 0; kx < node->kernel_w; ++kx) {
                    const uint32_t tap = ky * node->kernel_w + kx;
                    const size_t phase = (size_t)(ky % sh) * sw + kx % sw;
                    const size_t shift = (phase * L->hq + ky / sh) * L->wq + kx / sw;
                    for (s = 0; s < S; ++s) {
                        const uint64_t c = em_idx_get(node->index_map->data, node->index_map->bits,
                                                      ((uint64_t)tap * S + s) * cout + co);
                        offset[(size_t)co * L->terms + (size_t)s * L->taps + tap] =
                            (uint32_t)(((size_t)s * L->c4 + (size_t)c) * L->ldt + shift);
                    }
                }
        /* plane position (phase (py, px), row yq, column xq) holds padded pixel (yq·sh + py, xq·sw + px) */
        for (py = 0; py < sh; ++py)
            for (px = 0; px < sw; ++px)
                for (yq = 0; yq < L->hq; ++yq)
                    for (xq = 0; xq < L->wq; ++xq) {
                        const int64_t y = (int64_t)yq * sh + py - node->pad_top;
                        const int64_t x = (int64_t)xq * sw + px - node->pad_left;
                        const size_t q = (((size_t)py * sw + px) * L->hq + yq) * L->wq + xq;
                        src[q] = y >= 0 && y < (int64_t)node->in.h && x >= 0 && x < (int64_t)node->in.w
                                     ? (int32_t)(y * node->in.w + x)
                                     : -1;
                    }
    }
}

/* qx rows of S·k4·4 bytes per pixel: each segment's r values quantised, then zeros up to its k4 groups
 * (and past Cin in a short last segment). One call over everything when the rows are the input's own. */
static void quantize_rows(const em_node *node, const i8a_tables_layout *L, const em_lut_int8_micro *i8,
                          const float *input, size_t pixels, uint32_t in_c, int8_t *qx)
{
    const float inverse = em_int8_act_input_inverse(node);
    const uint32_t r = node->seg_len, seg_bytes = L->k4 * 4u;
    size_t p;
    uint32_t s;
    if (L->row_bytes == in_c) {
        i8->quantize(input, pixels * in_c, inverse, qx);
        return;
    }
    memset(qx, 0, pixels * L->row_bytes);
    for (p = 0; p < pixels; ++p)
        for (s = 0; s < node->segments; ++s) {
            const uint32_t first = s * r, len = in_c - first < r ? in_c - first : r;
            i8->quantize(input + p * in_c + first, len, inverse, qx + p * L->row_bytes + (size_t)s * seg_bytes);
        }
}

void em_lut_int8_act_tables_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const i8a_tables_layout *L = (const i8a_tables_layout *)node->packed;
    const unsigned char *packed = (const unsigned char *)node->packed;
    const int8_t *cb = (const int8_t *)(packed + L->cb_offset);
    const em_micro *micro = node->kernel->micro;
    const em_lut_int8_micro *i8 = em_lut_int8_micro_for(micro->kernels);
    const em_i8a_tables_micro *tm = em_i8a_tables_micro_for(micro->kernels);
    const int dense = node->op == EM_OP_LUT_DENSE;
    const uint32_t S = node->segments, cout = node->out.c, k4 = L->k4, c4 = L->c4;
    const size_t cb_stride = node->codebook_segment_stride ? (size_t)c4 * k4 * 4u : 0u; /* shared: one segment */
    const uint32_t in_c = em_int8_act_in_c(node);
    const size_t pixels = dense ? 1u : (size_t)node->in.h * node->in.w;
    const float *bias = em_tensor_f32(node->bias);
    unsigned char *scratch = (unsigned char *)(void *)env->scratch;
    int8_t *qx = (int8_t *)scratch;
    int32_t *table = (int32_t *)(void *)(scratch + L->table_offset);
    uint32_t s;
    uint64_t t0 = 0, t1 = 0;

    if (env->profile) t0 = em_platform_now_ns();
    if (!em_lut_int8_finite(i8->absmax(input, pixels * in_c))) { /* no int8 image: every output NaN */
        em_lut_int8_fill_nan(output, node->out.numel);
        return;
    }
    quantize_rows(node, L, i8, input, pixels, in_c, qx);
    if (dense) {
        for (s = 0; s < S; ++s)
            tm->build_row(cb + s * cb_stride, qx + (size_t)s * k4 * 4u, k4, c4, table + (size_t)s * c4);
        if (env->profile) t1 = em_platform_now_ns();
        tm->gather(table, c4, S, (const uint16_t *)(const void *)(packed + L->idx_offset), cout, L->scale, bias,
                   node->activation, output);
    } else {
        const uint32_t *offset = (const uint32_t *)(const void *)(packed + L->offsets_offset);
        const int32_t *src = (const int32_t *)(const void *)(packed + L->src_offset);
        const uint32_t *start = (const uint32_t *)(const void *)(packed + L->start_offset);
        int8_t *x = (int8_t *)(scratch + L->x_offset);
        float *tile = (float *)(void *)(scratch + L->tile_offset);
        const size_t group_stride = (size_t)L->blocks * k4 * 64u; /* bytes of one segment's x */
        const uint32_t out_w = node->out.w;
        size_t q;
        uint32_t g, chunk_row;
        /* (2) the build's operand: 4-byte groups of each plane position's row (zeros for padding and past
         * the plane) */
        for (q = 0; q < L->ldt; ++q) {
            const int32_t p = q < L->plane ? src[q] : -1;
            int8_t *dst = x + ((q / 16u) * k4 * 16u + q % 16u) * 4u;
            for (s = 0; s < S; ++s)
                for (g = 0; g < k4; ++g) {
                    int8_t *d = dst + s * group_stride + (size_t)g * 64u;
                    if (p < 0) memset(d, 0, 4u);
                    else memcpy(d, qx + (size_t)p * L->row_bytes + ((size_t)s * k4 + g) * 4u, 4u);
                }
        }
        for (s = 0; s < S; ++s)
            tm->build_planar(cb + s * cb_stride, x + s * group_stride, k4, c4, L->blocks, table + (size_t)s * c4 * L->ldt,
                             L->ldt);
        memset(table + (size_t)S * c4 * L->ldt, 0, TABLE_SLACK * sizeof(int32_t));
        if (env->profile) t1 = em_platform_now_ns();
        for (chunk_row = 0; chunk_row < node->out.h; chunk_row += L->chunk_rows) {
            const uint32_t rows = node->out.h - chunk_row < L->chunk_rows ? node->out.h - chunk_row : L->chunk_rows;
            const size_t q0 = (size_t)chunk_row * L->wq;
            uint32_t co, row;
            for (co = 0; co < cout; ++co)
                tm->accumulate_planar(table + q0, offset + (size_t)co * L->terms, L->terms, start, (size_t)rows * L->vpr,
                                      L->scale, bias != NULL ? bias + co : NULL, node->activation,
                                      tile + (size_t)co * L->tile_ld);
            for (row = 0; row < rows; ++row)
                micro->transpose(tile + (size_t)row * L->vpr * 4u, L->tile_ld, cout, out_w,
                                 output + (size_t)(chunk_row + row) * out_w * cout, cout);
        }
    }
    if (env->profile) {
        env->profile->table_ns += t1 - t0;
        env->profile->accumulate_ns += em_platform_now_ns() - t1;
    }
}

/* ---- the micro-kernels each set runs (the generic C: opt/i8a_tables_generic.c) ---- */

const em_i8a_tables_micro *em_i8a_tables_micro_for(uint32_t kernels)
{
#if defined(EM_HAVE_NEON)
    if (kernels == EM_KERNELS_NEON) {
#if defined(EM_HAVE_ARM_DOTPROD)
        if (em_cpu_has_arm_dotprod()) return &em_i8a_tables_sdot;
#endif
        return &em_i8a_tables_neon;
    }
#endif
#if defined(EM_HAVE_X86_SIMD)
    if (kernels == EM_KERNELS_AVX512) return &em_i8a_tables_avx512;
    if (kernels == EM_KERNELS_AVX2) return &em_i8a_tables_avx2;
#endif
    (void)kernels;
    return &em_i8a_tables_generic;
}

size_t em_i8a_tables_micro_list(const em_i8a_tables_micro **out, size_t max)
{
    size_t n = 0;
#define EM_ADD_MICRO(t) do { if (n < max) out[n] = (t); ++n; } while (0)
    EM_ADD_MICRO(&em_i8a_tables_generic);
#if defined(EM_HAVE_X86_SIMD)
    if (em_cpu_supports(EM_KERNELS_AVX2)) EM_ADD_MICRO(&em_i8a_tables_avx2);
    if (em_cpu_supports(EM_KERNELS_AVX512)) EM_ADD_MICRO(&em_i8a_tables_avx512);
#endif
#if defined(EM_HAVE_NEON)
    EM_ADD_MICRO(&em_i8a_tables_neon);
#endif
#if defined(EM_HAVE_ARM_DOTPROD)
    if (em_cpu_has_arm_dotprod()) EM_ADD_MICRO(&em_i8a_tables_sdot);
#endif
#undef EM_ADD_MICRO
    return n;
}
