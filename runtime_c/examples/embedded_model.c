/* embedded_model: a merged model compiled into the program (`edgemerge export-c`), loaded in place.
 *
 *   edgemerge export-c merged.emm -o model_data.h
 *   cc -std=c99 -O2 -Iruntime_c/include -I. runtime_c/examples/embedded_model.c \
 *      -Lbuild/host/lib -ledgemerge_runtime -lm [BLAS] -o embedded_model
 *
 * With another header or array name: -DEM_MODEL_HEADER='"fw_model.h"' -DEM_MODEL_DATA=fashion_words
 * -DEM_MODEL_DATA_SIZE=EM_MODEL_FASHION_WORDS_SIZE.
 *
 * Runs every task once on a deterministic input, x[i] = ((37 i + 11 t) mod 101) / 50 - 1 for task t
 * (exact in float32, so a test can compute the same input), and prints one line per task:
 *   task NAME top1 K logits v0 v1 ...
 * It also reports how many bytes em_model_load allocated (the model's tables only: the tensor data is
 * used where it lies, in the const array) and whether the array is aligned as the header says. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgemerge/em_runtime.h"

#ifndef EM_MODEL_HEADER
#define EM_MODEL_HEADER "model_data.h"
#endif
#include EM_MODEL_HEADER

#ifndef EM_MODEL_DATA
#define EM_MODEL_DATA model_data
#define EM_MODEL_DATA_SIZE EM_MODEL_MODEL_DATA_SIZE
#define EM_MODEL_DATA_ALIGNMENT EM_MODEL_MODEL_DATA_ALIGNMENT
#endif
#ifndef EM_MODEL_DATA_ALIGNMENT
#define EM_MODEL_DATA_ALIGNMENT 64u
#endif

/* Counts what the loader allocates, to show that the model is not copied. */
typedef struct counting {
    size_t bytes;
    size_t calls;
} counting;

static void *counting_alloc(void *user, size_t bytes)
{
    counting *c = (counting *)user;
    c->bytes += bytes;
    c->calls += 1;
    return malloc(bytes);
}

static void counting_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

int main(void)
{
    counting count = {0, 0};
    em_allocator allocator;
    em_model *model = NULL;
    em_context *ctx = NULL;
    em_error err;
    void *memory;
    uint32_t t, tasks;
    int failed = 0;

    allocator.alloc = counting_alloc;
    allocator.free = counting_free;
    allocator.user = &count;
    if (em_model_load(EM_MODEL_DATA, EM_MODEL_DATA_SIZE, &allocator, &model, &err) != EM_STATUS_OK) {
        fprintf(stderr, "embedded_model: load failed: %s\n", err.message);
        return 1;
    }
    printf("model %lu bytes, format version %lu, aligned %d, loader allocated %lu bytes in %lu calls\n",
           (unsigned long)EM_MODEL_DATA_SIZE, (unsigned long)em_model_format_version(model),
           (int)(((uintptr_t)EM_MODEL_DATA % EM_MODEL_DATA_ALIGNMENT) == 0), (unsigned long)count.bytes,
           (unsigned long)count.calls);
    memory = malloc(em_context_size(model));
    if (memory == NULL || em_context_init(model, memory, em_context_size(model), &ctx, &err) != EM_STATUS_OK) {
        fprintf(stderr, "embedded_model: context: %s\n", memory ? err.message : "out of memory");
        free(memory);
        em_model_free(model);
        return 1;
    }
    tasks = em_model_task_count(model);
    for (t = 0; t < tasks && !failed; ++t) {
        em_task_info info;
        size_t n, i, best = 0;
        float *x, *y;
        if (em_model_task_info(model, t, &info) != EM_STATUS_OK) {
            failed = 1;
            break;
        }
        n = (size_t)info.input_h * info.input_w * info.input_c;
        x = (float *)malloc(n * sizeof *x);
        y = (float *)malloc((size_t)info.classes * sizeof *y);
        if (x == NULL || y == NULL) {
            fprintf(stderr, "embedded_model: out of memory\n");
            failed = 1;
        } else {
            for (i = 0; i < n; ++i)
                x[i] = (float)((i * 37u + 11u * t) % 101u) / 50.0f - 1.0f;
            if (em_run_task(ctx, t, x, n, y, info.classes, &err) != EM_STATUS_OK) {
                fprintf(stderr, "embedded_model: task %s: %s\n", info.name, err.message);
                failed = 1;
            } else {
                for (i = 1; i < info.classes; ++i)
                    if (y[i] > y[best])
                        best = i;
                printf("task %s top1 %lu logits", info.name, (unsigned long)best);
                for (i = 0; i < info.classes; ++i)
                    printf(" %.9g", (double)y[i]);
                printf("\n");
            }
        }
        free(x);
        free(y);
    }
    free(memory);
    em_model_free(model);
    return failed;
}
