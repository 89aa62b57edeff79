/* Table-form micro-kernels for LUT ops with int8 activations on NEON (em_i8a_tables.h): the int32 planar
 * accumulation and the LUT_DENSE gather with the epilogue in registers (every ARM core), and the table build
 * with smull + sadalp for cores without the dot product (Cortex-A53, A72; armv7): `smull` multiplies 8 int8
 * pairs into int16 (2 pixels × 4 depths), `sadalp` adds adjacent products pairwise into int32 lanes, a final
 * pairwise add joins each pixel's two halves. Exact: |product| ≤ 127² fits int16. */
#include <arm_neon.h>
#include <string.h>

#include "em_neon_int8.h"

#include "../em_internal.h"
#include "../opt/em_i8a_tables.h"
#include "../ref/em_ref_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define I8A_INLINE static inline __attribute__((always_inline))
#else
#define I8A_INLINE static inline
#endif


/* 4 codewords × one vector of 4 pixels at a time: 8 accumulators of pairs */
static void build_planar_neon(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks, int32_t *table,
                              size_t ldt)
{
    size_t c0, b, v, q, i;
    for (c0 = 0; c0 < c4; c0 += 4)
        for (b = 0; b < blocks; ++b)
            for (v = 0; v < 4; ++v) {
                int32x4_t lo[4], hi[4];
                const int8_t *xq = x + (b * k4 * 16 + 4 * v) * 4, *cq = cb + c0 / 4 * k4 * 16;
                for (i = 0; i < 4; ++i) lo[i] = hi[i] = vdupq_n_s32(0);
                for (q = 0; q < k4; ++q, xq += 64, cq += 16) {
                    const int8x16_t xv = vld1q_s8(xq);
                    for (i = 0; i < 4; ++i) {
                        int32_t w;
                        int8x8_t wd;
                        memcpy(&w, cq + 4 * i, sizeof w);
                        wd = vreinterpret_s8_s32(vdup_n_s32(w));
                        lo[i] = vpadalq_s16(lo[i], vmull_s8(vget_low_s8(xv), wd));
                        hi[i] = vpadalq_s16(hi[i], vmull_s8(vget_high_s8(xv), wd));
                    }
                }
                for (i = 0; i < 4; ++i) vst1q_s32(table + (c0 + i) * ldt + b * 16 + 4 * v, em_neon_pair_sums(lo[i], hi[i]));
            }
}

static void build_row_neon(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table)
{
    size_t c0, q;
    for (c0 = 0; c0 < c4; c0 += 4) {
        const int8_t *cq = cb + c0 / 4 * k4 * 16;
        int32x4_t lo = vdupq_n_s32(0), hi = lo;
        for (q = 0; q < k4; ++q, cq += 16) {
            const int8x16_t w = vld1q_s8(cq);
            int32_t v;
            int8x8_t xd;
            memcpy(&v, x + 4 * q, sizeof v);
            xd = vreinterpret_s8_s32(vdup_n_s32(v));
            lo = vpadalq_s16(lo, vmull_s8(vget_low_s8(w), xd));
            hi = vpadalq_s16(hi, vmull_s8(vget_high_s8(w), xd));
        }
        vst1q_s32(table + c0, em_neon_pair_sums(lo, hi));
    }
}

/* nv ≤ 8 runs of 4 pixels: sums of every term in registers, the runs' byte offsets too, so each run is one
 * register-offset load from the term's row (the empty asm keeps GCC from folding the row into every
 * address: it added and shifted per load, armperf) */
I8A_INLINE void planar_group(const size_t nv, const int32_t *table, const uint32_t *offset, size_t count,
                             const uint32_t *start, float32x4_t scale, const float32x4_t *bias, uint32_t activation,
                             float *out)
{
    int32x4_t acc[8];
    size_t s[8], t, v;
    for (v = 0; v < nv; ++v) {
        acc[v] = vdupq_n_s32(0);
        s[v] = (size_t)start[v] * sizeof(int32_t);
    }
    for (t = 0; t < count; ++t) {
        const unsigned char *row = (const unsigned char *)(table + offset[t]);
#if defined(__GNUC__) || defined(__clang__)
        __asm__("" : "+r"(row));
#endif
        for (v = 0; v < nv; ++v) acc[v] = vaddq_s32(acc[v], vld1q_s32((const int32_t *)(const void *)(row + s[v])));
    }
    for (v = 0; v < nv; ++v) vst1q_f32(out + 4 * v, em_neon_int8_epilogue(acc[v], scale, bias, activation));
}

static void accumulate_planar_neon(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                                   size_t vectors, float scale, const float *bias, uint32_t activation, float *out)
{
    const float32x4_t vscale = vdupq_n_f32(scale);
    float32x4_t vbias;
    const float32x4_t *pb = NULL;
    size_t v = 0;
    if (bias != NULL) {
        vbias = vdupq_n_f32(*bias);
        pb = &vbias;
    }
    for (; v + 8 <= vectors; v += 8) planar_group(8, table, offset, count, start + v, vscale, pb, activation, out + 4 * v);
#define I8A_GROUP(n) planar_group(n, table, offset, count, start + v, vscale, pb, activation, out + 4 * v)
    switch (vectors - v) {
    case 0: break;
    case 1: I8A_GROUP(1); break;
    case 2: I8A_GROUP(2); break;
    case 3: I8A_GROUP(3); break;
    case 4: I8A_GROUP(4); break;
    case 5: I8A_GROUP(5); break;
    case 6: I8A_GROUP(6); break;
    default: I8A_GROUP(7); break;
    }
#undef I8A_GROUP
}

/* Adds row[ix[0..7]] to acc[0] (lanes 0-3) and acc[1] (lanes 4-7): the eight 16-bit indices in two 64-bit
 * loads, split with shifts (a load per index made the float gather load-bound, armperf) */
static inline void add_eight(const int32_t *row, const uint16_t *ix, int32x4_t *acc)
{
    int k;
    for (k = 0; k < 2; ++k) {
        uint64_t four;
        int32x4_t v;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(&four, ix + 4 * k, sizeof four);
#else
        four = (uint64_t)ix[4 * k] | (uint64_t)ix[4 * k + 1] << 16 | (uint64_t)ix[4 * k + 2] << 32 |
               (uint64_t)ix[4 * k + 3] << 48;
#endif
        v = vdupq_n_s32(row[four & 0xFFFFu]);
        v = vld1q_lane_s32(row + ((four >> 16) & 0xFFFFu), v, 1);
        v = vld1q_lane_s32(row + ((four >> 32) & 0xFFFFu), v, 2);
        acc[k] = vaddq_s32(acc[k], vld1q_lane_s32(row + (four >> 48), v, 3));
    }
}

/* 16 outputs at a time, four vectors in flight (they hide the lane loads' latency); the rest one by one.
 * (uint8 indices, eight per load, and sums in general registers both modelled slower, armperf A76) */
static void gather_neon(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n,
                        float scale, const float *bias, uint32_t activation, float *y)
{
    const float32x4_t vscale = vdupq_n_f32(scale);
    size_t o = 0, s, v;
    for (; o + 16 <= n; o += 16) {
        int32x4_t acc[4];
        for (v = 0; v < 4; ++v) acc[v] = vdupq_n_s32(0);
        for (s = 0; s < segments; ++s) {
            add_eight(table + s * ldt, idx + s * n + o, acc);
            add_eight(table + s * ldt, idx + s * n + o + 8, acc + 2);
        }
        for (v = 0; v < 4; ++v) {
            float32x4_t bv;
            if (bias != NULL) bv = vld1q_f32(bias + o + 4 * v);
            vst1q_f32(y + o + 4 * v, em_neon_int8_epilogue(acc[v], vscale, bias != NULL ? &bv : NULL, activation));
        }
    }
    for (; o < n; ++o) { /* the last 1-15 outputs: one at a time, the same float32 operations */
        int32_t sum = 0;
        float value;
        for (s = 0; s < segments; ++s) sum += table[s * ldt + idx[s * n + o]];
        value = (float)sum * scale;
        if (bias != NULL) value += bias[o];
        y[o] = em_activate(value, activation);
    }
}

void em_i8a_accumulate_planar_neon(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                                   size_t vectors, float scale, const float *bias, uint32_t activation, float *out)
{
    accumulate_planar_neon(table, offset, count, start, vectors, scale, bias, activation, out);
}

void em_i8a_gather_neon(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n, float scale,
                        const float *bias, uint32_t activation, float *y)
{
    gather_neon(table, ldt, segments, idx, n, scale, bias, activation, y);
}

const em_i8a_tables_micro em_i8a_tables_neon = {"neon", build_planar_neon, build_row_neon, accumulate_planar_neon,
                                                gather_neon};
