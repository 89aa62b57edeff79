/* AVX-512F micro-kernels (512-bit, 16 floats). Compiled with -mavx512f -mavx2 -mfma for this file only;
 * run only after em_cpu_supports() saw AVX-512F and the OS's ZMM/opmask state. Only AVX-512F
 * instructions are used (no BW/VL/DQ), so any AVX-512 CPU runs them.
 *
 * Besides wider vectors, two things AVX2 cannot do cheaply: masked loads/stores for every tail, and
 * in-register table lookups for LUT_DENSE. A segment's table row of C ≤ 64 floats fits in 1-4 ZMM
 * registers, and vpermps / vpermt2ps pick 16 entries per instruction at register speed, where a gather
 * issues 16 loads. */
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
/* GCC's unoptimised builds expand _mm512_i32gather_ps to a macro that converts its all-ones mask to a
 * signed short: a warning about GCC's header, not this code */
#pragma GCC diagnostic ignored "-Wsign-conversion"
#endif

#include "../em_internal.h"
#include "../opt/em_micro.h"

typedef __m512 emv;
#define EMV_W 16
#define EMV_GEMM_MR 8 /* 8 × 2 accumulators of 32 ZMM registers */
#define EMV_FN(name) name##_avx512
#define EMV_CUSTOM_LUT_GATHER 1

static inline __mmask16 emv_mask(size_t n)
{
    return (__mmask16)((1u << n) - 1u);
}

#define emv_zero() _mm512_setzero_ps()
#define emv_set1(x) _mm512_set1_ps(x)
#define emv_loadu(p) _mm512_loadu_ps(p)
#define emv_storeu(p, v) _mm512_storeu_ps((p), (v))
#define emv_add(a, b) _mm512_add_ps((a), (b))
/* ReLU as em_activate: keep the lanes that are not <= 0 (NaN included), zero the rest; minps(6, v)
 * returns v when either is NaN, so ReLU6 keeps NaN too */
static inline __m512 emv_relu(__m512 v)
{
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v);
}
static inline __m512 emv_relu6(__m512 v)
{
    return _mm512_min_ps(_mm512_set1_ps(6.0f), emv_relu(v));
}
#define emv_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define emv_load_part(p, n) _mm512_maskz_loadu_ps(emv_mask(n), (p))
#define emv_store_part(p, v, n) _mm512_mask_storeu_ps((p), emv_mask(n), (v))
#define emv_hsum(v) _mm512_reduce_add_ps(v)

static inline __m512i emv_indices(const uint16_t *ix)
{
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)ix));
}

static inline __m512 emv_gather16(const float *table, const uint16_t *ix)
{
    return _mm512_i32gather_ps(emv_indices(ix), table, 4);
}

/* a + b pairwise within each 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3] (AVX's hadd, for ZMM) */
static inline __m512 hadd512(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}

/* lane i of the result = sum of v[i]: two pairwise levels within 128-bit lanes, then the four lanes */
static inline __m512 emv_reduce_rows(const __m512 *v)
{
    const __m512 g0 = hadd512(hadd512(v[0], v[1]), hadd512(v[2], v[3]));
    const __m512 g1 = hadd512(hadd512(v[4], v[5]), hadd512(v[6], v[7]));
    const __m512 g2 = hadd512(hadd512(v[8], v[9]), hadd512(v[10], v[11]));
    const __m512 g3 = hadd512(hadd512(v[12], v[13]), hadd512(v[14], v[15]));
    /* g_j's 128-bit lane L holds rows 4j..4j+3 summed over input lane L: add lanes 0+2 and 1+3, then those */
    const __m512 q0 = _mm512_add_ps(_mm512_shuffle_f32x4(g0, g1, 0x44), _mm512_shuffle_f32x4(g0, g1, 0xEE));
    const __m512 q1 = _mm512_add_ps(_mm512_shuffle_f32x4(g2, g3, 0x44), _mm512_shuffle_f32x4(g2, g3, 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(q0, q1, 0x88), _mm512_shuffle_f32x4(q0, q1, 0xDD));
}

/* 8×8 blocks with 256-bit AVX instructions (this file is compiled with -mavx2 too) */
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

/* One vector of 16 outputs for one segment, by the table row's size class. */
static inline __m512 lookup16(const __m512 *row, uint32_t codewords, __m512i lanes)
{
    if (codewords <= 16) return _mm512_permutexvar_ps(lanes, row[0]);
    if (codewords <= 32) return _mm512_permutex2var_ps(row[0], lanes, row[1]);
    {
        /* entries 0..31 from row[0..1], 32..63 from row[2..3]; bit 5 of the index picks the half */
        const __m512 low = _mm512_permutex2var_ps(row[0], lanes, row[1]);
        const __m512 high = _mm512_permutex2var_ps(row[2], lanes, row[3]);
        return _mm512_mask_blend_ps(_mm512_test_epi32_mask(lanes, _mm512_set1_epi32(32)), low, high);
    }
}

/* Loads table row s (codewords ≤ 64 floats) into registers, zero past its end. */
static inline void load_row(const float *row, uint32_t codewords, __m512 *out)
{
    uint32_t v;
    for (v = 0; v < 4; ++v) {
        const uint32_t first = v * 16u;
        if (first >= codewords)
            out[v] = _mm512_setzero_ps();
        else if (codewords - first >= 16u)
            out[v] = _mm512_loadu_ps(row + first);
        else
            out[v] = _mm512_maskz_loadu_ps(emv_mask(codewords - first), row + first);
    }
}

static void lut_accumulate_gather_avx512(const float *table, uint32_t codewords, size_t segments,
                                         const uint16_t *idx, size_t n, float *y)
{
    size_t o = 0, s;
    __m512 row[4];
    if (codewords > 64) { /* too large for registers: real gathers */
        for (; o + 4 * EMV_W <= n; o += 4 * EMV_W) {
            __m512 a0 = emv_zero(), a1 = emv_zero(), a2 = emv_zero(), a3 = emv_zero();
            for (s = 0; s < segments; ++s) {
                const float *r = table + s * codewords;
                const uint16_t *ix = idx + s * n + o;
                a0 = emv_add(a0, emv_gather16(r, ix));
                a1 = emv_add(a1, emv_gather16(r, ix + EMV_W));
                a2 = emv_add(a2, emv_gather16(r, ix + 2 * EMV_W));
                a3 = emv_add(a3, emv_gather16(r, ix + 3 * EMV_W));
            }
            emv_storeu(y + o, a0);
            emv_storeu(y + o + EMV_W, a1);
            emv_storeu(y + o + 2 * EMV_W, a2);
            emv_storeu(y + o + 3 * EMV_W, a3);
        }
    } else {
        for (; o + 4 * EMV_W <= n; o += 4 * EMV_W) {
            __m512 a0 = emv_zero(), a1 = emv_zero(), a2 = emv_zero(), a3 = emv_zero();
            for (s = 0; s < segments; ++s) {
                const uint16_t *ix = idx + s * n + o;
                load_row(table + s * codewords, codewords, row);
                a0 = emv_add(a0, lookup16(row, codewords, emv_indices(ix)));
                a1 = emv_add(a1, lookup16(row, codewords, emv_indices(ix + EMV_W)));
                a2 = emv_add(a2, lookup16(row, codewords, emv_indices(ix + 2 * EMV_W)));
                a3 = emv_add(a3, lookup16(row, codewords, emv_indices(ix + 3 * EMV_W)));
            }
            emv_storeu(y + o, a0);
            emv_storeu(y + o + EMV_W, a1);
            emv_storeu(y + o + 2 * EMV_W, a2);
            emv_storeu(y + o + 3 * EMV_W, a3);
        }
    }
    for (; o < n; o += EMV_W) {
        const size_t lanes = n - o < EMV_W ? n - o : EMV_W;
        __m512 acc = emv_zero();
        uint16_t tail[EMV_W];
        size_t l;
        for (s = 0; s < segments; ++s) {
            const float *r = table + s * codewords;
            const uint16_t *ix = idx + s * n + o;
            __m512i lanes_ix;
            if (lanes != EMV_W) {
                for (l = 0; l < EMV_W; ++l) tail[l] = l < lanes ? ix[l] : 0; /* index 0 is always valid */
                ix = tail;
            }
            lanes_ix = emv_indices(ix);
            if (codewords > 64) {
                acc = emv_add(acc, _mm512_i32gather_ps(lanes_ix, r, 4));
            } else {
                load_row(r, codewords, row);
                acc = emv_add(acc, lookup16(row, codewords, lanes_ix));
            }
        }
        if (lanes == EMV_W) emv_storeu(y + o, acc); else emv_store_part(y + o, acc, lanes);
    }
}

const em_micro em_micro_avx512 = {
    EM_KERNELS_AVX512, "avx512", EMV_W,
    gemm_avx512, conv_gemm_avx512, gemv_t_avx512, gemv_n_avx512, lut_accumulate_planar_avx512, lut_accumulate_gather_avx512,
    transpose_avx512, depthwise_rows_avx512,
};
