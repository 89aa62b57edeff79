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

#include <stddef.h>
#include <stdint.h>

/* Largest |q| of a table entry. */
#define EM_LUT_INT8_MAX 127
/* Terms an int16 accumulator can take before it must be flushed to int32: 258 · 127 < 32768. Fast
 * kernels flush every EM_LUT_INT8_FLUSH_TERMS terms. */
#define EM_LUT_INT8_FLUSH_TERMS 256u

/* max |t[i]| (NaN entries are skipped). */
static inline float em_lut_int8_absmax(const float *t, size_t n)
{
    float m = 0.0f;
    size_t i;
    for (i = 0; i < n; ++i) {
        const float a = t[i] < 0.0f ? -t[i] : t[i];
        m = a > m ? a : m;
    }
    return m;
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
