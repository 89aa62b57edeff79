/* int8 tiles with AVX-512 VNNI (em_int8_gemm.h), for the avx512 set on CPUs with avx512_vnni (Ice Lake,
 * Sapphire Rapids, Zen 4): one zmm of the packed weights is exactly the tile's 16 channels × 4 depths, and
 * vpdpbusd adds the 4 products of each 4-byte group into that channel's int32 lane.
 *
 * vpdpbusd multiplies an UNSIGNED byte by a signed one, while the tile's activations are signed. So each
 * activation goes in as u = a xor 0x80 = a + 128 (unsigned), and Σ u·w = Σ a·w + 128·Σ w: the second term
 * is the same for the 4 rows and is taken off at the end, accumulated by one more vpdpbusd per depth step
 * with 0x80 bytes as the unsigned operand. Exact: vpdpbusd wraps (no saturation), so every intermediate
 * is the true sum mod 2^32, and the result (|Σ a·w| ≤ 127²·K, bounded by the loader) fits int32. */
#include <immintrin.h>
#include <string.h>

#include "../opt/em_int8_gemm.h"
#include "em_avx512_int8_epilogue.h"

/* acc += vpdpbusd(u, w). GCC 12 copies every accumulator through another register around the intrinsic
 * (two moves per vpdpbusd: the loop ran at twice the instructions); the one-instruction asm keeps the
 * accumulators in place. Other compilers use the intrinsic. */
#if defined(__GNUC__) && !defined(__clang__)
#define EM_DPBUSD(acc, u, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(w))
#else
#define EM_DPBUSD(acc, u, w) ((acc) = _mm512_dpbusd_epi32((acc), (u), (w)))
#endif

/* One depth step q of the 4 rows into acc0..3 (and the u8 offset into `offset` where not precomputed) */
#define EM_VNNI_STEP(acc0, acc1, acc2, acc3, offset, q, b)                                                        \
    do {                                                                                                       \
        const __m512i w_ = _mm512_loadu_si512((const void *)(b));                                             \
        int32_t v0_, v1_, v2_, v3_;                                                                           \
        memcpy(&v0_, a0 + 4 * (q), 4);                                                                        \
        memcpy(&v1_, a1 + 4 * (q), 4);                                                                        \
        memcpy(&v2_, a2 + 4 * (q), 4);                                                                        \
        memcpy(&v3_, a3 + 4 * (q), 4);                                                                        \
        {                                                                                                      \
            const __m512i u0_ = _mm512_xor_si512(_mm512_set1_epi32(v0_), bias);                              \
            const __m512i u1_ = _mm512_xor_si512(_mm512_set1_epi32(v1_), bias);                              \
            const __m512i u2_ = _mm512_xor_si512(_mm512_set1_epi32(v2_), bias);                              \
            const __m512i u3_ = _mm512_xor_si512(_mm512_set1_epi32(v3_), bias);                              \
            if (offsets == NULL) EM_DPBUSD(offset, bias, w_);                                                  \
            EM_DPBUSD(acc0, u0_, w_);                                                                          \
            EM_DPBUSD(acc1, u1_, w_);                                                                          \
            EM_DPBUSD(acc2, u2_, w_);                                                                          \
            EM_DPBUSD(acc3, u3_, w_);                                                                          \
        }                                                                                                      \
    } while (0)

/* The 4 rows' sums over `segments` pieces of seg_k4 depth steps, piece s at a_i + s·seg_stride, into
 * acc[0..3] (em_int8_tile_rows_fn; the plain tile is one piece). Two accumulator sets, even and odd depth
 * steps: vpdpbusd's latency (5 cycles) bound one set of 4 chains to a step per 5 cycles. `offsets`: the 16
 * columns' 128·Σw precomputed (em_int8_column_offsets), else one more vpdpbusd per step. */
static inline void accumulate(const int8_t *a0, const int8_t *a1, const int8_t *a2, const int8_t *a3,
                              size_t segments, size_t seg_stride, size_t seg_k4, const int8_t *b,
                              const int32_t *offsets, __m512i acc[4])
{
    const __m512i bias = _mm512_set1_epi32((int)0x80808080u);
    __m512i e0 = _mm512_setzero_si512(), e1 = e0, e2 = e0, e3 = e0, f0 = e0, f1 = e0, f2 = e0, f3 = e0;
    __m512i offset = e0, offset_odd = e0;
    size_t s, q;
    for (s = 0; s < segments; ++s, a0 += seg_stride, a1 += seg_stride, a2 += seg_stride, a3 += seg_stride) {
        for (q = 0; q + 2 <= seg_k4; q += 2, b += 128) {
            EM_VNNI_STEP(e0, e1, e2, e3, offset, q, b);
            EM_VNNI_STEP(f0, f1, f2, f3, offset_odd, q + 1, b + 64);
        }
        if (q < seg_k4) {
            EM_VNNI_STEP(e0, e1, e2, e3, offset, q, b);
            b += 64;
        }
    }
    if (offsets != NULL) offset = _mm512_loadu_si512((const void *)offsets);
    else offset = _mm512_add_epi32(offset, offset_odd);
    acc[0] = _mm512_sub_epi32(_mm512_add_epi32(e0, f0), offset);
    acc[1] = _mm512_sub_epi32(_mm512_add_epi32(e1, f1), offset);
    acc[2] = _mm512_sub_epi32(_mm512_add_epi32(e2, f2), offset);
    acc[3] = _mm512_sub_epi32(_mm512_add_epi32(e3, f3), offset);
}

static void store_tile(const __m512i acc[4], int32_t *c)
{
    _mm512_storeu_si512((void *)(c + 0), acc[0]);
    _mm512_storeu_si512((void *)(c + 16), acc[1]);
    _mm512_storeu_si512((void *)(c + 32), acc[2]);
    _mm512_storeu_si512((void *)(c + 48), acc[3]);
}

static void tile_avx512_vnni(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    __m512i acc[4];
    accumulate(a, a + lda, a + 2 * lda, a + 3 * lda, 1, 0, k4, b, NULL, acc);
    store_tile(acc, c);
}

static void tile_rows_avx512_vnni(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                  const int8_t *b, int32_t *c)
{
    __m512i acc[4];
    accumulate(rows[0], rows[1], rows[2], rows[3], segments, seg_stride, seg_k4, b, NULL, acc);
    store_tile(acc, c);
}

/* One row of 16 sums as em_int8_store_fn stores it (the shared epilogue, em_avx512_int8_epilogue.h), masked to
 * the valid columns. */
static inline void store_row(__m512i acc, __mmask16 mask, __m512 k, const __m512 *b, uint32_t activation, float *out)
{
    _mm512_mask_storeu_ps(out, mask, em_avx512_int8_epilogue(acc, k, b, activation));
}

static void store_avx512(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                         uint32_t activation, float *out, size_t ldo)
{
    const __mmask16 mask = (__mmask16)((1u << cols) - 1u);
    const __m512 k = _mm512_set1_ps(scale), b = bias != NULL ? _mm512_maskz_loadu_ps(mask, bias) : k;
    uint32_t r;
    for (r = 0; r < rows; ++r)
        store_row(_mm512_loadu_si512((const void *)(c + 16 * r)), mask, k, bias != NULL ? &b : NULL, activation,
                  out + r * ldo);
}

/* em_int8_gemm_rows_fn: the sums of each block of 16 channels go from registers to the store, no int32
 * tile in memory and one call per 4 rows (the small-depth layers of MobileNetV2 spent more in calls and
 * the round trip than in vpdpbusd); the u8 offset comes precomputed (4 vpdpbusd per depth step, not 5) */
static void gemm_rows_avx512_vnni(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                  const int8_t *b, const int32_t *offsets, uint32_t cout, float scale,
                                  const float *bias, uint32_t activation, float *out, uint32_t valid_rows)
{
    const __m512 k = _mm512_set1_ps(scale);
    const size_t block = segments * seg_k4 * 64;
    uint32_t first, r;
    for (first = 0; first < cout; first += 16, b += block) {
        const uint32_t cols = cout - first < 16u ? cout - first : 16u;
        const __mmask16 mask = (__mmask16)((1u << cols) - 1u);
        const __m512 bv = bias != NULL ? _mm512_maskz_loadu_ps(mask, bias + first) : k;
        __m512i acc[4];
        accumulate(rows[0], rows[1], rows[2], rows[3], segments, seg_stride, seg_k4, b, offsets + first, acc);
        for (r = 0; r < valid_rows; ++r)
            store_row(acc[r], mask, k, bias != NULL ? &bv : NULL, activation, out + (size_t)r * cout + first);
    }
}

const em_int8_gemm_micro em_int8_gemm_avx512_vnni = {"avx512_vnni", tile_avx512_vnni, store_avx512,
                                                     tile_rows_avx512_vnni, gemm_rows_avx512_vnni, NULL};
