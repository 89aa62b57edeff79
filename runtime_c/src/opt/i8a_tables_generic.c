/* The generic C micro-kernels of the int8-activation table form (opt/em_i8a_tables.h): the contracts written as
 * loops. Every kernel set runs them where it has nothing faster, and the SIMD sets' parity tests compare with
 * them (tests/test_int8_act.c). A file of their own so that the SIMD files that fall back to them
 * (x86/i8a_tables_avx512.c) and the kernels that choose a set (opt/lut_int8_act_tables.c) form no circle. */
#include "../ref/em_ref_kernels.h"
#include "em_i8a_tables.h"


static void build_planar_generic(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks,
                                 int32_t *table, size_t ldt)
{
    size_t c, b, i, q, e;
    for (c = 0; c < c4; ++c)
        for (b = 0; b < blocks; ++b)
            for (i = 0; i < 16u; ++i) {
                int32_t sum = 0;
                for (q = 0; q < k4; ++q)
                    for (e = 0; e < 4u; ++e)
                        sum += (int32_t)cb[((c / 4u * k4 + q) * 4u + c % 4u) * 4u + e] * x[((b * k4 + q) * 16u + i) * 4u + e];
                table[c * ldt + b * 16u + i] = sum;
            }
}

static void build_row_generic(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table)
{
    size_t c, q, e;
    for (c = 0; c < c4; ++c) {
        int32_t sum = 0;
        for (q = 0; q < k4; ++q)
            for (e = 0; e < 4u; ++e) sum += (int32_t)cb[((c / 4u * k4 + q) * 4u + c % 4u) * 4u + e] * x[4u * q + e];
        table[c] = sum;
    }
}

/* The reference's epilogue: one float32 operation each, in its order (separate statements: no contraction). */
static float epilogue(int32_t acc, float scale, const float *bias, uint32_t activation)
{
    float y = (float)acc * scale;
    if (bias != NULL) y += *bias;
    return em_activate(y, activation);
}

static void accumulate_planar_generic(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                                      size_t vectors, float scale, const float *bias, uint32_t activation, float *out)
{
    size_t v, t, l;
    for (v = 0; v < vectors; ++v) {
        int32_t acc[4] = {0, 0, 0, 0};
        for (t = 0; t < count; ++t) {
            const int32_t *run = table + offset[t] + start[v];
            for (l = 0; l < 4u; ++l) acc[l] += run[l];
        }
        for (l = 0; l < 4u; ++l) out[4u * v + l] = epilogue(acc[l], scale, bias, activation);
    }
}

static void gather_generic(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n,
                           float scale, const float *bias, uint32_t activation, float *y)
{
    size_t o, s;
    for (o = 0; o < n; ++o) {
        int32_t acc = 0;
        for (s = 0; s < segments; ++s) acc += table[s * ldt + idx[s * n + o]];
        y[o] = epilogue(acc, scale, bias != NULL ? bias + o : NULL, activation);
    }
}

const em_i8a_tables_micro em_i8a_tables_generic = {"generic", build_planar_generic, build_row_generic,
                                                   accumulate_planar_generic, gather_generic};
