/* Fast kernels of the ops without a matrix product (depthwise convolution, pools, reshape,
 * activation) and helpers shared by the fast kernels. Portable C with the innermost loop over
 * channels, which are contiguous in NHWC: compilers vectorise these loops for the base ISA, and the
 * ops are memory-bound anyway, so they need no per-ISA copies. Pools and reshape give the same bits
 * as the reference (same order of operations); depthwise sums in the same order too. */
#include <string.h>

#include "em_opt_kernels.h"
#include "../ref/em_ref_kernels.h"

#if defined(EM_HAVE_NEON) && (defined(__aarch64__) || defined(__ARM_NEON))
#include <arm_neon.h>
#define EM_POOL_NEON 1
#elif defined(EM_HAVE_X86_SIMD) && (defined(__SSE2__) || defined(_M_X64))
#include <emmintrin.h>
#define EM_POOL_SSE2 1
#endif

size_t em_opt_align_floats(size_t floats)
{
    const size_t per_line = EM_CONTEXT_ALIGNMENT / sizeof(float);
    return (floats + per_line - 1u) / per_line * per_line;
}

em_status em_opt_plan_own_bytes(em_node *node, int fits, size_t packed_bytes, size_t scratch_bytes, em_error *err)
{
    if (!fits) /* em_kernel_choose checked supports(); defensive */
        return em_fail_node(err, EM_STATUS_LIMIT, node, "too large for kernel %s", node->kernel->name);
    node->packed_bytes = packed_bytes;
    node->scratch_bytes = scratch_bytes;
    node->table_bytes = 0;
    node->table_shareable = 0;
    return EM_STATUS_OK;
}

em_status em_opt_plan_no_scratch(const em_model *model, em_node *node, em_error *err)
{
    (void)model;
    (void)err;
    node->scratch_bytes = 0;
    node->packed_bytes = 0;
    node->table_bytes = 0;
    node->table_shareable = 0;
    return EM_STATUS_OK;
}

#if defined(EM_POOL_NEON) && defined(__aarch64__)
/* Channels [0, channels & ~3) of every pixel, the same values as the scalar loops of em_opt_bias_activate (IEEE
 * adds: armv7 NEON would flush subnormals, hence aarch64 only; FMAX / FMIN keep NaN and give max(-0, +0) = +0,
 * so with no bias the +0 added before a ReLU changes nothing). One loop per activation with nothing left to
 * decide inside: GCC left the scalar passes scalar on aarch64, where after int8-table layers they cost about
 * a twentieth of the model's instructions (armperf). Returns the channels done. */
static uint32_t bias_activate_neon(float *y, size_t pixels, uint32_t channels, const float *bias, uint32_t activation)
{
    const size_t vec = channels & ~3u;
    const float32x4_t zero = vdupq_n_f32(0.0f), six = vdupq_n_f32(6.0f);
    size_t p, c;
#define EM_BIAS_ACT_LOOP(EXPR)                                                                                   \
    for (p = 0; p < pixels; ++p) {                                                                              \
        float *row = y + p * channels;                                                                          \
        for (c = 0; c < vec; c += 4u) {                                                                         \
            const float32x4_t v = vaddq_f32(vld1q_f32(row + c), bias != NULL ? vld1q_f32(bias + c) : zero);     \
            vst1q_f32(row + c, EXPR);                                                                           \
        }                                                                                                       \
    }
    if (activation == EM_ACT_RELU) {
        EM_BIAS_ACT_LOOP(vmaxq_f32(v, zero))
    } else if (activation == EM_ACT_RELU6) {
        EM_BIAS_ACT_LOOP(vminq_f32(vmaxq_f32(v, zero), six))
    } else if (bias != NULL) {
        EM_BIAS_ACT_LOOP(v)
    }
#undef EM_BIAS_ACT_LOOP
    return (uint32_t)vec;
}
#endif

void em_opt_bias_activate(float *y, size_t pixels, uint32_t channels, const float *bias, uint32_t activation)
{
    size_t p;
    uint32_t c, first = 0; /* channels already done in every pixel */
    if (bias == NULL && activation == EM_ACT_NONE) return;
#if defined(EM_POOL_NEON) && defined(__aarch64__)
    first = bias_activate_neon(y, pixels, channels, bias, activation);
    if (first == channels) return;
#endif
    for (p = 0; p < pixels; ++p) {
        float *row = y + p * channels;
        if (bias != NULL)
            for (c = first; c < channels; ++c) row[c] += bias[c];
        if (activation == EM_ACT_RELU) {
            for (c = first; c < channels; ++c) row[c] = row[c] <= 0.0f ? 0.0f : row[c]; /* NaN stays NaN */
        } else if (activation == EM_ACT_RELU6) {
            for (c = first; c < channels; ++c) row[c] = row[c] <= 0.0f ? 0.0f : (row[c] > 6.0f ? 6.0f : row[c]);
        }
    }
}

/* Row kernels split over threads (em_kernels.h): one step, one piece per output row; the serial run is the
 * same loop over every row. */
uint32_t em_opt_split_rows(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units)
{
    (void)env;
    if (step != 0) return 0;
    *units = node->out.h;
    return EM_STEP_OUTPUT;
}

static void depthwise_direct_rows(const em_node *node, const float *input, float *output, uint32_t begin, uint32_t end)
{
    const uint32_t in_w = node->in.w, cin = node->in.c, out_w = node->out.w, cout = node->out.c;
    const uint32_t multiplier = cout / cin;
    const float *weights = em_tensor_f32(node->weight); /* [KH, KW, Cin, M]: tap-major rows of Cout */
    const float *bias = em_tensor_f32(node->bias);
    uint32_t oy, ox, ky, kx, c, m;
    for (oy = begin; oy < end; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            float *acc = output + ((size_t)oy * out_w + ox) * cout;
            for (c = 0; c < cout; ++c) acc[c] = 0.0f;
            for (ky = 0; ky < node->kernel_h; ++ky) {
                const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, node->in.h);
                if (iy < 0) continue;
                for (kx = 0; kx < node->kernel_w; ++kx) {
                    const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                    const float *x, *w;
                    if (ix < 0) continue;
                    x = input + ((size_t)iy * in_w + (size_t)ix) * cin;
                    w = weights + ((size_t)ky * node->kernel_w + kx) * cout;
                    if (multiplier == 1) {
                        for (c = 0; c < cin; ++c) acc[c] += x[c] * w[c];
                    } else {
                        for (c = 0; c < cin; ++c)
                            for (m = 0; m < multiplier; ++m) acc[c * multiplier + m] += x[c] * w[c * multiplier + m];
                    }
                }
            }
            for (c = 0; c < cout; ++c) acc[c] = em_activate(bias ? acc[c] + bias[c] : acc[c], node->activation);
        }
    }
}

void em_depthwise_conv2d_direct_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    depthwise_direct_rows(node, input, output, 0, node->out.h);
}

void em_depthwise_conv2d_direct_run_part(const em_node *node, const float *input, float *output,
                                         const em_kernel_env *env, uint32_t step, uint32_t begin, uint32_t end)
{
    (void)env;
    (void)step;
    depthwise_direct_rows(node, input, output, begin, end);
}

/* Depthwise with multiplier 1 (MobileNets) on the ISA's depthwise_rows micro-kernel: one call for the
 * node's rows (or a thread's piece of them), which finds the input rows under the kernel itself (no
 * padded copy is made) and loads each channel block's weights once for many rows. */
int em_depthwise_conv2d_rows_supports(const em_node *node)
{
    return node->out.c == node->in.c && node->kernel_h <= EM_MAX_KERNEL;
}

static void depthwise_micro_rows(const em_node *node, const float *input, float *output, uint32_t begin, uint32_t end)
{
    em_depthwise_shape s;
    s.in_h = node->in.h;
    s.in_w = node->in.w;
    s.channels = node->in.c;
    s.kh = node->kernel_h;
    s.kw = node->kernel_w;
    s.stride_h = node->stride_h;
    s.stride_w = node->stride_w;
    s.pad_top = node->pad_top;
    s.pad_left = node->pad_left;
    s.out_w = node->out.w;
    s.activation = node->activation;
    node->kernel->micro->depthwise_rows(&s, input, em_tensor_f32(node->weight), em_tensor_f32(node->bias), begin, end,
                                        output);
}

void em_depthwise_conv2d_rows_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    depthwise_micro_rows(node, input, output, 0, node->out.h);
}

void em_depthwise_conv2d_rows_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                       uint32_t step, uint32_t begin, uint32_t end)
{
    (void)env;
    (void)step;
    depthwise_micro_rows(node, input, output, begin, end);
}

/* max over one more window cell, as the reference: take x where x > dst or x is NaN (so the first NaN
 * met stays, and of +0/-0 the first cell's sign), n channels. The NEON / SSE2 paths compute exactly this
 * per lane with a compare and a select (no FMAX/MAXPS: those differ on NaN operands and on ±0). */
static void max_into(float *dst, const float *x, size_t n)
{
    size_t c = 0;
#if defined(EM_POOL_NEON)
    for (; c + 4u <= n; c += 4u) {
        const float32x4_t xv = vld1q_f32(x + c), d = vld1q_f32(dst + c);
        const uint32x4_t take = vorrq_u32(vcgtq_f32(xv, d), vmvnq_u32(vceqq_f32(xv, xv)));
        vst1q_f32(dst + c, vbslq_f32(take, xv, d));
    }
#elif defined(EM_POOL_SSE2)
    for (; c + 4u <= n; c += 4u) {
        const __m128 xv = _mm_loadu_ps(x + c), d = _mm_loadu_ps(dst + c);
        const __m128 take = _mm_or_ps(_mm_cmpgt_ps(xv, d), _mm_cmpunord_ps(xv, xv));
        _mm_storeu_ps(dst + c, _mm_or_ps(_mm_and_ps(take, xv), _mm_andnot_ps(take, d)));
    }
#endif
    for (; c < n; ++c) dst[c] = (x[c] > dst[c] || x[c] != x[c]) ? x[c] : dst[c];
}

/* dst = the max of `count` cells (count >= 1, in the reference's cell order), n channels: one pass over
 * the channels with each vector of sums kept in a register across the cells. */
static void max_cells(float *dst, const float *const *cells, size_t count, size_t n)
{
    size_t c = 0, k;
#if defined(EM_POOL_NEON)
#define EM_POOL_TAKE(x, d) vbslq_f32(vorrq_u32(vcgtq_f32((x), (d)), vmvnq_u32(vceqq_f32((x), (x)))), (x), (d))
    if (count == 4u) { /* 2×2 windows (LeNet-style pools): unrolled, no loop over the cells */
        const float *c0 = cells[0], *c1 = cells[1], *c2 = cells[2], *c3 = cells[3];
        for (; c + 4u <= n; c += 4u) {
            float32x4_t d = vld1q_f32(c0 + c);
            d = EM_POOL_TAKE(vld1q_f32(c1 + c), d);
            d = EM_POOL_TAKE(vld1q_f32(c2 + c), d);
            vst1q_f32(dst + c, EM_POOL_TAKE(vld1q_f32(c3 + c), d));
        }
    }
    for (; c + 4u <= n; c += 4u) {
        float32x4_t d = vld1q_f32(cells[0] + c);
        for (k = 1; k < count; ++k) {
            const float32x4_t xv = vld1q_f32(cells[k] + c);
            d = EM_POOL_TAKE(xv, d);
        }
        vst1q_f32(dst + c, d);
    }
#undef EM_POOL_TAKE
#elif defined(EM_POOL_SSE2)
    for (; c + 4u <= n; c += 4u) {
        __m128 d = _mm_loadu_ps(cells[0] + c);
        for (k = 1; k < count; ++k) {
            const __m128 xv = _mm_loadu_ps(cells[k] + c);
            const __m128 take = _mm_or_ps(_mm_cmpgt_ps(xv, d), _mm_cmpunord_ps(xv, xv));
            d = _mm_or_ps(_mm_and_ps(take, xv), _mm_andnot_ps(take, d));
        }
        _mm_storeu_ps(dst + c, d);
    }
#endif
    for (; c < n; ++c) {
        float d = cells[0][c];
        for (k = 1; k < count; ++k) d = (cells[k][c] > d || cells[k][c] != cells[k][c]) ? cells[k][c] : d;
        dst[c] = d;
    }
}

/* dst = x, n floats: the pools copy one pixel's channels (often 16-64 floats) per output, where a memcpy
 * call costs more than the copy (about an eighth of a LeNet's instructions on aarch64, armperf). */
static void copy_cells(float *dst, const float *x, size_t n)
{
    size_t c = 0;
#if defined(EM_POOL_NEON)
    for (; c + 4u <= n; c += 4u) vst1q_f32(dst + c, vld1q_f32(x + c));
#elif defined(EM_POOL_SSE2)
    for (; c + 4u <= n; c += 4u) _mm_storeu_ps(dst + c, _mm_loadu_ps(x + c));
#endif
    for (; c < n; ++c) dst[c] = x[c];
}

/* Window walk shared by the pools: max, or mean over the cells inside the input. Max windows of up to
 * EM_POOL_MAX_CELLS cells gather their cell pointers first and take the max in one pass (max_cells). */
#define EM_POOL_MAX_CELLS 64u
static void pool(const em_node *node, const float *input, float *output, int average, uint32_t begin, uint32_t end)
{
    const uint32_t in_w = node->in.w, channels = node->in.c, out_w = node->out.w;
    uint32_t oy, ox, ky, kx, c;
    if (!average && node->kernel_h == 2u && node->kernel_w == 2u && node->stride_h == 2u && node->stride_w == 2u &&
        node->pad_top == 0u && node->pad_left == 0u && 2u * node->out.h <= node->in.h && 2u * out_w <= in_w) {
        /* 2×2 stride 2 without padding (LeNet/VGG-style pools): every window is whole, so its four cells
         * are fixed offsets; the general walk below spent more on coordinates than on the max (armperf) */
        const size_t row = (size_t)in_w * channels;
        for (oy = begin; oy < end; ++oy) {
            const float *top = input + (size_t)2u * oy * row;
            for (ox = 0; ox < out_w; ++ox) {
                float *dst = output + ((size_t)oy * out_w + ox) * channels;
                const float *cell[4];
                cell[0] = top + (size_t)2u * ox * channels;
                cell[1] = cell[0] + channels;
                cell[2] = cell[0] + row;
                cell[3] = cell[2] + channels;
                max_cells(dst, cell, 4u, channels);
                if (node->activation != EM_ACT_NONE)
                    for (c = 0; c < channels; ++c) dst[c] = em_activate(dst[c], node->activation);
            }
        }
        return;
    }
    for (oy = begin; oy < end; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            float *dst = output + ((size_t)oy * out_w + ox) * channels;
            uint32_t cells = 0;
            if (!average && node->kernel_h * node->kernel_w <= EM_POOL_MAX_CELLS) {
                const float *cell[EM_POOL_MAX_CELLS];
                for (ky = 0; ky < node->kernel_h; ++ky) {
                    const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, node->in.h);
                    if (iy < 0) continue;
                    for (kx = 0; kx < node->kernel_w; ++kx) {
                        const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                        if (ix >= 0) cell[cells++] = input + ((size_t)iy * in_w + (size_t)ix) * channels;
                    }
                }
                if (cells > 0) max_cells(dst, cell, cells, channels); /* the loader refuses empty windows */
                if (node->activation != EM_ACT_NONE)
                    for (c = 0; c < channels; ++c) dst[c] = em_activate(dst[c], node->activation);
                continue;
            }
            for (ky = 0; ky < node->kernel_h; ++ky) {
                const int32_t iy = em_input_coord(oy, node->stride_h, ky, node->pad_top, node->in.h);
                if (iy < 0) continue;
                for (kx = 0; kx < node->kernel_w; ++kx) {
                    const int32_t ix = em_input_coord(ox, node->stride_w, kx, node->pad_left, in_w);
                    const float *x;
                    if (ix < 0) continue;
                    x = input + ((size_t)iy * in_w + (size_t)ix) * channels;
                    if (cells == 0) {
                        copy_cells(dst, x, channels);
                    } else if (average) {
                        for (c = 0; c < channels; ++c) dst[c] += x[c];
                    } else {
                        max_into(dst, x, channels);
                    }
                    ++cells;
                }
            }
            if (average)
                for (c = 0; c < channels; ++c) dst[c] = em_activate(dst[c] / (float)cells, node->activation);
            else if (node->activation != EM_ACT_NONE)
                for (c = 0; c < channels; ++c) dst[c] = em_activate(dst[c], node->activation);
        }
    }
}

void em_max_pool_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    pool(node, input, output, 0, 0, node->out.h);
}

/* both pools' run_part: the op says which */
void em_pool_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                      uint32_t step, uint32_t begin, uint32_t end)
{
    (void)env;
    (void)step;
    pool(node, input, output, node->op == EM_OP_AVG_POOL, begin, end);
}

void em_avg_pool_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    pool(node, input, output, 1, 0, node->out.h);
}


void em_global_avg_pool_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const uint32_t channels = node->in.c;
    const size_t pixels = (size_t)node->in.h * node->in.w;
    size_t p;
    uint32_t c;
    (void)env;
    for (c = 0; c < channels; ++c) output[c] = 0.0f;
    for (p = 0; p < pixels; ++p) {
        const float *x = input + p * channels;
        for (c = 0; c < channels; ++c) output[c] += x[c];
    }
    for (c = 0; c < channels; ++c) output[c] = em_activate(output[c] / (float)pixels, node->activation);
}

void em_copy_activate_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    (void)env;
    if (output != input) memcpy(output, input, (size_t)node->out.numel * sizeof(float));
    em_opt_activate(output, node->out.numel, node->activation);
}
