/* The choice of one kernel per node, at load: which algorithm suits the node's op and shape, asked of the
 * registry (em_kernels.c) by typed fields for the requested kernel set. The cost model between a LUT
 * convolution's tables and its decoded weights, and the size above which a BLAS takes a product, live
 * here and nowhere else. */
#include "em_kernels.h"

/* LUT_CONV2D nodes run as convolutions with decoded weights (the codebook expanded once at load) when
 * those take at most this many bytes of model memory and the cost estimate below favours them. The
 * decoded form needs no table scratch, so on the layers where it is chosen the context shrinks too. */
#ifndef EM_LUT_DECODE_MAX_BYTES
#define EM_LUT_DECODE_MAX_BYTES (256u * 1024u)
#endif
/* Cost model for that choice, in units of one multiply-add of the direct convolution, fitted to
 * em_bench_kernels on x86-64 (AVX-512 and AVX2; see lut_conv2d_prefers_decoded): a table entry costs about
 * 1.6 (EM_LUT_COST_TABLE_X10 / 10; 2.0 with C > 64, whose tables spill L1), a gathered accumulation
 * add about 5.8 (EM_LUT_COST_ADD_X10 / 10). A node is decoded when the LUT estimate exceeds the direct
 * convolution's by EM_LUT_DECODE_MARGIN_X10 / 10: the direct kernel's speed varies with shape (valid
 * 5×5 on a 10×10 output runs at 2/3 of its best), and the margin keeps close calls on the LUT path. */
#ifndef EM_LUT_COST_TABLE_X10
#define EM_LUT_COST_TABLE_X10 16u
#endif
#ifndef EM_LUT_COST_ADD_X10
#define EM_LUT_COST_ADD_X10 58u
#endif
#ifndef EM_LUT_DECODE_MARGIN_X10
#define EM_LUT_DECODE_MARGIN_X10 15u
#endif
/* Matrix products at least this large (multiply-adds) go to a linked BLAS: below it, OpenBLAS's
 * per-call overhead (argument checks, packing, thread dispatch) costs more than the runtime's own
 * unpacked micro-kernels save; see em_bench_kernels. */
#ifndef EM_BLAS_MIN_MACS
#define EM_BLAS_MIN_MACS (8u * 1024u * 1024u)
#endif

/* LUT nodes of this node's op (this one included) whose float table would equal this node's: same input,
 * codebook, r and C, and for LUT_CONV2D the same window and padding (em_plan.c tables_compatible). Tasks that
 * share an input and a merged first layer build that table once (issue: "tasks that share an input share the
 * first layer's tables"). */
static uint64_t lut_table_sharers(const em_model *model, const em_node *node)
{
    uint64_t count = 0;
    uint32_t i;
    if (model == NULL) return 1;
    for (i = 0; i < model->node_count; ++i) {
        const em_node *o = &model->nodes[i];
        count += o->op == node->op && !(o->flags & (EM_NODE_FLAG_INT8_TABLES | EM_NODE_FLAG_INT8_ACT)) && o->input == node->input &&
                 o->weight_id == node->weight_id && o->seg_len == node->seg_len && o->codewords == node->codewords &&
                 (node->op != EM_OP_LUT_CONV2D ||
                  (o->kernel_h == node->kernel_h && o->kernel_w == node->kernel_w && o->stride_h == node->stride_h &&
                   o->stride_w == node->stride_w && o->pad_top == node->pad_top && o->pad_left == node->pad_left &&
                   o->pad_bottom == node->pad_bottom && o->pad_right == node->pad_right));
    }
    return count ? count : 1;
}

/* Whether a float-table LUT_CONV2D node runs faster as a direct convolution with its codebook decoded at
 * load. r = 1 always (the table would be x · codeword: no saving). Otherwise compare the work of the two
 * (the cost model above): the table, H_in·W_in·S·r·C multiply-adds; the accumulation,
 * H_out·W_out·k_h·k_w·S·C_out gathered adds; the direct convolution, H_out·W_out·k_h·k_w·C_in·C_out.
 * Measured (em_bench_kernels, AVX-512): the LUT kernel wins where C is small against k²·C_out and r is
 * long (example pair at light/accu, held-out pair at light); the decoded one on narrow layers with
 * C = 128 (held-out `vgg conv1b accu` 39 vs 85 µs, `vgg conv2b accu` 29 vs 59 µs, a 3×3 stride-2
 * layer 62 vs 189 µs). */
static int lut_conv2d_prefers_decoded(const em_model *model, const em_node *node)
{
    const uint64_t r = node->seg_len, C = node->codewords;
    const uint64_t S = r ? (node->in.c + r - 1) / r : 0;
    const uint64_t taps = (uint64_t)node->kernel_h * node->kernel_w;
    const uint64_t out_px = (uint64_t)node->out.h * node->out.w, in_px = (uint64_t)node->in.h * node->in.w;
    uint64_t table_x10, lut_x10, direct_x10;
    if (r == 0 || taps * node->in.c * node->out.c * sizeof(float) > EM_LUT_DECODE_MAX_BYTES) return 0;
    if (r == 1) return 1;
    table_x10 = in_px * S * r * C * (C > 64 ? EM_LUT_COST_TABLE_X10 * 5u / 4u : EM_LUT_COST_TABLE_X10);
    table_x10 /= lut_table_sharers(model, node); /* a shared table is built once for all of them */
    lut_x10 = table_x10 + out_px * taps * S * node->out.c * EM_LUT_COST_ADD_X10;
    direct_x10 = out_px * taps * node->in.c * node->out.c * EM_LUT_DECODE_MARGIN_X10;
    return lut_x10 > direct_x10;
}

/* The same choice for LUT_DENSE, whose direct form is a matrix-vector product: its table costs in·C
 * entries (a table shared by LUT_DENSE nodes with the same input, codebook, r and C once for all of them)
 * and S·out gathered adds, the decoded product in·out
 * multiply-adds. Heads with fewer outputs than codewords decode (MobileNetV2's 1280 -> 10 at `light`:
 * 25 µs -> 3 µs on the AVX-512 host, 51 KB of decoded weights); the wide hidden layers of the
 * README pair stay tables (their decoded weights pass EM_LUT_DECODE_MAX_BYTES, or the table wins). */
static int lut_dense_prefers_decoded(const em_model *model, const em_node *node)
{
    const uint64_t in = node->in.numel, out = node->out.c, r = node->seg_len, C = node->codewords;
    uint64_t lut_x10;
    if (r == 0 || in * out * sizeof(float) > EM_LUT_DECODE_MAX_BYTES) return 0;
    lut_x10 = in * C * EM_LUT_COST_TABLE_X10 / lut_table_sharers(model, node) + (in + r - 1u) / r * out * EM_LUT_COST_ADD_X10;
    return lut_x10 > in * out * EM_LUT_DECODE_MARGIN_X10;
}

/* int8 activations (flag INT8_ACT): the table form (int32 tables built with sdot, sums by index) against
 * the decoded int8 GEMM (codebook expanded into int8 weights at load). Work, in units of one sdot (16
 * int8 multiply-adds) of the decoded GEMM's tile:
 *   table:   in_px·S·ceil4(r)·C / 16 sdot of the build, · EM_I8A_COST_BUILD_X10 / 10, plus
 *            out_px·taps·S·Cout planar table reads · EM_I8A_COST_READ_X10 / 10 (LUT_DENSE: S·Cout gathered
 *            reads · EM_I8A_COST_GATHER_X10 / 10)
 *   decoded: ceil4(out_px)·taps·Cin·Cout / 16 (the tile is 4 pixel rows: LUT_DENSE runs one row of four)
 * Fitted to armperf's per-function split (instructions, Cortex-A76 model, neon set with sdot) of the README
 * pair at `light` with every r > 1 LUT layer flagged: a decoded unit cost 1.9-2.4 instructions (tile_sdot,
 * im2col copies, bias pass: 1.40 M for fashion's 730 k units, 0.51 M for words' 213 k), a build unit 3.6
 * (build_planar_sdot 131 k for 49.7 k units, the plane's padding pixels included, plus the operand copy), a
 * planar read 0.83-0.86 (accumulate_planar_neon 265 k for 320 k reads, 127 k for 147 k) and a gathered read
 * 3.8 (gather_neon 193 k for 51 k); the weights are these over 2.0. By this estimate the table form wins on
 * the pair's r = 16 / 32 layers (LUT_DENSE by 3.4-4.2×, the convolutions by 1.25-1.85×) and loses on the
 * r = 1 first convs (by about 7×); the A76 model measured the whole file 1.50 M instructions with the
 * tables against 2.55 M decoded. On MobileNetV2-style r = 4 layers (1×1) it keeps the decoded GEMM.
 * On the avx2 and avx512 sets LUT_CONV2D keeps the decoded GEMM: its tile is vpmaddwd there while the
 * table build is generic C (x86-64 host, per-node profile of the same file, 300 runs, loaded machine: words
 * conv2 / conv3 about 175 / 90 µs decoded against 505 / 305 µs as tables; the whole file 0.46 against
 * 0.61 ms); their LUT_DENSE nodes still take the table form (fashion fc1 about 200 µs against 550-710). */
#ifndef EM_I8A_COST_BUILD_X10
#define EM_I8A_COST_BUILD_X10 18u
#endif
#ifndef EM_I8A_COST_READ_X10
#define EM_I8A_COST_READ_X10 4u
#endif
#ifndef EM_I8A_COST_GATHER_X10
#define EM_I8A_COST_GATHER_X10 19u
#endif

static int int8_act_prefers_tables(const em_node *node, uint32_t kernels)
{
    const int dense = node->op == EM_OP_LUT_DENSE;
    const uint64_t r = node->seg_len, C = node->codewords, S = node->segments;
    const uint64_t in_c = dense ? node->in.numel : node->in.c;
    const uint64_t taps = dense ? 1u : (uint64_t)node->kernel_h * node->kernel_w;
    const uint64_t out_px = dense ? 1u : (uint64_t)node->out.h * node->out.w;
    const uint64_t in_px = dense ? 1u : (uint64_t)node->in.h * node->in.w;
    const uint64_t build_x10 = in_px * S * ((r + 3u) / 4u * 4u) * C * EM_I8A_COST_BUILD_X10;
    const uint64_t read_x10 = out_px * taps * S * node->out.c * (dense ? EM_I8A_COST_GATHER_X10 : EM_I8A_COST_READ_X10);
    const uint64_t decoded_x10 = (out_px + 3u) / 4u * 4u * taps * in_c * node->out.c * 10u;
    if (!dense && (kernels == EM_KERNELS_AVX2 || kernels == EM_KERNELS_AVX512)) return 0;
    return build_x10 / 16u + read_x10 < decoded_x10 / 16u;
}

const em_kernel *em_kernel_choose(const em_model *model, const em_node *node, uint32_t kernels)
{
    const em_arch_config *reference = em_arch_config_for(EM_KERNELS_REFERENCE);
    const em_arch_config *set = em_arch_config_for(kernels);
    const em_kernel *k = NULL;
    const int int8 = (node->flags & EM_NODE_FLAG_INT8_TABLES) != 0;
    uint64_t macs;
    if (set == NULL || set == reference) /* NULL is defensive: the loader checked availability */
        return em_kernel_lookup(reference, node->op, EM_ALGO_REFERENCE, EM_ISA_REFERENCE, node);
    /* The fast kernels' epilogues fuse ReLU and ReLU6 only (micro_template.h, em_opt_bias_activate); the
     * portable pool, reshape, activation, ADD, MUL and CONCAT kernels apply em_activate() and take any. */
    if (node->activation > EM_ACT_RELU6 && node->op != EM_OP_MAX_POOL && node->op != EM_OP_AVG_POOL &&
        node->op != EM_OP_GLOBAL_AVG_POOL && node->op != EM_OP_RESHAPE && node->op != EM_OP_ACTIVATION &&
        node->op != EM_OP_ADD && node->op != EM_OP_MUL && node->op != EM_OP_CONCAT)
        return em_kernel_lookup(reference, node->op, EM_ALGO_REFERENCE, EM_ISA_REFERENCE, node);

    switch (node->op) {
    case EM_OP_LUT_CONV2D:
    case EM_OP_LUT_DENSE:
        if (node->flags & EM_NODE_FLAG_INT8_ACT) { /* int32 tables or the int8 GEMM (sdot where the CPU has it) */
            if (int8_act_prefers_tables(node, kernels))
                k = em_kernel_lookup(set, node->op, EM_ALGO_LUT_INT8_ACT_TABLES, EM_ISA_MICRO, node);
            if (k == NULL) k = em_kernel_lookup(set, node->op, EM_ALGO_LUT_INT8_ACT, EM_ISA_MICRO, node);
            break;
        }
        if (node->op == EM_OP_LUT_DENSE) {
            if (!int8 && lut_dense_prefers_decoded(model, node))
                k = em_kernel_lookup(set, node->op, EM_ALGO_LUT_DECODED, EM_ISA_MICRO, node);
            if (k == NULL)
                k = em_kernel_lookup(set, node->op, int8 ? EM_ALGO_LUT_INT8 : EM_ALGO_LUT_TABLES, EM_ISA_MICRO, node);
            break;
        }
        if (int8) { /* byte-shuffle lookups; the reference if too large */
            k = em_kernel_lookup(set, node->op, EM_ALGO_LUT_INT8, EM_ISA_MICRO, node);
            break;
        }
        if (lut_conv2d_prefers_decoded(model, node))
            k = em_kernel_lookup(set, node->op, EM_ALGO_LUT_DECODED, EM_ISA_MICRO, node);
        if (k == NULL) k = em_kernel_lookup(set, node->op, EM_ALGO_LUT_TABLES, EM_ISA_MICRO, node);
        break;
    case EM_OP_CONV2D:
        macs = (uint64_t)node->out.numel * node->kernel_h * node->kernel_w * node->in.c;
        if (set->blas && macs >= EM_BLAS_MIN_MACS) {
            k = em_kernel_lookup(set, node->op, EM_ALGO_1X1, EM_ISA_BLAS, node);
            if (k == NULL) k = em_kernel_lookup(set, node->op, EM_ALGO_IM2COL, EM_ISA_BLAS, node);
            break;
        }
        k = em_kernel_lookup(set, node->op, EM_ALGO_DIRECT, EM_ISA_MICRO, node);
        break;
    case EM_OP_DENSE:
        macs = (uint64_t)node->in.numel * node->out.c;
        k = em_kernel_lookup(set, node->op, EM_ALGO_GEMV,
                             set->blas && macs >= EM_BLAS_MIN_MACS ? EM_ISA_BLAS : EM_ISA_MICRO, node);
        break;
    case EM_OP_DEPTHWISE_CONV2D: /* multiplier 1 on the ISA's micro-kernel, else the portable loop */
        k = em_kernel_lookup(set, node->op, EM_ALGO_ROWS, EM_ISA_MICRO, node);
        if (k == NULL) k = em_kernel_lookup(set, node->op, EM_ALGO_DIRECT, EM_ISA_PORTABLE, node);
        break;
    case EM_OP_ADD: /* multi-input elementwise ops: one portable kernel for every set */
    case EM_OP_MUL:
    case EM_OP_CONCAT:
    case EM_OP_MAX_POOL: /* ops without a matrix product: one portable kernel for every set */
    case EM_OP_AVG_POOL:
    case EM_OP_GLOBAL_AVG_POOL:
        k = em_kernel_lookup(set, node->op, EM_ALGO_DIRECT, EM_ISA_PORTABLE, node);
        break;
    case EM_OP_RESHAPE:
    case EM_OP_ACTIVATION:
        k = em_kernel_lookup(set, node->op, EM_ALGO_COPY, EM_ISA_PORTABLE, node);
        break;
    default:
        break;
    }
    return k != NULL ? k : em_kernel_lookup(reference, node->op, EM_ALGO_REFERENCE, EM_ISA_REFERENCE, node);
}

/* ---- work estimate for splitting a run over threads ------------------------------------------------
 * Same unit as above (one multiply-add of the direct convolution). Fitted to the per-node profile of the
 * README pair at `light` (AVX-512, 1 thread): a pool's float per window cell costs about 20 units
 * (EM_COST_POOL_CELL: memory-bound compares); a direct convolution whose kernel row is short (KW·Cin < 16
 * floats, e.g. the r = 1 first layers on one input channel) runs its multiply-adds 16 / (KW·Cin) times slower
 * (the micro-kernel's k loop is too short to keep its accumulators busy); a copy or an elementwise value
 * costs about one unit. EM_SPLIT_MIN_COST (em_kernels.h), 1,048,576 units, is about 12 µs of one core's
 * work on the 2-core x86-64 host (the README pair at light: 8.5 M units in 0.10 ms on 1 thread, 83 000
 * units/µs on average, AVX-512). A split node's steps (most kernels have two) each cost a hand-off to the
 * pool's workers and back, measured there at about 2 µs (em_runtime.c EM_SPLIT_HANDOFF_COST), so halving a
 * node saves its work / 2 - 4 µs: nothing below about 650 000 units, and at 32768 units (the first value,
 * from an assumed 0.5 µs hand-off) the pair's single tasks ran slower on 2 threads than on 1 (words 0.078 vs
 * 0.040 ms, quiet). On slower cores (ARM boards) a unit takes longer and the hand-off is no slower, so the
 * bar only errs towards not splitting there. */
#ifndef EM_COST_POOL_CELL
#define EM_COST_POOL_CELL 20u
#endif

static uint64_t direct_conv_cost(const em_node *node, uint64_t macs)
{
    const uint64_t row = (uint64_t)node->kernel_w * node->in.c;
    return row < 16u ? macs * 16u / (row ? row : 1u) : macs;
}

uint64_t em_node_cost(const em_node *node)
{
    const uint64_t taps = (uint64_t)node->kernel_h * node->kernel_w;
    const uint64_t out_px = (uint64_t)node->out.h * node->out.w, in_px = (uint64_t)node->in.h * node->in.w;
    const uint64_t r = node->seg_len ? node->seg_len : 1u, C = node->codewords;
    const uint64_t S = (node->in.c + r - 1u) / r;
    switch (node->op) {
    case EM_OP_CONV2D:
        return direct_conv_cost(node, out_px * taps * node->in.c * node->out.c);
    case EM_OP_DEPTHWISE_CONV2D:
        return out_px * taps * node->out.c;
    case EM_OP_DENSE:
        return (uint64_t)node->in.numel * node->out.c;
    case EM_OP_LUT_CONV2D:
        if (node->kernel != NULL && node->kernel->algorithm == EM_ALGO_LUT_DECODED)
            return direct_conv_cost(node, out_px * taps * node->in.c * node->out.c);
        return (in_px * S * r * C * EM_LUT_COST_TABLE_X10 + out_px * taps * S * node->out.c * EM_LUT_COST_ADD_X10) / 10u;
    case EM_OP_LUT_DENSE: {
        const uint64_t s_dense = (node->in.numel + r - 1u) / r;
        return ((uint64_t)node->in.numel * C * EM_LUT_COST_TABLE_X10 + s_dense * node->out.c * EM_LUT_COST_ADD_X10) / 10u;
    }
    case EM_OP_MAX_POOL:
    case EM_OP_AVG_POOL:
        return (uint64_t)node->out.numel * taps * EM_COST_POOL_CELL;
    case EM_OP_GLOBAL_AVG_POOL:
        return (uint64_t)node->in.numel * EM_COST_POOL_CELL;
    default:
        return node->out.numel;
    }
}
