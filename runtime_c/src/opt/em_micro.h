/* Micro-kernels: the few inner loops the fast kernels spend their time in, one table per instruction
 * set. The algorithms (src/opt/: tiling, layouts, table sharing) are written once in portable C and
 * call these through a table, so every ISA runs the same algorithm and a parity test of one kernel
 * covers the driver for all of them.
 *
 *   src/opt/micro_generic.c   plain C (the compiler may auto-vectorise it)
 *   src/x86/micro_sse2.c      128-bit SSE2            (x86-64 baseline)
 *   src/x86/micro_avx2.c      256-bit AVX2 + FMA      (run-time detected, compiled with -mavx2 -mfma)
 *   src/x86/micro_avx512.c    512-bit AVX-512F        (run-time detected, compiled with -mavx512f)
 *   src/arm/micro_neon.c      128-bit NEON            (aarch64 always; armv7 when __ARM_NEON)
 *   src/opt/em_blas.c         gemm/gemv through a linked BLAS (the rest from the generic table)
 *
 * The SIMD tables are instances of one template (src/opt/micro_template.h) over a small vector
 * abstraction, so the ISAs differ only in vector width, tail handling and a few ISA-specific paths.
 *
 * Which tables exist is decided at build time (EM_HAVE_X86_SIMD, EM_HAVE_NEON, EM_HAVE_OPENBLAS from
 * CMake); which run is decided at load time (em_cpu.c checks CPUID/XGETBV on x86). */
#ifndef EDGEMERGE_EM_MICRO_H
#define EDGEMERGE_EM_MICRO_H

#include <stddef.h>
#include <stdint.h>

/* The geometry of a depthwise convolution with multiplier 1 (what depthwise_rows needs besides its
 * tensors and row range), NHWC. */
typedef struct em_depthwise_shape {
    size_t in_h, in_w, channels, kh, kw, stride_h, stride_w, pad_top, pad_left, out_w;
    uint32_t activation;
} em_depthwise_shape;

/* rows[ky] for ky < s->kh: the input row under kernel row ky of output row oy, NULL where that row is
 * padding (em_input_coord's rule; oy·stride_h + ky < in_h + pad_top + pad_bottom, so no overflow) */
static inline void em_depthwise_input_rows(const em_depthwise_shape *s, const float *input, size_t oy,
                                           const float **rows)
{
    const size_t row_floats = s->in_w * s->channels;
    size_t ky;
    for (ky = 0; ky < s->kh; ++ky) {
        const size_t padded = oy * s->stride_h + ky;
        rows[ky] = padded < s->pad_top || padded - s->pad_top >= s->in_h ? NULL
                                                                          : input + (padded - s->pad_top) * row_floats;
    }
}

typedef struct em_micro {
    uint32_t kernels;       /* EM_KERNELS_* this table implements (EM_KERNELS_GENERIC for BLAS) */
    const char *isa;        /* "generic", "sse2", "avx2", "avx512", "neon", "blas": kernel-name suffix */
    uint32_t vector_floats; /* lanes of one vector (1 for generic) */

    /* C[m×n] = A[m×k] · B[k×n], row-major with leading dimensions in floats; C is overwritten
     * (k == 0 gives zeros). Used for LUT tables (A = codebook segment, B = planar input rows), 1×1 and
     * im2col convolutions. */
    void (*gemm)(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                 size_t ldc);
    /* Convolution as an implicit GEMM (no im2col copy): for i < m, j < n,
     *   C[i, j] = act(bias[j] + Σ_{kb < kblocks} Σ_{p < kin} a[i·lda + kb·a_block + p] · B[kb·kin + p, j])
     * One call computes one output row: i = output column, kb = kernel row, p = (kernel column, input
     * channel), which are contiguous in an NHWC input row; lda = stride · Cin. bias may be NULL. */
    void (*conv_gemm)(size_t m, size_t n, size_t kblocks, size_t kin, const float *a, size_t lda, size_t a_block,
                      const float *b, size_t ldb, float *c, size_t ldc, const float *bias, uint32_t activation);
    /* y[j] = Σ_i x[i] · B[i, j] for j < n, i < k (a dense layer with weights [In, Out]). */
    void (*gemv_t)(size_t k, size_t n, const float *x, const float *b, size_t ldb, float *y);
    /* y[i] = Σ_j A[i, j] · x[j] for i < m, j < k (a LUT_DENSE table: codewords · input segment). */
    void (*gemv_n)(size_t m, size_t k, const float *a, size_t lda, const float *x, float *y);
    /* LUT_CONV2D accumulation over a planar table, one output channel: for q < span,
     *   out[q] = act((accumulate ? out[q] : 0) + Σ_{t < count} table[offset[t] + q]  (+ *bias if bias != NULL))
     * act = activation (EM_ACT_NONE, RELU or RELU6), applied as em_activate. offset[t] = the term's table row
     * (segment, codeword) and tap shift, computed once at load. Each term is a contiguous run of the table
     * (the index is a scalar per tap, segment and output channel), so this vectorises over output pixels
     * with plain loads: no gathers. Bias and activation while the sums are in registers (a separate pass
     * over the tile cost about as many instructions as the transpose, armperf). */
    void (*lut_accumulate_planar)(const float *table, const uint32_t *offset, size_t count, size_t span, float *out,
                                  int accumulate, const float *bias, uint32_t activation);
    /* LUT_DENSE accumulation: y[o] = Σ_{s < segments} table[s · codewords + idx[s · n + o]] for o < n. */
    void (*lut_accumulate_gather)(const float *table, uint32_t codewords, size_t segments, const uint16_t *idx,
                                  size_t n, float *y);
    /* dst[c · dst_stride + r] = src[r · src_stride + c] for r < rows, c < cols: planar LUT sums
     * [co][pixel] to NHWC rows [pixel][co]. */
    void (*transpose)(const float *src, size_t src_stride, size_t rows, size_t cols, float *dst, size_t dst_stride);
    /* Depthwise convolution (multiplier 1), NHWC with C = s->channels channels, output rows
     * [row_begin, row_end) of the map:
     *   out[(oy·out_w + ox)·C + c] = act(bias[c] + Σ_{ky < kh, 0 <= iy < in_h} Σ_{kx < kw, 0 <= ix < in_w}
     *                       input[(iy·in_w + ix)·C + c] · w[(ky·kw + kx)·C + c])
     *   with iy = oy·stride_h + ky − pad_top, ix = ox·stride_w + kx − pad_left,
     * for ox < out_w, c < C: taps in the padding are skipped (as the reference does), in the reference's
     * order. out is the map's first row (rows outside the range are not written: the threads split the
     * map by rows). bias may be NULL; activation is NONE, RELU or RELU6. Several rows per call so that a
     * channel block's weight vectors and bias are loaded once for all of them (the small maps of
     * MobileNetV2 have few pixels per row). Vectorised over channels. */
    void (*depthwise_rows)(const em_depthwise_shape *s, const float *input, const float *w, const float *bias,
                           size_t row_begin, size_t row_end, float *out);
} em_micro;

extern const em_micro em_micro_generic;
#if defined(EM_HAVE_X86_SIMD)
extern const em_micro em_micro_sse2;
extern const em_micro em_micro_avx2;
extern const em_micro em_micro_avx512;
#endif
#if defined(EM_HAVE_NEON)
extern const em_micro em_micro_neon;
#endif
#if defined(EM_HAVE_OPENBLAS)
extern const em_micro em_micro_blas;
#endif

/* Whether this CPU can run `kernels` (em_cpu.c): CPUID + OS state on x86, build flags elsewhere. */
int em_cpu_supports(uint32_t kernels);
/* 1 where the CPU has the ARMv8.2 dot product and this build has the sdot tiles (em_cpu.c). */
int em_cpu_has_arm_dotprod(void);
/* 1 where the CPU has VNNI (vpdpbusd) for x86 set `kernels` and this build its int8 tile: AVX512_VNNI for
 * avx512, AVX-VNNI for avx2 (em_cpu.c). */
int em_cpu_has_x86_vnni(uint32_t kernels);
/* Sets the linked BLAS's thread count (no-op without BLAS). */
void em_blas_set_threads(int threads);

#endif /* EDGEMERGE_EM_MICRO_H */
