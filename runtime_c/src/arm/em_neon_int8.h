/* Shared by the NEON int8 kernels (arm/int8_gemm_neon.c, arm/int8_gemm_sdot.c, arm/i8a_tables_neon.c). */
#ifndef EDGEMERGE_EM_NEON_INT8_H
#define EDGEMERGE_EM_NEON_INT8_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "edgemerge/em_format.h" /* EM_ACT_* */

#if defined(__GNUC__) || defined(__clang__)
#define EM_NEON_INLINE static inline __attribute__((always_inline))
#else
#define EM_NEON_INLINE static inline
#endif

/* [lo0 + lo1, lo2 + lo3, hi0 + hi1, hi2 + hi3]: joins the two sadalp halves of each lane's dot product */
static inline int32x4_t em_neon_pair_sums(int32x4_t lo, int32x4_t hi)
{
#if defined(__aarch64__)
    return vpaddq_s32(lo, hi);
#else
    return vcombine_s32(vpadd_s32(vget_low_s32(lo), vget_high_s32(lo)), vpadd_s32(vget_low_s32(hi), vget_high_s32(hi)));
#endif
}

/* f32(acc) · scale, + bias, ReLU / ReLU6 (FMAX/FMIN: max(-0, +0) = +0, as em_activate); separate
 * multiply and add, as the reference (C99 mode: GCC does not contract them) */
EM_NEON_INLINE float32x4_t em_neon_int8_epilogue(int32x4_t acc, float32x4_t scale, const float32x4_t *bias,
                                                 uint32_t activation)
{
    float32x4_t y = vmulq_f32(vcvtq_f32_s32(acc), scale);
    if (bias != NULL) y = vaddq_f32(y, *bias);
    if (activation == EM_ACT_RELU) y = vmaxq_f32(y, vdupq_n_f32(0.0f));
    else if (activation == EM_ACT_RELU6) y = vminq_f32(vmaxq_f32(y, vdupq_n_f32(0.0f)), vdupq_n_f32(6.0f));
    return y;
}

#if defined(__aarch64__)
/* bv[g] = bias[4g..4g+3], g < groups, where has_bias (loaded once per block of channels: the stores of the
 * rows may alias the bias as far as the compiler knows, so it reloaded them per row) */
EM_NEON_INLINE void em_neon_int8_load_bias(const float *bias, const int has_bias, const size_t groups, float32x4_t *bv)
{
    size_t g;
    for (g = 0; g < groups; ++g) bv[g] = has_bias ? vld1q_f32(bias + 4 * g) : vdupq_n_f32(0.0f);
}

/* One row of an int8 tile's sums, acc[g] = channels 4g..4g+3 (g < groups), stored as em_int8_store_fn does:
 * 4·groups values to out, + bv[g] (em_neon_int8_load_bias) where has_bias. The float epilogue is aarch64
 * only: armv7 NEON flushes subnormals (those builds keep em_int8_store_generic). `groups`, `has_bias` and
 * `activation` are constants where the callers inline it (no test per vector). */
EM_NEON_INLINE void em_neon_int8_store_row(const int32x4_t *acc, const size_t groups, float32x4_t scale,
                                           const float32x4_t *bv, const int has_bias, const uint32_t activation,
                                           float *out)
{
    size_t g;
    for (g = 0; g < groups; ++g)
        vst1q_f32(out + 4 * g, em_neon_int8_epilogue(acc[g], scale, has_bias ? &bv[g] : NULL, activation));
}

/* CALL(has_bias, activation) with both as constants: one instance of an inlined body per case */
#define EM_NEON_INT8_DISPATCH(CALL, has_bias, activation)                                                     \
    do {                                                                                                       \
        if (has_bias) {                                                                                        \
            if ((activation) == EM_ACT_RELU) CALL(1, EM_ACT_RELU);                                             \
            else if ((activation) == EM_ACT_RELU6) CALL(1, EM_ACT_RELU6);                                      \
            else CALL(1, EM_ACT_NONE);                                                                         \
        } else {                                                                                               \
            if ((activation) == EM_ACT_RELU) CALL(0, EM_ACT_RELU);                                             \
            else if ((activation) == EM_ACT_RELU6) CALL(0, EM_ACT_RELU6);                                      \
            else CALL(0, EM_ACT_NONE);                                                                         \
        }                                                                                                      \
    } while (0)

/* em_int8_store_fn on aarch64 NEON (the neon and sdot tiles' store; their gemm_rows' store of a last block
 * of other than 8 or 16 channels) */
void em_int8_store_neon(const int32_t *c, uint32_t rows, uint32_t cols, float scale, const float *bias,
                        uint32_t activation, float *out, size_t ldo);
/* em_int8_quantize_fn on aarch64 NEON (the neon and sdot tiles' one-pass quantize) */
uint32_t em_int8_quantize_neon(const float *src, size_t n, float inverse, int8_t *dst);
#endif

#endif /* EDGEMERGE_EM_NEON_INT8_H */
