/* int8 tiles with AVX2 (em_int8_gemm.h), for the avx2 and avx512 sets on CPUs without VNNI (with it:
 * int8_gemm_avx512vnni.c, int8_gemm_avxvnni.c, which also use this file's store): the 16 bytes of 4 channels × 4
 * depths are sign-extended to 16 int16 (vpmovsxbw), the row's 4-byte patch broadcast likewise, and
 * vpmaddwd adds adjacent products into int32 pairs (channel n: depths 0+1, 2+3); the pairs are joined at
 * the end. Exact (|product| ≤ 127²). One row at a time: 4 accumulators. */
#include <immintrin.h>
#include <string.h>

#include "../opt/em_int8_gemm.h"

static void tile_avx2(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    size_t i, q, g, n;
    for (i = 0; i < 4; ++i) {
        const int8_t *row = a + i * lda;
        const int8_t *bq = b;
        __m256i acc[4];
        int32_t pairs[32];
        for (g = 0; g < 4; ++g) acc[g] = _mm256_setzero_si256();
        for (q = 0; q < k4; ++q, bq += 64) {
            int32_t v;
            __m256i x;
            memcpy(&v, row + 4 * q, sizeof v);
            x = _mm256_cvtepi8_epi16(_mm_set1_epi32(v));
            for (g = 0; g < 4; ++g) {
                const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(bq + 16 * g)));
                acc[g] = _mm256_add_epi32(acc[g], _mm256_madd_epi16(w, x));
            }
        }
        for (g = 0; g < 4; ++g) _mm256_storeu_si256((__m256i *)(void *)(pairs + 8 * g), acc[g]);
        for (n = 0; n < 16; ++n) c[i * 16 + n] = pairs[2 * n] + pairs[2 * n + 1];
    }
}

/* em_int8_store_fn with two ymm per row (the avx2 and avx_vnni tiles): cvtdq2ps, · scale, + bias, max/min
 * (max(±0, +0) = +0 as the scalar x ≤ 0 → +0); columns past `cols` masked (vmaskmovps). No FMA (C99 mode,
 * no contraction). */
void em_int8_store_avx2(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                        uint32_t activation, float *out, size_t ldo)
{
    const __m256 k = _mm256_set1_ps(scale), zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask[2];
    __m256 b[2];
    uint32_t r, h;
    for (h = 0; h < 2; ++h) {
        mask[h] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cols - 8 * (int)h), lane);
        b[h] = bias != NULL ? _mm256_maskload_ps(bias + 8 * h, mask[h]) : zero;
    }
    for (r = 0; r < rows; ++r)
        for (h = 0; h < 2; ++h) {
            __m256 v = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(const void *)(c + 16 * r + 8 * h)));
            v = _mm256_mul_ps(v, k);
            if (bias != NULL) v = _mm256_add_ps(v, b[h]);
            if (activation == EM_ACT_RELU) v = _mm256_max_ps(v, zero);
            else if (activation == EM_ACT_RELU6) v = _mm256_min_ps(_mm256_max_ps(v, zero), six);
            _mm256_maskstore_ps(out + r * ldo + 8 * h, mask[h], v);
        }
}

const em_int8_gemm_micro em_int8_gemm_avx2 = {"avx2", tile_avx2, em_int8_store_avx2, NULL, NULL, NULL};
