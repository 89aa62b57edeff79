/* int8 tiles on ARMv8.0 / armv7 NEON (em_int8_gemm.h), for cores without the dot product (Cortex-A53,
 * A72): `smull` multiplies 8 int8 pairs into int16 (2 channels × 4 depths), `smlal` adds the next depth
 * step's 8 products to those int16 lanes, `sadalp` adds adjacent int16 lanes pairwise into int32 lanes
 * (channel n: depths 0+1 and 2+3 of both steps), and a final pairwise add joins the two halves of each
 * channel. Exact: |a|, |w| ≤ 127, so two products are ≤ 2 · 127² = 32258 and fit int16. Two steps per
 * sadalp halve the sadalp (the A72's one pipe for it, at half rate on 128 bits: the smull-only loop was
 * bound by it, armperf). One row at a time (8 accumulators of pairs + 8 weight registers fit the register
 * file); the weights are re-read per row from L1.
 *
 * aarch64 also has the store (em_int8_store_neon) and gemm_rows: each row's 16 sums go from registers
 * through the epilogue (f32 · k, + bias, ReLU / ReLU6) to the output, no int32 tile, no second pass. */
#include <arm_neon.h>
#include <string.h>

#include "em_neon_int8.h"

#include "../em_lut_int8.h"
#include "../opt/em_int8_gemm.h"

/* the 4 bytes at a in every 32-bit lane (one ld1r) */
EM_NEON_INLINE int8x16_t broadcast4(const int8_t *a)
{
    int32_t v;
    memcpy(&v, a, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

EM_NEON_INLINE int16x8_t mull_high(int8x16_t w, int8x16_t x)
{
#if defined(__aarch64__)
    return vmull_high_s8(w, x);
#else
    return vmull_s8(vget_high_s8(w), vget_high_s8(x));
#endif
}

EM_NEON_INLINE int16x8_t mlal_high(int16x8_t p, int8x16_t w, int8x16_t x)
{
#if defined(__aarch64__)
    return vmlal_high_s8(p, w, x);
#else
    return vmlal_s8(p, vget_high_s8(w), vget_high_s8(x));
#endif
}

/* One row's sums with channels 4g..4g+3 (g < groups: 4, or 2 where a last block has ≤ 8 channels) into
 * out[g]: the row's depths in `segments` pieces of seg_k4 steps, seg_stride apart (em_int8_tile_rows_fn) */
EM_NEON_INLINE void row_sums(const int8_t *a, size_t segments, size_t seg_stride, size_t seg_k4, const int8_t *b,
                             const size_t groups, int32x4_t *out)
{
    int32x4_t lo[4], hi[4];
    size_t s, q, g;
    for (g = 0; g < groups; ++g) lo[g] = hi[g] = vdupq_n_s32(0);
    for (s = 0; s < segments; ++s, a += seg_stride) {
        for (q = 0; q + 2 <= seg_k4; q += 2, b += 128) {
            const int8x16_t x0 = broadcast4(a + 4 * q), x1 = broadcast4(a + 4 * q + 4);
            for (g = 0; g < groups; ++g) {
                const int8x16_t w0 = vld1q_s8(b + 16 * g), w1 = vld1q_s8(b + 64 + 16 * g);
                lo[g] = vpadalq_s16(lo[g], vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), vget_low_s8(w1),
                                                    vget_low_s8(x1)));
                hi[g] = vpadalq_s16(hi[g], mlal_high(mull_high(w0, x0), w1, x1));
            }
        }
        if (q < seg_k4) {
            const int8x16_t x0 = broadcast4(a + 4 * q);
            for (g = 0; g < groups; ++g) {
                const int8x16_t w0 = vld1q_s8(b + 16 * g);
                lo[g] = vpadalq_s16(lo[g], vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
                hi[g] = vpadalq_s16(hi[g], mull_high(w0, x0));
            }
            b += 64;
        }
    }
    for (g = 0; g < groups; ++g) out[g] = em_neon_pair_sums(lo[g], hi[g]);
}

static void tile_rows_neon(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                           const int8_t *b, int32_t *c)
{
    size_t i, g;
    for (i = 0; i < 4; ++i) {
        int32x4_t acc[4];
        row_sums(rows[i], segments, seg_stride, seg_k4, b, 4, acc);
        for (g = 0; g < 4; ++g) vst1q_s32(c + i * 16 + 4 * g, acc[g]);
    }
}

static void tile_neon(const int8_t *a, size_t lda, const int8_t *b, size_t k4, int32_t *c)
{
    em_int8_tile_by_rows(tile_rows_neon, a, lda, b, k4, c);
}

#if defined(__aarch64__)
/* The first n ≤ 4 values of one vector of the epilogue (a tile's last 1-3 columns) */
static void store_partial(int32x4_t acc, uint32_t n, float32x4_t scale, const float *bias, uint32_t activation,
                          float *out)
{
    float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float32x4_t bv = scale;
    if (bias != NULL) {
        memcpy(lanes, bias, n * sizeof(float));
        bv = vld1q_f32(lanes);
    }
    vst1q_f32(lanes, em_neon_int8_epilogue(acc, scale, bias != NULL ? &bv : NULL, activation));
    memcpy(out, lanes, n * sizeof(float));
}

void em_int8_store_neon(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                        uint32_t activation, float *out, size_t ldo)
{
    const float32x4_t k = vdupq_n_f32(scale);
    uint32_t r, n;
    for (r = 0; r < rows; ++r) {
        float *y = out + r * ldo;
        for (n = 0; n + 4u <= cols; n += 4u) {
            const float32x4_t bv = bias != NULL ? vld1q_f32(bias + n) : k;
            vst1q_f32(y + n, em_neon_int8_epilogue(vld1q_s32(c + 16u * r + n), k, bias != NULL ? &bv : NULL,
                                                   activation));
        }
        if (n < cols) store_partial(vld1q_s32(c + 16u * r + n), cols - n, k, bias != NULL ? bias + n : NULL,
                                    activation, y + n);
    }
}

/* em_int8_gemm_rows_fn, one instance per activation and bias (constants inside: no test per vector); only
 * the valid rows are summed. `offsets` (the VNNI tiles' correction) is not needed: smull is signed. Blocks
 * of 16 or 8 channels store from registers; another last block goes through a tile and the store. */
EM_NEON_INLINE void gemm_rows_impl(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                                   const int8_t *b, uint32_t cout, float scale, const float *bias, const int has_bias,
                                   const uint32_t activation, float *out, uint32_t valid_rows)
{
    const float32x4_t k = vdupq_n_f32(scale);
    const size_t block = segments * seg_k4 * 64;
    uint32_t first, r;
    for (first = 0; first < cout; first += 16, b += block) {
        const uint32_t cols = cout - first < 16u ? cout - first : 16u;
        const float *bb = has_bias ? bias + first : NULL;
        for (r = 0; r < valid_rows; ++r) {
            float32x4_t bv[4]; /* per row: held across the row's sums they cost registers (armperf A72) */
            int32x4_t acc[4];
            float *y = out + (size_t)r * cout + first;
            if (cols == 16u) {
                row_sums(rows[r], segments, seg_stride, seg_k4, b, 4, acc);
                em_neon_int8_load_bias(bb, has_bias, 4, bv);
                em_neon_int8_store_row(acc, 4, k, bv, has_bias, activation, y);
            } else if (cols == 8u) {
                row_sums(rows[r], segments, seg_stride, seg_k4, b, 2, acc);
                em_neon_int8_load_bias(bb, has_bias, 2, bv);
                em_neon_int8_store_row(acc, 2, k, bv, has_bias, activation, y);
            } else {
                int32_t tile[16];
                size_t g;
                row_sums(rows[r], segments, seg_stride, seg_k4, b, 4, acc);
                for (g = 0; g < 4; ++g) vst1q_s32(tile + 4 * g, acc[g]);
                em_int8_store_neon(tile, 1, cols, scale, bb, activation, y, 0);
            }
        }
    }
}

static void gemm_rows_neon(const int8_t *const *rows, size_t segments, size_t seg_stride, size_t seg_k4,
                           const int8_t *b, const int32_t *offsets, uint32_t cout, float scale, const float *bias,
                           uint32_t activation, float *out, uint32_t valid_rows)
{
#define EM_GEMM_ROWS(has_bias, act)                                                                            \
    gemm_rows_impl(rows, segments, seg_stride, seg_k4, b, cout, scale, bias, has_bias, act, out, valid_rows)
    (void)offsets;
    EM_NEON_INT8_DISPATCH(EM_GEMM_ROWS, bias != NULL, activation);
#undef EM_GEMM_ROWS
}

/* em_int8_quantize_fn: 16 values per step: the float product, fcvtns (round to nearest, ties to even: the
 * magic-number rounding of em_lut_int8_quantize for |v| < 2^22; beyond, both saturate to ±127), saturating
 * narrows and a floor at -127, and the magnitudes' bits (sign cleared) max-accumulated: the absmax pass and
 * the quantize pass in one read of the input, two instructions fewer per vector in the rounding */
uint32_t em_int8_quantize_neon(const float *src, size_t n, float inverse, int8_t *dst)
{
    const float32x4_t inv = vdupq_n_f32(inverse);
    const uint32x4_t magnitude = vdupq_n_u32(0x7FFFFFFFu);
    const int8x16_t floor = vdupq_n_s8(-EM_LUT_INT8_MAX);
    uint32x4_t m4 = vdupq_n_u32(0);
    uint32_t m;
    size_t i = 0;
    for (; i + 16u <= n; i += 16u) {
        const float32x4_t a = vld1q_f32(src + i), b = vld1q_f32(src + i + 4), c = vld1q_f32(src + i + 8),
                          d = vld1q_f32(src + i + 12);
        const uint32x4_t mab = vmaxq_u32(vandq_u32(vreinterpretq_u32_f32(a), magnitude),
                                         vandq_u32(vreinterpretq_u32_f32(b), magnitude));
        const uint32x4_t mcd = vmaxq_u32(vandq_u32(vreinterpretq_u32_f32(c), magnitude),
                                         vandq_u32(vreinterpretq_u32_f32(d), magnitude));
        const int16x8_t ab = vqmovn_high_s32(vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(a, inv))),
                                             vcvtnq_s32_f32(vmulq_f32(b, inv)));
        const int16x8_t cd = vqmovn_high_s32(vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(c, inv))),
                                             vcvtnq_s32_f32(vmulq_f32(d, inv)));
        m4 = vmaxq_u32(m4, vmaxq_u32(mab, mcd));
        vst1q_s8(dst + i, vmaxq_s8(vqmovn_high_s16(vqmovn_s16(ab), cd), floor));
    }
    m = vmaxvq_u32(m4);
    for (; i < n; ++i) {
        uint32_t bits;
        memcpy(&bits, src + i, sizeof bits);
        bits &= 0x7FFFFFFFu;
        m = bits > m ? bits : m;
        dst[i] = bits < EM_INT8_NONFINITE_BITS ? (int8_t)em_lut_int8_quantize(src[i], inverse) : 0;
    }
    return m;
}

const em_int8_gemm_micro em_int8_gemm_neon = {"neon", tile_neon, em_int8_store_neon, tile_rows_neon, gemm_rows_neon,
                                              em_int8_quantize_neon};
#else
const em_int8_gemm_micro em_int8_gemm_neon = {"neon", tile_neon, NULL, tile_rows_neon, NULL, NULL};
#endif
