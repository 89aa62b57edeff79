/* int8 tiles with AVX-VNNI (em_int8_gemm.h): the 256-bit VEX form of vpdpbusd (Alder Lake, Sapphire
 * Rapids, Zen 5), for the avx2 set on CPUs with avx_vnni. Two ymm per row hold the tile's 16 channels
 * (each 32 bytes: 8 channels × 4 depths); the signed-activation correction is int8_gemm_avx512vnni.c's:
 * u = a xor 0x80 as the unsigned operand, minus 128·Σw accumulated by one more vpdpbusd per half. */
#include <immintrin.h>
#include <string.h>

#include "../opt/em_int8_gemm.h"

static void tile_avx_vnni(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    const __m256i bias = _mm256_set1_epi32((int)0x80808080u);
    __m256i acc[4][2], offset[2];
    size_t i, q;
    for (i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    offset[0] = offset[1] = _mm256_setzero_si256();
    for (q = 0; q < k4; ++q) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64 * q));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64 * q + 32));
        offset[0] = _mm256_dpbusd_avx_epi32(offset[0], bias, w0);
        offset[1] = _mm256_dpbusd_avx_epi32(offset[1], bias, w1);
        for (i = 0; i < 4; ++i) {
            int32_t v;
            __m256i x;
            memcpy(&v, a + i * lda + 4 * q, 4);
            x = _mm256_xor_si256(_mm256_set1_epi32(v), bias);
            acc[i][0] = _mm256_dpbusd_avx_epi32(acc[i][0], x, w0);
            acc[i][1] = _mm256_dpbusd_avx_epi32(acc[i][1], x, w1);
        }
    }
    for (i = 0; i < 4; ++i) {
        _mm256_storeu_si256((__m256i *)(void *)(c + 16 * i), _mm256_sub_epi32(acc[i][0], offset[0]));
        _mm256_storeu_si256((__m256i *)(void *)(c + 16 * i + 8), _mm256_sub_epi32(acc[i][1], offset[1]));
    }
}

const em_int8_gemm_micro em_int8_gemm_avx_vnni = {"avx_vnni", tile_avx_vnni, em_int8_store_avx2};
