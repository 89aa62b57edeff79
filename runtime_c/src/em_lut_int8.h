/* int8 tables for LUT ops (FORMAT.md "int8 tables"): the quantisation every kernel, reference and fast,
 * performs in exactly this way, so that their integer sums agree bit for bit given the same float table.
 *
 *   m     = max |table[p, s, c]| over the node's whole table of this run (every input pixel)
 *   q     = clamp(round_half_even(table · (127 / m)), −127, 127)      (all q = 0 when m = 0)
 *   y     = act(bias + (float)(Σ q) · (m / 127))                       (Σ over taps and segments, exact)
 *
 * One scale per node and run: every term of every output (whatever its tap, i.e. whichever input pixel
 * it reads) shares it, so the whole sum is one integer and is converted once. Finer scales (per pixel
 * row, per segment) would need a float conversion per row or per segment of every output. */
#ifndef EDGEMERGE_EM_LUT_INT8_H
#define EDGEMERGE_EM_LUT_INT8_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Largest |q| of a table entry. */
#define EM_LUT_INT8_MAX 127
/* Terms an int16 accumulator can take before it must be flushed to int32: 258 · 127 < 32768. Fast
 * kernels flush every EM_LUT_INT8_FLUSH_TERMS terms. */
#define EM_LUT_INT8_FLUSH_TERMS 256u

/* max |t[i]|, computed on the bits: with the sign bit cleared, IEEE-754 binary32 values order like their
 * bit patterns as unsigned integers, and every NaN lies above +Inf. So the result is +Inf when the table
 * holds an infinity and no NaN, a NaN when it holds a NaN (in any kernel, whatever the order of the
 * lanes), and the exact maximum otherwise. */
static inline float em_lut_int8_absmax(const float *t, size_t n)
{
    uint32_t m = 0, bits;
    float result;
    size_t i;
    for (i = 0; i < n; ++i) {
        memcpy(&bits, t + i, sizeof bits);
        bits &= 0x7FFFFFFFu;
        m = bits > m ? bits : m;
    }
    memcpy(&result, &m, sizeof result);
    return result;
}

/* A table with a NaN or an infinity has no scale: every output of the node is NaN (FORMAT.md
 * "Non-finite values"). Kernels check this right after absmax and then write NaN and stop. */
static inline int em_lut_int8_finite(float absmax)
{
    return absmax <= FLT_MAX; /* false for +Inf and NaN */
}

static inline void em_lut_int8_fill_nan(float *output, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) output[i] = NAN;
}

/* 127 / m, or 0 for an all-zero table (every q is then 0). */
static inline float em_lut_int8_inverse(float absmax)
{
    return absmax > 0.0f ? (float)EM_LUT_INT8_MAX / absmax : 0.0f;
}

/* m / 127: the float value of one integer step. */
static inline float em_lut_int8_scale(float absmax)
{
    return absmax / (float)EM_LUT_INT8_MAX;
}

/* q of one entry. Round half to even without depending on the FPU rounding mode's library calls:
 * adding and subtracting 1.5 · 2^23 leaves v rounded to an integer in float32 round-to-nearest-even
 * arithmetic (|v| ≤ 127 · (1 + 2^-23) here, far below 2^22). C99 without -ffast-math keeps the two
 * operations; no FMA is involved (a product then two sums). */
static inline int32_t em_lut_int8_quantize(float t, float inverse)
{
    const float magic = 12582912.0f; /* 1.5 · 2^23 */
    const float v = t * inverse;
    const float rounded = (v + magic) - magic;
    int32_t q = (int32_t)rounded;
    if (q > EM_LUT_INT8_MAX) q = EM_LUT_INT8_MAX;
    if (q < -EM_LUT_INT8_MAX) q = -EM_LUT_INT8_MAX;
    return q;
}

#endif /* EDGEMERGE_EM_LUT_INT8_H */
