/* The first step of every LUT op, reference and int8 alike (FORMAT.md "LUT ops"): for one input pixel,
 *
 *   table[s, c] = Σ_j x[s·r + j] · codebook[s, c, j]        (x zero beyond Cin)
 *
 * (codebook[0, c, j] for every s when the codebook is layer-shared: codebook_stride 0.)
 *
 * One builder for lut_conv2d_ref.c, lut_dense_ref.c and lut_int8_ref.c, so the float tables the int8
 * reference quantises are the very tables of the float reference. */
#include "em_ref_kernels.h"

void em_lut_build_table_ref(const float *x, uint32_t in_c, uint32_t seg_len, uint32_t segments,
                            uint32_t codewords, const float *codebook, size_t codebook_stride, float *table)
{
    uint32_t s, c, j;
    for (s = 0; s < segments; ++s) {
        const uint32_t first = s * seg_len;
        /* the last segment is zero-padded past Cin: its missing terms are zero, so stop early */
        const uint32_t len = in_c - first < seg_len ? in_c - first : seg_len;
        for (c = 0; c < codewords; ++c) {
            const float *word = codebook + s * codebook_stride + (size_t)c * seg_len;
            float dot = 0.0f;
            for (j = 0; j < len; ++j) dot += x[first + j] * word[j];
            table[(size_t)s * codewords + c] = dot;
        }
    }
}
