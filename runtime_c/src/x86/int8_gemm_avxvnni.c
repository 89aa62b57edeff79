/* int8 tiles with AVX-VNNI (em_int8_gemm.h): the 256-bit VEX form of vpdpbusd (Alder Lake, Sapphire
 * Rapids, Zen 5), for the avx2 set on CPUs with avx_vnni. Two ymm per row hold the tile's 16 channels
 * (each 32 bytes: 8 channels × 4 depths); the signed-activation correction is int8_gemm_avx512vnni.c's:
 * u = a xor 0x80 as the unsigned operand, minus 128·Σw accumulated by one more vpdpbusd per half. */
#include <immintrin.h>
#include <string.h>

#include "../opt/em_int8_gemm.h"

/* acc += vpdpbusd(u, w), VEX form; a one-instruction asm under GCC, which otherwise copies (and here even
 * spilled) the accumulators around the intrinsic (int8_gemm_avx512vnni.c) */
#if defined(__GNUC__) && !defined(__clang__)
#define EM_DPBUSD_VEX(acc, u, w) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(w))
#else
#define EM_DPBUSD_VEX(acc, u, w) ((acc) = _mm256_dpbusd_avx_epi32((acc), (u), (w)))
#endif

/* One row's 4-byte patch at depth step q, as the unsigned operand a xor 0x80 in every lane */
static __m256i biased_patch(const int8_t *row, size_t q, __m256i bias)
{
    int32_t v;
    memcpy(&v, row + 4 * q, 4);
    return _mm256_xor_si256(_mm256_set1_epi32(v), bias);
}

static void tile_avx_vnni(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    const __m256i bias = _mm256_set1_epi32((int)0x80808080u);
    const int8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00, off0 = c00, off1 = c00;
    size_t q;
    for (q = 0; q < k4; ++q) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64 * q));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64 * q + 32));
        const __m256i u0 = biased_patch(a0, q, bias), u1 = biased_patch(a1, q, bias);
        const __m256i u2 = biased_patch(a2, q, bias), u3 = biased_patch(a3, q, bias);
        EM_DPBUSD_VEX(off0, bias, w0);
        EM_DPBUSD_VEX(off1, bias, w1);
        EM_DPBUSD_VEX(c00, u0, w0);
        EM_DPBUSD_VEX(c01, u0, w1);
        EM_DPBUSD_VEX(c10, u1, w0);
        EM_DPBUSD_VEX(c11, u1, w1);
        EM_DPBUSD_VEX(c20, u2, w0);
        EM_DPBUSD_VEX(c21, u2, w1);
        EM_DPBUSD_VEX(c30, u3, w0);
        EM_DPBUSD_VEX(c31, u3, w1);
    }
    _mm256_storeu_si256((__m256i *)(void *)(c + 0), _mm256_sub_epi32(c00, off0));
    _mm256_storeu_si256((__m256i *)(void *)(c + 8), _mm256_sub_epi32(c01, off1));
    _mm256_storeu_si256((__m256i *)(void *)(c + 16), _mm256_sub_epi32(c10, off0));
    _mm256_storeu_si256((__m256i *)(void *)(c + 24), _mm256_sub_epi32(c11, off1));
    _mm256_storeu_si256((__m256i *)(void *)(c + 32), _mm256_sub_epi32(c20, off0));
    _mm256_storeu_si256((__m256i *)(void *)(c + 40), _mm256_sub_epi32(c21, off1));
    _mm256_storeu_si256((__m256i *)(void *)(c + 48), _mm256_sub_epi32(c30, off0));
    _mm256_storeu_si256((__m256i *)(void *)(c + 56), _mm256_sub_epi32(c31, off1));
}

const em_int8_gemm_micro em_int8_gemm_avx_vnni = {"avx_vnni", tile_avx_vnni, em_int8_store_avx2, NULL, NULL, NULL};
