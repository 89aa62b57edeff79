/* Micro-kernels in plain C99: the fallback on every target and the baseline the SIMD tables are
 * measured against. Loops are ordered so the innermost one runs over contiguous memory with
 * independent iterations, which compilers auto-vectorise at -O2/-O3 for the target's base ISA. */
#include "../em_internal.h"
#include "em_micro.h"
#include "../ref/em_ref_kernels.h"

static void gemm_generic(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                         float *c, size_t ldc)
{
    size_t i, j, p;
    for (i = 0; i < m; ++i) {
        float *crow = c + i * ldc;
        for (j = 0; j < n; ++j) crow[j] = 0.0f;
        for (p = 0; p < k; ++p) {
            const float aip = a[i * lda + p];
            const float *brow = b + p * ldb;
            for (j = 0; j < n; ++j) crow[j] += aip * brow[j];
        }
    }
}

static void conv_gemm_generic(size_t m, size_t n, size_t kblocks, size_t kin, const float *a, size_t lda,
                              size_t a_block, const float *b, size_t ldb, float *c, size_t ldc, const float *bias,
                              uint32_t activation)
{
    size_t i, j, kb, p;
    for (i = 0; i < m; ++i) {
        float *crow = c + i * ldc;
        for (j = 0; j < n; ++j) crow[j] = bias != NULL ? bias[j] : 0.0f;
        for (kb = 0; kb < kblocks; ++kb) {
            const float *arow = a + i * lda + kb * a_block;
            for (p = 0; p < kin; ++p) {
                const float aip = arow[p];
                const float *brow = b + (kb * kin + p) * ldb;
                for (j = 0; j < n; ++j) crow[j] += aip * brow[j];
            }
        }
        if (activation == EM_ACT_RELU)
            for (j = 0; j < n; ++j) crow[j] = crow[j] <= 0.0f ? 0.0f : crow[j]; /* NaN stays NaN */
        else if (activation == EM_ACT_RELU6)
            for (j = 0; j < n; ++j) crow[j] = crow[j] <= 0.0f ? 0.0f : (crow[j] > 6.0f ? 6.0f : crow[j]);
    }
}

static void gemv_t_generic(size_t k, size_t n, const float *x, const float *b, size_t ldb, float *y)
{
    size_t i, j;
    for (j = 0; j < n; ++j) y[j] = 0.0f;
    for (i = 0; i < k; ++i) {
        const float xi = x[i];
        const float *brow = b + i * ldb;
        for (j = 0; j < n; ++j) y[j] += xi * brow[j];
    }
}

static void gemv_n_generic(size_t m, size_t k, const float *a, size_t lda, const float *x, float *y)
{
    size_t i, j;
    for (i = 0; i < m; ++i) {
        const float *row = a + i * lda;
        float acc = 0.0f;
        for (j = 0; j < k; ++j) acc += row[j] * x[j];
        y[i] = acc;
    }
}

static void lut_accumulate_planar_generic(const float *table, const uint32_t *offset, size_t count, size_t span,
                                          float *out, int accumulate, const float *bias, uint32_t activation)
{
    size_t t, q;
    if (!accumulate)
        for (q = 0; q < span; ++q) out[q] = 0.0f;
    for (t = 0; t < count; ++t) {
        const float *src = table + offset[t];
        for (q = 0; q < span; ++q) out[q] += src[q];
    }
    if (bias != NULL)
        for (q = 0; q < span; ++q) out[q] += *bias;
    if (activation != EM_ACT_NONE)
        for (q = 0; q < span; ++q) out[q] = em_activate(out[q], activation);
}

static void lut_accumulate_gather_generic(const float *table, uint32_t codewords, size_t segments,
                                          const uint16_t *idx, size_t n, float *y)
{
    size_t s, o;
    for (o = 0; o < n; ++o) y[o] = 0.0f;
    for (s = 0; s < segments; ++s) {
        const float *row = table + s * codewords;
        const uint16_t *is = idx + s * n;
        for (o = 0; o < n; ++o) y[o] += row[is[o]];
    }
}

static void transpose_generic(const float *src, size_t src_stride, size_t rows, size_t cols, float *dst,
                              size_t dst_stride)
{
    size_t r, c, r0, c0;
    /* 8×8 blocks keep both sides within a few cache lines */
    for (r0 = 0; r0 < rows; r0 += 8)
        for (c0 = 0; c0 < cols; c0 += 8)
            for (r = r0; r < rows && r < r0 + 8; ++r)
                for (c = c0; c < cols && c < c0 + 8; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
}

/* One output row: rows[ky] the input row under kernel row ky (NULL where padding) */
static void depthwise_row_generic(const float *const *rows, const em_depthwise_shape *s, const float *w,
                                  const float *bias, float *out)
{
    const size_t kh = s->kh, kw = s->kw, in_w = s->in_w, stride = s->stride_w, pad_left = s->pad_left;
    const size_t channels = s->channels;
    size_t ox, ky, kx, c;
    for (ox = 0; ox < s->out_w; ++ox) {
        float *acc = out + ox * channels;
        const size_t x0 = ox * stride; /* padded column of tap 0 */
        for (c = 0; c < channels; ++c) acc[c] = 0.0f;
        for (ky = 0; ky < kh; ++ky) {
            if (rows[ky] == NULL) continue;
            for (kx = 0; kx < kw; ++kx) {
                const float *x, *wt;
                if (x0 + kx < pad_left || x0 + kx - pad_left >= in_w) continue;
                x = rows[ky] + (x0 + kx - pad_left) * channels;
                wt = w + (ky * kw + kx) * channels;
                for (c = 0; c < channels; ++c) acc[c] += x[c] * wt[c];
            }
        }
        for (c = 0; c < channels; ++c) {
            float v = bias != NULL ? acc[c] + bias[c] : acc[c];
            if (s->activation == EM_ACT_RELU) v = v <= 0.0f ? 0.0f : v;
            else if (s->activation == EM_ACT_RELU6) v = v <= 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
            acc[c] = v;
        }
    }
}

static void depthwise_rows_generic(const em_depthwise_shape *s, const float *input, const float *w, const float *bias,
                                   size_t row_begin, size_t row_end, float *out)
{
    const float *rows[EM_MAX_KERNEL];
    size_t oy;
    for (oy = row_begin; oy < row_end; ++oy) {
        em_depthwise_input_rows(s, input, oy, rows);
        depthwise_row_generic(rows, s, w, bias, out + oy * s->out_w * s->channels);
    }
}

const em_micro em_micro_generic = {
    EM_KERNELS_GENERIC, "generic", 1u,
    gemm_generic, conv_gemm_generic, gemv_t_generic, gemv_n_generic, lut_accumulate_planar_generic,
    lut_accumulate_gather_generic, transpose_generic, depthwise_rows_generic,
};
