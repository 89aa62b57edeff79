/* LUT ops with int8 tables (flag INT8_TABLES, C = 16; FORMAT.md "int8 tables"):
 *
 *  - the byte-shuffle accumulation micro-kernel of every kernel set this CPU runs equals the generic one
 *    and a naive sum bit for bit, for 1..5 groups of 16 channels and 1..700 terms (int16 flushes), with
 *    extreme tables (every entry ±127) to catch int16 overflow;
 *  - every int8 kernel against the reference kernel, one-node models across odd shapes (Cout 1..40 not a
 *    multiple of 16, odd H/W, strides 1-3, 'same'/'valid'/asymmetric pads, kernels 1×1/3×3/5×5, r not
 *    dividing Cin, > 256 terms). The generic set builds the float table in the reference's order and must
 *    match exactly; SIMD sets build it with FMA, which can move an entry across a rounding boundary of the
 *    quantisation: they may differ by 2 integer steps (m / 127, computed here in double) per output;
 *  - the int8 result stays close to the float LUT op (loose: quantisation error);
 *  - the loader refuses the flag with C ≠ 16, on a non-LUT op, and unknown flag bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_kernels.h"
#include "em_test_builder.h"
#include "em_test_util.h"
#include "em_lut_int8.h"
#include "opt/em_lut_int8_kernels.h"

typedef emb_lut_layer int8_case; /* C = 16 */

#define CONV4(h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, act, bias) \
    {EM_OP_LUT_CONV2D, h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, 16, act, bias}
#define DENSE4(in, out, r, act, bias) {EM_OP_LUT_DENSE, 1, 1, in, out, 1, 1, 1, 1, 0, 0, 0, 0, r, 16, act, bias}

static const int8_case cases[] = {
    CONV4(9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, EM_ACT_RELU, 1),     /* 'same', r not dividing Cin */
    CONV4(32, 32, 1, 32, 5, 5, 1, 1, 0, 0, 0, 0, 1, EM_ACT_RELU, 1),  /* LeNet conv1 */
    CONV4(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 16, EM_ACT_RELU, 1), /* LeNet conv2 */
    CONV4(14, 14, 48, 40, 5, 5, 1, 1, 2, 2, 2, 2, 4, EM_ACT_NONE, 1), /* 300 terms: int16 flush; Cout 40 */
    CONV4(11, 10, 7, 3, 3, 3, 2, 2, 0, 0, 1, 1, 3, EM_ACT_RELU6, 0),  /* stride 2, TF 'same' */
    CONV4(6, 5, 16, 1, 1, 1, 1, 1, 0, 0, 0, 0, 4, EM_ACT_NONE, 1),    /* point-wise, Cout 1 */
    CONV4(12, 13, 9, 17, 5, 3, 2, 1, 2, 1, 2, 1, 5, EM_ACT_NONE, 1),  /* mixed strides, Cout 17 */
    CONV4(5, 5, 3, 15, 3, 3, 3, 3, 1, 1, 1, 1, 1, EM_ACT_NONE, 1),    /* stride = kernel */
    CONV4(1, 1, 4, 33, 1, 1, 1, 1, 0, 0, 0, 0, 3, EM_ACT_RELU, 1),    /* a single pixel */
    CONV4(4, 9, 2, 31, 4, 2, 1, 2, 3, 0, 0, 1, 2, EM_ACT_RELU, 1),    /* windows mostly padding */
    CONV4(7, 3, 11, 16, 2, 3, 2, 1, 0, 1, 1, 1, 4, EM_ACT_NONE, 0),   /* even kernel, asymmetric pads */
    CONV4(9, 9, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 8, EM_ACT_RELU, 1),     /* r > Cin: one short segment */
    CONV4(13, 11, 20, 23, 3, 3, 1, 1, 1, 1, 1, 1, 6, EM_ACT_RELU, 1),
    DENSE4(10, 7, 3, EM_ACT_RELU, 1),
    DENSE4(64, 1, 16, EM_ACT_NONE, 1),
    DENSE4(70, 33, 7, EM_ACT_RELU6, 1),
    DENSE4(1600, 40, 4, EM_ACT_RELU, 1), /* 400 terms */
    DENSE4(1024, 10, 32, EM_ACT_NONE, 0),
    DENSE4(300, 17, 5, EM_ACT_RELU, 1),
};
#define CASE_COUNT (sizeof cases / sizeof cases[0])

typedef emb_lut_model built;

static void build_case(const int8_case *c, uint32_t flags, uint32_t seed, int shared, built *out)
{
    emb_lut_model_build_shared(c, flags, seed, shared, out);
}

static void free_built(built *b)
{
    emb_lut_model_free(b);
}

/* max |table| in double: the scale the kernels use, up to float rounding */
static double table_absmax(const int8_case *c, const built *b)
{
    const uint32_t S = (c->cin + c->r - 1) / c->r;
    const size_t pixels = b->nx / c->cin;
    double m = 0.0;
    size_t p;
    uint32_t s, k, j;
    for (p = 0; p < pixels; ++p)
        for (s = 0; s < S; ++s)
            for (k = 0; k < 16; ++k) {
                double dot = 0.0;
                for (j = 0; j < c->r && s * c->r + j < c->cin; ++j)
                    dot += (double)b->x[p * c->cin + s * c->r + j] *
                           (double)b->codebook[((size_t)(b->codebook_segments == 1 ? 0 : s) * 16 + k) * c->r + j];
                m = fabs(dot) > m ? fabs(dot) : m;
            }
    return m;
}

static int run_model(const built *b, uint32_t kernels, const em_kernel *force, float *y, char *kernel_name,
                     size_t name_size)
{
    return em_test_run_forced(b->file, b->size, kernels, force, b->x, b->nx, y, b->ny, kernel_name, name_size);
}

static void test_kernels_against_reference(void)
{
    size_t i, exercised = 0;
    for (i = 0; i < 2 * CASE_COUNT; ++i) { /* each case, then again with a layer-shared codebook [1, 16, r] */
        const int8_case *c = &cases[i % CASE_COUNT];
        const int shared = i >= CASE_COUNT;
        built b;
        float *want, *got, *flt;
        char name[96], what[200];
        double quantum, scale = 0.0, worst_float = 0.0;
        em_test_set_kernel kernels[EM_TEST_MAX_SET_KERNELS];
        uint32_t set;
        size_t k, j, count;
        build_case(c, EM_NODE_FLAG_INT8_TABLES, 300u + (uint32_t)i, shared, &b);
        want = (float *)malloc(b.ny * sizeof(float));
        got = (float *)malloc(b.ny * sizeof(float));
        flt = (float *)malloc(b.ny * sizeof(float));
        quantum = table_absmax(c, &b) / 127.0;
        snprintf(what, sizeof what, "int8 case %zu%s (%s %ux%ux%u -> %u, r=%u)", i % CASE_COUNT,
                 shared ? " shared" : "", em_op_name(c->op), (unsigned)c->h,
                 (unsigned)c->w, (unsigned)c->cin, (unsigned)c->cout, (unsigned)c->r);
        if (!run_model(&b, EM_KERNELS_REFERENCE, NULL, want, name, sizeof name)) goto next;
        CHECKF(strcmp(name, c->op == EM_OP_LUT_DENSE ? "lut_dense_ref" : "lut_conv2d_ref") == 0, "%s: ref runs %s",
               what, name);
        for (k = 0; k < b.ny; ++k) scale = fabs((double)want[k]) > scale ? fabs((double)want[k]) : scale;
        count = em_test_available_kernels(c->op, "_i8_", kernels, EM_TEST_MAX_SET_KERNELS);
        for (j = 0; j < count; ++j) {
            const uint32_t kernel_set = kernels[j].set;
            const em_kernel *kernel = kernels[j].kernel;
            double worst = 0.0;
            size_t at = 0, differ = 0;
            char kwhat[300];
            snprintf(kwhat, sizeof kwhat, "%s, kernel %s", what, kernel->name);
            if (!run_model(&b, kernel_set, kernel, got, name, sizeof name)) continue;
            CHECKF(strcmp(name, kernel->name) == 0, "%s: node runs %s", kwhat, name);
            for (k = 0; k < b.ny; ++k) {
                const double d = fabs((double)got[k] - (double)want[k]);
                if (!(d <= worst)) {
                    worst = d;
                    at = k;
                }
                differ += got[k] != want[k];
            }
            if (kernel_set == EM_KERNELS_GENERIC)
                CHECKF(differ == 0, "%s: %zu outputs differ from the reference (max %.3g at %zu)", kwhat, differ,
                       worst, at);
            else
                CHECKF(worst <= 2.0 * quantum + 1e-5 * (1.0 + scale),
                       "%s: output %zu is %.9g, reference %.9g (step %.3g)", kwhat, at, (double)got[at],
                       (double)want[at], quantum);
            ++exercised;
        }
        /* and each set's own choice for the node is an int8 kernel */
        for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set)
            if (em_kernels_available(set) && run_model(&b, set, NULL, got, name, sizeof name))
                CHECKF(strstr(name, "_i8_") != NULL, "%s: set %s chose %s", what, em_kernels_name(set), name);
        /* the same layer without the flag (float table): int8 stays within a few steps per term */
        free(b.file);
        free(b.codebook);
        free(b.x);
        build_case(c, 0, 300u + (uint32_t)i, shared, &b);
        if (run_model(&b, EM_KERNELS_REFERENCE, NULL, flt, name, sizeof name)) {
            const uint32_t terms = (c->op == EM_OP_LUT_DENSE ? 1u : c->kh * c->kw) * ((c->cin + c->r - 1) / c->r);
            for (k = 0; k < b.ny; ++k) {
                const double d = fabs((double)flt[k] - (double)want[k]);
                worst_float = d > worst_float ? d : worst_float;
            }
            /* each term is off by at most half a step */
            CHECKF(worst_float <= 0.5 * quantum * terms * 1.001 + 1e-5 * (1.0 + scale),
                   "%s: int8 vs float differ by %.3g (step %.3g, %u terms)", what, worst_float, quantum,
                   (unsigned)terms);
        }
    next:
        free(want);
        free(got);
        free(flt);
        free_built(&b);
    }
    printf("int8 kernels checked against the reference: %zu kernel runs\n", exercised);
    CHECKF(exercised >= CASE_COUNT, "only %zu int8 kernel runs", exercised);
}

/* The micro-kernels of every set equal a naive sum exactly. */
static void test_accumulate_exact(void)
{
    static const size_t term_counts[] = {1, 2, 15, 255, 256, 257, 513, 700};
    em_test_rng rng;
    uint32_t set;
    size_t gi, ti, extreme;
    em_test_rng_seed(&rng, 9);
    for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set) {
        const int failed_before = em_test_failures();
        const em_lut_int8_micro *micro;
        const char *isa;
        if (!em_kernels_available(set)) continue;
        micro = em_lut_int8_micro_for(set);
        isa = micro->isa;
        for (gi = 1; gi <= 5; ++gi)
            for (ti = 0; ti < sizeof term_counts / sizeof term_counts[0]; ++ti)
                for (extreme = 0; extreme < 3; ++extreme) {
                    const size_t terms = term_counts[ti], rows = 37;
                    int8_t *table = (int8_t *)malloc(rows * 16);
                    uint32_t *offsets = (uint32_t *)malloc(terms * sizeof(uint32_t));
                    uint8_t *idx = (uint8_t *)malloc(terms * gi * 16);
                    int32_t *got = (int32_t *)malloc(gi * 16 * sizeof(int32_t));
                    size_t i, t, bad = 0;
                    for (i = 0; i < rows * 16; ++i)
                        table[i] = (int8_t)(extreme == 0 ? (int)em_test_rand_below(&rng, 255) - 127
                                                         : (extreme == 1 ? 127 : -127));
                    for (t = 0; t < terms; ++t) offsets[t] = 16u * em_test_rand_below(&rng, (uint32_t)rows);
                    for (i = 0; i < terms * gi * 16; ++i) idx[i] = (uint8_t)em_test_rand_below(&rng, 16);
                    memset(got, 0x55, gi * 16 * sizeof(int32_t));
                    micro->accumulate(table, offsets, idx, terms, gi, got);
                    for (i = 0; i < gi * 16; ++i) {
                        int64_t want = 0;
                        for (t = 0; t < terms; ++t) want += table[offsets[t] + idx[(t * gi + i / 16) * 16 + i % 16]];
                        bad += want != got[i];
                    }
                    CHECKF(bad == 0, "accumulate %s: %zu of %zu sums wrong (%zu groups, %zu terms, extreme %zu)", isa,
                           bad, gi * 16, gi, terms, extreme);
                    free(table);
                    free(offsets);
                    free(idx);
                    free(got);
                }
        /* absmax and quantize equal the scalar helpers bit for bit, ties and saturation included */
        for (extreme = 0; extreme < 4; ++extreme) {
            const size_t n = 1000 + extreme;
            float *src = (float *)malloc(n * sizeof(float));
            int8_t *q = (int8_t *)malloc(n);
            float inverse, m;
            size_t i, bad = 0;
            for (i = 0; i < n; ++i) src[i] = 3.0f * em_test_rand_float(&rng);
            if (extreme >= 1) /* exact halves (ties to even) at 127/3 steps */
                for (i = 0; i < n; i += 3) src[i] = ((float)(int)em_test_rand_below(&rng, 255) - 127.0f + 0.5f) * 3.0f / 127.0f;
            src[n / 3] = extreme == 3 ? -3.5f : 3.0f; /* the maximum, negative in one round */
            m = micro->absmax(src, n);
            CHECKF(m == em_lut_int8_absmax(src, n), "absmax %s: %.9g vs %.9g", isa, (double)m,
                   (double)em_lut_int8_absmax(src, n));
            inverse = extreme == 2 ? 127.0f / 1.5f : em_lut_int8_inverse(m); /* 2: entries far past +-127 */
            micro->quantize(src, n, inverse, q);
            for (i = 0; i < n; ++i) bad += q[i] != (int8_t)em_lut_int8_quantize(src[i], inverse);
            CHECKF(bad == 0, "quantize %s: %zu of %zu entries differ (round %zu)", isa, bad, n, extreme);
            free(src);
            free(q);
        }
        printf("int8 accumulation, absmax, quantize %s (set %s): %s\n", isa, em_kernels_name(set),
               em_test_verdict(failed_before));
    }
}

static void test_loader_rules(void)
{
    built b;
    const int8_case c = CONV4(5, 5, 4, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, EM_ACT_NONE, 1);
    size_t rec;
    emb_builder *eb;
    uint32_t in, dims[2] = {4, 3}, out;
    float w[12] = {0};
    emb_node n;
    uint8_t *file;
    size_t size;

    /* the flag with C != 16: rewrite C (and bits stay 4: 16 -> 9 keeps the map valid otherwise) */
    build_case(&c, EM_NODE_FLAG_INT8_TABLES, 1, 0, &b);
    rec = emb_node_record_offset(b.file, 0);
    emb_put_u32(b.file + rec + 4 * 16, 9); /* codewords */
    emb_fix_crcs(b.file, b.size);
    em_test_expect_refused(b.file, b.size, EM_STATUS_CORRUPT, "INT8_TABLES needs C = 16");
    /* an unknown flag bit (0x2 is INT8_ACT since FORMAT.md "int8 activations"; 0x4 is the next unknown) */
    emb_put_u32(b.file + rec + 4 * 16, 16);
    emb_put_u32(b.file + rec + 4 * 3, 0x5u);
    emb_fix_crcs(b.file, b.size);
    em_test_expect_refused(b.file, b.size, EM_STATUS_UNSUPPORTED, "unknown node flags 0x00000004");
    free_built(&b);

    /* the flag on a non-LUT op */
    eb = emb_create();
    in = emb_input(eb, 1, 1, 4);
    n = emb_node_init(EM_OP_DENSE, in);
    n.flags = EM_NODE_FLAG_INT8_TABLES;
    n.weight = emb_tensor_f32(eb, 2, dims, w);
    out = emb_add_op(eb, n, 3);
    emb_task_auto(eb, "t", in, out);
    file = emb_finish(eb, &size);
    emb_destroy(eb);
    em_test_expect_refused(file, size, EM_STATUS_CORRUPT, "only defined for LUT ops");
    free(file);
}

int main(void)
{
    printf("cpu: %s\n", em_runtime_cpu_features());
    test_accumulate_exact();
    test_kernels_against_reference();
    test_loader_rules();
    return em_test_summary("test_lut_int8");
}
