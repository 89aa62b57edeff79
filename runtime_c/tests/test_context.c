/* (d, continued) Caller memory and allocation failures on a real merged model.
 *
 * test_alloc.c fails every allocation of a built model; this adds what it leaves out:
 *   - context memory: sizes below em_context_size() (0..255, the 256 just below, and 256 in between) are
 *     refused with BAD_ARGUMENT, set no context and write nothing; exactly em_context_size() bytes work at every one of the 64 alignments, never write
 *     outside the block (guard bytes on both sides), and give the same logits at every alignment;
 *   - em_model_load of a model written by the Python merge (the corpus file given as argv[1]: two tasks,
 *     shared codebooks, node names) with its n-th allocation failing, for every n: NO_MEMORY, nothing
 *     leaked, *out_model NULL; and the load after that works (no state survives a failed load).
 *
 *   em_test_context runtime_c/fuzz/corpus/valid-merged-lenet-mobile.emm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_counting_alloc.h"
#include "em_test_util.h"

#define GUARD 64u
#define GUARD_BYTE 0xC3u


static uint8_t *read_model(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0) {
        if (f) fclose(f);
        return NULL;
    }
    *size = (size_t)n;
    data = (uint8_t *)malloc(*size);
    if (data != NULL && fread(data, 1, *size, f) != *size) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

static int guards_intact(const uint8_t *block, size_t skew, size_t size)
{
    size_t k;
    for (k = 0; k < GUARD + skew; ++k)
        if (block[k] != GUARD_BYTE) return 0;
    for (k = GUARD + skew + size; k < GUARD + 64u + size + GUARD; ++k)
        if (block[k] != GUARD_BYTE) return 0;
    return 1;
}

static void test_context_memory(const em_model *model)
{
    const size_t need = em_context_size(model);
    const uint32_t tasks = em_model_task_count(model), inputs = em_model_input_count(model);
    /* [GUARD][skew][need bytes][64 - skew][GUARD] */
    uint8_t *block = (uint8_t *)malloc(GUARD + 64u + need + GUARD);
    float *in[EM_MAX_INPUTS], *out[EM_MAX_TASKS], *first[EM_MAX_TASKS];
    em_context *ctx;
    em_error err;
    em_status st;
    size_t size, skew, k, tried = 0, refused = 0, untouched = 0, aligned_ok = 0;
    uint32_t i, t;
    em_test_rng rng;

    CHECK(need > 0 && tasks <= EM_MAX_TASKS && inputs <= EM_MAX_INPUTS);
    em_test_rng_seed(&rng, 9);
    for (i = 0; i < inputs; ++i) {
        uint32_t h, w, c;
        em_model_input_shape(model, i, &h, &w, &c);
        in[i] = (float *)malloc((size_t)h * w * c * sizeof(float));
        em_test_fill(&rng, in[i], (size_t)h * w * c, 1.0f);
    }
    for (t = 0; t < tasks; ++t) {
        em_task_info info;
        em_model_task_info(model, t, &info);
        out[t] = (float *)malloc(info.classes * sizeof(float));
        first[t] = (float *)malloc(info.classes * sizeof(float));
    }

    /* too small: sizes 0..255, the 256 just below the need, and 256 spread in between */
    for (k = 0; k < 768; ++k) {
        size_t j;
        int clean = 1;
        size = k < 256 ? k : k < 512 ? need - 1u - (k - 256) : (need / 256u) * (k - 512);
        if (size >= need) continue;
        ++tried;
        memset(block, GUARD_BYTE, GUARD + 64u + need + GUARD);
        ctx = (em_context *)(void *)block;
        st = em_context_init(model, block + GUARD, size, &ctx, &err);
        if (st == EM_STATUS_BAD_ARGUMENT && ctx == NULL && strstr(err.message, "em_context_size") != NULL) ++refused;
        for (j = 0; j < GUARD + 64u + need + GUARD; ++j) clean &= block[j] == GUARD_BYTE;
        untouched += (size_t)clean;
    }
    CHECKF(refused == tried, "%zu of %zu too-small sizes refused cleanly", refused, tried);
    CHECKF(untouched == tried, "%zu of %zu refused inits left the memory untouched", untouched, tried);
    CHECK(em_context_init(model, NULL, need, &ctx, &err) == EM_STATUS_BAD_ARGUMENT && ctx == NULL);
    CHECK(em_context_init(NULL, block, need, &ctx, &err) == EM_STATUS_BAD_ARGUMENT && ctx == NULL);
    CHECK(em_context_init(model, block, need, NULL, &err) == EM_STATUS_BAD_ARGUMENT);

    /* exactly enough, at every alignment: guards intact, the same logits */
    for (skew = 0; skew < 64u; ++skew) {
        int same = 1;
        memset(block, GUARD_BYTE, GUARD + 64u + need + GUARD);
        st = em_context_init(model, block + GUARD + skew, need, &ctx, &err);
        if (st != EM_STATUS_OK) {
            CHECKF(0, "skew %zu: %s", skew, err.message);
            continue;
        }
        st = em_run_all(ctx, (const float *const *)in, out, &err);
        CHECKF(st == EM_STATUS_OK, "skew %zu: run: %s", skew, err.message);
        for (t = 0; t < tasks; ++t) {
            em_task_info info;
            em_model_task_info(model, t, &info);
            if (skew == 0) memcpy(first[t], out[t], info.classes * sizeof(float));
            same &= memcmp(first[t], out[t], info.classes * sizeof(float)) == 0;
        }
        if (same && guards_intact(block, skew, need)) ++aligned_ok;
        else CHECKF(0, "skew %zu: %s", skew, same ? "wrote outside its memory" : "different logits");
    }
    CHECKF(aligned_ok == 64, "%zu of 64 alignments clean", aligned_ok);

    for (i = 0; i < inputs; ++i) free(in[i]);
    for (t = 0; t < tasks; ++t) {
        free(out[t]);
        free(first[t]);
    }
    free(block);
}

static void test_failing_allocations(const uint8_t *data, size_t size)
{
    em_counting_allocator counter;
    em_allocator allocator;
    em_model *model = NULL;
    em_error err;
    em_status st;
    size_t needed, n, clean = 0;

    em_counting_allocator_bind(&allocator, &counter);
    memset(&counter, 0, sizeof counter);
    st = em_model_load(data, size, &allocator, &model, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    needed = counter.calls;
    em_model_free(model);
    CHECKF(counter.live == 0, "em_model_free left %zu allocations", counter.live);
    for (n = 1; n <= needed; ++n) {
        memset(&counter, 0, sizeof counter);
        counter.fail_at = n;
        model = (em_model *)(void *)&counter;
        st = em_model_load(data, size, &allocator, &model, &err);
        if (st == EM_STATUS_NO_MEMORY && model == NULL && counter.live == 0 &&
            strstr(err.message, "out of memory") != NULL)
            ++clean;
        else
            CHECKF(0, "allocation %zu of %zu failing: %s, %zu leaked (%s)", n, needed, em_status_name(st),
                   counter.live, err.message);
        /* and nothing lingers: the next load succeeds and runs */
        memset(&counter, 0, sizeof counter);
        st = em_model_load(data, size, &allocator, &model, &err);
        if (st != EM_STATUS_OK) CHECKF(0, "load after a failed one: %s", err.message);
        em_model_free(model);
    }
    CHECKF(clean == needed, "%zu of %zu failing allocations handled cleanly", clean, needed);
    printf("test_context: %zu allocations per load, each one failed once\n", needed);
}

/* em_model_packed_bytes: what the loader allocates for kernel data (decoded weights, unpacked indices). The
 * file's LUT layers pack their index maps for the fast kernels, the reference set packs nothing; the figure
 * is never more than the load allocated in all. */
static void test_packed_bytes(const uint8_t *data, size_t size)
{
    em_counting_allocator counter;
    em_allocator allocator;
    em_load_options options;
    em_model *model = NULL;
    em_error err;
    em_status st;
    uint32_t pass;
    CHECK(em_model_packed_bytes(NULL) == 0);
    em_counting_allocator_bind(&allocator, &counter);
    for (pass = 0; pass < 2; ++pass) { /* the reference set, then the best set of this CPU */
        memset(&options, 0, sizeof options);
        options.kernels = pass == 0 ? EM_KERNELS_REFERENCE : EM_KERNELS_AUTO;
        memset(&counter, 0, sizeof counter);
        st = em_model_load_ex(data, size, &allocator, &options, &model, &err);
        CHECK_STATUS(st, EM_STATUS_OK, err);
        if (st != EM_STATUS_OK) continue;
        if (pass == 0)
            CHECKF(em_model_packed_bytes(model) == 0, "reference kernels: %zu packed bytes", em_model_packed_bytes(model));
        else
            CHECKF(em_model_packed_bytes(model) > 0 && em_model_packed_bytes(model) <= counter.bytes,
                   "%s kernels: %zu packed bytes of %zu allocated at load", em_kernels_name(em_model_kernels(model)),
                   em_model_packed_bytes(model), counter.bytes);
        em_model_free(model);
    }
}

int main(int argc, char **argv)
{
    size_t size = 0;
    uint8_t *data;
    em_model *model = NULL;
    em_error err;
    em_status st;

    if (argc != 2) {
        fprintf(stderr, "usage: em_test_context MODEL.emm\n");
        return 2;
    }
    data = read_model(argv[1], &size);
    if (!CHECKF(data != NULL, "cannot read %s", argv[1])) return em_test_summary("test_context");
    st = em_model_load(data, size, NULL, &model, &err);
    CHECK_STATUS(st, EM_STATUS_OK, err);
    if (st == EM_STATUS_OK) {
        test_context_memory(model);
        em_model_free(model);
    }
    test_failing_allocations(data, size);
    test_packed_bytes(data, size);
    free(data);
    return em_test_summary("test_context");
}
