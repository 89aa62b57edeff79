/* SSE2 micro-kernels (128-bit, 4 floats): the x86-64 baseline, so no run-time check is needed there
 * (32-bit x86 builds check CPUID). SSE2 has no FMA (multiply, then add) and no masked loads (tails go
 * through a small zero-padded copy). */
#include <emmintrin.h>
#include <string.h>

#include "../em_internal.h"
#include "../opt/em_micro.h"

typedef __m128 emv;
#define EMV_W 4
#define EMV_GEMM_MR 6 /* 6 × 2 accumulators + 2 B vectors + broadcast + product fit 16 XMM registers */
#define EMV_FN(name) name##_sse2

#define emv_zero() _mm_setzero_ps()
#define emv_set1(x) _mm_set1_ps(x)
#define emv_loadu(p) _mm_loadu_ps(p)
#define emv_storeu(p, v) _mm_storeu_ps((p), (v))
#define emv_add(a, b) _mm_add_ps((a), (b))
/* ReLU as em_activate: lanes <= 0 cleared (maxps would turn NaN into 0); minps(6, v) returns v when
 * either is NaN, so ReLU6 keeps NaN too */
static inline __m128 emv_relu(__m128 v)
{
    return _mm_andnot_ps(_mm_cmple_ps(v, _mm_setzero_ps()), v);
}
static inline __m128 emv_relu6(__m128 v)
{
    return _mm_min_ps(_mm_set1_ps(6.0f), emv_relu(v));
}
#define emv_fma(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))

static inline __m128 emv_load_part(const float *p, size_t n)
{
    float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(lanes, p, n * sizeof(float));
    return _mm_loadu_ps(lanes);
}

static inline void emv_store_part(float *p, __m128 v, size_t n)
{
    float lanes[4];
    _mm_storeu_ps(lanes, v);
    memcpy(p, lanes, n * sizeof(float));
}

static inline float emv_hsum(__m128 v)
{
    __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}

static inline __m128 emv_gather16(const float *table, const uint16_t *ix)
{
    return _mm_setr_ps(table[ix[0]], table[ix[1]], table[ix[2]], table[ix[3]]);
}

static inline __m128 emv_reduce_rows(const __m128 *v)
{
    __m128 a = v[0], b = v[1], c = v[2], d = v[3];
    _MM_TRANSPOSE4_PS(a, b, c, d);
    return _mm_add_ps(_mm_add_ps(a, b), _mm_add_ps(c, d));
}

#define EMV_TB 4
static inline void emv_transpose_block(const float *src, size_t ss, float *dst, size_t ds)
{
    __m128 a = _mm_loadu_ps(src), b = _mm_loadu_ps(src + ss), c = _mm_loadu_ps(src + 2 * ss),
           d = _mm_loadu_ps(src + 3 * ss);
    _MM_TRANSPOSE4_PS(a, b, c, d);
    _mm_storeu_ps(dst, a);
    _mm_storeu_ps(dst + ds, b);
    _mm_storeu_ps(dst + 2 * ds, c);
    _mm_storeu_ps(dst + 3 * ds, d);
}

#include "../opt/micro_template.h"

const em_micro em_micro_sse2 = {
    EM_KERNELS_SSE2, "sse2", EMV_W,
    gemm_sse2, conv_gemm_sse2, gemv_t_sse2, gemv_n_sse2, lut_accumulate_planar_sse2, lut_accumulate_gather_sse2,
    transpose_sse2, depthwise_rows_sse2,
};
