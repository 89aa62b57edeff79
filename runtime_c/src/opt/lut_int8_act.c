/* LUT_CONV2D and LUT_DENSE with int8 activations (flag INT8_ACT; FORMAT.md "int8 activations"): the kernels
 * lut_conv2d_i8a_<set> / lut_dense_i8a_<set>. Their result is the reference's (ref/lut_int8_act_ref.c) bit
 * for bit: the integer sum of a node's table terms equals the direct convolution of the int8 input with
 * the int8 codebook decoded into weights (integer sums are exact in any order), so these kernels decode
 * the quantised codebook once at load and run one int8 GEMM with int32 sums (em_int8_gemm.h: sdot,
 * smull/sadalp, vpdpbusd (VNNI), vpmaddwd or C). The other form, int32 tables summed by index
 * (opt/lut_int8_act_tables.c), wins where segments are long (r = 16 / 32 on ARM); em_select.c
 * int8_act_prefers_tables chooses per node. This one takes the r = 1 first convs, where a table saves nothing,
 * MobileNetV2's r = 4 point-wise layers, and every LUT_CONV2D on x86 (vpdpbusd zmm: 64 products per instruction).
 *
 * Per run: (1) non-finite check and quantisation of the whole input (qx; one pass where the tile set has
 * a quantize), (2) the A rows of the GEMM: for
 * 1×1 stride-1 convs and dense layers with Cin a multiple of 4 ("direct") the rows of qx themselves; for
 * other convs on a tile with tile_rows ("implicit": avx512_vnni) each patch read in place from qx quantised
 * into a zero-padded image; else per band of up to BAND output pixels an im2col of qx rows (depth
 * K = KH·KW·Cin, zero in the padding and past K up to K4·4), (3) the 4×16 tiles, (4) out = f32(acc) · k,
 * then + bias, then ReLU/ReLU6 (the reference's order, no FMA), in the tile set's vector store where it
 * has one, else in a second pass.
 *
 * Packed (model-owned, at load): layout | weights [N16][K4][16][4] int8 (channels past Cout and depths past
 * K are 0; implicit with Cin padded: depths tap·cin_pad + c, zero for c ≥ Cin). Scratch: qx [P·Cin, or the
 * padded image] | band rows [BAND][K4·4] (implicit: a staged input row) | one int32 tile [4·16]. */
#include <string.h>

#include "../em_int8_act.h"
#include "em_int8_gemm.h"
#include "em_lut_int8_kernels.h"
#include "em_opt_kernels.h"

#define BAND 64u /* output pixels per im2col band: a multiple of 4 (the tile's rows) */
#define MAX_PACKED_BYTES ((uint64_t)256u << 20)

typedef struct int8_act_layout {
    uint32_t in_h, in_w, in_c, taps, k, k4, n16;
    uint32_t direct; /* 1×1 stride-1 conv (no padding then) or dense with Cin a multiple of 4: the A rows are
                      * the rows of qx, no im2col */
    uint32_t implicit; /* a conv (not direct) on a tile with tile_rows: the A rows are read in place from qx
                        * quantised into a zero-padded image, no im2col */
    uint32_t pad_h, pad_w, cin_pad; /* that image: in_h + pad_top + pad_bottom, in_w + pad_left + pad_right,
                                     * Cin (rounded up to a multiple of 4 where KW·Cin is not one) */
    float scale; /* k of FORMAT.md: f32(sx · f32(m / 127)) */
    const em_int8_gemm_micro *gemm; /* the set's tile, chosen at pack from the model's x86_vnni_sets (CPUID
                                     * costs microseconds where a hypervisor traps it: not per run) */
    size_t weights_offset, offsets_offset, packed_bytes; /* offsets: em_int8_column_offsets of the weights */
    size_t band_offset, tile_offset, scratch_bytes;
} int8_act_layout;

static size_t align64(size_t x)
{
    return (x + 63u) & ~(size_t)63u;
}

/* `gemm`: the tile the node will run (NULL: the layout without an implicit im2col, for supports()) */
static int compute_layout(const em_node *node, const em_int8_gemm_micro *gemm, int8_act_layout *L)
{
    const int dense = node->op == EM_OP_LUT_DENSE;
    uint64_t k, k4, n16, weights, qx, band;
    memset(L, 0, sizeof *L);
    if (!(node->flags & EM_NODE_FLAG_INT8_ACT)) return 0;
    L->in_h = dense ? 1u : node->in.h;
    L->in_w = dense ? 1u : node->in.w;
    L->in_c = em_int8_act_in_c(node);
    L->taps = dense ? 1u : node->kernel_h * node->kernel_w;
    if ((uint64_t)L->taps * L->in_c > EM_INT8_ACT_MAX_PRODUCTS) return 0; /* the real products (int32 bound) */
    L->direct = (dense || (node->kernel_h == 1u && node->kernel_w == 1u && node->stride_h == 1u &&
                           node->stride_w == 1u && node->pad_top == 0u && node->pad_left == 0u)) &&
                L->in_c % 4u == 0u;
    L->implicit = gemm != NULL && gemm->tile_rows != NULL && !dense && !L->direct;
    /* implicit: a kernel row must be whole 4-byte groups; else the image gets Cin padded to a multiple of
     * 4 with zero channels (zero weights there: the sums are unchanged) */
    L->cin_pad = L->implicit && ((uint64_t)node->kernel_w * L->in_c) % 4u != 0u ? (L->in_c + 3u) & ~3u : L->in_c;
    k = (uint64_t)L->taps * L->cin_pad;
    k4 = (k + 3u) / 4u;
    n16 = ((uint64_t)node->out.c + 15u) / 16u;
    weights = n16 * k4 * 64u;
    qx = (uint64_t)L->in_h * L->in_w * L->in_c;
    band = (uint64_t)BAND * k4 * 4u;
    if (L->implicit) {
        L->pad_h = L->in_h + node->pad_top + node->pad_bottom;
        L->pad_w = L->in_w + node->pad_left + node->pad_right;
        qx = (uint64_t)L->pad_h * L->pad_w * L->cin_pad;
        if (band < (uint64_t)L->in_w * L->in_c) band = (uint64_t)L->in_w * L->in_c; /* a quantised row staged */
        if (weights > MAX_PACKED_BYTES || qx > (uint64_t)SIZE_MAX / 4u) return compute_layout(node, NULL, L);
    }
    if (weights > MAX_PACKED_BYTES || qx > (uint64_t)SIZE_MAX / 4u) return 0;
    L->k = (uint32_t)k;
    L->k4 = (uint32_t)k4;
    L->n16 = (uint32_t)n16;
    L->weights_offset = align64(sizeof *L);
    L->offsets_offset = L->weights_offset + align64((size_t)weights);
    L->packed_bytes = L->offsets_offset + (size_t)n16 * 16u * sizeof(int32_t);
    L->band_offset = align64((size_t)qx);
    L->tile_offset = L->band_offset + align64((size_t)band);
    L->scratch_bytes = L->tile_offset + 64u * sizeof(int32_t);
    return 1;
}

int em_lut_int8_act_supports(const em_node *node)
{
    int8_act_layout L;
    return compute_layout(node, NULL, &L);
}

em_status em_lut_int8_act_plan(const em_model *model, em_node *node, em_error *err)
{
    int8_act_layout L;
    /* em_kernel_choose checked supports(); defensive */
    if (!compute_layout(node, em_int8_gemm_micro_for(node->kernel->micro->kernels, model->x86_vnni_sets), &L))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "too large for kernel %s", node->kernel->name);
    node->packed_bytes = L.packed_bytes;
    node->scratch_bytes = L.scratch_bytes;
    node->table_bytes = 0;
    node->table_shareable = 0;
    return EM_STATUS_OK;
}

void em_lut_int8_act_pack(const em_model *model, em_node *node)
{
    int8_act_layout *L = (int8_act_layout *)node->packed;
    int8_t *weights;
    const float *codebook = em_tensor_f32(node->weight);
    const uint32_t r = node->seg_len, S = node->segments, cout = node->out.c;
    float cb_absmax, cb_inverse;
    uint32_t nb, q, n, e;
    const em_int8_gemm_micro *gemm = em_int8_gemm_micro_for(node->kernel->micro->kernels, model->x86_vnni_sets);
    compute_layout(node, gemm, L);
    weights = (int8_t *)node->packed + L->weights_offset;
    cb_absmax = em_int8_act_codebook_absmax(node);
    cb_inverse = em_lut_int8_inverse(cb_absmax);
    L->scale = em_int8_act_output_scale(node, cb_absmax);
    L->gemm = gemm;
    for (nb = 0; nb < L->n16; ++nb)
        for (q = 0; q < L->k4; ++q)
            for (n = 0; n < 16u; ++n)
                for (e = 0; e < 4u; ++e) {
                    const uint32_t depth = 4u * q + e, co = nb * 16u + n;
                    int8_t w = 0;
                    if (depth < L->k && co < cout && depth % L->cin_pad < L->in_c) {
                        const uint32_t tap = depth / L->cin_pad, ci = depth % L->cin_pad, s = ci / r;
                        const uint32_t c = em_idx_get(node->index_map->data, node->index_map->bits,
                                                      ((uint64_t)tap * S + s) * cout + co);
                        w = (int8_t)em_lut_int8_quantize(codebook[s * node->codebook_segment_stride + (size_t)c * r + ci % r], cb_inverse);
                    }
                    weights[(((size_t)nb * L->k4 + q) * 16u + n) * 4u + e] = w;
                }
    em_int8_column_offsets(weights, L->k4, L->n16, (int32_t *)(void *)((unsigned char *)node->packed + L->offsets_offset));
}

/* Row `m` of the im2col band: the KH·KW·Cin int8 values output pixel m reads (0 in the padding), then
 * zeros up to K4·4. */
static void im2col_row(const em_node *node, const int8_act_layout *L, const int8_t *qx, uint32_t m, int8_t *row)
{
    const uint32_t kh = node->kernel_h, kw = node->kernel_w, cin = L->in_c;
    const uint32_t oy = m / node->out.w, ox = m % node->out.w;
    const int64_t y0 = (int64_t)oy * node->stride_h - node->pad_top;
    const int64_t x0 = (int64_t)ox * node->stride_w - node->pad_left;
    const int64_t first = x0 < 0 ? -x0 : 0;
    const int64_t last = x0 + kw > (int64_t)L->in_w ? (int64_t)L->in_w - x0 : (int64_t)kw; /* kx in [first, last) */
    uint32_t ky;
    for (ky = 0; ky < kh; ++ky) {
        const int64_t iy = y0 + ky;
        int8_t *dst = row + (size_t)ky * kw * cin;
        if (iy < 0 || iy >= (int64_t)L->in_h || first >= last) {
            memset(dst, 0, (size_t)kw * cin);
            continue;
        }
        if (first > 0) memset(dst, 0, (size_t)first * cin);
        memcpy(dst + (size_t)first * cin, qx + ((size_t)iy * L->in_w + (size_t)(x0 + first)) * cin,
               (size_t)(last - first) * cin);
        if (last < (int64_t)kw) memset(dst + (size_t)last * cin, 0, (size_t)(kw - last) * cin);
    }
    memset(row + L->k, 0, (size_t)L->k4 * 4u - L->k);
}

/* i8->quantize of n values; with the tile set's one-pass form (gemm->quantize) also the largest magnitude's
 * bits into *bits (the caller's non-finite check; the set's absmax pass is skipped then) */
static void quantize(const em_lut_int8_micro *i8, const em_int8_gemm_micro *gemm, const float *src, size_t n,
                     float inverse, int8_t *dst, uint32_t *bits)
{
    if (gemm->quantize != NULL) {
        const uint32_t m = gemm->quantize(src, n, inverse, dst);
        if (m > *bits) *bits = m;
    } else {
        i8->quantize(src, n, inverse, dst);
    }
}

/* The implicit-GEMM conv (L->implicit, a tile with tile_rows): qx is the input quantised into a zero-padded
 * image (pad_h × pad_w × cin_pad), so output pixel (oy, ox)'s patch is KH segments of KW·cin_pad contiguous
 * bytes from qx + ((oy·sh)·pad_w + ox·sw)·cin_pad, pad_w·cin_pad apart: the depth order of the packed
 * weights (tap-major, then cin_pad), and every 4-byte group inside one segment. 4 output pixels per tile call; a last group short
 * of 4 repeats its first pixel's patch (rows the store leaves out). */
static int run_implicit(const em_node *node, const int8_act_layout *L, const em_lut_int8_micro *i8,
                        const float *input, int8_t *qx, int8_t *staging, const int8_t *weights,
                        em_int8_store_fn store, int fused, const float *bias, float *output, int32_t *tile)
{
    const uint32_t cin = L->in_c, cpad = L->cin_pad, cout = node->out.c, out_w = node->out.w;
    const uint32_t pixels = node->out.h * out_w;
    const size_t row_bytes = (size_t)L->pad_w * cpad, seg_k4 = (size_t)node->kernel_w * cpad / 4u;
    const size_t left = (size_t)node->pad_left * cpad, right = (size_t)node->pad_right * cpad;
    const size_t in_row = (size_t)L->in_w * cin;
    const float inverse = em_int8_act_input_inverse(node);
    const uint32_t activation = fused ? node->activation : EM_ACT_NONE;
    const int32_t *offsets = (const int32_t *)(const void *)((const unsigned char *)node->packed + L->offsets_offset);
    const size_t step_x = (size_t)node->stride_w * cpad, step_y = (size_t)node->stride_h * row_bytes;
    const int8_t *line = qx; /* output row oy's windows: qx + oy · stride_h · row_bytes */
    uint32_t y, x, c, m, i, nb, bits = 0, ox = 0;
    memset(qx, 0, (size_t)node->pad_top * row_bytes);
    for (y = 0; y < L->in_h; ++y) {
        int8_t *row = qx + (size_t)(node->pad_top + y) * row_bytes;
        memset(row, 0, left);
        if (cpad == cin) {
            quantize(i8, L->gemm, input + (size_t)y * in_row, in_row, inverse, row + left, &bits);
        } else { /* channels padded with zeros: quantise the row, then spread its pixels */
            quantize(i8, L->gemm, input + (size_t)y * in_row, in_row, inverse, staging, &bits);
            if (cpad == 4u) { /* Cin 1-3 (first convs): one 4-byte group per pixel, a loop per Cin */
                int8_t *dst = row + left;
                memset(dst, 0, (size_t)L->in_w * 4u);
                if (cin == 1u) {
                    for (x = 0; x < L->in_w; ++x) dst[4u * x] = staging[x];
                } else if (cin == 2u) {
                    for (x = 0; x < L->in_w; ++x) {
                        dst[4u * x] = staging[2u * x];
                        dst[4u * x + 1u] = staging[2u * x + 1u];
                    }
                } else { /* 4 bytes per pixel (the 4th, the next pixel's first, then zeroed): a word copy
                          * instead of three byte copies (armperf: MobileNetV2's 64×64×3 input) */
                    for (x = 0; x + 1u < L->in_w; ++x) {
                        memcpy(dst + 4u * x, staging + 3u * x, 4);
                        dst[4u * x + 3u] = 0;
                    }
                    dst[4u * x] = staging[3u * x];
                    dst[4u * x + 1u] = staging[3u * x + 1u];
                    dst[4u * x + 2u] = staging[3u * x + 2u];
                }
            } else {
                memset(row + left, 0, (size_t)L->in_w * cpad);
                for (x = 0; x < L->in_w; ++x)
                    for (c = 0; c < cin; ++c) row[left + (size_t)x * cpad + c] = staging[(size_t)x * cin + c];
            }
        }
        memset(row + left + (size_t)L->in_w * cpad, 0, right);
    }
    memset(qx + (size_t)(node->pad_top + L->in_h) * row_bytes, 0, (size_t)node->pad_bottom * row_bytes);
    if (bits >= EM_INT8_NONFINITE_BITS) return 0;
    for (m = 0; m < pixels; m += 4u) {
        const uint32_t valid_rows = pixels - m < 4u ? pixels - m : 4u;
        const int8_t *rows[4];
        for (i = 0; i < 4u; ++i) { /* the window of output pixel (oy, ox) starts at line + ox · step_x */
            if (i < valid_rows) {
                rows[i] = line + (size_t)ox * step_x;
                if (++ox == out_w) {
                    ox = 0;
                    line += step_y;
                }
            } else {
                rows[i] = rows[0];
            }
        }
        if (fused && L->gemm->gemm_rows != NULL) {
            L->gemm->gemm_rows(rows, node->kernel_h, row_bytes, seg_k4, weights, offsets, cout, L->scale, bias,
                               activation, output + (size_t)m * cout, valid_rows);
            continue;
        }
        for (nb = 0; nb < L->n16; ++nb) {
            const uint32_t first = nb * 16u, cols = cout - first < 16u ? cout - first : 16u;
            L->gemm->tile_rows(rows, node->kernel_h, row_bytes, seg_k4, weights + (size_t)nb * L->k4 * 64u, tile);
            store(tile, valid_rows, cols, L->scale, fused && bias != NULL ? bias + first : NULL, activation,
                  output + (size_t)m * cout + first, cout);
        }
    }
    return 1;
}

void em_lut_int8_act_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const int8_act_layout *L = (const int8_act_layout *)node->packed;
    const int8_t *weights = (const int8_t *)node->packed + L->weights_offset;
    const int32_t *offsets = (const int32_t *)(const void *)((const unsigned char *)node->packed + L->offsets_offset);
    const em_micro *micro = node->kernel->micro;
    const em_lut_int8_micro *i8 = em_lut_int8_micro_for(micro->kernels);
    const em_int8_gemm_micro *gemm = L->gemm;
    const em_int8_store_fn store = gemm->store != NULL ? gemm->store : em_int8_store_generic;
    const int dense = node->op == EM_OP_LUT_DENSE;
    const uint32_t cout = node->out.c, pixels = dense ? 1u : node->out.h * node->out.w;
    const size_t lda = (size_t)L->k4 * 4u, in_numel = (size_t)L->in_h * L->in_w * L->in_c;
    /* bias and ReLU/ReLU6 in the tile set's own store (one pass over the output); tiles without a store
     * (generic C, NEON) and any other activation: the plain f32(acc) · k store, then the separate pass
     * em_opt_bias_activate (vectorised on aarch64) */
    const int fused = gemm->store != NULL && (node->activation == EM_ACT_NONE || node->activation == EM_ACT_RELU ||
                                              node->activation == EM_ACT_RELU6);
    const float *bias = em_tensor_f32(node->bias);
    const float scale = L->scale;
    int8_t *qx = (int8_t *)(void *)env->scratch;
    int8_t *band = (int8_t *)(void *)((unsigned char *)env->scratch + L->band_offset);
    int32_t *tile = (int32_t *)(void *)((unsigned char *)env->scratch + L->tile_offset);
    uint32_t m0, i, nb, pixels_done = 0, bits = 0;
    uint64_t t0 = 0, t1 = 0;

    if (env->profile) t0 = em_platform_now_ns();
    /* a NaN or Inf input: no int8 image, every output NaN (checked by the set's absmax pass first, or by the
     * tile set's one-pass quantize after it) */
    if (gemm->quantize == NULL && !em_lut_int8_finite(i8->absmax(input, in_numel))) {
        em_lut_int8_fill_nan(output, node->out.numel);
        return;
    }
    if (L->implicit) {
        if (!run_implicit(node, L, i8, input, qx, band, weights, store, fused, bias, output, tile)) {
            em_lut_int8_fill_nan(output, node->out.numel);
            return;
        }
        if (!fused) em_opt_bias_activate(output, pixels, cout, bias, node->activation);
        if (env->profile) env->profile->accumulate_ns += em_platform_now_ns() - t0;
        return;
    }
    quantize(i8, gemm, input, in_numel, em_int8_act_input_inverse(node), qx, &bits);
    if (bits >= EM_INT8_NONFINITE_BITS) {
        em_lut_int8_fill_nan(output, node->out.numel);
        return;
    }
    if (env->profile) t1 = em_platform_now_ns();
    if (L->direct && fused && gemm->gemm_rows != NULL) { /* rows of qx, 4 per call (a short last group
                                                          * repeats its first row: rows the store leaves out) */
        for (m0 = 0; m0 < pixels; m0 += 4u) {
            const uint32_t valid_rows = pixels - m0 < 4u ? pixels - m0 : 4u;
            const int8_t *rows[4];
            for (i = 0; i < 4u; ++i) rows[i] = qx + (size_t)(m0 + (i < valid_rows ? i : 0u)) * lda;
            gemm->gemm_rows(rows, 1, 0, L->k4, weights, offsets, cout, scale, bias, node->activation,
                            output + (size_t)m0 * cout, valid_rows);
        }
        pixels_done = pixels;
    }
    for (m0 = pixels_done; m0 < pixels; m0 += BAND) {
        const uint32_t rows = pixels - m0 < BAND ? pixels - m0 : BAND;
        const uint32_t rows4 = (rows + 3u) & ~3u;
        /* rows [0, staged) of the band come from the band buffer; a direct layer's full groups of 4 rows
         * are read from qx in place */
        const uint32_t staged = L->direct ? rows & ~3u : 0u;
        if (L->direct) {
            if (staged < rows) {
                memcpy(band + (size_t)staged * lda, qx + (size_t)(m0 + staged) * lda, (size_t)(rows - staged) * lda);
                memset(band + (size_t)rows * lda, 0, (size_t)(rows4 - rows) * lda);
            }
        } else {
            if (dense) {
                memcpy(band, qx, L->in_c);
                memset(band + L->in_c, 0, lda - L->in_c);
            } else {
                for (i = 0; i < rows; ++i) im2col_row(node, L, qx, m0 + i, band + (size_t)i * lda);
            }
            memset(band + (size_t)rows * lda, 0, (size_t)(rows4 - rows) * lda);
        }
        for (i = 0; i < rows; i += 4u) {
            const uint32_t valid_rows = rows - i < 4u ? rows - i : 4u;
            const int8_t *a = i < staged ? qx + (size_t)(m0 + i) * lda : band + (size_t)i * lda;
            for (nb = 0; nb < L->n16; ++nb) {
                const uint32_t first = nb * 16u, cols = cout - first < 16u ? cout - first : 16u;
                gemm->tile(a, lda, weights + (size_t)nb * L->k4 * 64u, L->k4, tile);
                store(tile, valid_rows, cols, scale, fused && bias != NULL ? bias + first : NULL,
                      fused ? node->activation : EM_ACT_NONE, output + (size_t)(m0 + i) * cout + first, cout);
            }
        }
    }
    if (!fused) em_opt_bias_activate(output, pixels, cout, bias, node->activation);
    if (env->profile) {
        env->profile->table_ns += t1 - t0;
        env->profile->accumulate_ns += em_platform_now_ns() - t1;
    }
}

/* The reference's arithmetic per value (ref/lut_int8_act_ref.c): f32(acc) · k, then + bias, then the
 * activation as em_opt_bias_activate writes it (x ≤ 0 → +0). */
void em_int8_store_generic(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                           uint32_t activation, float *out, size_t ldo)
{
    uint32_t r, n;
    for (r = 0; r < rows; ++r) {
        float *y = out + (size_t)r * ldo;
        for (n = 0; n < cols; ++n) {
            float v = (float)c[r * 16u + n] * scale;
            if (bias != NULL) v += bias[n];
            if (activation == EM_ACT_RELU) v = v <= 0.0f ? 0.0f : v;
            else if (activation == EM_ACT_RELU6) v = v <= 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
            y[n] = v;
        }
    }
}

/* ---- tiles: generic C, and the choice per set ---- */

static void tile_generic(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    size_t i, q, n, e;
    for (i = 0; i < 64u; ++i) c[i] = 0;
    for (q = 0; q < k4; ++q)
        for (i = 0; i < 4u; ++i) {
            const int8_t *x = a + i * lda + 4u * q;
            for (n = 0; n < 16u; ++n) {
                const int8_t *w = b + q * 64u + n * 4u;
                int32_t sum = 0;
                for (e = 0; e < 4u; ++e) sum += (int32_t)x[e] * w[e];
                c[i * 16u + n] += sum;
            }
        }
}

void em_int8_tile_rows_generic(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                               const int8_t *b, int32_t *c)
{
    size_t i, s, q, n, e;
    for (i = 0; i < 64u; ++i) c[i] = 0;
    for (s = 0; s < segments; ++s)
        for (q = 0; q < seg_k4; ++q)
            for (i = 0; i < 4u; ++i) {
                const int8_t *x = rows[i] + s * seg_stride + 4u * q;
                for (n = 0; n < 16u; ++n) {
                    const int8_t *w = b + (s * seg_k4 + q) * 64u + n * 4u;
                    int32_t sum = 0;
                    for (e = 0; e < 4u; ++e) sum += (int32_t)x[e] * w[e];
                    c[i * 16u + n] += sum;
                }
            }
}

void em_int8_column_offsets(const int8_t *b, size_t k4, size_t n16, int32_t *offsets)
{
    size_t nb, q, n, e;
    for (nb = 0; nb < n16; ++nb)
        for (n = 0; n < 16u; ++n) {
            int32_t sum = 0;
            for (q = 0; q < k4; ++q)
                for (e = 0; e < 4u; ++e) sum += b[((nb * k4 + q) * 16u + n) * 4u + e];
            offsets[nb * 16u + n] = 128 * sum;
        }
}

const em_int8_gemm_micro em_int8_gemm_generic = {"generic", tile_generic, NULL, NULL, NULL, NULL};

const em_int8_gemm_micro *em_int8_gemm_micro_for(uint32_t kernels, uint32_t x86_vnni_sets)
{
#if defined(EM_HAVE_X86_AVX512_VNNI)
    if (kernels == EM_KERNELS_AVX512 && (x86_vnni_sets >> EM_KERNELS_AVX512 & 1u)) return &em_int8_gemm_avx512_vnni;
#endif
#if defined(EM_HAVE_X86_AVX_VNNI)
    if (kernels == EM_KERNELS_AVX2 && (x86_vnni_sets >> EM_KERNELS_AVX2 & 1u)) return &em_int8_gemm_avx_vnni;
#endif
#if defined(EM_HAVE_X86_SIMD)
    if (kernels == EM_KERNELS_AVX2 || kernels == EM_KERNELS_AVX512) return &em_int8_gemm_avx2;
#endif
#if defined(EM_HAVE_NEON)
    if (kernels == EM_KERNELS_NEON) {
#if defined(EM_HAVE_ARM_DOTPROD)
        if (em_cpu_has_arm_dotprod()) return &em_int8_gemm_sdot;
#endif
        return &em_int8_gemm_neon;
    }
#endif
    (void)kernels;
    (void)x86_vnni_sets;
    return &em_int8_gemm_generic;
}

size_t em_int8_gemm_micro_list(const em_int8_gemm_micro **out, size_t max)
{
    size_t n = 0;
#define EM_ADD_TILES(t) do { if (n < max) out[n] = (t); ++n; } while (0)
    EM_ADD_TILES(&em_int8_gemm_generic);
#if defined(EM_HAVE_X86_SIMD)
    if (em_cpu_supports(EM_KERNELS_AVX2)) EM_ADD_TILES(&em_int8_gemm_avx2);
#endif
#if defined(EM_HAVE_X86_AVX512_VNNI)
    if (em_cpu_has_x86_vnni(EM_KERNELS_AVX512)) EM_ADD_TILES(&em_int8_gemm_avx512_vnni);
#endif
#if defined(EM_HAVE_X86_AVX_VNNI)
    if (em_cpu_has_x86_vnni(EM_KERNELS_AVX2)) EM_ADD_TILES(&em_int8_gemm_avx_vnni);
#endif
#if defined(EM_HAVE_NEON)
    EM_ADD_TILES(&em_int8_gemm_neon);
#endif
#if defined(EM_HAVE_ARM_DOTPROD)
    if (em_cpu_has_arm_dotprod()) EM_ADD_TILES(&em_int8_gemm_sdot);
#endif
#undef EM_ADD_TILES
    return n;
}
