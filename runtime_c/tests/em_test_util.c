#include "em_test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_internal.h" /* em_model_load_forced */
#include "em_kernels.h"  /* em_kernel_list */

static int checks_run;
static int checks_failed;

int em_test_check(int ok, const char *file, int line, const char *what)
{
    ++checks_run;
    if (!ok) {
        ++checks_failed;
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
    }
    return ok;
}

int em_test_checkf(int ok, const char *file, int line, const char *fmt, ...)
{
    ++checks_run;
    if (!ok) {
        va_list args;
        ++checks_failed;
        fprintf(stderr, "%s:%d: CHECK failed: ", file, line);
        va_start(args, fmt);
        vfprintf(stderr, fmt, args);
        va_end(args);
        fputc('\n', stderr);
    }
    return ok;
}

int em_test_failures(void)
{
    return checks_failed;
}

const char *em_test_verdict(int failures_before)
{
    static char text[64];
    if (checks_failed == failures_before) return "exact";
    snprintf(text, sizeof text, "NOT exact (failed checks: %d)", checks_failed - failures_before);
    return text;
}

int em_test_summary(const char *name)
{
    printf("%s: %d checks, %d failures\n", name, checks_run, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

void em_test_rng_seed(em_test_rng *rng, uint32_t seed)
{
    rng->state = seed != 0 ? seed : 0x9E3779B9u;
}

uint32_t em_test_rand_u32(em_test_rng *rng)
{
    uint32_t x = rng->state; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng->state = x;
    return x;
}

uint32_t em_test_rand_below(em_test_rng *rng, uint32_t n)
{
    return n != 0 ? em_test_rand_u32(rng) % n : 0;
}

float em_test_rand_float(em_test_rng *rng)
{
    return (float)(em_test_rand_u32(rng) >> 8) / 8388608.0f - 1.0f; /* 24 bits -> [-1, 1) */
}

void em_test_fill(em_test_rng *rng, float *values, size_t n, float scale)
{
    size_t i;
    for (i = 0; i < n; ++i) values[i] = scale * em_test_rand_float(rng);
}

int em_test_close(const float *got, const double *want, size_t n, double tol, const char *what)
{
    double max_abs = 0.0;
    size_t i;
    for (i = 0; i < n; ++i)
        if (fabs(want[i]) > max_abs) max_abs = fabs(want[i]);
    for (i = 0; i < n; ++i) {
        if (!(fabs((double)got[i] - want[i]) <= tol * (1.0 + max_abs)))
            return em_test_checkf(0, __FILE__, __LINE__, "%s: element %zu is %.9g, expected %.9g (max |want| %.3g)",
                                  what, i, (double)got[i], want[i], max_abs);
    }
    return em_test_check(1, __FILE__, __LINE__, what);
}

uint32_t em_test_out_size(uint32_t size, uint32_t kernel, uint32_t stride, uint32_t pad_a, uint32_t pad_b)
{
    return (size + pad_a + pad_b - kernel) / stride + 1u;
}

double em_test_activate(double x, uint32_t activation)
{
    if (activation == EM_ACT_RELU) return x > 0.0 ? x : 0.0;
    if (activation == EM_ACT_RELU6) return x < 0.0 ? 0.0 : (x > 6.0 ? 6.0 : x);
    return x;
}

double *em_test_pad(const float *x, uint32_t h, uint32_t w, uint32_t c, const em_test_window *win)
{
    const size_t ph = h + win->pt + win->pb, pw = w + win->pl + win->pr;
    double *p = (double *)calloc(ph * pw * c, sizeof(double));
    size_t y, xx, k;
    for (y = 0; y < h; ++y)
        for (xx = 0; xx < w; ++xx)
            for (k = 0; k < c; ++k) p[((y + win->pt) * pw + xx + win->pl) * c + k] = x[(y * w + xx) * c + k];
    return p;
}

void em_test_naive_conv2d(const float *x, uint32_t h, uint32_t w, uint32_t cin, const double *weights,
                          uint32_t cout, const float *bias, const em_test_window *win, uint32_t activation,
                          double *out)
{
    const uint32_t oh = em_test_out_size(h, win->kh, win->sh, win->pt, win->pb);
    const uint32_t ow = em_test_out_size(w, win->kw, win->sw, win->pl, win->pr);
    const size_t pw = w + win->pl + win->pr;
    double *p = em_test_pad(x, h, w, cin, win);
    size_t oy, ox, co, ky, kx, ci;
    for (oy = 0; oy < oh; ++oy)
        for (ox = 0; ox < ow; ++ox)
            for (co = 0; co < cout; ++co) {
                double acc = bias ? (double)bias[co] : 0.0;
                for (ky = 0; ky < win->kh; ++ky)
                    for (kx = 0; kx < win->kw; ++kx)
                        for (ci = 0; ci < cin; ++ci)
                            acc += p[((oy * win->sh + ky) * pw + ox * win->sw + kx) * cin + ci] *
                                   weights[((ky * win->kw + kx) * cin + ci) * cout + co];
                out[(oy * ow + ox) * cout + co] = em_test_activate(acc, activation);
            }
    free(p);
}

void em_test_naive_depthwise(const float *x, uint32_t h, uint32_t w, uint32_t cin, const float *weights,
                             uint32_t multiplier, const float *bias, const em_test_window *win,
                             uint32_t activation, double *out)
{
    const uint32_t oh = em_test_out_size(h, win->kh, win->sh, win->pt, win->pb);
    const uint32_t ow = em_test_out_size(w, win->kw, win->sw, win->pl, win->pr);
    const size_t pw = w + win->pl + win->pr, cout = (size_t)cin * multiplier;
    double *p = em_test_pad(x, h, w, cin, win);
    size_t oy, ox, c, m, ky, kx;
    for (oy = 0; oy < oh; ++oy)
        for (ox = 0; ox < ow; ++ox)
            for (c = 0; c < cin; ++c)
                for (m = 0; m < multiplier; ++m) {
                    double acc = bias ? (double)bias[c * multiplier + m] : 0.0;
                    for (ky = 0; ky < win->kh; ++ky)
                        for (kx = 0; kx < win->kw; ++kx)
                            acc += p[((oy * win->sh + ky) * pw + ox * win->sw + kx) * cin + c] *
                                   (double)weights[((ky * win->kw + kx) * cin + c) * multiplier + m];
                    out[(oy * ow + ox) * cout + c * multiplier + m] = em_test_activate(acc, activation);
                }
    free(p);
}

void em_test_naive_dense(const float *x, uint32_t in, const double *weights, uint32_t out_count, const float *bias,
                         uint32_t activation, double *out)
{
    size_t i, o;
    for (o = 0; o < out_count; ++o) {
        double acc = bias ? (double)bias[o] : 0.0;
        for (i = 0; i < in; ++i) acc += (double)x[i] * weights[i * out_count + o];
        out[o] = em_test_activate(acc, activation);
    }
}

void em_test_naive_pool(const float *x, uint32_t h, uint32_t w, uint32_t c, const em_test_window *win, int average,
                        uint32_t activation, double *out)
{
    const uint32_t oh = em_test_out_size(h, win->kh, win->sh, win->pt, win->pb);
    const uint32_t ow = em_test_out_size(w, win->kw, win->sw, win->pl, win->pr);
    size_t oy, ox, k, ky, kx;
    for (oy = 0; oy < oh; ++oy)
        for (ox = 0; ox < ow; ++ox)
            for (k = 0; k < c; ++k) {
                double sum = 0.0, max = -HUGE_VAL;
                int cells = 0;
                for (ky = 0; ky < win->kh; ++ky)
                    for (kx = 0; kx < win->kw; ++kx) {
                        /* position in the padded image; inside the input iff within [pad, pad + size) */
                        const long iy = (long)(oy * win->sh + ky) - (long)win->pt;
                        const long ix = (long)(ox * win->sw + kx) - (long)win->pl;
                        double v;
                        if (iy < 0 || ix < 0 || iy >= (long)h || ix >= (long)w) continue;
                        v = (double)x[((size_t)iy * w + (size_t)ix) * c + k];
                        sum += v;
                        if (v > max) max = v;
                        ++cells;
                    }
                out[(oy * ow + ox) * c + k] = em_test_activate(average ? sum / (double)cells : max, activation);
            }
}

double *em_test_decode_lut(const float *codebook, uint32_t codewords, uint32_t seg_len, const uint32_t *index,
                           uint32_t taps, uint32_t cin, uint32_t cout)
{
    return em_test_decode_lut_shared(codebook, codewords, seg_len, index, taps, cin, cout, 0);
}

double *em_test_decode_lut_shared(const float *codebook, uint32_t codewords, uint32_t seg_len, const uint32_t *index,
                                  uint32_t taps, uint32_t cin, uint32_t cout, int shared)
{
    const uint32_t segments = (cin + seg_len - 1) / seg_len;
    double *weights = (double *)calloc((size_t)taps * cin * cout, sizeof(double));
    size_t t, ci, co;
    for (t = 0; t < taps; ++t)
        for (ci = 0; ci < cin; ++ci)
            for (co = 0; co < cout; ++co) {
                const size_t s = ci / seg_len, j = ci % seg_len;
                const uint32_t c = index[(t * segments + s) * cout + co];
                weights[(t * cin + ci) * cout + co] = codebook[((shared ? 0 : s) * codewords + c) * seg_len + j];
            }
    return weights;
}

void em_test_expect_refused(const uint8_t *file, size_t size, em_status want, const char *needle)
{
    em_model *model = NULL;
    em_error err;
    em_status st = em_model_load(file, size, NULL, &model, &err);
    CHECK_STATUS(st, want, err);
    CHECKF(st != EM_STATUS_OK && strstr(err.message, needle) != NULL, "message '%s' lacks '%s'", err.message, needle);
    em_model_free(model);
}

size_t em_test_available_kernels(uint32_t op, const char *name_part, em_test_set_kernel *out, size_t max)
{
    size_t n = 0;
    uint32_t set;
    for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set) {
        const em_kernel *kernels[16];
        size_t count, k;
        if (!em_kernels_available(set)) continue;
        count = em_kernel_list(op, set, kernels, 16);
        for (k = 0; k < count && k < 16 && n < max; ++k) {
            if (name_part != NULL && strstr(kernels[k]->name, name_part) == NULL) continue;
            out[n].set = set;
            out[n].kernel = kernels[k];
            ++n;
        }
    }
    return n;
}

int em_test_run_forced(const uint8_t *file, size_t size, uint32_t kernels, const struct em_kernel *force,
                       const float *x, size_t nx, float *y, size_t ny, char *kernel_name, size_t name_size)
{
    em_model *model = NULL;
    em_context *ctx = NULL;
    void *memory;
    em_error err;
    em_node_info info;
    em_status st = em_model_load_forced(file, size, NULL, kernels, force, &model, &err);
    if (!CHECKF(st == EM_STATUS_OK, "load: %s", err.message)) return 0;
    memory = malloc(em_context_size(model));
    st = em_context_init(model, memory, em_context_size(model), &ctx, &err);
    if (CHECKF(st == EM_STATUS_OK, "context: %s", err.message)) {
        memset(y, 0xFF, ny * sizeof(float));
        st = em_run_task(ctx, 0, x, nx, y, ny, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
    }
    em_model_node_info(model, 0, &info);
    snprintf(kernel_name, name_size, "%s", info.kernel);
    free(memory);
    em_model_free(model);
    return st == EM_STATUS_OK;
}

em_status em_test_load_with(const uint8_t *file, size_t size, const em_allocator *allocator, uint32_t kernels,
                            uint32_t flags, em_model **model, em_error *err)
{
    em_load_options options;
    memset(&options, 0, sizeof options);
    options.kernels = kernels;
    options.flags = flags;
    return em_model_load_ex(file, size, allocator, &options, model, err);
}
