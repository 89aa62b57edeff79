/* The worker pool (em_threads.h): threads-1 pthreads that sleep on a condition variable between jobs,
 * plus the caller as worker 0. A job is a generation number: em_pool_run publishes fn/arg, bumps the
 * generation and wakes the workers; each runs fn(arg, its id) once and counts down `pending`; the caller
 * runs its own share, then waits for pending == 0. Everything a job writes is published to the caller by
 * the mutex (its unlock/lock pairs order the memory), so no atomics are needed and the code stays C99.
 *
 * One job at a time per pool: `busy` is taken with a trylock, and a caller that finds the pool busy (two
 * contexts sharing one pool) runs every worker's share itself instead of waiting: same results, no
 * deadlock, no unbounded wait. */
#include <stdlib.h>
#include <string.h>

#include "em_threads.h"

#ifndef EM_THREADS
#define EM_THREADS 1
#endif

#if EM_THREADS
#include <pthread.h>
#include <sched.h>
#endif

/* A job of em_run_all lasts tens of microseconds on the small models this runtime is for; waking a thread
 * through a condition variable costs about as much. So a worker first spins (reading the generation with
 * acquire loads) for a while after each job and only then sleeps, and the caller spins for the workers'
 * count-down, yielding the core after a while (a loaded machine may have descheduled a worker). GCC and
 * Clang's __atomic builtins; other compilers use the mutex and condition variables only. */
#if EM_THREADS && (defined(__GNUC__) || defined(__clang__))
#define EM_POOL_SPIN 1
#define EM_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define EM_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define EM_DECREMENT(p) __atomic_sub_fetch((p), 1u, __ATOMIC_ACQ_REL)
#define EM_SPINS 20000u /* about 50-100 µs of polling */
#else
#define EM_POOL_SPIN 0
#endif

typedef struct em_pool_worker {
    em_pool *pool;
    uint32_t id;
} em_pool_worker;

struct em_pool {
    em_allocator allocator;
    uint32_t threads; /* workers, the caller included */
#if EM_THREADS
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    pthread_mutex_t busy;     /* held for the duration of a job */
    pthread_t *handles;       /* [threads - 1] */
    em_pool_worker *workers;  /* [threads - 1] */
    uint32_t started;         /* threads created (for em_pool_free after a partial create) */
    uint64_t generation;
    uint32_t pending;
    uint32_t sleepers; /* workers waiting on `wake` (under lock) */
    int stop;
    em_pool_fn fn;
    void *arg;
#endif
};

#if EM_THREADS
static void *worker_main(void *p)
{
    em_pool_worker *self = (em_pool_worker *)p;
    em_pool *pool = self->pool;
    uint64_t seen = 0;
    for (;;) {
        em_pool_fn fn;
        void *arg;
#if EM_POOL_SPIN
        uint32_t spin;
        for (spin = 0; spin < EM_SPINS && EM_LOAD(&pool->generation) == seen && !EM_LOAD(&pool->stop); ++spin) {
        }
#endif
        pthread_mutex_lock(&pool->lock);
        ++pool->sleepers;
        while (pool->generation == seen && !pool->stop) pthread_cond_wait(&pool->wake, &pool->lock);
        --pool->sleepers;
        if (pool->stop) {
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        seen = pool->generation;
        fn = pool->fn;
        arg = pool->arg;
        pthread_mutex_unlock(&pool->lock);
        fn(arg, self->id);
#if EM_POOL_SPIN
        EM_DECREMENT(&pool->pending);
#else
        pthread_mutex_lock(&pool->lock);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->lock);
#endif
    }
}
#endif

em_status em_pool_create(uint32_t threads, const em_allocator *allocator, em_pool **out_pool, em_error *err)
{
    em_allocator a;
    em_pool *pool;
    if (out_pool != NULL) *out_pool = NULL;
    if (out_pool == NULL) return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_pool_create: out_pool is NULL");
    if (threads == 0 || threads > EM_MAX_THREADS)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_pool_create: %" PRIu32 " threads (1 to %u)", threads,
                       (unsigned)EM_MAX_THREADS);
#if !EM_THREADS
    if (threads > 1)
        return em_fail(err, EM_STATUS_UNSUPPORTED, "em_pool_create: %" PRIu32 " threads asked, but this build has "
                       "no threads (EM_THREADS=0)", threads);
#endif
    if (allocator != NULL && (allocator->alloc == NULL || allocator->free == NULL))
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_pool_create: allocator needs both alloc and free");
    a = em_allocator_or_default(allocator);
    pool = (em_pool *)a.alloc(a.user, sizeof *pool);
    if (pool == NULL) return em_fail(err, EM_STATUS_NO_MEMORY, "em_pool_create: out of memory");
    memset(pool, 0, sizeof *pool);
    pool->allocator = a;
    pool->threads = threads;
#if EM_THREADS
    if (threads > 1) {
        uint32_t i;
        pool->handles = (pthread_t *)a.alloc(a.user, (threads - 1u) * sizeof(pthread_t));
        pool->workers = (em_pool_worker *)a.alloc(a.user, (threads - 1u) * sizeof(em_pool_worker));
        if (pool->handles == NULL || pool->workers == NULL) {
            if (pool->handles != NULL) a.free(a.user, pool->handles);
            if (pool->workers != NULL) a.free(a.user, pool->workers);
            a.free(a.user, pool);
            return em_fail(err, EM_STATUS_NO_MEMORY, "em_pool_create: out of memory");
        }
        pthread_mutex_init(&pool->lock, NULL);
        pthread_mutex_init(&pool->busy, NULL);
        pthread_cond_init(&pool->wake, NULL);
        pthread_cond_init(&pool->done, NULL);
        for (i = 0; i + 1u < threads; ++i) {
            pool->workers[i].pool = pool;
            pool->workers[i].id = i + 1u;
            if (pthread_create(&pool->handles[i], NULL, worker_main, &pool->workers[i]) != 0) {
                em_pool_free(pool);
                return em_fail(err, EM_STATUS_NO_MEMORY, "em_pool_create: cannot start thread %" PRIu32 " of %"
                               PRIu32, i + 1u, threads);
            }
            ++pool->started;
        }
    }
#endif
    *out_pool = pool;
    em_error_clear(err);
    return EM_STATUS_OK;
}

void em_pool_free(em_pool *pool)
{
    em_allocator a;
    if (pool == NULL) return;
    a = pool->allocator;
#if EM_THREADS
    if (pool->threads > 1) {
        uint32_t i;
        pthread_mutex_lock(&pool->lock);
#if EM_POOL_SPIN
        EM_STORE(&pool->stop, 1);
#else
        pool->stop = 1;
#endif
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
        for (i = 0; i < pool->started; ++i) pthread_join(pool->handles[i], NULL);
        pthread_cond_destroy(&pool->done);
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->busy);
        pthread_mutex_destroy(&pool->lock);
        a.free(a.user, pool->workers);
        a.free(a.user, pool->handles);
    }
#endif
    a.free(a.user, pool);
}

uint32_t em_pool_threads(const em_pool *pool)
{
    return pool != NULL ? pool->threads : 1u;
}

void em_pool_run(em_pool *pool, em_pool_fn fn, void *arg)
{
    uint32_t w;
#if EM_THREADS
    if (pool->threads > 1 && pthread_mutex_trylock(&pool->busy) == 0) {
        pthread_mutex_lock(&pool->lock);
        pool->fn = fn;
        pool->arg = arg;
#if EM_POOL_SPIN
        EM_STORE(&pool->pending, pool->threads - 1u);
        EM_STORE(&pool->generation, pool->generation + 1u); /* spinning workers see fn/arg after this */
#else
        pool->pending = pool->threads - 1u;
        ++pool->generation;
#endif
        if (pool->sleepers > 0) pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
        fn(arg, 0);
#if EM_POOL_SPIN
        {
            uint32_t spin = 0;
            while (EM_LOAD(&pool->pending) > 0)
                if (++spin > EM_SPINS) sched_yield(); /* a descheduled worker: give it the core */
        }
#else
        pthread_mutex_lock(&pool->lock);
        while (pool->pending > 0) pthread_cond_wait(&pool->done, &pool->lock);
        pthread_mutex_unlock(&pool->lock);
#endif
        pthread_mutex_unlock(&pool->busy);
        return;
    }
#endif
    for (w = 0; w < pool->threads; ++w) fn(arg, w); /* no threads, or the pool is busy: the same split, here */
}
