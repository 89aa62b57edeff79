/* A small fork-join worker pool (pthreads): em_run_all's task lanes, and the pieces of one node split over
 * the workers (em_runtime.c).
 *
 * The pool is created once (em_pool_create, public API) and handed to contexts (em_context_set_pool); a run
 * never creates threads or allocates. em_pool_run_chunks(pool, fn, arg, chunks) calls fn(arg, c) once for
 * every chunk c = 0 .. chunks-1, on whichever worker claims it first (the calling thread takes part), and
 * returns when all have returned. A chunk's work is decided by fn from c alone, and chunks write disjoint
 * bytes, so the results do not depend on which thread ran what, or when. A pool that is busy with another
 * run (a pool may be shared by contexts; a node split inside a task lane) is not waited for: the caller
 * then runs every chunk itself, in order, with the same results. em_pool_run: one chunk per worker, chunk 0
 * always on the calling thread (em_run_all's task lanes keep their core from run to run: em_threads.c).
 *
 * Built with EM_THREADS=0 (no pthreads, single-core boards) a pool has one worker and no threads. */
#ifndef EDGEMERGE_EM_THREADS_H
#define EDGEMERGE_EM_THREADS_H

#include "em_internal.h"

typedef void (*em_pool_fn)(void *arg, uint32_t chunk);

void em_pool_run_chunks(em_pool *pool, em_pool_fn fn, void *arg, uint32_t chunks);
void em_pool_run(em_pool *pool, em_pool_fn fn, void *arg);

#endif /* EDGEMERGE_EM_THREADS_H */
