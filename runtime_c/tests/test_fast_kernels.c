/* (e) Every fast kernel against its reference kernel, across odd shapes and remainders: Cout not a
 * multiple of 4/8/16, r not dividing Cin, r > Cin, C from 2 to 256 (around the 16/32/64 boundaries of
 * the AVX-512 in-register lookups), strides 1/2/3, 'same'/'valid'/asymmetric padding, tiny and
 * LeNet-sized layers, tables split into bands, codebooks deeper than the node uses, and layer-shared
 * codebooks [1, C, r] that serve every segment (SHARED_CB).
 *
 * Each case is a one-node model; the reference output comes from loading it with EM_KERNELS_REFERENCE,
 * then every kernel of every kernel set this CPU runs (em_kernel_list: SIMD sets, portable and BLAS
 * kernels) is forced onto the node through the normal loader (plan, pack, context plan) and run with
 * em_run_task. Also: table sharing between nodes, and that no kernel set allocates after load.
 *
 * Tolerance: |fast − ref| ≤ 1e-5 · (1 + max|ref|) per output (relative 1e-5, typical error 1e-7):
 * fast kernels only reorder the float32 sums (vector lanes, FMA), they compute the same terms. Inputs
 * are in [-1, 1) and weights small, so sums stay O(10) even for K = 800 terms. Depthwise convolutions
 * with multiplier 1 are held to the bit: they sum in the reference's order (depthwise_fused_order). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_kernels.h"
#include "em_test_builder.h"
#include "em_test_util.h"
#include "ref/em_ref_kernels.h"

#define TOL 1e-5

typedef struct layer_case {
    uint32_t op;
    uint32_t h, w, cin, cout; /* cout: output channels (depthwise: the multiplier M) */
    uint32_t kh, kw, sh, sw, pt, pl, pb, pr;
    uint32_t r, C, extra_segments; /* LUT ops; extra_segments: a deeper shared codebook (S_cb > S), or SHARED_CB */
    uint32_t activation;
    int bias;
} layer_case;

#define SHARED_CB 0xFFFFFFFFu /* extra_segments of a layer-shared codebook: S_cb = 1 for every S */

#define LUT_CONV(h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, C, extra, act, bias) \
    {EM_OP_LUT_CONV2D, h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, r, C, extra, act, bias}
#define CONV(h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, act, bias) \
    {EM_OP_CONV2D, h, w, cin, cout, kh, kw, sh, sw, pt, pl, pb, pr, 0, 0, 0, act, bias}
#define LUT_DENSE(in, out, r, C, extra, act, bias) \
    {EM_OP_LUT_DENSE, 1, 1, in, out, 1, 1, 1, 1, 0, 0, 0, 0, r, C, extra, act, bias}
#define DENSE(in, out, act, bias) {EM_OP_DENSE, 1, 1, in, out, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, act, bias}
#define WINDOW_OP(op, h, w, c, m, kh, kw, sh, sw, pt, pl, pb, pr, act, bias) \
    {op, h, w, c, m, kh, kw, sh, sw, pt, pl, pb, pr, 0, 0, 0, act, bias}

static const layer_case cases[] = {
    /* LUT_CONV2D: planar tables (r > 1) and decoded weights (r = 1) */
    LUT_CONV(9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 5, 0, EM_ACT_RELU, 1),      /* 'same', r not dividing Cin */
    LUT_CONV(8, 8, 1, 4, 5, 5, 1, 1, 0, 0, 0, 0, 1, 2, 0, EM_ACT_NONE, 1),      /* LeNet-like first layer, C=2 */
    LUT_CONV(11, 10, 7, 3, 3, 3, 2, 2, 0, 0, 1, 1, 3, 3, 1, EM_ACT_RELU6, 0),   /* stride 2, TF 'same' */
    LUT_CONV(6, 5, 16, 9, 1, 1, 1, 1, 0, 0, 0, 0, 4, 16, 0, EM_ACT_NONE, 1),    /* point-wise */
    LUT_CONV(12, 12, 9, 8, 5, 3, 2, 1, 2, 1, 2, 1, 5, 17, 2, EM_ACT_NONE, 1),   /* mixed strides, C=17 */
    LUT_CONV(5, 5, 3, 2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 256, 0, EM_ACT_NONE, 1),    /* stride = kernel, C=256 */
    LUT_CONV(1, 1, 4, 3, 1, 1, 1, 1, 0, 0, 0, 0, 3, 7, 0, EM_ACT_RELU, 1),      /* a single pixel */
    LUT_CONV(4, 9, 2, 5, 4, 2, 1, 2, 3, 0, 0, 1, 2, 2, 0, EM_ACT_RELU, 1),      /* windows mostly padding */
    LUT_CONV(7, 3, 11, 4, 2, 3, 2, 1, 0, 1, 1, 1, 4, 31, 1, EM_ACT_NONE, 0),    /* even kernel, asymmetric pads */
    LUT_CONV(9, 9, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 8, 9, 0, EM_ACT_RELU, 1),      /* r > Cin: one short segment */
    LUT_CONV(32, 32, 1, 32, 5, 5, 1, 1, 0, 0, 0, 0, 1, 32, 0, EM_ACT_RELU, 1),  /* LeNet conv1, preset light */
    LUT_CONV(32, 32, 1, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 0, EM_ACT_RELU, 1),  /* words net3 conv1, light */
    LUT_CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 16, 64, 0, EM_ACT_RELU, 1), /* LeNet conv2, light */
    LUT_CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 8, 128, 0, EM_ACT_RELU, 1), /* LeNet conv2, accu */
    LUT_CONV(16, 16, 16, 33, 3, 3, 1, 1, 1, 1, 1, 1, 16, 64, 0, EM_ACT_RELU, 1), /* Cout = 33 */
    LUT_CONV(8, 8, 24, 20, 3, 3, 1, 1, 1, 1, 1, 1, 8, 256, 1, EM_ACT_RELU6, 1),  /* C = 256 */
    LUT_CONV(10, 13, 6, 17, 3, 3, 2, 2, 1, 1, 1, 1, 3, 65, 0, EM_ACT_NONE, 1),   /* stride 2 'same', odd sizes */
    LUT_CONV(40, 36, 48, 19, 3, 3, 1, 1, 1, 1, 1, 1, 4, 130, 0, EM_ACT_RELU, 1), /* table past the budget: bands */
    LUT_CONV(37, 30, 32, 12, 5, 5, 2, 2, 2, 2, 2, 2, 8, 200, 0, EM_ACT_NONE, 1), /* banded, stride 2 */
    /* LUT_DENSE: C around the register-lookup boundaries 16 / 32 / 64, Out not a multiple of 4/8/16 */
    LUT_DENSE(10, 7, 3, 5, 0, EM_ACT_RELU, 1),
    LUT_DENSE(17, 5, 1, 2, 1, EM_ACT_NONE, 0),
    LUT_DENSE(64, 17, 64, 16, 0, EM_ACT_NONE, 1),
    LUT_DENSE(70, 33, 7, 17, 0, EM_ACT_RELU6, 1),
    LUT_DENSE(96, 40, 16, 32, 0, EM_ACT_RELU, 1),
    LUT_DENSE(96, 49, 12, 33, 2, EM_ACT_NONE, 1),
    LUT_DENSE(128, 64, 8, 64, 0, EM_ACT_RELU, 1),
    LUT_DENSE(100, 33, 7, 65, 0, EM_ACT_NONE, 1),
    LUT_DENSE(48, 21, 5, 256, 0, EM_ACT_RELU, 0),
    LUT_DENSE(1600, 1024, 32, 32, 0, EM_ACT_RELU, 1), /* LeNet fc1, light */
    LUT_DENSE(1600, 1000, 16, 64, 0, EM_ACT_RELU, 1), /* LeNet fc1, accu-like */
    /* CONV2D */
    CONV(9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU, 1),
    CONV(8, 8, 1, 4, 5, 5, 1, 1, 0, 0, 0, 0, EM_ACT_NONE, 1),
    CONV(11, 10, 7, 3, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 0),
    CONV(6, 5, 16, 9, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_NONE, 1),
    CONV(12, 12, 9, 8, 5, 3, 2, 1, 2, 1, 2, 1, EM_ACT_NONE, 1),
    CONV(5, 5, 3, 2, 3, 3, 3, 3, 1, 1, 1, 1, EM_ACT_NONE, 1),
    CONV(1, 1, 4, 3, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_RELU, 1),
    CONV(4, 9, 2, 5, 4, 2, 1, 2, 3, 0, 0, 1, EM_ACT_RELU, 1),
    CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, EM_ACT_RELU, 1),
    CONV(10, 9, 24, 37, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU, 1),
    CONV(7, 7, 33, 17, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_RELU6, 1),
    /* DENSE */
    DENSE(1024, 10, EM_ACT_NONE, 1),
    DENSE(7, 3, EM_ACT_RELU, 0),
    DENSE(33, 17, EM_ACT_RELU6, 1),
    DENSE(1, 1, EM_ACT_NONE, 1),
    DENSE(300, 70, EM_ACT_RELU, 1),
    /* ops without a matrix product */
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 9, 7, 5, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 11, 10, 7, 2, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_NONE, 0),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 6, 6, 17, 3, 5, 5, 1, 1, 2, 2, 2, 2, EM_ACT_RELU, 1),
    /* multiplier 1 (MobileNets: the depthwise_rows kernels): 'same' 3x3 at stride 1 and 2 (TF pads 0/1),
     * channel counts with and without a vector tail, 5x5, no padding, a 1-wide input */
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 16, 16, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 16, 16, 32, 1, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 0),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 9, 11, 19, 1, 3, 3, 2, 2, 1, 1, 1, 1, EM_ACT_NONE, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 7, 8, 37, 1, 5, 5, 1, 1, 2, 2, 2, 2, EM_ACT_RELU, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 6, 5, 3, 1, 3, 2, 1, 1, 0, 0, 0, 0, EM_ACT_NONE, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 5, 1, 24, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU, 1),
    /* MobileNetV2 (issue 15): depthwise 3x3 at the block widths (t = 6), stride 1 'same' and stride 2 with TF's
     * 0/1 pads, odd spatial sizes; point-wise expand (ReLU6) and project (no activation) 1x1 convolutions */
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 15, 13, 144, 1, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 7, 9, 192, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 5, 5, 960, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 9, 7, 384, 1, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 1),
    CONV(13, 11, 24, 144, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_RELU6, 1),
    CONV(13, 11, 144, 24, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_NONE, 1),
    CONV(5, 7, 960, 160, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_NONE, 1),
    CONV(15, 15, 3, 32, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 1), /* the stem: 3x3 stride 2 on RGB */
    WINDOW_OP(EM_OP_MAX_POOL, 9, 7, 5, 0, 2, 2, 2, 2, 0, 0, 0, 0, EM_ACT_NONE, 0),
    WINDOW_OP(EM_OP_MAX_POOL, 10, 9, 16, 0, 2, 2, 2, 2, 0, 0, 0, 0, EM_ACT_RELU6, 0), /* 2x2 fast path, odd width */
    WINDOW_OP(EM_OP_MAX_POOL, 11, 10, 19, 0, 3, 3, 2, 2, 1, 1, 1, 1, EM_ACT_RELU, 0),
    WINDOW_OP(EM_OP_AVG_POOL, 9, 7, 5, 0, 3, 3, 2, 2, 1, 1, 1, 1, EM_ACT_NONE, 0),
    WINDOW_OP(EM_OP_AVG_POOL, 8, 8, 33, 0, 2, 2, 2, 2, 0, 0, 0, 0, EM_ACT_RELU6, 0),
    WINDOW_OP(EM_OP_GLOBAL_AVG_POOL, 5, 6, 21, 0, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_RELU, 0),
    WINDOW_OP(EM_OP_RESHAPE, 3, 4, 5, 0, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_RELU, 0),
    WINDOW_OP(EM_OP_ACTIVATION, 3, 4, 5, 0, 1, 1, 1, 1, 0, 0, 0, 0, EM_ACT_RELU6, 0),
    /* layer-shared codebooks [1, C, r] (FORMAT.md "LUT ops"; last, so the cases above keep their seeds):
     * point-wise (MobileNetV2 project/expand), r not dividing Cin, a 3x3 with padding, decoded weights
     * (r = 1), C = 16 / 256, banded tables */
    LUT_CONV(13, 11, 144, 24, 1, 1, 1, 1, 0, 0, 0, 0, 4, 256, SHARED_CB, EM_ACT_NONE, 1),
    LUT_CONV(7, 9, 30, 37, 1, 1, 1, 1, 0, 0, 0, 0, 4, 16, SHARED_CB, EM_ACT_RELU6, 1),
    LUT_CONV(9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 5, SHARED_CB, EM_ACT_RELU, 1),
    LUT_CONV(10, 13, 6, 17, 3, 3, 2, 2, 1, 1, 1, 1, 1, 65, SHARED_CB, EM_ACT_NONE, 0),
    LUT_CONV(40, 36, 48, 19, 3, 3, 1, 1, 1, 1, 1, 1, 4, 130, SHARED_CB, EM_ACT_RELU, 1),
    LUT_DENSE(70, 33, 7, 17, SHARED_CB, EM_ACT_RELU6, 1),
    LUT_DENSE(100, 33, 3, 16, SHARED_CB, EM_ACT_NONE, 1),
    LUT_DENSE(1280, 10, 4, 256, SHARED_CB, EM_ACT_NONE, 1),
    /* depthwise 3x3 multiplier 1 on MobileNetV2's small maps (64x64 input: 8x8, 4x4, 2x2), where most pixels
     * are edges: TF 'same' at stride 1 (pads 1/1) and stride 2 (0/1 on even sizes, 1/1 on odd), channel
     * counts with a tail on every vector width (4, 8, 16), bias and ReLU6; then explicit pads of 2 (two
     * tap columns / rows in the padding), a 1-row input (both outer kernel rows in the padding) and
     * non-square maps. Bit-identical to the reference's order (depthwise_fused_order). */
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 1, 1, 19, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 1, 1, 21, 1, 3, 3, 2, 2, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 2, 2, 19, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 2, 2, 35, 1, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 3, 3, 21, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 3, 3, 19, 1, 3, 3, 2, 2, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 4, 4, 35, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 4, 4, 21, 1, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 5, 5, 19, 1, 3, 3, 1, 1, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 5, 5, 35, 1, 3, 3, 2, 2, 1, 1, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 8, 8, 21, 1, 3, 3, 2, 2, 0, 0, 1, 1, EM_ACT_RELU6, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 4, 5, 19, 1, 3, 3, 1, 1, 2, 2, 2, 2, EM_ACT_NONE, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 3, 4, 21, 1, 3, 3, 2, 1, 2, 2, 1, 2, EM_ACT_RELU, 1),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 1, 6, 19, 1, 3, 3, 1, 2, 1, 1, 1, 1, EM_ACT_RELU6, 0),
    WINDOW_OP(EM_OP_DEPTHWISE_CONV2D, 2, 7, 16, 1, 3, 3, 2, 2, 0, 1, 1, 1, EM_ACT_RELU6, 1),
};
#define CASE_COUNT (sizeof cases / sizeof cases[0])

static uint32_t index_bits(uint32_t codewords)
{
    uint32_t bits = 1;
    while ((1u << bits) < codewords) ++bits;
    return bits;
}

/* Adds the case's node reading `in` to the builder; returns its value id. Indices include C − 1. */
static uint32_t add_layer(emb_builder *b, const layer_case *c, uint32_t in, em_test_rng *rng)
{
    emb_node n = emb_node_init(c->op, in);
    uint32_t out_c = c->cout;
    n.activation = c->activation;
    if (c->op != EM_OP_DENSE && c->op != EM_OP_LUT_DENSE && c->op != EM_OP_GLOBAL_AVG_POOL &&
        c->op != EM_OP_RESHAPE && c->op != EM_OP_ACTIVATION) {
        emb_node_window(&n, c->kh, c->kw, c->sh, c->sw, c->pt, c->pl, c->pb, c->pr);
    }
    if (c->op == EM_OP_CONV2D || c->op == EM_OP_DENSE || c->op == EM_OP_DEPTHWISE_CONV2D) {
        const uint32_t dims4[4] = {c->kh, c->kw, c->cin, c->cout}, dims2[2] = {c->cin, c->cout};
        const size_t count = c->op == EM_OP_DENSE ? (size_t)c->cin * c->cout : (size_t)c->kh * c->kw * c->cin * c->cout;
        float *w = (float *)malloc(count * sizeof(float));
        em_test_fill(rng, w, count, 0.2f);
        n.weight = c->op == EM_OP_DENSE ? emb_tensor_f32(b, 2, dims2, w) : emb_tensor_f32(b, 4, dims4, w);
        free(w);
        if (c->op == EM_OP_DEPTHWISE_CONV2D) out_c = c->cin * c->cout;
    } else if (c->op == EM_OP_LUT_CONV2D || c->op == EM_OP_LUT_DENSE) {
        const uint32_t S = (c->cin + c->r - 1) / c->r;
        const uint32_t S_cb = c->extra_segments == SHARED_CB ? 1u : S + c->extra_segments;
        const uint32_t taps = c->op == EM_OP_LUT_CONV2D ? c->kh * c->kw : 1;
        const uint32_t cb_dims[3] = {S_cb, c->C, c->r};
        const size_t cb_count = (size_t)S_cb * c->C * c->r, idx_count = (size_t)taps * S * c->cout;
        float *cb = (float *)malloc(cb_count * sizeof(float));
        uint32_t *idx = (uint32_t *)malloc(idx_count * sizeof(uint32_t));
        size_t i;
        em_test_fill(rng, cb, cb_count, 0.3f);
        for (i = 0; i < idx_count; ++i) idx[i] = em_test_rand_below(rng, c->C);
        idx[idx_count / 2] = c->C - 1;
        n.seg_len = c->r;
        n.codewords = c->C;
        n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
        if (c->op == EM_OP_LUT_CONV2D) {
            const uint32_t dims[4] = {c->kh, c->kw, S, c->cout};
            n.index = emb_tensor_idx(b, 4, dims, index_bits(c->C), idx);
        } else {
            const uint32_t dims[2] = {S, c->cout};
            n.index = emb_tensor_idx(b, 2, dims, index_bits(c->C), idx);
        }
        free(cb);
        free(idx);
    }
    if (c->bias) {
        float *bias = (float *)malloc(out_c * sizeof(float));
        em_test_fill(rng, bias, out_c, 0.5f);
        n.bias = emb_tensor_f32(b, 1, &out_c, bias);
        free(bias);
    }
    return emb_add_op(b, n, out_c);
}

typedef struct loaded {
    em_model *model;
    void *memory;
    em_context *ctx;
} loaded;

static int load(const uint8_t *file, size_t size, uint32_t kernels, const em_kernel *force, loaded *l,
                const char *what)
{
    em_error err;
    em_status st = em_model_load_forced(file, size, NULL, kernels, force, &l->model, &err);
    l->memory = NULL;
    l->ctx = NULL;
    if (!CHECKF(st == EM_STATUS_OK, "%s: load: %s", what, err.message)) return 0;
    l->memory = malloc(em_context_size(l->model));
    st = em_context_init(l->model, l->memory, em_context_size(l->model), &l->ctx, &err);
    return CHECKF(st == EM_STATUS_OK, "%s: context: %s", what, err.message);
}

static void unload(loaded *l)
{
    free(l->memory);
    em_model_free(l->model);
}

/* |got − want| ≤ TOL · (1 + max|want|) */
static int close_to(const float *got, const float *want, size_t n, const char *what)
{
    double scale = 0.0, worst = 0.0;
    size_t i, at = 0;
    for (i = 0; i < n; ++i) scale = (double)want[i] > scale ? (double)want[i] : (-(double)want[i] > scale ? -(double)want[i] : scale);
    for (i = 0; i < n; ++i) {
        const double d = (double)got[i] - (double)want[i];
        const double ad = d < 0 ? -d : d;
        if (!(ad <= worst)) { /* also catches NaN */
            worst = ad;
            at = i;
        }
    }
    return CHECKF(worst <= TOL * (1.0 + scale), "%s: output %zu is %.9g, reference %.9g (max |ref| %.3g)", what, at,
                  (double)got[at], (double)want[at], scale);
}

/* Depthwise multiplier 1 in the reference's order of sums (ky outer, kx inner, from zero, taps in the
 * padding skipped) with one rounding per tap (fmaf), then the bias and activation as the reference: the
 * bits the depthwise_rows kernels give where the ISA's multiply-add is fused (AVX2, AVX-512, aarch64 NEON).
 * Where it rounds twice (SSE2, armv7 NEON, the portable C) they give the reference's own bits. */
static void depthwise_fused_order(const em_node *node, const float *input, float *output)
{
    const uint32_t channels = node->in.c, taps = node->kernel_h * node->kernel_w;
    const float *weights = em_tensor_f32(node->weight), *bias = em_tensor_f32(node->bias);
    uint32_t pixel, t, c;
    for (pixel = 0; pixel < node->out.h * node->out.w; ++pixel) {
        float *y = output + (size_t)pixel * channels;
        for (c = 0; c < channels; ++c) y[c] = 0.0f;
        for (t = 0; t < taps; ++t) { /* ky = t / kw outer, kx = t % kw inner: the reference's order */
            const int32_t iy = em_input_coord(pixel / node->out.w, node->stride_h, t / node->kernel_w, node->pad_top,
                                              node->in.h);
            const int32_t ix = em_input_coord(pixel % node->out.w, node->stride_w, t % node->kernel_w, node->pad_left,
                                              node->in.w);
            const float *x;
            if (iy < 0 || ix < 0) continue; /* in the padding: skipped */
            x = input + ((size_t)iy * node->in.w + (size_t)ix) * channels;
            for (c = 0; c < channels; ++c) y[c] = fmaf(x[c], weights[(size_t)t * channels + c], y[c]);
        }
        for (c = 0; c < channels; ++c) y[c] = em_activate(bias != NULL ? y[c] + bias[c] : y[c], node->activation);
    }
}

/* The index of the first output whose bits differ (n where none does) */
static size_t first_bit_difference(const float *got, const float *want, size_t n)
{
    size_t i;
    for (i = 0; i < n && memcmp(&got[i], &want[i], sizeof(float)) == 0; ++i) {
    }
    return i;
}

/* got holds the reference's bits or, all of it, the fused order's (depthwise_fused_order) */
static void check_depthwise_bits(const float *got, const float *want, const float *fused, size_t n, const char *what)
{
    const size_t at_ref = first_bit_difference(got, want, n), at_fused = first_bit_difference(got, fused, n);
    const int same = at_ref == n || at_fused == n;
    const size_t at = same ? 0 : (at_ref > at_fused ? at_ref : at_fused); /* where the closer one first differs */
    CHECKF(same,
           "%s: not the reference's order of sums: output %zu is %a, reference %a, fused order %a", what, at,
           (double)got[at], (double)want[at], (double)fused[at]);
}

/* The threads split a row kernel's node by output rows (run_part): pieces of 1, 2 and 3 rows, run from
 * the last to the first, give the whole run's bits, and a range that starts and ends inside the map
 * writes its rows and no others. Row kernels (depthwise_rows) handle several rows per call, so a piece's
 * first and last rows are where a band of rows starts and stops. */
static void check_row_pieces(const em_node *node, const float *x, const float *whole, size_t ny, const char *what)
{
    const uint32_t rows = node->out.h;
    const size_t row_floats = ny / rows;
    float *got = (float *)malloc(ny * sizeof(float));
    em_kernel_env env;
    uint32_t piece, u, units = 0;
    size_t at;
    memset(&env, 0, sizeof env);
    if (node->kernel->split == NULL || node->kernel->split(node, &env, 0, &units) == 0 || units != rows) {
        free(got);
        return;
    }
    for (piece = 1; piece <= 3; ++piece) {
        memset(got, 0xA5, ny * sizeof(float));
        for (u = ((rows + piece - 1) / piece) * piece; u > 0; u -= piece)
            node->kernel->run_part(node, x, got, &env, 0, u - piece, u < rows ? u : rows);
        at = first_bit_difference(got, whole, ny);
        CHECKF(at == ny, "%s: pieces of %u rows: output %zu is %a, the whole run's %a", what, (unsigned)piece, at,
               (double)got[at < ny ? at : 0], (double)whole[at < ny ? at : 0]);
    }
    if (rows >= 3) {
        const uint32_t begin = 1, end = rows - 1;
        memset(got, 0xA5, ny * sizeof(float));
        node->kernel->run_part(node, x, got, &env, 0, begin, end);
        at = first_bit_difference(got + begin * row_floats, whole + begin * row_floats, (end - begin) * row_floats);
        CHECKF(at == (end - begin) * row_floats, "%s: rows [%u, %u): output %zu differs from the whole run's", what,
               (unsigned)begin, (unsigned)end, begin * row_floats + at);
        for (at = 0; at < ny; ++at) {
            uint32_t bits;
            if (at == begin * row_floats) at = end * row_floats;
            if (at >= ny) break;
            memcpy(&bits, &got[at], sizeof bits);
            if (bits != 0xA5A5A5A5u) break;
        }
        CHECKF(at >= ny, "%s: rows [%u, %u) wrote output %zu outside them", what, (unsigned)begin, (unsigned)end, at);
    }
    free(got);
}

static void test_case(size_t index, const char **seen, size_t *seen_count, size_t seen_max)
{
    const layer_case *c = &cases[index];
    emb_builder *b = emb_create();
    em_test_rng rng;
    uint32_t in, out, oh, ow, oc, set;
    size_t size, nx, ny;
    uint8_t *file;
    float *x, *want, *got, *fused = NULL;
    loaded ref;
    char what[160];
    em_error err;
    em_status st;

    em_test_rng_seed(&rng, 100u + (uint32_t)index);
    in = (c->op == EM_OP_DENSE || c->op == EM_OP_LUT_DENSE) ? emb_input(b, 1, 1, c->cin)
                                                            : emb_input(b, c->h, c->w, c->cin);
    out = add_layer(b, c, in, &rng);
    emb_task_auto(b, "t", in, out);
    emb_value_shape(b, out, &oh, &ow, &oc);
    file = emb_finish(b, &size);
    emb_destroy(b);
    nx = (c->op == EM_OP_DENSE || c->op == EM_OP_LUT_DENSE) ? c->cin : (size_t)c->h * c->w * c->cin;
    ny = (size_t)oh * ow * oc;
    x = (float *)malloc(nx * sizeof(float));
    want = (float *)malloc(ny * sizeof(float));
    got = (float *)malloc(ny * sizeof(float));
    em_test_fill(&rng, x, nx, 1.0f);

    snprintf(what, sizeof what, "case %zu (%s %ux%ux%u -> %u)", index, em_op_name(c->op), (unsigned)c->h,
             (unsigned)c->w, (unsigned)c->cin, (unsigned)c->cout);
    if (load(file, size, EM_KERNELS_REFERENCE, NULL, &ref, what)) {
        st = em_run_task(ref.ctx, 0, x, nx, want, ny, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        if (c->op == EM_OP_DEPTHWISE_CONV2D && c->cout == 1) {
            fused = (float *)malloc(ny * sizeof(float));
            depthwise_fused_order(&ref.model->nodes[0], x, fused);
        }
        for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set) {
            const em_kernel *kernels[16];
            size_t count, k;
            if (!em_kernels_available(set)) continue;
            count = em_kernel_list(c->op, set, kernels, 16);
            CHECKF(count > 0 && count <= 16, "%s: kernel set %s has %zu kernels", what, em_kernels_name(set), count);
            for (k = 0; k < count && k < 16; ++k) {
                loaded fast;
                em_node_info info;
                char kwhat[256];
                if (kernels[k]->supports != NULL && !kernels[k]->supports(&ref.model->nodes[0])) continue;
                snprintf(kwhat, sizeof kwhat, "%s, kernel %s", what, kernels[k]->name);
                if (!load(file, size, set, kernels[k], &fast, kwhat)) {
                    unload(&fast);
                    continue;
                }
                em_model_node_info(fast.model, 0, &info);
                CHECKF(strcmp(info.kernel, kernels[k]->name) == 0, "%s: node runs %s", kwhat, info.kernel);
                if (c->op == EM_OP_LUT_CONV2D && strstr(info.kernel, "decoded") == NULL) {
                    /* tables far past the budget must be split into bands (and are then not shareable) */
                    const double table_bytes = 4.0 * ((c->cin + c->r - 1) / c->r) * c->C * (c->h + c->pt + c->pb) *
                                               (c->w + c->pl + c->pr);
                    if (table_bytes > 4.0 * 1024 * 1024)
                        CHECKF(!fast.model->nodes[0].table_shareable, "%s: a %.0f-byte table was not banded", kwhat,
                               table_bytes);
                }
                memset(got, 0xFF, ny * sizeof(float)); /* NaN: every output must be written */
                st = em_run_task(fast.ctx, 0, x, nx, got, ny, &err);
                if (CHECK_STATUS(st, EM_STATUS_OK, err)) {
                    close_to(got, want, ny, kwhat);
                    if (fused != NULL) check_depthwise_bits(got, want, fused, ny, kwhat);
                    if (fused != NULL) check_row_pieces(&fast.model->nodes[0], x, got, ny, kwhat);
                }
                /* a second run on the same context gives the same bits (no state left behind) */
                {
                    float *again = (float *)malloc(ny * sizeof(float));
                    em_run_task(fast.ctx, 0, x, nx, again, ny, &err);
                    CHECKF(memcmp(again, got, ny * sizeof(float)) == 0, "%s: second run differs", kwhat);
                    free(again);
                }
                if (*seen_count < seen_max) {
                    size_t i;
                    int dup = 0;
                    for (i = 0; i < *seen_count; ++i) dup |= strcmp(seen[i], kernels[k]->name) == 0;
                    if (!dup) seen[(*seen_count)++] = kernels[k]->name;
                }
                unload(&fast);
            }
        }
    }
    unload(&ref);
    free(x);
    free(want);
    free(got);
    free(fused);
    free(file);
}

/* Two tasks on one input whose first LUT layers share codebook and r (and strides/pads): the table is
 * computed once per run (the second node's table time stays 0), results equal the reference, and the
 * context is smaller than without sharing. */
static void test_table_sharing(void)
{
    emb_builder *b = emb_create();
    em_test_rng rng;
    uint32_t in, in2, lut_out[2], dense_out[2], set;
    const uint32_t cb_dims[3] = {2, 24, 8}, idx_dims[4] = {3, 3, 2, 10}, fc_cb_dims[3] = {1, 12, 20},
                   fc_idx_dims[2] = {1, 9};
    float cb[2 * 24 * 8], fc_cb[1 * 12 * 20], x[12 * 11 * 16], x2[20], want[4][12 * 11 * 10], got[12 * 11 * 10];
    uint32_t idx[2][3 * 3 * 2 * 10], fc_idx[2][45], i, t;
    size_t size;
    uint8_t *file;
    emb_node n;
    loaded ref;
    em_error err;
    em_status st;

    em_test_rng_seed(&rng, 77);
    em_test_fill(&rng, cb, sizeof cb / sizeof cb[0], 0.3f);
    em_test_fill(&rng, fc_cb, sizeof fc_cb / sizeof fc_cb[0], 0.3f);
    for (t = 0; t < 2; ++t) {
        for (i = 0; i < 3 * 3 * 2 * 10; ++i) idx[t][i] = em_test_rand_below(&rng, 24);
        for (i = 0; i < 45; ++i) fc_idx[t][i] = em_test_rand_below(&rng, 12);
    }
    em_test_fill(&rng, x, sizeof x / sizeof x[0], 1.0f);
    em_test_fill(&rng, x2, 20, 1.0f);
    in = emb_input(b, 12, 11, 16);
    in2 = emb_input(b, 1, 1, 20);
    for (t = 0; t < 2; ++t) { /* two LUT convolutions: same input, codebook tensor, r, pads */
        n = emb_node_init(EM_OP_LUT_CONV2D, in);
        n.kernel_h = n.kernel_w = 3;
        n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = 1;
        n.seg_len = 8; /* long enough segments that tables beat decoded weights (lut_conv2d_prefers_decoded) */
        n.codewords = 24;
        n.activation = EM_ACT_RELU;
        n.weight = t == 0 ? emb_tensor_f32(b, 3, cb_dims, cb) : 0; /* tensor 0 is the shared codebook */
        n.index = emb_tensor_idx(b, 4, idx_dims, 5, idx[t]);
        lut_out[t] = emb_add_op(b, n, 10);
    }
    for (t = 0; t < 2; ++t) { /* two LUT dense layers on the second input, sharing a codebook */
        n = emb_node_init(EM_OP_LUT_DENSE, in2);
        n.seg_len = 20; /* one segment: the shared table beats decoded weights (lut_dense_prefers_decoded) */
        n.codewords = 12;
        n.weight = t == 0 ? emb_tensor_f32(b, 3, fc_cb_dims, fc_cb) : 3;
        n.index = emb_tensor_idx(b, 2, fc_idx_dims, 4, fc_idx[t]);
        dense_out[t] = emb_add_op(b, n, 9);
    }
    emb_task_auto(b, "a", in, lut_out[0]);
    emb_task_auto(b, "b", in, lut_out[1]);
    emb_task_auto(b, "c", in2, dense_out[0]);
    emb_task_auto(b, "d", in2, dense_out[1]);
    file = emb_finish(b, &size);
    emb_destroy(b);

    if (load(file, size, EM_KERNELS_REFERENCE, NULL, &ref, "sharing, reference")) {
        const float *inputs[2];
        float *outputs[4];
        inputs[0] = x;
        inputs[1] = x2;
        for (t = 0; t < 4; ++t) outputs[t] = want[t];
        st = em_run_all(ref.ctx, inputs, outputs, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(ref.model->table_group_count == 0);
    }
    for (set = EM_KERNELS_GENERIC; set < EM_KERNELS_COUNT; ++set) {
        loaded fast;
        const float *inputs[2];
        float *outputs[4], all[4][12 * 11 * 10];
        char what[64];
        em_node_profile p0, p1;
        if (!em_kernels_available(set)) continue;
        snprintf(what, sizeof what, "sharing, %s", em_kernels_name(set));
        if (!load(file, size, set, NULL, &fast, what)) {
            unload(&fast);
            continue;
        }
        CHECKF(fast.model->table_group_count == 2, "%s: %u table groups, expected 2", what,
               (unsigned)fast.model->table_group_count);
        CHECK(fast.model->nodes[0].table_group == fast.model->nodes[1].table_group &&
              fast.model->nodes[0].table_group != EM_NONE);
        CHECK(fast.model->nodes[2].table_group == fast.model->nodes[3].table_group &&
              fast.model->nodes[2].table_group != EM_NONE);
        inputs[0] = x;
        inputs[1] = x2;
        for (t = 0; t < 4; ++t) outputs[t] = all[t];
        em_context_enable_profiling(fast.ctx, 1);
        for (i = 0; i < 2; ++i) { /* twice: the second run must rebuild the table, not trust the first's */
            if (i == 1) x[5] += 0.5f;
            st = em_run_all(fast.ctx, inputs, outputs, &err);
            CHECK_STATUS(st, EM_STATUS_OK, err);
        }
        x[5] -= 0.5f;
        st = em_run_all(fast.ctx, inputs, outputs, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        for (t = 0; t < 4; ++t) close_to(all[t], want[t], t < 2 ? 12 * 11 * 10 : 9, what);
        em_context_node_profile(fast.ctx, 0, &p0);
        em_context_node_profile(fast.ctx, 1, &p1);
        CHECKF(p0.runs == 3 && p1.runs == 3 && p1.table_ns == 0, "%s: runs %u/%u, second node's table %u ns", what,
               (unsigned)p0.runs, (unsigned)p1.runs, (unsigned)p1.table_ns);
        /* em_run_task of the second task alone builds the table itself */
        st = em_run_task(fast.ctx, 1, x, 12 * 11 * 16, got, 12 * 11 * 10, &err);
        if (CHECK_STATUS(st, EM_STATUS_OK, err)) close_to(got, want[1], 12 * 11 * 10, what);
        st = em_run_task(fast.ctx, 3, x2, 20, got, 9, &err);
        if (CHECK_STATUS(st, EM_STATUS_OK, err)) close_to(got, want[3], 9, what);
        unload(&fast);
    }
    unload(&ref);
    free(file);
}

/* The profiling API: off by default, zero counters on enable, bad arguments refused. */
static void test_profiling_api(void)
{
    const layer_case c = LUT_CONV(9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 5, 0, EM_ACT_RELU, 1);
    emb_builder *b = emb_create();
    em_test_rng rng;
    uint32_t in, out;
    size_t size;
    uint8_t *file;
    loaded l;
    float x[9 * 7 * 5], y[9 * 7 * 6];
    em_node_profile p;
    em_error err;
    em_test_rng_seed(&rng, 5);
    in = emb_input(b, 9, 7, 5);
    out = add_layer(b, &c, in, &rng);
    file = emb_finish_one_task(b, in, out, &size);
    em_test_fill(&rng, x, sizeof x / sizeof x[0], 1.0f);
    if (load(file, size, EM_KERNELS_AUTO, NULL, &l, "profiling")) {
        em_run_task(l.ctx, 0, x, sizeof x / sizeof x[0], y, sizeof y / sizeof y[0], &err);
        CHECK(em_context_node_profile(l.ctx, 0, &p) == EM_STATUS_OK && p.runs == 0 && p.total_ns == 0);
        CHECK(em_context_enable_profiling(l.ctx, 1) == EM_STATUS_OK);
        em_run_task(l.ctx, 0, x, sizeof x / sizeof x[0], y, sizeof y / sizeof y[0], &err);
        em_run_task(l.ctx, 0, x, sizeof x / sizeof x[0], y, sizeof y / sizeof y[0], &err);
        CHECK(em_context_node_profile(l.ctx, 0, &p) == EM_STATUS_OK && p.runs == 2);
        CHECK(p.table_ns + p.accumulate_ns <= p.total_ns);
        CHECK(em_context_enable_profiling(l.ctx, 0) == EM_STATUS_OK);
        em_run_task(l.ctx, 0, x, sizeof x / sizeof x[0], y, sizeof y / sizeof y[0], &err);
        CHECK(em_context_node_profile(l.ctx, 0, &p) == EM_STATUS_OK && p.runs == 2);
        CHECK(em_context_enable_profiling(l.ctx, 1) == EM_STATUS_OK); /* re-enabling clears */
        CHECK(em_context_node_profile(l.ctx, 0, &p) == EM_STATUS_OK && p.runs == 0);
        CHECK(em_context_node_profile(l.ctx, 1, &p) == EM_STATUS_BAD_ARGUMENT);
        CHECK(em_context_node_profile(NULL, 0, &p) == EM_STATUS_BAD_ARGUMENT);
        CHECK(em_context_node_profile(l.ctx, 0, NULL) == EM_STATUS_BAD_ARGUMENT);
        CHECK(em_context_enable_profiling(NULL, 1) == EM_STATUS_BAD_ARGUMENT);
    }
    unload(&l);
    free(file);
}

/* Kernel-set names and availability, and load options. */
static void test_kernel_sets(void)
{
    uint32_t k, set;
    em_load_options options;
    em_model *model = NULL;
    em_error err;
    uint8_t *file;
    size_t size;
    emb_builder *b = emb_create();
    uint32_t in = emb_input(b, 2, 2, 1);
    emb_task_auto(b, "t", in, emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, in), 0));
    file = emb_finish(b, &size);
    emb_destroy(b);

    CHECK(em_kernels_available(EM_KERNELS_AUTO) && em_kernels_available(EM_KERNELS_REFERENCE) &&
          em_kernels_available(EM_KERNELS_GENERIC));
    CHECK(!em_kernels_available(EM_KERNELS_COUNT));
    for (set = 0; set < EM_KERNELS_COUNT; ++set)
        CHECK(em_kernels_from_name(em_kernels_name(set), &k) && k == set);
    CHECK(em_kernels_from_name("reference", &k) && k == EM_KERNELS_REFERENCE);
    CHECK(!em_kernels_from_name("avx1024", &k) && !em_kernels_from_name(NULL, &k));
    CHECK(strcmp(em_kernels_name(99), "unknown") == 0);
    memset(&options, 0, sizeof options);
    for (set = 0; set < EM_KERNELS_COUNT; ++set) {
        options.kernels = set;
        if (em_kernels_available(set)) {
            em_status st = em_model_load_ex(file, size, NULL, &options, &model, &err);
            CHECK_STATUS(st, EM_STATUS_OK, err);
            CHECK(em_model_kernels(model) == (set == EM_KERNELS_AUTO ? em_kernels_resolve(set) : set));
            em_model_free(model);
        } else {
            CHECK_STATUS(em_model_load_ex(file, size, NULL, &options, &model, &err), EM_STATUS_UNSUPPORTED, err);
            CHECK(model == NULL && strstr(err.message, em_kernels_name(set)) != NULL);
        }
    }
    options.kernels = EM_KERNELS_COUNT;
    CHECK_STATUS(em_model_load_ex(file, size, NULL, &options, &model, &err), EM_STATUS_BAD_ARGUMENT, err);
    options.kernels = EM_KERNELS_AUTO;
    options.reserved[3] = 1;
    CHECK_STATUS(em_model_load_ex(file, size, NULL, &options, &model, &err), EM_STATUS_BAD_ARGUMENT, err);
    CHECK(em_model_kernels(NULL) == EM_KERNELS_REFERENCE);
    free(file);
}

/* em_kernel_choose's LUT_CONV2D choice (em_select.c lut_conv2d_prefers_decoded): r = 1 and narrow layers
 * with many codewords run decoded; the example pair's r = 16 / C = 64 layers keep their tables; decoded
 * weights past EM_LUT_DECODE_MAX_BYTES never. The parity of both kernels is checked by test_case. */
static void test_lut_conv2d_choice(void)
{
    static const struct {
        layer_case c;
        int decoded;
        const char *what;
    } choices[] = {
        {LUT_CONV(32, 32, 1, 32, 5, 5, 1, 1, 0, 0, 0, 0, 1, 32, 0, EM_ACT_RELU, 1), 1, "LeNet conv1 light (r = 1)"},
        {LUT_CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 16, 64, 0, EM_ACT_RELU, 1), 0, "LeNet conv2 light"},
        {LUT_CONV(14, 14, 32, 64, 5, 5, 1, 1, 0, 0, 0, 0, 8, 128, 0, EM_ACT_RELU, 1), 0, "LeNet conv2 accu"},
        {LUT_CONV(8, 8, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 16, 64, 0, EM_ACT_RELU, 1), 0, "VGG conv3b light"},
        {LUT_CONV(32, 32, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 8, 128, 0, EM_ACT_RELU, 1), 1, "VGG conv1b accu"},
        {LUT_CONV(16, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 8, 128, 0, EM_ACT_RELU, 1), 1, "VGG conv2b accu"},
        {LUT_CONV(32, 32, 32, 64, 3, 3, 2, 2, 0, 0, 1, 1, 8, 128, 0, EM_ACT_RELU, 1), 1, "3x3 stride 2, C = 128"},
        /* decoded weights 3·3·128·128·4 = 576 KiB: past the bound, tables even where they cost more */
        {LUT_CONV(4, 4, 128, 128, 3, 3, 1, 1, 1, 1, 1, 1, 8, 256, 0, EM_ACT_RELU, 1), 0, "wide, C = 256"},
    };
    size_t i;
    for (i = 0; i < sizeof choices / sizeof choices[0]; ++i) {
        const uint32_t set = em_kernels_resolve(EM_KERNELS_AUTO);
        emb_builder *b = emb_create();
        em_test_rng rng;
        uint32_t in;
        uint8_t *file;
        size_t size;
        loaded l;
        em_node_info info;
        em_test_rng_seed(&rng, 7u + (uint32_t)i);
        in = emb_input(b, choices[i].c.h, choices[i].c.w, choices[i].c.cin);
        emb_task_auto(b, "t", in, add_layer(b, &choices[i].c, in, &rng));
        file = emb_finish(b, &size);
        emb_destroy(b);
        if (load(file, size, set, NULL, &l, choices[i].what)) {
            em_model_node_info(l.model, 0, &info);
            CHECKF((strstr(info.kernel, "decoded") != NULL) == choices[i].decoded, "%s: chose %s, expected %s",
                   choices[i].what, info.kernel, choices[i].decoded ? "the decoded kernel" : "the table kernel");
        }
        unload(&l);
        free(file);
    }
}

int main(void)
{
    const char *seen[256];
    size_t seen_count = 0, i;
    printf("cpu: %s\n", em_runtime_cpu_features());
    for (i = 0; i < CASE_COUNT; ++i) test_case(i, seen, &seen_count, 256);
    printf("kernels checked against their reference (%zu):", seen_count);
    for (i = 0; i < seen_count; ++i) printf(" %s", seen[i]);
    printf("\n");
    CHECKF(seen_count >= 14, "only %zu fast kernels were exercised", seen_count);
    test_table_sharing();
    test_profiling_api();
    test_kernel_sets();
    if (em_kernels_resolve(EM_KERNELS_AUTO) != EM_KERNELS_REFERENCE) test_lut_conv2d_choice();
    return em_test_summary("test_fast_kernels");
}
