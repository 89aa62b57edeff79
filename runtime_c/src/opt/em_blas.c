/* gemm / gemv through a linked BLAS (OpenBLAS), when the build has one (EM_BLAS, CMake). Only the
 * matrix products come from BLAS; the LUT loops stay the runtime's own (from the generic table: BLAS
 * kernels are chosen only for ops whose time is in a plain matrix product, see em_kernel_choose in em_select.c).
 *
 * OpenBLAS is process-wide and may thread: the runtime never changes its thread count on its own
 * (benchmarks and tests call em_runtime_set_blas_threads(1) or set OPENBLAS_NUM_THREADS=1). */
#include "../em_internal.h"
#include "em_micro.h"

#if defined(EM_HAVE_OPENBLAS)
#include <cblas.h>

static void gemm_blas(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                      size_t ldc)
{
    if (k == 0) { /* BLAS with k = 0 would leave C untouched (beta = 0 only scales) */
        size_t i, j;
        for (i = 0; i < m; ++i)
            for (j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f, a,
                (blasint)lda, b, (blasint)ldb, 0.0f, c, (blasint)ldc);
}

static void conv_gemm_blas(size_t m, size_t n, size_t kblocks, size_t kin, const float *a, size_t lda, size_t a_block,
                           const float *b, size_t ldb, float *c, size_t ldc, const float *bias, uint32_t activation)
{
    size_t kb, i, j;
    for (kb = 0; kb < kblocks; ++kb)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)kin, 1.0f,
                    a + kb * a_block, (blasint)lda, b + kb * kin * ldb, (blasint)ldb, kb == 0 ? 0.0f : 1.0f, c,
                    (blasint)ldc);
    if (kblocks == 0 || kin == 0)
        for (i = 0; i < m; ++i)
            for (j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
    for (i = 0; i < m; ++i) {
        float *crow = c + i * ldc;
        for (j = 0; j < n; ++j) {
            float v = crow[j] + (bias != NULL ? bias[j] : 0.0f);
            if (activation == EM_ACT_RELU) v = v <= 0.0f ? 0.0f : v; /* NaN stays NaN */
            else if (activation == EM_ACT_RELU6) v = v <= 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
            crow[j] = v;
        }
    }
}

static void gemv_t_blas(size_t k, size_t n, const float *x, const float *b, size_t ldb, float *y)
{
    /* y = Bᵀ x with B [k × n] row-major */
    cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)k, (blasint)n, 1.0f, b, (blasint)ldb, x, 1, 0.0f, y, 1);
}

static void gemv_n_blas(size_t m, size_t k, const float *a, size_t lda, const float *x, float *y)
{
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)m, (blasint)k, 1.0f, a, (blasint)lda, x, 1, 0.0f, y, 1);
}

static void lut_accumulate_planar_blas(const float *table, const uint32_t *offset, size_t count, size_t span,
                                       float *out, int accumulate, const float *bias, uint32_t activation)
{
    em_micro_generic.lut_accumulate_planar(table, offset, count, span, out, accumulate, bias, activation);
}

static void lut_accumulate_gather_blas(const float *table, uint32_t codewords, size_t segments,
                                       const uint16_t *idx, size_t n, float *y)
{
    em_micro_generic.lut_accumulate_gather(table, codewords, segments, idx, n, y);
}

static void transpose_blas(const float *src, size_t src_stride, size_t rows, size_t cols, float *dst,
                           size_t dst_stride)
{
    em_micro_generic.transpose(src, src_stride, rows, cols, dst, dst_stride);
}

static void depthwise_rows_blas(const em_depthwise_shape *s, const float *input, const float *w, const float *bias,
                                size_t row_begin, size_t row_end, float *out)
{
    em_micro_generic.depthwise_rows(s, input, w, bias, row_begin, row_end, out);
}

const em_micro em_micro_blas = {
    EM_KERNELS_GENERIC, "blas", 1u,
    gemm_blas, conv_gemm_blas, gemv_t_blas, gemv_n_blas, lut_accumulate_planar_blas, lut_accumulate_gather_blas,
    transpose_blas, depthwise_rows_blas,
};

void em_blas_set_threads(int threads)
{
    openblas_set_num_threads(threads);
}
#else
void em_blas_set_threads(int threads)
{
    (void)threads;
}
#endif
