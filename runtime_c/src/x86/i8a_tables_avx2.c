/* The int8-activation table micro-kernels (opt/em_i8a_tables.h) of the avx2 set: LUT_DENSE table rows with
 * int8 dot products (em_i8a_build_row_avx2, which the avx512 set calls too); the planar build, the
 * accumulation and the gather are the generic C's (on x86 em_select.c gives LUT_CONV2D the decoded int8 GEMM,
 * so only LUT_DENSE runs the table form). Built with -mavx2 and without FMA contraction. */
#include <immintrin.h>
#include <string.h>

#include "../opt/em_i8a_tables.h"

/* A LUT_DENSE table row (em_i8a_tables.h build_row), 8 codewords a vector: per depth group q, the two 16-byte
 * groups of 4 codewords × 4 values side by side, multiplied by the 4 input values broadcast, with the
 * signed × signed trick of AVX2 int8 dot products: vpmaddubsw of |x| (unsigned) by cb with x's sign
 * (vpsignb), then vpmaddwd by 1 to add the pairs. Exact: |x|, |cb| ≤ 127 (both are clamped there), so a pair
 * is at most 2 · 127² = 32 258 < 2^15 (no saturation), and int32 sums are exact in any order: the generic C's
 * values. Why: fc1 of the README pair (50 rows of 32 codewords × 32 values) spent 37 µs of the int8 file's
 * 0.127 ms in the generic loops. AVX2 (VEX) instructions, so the avx2 set runs it too and the avx512 set
 * calls it (vpmaddubsw on ZMM would need AVX-512BW, which that set does not require). */
void em_i8a_build_row_avx2(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table)
{
    const __m256i ones = _mm256_set1_epi16(1);
    size_t c, q;
    for (c = 0; c < c4; c += 8u) {
        const int8_t *groups = cb + c / 4u * k4 * 16u; /* codewords c..c+3 and c+4..c+7: groups c/4 and c/4 + 1 */
        __m256i acc = _mm256_setzero_si256();
        for (q = 0; q < k4; ++q) {
            int32_t xq;
            __m256i xs, w;
            memcpy(&xq, x + 4u * q, sizeof xq);
            xs = _mm256_set1_epi32(xq);
            w = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(groups + q * 16u))),
                _mm_loadu_si128((const __m128i *)(const void *)(groups + (k4 + q) * 16u)), 1);
            acc = _mm256_add_epi32(
                acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(xs), _mm256_sign_epi8(w, xs)), ones));
        }
        _mm256_storeu_si256((__m256i *)(void *)(table + c), acc);
    }
}

static void build_planar(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks, int32_t *table,
                         size_t ldt)
{
    em_i8a_tables_generic.build_planar(cb, x, k4, c4, blocks, table, ldt);
}

static void accumulate_planar(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                              size_t vectors, float scale, const float *bias, uint32_t activation, float *out)
{
    em_i8a_tables_generic.accumulate_planar(table, offset, count, start, vectors, scale, bias, activation, out);
}

static void gather(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n, float scale,
                   const float *bias, uint32_t activation, float *y)
{
    em_i8a_tables_generic.gather(table, ldt, segments, idx, n, scale, bias, activation, y);
}

const em_i8a_tables_micro em_i8a_tables_avx2 = {"avx2", build_planar, em_i8a_build_row_avx2, accumulate_planar, gather};
