/* AVX2 + FMA micro-kernels (256-bit, 8 floats). This file alone is compiled with -mavx2 -mfma (CMake
 * sets it per file, never -march=native): its functions run only after em_cpu_supports() saw AVX2,
 * FMA and the OS's YMM state. */
#include <immintrin.h>

#include "../em_internal.h"
#include "../opt/em_micro.h"

typedef __m256 emv;
#define EMV_W 8
#define EMV_GEMM_MR 6 /* 6 × 2 accumulators + 2 B vectors + 1 broadcast fit the 16 YMM registers */
#define EMV_FN(name) name##_avx2

/* lanes [0, n) of a mask: 8 all-ones words followed by 8 zeros, read from offset 8 − n */
static const int32_t emv_mask_words[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline __m256i emv_mask(size_t n)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)(emv_mask_words + 8 - n));
}

#define emv_zero() _mm256_setzero_ps()
#define emv_set1(x) _mm256_set1_ps(x)
#define emv_loadu(p) _mm256_loadu_ps(p)
#define emv_storeu(p, v) _mm256_storeu_ps((p), (v))
#define emv_add(a, b) _mm256_add_ps((a), (b))
/* ReLU as em_activate: lanes <= 0 cleared (maxps would turn NaN into 0); minps(6, v) returns v when
 * either is NaN, so ReLU6 keeps NaN too */
static inline __m256 emv_relu(__m256 v)
{
    return _mm256_andnot_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LE_OQ), v);
}
static inline __m256 emv_relu6(__m256 v)
{
    return _mm256_min_ps(_mm256_set1_ps(6.0f), emv_relu(v));
}
#define emv_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define emv_load_part(p, n) _mm256_maskload_ps((p), emv_mask(n))
#define emv_store_part(p, v, n) _mm256_maskstore_ps((p), emv_mask(n), (v))

static inline float emv_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}

static inline __m256 emv_gather16(const float *table, const uint16_t *ix)
{
    const __m256i lanes = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)ix));
    return _mm256_i32gather_ps(table, lanes, 4);
}

/* lane i of the result = sum of v[i] (eight horizontal sums in six hadds and two cross-lane moves) */
static inline __m256 emv_reduce_rows(const __m256 *v)
{
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

#define EMV_TB 8
static inline void emv_transpose_block(const float *src, size_t ss, float *dst, size_t ds)
{
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss), r2 = _mm256_loadu_ps(src + 2 * ss),
                 r3 = _mm256_loadu_ps(src + 3 * ss), r4 = _mm256_loadu_ps(src + 4 * ss),
                 r5 = _mm256_loadu_ps(src + 5 * ss), r6 = _mm256_loadu_ps(src + 6 * ss),
                 r7 = _mm256_loadu_ps(src + 7 * ss);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
                 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(s3, s7, 0x31));
}

#include "../opt/micro_template.h"

const em_micro em_micro_avx2 = {
    EM_KERNELS_AVX2, "avx2", EMV_W,
    gemm_avx2, conv_gemm_avx2, gemv_t_avx2, gemv_n_avx2, lut_accumulate_planar_avx2, lut_accumulate_gather_avx2,
    transpose_avx2, depthwise_rows_avx2,
};
