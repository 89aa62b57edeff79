/* int8-table accumulation with pshufb (em_lut_int8_kernels.h): compiled with -mavx2 (SSSE3's
 * _mm_shuffle_epi8 for the lookup, AVX2's vpmovsxbw to widen 16 int8 terms to int16 lanes), used by the
 * avx2 and avx512 kernel sets. Up to 4 groups of 16 output channels per pass share each table-row load;
 * int16 sums are flushed into the int32 output every EM_LUT_INT8_FLUSH_TERMS terms (256 · 127 < 2^15). */
#include <immintrin.h>

#include "../em_lut_int8.h"
#include "../opt/em_lut_int8_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define EM_LUT_INT8_INLINE static inline __attribute__((always_inline))
#else
#define EM_LUT_INT8_INLINE static __forceinline
#endif

EM_LUT_INT8_INLINE void pass(const int8_t *table, const uint32_t *offsets,
                            const uint8_t *idx, size_t terms, size_t groups, size_t g0, const size_t ng,
                            int32_t *acc)
{
    __m256i sums[4];
    size_t t = 0, j;
    for (j = 0; j < ng; ++j) {
        _mm256_storeu_si256((__m256i *)(void *)(acc + (g0 + j) * 16u), _mm256_setzero_si256());
        _mm256_storeu_si256((__m256i *)(void *)(acc + (g0 + j) * 16u + 8u), _mm256_setzero_si256());
    }
    while (t < terms) {
        const size_t end = terms - t < EM_LUT_INT8_FLUSH_TERMS ? terms : t + EM_LUT_INT8_FLUSH_TERMS;
        for (j = 0; j < ng; ++j) sums[j] = _mm256_setzero_si256();
        for (; t < end; ++t) {
            const __m128i row = _mm_loadu_si128((const __m128i *)(const void *)(table + offsets[t]));
            const uint8_t *ix = idx + (t * groups + g0) * 16u;
            for (j = 0; j < ng; ++j) {
                const __m128i lookup =
                    _mm_shuffle_epi8(row, _mm_loadu_si128((const __m128i *)(const void *)(ix + 16u * j)));
                sums[j] = _mm256_add_epi16(sums[j], _mm256_cvtepi8_epi16(lookup));
            }
        }
        for (j = 0; j < ng; ++j) {
            __m256i *lo = (__m256i *)(void *)(acc + (g0 + j) * 16u), *hi = (__m256i *)(void *)(acc + (g0 + j) * 16u + 8u);
            _mm256_storeu_si256(lo, _mm256_add_epi32(_mm256_loadu_si256(lo),
                                                     _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sums[j]))));
            _mm256_storeu_si256(hi, _mm256_add_epi32(_mm256_loadu_si256(hi),
                                                     _mm256_cvtepi16_epi32(_mm256_extracti128_si256(sums[j], 1))));
        }
    }
}

void em_lut_int8_accumulate_avx2(const int8_t *table, const uint32_t *offsets, const uint8_t *idx, size_t terms,
                                 size_t groups, int32_t *acc)
{
    size_t g0 = 0;
    for (; g0 + 4u <= groups; g0 += 4u) pass(table, offsets, idx, terms, groups, g0, 4u, acc);
    switch (groups - g0) {
    case 3: pass(table, offsets, idx, terms, groups, g0, 3u, acc); break;
    case 2: pass(table, offsets, idx, terms, groups, g0, 2u, acc); break;
    case 1: pass(table, offsets, idx, terms, groups, g0, 1u, acc); break;
    default: break;
    }
}
