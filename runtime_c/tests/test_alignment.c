/* Packed kernel data (decoded weights, packed panels, index maps prepared at load) is 64-byte aligned
 * whatever the allocator returns: an allocator whose blocks all start at 16 mod 64 (glibc's malloc often
 * does, and the em_allocator contract promises only 16) still gives every node's packed data a 64-byte
 * aligned address, with every kernel set. Before the fix the loader aligned offsets relative to the
 * block, so with such an allocator every packed buffer sat at 16 mod 64. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "em_internal.h"
#include "em_kernels.h"
#include "em_test_builder.h"
#include "em_test_util.h"

typedef struct skew_allocator {
    size_t live;
} skew_allocator;

/* Blocks at exactly 16 mod 64; the malloc'd pointer is kept in the 16 bytes before the block. */
static void *skew_alloc(void *user, size_t bytes)
{
    unsigned char *raw = (unsigned char *)malloc(bytes + 128u), *p;
    if (raw == NULL) return NULL;
    p = raw + (64u - (size_t)((uintptr_t)raw % 64u)) % 64u + 16u;
    memcpy(p - 16, &raw, sizeof raw);
    ++((skew_allocator *)user)->live;
    return p;
}

static void skew_free(void *user, void *ptr)
{
    unsigned char *raw;
    if (ptr == NULL) return;
    memcpy(&raw, (unsigned char *)ptr - 16, sizeof raw);
    --((skew_allocator *)user)->live;
    free(raw);
}

static uint32_t add_lut(emb_builder *b, em_test_rng *rng, uint32_t op, uint32_t in, uint32_t cin, uint32_t cout,
                        uint32_t r, uint32_t C, uint32_t k, uint32_t flags)
{
    const uint32_t S = (cin + r - 1) / r, bits = C <= 2 ? 1 : (C <= 4 ? 2 : (C <= 8 ? 3 : (C <= 16 ? 4 : 5)));
    const uint32_t cb_dims[3] = {S, C, r}, idx4[4] = {k, k, S, cout}, idx2[2] = {S, cout};
    float cb[2048];
    uint32_t idx[4096], i;
    emb_node n = emb_node_init(op, in);
    em_test_fill(rng, cb, (size_t)S * C * r, 0.3f);
    for (i = 0; i < k * k * S * cout; ++i) idx[i] = em_test_rand_below(rng, C);
    n.seg_len = r;
    n.codewords = C;
    n.flags = flags;
    n.activation = EM_ACT_RELU;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    if (op == EM_OP_LUT_CONV2D) {
        n.kernel_h = n.kernel_w = k;
        n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = k / 2;
        n.index = emb_tensor_idx(b, 4, idx4, bits, idx);
    } else {
        n.index = emb_tensor_idx(b, 2, idx2, bits, idx);
    }
    return emb_add_op(b, n, cout);
}

static uint32_t add_weighted(emb_builder *b, em_test_rng *rng, uint32_t op, uint32_t in, uint32_t cin, uint32_t cout,
                             uint32_t k)
{
    const uint32_t dims4[4] = {k, k, cin, cout}, dims2[2] = {cin, cout};
    float w[4096];
    emb_node n = emb_node_init(op, in);
    em_test_fill(rng, w, op == EM_OP_DENSE ? (size_t)cin * cout : (size_t)k * k * cin * cout, 0.2f);
    n.activation = EM_ACT_RELU6;
    if (op == EM_OP_DENSE) {
        n.weight = emb_tensor_f32(b, 2, dims2, w);
    } else {
        n.kernel_h = n.kernel_w = k;
        n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = k / 2;
        n.weight = emb_tensor_f32(b, 4, dims4, w);
    }
    return emb_add_op(b, n, op == EM_OP_DEPTHWISE_CONV2D ? cin * cout : cout);
}

static uint8_t *build_model(size_t *size)
{
    emb_builder *b = emb_create();
    em_test_rng rng;
    uint32_t in, v;
    uint8_t *file;
    em_test_rng_seed(&rng, 64);
    in = emb_input(b, 8, 8, 4);
    v = add_lut(b, &rng, EM_OP_LUT_CONV2D, in, 4, 6, 2, 5, 3, 0);    /* tables */
    v = add_lut(b, &rng, EM_OP_LUT_CONV2D, v, 6, 8, 1, 4, 3, 0);     /* r = 1: decoded weights */
    v = add_weighted(b, &rng, EM_OP_CONV2D, v, 8, 8, 3);
    v = add_weighted(b, &rng, EM_OP_DEPTHWISE_CONV2D, v, 8, 1, 3);
    v = add_lut(b, &rng, EM_OP_LUT_CONV2D, v, 8, 16, 2, 16, 1, EM_NODE_FLAG_INT8_TABLES);
    v = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
    v = add_weighted(b, &rng, EM_OP_DENSE, v, 16, 24, 1);
    v = add_lut(b, &rng, EM_OP_LUT_DENSE, v, 24, 10, 4, 16, 1, EM_NODE_FLAG_INT8_TABLES);
    v = add_lut(b, &rng, EM_OP_LUT_DENSE, v, 10, 7, 2, 9, 1, 0);
    file = emb_finish_one_task(b, in, v, size);
    return file;
}

int main(void)
{
    size_t size;
    uint8_t *file = build_model(&size);
    skew_allocator state = {0};
    em_allocator skew;
    uint32_t set, i;
    size_t packed_nodes = 0;

    skew.alloc = skew_alloc;
    skew.free = skew_free;
    skew.user = &state;
    {   /* the allocator does what it says */
        void *p = skew_alloc(&state, 100);
        CHECK(p != NULL && (uintptr_t)p % 64u == 16u);
        skew_free(&state, p);
    }
    for (set = 0; set < EM_KERNELS_COUNT; ++set) {
        em_model *model = NULL;
        em_error err;
        em_status st;
        if (!em_kernels_available(set)) continue;
        st = em_test_load_with(file, size, &skew, set, 0, &model, &err);
        if (!CHECK_STATUS(st, EM_STATUS_OK, err)) continue;
        for (i = 0; i < model->node_count; ++i) {
            const em_node *node = &model->nodes[i];
            if (node->packed_bytes == 0) continue;
            ++packed_nodes;
            CHECKF((uintptr_t)node->packed % 64u == 0, "kernel set %s, node %u (%s): packed data at %p, %u mod 64",
                   em_kernels_name(set), (unsigned)i, node->kernel->name, node->packed,
                   (unsigned)((uintptr_t)node->packed % 64u));
        }
        em_model_free(model);
    }
    CHECKF(packed_nodes > 0, "no kernel set packed any data: the test checks nothing");
    CHECKF(state.live == 0, "%zu blocks leaked", state.live);
    free(file);
    return em_test_summary("test_alignment");
}
