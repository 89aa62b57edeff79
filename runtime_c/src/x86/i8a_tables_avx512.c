/* The int8-activation table micro-kernels (opt/em_i8a_tables.h) of the avx512 set: the LUT_DENSE gather
 * in registers and its table rows with the avx2 set's int8 dot products (x86/i8a_tables_avx2.c); the planar
 * table build and accumulation are the generic C's (on x86 em_select.c gives LUT_CONV2D the decoded VNNI
 * GEMM, so only LUT_DENSE runs the table form here).
 *
 * Why: the README pair's fc1 (1600 -> 1024, r = 32, C = 32) gathered its 51 200 int32 terms one by one in
 * C, 61 µs of the int8 file's 0.17 ms on the AVX-512 host. A dense table row holds C4 ≤ 64 int32 entries,
 * four zmm registers at most, so 16 outputs' terms of one segment are one or two vpermt2d of that row by
 * their indices (the float LUT_DENSE kernel's in-register permutes, micro_avx512.c) and one vpaddd. Sums of
 * int32 are exact in any order, and the epilogue is the generic C's operations one vector at a time
 * (em_avx512_int8_epilogue.h, shared with the VNNI GEMM's store; this file is built with -ffp-contract=off),
 * so the outputs are the generic C's bit for bit (tests/test_int8_act.c check_table_sums). */
#include <immintrin.h>
#include <string.h>

#include "../em_internal.h"
#include "../opt/em_i8a_tables.h"
#include "em_avx512_int8_epilogue.h"

static void build_planar(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, size_t blocks, int32_t *table,
                         size_t ldt)
{
    em_i8a_tables_generic.build_planar(cb, x, k4, c4, blocks, table, ldt);
}

static void build_row(const int8_t *cb, const int8_t *x, size_t k4, size_t c4, int32_t *table)
{
    em_i8a_build_row_avx2(cb, x, k4, c4, table); /* x86/i8a_tables_avx2.c: AVX2 is all it needs */
}

static void accumulate_planar(const int32_t *table, const uint32_t *offset, size_t count, const uint32_t *start,
                              size_t vectors, float scale, const float *bias, uint32_t activation, float *out)
{
    em_i8a_tables_generic.accumulate_planar(table, offset, count, start, vectors, scale, bias, activation, out);
}

static void gather(const int32_t *table, size_t ldt, size_t segments, const uint16_t *idx, size_t n, float scale,
                   const float *bias, uint32_t activation, float *y)
{
    const __m512 vscale = _mm512_set1_ps(scale);
    const __m512i zero = _mm512_setzero_si512(), high = _mm512_set1_epi32(32);
    size_t o0, s;
    if (ldt > 64u || ldt % 16u != 0 || activation > EM_ACT_RELU6) { /* rows past four registers: the C */
        em_i8a_tables_generic.gather(table, ldt, segments, idx, n, scale, bias, activation, y);
        return;
    }
    for (o0 = 0; o0 < n; o0 += 16u) {
        const size_t width = n - o0 < 16u ? n - o0 : 16u;
        const __mmask16 lanes = (__mmask16)((1u << width) - 1u);
        const __m512 b = bias != NULL ? _mm512_maskz_loadu_ps(lanes, bias + o0) : vscale;
        __m512i acc = zero;
        for (s = 0; s < segments; ++s) {
            const int32_t *row = table + s * ldt;
            uint16_t tail[16];
            const uint16_t *at = idx + s * n + o0;
            __m512i iv, v;
            if (width < 16u) { /* the last block: the indices past n are the next segment's (or past the end) */
                memset(tail, 0, sizeof tail);
                memcpy(tail, at, width * sizeof(uint16_t));
                at = tail;
            }
            iv = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)at));
            if (ldt == 16u) {
                v = _mm512_permutexvar_epi32(iv, _mm512_loadu_si512(row));
            } else {
                v = _mm512_permutex2var_epi32(_mm512_loadu_si512(row), iv, _mm512_loadu_si512(row + 16));
                if (ldt > 32u) { /* indices 32..63 from the upper half (its permute reads the low 5 bits) */
                    const __m512i upper = _mm512_permutex2var_epi32(
                        _mm512_loadu_si512(row + 32), iv, ldt == 64u ? _mm512_loadu_si512(row + 48) : zero);
                    v = _mm512_mask_mov_epi32(v, _mm512_cmpge_epu32_mask(iv, high), upper);
                }
            }
            acc = _mm512_add_epi32(acc, v);
        }
        _mm512_mask_storeu_ps(y + o0, lanes, em_avx512_int8_epilogue(acc, vscale, bias != NULL ? &b : NULL, activation));
    }
}

const em_i8a_tables_micro em_i8a_tables_avx512 = {"avx512", build_planar, build_row, accumulate_planar, gather};
