/* A small fork-join worker pool (pthreads) for em_run_all's task lanes.
 *
 * The pool is created once (em_pool_create, public API) and handed to contexts (em_context_set_pool); a run
 * never creates threads or allocates. em_pool_run(pool, fn, arg) calls fn(arg, w) once for every worker
 * w = 0 .. threads-1 (w = 0 on the calling thread) and returns when all have returned. Which work a worker
 * does is decided by fn from w alone (a static split), so the results do not depend on timing, and a pool
 * that is busy with another context's run (a pool may be shared) is not waited for: the caller then makes
 * every call fn(arg, 0 .. threads-1) itself, one after the other, with the same results.
 *
 * Built with EM_THREADS=0 (no pthreads, single-core boards) a pool has one worker and no threads. */
#ifndef EDGEMERGE_EM_THREADS_H
#define EDGEMERGE_EM_THREADS_H

#include "em_internal.h"

typedef void (*em_pool_fn)(void *arg, uint32_t worker);

void em_pool_run(em_pool *pool, em_pool_fn fn, void *arg);

#endif /* EDGEMERGE_EM_THREADS_H */
