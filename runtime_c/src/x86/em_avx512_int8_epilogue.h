/* The epilogue of the int8-activation kernels (FORMAT.md "int8 activations") on 16 int32 sums, for the
 * AVX-512 files (x86/int8_gemm_avx512vnni.c, x86/i8a_tables_avx512.c; built with -mavx512f):
 * act(f32(f32(acc) · k) + bias) with em_activate's ReLU / ReLU6 (x <= 0 ? 0 : x, NaN kept; ReLU6 also
 * x > 6 ? 6), as selects on compare masks: max / min would turn a NaN into 0 (x86's MAXPS returns its second
 * operand), where the reference keeps it. Separate mul and add: the including files do not contract them
 * (C99 mode, -ffp-contract=off), as the reference rounds twice. */
#ifndef EDGEMERGE_EM_AVX512_INT8_EPILOGUE_H
#define EDGEMERGE_EM_AVX512_INT8_EPILOGUE_H

#include <immintrin.h>
#include <stdint.h>

#include "../em_internal.h"

static inline __m512 em_avx512_int8_epilogue(__m512i acc, __m512 k, const __m512 *bias, uint32_t activation)
{
    const __m512 zero = _mm512_setzero_ps();
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), k);
    if (bias != NULL) y = _mm512_add_ps(y, *bias);
    if (activation == EM_ACT_RELU || activation == EM_ACT_RELU6) {
        const __mmask16 low = _mm512_cmp_ps_mask(y, zero, _CMP_LE_OQ);
        if (activation == EM_ACT_RELU6) {
            const __m512 six = _mm512_set1_ps(6.0f);
            y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(y, six, _CMP_GT_OQ), six);
        }
        y = _mm512_mask_mov_ps(y, low, zero);
    }
    return y;
}

#endif /* EDGEMERGE_EM_AVX512_INT8_EPILOGUE_H */
