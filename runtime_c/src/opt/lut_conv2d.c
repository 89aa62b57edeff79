/* LUT_CONV2D (E-Conv) with planar tables: the same two steps as the reference (FORMAT.md "LUT ops"),
 * laid out so that both are dense vector work.
 *
 * Layout. The reference keeps table[pixel, s, c]; accumulating from it means one gather per output
 * channel and term, because the index differs per output channel. Here the table is transposed to
 * table[s, c, pixel] ("planar"): for one output channel co and one term (tap ky,kx and segment s) the
 * index c = index[ky, kx, s, co] is a scalar, and the terms of all output pixels of a row are a
 * contiguous run of table[s, c, :], shifted by the tap. So the accumulation vectorises over output
 * pixels with plain loads (em_micro.lut_accumulate_planar), on every ISA alike, no gathers.
 *
 * Geometry. The pixel axis of the table is the zero-padded input, so padding needs no branches (a
 * padded pixel's table entries are 0, i.e. "left out"), and it is split into stride phases: pixel
 * (y, x) of the padded input goes to phase (y mod sh, x mod sw) at (y / sh, x / sw). Output (oy, ox)
 * with tap (ky, kx) then reads phase (ky mod sh, kx mod sw) at (oy + ky / sh, ox + kx / sw): with the
 * output flattened as q = oy·wq + ox (wq = phase-plane width), every tap is a constant offset, so one
 * run of q covers all rows of a band at once. Columns ox ≥ out_w of that run are computed and dropped.
 *
 * Table build. Input rows are transposed into planar channels X[ci, pixel] (zero-padded), then per
 * segment s one matrix product: table[s] (C × pixels) = codebook[s] (C × r) · X[s·r .. s·r + r) (r ×
 * pixels), on the ISA's gemm.
 *
 * Banding. When the whole table exceeds EM_LUT_TABLE_BUDGET_BYTES it is built for a band of output
 * rows at a time (plus the kernel's halo rows, recomputed per band), so scratch, and em_context_size,
 * stay bounded. A single-band table may be shared by nodes reading the same value with the same
 * codebook, r, strides and pads (em_plan.c groups them; the first to run builds it).
 *
 * Scratch: [table | X | output tile]. Packed (model-owned, filled once at load): the layout below, then
 * offset[co][term]: the table offset of each output channel's term (segment s, tap, codeword c = index[tap,
 * s, co]): s·C·plane + c·plane + the tap's shift, in the accumulation loop's order. One uint32 per term
 * instead of a uint16 index and a per-tap base: the loop then does one load and one add per term and
 * 8 vectors, not five address operations (armperf: a fifth of the accumulation's instructions). */
#include <string.h>

#include "em_opt_kernels.h"

typedef struct lut_conv_layout {
    uint32_t taps;          /* KH·KW */
    uint32_t terms;         /* taps · S: table reads per output value */
    uint32_t phases;        /* sh · sw */
    uint32_t hq, wq;        /* phase-plane height and width of the whole padded input */
    uint32_t band_out_rows; /* output rows per band */
    uint32_t band_rows;     /* phase-plane rows a band's table holds */
    uint32_t halo;          /* phase-plane rows below a band's last output row that it reads */
    uint32_t chunk_rows;    /* output rows per accumulation pass */
    uint32_t chunk;         /* chunk_rows · wq: floats of a tile row */
    size_t plane;           /* floats of one table row (s, c), and of one planar input channel */
    size_t table_floats;    /* S · C · plane */
    size_t x_floats;        /* Cin · plane */
    size_t tile_floats;     /* Cout · chunk */
    size_t offsets_offset;  /* bytes from the layout to offset[][] */
} lut_conv_layout;

/* Layout for a node (pure function of its fields, computed at plan and pack time). Returns 0 when some
 * size does not fit the kernel's 32-bit offsets (then the kernel does not support the node). */
static int compute_layout(const em_node *node, lut_conv_layout *L)
{
    const uint64_t sh = node->stride_h, sw = node->stride_w;
    const uint64_t hp = (uint64_t)node->in.h + node->pad_top + node->pad_bottom;
    const uint64_t wp = (uint64_t)node->in.w + node->pad_left + node->pad_right;
    const uint64_t hq = (hp + sh - 1) / sh, wq = (wp + sw - 1) / sw;
    const uint64_t halo = (node->kernel_h - 1u) / sh;
    const uint64_t sc = (uint64_t)node->segments * node->codewords;
    const uint64_t row_floats = sc * sh * sw * wq; /* table floats per phase-plane row */
    uint64_t band_out, band_rows, plane, chunk_rows;

    memset(L, 0, sizeof *L);
    if (node->flags & (EM_NODE_FLAG_INT8_TABLES | EM_NODE_FLAG_INT8_ACT)) return 0; /* opt/lut_int8*.c */
    if (row_floats * hq * 4u <= EM_LUT_TABLE_BUDGET_BYTES) {
        band_out = node->out.h;
        band_rows = hq; /* the whole plane: a single band, shareable */
    } else {
        /* the most output rows whose table fits, but not so few that the recomputed halo rows cost
         * more than half the table; then equal bands, so the last one is not a sliver */
        const uint64_t fit = EM_LUT_TABLE_BUDGET_BYTES / (row_floats * 4u);
        const uint64_t min_band = 2u * halo < node->out.h ? 2u * halo : node->out.h;
        uint64_t bands;
        band_out = fit > halo ? fit - halo : 1u;
        if (band_out < min_band) band_out = min_band;
        if (band_out < 1u) band_out = 1u;
        if (band_out > node->out.h) band_out = node->out.h;
        bands = (node->out.h + band_out - 1u) / band_out;
        band_out = (node->out.h + bands - 1u) / bands;
        band_rows = band_out + halo;
        if (band_rows > hq) band_rows = hq;
    }
    plane = sh * sw * band_rows * wq;
    /* Whole output rows per accumulation pass, about EM_LUT_CHUNK_FLOATS of them: the micro-kernel
     * keeps up to 8 vectors of sums in registers across all terms, and the tile of Cout × chunk sums
     * stays in L1 until it is transposed out. (Blocking the pass for L1 reuse of the table does not
     * pay: the shifted windows of C codewords overflow L1 anyway, and the loads are split-line bound.) */
    chunk_rows = EM_LUT_CHUNK_FLOATS / wq;
    if (chunk_rows < 1u) chunk_rows = 1u;
    if (chunk_rows > band_out) chunk_rows = band_out;
    L->taps = node->kernel_h * node->kernel_w; /* <= 64 · 64 */
    L->phases = (uint32_t)(sh * sw);
    L->hq = (uint32_t)hq;
    L->wq = (uint32_t)wq;
    L->band_out_rows = (uint32_t)band_out;
    L->band_rows = (uint32_t)band_rows;
    L->halo = (uint32_t)halo;
    L->chunk_rows = (uint32_t)chunk_rows;
    L->chunk = (uint32_t)(chunk_rows * wq);
    L->plane = (size_t)plane;
    /* 32-bit offsets into the table, 16-bit indices */
    if (sc * plane >= 0xFFFFFFFFull || (uint64_t)node->in.c * plane >= 0xFFFFFFFFull ||
        (uint64_t)L->taps * node->segments >= 0xFFFFFFFFull || node->codewords > 65536u)
        return 0;
    L->terms = L->taps * node->segments;
    L->table_floats = (size_t)(sc * plane);
    L->x_floats = (size_t)((uint64_t)node->in.c * plane);
    L->tile_floats = (size_t)((uint64_t)node->out.c * L->chunk);
    L->offsets_offset = em_opt_align_floats(sizeof(lut_conv_layout) / sizeof(float)) * sizeof(float);
    return 1;
}

int em_lut_conv2d_planar_supports(const em_node *node)
{
    lut_conv_layout L;
    return compute_layout(node, &L);
}

em_status em_lut_conv2d_planar_plan(const em_model *model, em_node *node, em_error *err)
{
    lut_conv_layout L;
    size_t offset_bytes;
    (void)model;
    if (!compute_layout(node, &L)) /* em_kernel_choose checked supports(); defensive */
        return em_fail_node(err, EM_STATUS_LIMIT, node, "too large for kernel %s", node->kernel->name);
    if (!em_mul_size((size_t)L.terms * sizeof(uint32_t), node->out.c, &offset_bytes) ||
        !em_add_size(L.offsets_offset, offset_bytes, &node->packed_bytes))
        return em_fail_node(err, EM_STATUS_LIMIT, node, "unpacked index map does not fit in size_t");
    node->table_bytes = em_opt_align_floats(L.table_floats) * sizeof(float);
    node->scratch_bytes = node->table_bytes + (em_opt_align_floats(L.x_floats) + L.tile_floats) * sizeof(float);
    node->table_shareable = L.band_out_rows == node->out.h;
    return EM_STATUS_OK;
}

void em_lut_conv2d_planar_pack(const em_model *model, em_node *node)
{
    lut_conv_layout *L = (lut_conv_layout *)node->packed;
    uint32_t *offset;
    const uint32_t S = node->segments, cout = node->out.c;
    uint32_t ky, kx, s, co;
    (void)model;
    compute_layout(node, L);
    offset = (uint32_t *)(void *)((unsigned char *)node->packed + L->offsets_offset);
    /* offset[co][s][tap]: each output channel's terms contiguous, segment-major (s, tap), so a pass over one
     * segment reads one slab of the table. Every offset is below S·C·plane < 2^32 (compute_layout). */
    for (co = 0; co < cout; ++co) {
        uint32_t *row = offset + (size_t)co * L->terms;
        for (ky = 0; ky < node->kernel_h; ++ky) {
            for (kx = 0; kx < node->kernel_w; ++kx) {
                const uint32_t tap = ky * node->kernel_w + kx;
                const size_t phase = (size_t)(ky % node->stride_h) * node->stride_w + kx % node->stride_w;
                const size_t shift = phase * L->band_rows * L->wq + (size_t)(ky / node->stride_h) * L->wq +
                                     kx / node->stride_w;
                for (s = 0; s < S; ++s) {
                    const uint64_t c = em_idx_get(node->index_map->data, node->index_map->bits,
                                                  ((uint64_t)tap * S + s) * cout + co);
                    row[s * L->taps + tap] = (uint32_t)(((size_t)s * node->codewords + (size_t)c) * L->plane + shift);
                }
            }
        }
    }
}

/* Planar, zero-padded, phase-split copy of the input rows a band needs: X[ci, phase, row, col]. The
 * input pixels of one row that fall into one column phase are every sw-th pixel, and they are adjacent
 * in that phase's plane row: one strided (pixels × Cin) → (Cin × pixels) transpose per row and column
 * phase, on the ISA's block transpose (a scalar scatter of every value cost about a fifth of a
 * 16-channel layer's time). */
static void transpose_input(const em_node *node, const lut_conv_layout *L, const float *input, uint32_t first_row,
                            float *x)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t in_h = node->in.h, in_w = node->in.w, cin = node->in.c;
    const uint32_t sh = node->stride_h, sw = node->stride_w;
    uint32_t py, pr, px;
    memset(x, 0, L->x_floats * sizeof(float));
    for (py = 0; py < sh; ++py) {
        for (pr = 0; pr < L->band_rows; ++pr) {
            const uint64_t yp = (uint64_t)(first_row + pr) * sh + py; /* row of the padded input */
            size_t row_offset;
            const float *src;
            if (yp < node->pad_top || yp - node->pad_top >= in_h) continue; /* padding: stays 0 */
            src = input + (size_t)(yp - node->pad_top) * in_w * cin;
            row_offset = ((size_t)py * sw * L->band_rows + pr) * L->wq;
            for (px = 0; px < sw; ++px) {
                /* the first input column ix with (ix + pad_left) mod sw == px */
                const uint32_t first_ix = (px + sw - node->pad_left % sw) % sw;
                const uint32_t xp = first_ix + node->pad_left;
                if (first_ix >= in_w) continue;
                micro->transpose(src + (size_t)first_ix * cin, (size_t)sw * cin, (in_w - first_ix + sw - 1u) / sw,
                                 cin, x + row_offset + (size_t)px * L->band_rows * L->wq + xp / sw, L->plane);
            }
        }
    }
}

/* table[s] = codebook[s] · X[s·r .. s·r + r) over the first `columns` pixels of each plane (the rest of
 * a band's plane is never read: rows past the input's last phase-plane row). */
static void build_table(const em_node *node, const lut_conv_layout *L, const float *x, size_t columns, float *table)
{
    const em_micro *micro = node->kernel->micro;
    const float *codebook = em_tensor_f32(node->weight);
    const uint32_t r = node->seg_len, C = node->codewords, cin = node->in.c;
    uint32_t s;
    for (s = 0; s < node->segments; ++s) {
        const uint32_t first = s * r;
        const uint32_t len = cin - first < r ? cin - first : r; /* the last segment may be short */
        micro->gemm(C, columns, len, codebook + s * node->codebook_segment_stride, r, x + (size_t)first * L->plane, L->plane,
                    table + (size_t)s * C * L->plane, L->plane);
    }
}

/* Moves a tile of planar sums [co][q] (rows of wq pixels, bias and activation applied) into NHWC output
 * rows; the columns ox >= out_w of each tile row were computed only to keep runs contiguous. */
static void store_tile(const em_node *node, const lut_conv_layout *L, const float *tile, uint32_t rows,
                       uint32_t first_row, float *output, uint32_t co0, uint32_t co1)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t cout = node->out.c, out_w = node->out.w;
    uint32_t row;
    for (row = 0; row < rows; ++row)
        micro->transpose(tile + (size_t)co0 * L->chunk + (size_t)row * L->wq, L->chunk, co1 - co0, out_w,
                         output + (size_t)(first_row + row) * out_w * cout + co0, cout);
}

/* Output channels [co0, co1) of the band starting at output row first_row (`rows` rows), from its table:
 * each channel's sums in its own rows of the tile, so channel ranges run on different threads at once. */
static void accumulate_band(const em_node *node, const lut_conv_layout *L, const float *table, float *tile,
                            uint32_t first_row, uint32_t rows, float *output, uint32_t co0, uint32_t co1)
{
    const uint32_t *offset =
        (const uint32_t *)(const void *)((const unsigned char *)node->packed + L->offsets_offset);
    const em_micro *micro = node->kernel->micro;
    const float *bias = em_tensor_f32(node->bias);
    uint32_t chunk_row;
    for (chunk_row = 0; chunk_row < rows; chunk_row += L->chunk_rows) {
        const uint32_t chunk_rows = rows - chunk_row < L->chunk_rows ? rows - chunk_row : L->chunk_rows;
        const size_t q0 = (size_t)chunk_row * L->wq;
        const size_t len = (size_t)(chunk_rows - 1u) * L->wq + node->out.w;
        uint32_t co;
        for (co = co0; co < co1; ++co)
            micro->lut_accumulate_planar(table + q0, offset + (size_t)co * L->terms, L->terms, len,
                                         tile + (size_t)co * L->chunk, 0, bias != NULL ? bias + co : NULL,
                                         node->activation);
        store_tile(node, L, tile, chunk_rows, first_row + chunk_row, output, co0, co1);
    }
}

void em_lut_conv2d_planar_run(const em_node *node, const float *input, float *output, const em_kernel_env *env)
{
    const lut_conv_layout *L = (const lut_conv_layout *)node->packed;
    const int shared = env->shared_table != NULL;
    float *table = shared ? env->shared_table : env->scratch;
    float *x = shared ? env->scratch : env->scratch + node->table_bytes / sizeof(float);
    float *tile = x + em_opt_align_floats(L->x_floats);
    const uint32_t out_h = node->out.h, cout = node->out.c;
    uint32_t first_row;
    uint64_t t0 = 0, t1 = 0;

    for (first_row = 0; first_row < out_h; first_row += L->band_out_rows) {
        const uint32_t rows = out_h - first_row < L->band_out_rows ? out_h - first_row : L->band_out_rows;
        const int built = !shared || !*env->table_ready;
        if (env->profile) t0 = em_platform_now_ns();
        if (built) {
            /* with one phase, only the rows this band reads need a table (a shared table has them all) */
            uint32_t needed = L->band_rows;
            if (L->phases == 1u && !shared && rows + L->halo < needed) needed = rows + L->halo;
            if (L->phases == 1u && L->hq - first_row < needed) needed = L->hq - first_row;
            transpose_input(node, L, input, first_row, x);
            build_table(node, L, x, L->phases == 1u ? (size_t)needed * L->wq : L->plane, table);
            if (shared) *env->table_ready = 1;
        }
        if (env->profile) t1 = em_platform_now_ns();
        accumulate_band(node, L, table, tile, first_row, rows, output, 0, cout);
        if (env->profile) {
            const uint64_t t2 = em_platform_now_ns();
            if (built) env->profile->table_ns += t1 - t0;
            env->profile->accumulate_ns += t2 - t1;
        }
    }
}

/* ---- split over threads (em_kernels.h) -------------------------------------------------------------
 * Per band two steps: 2·band builds the table (none when a shared table is already built), 2·band + 1
 * accumulates, one piece per output channel (accumulate_band). Table pieces: with one phase (stride 1) a
 * piece is one segment × one plane row, whose input row it transposes itself (zeros for padding) and whose
 * columns it multiplies, so no step is needed between the copy and the product; with strides a piece is one
 * segment, its channels' whole planes. The product's every table entry is the gemm's sum over the segment, so
 * it does not depend on the column range of the call. */

/* Rows of the band's table the run needs, as em_lut_conv2d_planar_run computes them (phase-plane rows). */
static uint32_t band_table_rows(const em_node *node, const lut_conv_layout *L, int shared, uint32_t first_row)
{
    const uint32_t rows = node->out.h - first_row < L->band_out_rows ? node->out.h - first_row : L->band_out_rows;
    uint32_t needed = L->band_rows;
    if (L->phases == 1u && !shared && rows + L->halo < needed) needed = rows + L->halo;
    if (L->phases == 1u && L->hq - first_row < needed) needed = L->hq - first_row;
    return needed;
}

uint32_t em_lut_conv2d_planar_split(const em_node *node, const em_kernel_env *env, uint32_t step, uint32_t *units)
{
    const lut_conv_layout *L = (const lut_conv_layout *)node->packed;
    const int shared = env->shared_table != NULL;
    const uint32_t band = step / 2u, first_row = band * L->band_out_rows;
    if (first_row >= node->out.h) return 0;
    if (step % 2u == 0) {
        if (shared && *env->table_ready) *units = 0;
        else *units = L->phases == 1u ? node->segments * band_table_rows(node, L, shared, first_row) : node->segments;
        return EM_STEP_TABLE;
    }
    if (shared) *env->table_ready = 1; /* the table step finished: the table holds this run's values */
    *units = node->out.c;
    return EM_STEP_OUTPUT;
}

/* Zero-padded planar copy of channels [c0, c1) for the plane rows [pr0, pr1) of phase row py (all column
 * phases): what transpose_input writes there. */
static void transpose_rows(const em_node *node, const lut_conv_layout *L, const float *input, uint32_t first_row,
                           float *x, uint32_t c0, uint32_t c1, uint32_t py, uint32_t pr0, uint32_t pr1)
{
    const em_micro *micro = node->kernel->micro;
    const uint32_t in_h = node->in.h, in_w = node->in.w, cin = node->in.c;
    const uint32_t sh = node->stride_h, sw = node->stride_w;
    uint32_t pr, px, c;
    for (pr = pr0; pr < pr1; ++pr) {
        const uint64_t yp = (uint64_t)(first_row + pr) * sh + py; /* row of the padded input */
        const size_t row_offset = ((size_t)py * sw * L->band_rows + pr) * L->wq;
        for (c = c0; c < c1; ++c)
            for (px = 0; px < sw; ++px)
                memset(x + (size_t)c * L->plane + row_offset + (size_t)px * L->band_rows * L->wq, 0,
                       L->wq * sizeof(float));
        if (yp < node->pad_top || yp - node->pad_top >= in_h) continue; /* padding: stays 0 */
        for (px = 0; px < sw; ++px) {
            const uint32_t first_ix = (px + sw - node->pad_left % sw) % sw;
            const uint32_t xp = first_ix + node->pad_left;
            const float *src = input + (size_t)(yp - node->pad_top) * in_w * cin;
            if (first_ix >= in_w) continue;
            micro->transpose(src + (size_t)first_ix * cin + c0, (size_t)sw * cin, (in_w - first_ix + sw - 1u) / sw,
                             c1 - c0, x + (size_t)c0 * L->plane + row_offset + (size_t)px * L->band_rows * L->wq + xp / sw,
                             L->plane);
        }
    }
}

/* table[s] = codebook[s] · X[s·r .. s·r + r) over plane columns [col0, col1). */
static void build_table_columns(const em_node *node, const lut_conv_layout *L, const float *x, uint32_t s,
                                size_t col0, size_t col1, float *table)
{
    const uint32_t r = node->seg_len, C = node->codewords, cin = node->in.c;
    const uint32_t first = s * r;
    const uint32_t len = cin - first < r ? cin - first : r;
    node->kernel->micro->gemm(C, col1 - col0, len, em_tensor_f32(node->weight) + s * node->codebook_segment_stride, r,
                              x + (size_t)first * L->plane + col0, L->plane, table + (size_t)s * C * L->plane + col0,
                              L->plane);
}

void em_lut_conv2d_planar_run_part(const em_node *node, const float *input, float *output, const em_kernel_env *env,
                                   uint32_t step, uint32_t begin, uint32_t end)
{
    const lut_conv_layout *L = (const lut_conv_layout *)node->packed;
    const int shared = env->shared_table != NULL;
    float *table = shared ? env->shared_table : env->scratch;
    float *x = shared ? env->scratch : env->scratch + node->table_bytes / sizeof(float);
    float *tile = x + em_opt_align_floats(L->x_floats);
    const uint32_t first_row = step / 2u * L->band_out_rows, r = node->seg_len, cin = node->in.c;
    if (step % 2u == 1) {
        const uint32_t rows =
            node->out.h - first_row < L->band_out_rows ? node->out.h - first_row : L->band_out_rows;
        accumulate_band(node, L, table, tile, first_row, rows, output, begin, end);
        return;
    }
    if (L->phases == 1u) { /* pieces: segment u / rows, plane row u % rows; runs of one segment together */
        const uint32_t rows = band_table_rows(node, L, shared, first_row);
        uint32_t u = begin;
        while (u < end) {
            const uint32_t s = u / rows, pr0 = u % rows;
            const uint32_t pr1 = end - u < rows - pr0 ? pr0 + (end - u) : rows;
            const uint32_t c1 = (s + 1u) * r < cin ? (s + 1u) * r : cin;
            transpose_rows(node, L, input, first_row, x, s * r, c1, 0, pr0, pr1);
            build_table_columns(node, L, x, s, (size_t)pr0 * L->wq, (size_t)pr1 * L->wq, table);
            u += pr1 - pr0;
        }
        return;
    }
    {
        uint32_t s, py;
        for (s = begin; s < end; ++s) {
            const uint32_t c1 = (s + 1u) * r < cin ? (s + 1u) * r : cin;
            for (py = 0; py < node->stride_h; ++py) transpose_rows(node, L, input, first_row, x, s * r, c1, py, 0, L->band_rows);
            build_table_columns(node, L, x, s, 0, L->plane, table);
        }
    }
}
