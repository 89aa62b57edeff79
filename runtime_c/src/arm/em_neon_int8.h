/* Shared by the NEON int8 kernels without the dot product (arm/int8_gemm_neon.c, arm/i8a_tables_neon.c). */
#ifndef EDGEMERGE_EM_NEON_INT8_H
#define EDGEMERGE_EM_NEON_INT8_H

#include <arm_neon.h>

/* [lo0 + lo1, lo2 + lo3, hi0 + hi1, hi2 + hi3]: joins the two sadalp halves of each lane's dot product */
static inline int32x4_t em_neon_pair_sums(int32x4_t lo, int32x4_t hi)
{
#if defined(__aarch64__)
    return vpaddq_s32(lo, hi);
#else
    return vcombine_s32(vpadd_s32(vget_low_s32(lo), vget_high_s32(lo)), vpadd_s32(vget_low_s32(hi), vget_high_s32(hi)));
#endif
}

#endif /* EDGEMERGE_EM_NEON_INT8_H */
