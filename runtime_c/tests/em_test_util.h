/* Tiny test support for the C tests: a CHECK macro that counts and reports, a deterministic random
 * generator, and naive double-precision reference ops written independently of src/ref/ (straight
 * from FORMAT.md, with explicit zero padding) to check the runtime against. */
#ifndef EDGEMERGE_EM_TEST_UTIL_H
#define EDGEMERGE_EM_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "edgemerge/em_runtime.h"

/* ---- checks ---- */
int em_test_check(int ok, const char *file, int line, const char *what);
int em_test_checkf(int ok, const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Prints "NAME: N checks, F failures" and returns the process exit code. */
int em_test_summary(const char *name);
/* Failed checks so far (a section reports "exact" only when its own checks all passed). */
int em_test_failures(void);
/* "exact" when no check failed since `failures_before` (em_test_failures()), else "NOT exact (failed checks: F)" */
const char *em_test_verdict(int failures_before);

#define CHECK(cond) em_test_check((cond) != 0, __FILE__, __LINE__, #cond)
#define CHECKF(cond, ...) em_test_checkf((cond) != 0, __FILE__, __LINE__, __VA_ARGS__)

/* A load/run status check that prints the runtime's message when it does not match. */
#define CHECK_STATUS(got, want, err)                                                                      \
    CHECKF((got) == (want), "status %d (%s), expected %d (%s): %s", (int)(got), em_status_name(got),     \
           (int)(want), em_status_name(want), (err).message)

/* Loads `file` with kernel set `kernels` (and, when `force` is not NULL, that kernel for every node it fits:
 * em_model_load_forced), runs task 0 on x[nx] into y[ny] (first filled with NaN bytes), and writes the name of
 * node 0's kernel into kernel_name. Returns 1 if the load and the run succeeded (failures are CHECKs). */
struct em_kernel;

/* em_model_load refuses file[size] with status `want` and a message containing `needle` (CHECKs). */
void em_test_expect_refused(const uint8_t *file, size_t size, em_status want, const char *needle);

/* em_model_load_ex with kernel set `kernels` and load flags `flags` (the other options zero). */
em_status em_test_load_with(const uint8_t *file, size_t size, const em_allocator *allocator, uint32_t kernels,
                            uint32_t flags, em_model **model, em_error *err);
int em_test_run_forced(const uint8_t *file, size_t size, uint32_t kernels, const struct em_kernel *force,
                       const float *x, size_t nx, float *y, size_t ny, char *kernel_name, size_t name_size);

/* One kernel of one kernel set, as em_test_available_kernels lists them. */
typedef struct em_test_set_kernel {
    uint32_t set;
    const struct em_kernel *kernel;
} em_test_set_kernel;
/* Room for every kernel of one op in every set (EM_KERNELS_COUNT sets of at most 16). */
#define EM_TEST_MAX_SET_KERNELS 128

/* Every kernel of op `op` in every kernel set this CPU runs (em_kernels_available), sets in order from
 * EM_KERNELS_GENERIC and each set's kernels in em_kernel_list order (at most 16 per set); with `name_part` not
 * NULL only the kernels whose name contains it. Returns how many it wrote into out[max]. */
size_t em_test_available_kernels(uint32_t op, const char *name_part, em_test_set_kernel *out, size_t max);

/* ---- random ---- */
typedef struct em_test_rng {
    uint32_t state;
} em_test_rng;
void em_test_rng_seed(em_test_rng *rng, uint32_t seed);
uint32_t em_test_rand_u32(em_test_rng *rng);
uint32_t em_test_rand_below(em_test_rng *rng, uint32_t n); /* 0..n-1 */
float em_test_rand_float(em_test_rng *rng);                /* uniform in [-1, 1) */
void em_test_fill(em_test_rng *rng, float *values, size_t n, float scale);

/* ---- comparison ---- */
/* |got − want| <= tol · (1 + max|want|) everywhere; reports the first mismatch under `what`. */
int em_test_close(const float *got, const double *want, size_t n, double tol, const char *what);

/* ---- naive references (double accumulation; NHWC, batch 1) ---- */
typedef struct em_test_window {
    uint32_t kh, kw, sh, sw, pt, pl, pb, pr;
} em_test_window;

uint32_t em_test_out_size(uint32_t size, uint32_t kernel, uint32_t stride, uint32_t pad_a, uint32_t pad_b);
double em_test_activate(double x, uint32_t activation);

/* Copies x [h, w, c] into a zero-padded [h + pt + pb, w + pl + pr, c] array (caller frees). */
double *em_test_pad(const float *x, uint32_t h, uint32_t w, uint32_t c, const em_test_window *win);

void em_test_naive_conv2d(const float *x, uint32_t h, uint32_t w, uint32_t cin, const double *weights,
                          uint32_t cout, const float *bias, const em_test_window *win, uint32_t activation,
                          double *out);
void em_test_naive_depthwise(const float *x, uint32_t h, uint32_t w, uint32_t cin, const float *weights,
                             uint32_t multiplier, const float *bias, const em_test_window *win,
                             uint32_t activation, double *out);
void em_test_naive_dense(const float *x, uint32_t in, const double *weights, uint32_t out_count, const float *bias,
                         uint32_t activation, double *out);
void em_test_naive_pool(const float *x, uint32_t h, uint32_t w, uint32_t c, const em_test_window *win, int average,
                        uint32_t activation, double *out);

/* Decodes LUT weights: W[ky, kx, ci, co] = codebook[s, index[ky, kx, s, co], j] for ci = s·r + j.
 * `taps` = KH·KW (1 for LUT_DENSE, where W is [In, Out]). Returns a malloc'd [taps, cin, cout]. */
double *em_test_decode_lut(const float *codebook, uint32_t codewords, uint32_t seg_len, const uint32_t *index,
                           uint32_t taps, uint32_t cin, uint32_t cout);
/* The same with `shared` != 0: a layer-shared codebook [1, C, r], codebook[0, index, j] for every segment. */
double *em_test_decode_lut_shared(const float *codebook, uint32_t codewords, uint32_t seg_len, const uint32_t *index,
                                  uint32_t taps, uint32_t cin, uint32_t cout, int shared);

#endif /* EDGEMERGE_EM_TEST_UTIL_H */
