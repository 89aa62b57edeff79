/* A run context past EM_MAX_CONTEXT_BYTES is refused at load with LIMIT and a message naming the size,
 * instead of a huge allocation: a small file (one LUT_CONV2D with r = 1, C = 12288 on a 256x256 input)
 * whose reference kernel needs a 3 GiB table (below 4 GiB, so a 32-bit size_t holds it and 32-bit
 * targets reach the same check). The fast kernels (decoded weights) need little and load. */
#include <stdlib.h>
#include <string.h>

#include "em_internal.h"
#include "em_test_builder.h"
#include "em_test_util.h"

int main(void)
{
    const uint32_t C = 12288, cb_dims[3] = {1, 12288, 1}, idx_dims[4] = {1, 1, 1, 4};
    float *cb = (float *)malloc(C * sizeof(float));
    uint32_t idx[4] = {0, 1, 12287, 7}, in, v;
    emb_builder *b = emb_create();
    emb_node n;
    em_test_rng rng;
    em_load_options options;
    em_model *model = NULL;
    em_error err;
    em_status st;
    size_t size;
    uint8_t *file;

    em_test_rng_seed(&rng, 3);
    em_test_fill(&rng, cb, C, 1.0f);
    in = emb_input(b, 256, 256, 1);
    n = emb_node_init(EM_OP_LUT_CONV2D, in);
    n.seg_len = 1;
    n.codewords = C;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, 14, idx);
    v = emb_add_op(b, n, 4);
    file = emb_finish_one_task(b, in, v, &size);
    free(cb);

    memset(&options, 0, sizeof options);
    options.kernels = EM_KERNELS_REFERENCE;
    st = em_model_load_ex(file, size, NULL, &options, &model, &err);
    CHECK_STATUS(st, EM_STATUS_LIMIT, err);
    CHECKF(strstr(err.message, "EM_MAX_CONTEXT_BYTES") != NULL && strstr(err.message, "needs 3222") != NULL,
           "message: %s", err.message);
    CHECK(model == NULL);
    em_model_free(model);
    model = NULL;
    if (em_kernels_resolve(EM_KERNELS_AUTO) != EM_KERNELS_REFERENCE) {
        options.kernels = EM_KERNELS_AUTO;
        st = em_model_load_ex(file, size, NULL, &options, &model, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        CHECK(em_context_size(model) <= EM_MAX_CONTEXT_BYTES);
        em_model_free(model);
    }
    free(file);
    return em_test_summary("test_context_limit");
}
