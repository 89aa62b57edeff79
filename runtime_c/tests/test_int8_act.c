/* LUT ops with int8 activations (flag INT8_ACT; FORMAT.md "int8 activations"):
 *
 *  - every int8 tile this build has and this CPU runs (generic, avx2, avx512_vnni, avx_vnni, neon
 *    smull/sadalp, sdot) equals a naive int32 sum exactly, for depths 4..1200 (odd k4 too) and extreme
 *    operands (every value ±127, both signs: the VNNI tiles' u8 offset); the implicit-im2col forms
 *    (tile_rows: avx512_vnni, sdot, neon) equal it over 1-5 segments; every set's store and gemm_rows
 *    (the epilogue in registers) equal the generic tile_rows + store bit for bit, every one-pass quantize
 *    em_lut_int8_quantize (and flags Inf / NaN);
 *  - every table-form micro-kernel set this build has and this CPU runs (generic, neon smull/sadalp, sdot):
 *    its table builds equal a naive int32 sum exactly (extreme operands included), its accumulation and
 *    gather equal the generic C bit for bit (epilogue: f32(acc) · k, + bias, ReLU / ReLU6 / none);
 *  - every lut_*_i8a_* kernel of every available set equals the reference kernel (the table form) bit for
 *    bit on one-node models of odd shapes (Cout not a multiple of 16, odd H/W, strides 1-3, 'same' /
 *    'valid' / asymmetric pads, r not dividing Cin, C = 2..64, Cin = 1 first convs), with inputs that
 *    saturate the input scale; the set's own choice for a flagged node is an i8a kernel;
 *  - the int8 result stays close to the float LUT op (loose: quantisation error);
 *  - a NaN or infinite input makes every output NaN in every kernel;
 *  - the loader refuses a bad input scale, the flag with INT8_TABLES or on a non-LUT op, a non-finite
 *    codebook entry, and keeps reserved[1] = 0 required without the flag.
 * Run under qemu with -cpu cortex-a76 (sdot) and -cpu cortex-a72 (no dot product) by the aarch64 --ctest
 * build: the tile list then holds sdot or not. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_kernels.h"
#include "em_lut_int8.h"
#include "em_test_builder.h"
#include "em_test_util.h"
#include "opt/em_i8a_tables.h"
#include "opt/em_int8_gemm.h"

typedef struct act_case {
    emb_lut_layer layer;
    float clip; /* the input scale is clip · max|x| / 127: < 1 saturates the largest inputs */
} act_case;

#define CONV(h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, C, act, bias, clip) \
    {{EM_OP_LUT_CONV2D, h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, C, act, bias}, clip}
#define DENSE(in, out, r, C, act, bias, clip) \
    {{EM_OP_LUT_DENSE, 1, 1, in, out, 1, 1, 1, 1, 0, 0, 0, 0, r, C, act, bias}, clip}

static const act_case cases[] = {
    CONV(28, 28, 1, 32, 5, 5, 1, 1, 0, 0, 0, 0, 1, 32, EM_ACT_RELU, 1, 1.0f),  /* LeNet conv1 (Cin = 1) */
    CONV(12, 12, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 8, 64, EM_ACT_RELU, 1, 0.7f), /* LeNet conv2 */
    CONV(9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 16, EM_ACT_RELU, 1, 1.0f),     /* 'same', r not dividing Cin */
    CONV(14, 14, 48, 40, 5, 5, 1, 1, 2, 2, 2, 2, 4, 16, EM_ACT_NONE, 1, 0.5f), /* Cout 40 */
    CONV(11, 10, 7, 3, 3, 3, 2, 2, 0, 0, 1, 1, 3, 5, EM_ACT_RELU6, 0, 1.0f),   /* stride 2, C = 5 */
    CONV(6, 5, 16, 1, 1, 1, 1, 1, 0, 0, 0, 0, 4, 2, EM_ACT_NONE, 1, 1.0f),     /* point-wise, Cout 1, C = 2 */
    CONV(12, 13, 9, 17, 5, 3, 2, 1, 2, 1, 2, 1, 5, 16, EM_ACT_NONE, 1, 1.0f),  /* mixed strides, Cout 17 */
    CONV(5, 5, 3, 15, 3, 3, 3, 3, 1, 1, 1, 1, 1, 8, EM_ACT_NONE, 1, 1.0f),     /* stride = kernel */
    CONV(1, 1, 4, 33, 1, 1, 1, 1, 0, 0, 0, 0, 3, 16, EM_ACT_RELU, 1, 1.0f),    /* a single pixel */
    CONV(4, 9, 2, 31, 4, 2, 1, 2, 3, 0, 0, 1, 2, 16, EM_ACT_RELU, 1, 1.0f),    /* windows mostly padding */
    CONV(7, 3, 11, 16, 2, 3, 2, 1, 0, 1, 1, 1, 4, 16, EM_ACT_NONE, 0, 0.3f),   /* even kernel, asymmetric pads */
    CONV(9, 9, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 8, 16, EM_ACT_RELU, 1, 1.0f),     /* r > Cin: one short segment */
    CONV(17, 15, 3, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 16, EM_ACT_RELU, 1, 1.0f),  /* > 1 band of 64 pixels */
    CONV(12, 11, 16, 20, 3, 3, 1, 1, 1, 1, 1, 1, 4, 64, EM_ACT_RELU, 1, 0.9f), /* 'same', KW·Cin = 48 */
    CONV(13, 10, 8, 24, 3, 3, 2, 2, 0, 0, 1, 1, 4, 16, EM_ACT_NONE, 1, 1.0f),  /* stride 2, pads after only */
    CONV(7, 8, 2, 9, 3, 3, 1, 1, 1, 1, 1, 1, 2, 8, EM_ACT_RELU, 1, 1.0f),      /* Cin 2: padded to 4 (implicit) */
    CONV(10, 9, 24, 40, 1, 1, 1, 1, 0, 0, 0, 0, 8, 16, EM_ACT_RELU6, 1, 0.8f), /* point-wise, > 64 pixels */
    CONV(9, 11, 6, 20, 1, 1, 1, 1, 0, 0, 0, 0, 3, 16, EM_ACT_NONE, 1, 1.0f),   /* point-wise, Cin not 4k */
    CONV(9, 9, 8, 20, 1, 1, 2, 2, 0, 0, 0, 0, 4, 16, EM_ACT_RELU, 1, 1.0f),    /* point-wise, stride 2 */
    CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 16, 64, EM_ACT_RELU, 1, 1.0f), /* README pair fashion/conv2 */
    CONV(10, 11, 30, 9, 3, 3, 2, 2, 1, 1, 1, 1, 10, 7, EM_ACT_RELU6, 1, 0.8f), /* r = 10 (k4 3), stride 2 */
    DENSE(10, 7, 3, 16, EM_ACT_RELU, 1, 1.0f),
    DENSE(1600, 67, 32, 32, EM_ACT_RELU, 1, 1.0f),                            /* fashion/fc1, 3 tail outputs */
    DENSE(64, 1, 16, 16, EM_ACT_NONE, 1, 1.0f),
    DENSE(70, 33, 7, 32, EM_ACT_RELU6, 1, 0.6f),
    DENSE(1600, 40, 4, 16, EM_ACT_RELU, 1, 1.0f),
    DENSE(300, 17, 5, 64, EM_ACT_RELU, 1, 1.0f),
};
#define CASE_COUNT (sizeof cases / sizeof cases[0])

typedef emb_lut_model built;

static void set_input_scale(built *b, float scale)
{
    uint32_t bits;
    memcpy(&bits, &scale, sizeof bits);
    emb_put_u32(b->file + emb_node_record_offset(b->file, 0) + 4 * EM_NODE_WORD_INPUT_SCALE, bits);
    emb_fix_crcs(b->file, b->size);
    b->scale = scale;
}

static void build_case(const act_case *c, uint32_t flags, uint32_t seed, int shared, built *out)
{
    float m = 0.0f;
    size_t i;
    emb_lut_model_build_shared(&c->layer, flags, seed, shared, out);
    free(out->codebook); /* the int8-act checks compare kernels' outputs only */
    out->codebook = NULL;
    for (i = 0; i < out->nx; ++i) m = fabsf(out->x[i]) > m ? fabsf(out->x[i]) : m;
    if (flags & EM_NODE_FLAG_INT8_ACT) set_input_scale(out, c->clip * m / 127.0f);
}

static int run_model(const built *b, uint32_t kernels, const em_kernel *force, float *y, char *kernel_name,
                     size_t name_size)
{
    return em_test_run_forced(b->file, b->size, kernels, force, b->x, b->nx, y, b->ny, kernel_name, name_size);
}

/* Every tile implementation equals a naive sum exactly. */
static void test_tiles_exact(void)
{
    static const size_t depths4[] = {1, 2, 7, 64, 300};
    const em_int8_gemm_micro *tiles[8];
    const size_t count = em_int8_gemm_micro_list(tiles, 8);
    em_test_rng rng;
    size_t t, di, extreme;
    em_test_rng_seed(&rng, 17);
    for (t = 0; t < count && t < 8; ++t) {
        const int failed_before = em_test_failures();
        for (di = 0; di < sizeof depths4 / sizeof depths4[0]; ++di)
            for (extreme = 0; extreme < 5; ++extreme) { /* random; a = +127 / -127 with b = +127; a = +127,
                                                          * b = -127; a and b random signs of 127 */
                const size_t k4 = depths4[di], lda = k4 * 4 + 8; /* a row stride longer than the depth */
                int8_t *a = (int8_t *)malloc(4 * lda), *b = (int8_t *)malloc(k4 * 64);
                int32_t c[64];
                size_t i, n, k, bad = 0;
                for (i = 0; i < 4 * lda; ++i)
                    a[i] = (int8_t)(extreme == 0 ? (int)em_test_rand_below(&rng, 255) - 127
                                    : extreme == 2 ? -127
                                    : extreme == 4 ? (em_test_rand_below(&rng, 2) ? 127 : -127) : 127);
                for (i = 0; i < k4 * 64; ++i)
                    b[i] = (int8_t)(extreme == 0 ? (int)em_test_rand_below(&rng, 255) - 127
                                    : extreme == 3 ? -127
                                    : extreme == 4 ? (em_test_rand_below(&rng, 2) ? 127 : -127) : 127);
                memset(c, 0x55, sizeof c);
                tiles[t]->tile(a, lda, b, k4, c);
                for (i = 0; i < 4; ++i)
                    for (n = 0; n < 16; ++n) {
                        int64_t want = 0;
                        for (k = 0; k < 4 * k4; ++k) want += (int64_t)a[i * lda + k] * b[(k / 4) * 64 + n * 4 + k % 4];
                        bad += want != c[i * 16 + n];
                    }
                CHECKF(bad == 0, "tile %s: %zu of 64 sums wrong (depth %zu, extreme %zu)", tiles[t]->isa, bad, 4 * k4,
                       extreme);
                free(a);
                free(b);
            }
        printf("int8 tile %s: %s\n", tiles[t]->isa, em_test_verdict(failed_before));
    }
    CHECKF(count >= 1, "no int8 tiles");
}

/* Every tile with an implicit-im2col form (tile_rows) equals the C form, which equals the naive sum over
 * segments: rows at odd offsets in one buffer, 1-3 segments, odd seg_k4, random and ±127 operands. */
static void test_tile_rows_exact(void)
{
    /* segments, seg_k4: seg_k4 % 4 == 0 runs the sdot set's assembly loop (1 or more blocks, 1 or more segments) */
    static const size_t shapes[][2] = {{1, 1}, {3, 3}, {3, 12}, {2, 7}, {5, 9}, {1, 4}, {4, 4}, {2, 8}};
    const em_int8_gemm_micro *tiles[8];
    const size_t count = em_int8_gemm_micro_list(tiles, 8);
    em_test_rng rng;
    size_t t, si, extreme, covered = 0;
    em_test_rng_seed(&rng, 29);
    for (t = 0; t < count && t < 8; ++t) {
        const int failed_before = em_test_failures();
        if (tiles[t]->tile_rows == NULL) continue;
        ++covered;
        for (si = 0; si < sizeof shapes / sizeof shapes[0]; ++si)
            for (extreme = 0; extreme < 3; ++extreme) {
                const size_t segments = shapes[si][0], seg_k4 = shapes[si][1], stride = 4 * seg_k4 + 12;
                const size_t bytes = 5 * stride * segments + 64, k4 = segments * seg_k4;
                int8_t *img = (int8_t *)malloc(bytes), *b = (int8_t *)malloc(k4 * 64);
                const int8_t *rows[4];
                int32_t c[64], want[64];
                size_t i, n, s, k, bad = 0;
                for (i = 0; i < bytes; ++i)
                    img[i] = (int8_t)(extreme == 0 ? (int)em_test_rand_below(&rng, 255) - 127
                                      : (em_test_rand_below(&rng, 2) ? 127 : -127));
                for (i = 0; i < k4 * 64; ++i)
                    b[i] = (int8_t)(extreme == 0 ? (int)em_test_rand_below(&rng, 255) - 127
                                    : extreme == 1 ? -127 : (em_test_rand_below(&rng, 2) ? 127 : -127));
                for (i = 0; i < 4; ++i) rows[i] = img + 4 * ((i * 7 + 3) % 11) + (i == 2 ? stride : 0);
                memset(c, 0x55, sizeof c);
                tiles[t]->tile_rows(rows, segments, stride, seg_k4, b, c);
                em_int8_tile_rows_generic(rows, segments, stride, seg_k4, b, want);
                for (i = 0; i < 4; ++i)
                    for (n = 0; n < 16; ++n) {
                        int64_t naive = 0;
                        for (s = 0; s < segments; ++s)
                            for (k = 0; k < 4 * seg_k4; ++k)
                                naive += (int64_t)rows[i][s * stride + k] * b[(s * seg_k4 + k / 4) * 64 + n * 4 + k % 4];
                        bad += naive != c[i * 16 + n] || naive != want[i * 16 + n];
                    }
                CHECKF(bad == 0, "tile_rows %s: %zu of 64 sums wrong (%zu segments of %zu, extreme %zu)",
                       tiles[t]->isa, bad, segments, 4 * seg_k4, extreme);
                free(img);
                free(b);
            }
        printf("int8 tile_rows %s: %s\n", tiles[t]->isa, em_test_verdict(failed_before));
    }
    printf("int8 tile_rows: %zu tile(s) with an implicit-im2col form\n", covered);
}

/* Every tile set's store equals em_int8_store_generic bit for bit (1-4 rows, 1-16 columns, each activation,
 * with and without bias, sums around the ReLU6 bounds), and every gemm_rows equals tile_rows_generic +
 * store_generic per block of 16 channels (Cout 1-40: full, 8-column and odd last blocks; 1-4 valid rows;
 * 1-3 segments) without writing past its valid rows. */
static void test_gemm_rows_exact(void)
{
    static const uint32_t acts[] = {EM_ACT_NONE, EM_ACT_RELU, EM_ACT_RELU6};
    static const uint32_t couts[] = {1, 3, 8, 12, 16, 21, 24, 40};
    /* segments, seg_k4 (seg_k4 % 4 == 0: the sdot set's assembly loop) */
    static const size_t shapes[][2] = {{1, 1}, {1, 2}, {1, 4}, {3, 3}, {2, 7}, {1, 9}, {3, 8}, {2, 4}};
    const em_int8_gemm_micro *tiles[8];
    const size_t count = em_int8_gemm_micro_list(tiles, 8);
    const float scale = 1.0f / 4096.0f;
    em_test_rng rng;
    size_t t, covered = 0;
    em_test_rng_seed(&rng, 31);
    for (t = 0; t < count && t < 8; ++t) {
        const int failed_before = em_test_failures();
        size_t bad = 0, ai, hb, si, ci, i;
        if (tiles[t]->store == NULL && tiles[t]->gemm_rows == NULL) continue;
        ++covered;
        for (ai = 0; ai < 3; ++ai)
            for (hb = 0; hb < 2; ++hb) {
                float bias[48];
                for (i = 0; i < 48; ++i) bias[i] = em_test_rand_float(&rng) * 4.0f;
                if (tiles[t]->store != NULL) {
                    int32_t c[64];
                    float want[4 * 20], got[4 * 20];
                    uint32_t rows, cols;
                    for (i = 0; i < 64; ++i) c[i] = (int32_t)em_test_rand_below(&rng, 80001) - 40000;
                    c[0] = 0;
                    c[1] = 6 * 4096; /* exactly 6 before the bias */
                    for (rows = 1; rows <= 4; ++rows)
                        for (cols = 1; cols <= 16; ++cols) {
                            memset(want, 0x7f, sizeof want);
                            memset(got, 0x7f, sizeof got);
                            em_int8_store_generic(c, rows, cols, scale, hb ? bias : NULL, acts[ai], want, 20);
                            tiles[t]->store(c, rows, cols, scale, hb ? bias : NULL, acts[ai], got, 20);
                            if (memcmp(want, got, sizeof want) != 0 && bad++ == 0)
                                printf("store %s: %u rows, %u cols, activation %u, bias %zu\n", tiles[t]->isa,
                                       (unsigned)rows, (unsigned)cols, (unsigned)acts[ai], hb);
                        }
                }
                if (tiles[t]->gemm_rows == NULL) continue;
                for (si = 0; si < sizeof shapes / sizeof shapes[0]; ++si)
                    for (ci = 0; ci < sizeof couts / sizeof couts[0]; ++ci) {
                        const size_t segments = shapes[si][0], seg_k4 = shapes[si][1], stride = 4 * seg_k4 + 8;
                        const size_t k4 = segments * seg_k4, bytes = 5 * stride * segments + 64;
                        const uint32_t cout = couts[ci], n16 = (cout + 15u) / 16u;
                        int8_t *img = (int8_t *)malloc(bytes), *b = (int8_t *)malloc(n16 * k4 * 64);
                        int32_t offsets[48], c[64];
                        float want[5 * 40], got[5 * 40];
                        const int8_t *rows[4];
                        uint32_t valid, nb, n;
                        for (i = 0; i < bytes; ++i) img[i] = (int8_t)((int)em_test_rand_below(&rng, 255) - 127);
                        for (i = 0; i < n16 * k4 * 64; ++i) /* channels past cout zero, as packed */
                            b[i] = (int8_t)((i / 4) % 16 + (i / (k4 * 64)) * 16 < cout
                                                ? (int)em_test_rand_below(&rng, 255) - 127 : 0);
                        em_int8_column_offsets(b, k4, n16, offsets);
                        for (i = 0; i < 4; ++i) rows[i] = img + 4 * ((i * 5 + 1) % 7) + i * stride / 2 / 4 * 4;
                        for (valid = 1; valid <= 4; ++valid) {
                            memset(want, 0x7f, sizeof want);
                            memset(got, 0x7f, sizeof got);
                            for (nb = 0; nb < n16; ++nb) {
                                em_int8_tile_rows_generic(rows, segments, stride, seg_k4, b + nb * k4 * 64, c);
                                n = cout - 16u * nb < 16u ? cout - 16u * nb : 16u;
                                em_int8_store_generic(c, valid, n, scale, hb ? bias + 16u * nb : NULL, acts[ai],
                                                      want + 16u * nb, cout);
                            }
                            tiles[t]->gemm_rows(rows, segments, stride, seg_k4, b, offsets, cout, scale,
                                                hb ? bias : NULL, acts[ai], got, valid);
                            if (memcmp(want, got, sizeof want) != 0 && bad++ == 0)
                                printf("gemm_rows %s: %zu segments of %zu, Cout %u, %u rows, activation %u, bias %zu\n",
                                       tiles[t]->isa, segments, seg_k4, (unsigned)cout, (unsigned)valid,
                                       (unsigned)acts[ai], hb);
                        }
                        free(img);
                        free(b);
                    }
            }
        CHECKF(bad == 0, "int8 store / gemm_rows %s: %zu cases differ from the generic C", tiles[t]->isa, bad);
        printf("int8 store / gemm_rows %s: %s\n", tiles[t]->isa, em_test_verdict(failed_before));
    }
    printf("int8 store / gemm_rows: %zu tile set(s) with a store or gemm_rows\n", covered);
}

/* Every tile set's one-pass quantize equals em_lut_int8_quantize per value (ties k + 1/2 both ways, values
 * past ±127 and past 2^22, -0, lengths around the 16-value step) and returns the largest magnitude's bits;
 * an Inf or NaN anywhere gives bits ≥ EM_INT8_NONFINITE_BITS. */
static void test_quantize_exact(void)
{
    static const float specials[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f, 127.5f, -127.5f,
                                     -128.0f, 4194304.5f, -8388608.0f, 3.0e38f, -3.0e38f, -0.0f, 1.0e-40f};
    const em_int8_gemm_micro *tiles[8];
    const size_t count = em_int8_gemm_micro_list(tiles, 8);
    em_test_rng rng;
    size_t t, covered = 0;
    em_test_rng_seed(&rng, 37);
    for (t = 0; t < count && t < 8; ++t) {
        const int failed_before = em_test_failures();
        size_t bad = 0, n, i, nonfinite;
        if (tiles[t]->quantize == NULL) continue;
        ++covered;
        for (n = 1; n <= 67; n += (n < 40 ? 1 : 9))
            for (nonfinite = 0; nonfinite < 4; ++nonfinite) {
                float src[67];
                int8_t got[67];
                uint32_t want_bits = 0, bits;
                const float inverse = nonfinite == 0 ? 1.0f : 0.37f;
                for (i = 0; i < n; ++i) {
                    uint32_t b;
                    src[i] = i % 3 == 0 ? specials[(i / 3 + n) % (sizeof specials / sizeof specials[0])]
                                        : em_test_rand_float(&rng) * 300.0f;
                    memcpy(&b, &src[i], sizeof b);
                    b &= 0x7FFFFFFFu;
                    want_bits = b > want_bits ? b : want_bits;
                }
                if (nonfinite > 0) src[(n * 5 / 7) % n] = nonfinite == 1 ? NAN : (nonfinite == 2 ? INFINITY : -INFINITY);
                bits = tiles[t]->quantize(src, n, inverse, got);
                if (nonfinite > 0) {
                    bad += bits < EM_INT8_NONFINITE_BITS;
                    continue;
                }
                bad += bits != want_bits;
                for (i = 0; i < n; ++i) bad += got[i] != (int8_t)em_lut_int8_quantize(src[i], inverse);
            }
        CHECKF(bad == 0, "int8 quantize %s: %zu values or checks wrong", tiles[t]->isa, bad);
        printf("int8 quantize %s: %s\n", tiles[t]->isa, em_test_verdict(failed_before));
    }
    printf("int8 quantize: %zu tile set(s) with a one-pass quantize\n", covered);
}

static int8_t test_int8(em_test_rng *rng, size_t extreme)
{
    return (int8_t)(extreme == 0 ? (int)em_test_rand_below(rng, 255) - 127 : (extreme == 1 ? 127 : -127));
}

/* The table builds of every table-form micro set equal a naive sum (em_i8a_tables.h contracts). */
static void check_table_builds(const em_i8a_tables_micro *m, em_test_rng *rng)
{
    static const size_t k4s[] = {1, 2, 4, 8, 33};
    size_t ki, extreme;
    for (ki = 0; ki < sizeof k4s / sizeof k4s[0]; ++ki)
        for (extreme = 0; extreme < 3; ++extreme) {
            /* 16 or 48 codewords: one or three vectors of a row (the avx512 set's row build takes 8 a step) */
            const size_t k4 = k4s[ki], c4 = extreme == 1 ? 48 : 16, blocks = 3, ldt = blocks * 16 + 4;
            int8_t *cb = (int8_t *)malloc(c4 * k4 * 4), *x = (int8_t *)malloc(blocks * k4 * 64);
            int32_t *table = (int32_t *)malloc(c4 * ldt * sizeof(int32_t)), row[48];
            size_t i, c, q, e, bad = 0;
            for (i = 0; i < c4 * k4 * 4; ++i) cb[i] = test_int8(rng, extreme);
            for (i = 0; i < blocks * k4 * 64; ++i) x[i] = test_int8(rng, extreme == 2 ? 1 : extreme);
            m->build_planar(cb, x, k4, c4, blocks, table, ldt);
            m->build_row(cb, x, k4, c4, row);
            for (c = 0; c < c4; ++c) {
                int64_t want_row = 0;
                for (i = 0; i < blocks * 16; ++i) {
                    int64_t want = 0;
                    for (q = 0; q < k4; ++q)
                        for (e = 0; e < 4; ++e)
                            want += (int64_t)cb[((c / 4 * k4 + q) * 4 + c % 4) * 4 + e] *
                                    x[((i / 16 * k4 + q) * 16 + i % 16) * 4 + e];
                    bad += want != table[c * ldt + i];
                }
                for (q = 0; q < k4; ++q)
                    for (e = 0; e < 4; ++e) want_row += (int64_t)cb[((c / 4 * k4 + q) * 4 + c % 4) * 4 + e] * x[4 * q + e];
                bad += want_row != row[c];
            }
            CHECKF(bad == 0, "table build %s: %zu sums wrong (k4 %zu, extreme %zu)", m->isa, bad, k4, extreme);
            free(cb);
            free(x);
            free(table);
        }
}

/* Accumulation and gather of every set equal the generic C's bits, for spans and output counts around the
 * vector blocks, each activation, with and without bias. */
static void check_table_sums(const em_i8a_tables_micro *m, em_test_rng *rng)
{
    static const size_t spans[] = {1, 3, 4, 5, 7, 8, 9, 15, 17, 26}; /* runs of 4 pixels */
    static const uint32_t acts[] = {EM_ACT_NONE, EM_ACT_RELU, EM_ACT_RELU6};
    enum { ROWS = 24, TERMS = 9, N = 37 };
    static const size_t ldts[] = {20, 16, 32, 48, 64}; /* 16k: the avx512 gather's 1-4 register rows */
    int32_t *table = (int32_t *)malloc((ROWS * 100 + 100) * sizeof(int32_t));
    uint32_t offset[TERMS], start[26];
    uint16_t idx[ROWS * N];
    float bias[N], want[104], got[104];
    const float scale = 0.0123f;
    size_t i, si, ai, b, li, bad = 0;
    for (i = 0; i < ROWS * 100 + 100; ++i) table[i] = (int32_t)em_test_rand_below(rng, 2000001) - 1000000;
    for (i = 0; i < TERMS; ++i) offset[i] = (uint32_t)em_test_rand_below(rng, ROWS * 100);
    for (i = 0; i < 26; ++i) start[i] = (uint32_t)(i / 3 * 9 + i % 3 * 4); /* rows of 3 runs, 9 columns apart */
    for (i = 0; i < N; ++i) bias[i] = (float)em_test_rand_below(rng, 2001) / 100.0f - 10.0f;
    for (ai = 0; ai < 3; ++ai)
        for (b = 0; b < 2; ++b) {
            for (si = 0; si < sizeof spans / sizeof spans[0]; ++si) {
                const size_t span = spans[si];
                em_i8a_tables_generic.accumulate_planar(table, offset, TERMS, start, span, scale, b ? bias + si : NULL,
                                                        acts[ai], want);
                m->accumulate_planar(table, offset, TERMS, start, span, scale, b ? bias + si : NULL, acts[ai], got);
                if (memcmp(want, got, 4 * span * sizeof(float)) != 0 && bad++ == 0)
                    printf("%s accumulate: %zu runs, activation %u, bias %zu\n", m->isa, span, (unsigned)acts[ai], b);
            }
            for (li = 0; li < sizeof ldts / sizeof ldts[0]; ++li) {
                const size_t ldt = ldts[li];
                for (i = 0; i < ROWS * N; ++i) idx[i] = (uint16_t)em_test_rand_below(rng, (uint32_t)ldt);
                for (si = 1; si <= N; si += 3) {
                    em_i8a_tables_generic.gather(table, ldt, ROWS, idx, si, scale, b ? bias : NULL, acts[ai], want);
                    memset(got, 0x7f, sizeof got);
                    m->gather(table, ldt, ROWS, idx, si, scale, b ? bias : NULL, acts[ai], got);
                    if ((memcmp(want, got, si * sizeof(float)) != 0 || got[si] != got[103]) && bad++ == 0)
                        printf("%s gather: ldt %zu, n %zu, activation %u, bias %zu\n", m->isa, ldt, si,
                               (unsigned)acts[ai], b);
                }
            }
        }
    CHECKF(bad == 0, "table sums %s: %zu runs differ from the generic C", m->isa, bad);
    free(table);
}

static void test_table_micro_exact(void)
{
    const em_i8a_tables_micro *sets[8];
    const size_t count = em_i8a_tables_micro_list(sets, 8);
    em_test_rng rng;
    size_t t;
    em_test_rng_seed(&rng, 23);
    for (t = 0; t < count && t < 8; ++t) {
        const int failed_before = em_test_failures();
        check_table_builds(sets[t], &rng);
        check_table_sums(sets[t], &rng);
        printf("int8-act table micro-kernels %s: %s\n", sets[t]->isa, em_test_verdict(failed_before));
    }
    CHECKF(count >= 1, "no table micro-kernels");
}

static void test_kernels_against_reference(void)
{
    size_t i, exercised = 0;
    for (i = 0; i < 2 * CASE_COUNT; ++i) { /* each case, then again with a layer-shared codebook [1, C, r] */
        const act_case *c = &cases[i % CASE_COUNT];
        const int shared = i >= CASE_COUNT;
        built b, f;
        float *want, *got, *flt;
        char name[96], what[200];
        em_test_set_kernel kernels[EM_TEST_MAX_SET_KERNELS];
        uint32_t set;
        size_t k, j, count;
        build_case(c, EM_NODE_FLAG_INT8_ACT, 700u + (uint32_t)i, shared, &b);
        want = (float *)malloc(b.ny * sizeof(float));
        got = (float *)malloc(b.ny * sizeof(float));
        flt = (float *)malloc(b.ny * sizeof(float));
        snprintf(what, sizeof what, "int8-act case %zu%s (%s %ux%ux%u -> %u, r=%u, C=%u)", i % CASE_COUNT,
                 shared ? " shared" : "", em_op_name(c->layer.op),
                 (unsigned)c->layer.h, (unsigned)c->layer.w, (unsigned)c->layer.cin, (unsigned)c->layer.cout, (unsigned)c->layer.r, (unsigned)c->layer.C);
        if (!run_model(&b, EM_KERNELS_REFERENCE, NULL, want, name, sizeof name)) goto next;
        CHECKF(strcmp(name, c->layer.op == EM_OP_LUT_DENSE ? "lut_dense_ref" : "lut_conv2d_ref") == 0, "%s: ref runs %s",
               what, name);
        count = em_test_available_kernels(c->layer.op, "_i8a_", kernels, EM_TEST_MAX_SET_KERNELS);
        for (j = 0; j < count; ++j) {
            const em_kernel *kernel = kernels[j].kernel;
            size_t differ = 0, at = 0;
            char kwhat[300];
            snprintf(kwhat, sizeof kwhat, "%s, kernel %s", what, kernel->name);
            if (!run_model(&b, kernels[j].set, kernel, got, name, sizeof name)) continue;
            CHECKF(strcmp(name, kernel->name) == 0, "%s: node runs %s", kwhat, name);
            for (k = 0; k < b.ny; ++k)
                if (memcmp(&got[k], &want[k], sizeof(float)) != 0 && differ++ == 0) at = k;
            CHECKF(differ == 0, "%s: %zu outputs differ from the reference (first at %zu: %.9g vs %.9g)", kwhat,
                   differ, at, (double)got[at], (double)want[at]);
            ++exercised;
        }
        /* and each set's own choice for the node is an int8-act kernel */
        for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set)
            if (em_kernels_available(set) && run_model(&b, set, NULL, got, name, sizeof name))
                CHECKF(strstr(name, "_i8a_") != NULL, "%s: set %s chose %s", what, em_kernels_name(set), name);
        /* the float LUT op of the same file: int8 stays within a loose quantisation bound */
        build_case(c, 0, 700u + (uint32_t)i, shared, &f);
        if (run_model(&f, EM_KERNELS_REFERENCE, NULL, flt, name, sizeof name) && c->clip == 1.0f) {
            double worst = 0.0, range = 0.0;
            for (k = 0; k < b.ny; ++k) {
                const double d = fabs((double)flt[k] - (double)want[k]);
                worst = d > worst ? d : worst;
                range = fabs((double)flt[k]) > range ? fabs((double)flt[k]) : range;
            }
            CHECKF(worst <= 0.05 * range + 1e-3, "%s: int8 vs float differ by %.3g (outputs up to %.3g)", what, worst,
                   range);
        }
        free(f.file);
        free(f.x);
    next:
        free(want);
        free(got);
        free(flt);
        free(b.file);
        free(b.x);
    }
    printf("int8-act kernels checked against the reference: %zu kernel runs\n", exercised);
    CHECKF(exercised >= CASE_COUNT, "only %zu int8-act kernel runs", exercised);
}

/* em_select.c's choice between the two forms: the r = 1 first conv stays the decoded GEMM everywhere; the
 * README pair's r = 16 conv2 takes the tables where the build is SIMD or both forms are C (neon, generic,
 * sse2), the decoded GEMM on avx2 / avx512 (vpmaddwd tiles, C table build); LUT_DENSE r = 32 always the tables. */
static void test_form_choice(void)
{
    static const act_case choice_cases[] = {
        CONV(28, 28, 1, 32, 5, 5, 1, 1, 0, 0, 0, 0, 1, 32, EM_ACT_RELU, 1, 1.0f),
        CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 16, 64, EM_ACT_RELU, 1, 1.0f),
        DENSE(1600, 64, 32, 32, EM_ACT_RELU, 1, 1.0f),
    };
    size_t i;
    uint32_t set;
    for (i = 0; i < 3; ++i) {
        built b;
        float *y;
        char name[96];
        build_case(&choice_cases[i], EM_NODE_FLAG_INT8_ACT, 90u + (uint32_t)i, 0, &b);
        y = (float *)malloc(b.ny * sizeof(float));
        for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set) {
            const int x86_simd = set == EM_KERNELS_AVX2 || set == EM_KERNELS_AVX512;
            const int want_tables = i == 2 || (i == 1 && !x86_simd);
            if (!em_kernels_available(set) || !run_model(&b, set, NULL, y, name, sizeof name)) continue;
            CHECKF((strstr(name, "_i8a_tables_") != NULL) == want_tables, "case %zu, set %s: chose %s", i,
                   em_kernels_name(set), name);
        }
        free(y);
        free(b.file);
        free(b.x);
    }
}

/* A NaN or infinite input: every output NaN, in every kernel. */
static void test_nonfinite_input(void)
{
    static const float bad[2] = {NAN, INFINITY};
    size_t ci, bi;
    for (ci = 0; ci < 2; ++ci) {
        const act_case *c = &cases[ci == 0 ? 2 : 13];
        for (bi = 0; bi < 2; ++bi) {
            built b;
            float *y;
            char name[96];
            uint32_t set;
            build_case(c, EM_NODE_FLAG_INT8_ACT, 40u + (uint32_t)ci, 0, &b);
            b.x[b.nx / 3] = bad[bi];
            y = (float *)malloc(b.ny * sizeof(float));
            for (set = EM_KERNELS_REFERENCE; set < EM_KERNELS_COUNT; ++set) {
                size_t k, finite = 0;
                if (!em_kernels_available(set)) continue;
                if (!run_model(&b, set, NULL, y, name, sizeof name)) continue;
                for (k = 0; k < b.ny; ++k) finite += isnan(y[k]) ? 0u : 1u;
                CHECKF(finite == 0, "%s with a %s input: %zu outputs not NaN", name, bi ? "Inf" : "NaN", finite);
            }
            free(y);
            free(b.file);
            free(b.x);
        }
    }
}

static void test_loader_rules(void)
{
    const act_case *c = &cases[2];
    built b;
    size_t rec;
    uint32_t flags;
    /* input scales: 0, negative, NaN, Inf, a denormal whose inverse overflows */
    static const float scales[5] = {0.0f, -1.0f, NAN, INFINITY, 1e-45f};
    size_t i;
    for (i = 0; i < 5; ++i) {
        build_case(c, EM_NODE_FLAG_INT8_ACT, 5, 0, &b);
        set_input_scale(&b, scales[i]);
        em_test_expect_refused(b.file, b.size, EM_STATUS_CORRUPT, "input scale");
        free(b.file);
        free(b.x);
    }
    /* both int8 flags */
    build_case(c, EM_NODE_FLAG_INT8_ACT, 5, 0, &b);
    rec = emb_node_record_offset(b.file, 0);
    flags = EM_NODE_FLAG_INT8_ACT | EM_NODE_FLAG_INT8_TABLES;
    emb_put_u32(b.file + rec + 4 * 3, flags);
    emb_fix_crcs(b.file, b.size);
    em_test_expect_refused(b.file, b.size, EM_STATUS_CORRUPT, "exclude each other");
    /* a scale without the flag: reserved[1] must stay 0 */
    emb_put_u32(b.file + rec + 4 * 3, 0);
    emb_fix_crcs(b.file, b.size);
    em_test_expect_refused(b.file, b.size, EM_STATUS_CORRUPT, "reserved");
    free(b.file);
    free(b.x);
    /* a non-finite codebook entry */
    {
        emb_builder *eb = emb_create();
        {
            const uint32_t in = emb_input(eb, 1, 1, 4), cb_dims[3] = {2, 2, 2}, idx_dims[2] = {2, 3};
            const float cb[8] = {0.1f, 0.2f, NAN, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
            const uint32_t idx[6] = {0, 1, 1, 0, 1, 0};
            emb_node n = emb_node_init(EM_OP_LUT_DENSE, in);
            uint32_t out;
            n.flags = EM_NODE_FLAG_INT8_ACT;
            n.seg_len = 2;
            n.codewords = 2;
            n.weight = emb_tensor_f32(eb, 3, cb_dims, cb);
            n.index = emb_tensor_idx(eb, 2, idx_dims, 1, idx);
            out = emb_add_op(eb, n, 3);
            b.file = emb_finish_one_task(eb, in, out, &b.size);
            set_input_scale(&b, 0.01f);
            em_test_expect_refused(b.file, b.size, EM_STATUS_CORRUPT, "not finite");
            free(b.file);
        }
    }
    /* the flag on a non-LUT op */
    {
        emb_builder *eb = emb_create();
        const uint32_t in = emb_input(eb, 1, 1, 4), dims[2] = {4, 3};
        const float w[12] = {0};
        emb_node n = emb_node_init(EM_OP_DENSE, in);
        uint32_t out;
        n.flags = EM_NODE_FLAG_INT8_ACT;
        n.weight = emb_tensor_f32(eb, 2, dims, w);
        out = emb_add_op(eb, n, 3);
        b.file = emb_finish_one_task(eb, in, out, &b.size);
        set_input_scale(&b, 0.01f);
        em_test_expect_refused(b.file, b.size, EM_STATUS_CORRUPT, "only defined for LUT ops");
        free(b.file);
    }
}

int main(void)
{
    printf("cpu: %s\n", em_runtime_cpu_features());
    test_tiles_exact();
    test_tile_rows_exact();
    test_gemm_rows_exact();
    test_quantize_exact();
    test_table_micro_exact();
    test_kernels_against_reference();
    test_form_choice();
    test_nonfinite_input();
    test_loader_rules();
    return em_test_summary("test_int8_act");
}
