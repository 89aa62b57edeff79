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

static void accumulate_avx2(const int8_t *table, const uint32_t *offsets, const uint8_t *idx, size_t terms,
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

/* em_lut_int8_absmax: the integer maximum of the bit patterns with the sign bit cleared (below 2^31, so
 * the signed vpmaxsd orders them as unsigned); NaN and Inf come out as the scalar's */
static float absmax_avx2(const float *src, size_t n)
{
    const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i m8 = _mm256_setzero_si256();
    uint32_t lanes[8], m = 0;
    float result;
    size_t i = 0, k;
    for (; i + 8u <= n; i += 8u)
        m8 = _mm256_max_epi32(m8, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(src + i)),
                                                   magnitude));
    _mm256_storeu_si256((__m256i *)(void *)lanes, m8);
    for (k = 0; k < 8u; ++k) m = lanes[k] > m ? lanes[k] : m;
    memcpy(&result, &m, sizeof result);
    if (i < n) {
        const float tail = em_lut_int8_absmax(src + i, n - i);
        uint32_t t;
        memcpy(&t, &tail, sizeof t);
        if (t > m) result = tail;
    }
    return result;
}

/* 32 entries per step: the same float32 product and magic-number rounding as em_lut_int8_quantize, then
 * int32 -> int8 with saturating packs (lane-interleaved, fixed by one permute) and a floor at -127. */
static void quantize_avx2(const float *src, size_t n, float inverse, int8_t *dst)
{
    const __m256 inv = _mm256_set1_ps(inverse), magic = _mm256_set1_ps(12582912.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), floor = _mm256_set1_epi8(-127);
    size_t i = 0, k;
    for (; i + 32u <= n; i += 32u) {
        __m256i q[4], packed;
        for (k = 0; k < 4; ++k) {
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + i + 8u * k), inv);
            q[k] = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(v, magic), magic));
        }
        packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        packed = _mm256_max_epi8(_mm256_permutevar8x32_epi32(packed, order), floor);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), packed);
    }
    for (; i < n; ++i) dst[i] = (int8_t)em_lut_int8_quantize(src[i], inverse);
}

const em_lut_int8_micro em_lut_int8_avx2 = {"avx2", accumulate_avx2, absmax_avx2, quantize_avx2};
