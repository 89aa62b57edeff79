/* The SIMD micro-kernels, written once over a small vector abstraction and instantiated per ISA by
 * src/x86/micro_*.c and src/arm/micro_neon.c (each defines the macros below, then includes this file).
 * No header guard: included once per ISA translation unit.
 *
 * Required from the includer:
 *   EMV_W                  lanes per vector
 *   emv                    the vector type
 *   EMV_FN(name)           name##_<isa>: keeps the static functions of each ISA apart in debuggers
 *   EMV_GEMM_MR            rows of the gemm register tile (the tile is EMV_GEMM_MR × 2·EMV_W)
 *   emv_zero() emv_set1(x) emv_loadu(p) emv_storeu(p, v) emv_add(a, b)
 *   emv_relu(v) emv_relu6(v)  em_activate's ReLU / ReLU6 lane by lane, bit for bit: NaN stays NaN (any
 *                          quiet NaN), -0 and everything <= 0 give +0 (FORMAT.md "Non-finite values")
 *   emv_fma(a, b, c)       a·b + c (fused where the ISA has it)
 *   emv_load_part(p, n)    the first n < EMV_W floats at p, other lanes 0; reads only those n
 *   emv_store_part(p, v, n) writes only the first n < EMV_W lanes
 *   emv_hsum(v)            sum of the lanes
 *   emv_gather16(t, ix)    lanes t[ix[0]], ..., t[ix[EMV_W-1]] for uint16 indices ix
 *   emv_reduce_rows(v)     for an array v[EMV_W] of vectors: the vector whose lane i is the sum of v[i]'s
 *                          lanes (EMV_W horizontal sums at the cost of about one)
 *   EMV_TB, emv_transpose_block(src, ss, dst, ds)   an EMV_TB × EMV_TB block transpose
 * Optional: EMV_CUSTOM_LUT_GATHER (the includer supplies EMV_FN(lut_accumulate_gather)).
 *           EMV_CUSTOM_CONV_GEMM (the includer declares EMV_FN(conv_gemm) before including this file and
 *                          defines it after; it may hand edge blocks to EMV_FN(gemm_columns)).
 *           EMV_FMA_LANE(acc, b, a, lane)  acc + b · a[lane] (a multiply-add by vector element, EMV_W = 4):
 *                          the gemm then reads A four elements per load instead of one broadcast each.
 *
 * Nothing here reads or writes outside the ranges the em_micro contract names: tails use partial loads
 * and stores, so the kernels are clean under AddressSanitizer. */

#if defined(__GNUC__) || defined(__clang__)
#define EMV_INLINE static inline __attribute__((always_inline))
#else
#define EMV_INLINE static inline
#endif

/* ---- gemm: C[m×n] = A[m×k] · B[k×n], and the convolution form ----------------------------------
 * Register tile of mr rows × 2 vectors; A is broadcast one element at a time, B rows are loaded as
 * vectors, so neither operand needs packing (the LUT tables' A is a codebook segment, B the planar
 * input; a convolution's A is the NHWC input itself, B the [KH·KW·Cin, Cout] weights). K runs over
 * `kblocks` blocks of `kin`, block kb of A starting a_block floats further (kernel rows of a
 * convolution; 1 block for a plain product). The epilogue adds the bias and applies the activation
 * while the tile is in registers. `cols` < 2·EMV_W selects the edge variant. */
EMV_INLINE emv EMV_FN(epilogue)(emv v, const float *bias, size_t lanes, uint32_t activation)
{
    if (bias != NULL) v = emv_add(v, lanes == EMV_W ? emv_loadu(bias) : emv_load_part(bias, lanes));
    if (activation == EM_ACT_RELU) v = emv_relu(v);
    else if (activation == EM_ACT_RELU6) v = emv_relu6(v);
    return v;
}

EMV_INLINE void EMV_FN(gemm_tile)(const size_t mr, const size_t cols, const int two, size_t kblocks, size_t kin,
                                  const float *a, size_t lda, size_t a_block, const float *b, size_t ldb, float *c,
                                  size_t ldc, const float *bias, uint32_t activation)
{
    emv acc0[EMV_GEMM_MR], acc1[EMV_GEMM_MR];
    const size_t n0 = cols >= EMV_W ? EMV_W : cols; /* lanes of the first vector */
    const size_t n1 = cols - n0;                     /* lanes of the second, 0..EMV_W */
    size_t i, p, kb;
    for (i = 0; i < EMV_GEMM_MR; ++i) {
        acc0[i] = emv_zero();
        acc1[i] = emv_zero();
    }
    for (kb = 0; kb < kblocks; ++kb) {
        const float *ablock = a + kb * a_block;
        const float *bblock = b + kb * kin * ldb;
        p = 0;
#if defined(EMV_FMA_LANE)
        /* four k at a time: a vector of each A row's next four elements and one multiply-add by lane per
         * element (aarch64 FMLA by element), so A costs a quarter of the loads of a broadcast per element */
        for (; p + 4 <= kin; p += 4) {
            const float *brow = bblock + p * ldb;
            emv bv0[4], bv1[4];
            size_t l;
            for (l = 0; l < 4; ++l) {
                bv0[l] = n0 == EMV_W ? emv_loadu(brow + l * ldb) : emv_load_part(brow + l * ldb, n0);
                bv1[l] = !two ? emv_zero()
                              : (n1 == EMV_W ? emv_loadu(brow + l * ldb + EMV_W)
                                             : (n1 ? emv_load_part(brow + l * ldb + EMV_W, n1) : emv_zero()));
            }
            for (i = 0; i < EMV_GEMM_MR; ++i) {
                if (i < mr) {
                    const emv av = emv_loadu(ablock + i * lda + p);
                    acc0[i] = EMV_FMA_LANE(acc0[i], bv0[0], av, 0);
                    acc0[i] = EMV_FMA_LANE(acc0[i], bv0[1], av, 1);
                    acc0[i] = EMV_FMA_LANE(acc0[i], bv0[2], av, 2);
                    acc0[i] = EMV_FMA_LANE(acc0[i], bv0[3], av, 3);
                    if (two) {
                        acc1[i] = EMV_FMA_LANE(acc1[i], bv1[0], av, 0);
                        acc1[i] = EMV_FMA_LANE(acc1[i], bv1[1], av, 1);
                        acc1[i] = EMV_FMA_LANE(acc1[i], bv1[2], av, 2);
                        acc1[i] = EMV_FMA_LANE(acc1[i], bv1[3], av, 3);
                    }
                }
            }
        }
#endif
        for (; p < kin; ++p) {
            const float *brow = bblock + p * ldb;
            const emv b0 = n0 == EMV_W ? emv_loadu(brow) : emv_load_part(brow, n0);
            const emv b1 = !two ? emv_zero()
                                : (n1 == EMV_W ? emv_loadu(brow + EMV_W)
                                               : (n1 ? emv_load_part(brow + EMV_W, n1) : emv_zero()));
            for (i = 0; i < EMV_GEMM_MR; ++i) {
                if (i < mr) {
                    const emv ai = emv_set1(ablock[i * lda + p]);
                    acc0[i] = emv_fma(ai, b0, acc0[i]);
                    if (two) acc1[i] = emv_fma(ai, b1, acc1[i]); /* one-vector tiles skip the empty half */
                }
            }
        }
    }
    for (i = 0; i < EMV_GEMM_MR; ++i) {
        if (i < mr) {
            float *crow = c + i * ldc;
            emv v0 = acc0[i], v1 = acc1[i];
            if (bias != NULL || activation != EM_ACT_NONE) {
                v0 = EMV_FN(epilogue)(v0, bias, n0, activation);
                if (n1) v1 = EMV_FN(epilogue)(v1, bias != NULL ? bias + EMV_W : NULL, n1, activation);
            }
            if (n0 == EMV_W) emv_storeu(crow, v0); else emv_store_part(crow, v0, n0);
            if (n1 == EMV_W) emv_storeu(crow + EMV_W, v1); else if (n1) emv_store_part(crow + EMV_W, v1, n1);
        }
    }
}

/* One column block (full width or the edge), all rows: MR-row tiles, then the leftover rows with a
 * tile of that height (the switch gives each height its own unrolled copy). `two`: the block is wider
 * than one vector (a constant in each copy, so one-vector blocks, e.g. 16 output channels under
 * AVX-512, do no work on the empty second vector). */
EMV_INLINE void EMV_FN(gemm_columns_n)(const int two, size_t m, size_t cols, size_t kblocks, size_t kin,
                                       const float *a, size_t lda, size_t a_block, const float *b, size_t ldb,
                                       float *c, size_t ldc, const float *bias, uint32_t activation)
{
    size_t i = 0;
#define EMV_TILE(rows, width)                                                                                    \
    EMV_FN(gemm_tile)(rows, width, two, kblocks, kin, a + i * lda, lda, a_block, b, ldb, c + i * ldc, ldc, bias, \
                      activation)
    if (cols == 2 * EMV_W) {
        for (; i + EMV_GEMM_MR <= m; i += EMV_GEMM_MR) EMV_TILE(EMV_GEMM_MR, 2 * EMV_W);
    } else if (cols == EMV_W) {
        /* one full vector (e.g. 16 output channels on AVX-512): with the width a constant the second
         * vector's accumulators are dead code, not FMAs on zeros at half the tile's throughput */
        for (; i + EMV_GEMM_MR <= m; i += EMV_GEMM_MR) EMV_TILE(EMV_GEMM_MR, EMV_W);
    } else {
        for (; i + EMV_GEMM_MR <= m; i += EMV_GEMM_MR) EMV_TILE(EMV_GEMM_MR, cols);
    }
    switch (m - i) {
    case 0: break;
    case 1: EMV_TILE(1, cols); break;
    case 2: EMV_TILE(2, cols); break;
    case 3: EMV_TILE(3, cols); break;
    case 4: EMV_TILE(4, cols); break;
    case 5: EMV_TILE(5, cols); break;
    case 6: EMV_TILE(6, cols); break;
    default: EMV_TILE(7, cols); break;
    }
#undef EMV_TILE
}

static void EMV_FN(gemm_columns)(size_t m, size_t cols, size_t kblocks, size_t kin, const float *a, size_t lda,
                                 size_t a_block, const float *b, size_t ldb, float *c, size_t ldc, const float *bias,
                                 uint32_t activation)
{
    if (cols > EMV_W)
        EMV_FN(gemm_columns_n)(1, m, cols, kblocks, kin, a, lda, a_block, b, ldb, c, ldc, bias, activation);
    else
        EMV_FN(gemm_columns_n)(0, m, cols, kblocks, kin, a, lda, a_block, b, ldb, c, ldc, bias, activation);
}

#if !defined(EMV_CUSTOM_CONV_GEMM)
static void EMV_FN(conv_gemm)(size_t m, size_t n, size_t kblocks, size_t kin, const float *a, size_t lda,
                              size_t a_block, const float *b, size_t ldb, float *c, size_t ldc, const float *bias,
                              uint32_t activation)
{
    size_t j;
    for (j = 0; j < n; j += 2 * EMV_W) {
        const size_t cols = n - j < 2 * EMV_W ? n - j : 2 * EMV_W;
        EMV_FN(gemm_columns)(m, cols, kblocks, kin, a, lda, a_block, b + j, ldb, c + j, ldc,
                             bias != NULL ? bias + j : NULL, activation);
    }
}
#endif

static void EMV_FN(gemm)(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                         float *c, size_t ldc)
{
    EMV_FN(conv_gemm)(m, n, 1, k, a, lda, 0, b, ldb, c, ldc, NULL, EM_ACT_NONE);
}

/* ---- gemv_t: y[j] = Σ_i x[i] · B[i, j] ------------------------------------------------------------
 * Wide outputs: 4 vectors of columns at once. Narrow leftovers (a 10-class head is one partial vector)
 * would be one long dependent chain of FMAs, so there the rows are split over 4 accumulators. */
static void EMV_FN(gemv_t)(size_t k, size_t n, const float *x, const float *b, size_t ldb, float *y)
{
    size_t i, j = 0;
    for (; j + 4 * EMV_W <= n; j += 4 * EMV_W) {
        emv a0 = emv_zero(), a1 = emv_zero(), a2 = emv_zero(), a3 = emv_zero();
        for (i = 0; i < k; ++i) {
            const float *row = b + i * ldb + j;
            const emv xi = emv_set1(x[i]);
            a0 = emv_fma(xi, emv_loadu(row), a0);
            a1 = emv_fma(xi, emv_loadu(row + EMV_W), a1);
            a2 = emv_fma(xi, emv_loadu(row + 2 * EMV_W), a2);
            a3 = emv_fma(xi, emv_loadu(row + 3 * EMV_W), a3);
        }
        emv_storeu(y + j, a0);
        emv_storeu(y + j + EMV_W, a1);
        emv_storeu(y + j + 2 * EMV_W, a2);
        emv_storeu(y + j + 3 * EMV_W, a3);
    }
    for (; j < n; j += EMV_W) {
        const size_t cols = n - j < EMV_W ? n - j : EMV_W;
        emv a0 = emv_zero(), a1 = emv_zero(), a2 = emv_zero(), a3 = emv_zero();
        const float *col = b + j;
        if (cols == EMV_W) {
            for (i = 0; i + 4 <= k; i += 4) {
                a0 = emv_fma(emv_set1(x[i]), emv_loadu(col + i * ldb), a0);
                a1 = emv_fma(emv_set1(x[i + 1]), emv_loadu(col + (i + 1) * ldb), a1);
                a2 = emv_fma(emv_set1(x[i + 2]), emv_loadu(col + (i + 2) * ldb), a2);
                a3 = emv_fma(emv_set1(x[i + 3]), emv_loadu(col + (i + 3) * ldb), a3);
            }
            for (; i < k; ++i) a0 = emv_fma(emv_set1(x[i]), emv_loadu(col + i * ldb), a0);
            emv_storeu(y + j, emv_add(emv_add(a0, a1), emv_add(a2, a3)));
        } else {
            for (i = 0; i + 4 <= k; i += 4) {
                a0 = emv_fma(emv_set1(x[i]), emv_load_part(col + i * ldb, cols), a0);
                a1 = emv_fma(emv_set1(x[i + 1]), emv_load_part(col + (i + 1) * ldb, cols), a1);
                a2 = emv_fma(emv_set1(x[i + 2]), emv_load_part(col + (i + 2) * ldb, cols), a2);
                a3 = emv_fma(emv_set1(x[i + 3]), emv_load_part(col + (i + 3) * ldb, cols), a3);
            }
            for (; i < k; ++i) a0 = emv_fma(emv_set1(x[i]), emv_load_part(col + i * ldb, cols), a0);
            emv_store_part(y + j, emv_add(emv_add(a0, a1), emv_add(a2, a3)), cols);
        }
    }
}

/* ---- gemv_n: y[i] = Σ_j A[i, j] · x[j] ------------------------------------------------------------
 * Four rows at a time share each load of x; one horizontal sum per row at the end. */
EMV_INLINE void EMV_FN(gemv_n_rows)(const size_t rows, size_t k, const float *a, size_t lda, const float *x,
                                    float *y)
{
    emv acc[4];
    size_t r, j = 0;
    for (r = 0; r < 4; ++r) acc[r] = emv_zero();
    for (; j + EMV_W <= k; j += EMV_W) {
        const emv xv = emv_loadu(x + j);
        for (r = 0; r < 4; ++r)
            if (r < rows) acc[r] = emv_fma(emv_loadu(a + r * lda + j), xv, acc[r]);
    }
    if (j < k) {
        const emv xv = emv_load_part(x + j, k - j);
        for (r = 0; r < 4; ++r)
            if (r < rows) acc[r] = emv_fma(emv_load_part(a + r * lda + j, k - j), xv, acc[r]);
    }
    for (r = 0; r < 4; ++r)
        if (r < rows) y[r] = emv_hsum(acc[r]);
}

/* EMV_W rows at once, reduced together: the LUT_DENSE table's rows are short (r floats), so separate
 * horizontal sums would cost more than the multiply-adds. */
static void EMV_FN(gemv_n_block)(size_t k, const float *a, size_t lda, const float *x, float *y)
{
    emv acc[EMV_W];
    size_t r, j = 0;
    for (r = 0; r < EMV_W; ++r) acc[r] = emv_zero();
    for (; j + EMV_W <= k; j += EMV_W) {
        const emv xv = emv_loadu(x + j);
        for (r = 0; r < EMV_W; ++r) acc[r] = emv_fma(emv_loadu(a + r * lda + j), xv, acc[r]);
    }
    if (j < k) {
        const emv xv = emv_load_part(x + j, k - j);
        for (r = 0; r < EMV_W; ++r) acc[r] = emv_fma(emv_load_part(a + r * lda + j, k - j), xv, acc[r]);
    }
    emv_storeu(y, emv_reduce_rows(acc));
}

static void EMV_FN(gemv_n)(size_t m, size_t k, const float *a, size_t lda, const float *x, float *y)
{
    size_t i = 0;
    for (; i + EMV_W <= m; i += EMV_W) EMV_FN(gemv_n_block)(k, a + i * lda, lda, x, y + i);
    for (; i + 4 <= m; i += 4) EMV_FN(gemv_n_rows)(4, k, a + i * lda, lda, x, y + i);
    switch (m - i) {
    case 1: EMV_FN(gemv_n_rows)(1, k, a + i * lda, lda, x, y + i); break;
    case 2: EMV_FN(gemv_n_rows)(2, k, a + i * lda, lda, x, y + i); break;
    case 3: EMV_FN(gemv_n_rows)(3, k, a + i * lda, lda, x, y + i); break;
    default: break;
    }
}

/* ---- LUT_CONV2D accumulation over a planar table -------------------------------------------------
 * out[q] (+)= Σ_t table[offset[t] + q]. A group of up to 8 vectors of q stays in
 * registers across all terms; `last` lanes (1..EMV_W) in the group's last vector. Short groups
 * (≤ 2 vectors) would be a single dependent chain of adds per vector, so they alternate two
 * accumulator sets. */
EMV_INLINE void EMV_FN(planar_group)(const size_t nv, const size_t last, const float *table, const uint32_t *offset,
                                     size_t count, float *out, int accumulate, const float *bias,
                                     uint32_t activation)
{
    emv acc[8], alt[2];
    size_t v, t = 0;
    for (v = 0; v < 8; ++v) {
        acc[v] = emv_zero();
        if (accumulate && v < nv)
            acc[v] = v + 1 == nv && last != EMV_W ? emv_load_part(out + v * EMV_W, last) : emv_loadu(out + v * EMV_W);
    }
    alt[0] = alt[1] = emv_zero();
    if (nv <= 2) {
        for (; t + 2 <= count; t += 2) {
            const float *s0 = table + offset[t];
            const float *s1 = table + offset[t + 1];
            for (v = 0; v < 2; ++v) {
                if (v < nv) {
                    const int part = v + 1 == nv && last != EMV_W;
                    acc[v] = emv_add(acc[v], part ? emv_load_part(s0 + v * EMV_W, last) : emv_loadu(s0 + v * EMV_W));
                    alt[v] = emv_add(alt[v], part ? emv_load_part(s1 + v * EMV_W, last) : emv_loadu(s1 + v * EMV_W));
                }
            }
        }
    }
    for (; t < count; ++t) {
        const float *src = table + offset[t];
        for (v = 0; v < 8; ++v) {
            if (v < nv) {
                const int part = v + 1 == nv && last != EMV_W;
                acc[v] = emv_add(acc[v], part ? emv_load_part(src + v * EMV_W, last) : emv_loadu(src + v * EMV_W));
            }
        }
    }
    for (v = 0; v < 8; ++v) {
        if (v < nv) {
            emv sum = v < 2 ? emv_add(acc[v], alt[v]) : acc[v];
            if (bias != NULL) sum = emv_add(sum, emv_set1(*bias));
            if (activation == EM_ACT_RELU) sum = emv_relu(sum);
            else if (activation == EM_ACT_RELU6) sum = emv_relu6(sum);
            if (v + 1 == nv && last != EMV_W)
                emv_store_part(out + v * EMV_W, sum, last);
            else
                emv_storeu(out + v * EMV_W, sum);
        }
    }
}

static void EMV_FN(lut_accumulate_planar)(const float *table, const uint32_t *offset, size_t count, size_t span,
                                          float *out, int accumulate, const float *bias, uint32_t activation)
{
    size_t q = 0;
    for (; q + 8 * EMV_W <= span; q += 8 * EMV_W)
        EMV_FN(planar_group)(8, EMV_W, table + q, offset, count, out + q, accumulate, bias, activation);
    if (q < span) {
        const size_t rest = span - q;
        const size_t nv = (rest + EMV_W - 1) / EMV_W;
        const size_t last = rest - (nv - 1) * EMV_W;
        const float *t = table + q;
        float *o = out + q;
#define EMV_GROUP(n, l) EMV_FN(planar_group)(n, l, t, offset, count, o, accumulate, bias, activation)
        if (last == EMV_W) {
            switch (nv) {
            case 1: EMV_GROUP(1, EMV_W); break;
            case 2: EMV_GROUP(2, EMV_W); break;
            case 3: EMV_GROUP(3, EMV_W); break;
            case 4: EMV_GROUP(4, EMV_W); break;
            case 5: EMV_GROUP(5, EMV_W); break;
            case 6: EMV_GROUP(6, EMV_W); break;
            default: EMV_GROUP(7, EMV_W); break;
            }
        } else {
            switch (nv) {
            case 1: EMV_GROUP(1, last); break;
            case 2: EMV_GROUP(2, last); break;
            case 3: EMV_GROUP(3, last); break;
            case 4: EMV_GROUP(4, last); break;
            case 5: EMV_GROUP(5, last); break;
            case 6: EMV_GROUP(6, last); break;
            case 7: EMV_GROUP(7, last); break;
            default: EMV_GROUP(8, last); break;
            }
        }
#undef EMV_GROUP
    }
}

/* ---- LUT_DENSE accumulation: y[o] = Σ_s table[s·C + idx[s·n + o]] ----------------------------------
 * Vectorised over outputs with one gather per segment and vector; four vectors in flight hide the
 * gathers' latency. The tail's indices are copied into a zero-padded block (index 0 is always a valid
 * entry, so the unused lanes gather harmlessly and are not stored). */
#if !defined(EMV_CUSTOM_LUT_GATHER)
static void EMV_FN(lut_accumulate_gather)(const float *table, uint32_t codewords, size_t segments,
                                          const uint16_t *idx, size_t n, float *y)
{
    size_t o = 0, s;
    for (; o + 4 * EMV_W <= n; o += 4 * EMV_W) {
        emv a0 = emv_zero(), a1 = emv_zero(), a2 = emv_zero(), a3 = emv_zero();
        for (s = 0; s < segments; ++s) {
            const float *row = table + s * codewords;
            const uint16_t *ix = idx + s * n + o;
            a0 = emv_add(a0, emv_gather16(row, ix));
            a1 = emv_add(a1, emv_gather16(row, ix + EMV_W));
            a2 = emv_add(a2, emv_gather16(row, ix + 2 * EMV_W));
            a3 = emv_add(a3, emv_gather16(row, ix + 3 * EMV_W));
        }
        emv_storeu(y + o, a0);
        emv_storeu(y + o + EMV_W, a1);
        emv_storeu(y + o + 2 * EMV_W, a2);
        emv_storeu(y + o + 3 * EMV_W, a3);
    }
    for (; o < n; o += EMV_W) {
        const size_t lanes = n - o < EMV_W ? n - o : EMV_W;
        emv a0 = emv_zero(), a1 = emv_zero();
        uint16_t tail[EMV_W];
        size_t l;
        for (s = 0; s < segments; ++s) {
            const float *row = table + s * codewords;
            const uint16_t *ix = idx + s * n + o;
            emv g;
            if (lanes == EMV_W) {
                g = emv_gather16(row, ix);
            } else {
                for (l = 0; l < EMV_W; ++l) tail[l] = l < lanes ? ix[l] : 0;
                g = emv_gather16(row, tail);
            }
            if (s & 1) a1 = emv_add(a1, g); else a0 = emv_add(a0, g);
        }
        if (lanes == EMV_W) emv_storeu(y + o, emv_add(a0, a1)); else emv_store_part(y + o, emv_add(a0, a1), lanes);
    }
}
#endif

/* ---- transpose: dst[c·ds + r] = src[r·ss + c] --------------------------------------------------- */
static void EMV_FN(transpose)(const float *src, size_t src_stride, size_t rows, size_t cols, float *dst,
                              size_t dst_stride)
{
    size_t r0, c0, r, c;
    for (r0 = 0; r0 + EMV_TB <= rows; r0 += EMV_TB) {
        for (c0 = 0; c0 + EMV_TB <= cols; c0 += EMV_TB)
            emv_transpose_block(src + r0 * src_stride + c0, src_stride, dst + c0 * dst_stride + r0, dst_stride);
        for (c = c0; c < cols; ++c)
            for (r = r0; r < r0 + EMV_TB; ++r) dst[c * dst_stride + r] = src[r * src_stride + c];
    }
    for (r = r0; r < rows; ++r)
        for (c = 0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
}

/* ---- depthwise_rows: output rows of a depthwise convolution (multiplier 1) -----------------------
 * Vectorised over channels (contiguous in NHWC): one vector of channels at a time, every output pixel
 * of the rows against it, so the kh·kw weight vectors of the block stay in L1 (in registers for 3×3).
 * Interior pixels (every tap column inside the row) skip the bounds checks; taps in the padding are
 * skipped, not multiplied by zero, so the sum runs in the reference's order. */
EMV_INLINE emv EMV_FN(depthwise_pixel)(const float *const *rows, size_t kh, size_t kw, size_t x0, size_t pad_left,
                                       size_t in_w, size_t channels, size_t c, size_t lanes, const float *w,
                                       int interior)
{
    emv acc = emv_zero();
    size_t ky, kx;
    for (ky = 0; ky < kh; ++ky) {
        const float *row = rows[ky];
        const float *wrow = w + ky * kw * channels + c;
        if (row == NULL) continue;
        for (kx = 0; kx < kw; ++kx) {
            const float *x;
            if (!interior && (x0 + kx < pad_left || x0 + kx - pad_left >= in_w)) continue;
            x = row + (x0 + kx - pad_left) * channels + c;
            if (lanes == EMV_W) acc = emv_fma(emv_loadu(x), emv_loadu(wrow + kx * channels), acc);
            else acc = emv_fma(emv_load_part(x, lanes), emv_load_part(wrow + kx * channels, lanes), acc);
        }
    }
    return acc;
}

/* ---- the 3×3 case (MobileNets), one block of `lanes` channels at c -----------------------------------
 * The nine weight vectors wv[3·ky + kx] are loaded once per block and stay in registers for all the
 * rows of a band (the whole map on MobileNetV2's small maps). Interior pixels with all three kernel rows
 * inside run unrolled without checks; every other pixel (left / right edge columns, a kernel row in the
 * top or bottom padding, or both, as on most of MobileNetV2's 8×8, 4×4 and 2×2 maps) runs only its taps
 * inside the input, picked by a 9-bit mask, with the same registers. Both sum in the reference's order
 * (ky outer, kx inner, from zero; taps in the padding skipped, not multiplied by zero), as the em_micro
 * contract asks: edge and interior pixels give the bits of the reference's sum (test_fast_kernels checks
 * them bit for bit).
 * Instantiated with lanes == EMV_W (full loads once inlined) and for the channel tail (partial loads). */
EMV_INLINE emv EMV_FN(dw3_load)(const float *p, size_t lanes)
{
    return lanes == EMV_W ? emv_loadu(p) : emv_load_part(p, lanes);
}

/* acc + the vector `at` bytes into row, times wt, where the tap is inside the input; acc unchanged where
 * it lies in the padding (row may then be NULL or row + at outside the row, so that address is not
 * formed). The offset is in bytes so that it is the load's register offset as it stands (in floats,
 * every tap also shifted it left by 2: a quarter of an edge tap's instructions on aarch64). */
EMV_INLINE emv EMV_FN(dw3_tap)(emv acc, unsigned inside, const float *row, ptrdiff_t at, size_t lanes, emv wt)
{
    return inside ? emv_fma(EMV_FN(dw3_load)((const float *)(const void *)((const char *)row + at), lanes), wt, acc)
                  : acc;
}

/* The column bits of the tap mask of an output pixel whose tap kx = 0 is at padded column x0: bit
 * 3·ky + kx for every ky where pad_left <= x0 + kx < pad_left + in_w (column kx inside the row), i.e. kx
 * in [lo, hi). lo and hi are clamped to 3 so that no shift reaches the width of unsigned. A pixel's tap
 * mask is this AND its row's row_taps (the three bits of each kernel row inside the input). */
EMV_INLINE unsigned EMV_FN(dw3_cols)(size_t x0, size_t pad_left, size_t in_w)
{
    const size_t lo = x0 < pad_left ? pad_left - x0 : 0, hi = pad_left + in_w > x0 ? pad_left + in_w - x0 : 0;
    const unsigned cols = (7u << (lo < 3 ? lo : 3)) & ~(7u << (hi < 3 ? hi : 3)) & 7u;
    return cols * 0111u; /* the column bits repeated for each kernel row */
}

/* A pixel with taps in the padding (tap mask: row_taps & dw3_cols); at is the offset in bytes of tap
 * (ky, 0) in rows[ky], negative where that column is in the left padding, ch the bytes of one pixel */
EMV_INLINE emv EMV_FN(dw3_edge_pixel)(const float *r0, const float *r1, const float *r2, unsigned taps, ptrdiff_t at,
                                      ptrdiff_t ch, size_t lanes, const emv *wv)
{
    emv v = EMV_FN(dw3_tap)(emv_zero(), taps & 0001u, r0, at, lanes, wv[0]);
    v = EMV_FN(dw3_tap)(v, taps & 0002u, r0, at + ch, lanes, wv[1]);
    v = EMV_FN(dw3_tap)(v, taps & 0004u, r0, at + 2 * ch, lanes, wv[2]);
    v = EMV_FN(dw3_tap)(v, taps & 0010u, r1, at, lanes, wv[3]);
    v = EMV_FN(dw3_tap)(v, taps & 0020u, r1, at + ch, lanes, wv[4]);
    v = EMV_FN(dw3_tap)(v, taps & 0040u, r1, at + 2 * ch, lanes, wv[5]);
    v = EMV_FN(dw3_tap)(v, taps & 0100u, r2, at, lanes, wv[6]);
    v = EMV_FN(dw3_tap)(v, taps & 0200u, r2, at + ch, lanes, wv[7]);
    v = EMV_FN(dw3_tap)(v, taps & 0400u, r2, at + 2 * ch, lanes, wv[8]);
    return v;
}

/* An edge pixel of a left or right edge column: `cols` (a constant) is the mask of the usual such column
 * (0666: column 0 in the padding, the left edge of a 'same' map; 0333: column 2, the right edge at stride
 * 1 and at stride 2 with TF's 0/1 pads). Where the pixel's mask is that column in a middle, top or bottom
 * row, it runs as a constant mask, its taps without a test each; any other mask as dw3_edge_pixel. */
EMV_INLINE emv EMV_FN(dw3_side_pixel)(const float *r0, const float *r1, const float *r2, unsigned taps,
                                      const unsigned cols, ptrdiff_t at, ptrdiff_t ch, size_t lanes, const emv *wv)
{
    if (taps == cols) return EMV_FN(dw3_edge_pixel)(r0, r1, r2, cols, at, ch, lanes, wv);
    if (taps == (cols & 0770u)) return EMV_FN(dw3_edge_pixel)(r0, r1, r2, cols & 0770u, at, ch, lanes, wv);
    if (taps == (cols & 0077u)) return EMV_FN(dw3_edge_pixel)(r0, r1, r2, cols & 0077u, at, ch, lanes, wv);
    return EMV_FN(dw3_edge_pixel)(r0, r1, r2, taps, at, ch, lanes, wv);
}

/* bias and activation as the epilogue (same bits), with the bias vector already in a register */
EMV_INLINE void EMV_FN(dw3_store)(float *o, emv v, const float *bias, emv bv, uint32_t activation, size_t lanes)
{
    if (bias != NULL) v = emv_add(v, bv);
    if (activation == EM_ACT_RELU) v = emv_relu(v);
    else if (activation == EM_ACT_RELU6) v = emv_relu6(v);
    if (lanes == EMV_W) emv_storeu(o, v); else emv_store_part(o, v, lanes);
}

/* The most edge columns on each side the 3×3 path keeps masks for: the loader refuses pads of the kernel
 * size or more, so a 3×3 node has at most 2 (ceil(pad / stride)); anything wider takes the general path. */
#define EMV_DW3_EDGE 4
/* The most rows of one band (the size of the band's row table) */
#define EMV_DW3_BAND 16
/* Input plus output pixels of one band: each channel block touches one cache line of each, and the next
 * blocks (the rest of a 64-byte line) should find them in L1, so a band's lines stay within 16 KB (half
 * of the A72's L1D). MobileNetV2's 8×8 and smaller maps then run whole in one band. */
#define EMV_DW3_BAND_PIXELS 256

/* The column geometry of a call, the same for every row and channel block (so computed once): interior
 * columns [first, stop) (every tap column inside), and the column masks (dw3_cols) of the left edge
 * columns ox < first and of the right edge columns stop <= ox < out_w. */
typedef struct emv_dw3_columns {
    size_t first, stop, out_w, stride, channels, pad_left, row_floats;
    unsigned left[EMV_DW3_EDGE], right[EMV_DW3_EDGE];
} emv_dw3_columns;

/* One output row of a band: the input rows under kernel rows 0..2 (NULL where padding), their row_taps,
 * and where the row's output starts. */
typedef struct emv_dw3_row {
    const float *r0, *r1, *r2;
    unsigned row_taps;
    float *out;
} emv_dw3_row;

/* 0 where an edge has more than EMV_DW3_EDGE columns */
EMV_INLINE int EMV_FN(dw3_columns)(const em_depthwise_shape *s, emv_dw3_columns *g)
{
    const size_t in_w = s->in_w, stride = s->stride_w, pad_left = s->pad_left, out_w = s->out_w;
    /* interior columns [first, stop): ox·stride >= pad_left and ox·stride − pad_left + 3 <= in_w */
    const size_t first_in = (pad_left + stride - 1) / stride;
    const size_t last_in = in_w + pad_left >= 3 ? (in_w + pad_left - 3) / stride + 1 : 0; /* exclusive */
    size_t ox;
    g->first = first_in < out_w ? first_in : out_w;
    g->stop = last_in < g->first ? g->first : (last_in < out_w ? last_in : out_w);
    g->out_w = out_w;
    g->stride = stride;
    g->channels = s->channels;
    g->pad_left = pad_left;
    g->row_floats = in_w * s->channels;
    if (g->first > EMV_DW3_EDGE || out_w - g->stop > EMV_DW3_EDGE) return 0;
    for (ox = 0; ox < g->first; ++ox) g->left[ox] = EMV_FN(dw3_cols)(ox * stride, pad_left, in_w);
    for (ox = g->stop; ox < out_w; ++ox) g->right[ox - g->stop] = EMV_FN(dw3_cols)(ox * stride, pad_left, in_w);
    return 1;
}

/* An interior pixel: x is tap (0, 0), rs the floats from one input row to the next */
EMV_INLINE void EMV_FN(dw3_interior_pixel)(const float *x, size_t rs, size_t channels, size_t lanes, const emv *wv,
                                           const float *bias, emv bv, const uint32_t activation, float *o)
{
    emv v = emv_fma(EMV_FN(dw3_load)(x, lanes), wv[0], emv_zero());
    v = emv_fma(EMV_FN(dw3_load)(x + channels, lanes), wv[1], v);
    v = emv_fma(EMV_FN(dw3_load)(x + 2 * channels, lanes), wv[2], v);
    v = emv_fma(EMV_FN(dw3_load)(x + rs, lanes), wv[3], v);
    v = emv_fma(EMV_FN(dw3_load)(x + rs + channels, lanes), wv[4], v);
    v = emv_fma(EMV_FN(dw3_load)(x + rs + 2 * channels, lanes), wv[5], v);
    v = emv_fma(EMV_FN(dw3_load)(x + 2 * rs, lanes), wv[6], v);
    v = emv_fma(EMV_FN(dw3_load)(x + 2 * rs + channels, lanes), wv[7], v);
    v = emv_fma(EMV_FN(dw3_load)(x + 2 * rs + 2 * channels, lanes), wv[8], v);
    EMV_FN(dw3_store)(o, v, bias, bv, activation, lanes);
}

/* `count` interior pixels (every tap inside: nine taps, no checks) from tap (0, 0) at x, `step` floats
 * apart. The three input rows are consecutive rows of the input, rs floats apart, so one pointer walks
 * them all (the other eight taps at fixed offsets from it, the same for every row and block): fewer
 * additions per pixel than a pointer per row. Two pixels per iteration halve the loop's own
 * instructions; the caller passes bias as a NULL constant where there is none, so that the loop does not
 * test it per pixel. */
EMV_INLINE void EMV_FN(dw3_interior)(const float *x, size_t count, size_t step, size_t rs, size_t channels,
                                     size_t lanes, const emv *wv, const float *bias, emv bv,
                                     const uint32_t activation, float *o, const int unroll)
{
    float *const end = o + (count & ~(size_t)(unroll ? 1 : 0)) * channels;
    if (!unroll) { /* the channel tail's instance: one pixel at a time, less code for a rare block */
        for (; o != end; x += step, o += channels)
            EMV_FN(dw3_interior_pixel)(x, rs, channels, lanes, wv, bias, bv, activation, o);
        return;
    }
    for (; o != end; x += 2 * step, o += 2 * channels) {
        EMV_FN(dw3_interior_pixel)(x, rs, channels, lanes, wv, bias, bv, activation, o);
        EMV_FN(dw3_interior_pixel)(x + step, rs, channels, lanes, wv, bias, bv, activation, o + channels);
    }
    if (count & 1) EMV_FN(dw3_interior_pixel)(x, rs, channels, lanes, wv, bias, bv, activation, o);
}

/* Pixels [from, to) of one row whose taps are all the same mask (the columns between the edges of a row
 * with a kernel row in the padding): instantiated with the masks of the top and bottom rows as constants,
 * so that those pixels test no bits. at0 and ch in bytes as in dw3_edge_pixel. */
EMV_INLINE void EMV_FN(dw3_span)(const float *r0, const float *r1, const float *r2, const unsigned taps, size_t from,
                                 size_t to, ptrdiff_t at0, ptrdiff_t ch, size_t stride, size_t lanes, const emv *wv,
                                 const float *bias, emv bv, const uint32_t activation, float *out, size_t channels)
{
    size_t ox;
    for (ox = from; ox < to; ++ox) {
        const emv v = EMV_FN(dw3_edge_pixel)(r0, r1, r2, taps, at0 + (ptrdiff_t)(ox * stride) * ch, ch, lanes, wv);
        EMV_FN(dw3_store)(out + ox * channels, v, bias, bv, activation, lanes);
    }
}

/* One channel block (`lanes` channels at c) of every row of a band. The nine weight vectors and the bias
 * are loaded once for all the band's rows. activation is a constant in each instance (depthwise3_band's
 * callers), so the epilogue's choice is made once per call, not per pixel. `full` (a constant: 1 for
 * whole vectors, 0 for the channel tail) keeps the specialised paths (constant masks, two interior
 * pixels per iteration) out of the tail's instance, which most nodes never run (channels in multiples of
 * the vector): the code stays smaller. */
EMV_INLINE void EMV_FN(depthwise3_block)(const emv_dw3_columns *g, const emv_dw3_row *rows, size_t row_count, size_t c,
                                         size_t lanes, const float *w, const float *bias, const uint32_t activation,
                                         const int full)
{
    const size_t first = g->first, stop = g->stop, out_w = g->out_w, stride = g->stride, channels = g->channels;
    const ptrdiff_t ch = (ptrdiff_t)(channels * sizeof(float)); /* bytes of one pixel */
    /* the byte offset of tap (ky, 0) of ox = 0 in rows[ky]; + ox·stride·ch per pixel */
    const ptrdiff_t at0 = (ptrdiff_t)(c * sizeof(float)) - (ptrdiff_t)g->pad_left * ch;
    const emv bv = bias != NULL ? EMV_FN(dw3_load)(bias + c, lanes) : emv_zero();
    emv wv[9];
    size_t i, ox, k;
    for (k = 0; k < 9; ++k) wv[k] = EMV_FN(dw3_load)(w + k * channels + c, lanes);
    for (i = 0; i < row_count; ++i) {
        const float *r0 = rows[i].r0, *r1 = rows[i].r1, *r2 = rows[i].r2;
        const unsigned row_taps = rows[i].row_taps;
        float *out = rows[i].out + c;
        for (ox = 0; ox < first; ++ox) { /* left edge */
            const unsigned taps = row_taps & g->left[ox];
            const ptrdiff_t at = at0 + (ptrdiff_t)(ox * stride) * ch;
            const emv v = full ? EMV_FN(dw3_side_pixel)(r0, r1, r2, taps, 0666u, at, ch, lanes, wv)
                               : EMV_FN(dw3_edge_pixel)(r0, r1, r2, taps, at, ch, lanes, wv);
            EMV_FN(dw3_store)(out + ox * channels, v, bias, bv, activation, lanes);
        }
        if (row_taps == 0777u && first < stop) { /* interior, all three kernel rows inside */
            const float *x = r0 + (first * stride - g->pad_left) * channels + c;
            if (bias != NULL || !full)
                EMV_FN(dw3_interior)(x, stop - first, stride * channels, g->row_floats, channels, lanes, wv, bias, bv,
                                     activation, out + first * channels, full);
            else /* a NULL constant: this instance tests no bias per pixel */
                EMV_FN(dw3_interior)(x, stop - first, stride * channels, g->row_floats, channels, lanes, wv, NULL, bv,
                                     activation, out + first * channels, full);
        } else if (full && row_taps == 0770u) { /* the top row of a 'same' map: kernel row 0 in the padding */
            EMV_FN(dw3_span)(r0, r1, r2, 0770u, first, stop, at0, ch, stride, lanes, wv, bias, bv, activation, out,
                             channels);
        } else if (full && row_taps == 0077u) { /* the bottom row: kernel row 2 in the padding */
            EMV_FN(dw3_span)(r0, r1, r2, 0077u, first, stop, at0, ch, stride, lanes, wv, bias, bv, activation, out,
                             channels);
        } else { /* other kernel rows in the padding (maps of one or two rows, pads of 2) */
            EMV_FN(dw3_span)(r0, r1, r2, row_taps, first, stop, at0, ch, stride, lanes, wv, bias, bv, activation, out,
                             channels);
        }
        for (ox = stop; ox < out_w; ++ox) { /* right edge (stop >= first) */
            const unsigned taps = row_taps & g->right[ox - stop];
            const ptrdiff_t at = at0 + (ptrdiff_t)(ox * stride) * ch;
            const emv v = full ? EMV_FN(dw3_side_pixel)(r0, r1, r2, taps, 0333u, at, ch, lanes, wv)
                               : EMV_FN(dw3_edge_pixel)(r0, r1, r2, taps, at, ch, lanes, wv);
            EMV_FN(dw3_store)(out + ox * channels, v, bias, bv, activation, lanes);
        }
    }
}

/* Every channel block of a band: full vectors, then the channel tail (partial loads and stores) */
EMV_INLINE void EMV_FN(depthwise3_band)(const emv_dw3_columns *g, const emv_dw3_row *rows, size_t row_count,
                                        const float *w, const float *bias, const uint32_t activation)
{
    size_t c;
    for (c = 0; c + EMV_W <= g->channels; c += EMV_W)
        EMV_FN(depthwise3_block)(g, rows, row_count, c, EMV_W, w, bias, activation, 1);
    if (c < g->channels) EMV_FN(depthwise3_block)(g, rows, row_count, c, g->channels - c, w, bias, activation, 0);
}

/* The 3×3 path over rows [row_begin, row_end), band by band; 0 (nothing written) where the pads are too
 * wide for it */
static int EMV_FN(depthwise3_rows)(const em_depthwise_shape *s, const float *input, const float *w, const float *bias,
                                   size_t row_begin, size_t row_end, float *out)
{
    const size_t in_w = s->in_w, sh = s->stride_h, row_out = s->out_w * s->channels;
    emv_dw3_columns g;
    emv_dw3_row rows[EMV_DW3_BAND];
    size_t band = 1, oy0, i;
    if (!EMV_FN(dw3_columns)(s, &g)) return 0;
    /* the most rows n with ((n − 1)·stride_h + 3)·in_w + n·out_w <= EMV_DW3_BAND_PIXELS, at least 1 */
    if (3 * in_w + s->out_w <= EMV_DW3_BAND_PIXELS)
        band = (EMV_DW3_BAND_PIXELS - 3 * in_w + sh * in_w) / (sh * in_w + s->out_w);
    if (band > EMV_DW3_BAND) band = EMV_DW3_BAND;
    for (oy0 = row_begin; oy0 < row_end; oy0 += band) {
        const size_t row_count = row_end - oy0 < band ? row_end - oy0 : band;
        for (i = 0; i < row_count; ++i) {
            const float *r[3];
            em_depthwise_input_rows(s, input, oy0 + i, r);
            rows[i].r0 = r[0];
            rows[i].r1 = r[1];
            rows[i].r2 = r[2];
            rows[i].row_taps = (r[0] != NULL ? 0007u : 0u) | (r[1] != NULL ? 0070u : 0u) | (r[2] != NULL ? 0700u : 0u);
            rows[i].out = out + (oy0 + i) * row_out;
        }
        /* one instance per activation: the choice is made here, once per band, not per pixel */
        switch (s->activation) {
        case EM_ACT_RELU:
            EMV_FN(depthwise3_band)(&g, rows, row_count, w, bias, EM_ACT_RELU);
            break;
        case EM_ACT_RELU6:
            EMV_FN(depthwise3_band)(&g, rows, row_count, w, bias, EM_ACT_RELU6);
            break;
        default:
            EMV_FN(depthwise3_band)(&g, rows, row_count, w, bias, EM_ACT_NONE);
            break;
        }
    }
    return 1;
}

/* Any kernel size, one output row: rows[ky] the input row under kernel row ky (NULL where padding) */
static void EMV_FN(depthwise_row_any)(const float *const *rows, const em_depthwise_shape *s, const float *w,
                                      const float *bias, float *out)
{
    const size_t kh = s->kh, kw = s->kw, in_w = s->in_w, stride = s->stride_w, pad_left = s->pad_left;
    const size_t channels = s->channels;
    size_t c, ox;
    for (c = 0; c < channels; c += EMV_W) {
        const size_t lanes = channels - c < EMV_W ? channels - c : EMV_W;
        const float *b = bias != NULL ? bias + c : NULL;
        for (ox = 0; ox < s->out_w; ++ox) {
            const size_t x0 = ox * stride;
            const int interior = x0 >= pad_left && x0 - pad_left + kw <= in_w;
            emv v;
            if (lanes == EMV_W) {
                v = interior ? EMV_FN(depthwise_pixel)(rows, kh, kw, x0, pad_left, in_w, channels, c, EMV_W, w, 1)
                             : EMV_FN(depthwise_pixel)(rows, kh, kw, x0, pad_left, in_w, channels, c, EMV_W, w, 0);
            } else {
                v = EMV_FN(depthwise_pixel)(rows, kh, kw, x0, pad_left, in_w, channels, c, lanes, w, interior);
            }
            if (b != NULL || s->activation != EM_ACT_NONE) v = EMV_FN(epilogue)(v, b, lanes, s->activation);
            if (lanes == EMV_W) emv_storeu(out + ox * channels + c, v);
            else emv_store_part(out + ox * channels + c, v, lanes);
        }
    }
}

static void EMV_FN(depthwise_rows)(const em_depthwise_shape *s, const float *input, const float *w, const float *bias,
                                   size_t row_begin, size_t row_end, float *out)
{
    const float *rows[EM_MAX_KERNEL];
    size_t oy;
    if (s->kh == 3 && s->kw == 3 && EMV_FN(depthwise3_rows)(s, input, w, bias, row_begin, row_end, out)) return;
    for (oy = row_begin; oy < row_end; ++oy) {
        em_depthwise_input_rows(s, input, oy, rows);
        EMV_FN(depthwise_row_any)(rows, s, w, bias, out + oy * s->out_w * s->channels);
    }
}
