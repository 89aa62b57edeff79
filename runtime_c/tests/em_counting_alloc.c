#include "em_counting_alloc.h"

#include <stdlib.h>

static void *counting_alloc(void *user, size_t bytes)
{
    em_counting_allocator *a = (em_counting_allocator *)user;
    void *p;
    if (++a->calls == a->fail_at) return NULL;
    p = malloc(bytes);
    if (p != NULL) {
        ++a->live;
        a->bytes += bytes;
    }
    return p;
}

static void counting_free(void *user, void *ptr)
{
    em_counting_allocator *a = (em_counting_allocator *)user;
    if (ptr == NULL) return;
    --a->live;
    free(ptr);
}

void em_counting_allocator_bind(em_allocator *allocator, em_counting_allocator *counter)
{
    allocator->alloc = counting_alloc;
    allocator->free = counting_free;
    allocator->user = counter;
}
