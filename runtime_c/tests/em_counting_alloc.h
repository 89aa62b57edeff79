/* An em_allocator over malloc that counts its calls and live blocks and can fail its n-th allocation: the
 * allocation-failure and leak checks of the C tests (test_alloc, test_context) and of the fuzz oracle. */
#ifndef EDGEMERGE_EM_COUNTING_ALLOC_H
#define EDGEMERGE_EM_COUNTING_ALLOC_H

#include <stddef.h>

#include "edgemerge/em_runtime.h"

typedef struct em_counting_allocator {
    size_t calls;   /* allocations attempted */
    size_t fail_at; /* 1-based number of the allocation that fails; 0: none */
    size_t live;    /* allocated and not yet freed */
    size_t bytes;   /* bytes of every successful allocation (not reduced by frees) */
} em_counting_allocator;

/* Routes `allocator` through `counter` (the caller sets or resets the counts). */
void em_counting_allocator_bind(em_allocator *allocator, em_counting_allocator *counter);

#endif /* EDGEMERGE_EM_COUNTING_ALLOC_H */
