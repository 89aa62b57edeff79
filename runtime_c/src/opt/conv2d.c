/* CONV2D and DENSE as matrix products on the ISA's micro-kernels, or on a linked BLAS.
 *
 *   direct (every ISA):  an implicit GEMM per output row: the kernel rows of an NHWC input are
 *                        contiguous runs of KW·Cin floats, so em_micro.conv_gemm reads them in place
 *                        (stride · Cin apart for consecutive output columns) and no im2col copy is
 *                        made; only a padded copy of the input when the node pads. Bias and activation
 *                        are applied in the micro-kernel's epilogue.
 *   1x1 / im2col (BLAS): for large layers, where BLAS's packing pays off: the input used in place
 *                        (1×1, stride 1, no padding) or expanded band by band into rows[pixel,
 *                        (ky, kx, ci)] within EM_IM2COL_BUDGET_BYTES, then one sgemm per band.
 *   DENSE:               y[Out] = x[In] · W[In × Out] (gemv_t).
 * Weights are used in place in their file layout ([KH, KW, Cin, Cout] is (KH·KW·Cin) × Cout
 * row-major), so nothing is packed. LUT_CONV2D nodes with r = 1 reuse the direct path with weights
 * decoded at load (lut_conv2d_f32_decoded, at the end). */
#include "em_opt_kernels.h"
#include "../ref/em_ref_kernels.h"

static int has_padding(const em_node *node)
{
    return node->pad_top != 0 || node->pad_left != 0 || node->pad_bottom != 0 || node->pad_right != 0;
}

int em_conv2d_1x1_supports(const em_node *node)
{
    return node->kernel_h == 1 && node->kernel_w == 1 && node->stride_h == 1 && node->stride_w == 1 &&
           !has_padding(node);
}

/* ---- direct (implicit GEMM) -------------------------------------------------------------------- */

em_status em_conv2d_direct_plan(const em_model *model, em_node *node, em_error *err)
{
    size_t floats = 0;
    (void)model;
    if (has_padding(node) &&
        !em_mul_size(((size_t)node->in.h + node->pad_top + node->pad_bottom) *
                         ((size_t)node->in.w + node->pad_left + node->pad_right),
                     node->in.c, &floats))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "padded input does not fit in size_t");
    if (!em_mul_size(floats, sizeof(float), &node->scratch_bytes))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "padded input does not fit in size_t");
    node->packed_bytes = 0;
    node->table_bytes = 0;
    node->table_shareable = 0;
    return EM_STATUS_OK;
}

/* Output bytes of one band of a 1x1 convolution with a fused residual (about half a typical L2), and the
 * fewest pixels in a band (below that the micro-kernels' row tiles run short). */
#ifndef EM_RESIDUAL_BAND_BYTES
#define EM_RESIDUAL_BAND_BYTES (128u * 1024u)
#endif
#ifndef EM_RESIDUAL_BAND_MIN_PIXELS
#define EM_RESIDUAL_BAND_MIN_PIXELS 64u
#endif

/* The fused residual ADD (em_plan.c fuse_residual_adds): y = act(y + r) on one band of output rows just
 * computed, while it is in cache; the same float32 operations as the conv's output followed by ADD. */
static void add_residual(float *y, const float *r, size_t n, uint32_t activation)
{
    em_opt_add_activate(y, y, r, n, activation);
}

/* The direct convolution in two steps, each over a range of its pieces, so a run can be split over threads
 * (em_kernels.h split / run_part): step 0, the zero-padded copy of padded input rows [begin, end) into
 * scratch (nothing without padding); step 1, output rows [begin, end) (for 1×1 nodes, rows of out_w pixels
 * of the one product). Every output element is the same micro-kernel sum whichever range computes it. */
static uint32_t conv_direct_steps(const em_node *node, uint32_t step, uint32_t *units)
{
    if (step == 0) {
        *units = has_padding(node) ? node->in.h + node->pad_top + node->pad_bottom : 0u;
        return EM_STEP_OUTPUT;
    }
    if (step == 1) {
        *units = node->out.h;
        return EM_STEP_OUTPUT;
    }
    return 0;
}

static void conv_direct_pad_rows(const em_node *node, const float *input, float *scratch, uint32_t begin, uint32_t end)
{
    const size_t cin = node->in.c, row = (size_t)node->in.w * cin;
    const size_t x_row = ((size_t)node->in.w + node->pad_left + node->pad_right) * cin;
    uint32_t y;
    for (y = begin; y < end; ++y) {
        float *dst = scratch + (size_t)y * x_row;
        size_t i;
        if (y < node->pad_top || y - node->pad_top >= node->in.h) {
            for (i = 0; i < x_row; ++i) dst[i] = 0.0f;
            continue;
        }
        for (i = 0; i < (size_t)node->pad_left * cin; ++i) dst[i] = 0.0f;
        for (i = 0; i < row; ++i) dst[(size_t)node->pad_left * cin + i] = input[(size_t)(y - node->pad_top) * row + i];
        for (i = (size_t)node->pad_left * cin + row; i < x_row; ++i) dst[i] = 0.0f;
    }
}

static void conv_direct_rows(const em_node *node, const float *input, float *output, const float *weights,
                             const float *scratch, const float *residual, uint32_t begin, uint32_t end)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t cin = node->in.c, cout = node->out.c, out_w = node->out.w;
    const float *bias = em_tensor_f32(node->bias);
    const float *x = input;
    size_t x_row = (size_t)node->in.w * cin; /* floats per input row */
    const size_t out_row = (size_t)out_w * cout;
    uint32_t oy;
    if (em_conv2d_1x1_supports(node)) { /* every pixel is one row of A */
        const size_t first = (size_t)begin * out_w, pixels = (size_t)(end - begin) * out_w;
        if (residual == NULL) {
            micro->conv_gemm(pixels, cout, 1, cin, input + first * cin, cin, 0, weights, cout, output + first * cout,
                             cout, bias, node->activation);
            return;
        }
        /* a band of pixels at a time, then its residual while the band is in cache. Bands are large: each
         * product call streams the whole weight matrix, so one band per output row made the 7x7x960->160
         * MobileNetV2 projection 1.6x slower than conv-then-ADD (em_bench_kernels residual section). */
        {
            size_t band = EM_RESIDUAL_BAND_BYTES / ((size_t)cout * sizeof(float)), p0;
            if (band < EM_RESIDUAL_BAND_MIN_PIXELS) band = EM_RESIDUAL_BAND_MIN_PIXELS;
            for (p0 = first; p0 < first + pixels; p0 += band) {
                const size_t m = first + pixels - p0 < band ? first + pixels - p0 : band;
                micro->conv_gemm(m, cout, 1, cin, input + p0 * cin, cin, 0, weights, cout, output + p0 * cout, cout,
                                 bias, node->activation);
                add_residual(output + p0 * cout, residual + p0 * cout, m * cout, node->residual_activation);
            }
        }
        return;
    }
    if (has_padding(node)) { /* the zero-padded copy (step 0), so every kernel row is in bounds */
        x_row = ((size_t)node->in.w + node->pad_left + node->pad_right) * cin;
        x = scratch;
    }
    for (oy = begin; oy < end; ++oy) {
        micro->conv_gemm(out_w, cout, node->kernel_h, (size_t)node->kernel_w * cin, x + (size_t)oy * node->stride_h * x_row,
                         (size_t)node->stride_w * cin, x_row, weights, cout, output + (size_t)oy * out_w * cout, cout,
                         bias, node->activation);
        if (residual != NULL)
            add_residual(output + oy * out_row, residual + oy * out_row, out_row, node->residual_activation);
    }
}

static void conv_direct_part(const em_node *node, const float *input, float *output, const float *weights,
                             const em_kernel_env *env, uint32_t step, uint32_t begin, uint32_t end)
{
    if (step == 0) conv_direct_pad_rows(node, input, env->scratch, begin, end);
    else conv_direct_rows(node, input, output, weights, env->scratch, env->residual, begin, end);
}

static void conv_direct(const em_node *node, const float *input, float *output, const float *weights,
                        const em_kernel_env *env)
{
    uint32_t step, units;
    for (step = 0; conv_direct_steps(node, step, &units) != 0; ++step)
        if (units > 0) conv_direct_part(node, input, output, weights, env, step, 0, units);
}

void em_conv2d_direct_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    conv_direct(node, input, output, em_tensor_f32(node->weight), env);
}

uint32_t em_conv2d_direct_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units)
{
    (void)env;
    return conv_direct_steps(node, step, units);
}

void em_conv2d_direct_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                               uint32_t step, uint32_t begin, uint32_t end)
{
    conv_direct_part(node, input, output, em_tensor_f32(node->weight), env, step, begin, end);
}

/* ---- BLAS: 1×1 in place, im2col in bands --------------------------------------------------------- */

void em_conv2d_1x1_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    em_conv2d_1x1_fused_run(node, input, output, (size_t)node->out.h * node->out.w);
}

/* Run groups (em_plan.c): the 1×1 kernels above are one product over the pixel rows, so a group of nodes
 * with the same weights whose inputs (and outputs) lie back to back is one product over all their rows.
 * These are the registry's fused_run slots of conv2d_f32_direct_<isa> (for 1×1 nodes) and
 * conv2d_f32_1x1_blas. */
void em_conv2d_1x1_fused_run(const em_node *node, const float *input, float *output, size_t pixels)
{
    node->kernel->micro->gemm(pixels, node->out.c, node->in.c, input, node->in.c, em_tensor_f32(node->weight),
                              node->out.c, output, node->out.c);
    em_opt_bias_activate(output, pixels, node->out.c, em_tensor_f32(node->bias), node->activation);
}

void em_conv2d_direct_fused_run(const em_node *node, const float *input, float *output, size_t pixels)
{
    node->kernel->micro->conv_gemm(pixels, node->out.c, 1, node->in.c, input, node->in.c, 0,
                                   em_tensor_f32(node->weight), node->out.c, output, node->out.c,
                                   em_tensor_f32(node->bias), node->activation);
}

/* Output rows per im2col band (at least 1). */
static uint32_t im2col_band_rows(const em_node *node)
{
    const uint64_t row_floats = (uint64_t)node->out.w * node->kernel_h * node->kernel_w * node->in.c;
    uint64_t rows = EM_IM2COL_BUDGET_BYTES / (row_floats * 4u);
    if (rows < 1u) rows = 1u;
    if (rows > node->out.h) rows = node->out.h;
    return (uint32_t)rows;
}

em_status em_conv2d_im2col_plan(const em_model *model, em_node *node, em_error *err)
{
    size_t floats;
    (void)model;
    if (!em_mul_size((size_t)im2col_band_rows(node) * node->out.w,
                     (size_t)node->kernel_h * node->kernel_w * node->in.c, &floats) ||
        !em_mul_size(floats, sizeof(float), &node->scratch_bytes))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "im2col band does not fit in size_t");
    node->packed_bytes = 0;
    node->table_bytes = 0;
    node->table_shareable = 0;
    return EM_STATUS_OK;
}

void em_conv2d_im2col_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const uint32_t in_h = node->in.h, in_w = node->in.w, cin = node->in.c;
    const uint32_t out_w = node->out.w, cout = node->out.c;
    const uint32_t band = im2col_band_rows(node);
    const size_t depth = (size_t)node->kernel_h * node->kernel_w * cin; /* K of the product */
    float *rows = env->scratch;
    uint32_t oy0, oy, ox, ky, kx, ci;

    for (oy0 = 0; oy0 < node->out.h; oy0 += band) {
        const uint32_t band_rows = node->out.h - oy0 < band ? node->out.h - oy0 : band;
        float *dst = rows;
        for (oy = oy0; oy < oy0 + band_rows; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                for (ky = 0; ky < node->kernel_h; ++ky) {
                    const uint64_t yp = (uint64_t)oy * node->stride_h + ky;
                    const int row_inside = yp >= node->pad_top && yp - node->pad_top < in_h;
                    for (kx = 0; kx < node->kernel_w; ++kx) {
                        const uint64_t xp = (uint64_t)ox * node->stride_w + kx;
                        if (row_inside && xp >= node->pad_left && xp - node->pad_left < in_w) {
                            const float *src =
                                input + ((size_t)(yp - node->pad_top) * in_w + (size_t)(xp - node->pad_left)) * cin;
                            for (ci = 0; ci < cin; ++ci) dst[ci] = src[ci];
                        } else {
                            for (ci = 0; ci < cin; ++ci) dst[ci] = 0.0f;
                        }
                        dst += cin;
                    }
                }
            }
        }
        node->kernel->micro->gemm((size_t)band_rows * out_w, cout, depth, rows, depth, em_tensor_f32(node->weight),
                                  cout, output + (size_t)oy0 * out_w * cout, cout);
    }
    em_opt_bias_activate(output, (size_t)node->out.h * out_w, cout, em_tensor_f32(node->bias), node->activation);
}

/* ---- DENSE --------------------------------------------------------------------------------------- */

void em_dense_gemv_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    node->kernel->micro->gemv_t(node->in.numel, node->out.c, input, em_tensor_f32(node->weight), node->out.c,
                                output);
    em_opt_bias_activate(output, 1, node->out.c, em_tensor_f32(node->bias), node->activation);
}

/* ---- LUT_CONV2D with decoded weights ------------------------------------------------------------
 * With r = 1 a LUT convolution saves nothing: its table is x · codeword, one multiply per input
 * channel and codeword, and the accumulation does as many additions as a convolution does
 * multiply-adds. The paper's presets use r = 1 exactly for first layers (1-3 input channels), whose
 * weights are tiny, so there the codebook is decoded once at load (W[ky,kx,ci,co] =
 * codebook[ci / r, index[ky,kx,ci / r,co], ci % r], FORMAT.md) and the layer runs as a direct
 * convolution: no table, NHWC output straight from the micro-kernel. em_kernel_choose (em_select.c) bounds the
 * decoded size (EM_LUT_DECODE_MAX_BYTES). */
em_status em_lut_conv2d_decoded_plan(const em_model *model, em_node *node, em_error *err)
{
    size_t floats, packed;
    em_status st;
    if (!em_mul_size((size_t)node->kernel_h * node->kernel_w * node->in.c, node->out.c, &floats) ||
        !em_mul_size(floats, sizeof(float), &packed))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "decoded weights do not fit in size_t");
    st = em_conv2d_direct_plan(model, node, err);
    node->packed_bytes = packed;
    return st;
}

void em_lut_conv2d_decoded_pack(const em_model *model, em_node *node)
{
    float *w = (float *)node->packed;
    const float *codebook = em_tensor_f32(node->weight);
    const uint32_t taps = node->kernel_h * node->kernel_w, cin = node->in.c, cout = node->out.c;
    const uint32_t r = node->seg_len, S = node->segments;
    uint32_t tap, ci, co;
    (void)model;
    for (tap = 0; tap < taps; ++tap)
        for (ci = 0; ci < cin; ++ci) {
            const uint32_t s = ci / r, j = ci % r;
            for (co = 0; co < cout; ++co) {
                const uint32_t c = em_idx_get(node->index_map->data, node->index_map->bits,
                                              ((uint64_t)tap * S + s) * cout + co);
                w[((size_t)tap * cin + ci) * cout + co] =
                    codebook[s * node->codebook_segment_stride + (size_t)c * r + j];
            }
        }
}

/* The decoded kernel is the direct convolution on the decoded weights, fused residual ADD included (ResNet
 * blocks whose second conv is a merged layer: the ADD's pass over memory and its buffer go). */
void em_lut_conv2d_decoded_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    conv_direct(node, input, output, (const float *)node->packed, env);
}

void em_lut_conv2d_decoded_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                    uint32_t step, uint32_t begin, uint32_t end)
{
    conv_direct_part(node, input, output, (const float *)node->packed, env, step, begin, end);
}

/* ---- DENSE split into blocks of EM_SPLIT_COLUMNS outputs (gemv_t's 4-vector blocks, then its tail, as in
 * one call: the block boundaries are multiples of the 4-vector width) ---------------------------------- */

uint32_t em_dense_gemv_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units)
{
    (void)env;
    if (step != 0) return 0;
    *units = (node->out.c + EM_SPLIT_COLUMNS - 1u) / EM_SPLIT_COLUMNS;
    return EM_STEP_OUTPUT;
}

void em_dense_gemv_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                            uint32_t step, uint32_t begin, uint32_t end)
{
    const size_t j0 = (size_t)begin * EM_SPLIT_COLUMNS;
    const size_t j1 = (size_t)end * EM_SPLIT_COLUMNS < node->out.c ? (size_t)end * EM_SPLIT_COLUMNS : node->out.c;
    const float *bias = em_tensor_f32(node->bias);
    (void)env;
    (void)step;
    node->kernel->micro->gemv_t(node->in.numel, j1 - j0, input, em_tensor_f32(node->weight) + j0, node->out.c,
                                output + j0);
    em_opt_bias_activate(output + j0, 1, (uint32_t)(j1 - j0), bias != NULL ? bias + j0 : NULL, node->activation);
}
