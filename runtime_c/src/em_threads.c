/* The worker pool (em_threads.h): threads-1 pthreads plus the caller, sharing fork-join jobs of `chunks`
 * independent pieces.
 *
 * Handoff. A job is published by storing its chunk count in `ticket`; every participant (the caller
 * included) claims chunks by decrementing `ticket` with a compare-and-swap and counts finished chunks in
 * `done`; the caller returns when done == chunks. Chunks are claimed, not assigned, so a worker that the OS
 * has descheduled (a loaded machine) or that is still asleep simply claims nothing: the caller runs its
 * share, and waits only for chunks already started. Which thread runs a chunk never changes its result
 * (em_threads.h), so the outputs stay the same bits. The job's fn / arg / chunks are read only after a
 * successful claim: until that chunk is done the caller cannot finish the job, so they cannot change under
 * the reader; a claim is always of the current job (the ticket's value is the job's state, nothing else).
 *
 * Latency. Nodes of the models this runtime is for last 1-40 µs, and a wake-up through a condition
 * variable (a futex system call) costs several. So after each job a worker spins on `ticket` (relaxed
 * loads with a pause instruction) for EM_POOL_SPIN_NS, then sleeps on the condition variable: an idle pool
 * costs nothing. A sleeper is registered in `sleepers` under the mutex before it re-checks the ticket, and
 * the caller reads `sleepers` after storing the ticket (both sequentially consistent), so either the
 * worker sees the job or the caller sees the sleeper and broadcasts: no lost wake-up.
 *
 * Atomics are GCC / Clang's __atomic builtins (the compilers of every board profile; C99 has no atomics);
 * other compilers get the same protocol under the mutex with condition variables (slower handoff, same
 * results). One job at a time per pool: `busy` is taken with a trylock, and a caller that finds the pool
 * busy (two contexts sharing one pool, or a node split inside a task lane) runs every chunk itself. */
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

#if EM_THREADS && (defined(__GNUC__) || defined(__clang__))
#define EM_POOL_ATOMICS 1
#define EM_LOAD_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define EM_LOAD_ACQUIRE(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define EM_LOAD_SEQ(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define EM_STORE_RELAXED(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define EM_STORE_SEQ(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define EM_ADD_SEQ(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define EM_ADD_RELEASE(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELEASE)
#define EM_CAS_ACQUIRE(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)
#else
#define EM_POOL_ATOMICS 0
#endif

/* How long a worker polls for the next job after one before it sleeps. A run of a small model is a chain of
 * jobs a few µs apart, and benchmarks run back to back; 100 µs covers both and is short next to a time slice. */
#ifndef EM_POOL_SPIN_NS
#define EM_POOL_SPIN_NS 100000u
#endif
/* Polls between clock reads while spinning, and before the caller, waiting for a started chunk, yields its
 * core (a worker may have been descheduled mid-chunk on a loaded machine). */
#define EM_POOL_POLLS 256u

#if EM_POOL_ATOMICS
/* A pause in a spin loop: lets the sibling hyper-thread run and saves power; a no-op elsewhere. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && (defined(__ARM_ARCH_7A__) || defined(__ARM_ARCH_8A__) || \
                                                     (defined(__ARM_ARCH) && __ARM_ARCH >= 7)))
    __asm__ __volatile__("yield" ::: "memory");
#endif
}
#endif

typedef struct em_pool_worker {
    em_pool *pool;
    uint32_t id;
} em_pool_worker;

/* The fields every participant writes (ticket, done) each get a cache line of their own: the claims of
 * one would otherwise invalidate the other's line on every chunk. */
#define EM_POOL_PAD 64

struct em_pool {
    em_allocator allocator;
    uint32_t threads; /* workers, the caller included */
#if EM_THREADS
    pthread_mutex_t lock;
    pthread_cond_t wake, finished;
    pthread_mutex_t busy;    /* held for the duration of a job */
    pthread_t *handles;      /* [threads - 1] */
    em_pool_worker *workers; /* [threads - 1] */
    uint32_t started;        /* threads created (for em_pool_free after a partial create) */
    /* the current job, written by the caller only while no chunk of it can be claimed */
    em_pool_fn fn;
    void *arg;
    uint32_t chunks;
    uint32_t first; /* claimed chunk c runs as fn(arg, first + c): em_pool_run keeps chunk 0 on the caller */
    int stop;
    uint32_t sleepers; /* workers waiting on `wake` (changed under lock) */
    char pad0[EM_POOL_PAD];
    uint32_t ticket; /* chunks of the current job not yet claimed; chunk chunks - ticket is next */
    char pad1[EM_POOL_PAD];
    uint32_t done; /* chunks of the current job finished */
    char pad2[EM_POOL_PAD];
#endif
};

#if EM_THREADS
#if EM_POOL_ATOMICS
/* Claims and runs chunks of the current job until none is left unclaimed. */
static void claim_chunks(em_pool *pool)
{
    uint32_t t = EM_LOAD_RELAXED(&pool->ticket);
    while (t != 0) {
        if (EM_CAS_ACQUIRE(&pool->ticket, &t, t - 1u)) { /* t: the value seen; on failure, the new value */
            pool->fn(pool->arg, pool->first + pool->chunks - t);
            EM_ADD_RELEASE(&pool->done, 1u);
            t = EM_LOAD_RELAXED(&pool->ticket);
        }
    }
}

/* Waits until a job has unclaimed chunks or the pool stops: spins EM_POOL_SPIN_NS, then sleeps. */
static void wait_for_job(em_pool *pool)
{
    const uint64_t start = em_platform_now_ns();
    uint32_t polls = 0;
    while (EM_LOAD_RELAXED(&pool->ticket) == 0 && !EM_LOAD_RELAXED(&pool->stop)) {
        cpu_relax();
        if (++polls % EM_POOL_POLLS != 0) continue;
        if (em_platform_now_ns() - start < EM_POOL_SPIN_NS) continue;
        pthread_mutex_lock(&pool->lock);
        EM_ADD_SEQ(&pool->sleepers, 1u);
        while (EM_LOAD_SEQ(&pool->ticket) == 0 && !EM_LOAD_SEQ(&pool->stop)) pthread_cond_wait(&pool->wake, &pool->lock);
        EM_ADD_SEQ(&pool->sleepers, (uint32_t)-1);
        pthread_mutex_unlock(&pool->lock);
        return;
    }
}

static void *worker_main(void *p)
{
    em_pool *pool = ((em_pool_worker *)p)->pool;
    for (;;) {
        wait_for_job(pool);
        if (EM_LOAD_ACQUIRE(&pool->stop)) return NULL;
        claim_chunks(pool);
    }
}

/* `own`: the caller first runs fn(arg, own_chunk) itself (em_pool_run's chunk 0), then claims with the rest. */
static void run_job(em_pool *pool, int own, uint32_t own_chunk)
{
    uint32_t polls = 0;
    EM_STORE_RELAXED(&pool->done, 0u);
    EM_STORE_SEQ(&pool->ticket, pool->chunks); /* publishes fn / arg / chunks / done to the claimers */
    if (EM_LOAD_SEQ(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
    }
    if (own) pool->fn(pool->arg, own_chunk);
    claim_chunks(pool);
    while (EM_LOAD_ACQUIRE(&pool->done) != pool->chunks) { /* chunks other workers started */
        cpu_relax();
        if (++polls >= EM_POOL_POLLS) sched_yield();
    }
}
#else
/* The same protocol under the mutex. */
static void claim_chunks_locked(em_pool *pool)
{
    while (pool->ticket != 0) {
        const uint32_t chunk = pool->chunks - pool->ticket--;
        pthread_mutex_unlock(&pool->lock);
        pool->fn(pool->arg, pool->first + chunk);
        pthread_mutex_lock(&pool->lock);
        if (++pool->done == pool->chunks) pthread_cond_broadcast(&pool->finished);
    }
}

static void *worker_main(void *p)
{
    em_pool *pool = ((em_pool_worker *)p)->pool;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->ticket == 0 && !pool->stop) pthread_cond_wait(&pool->wake, &pool->lock);
        if (pool->stop) break;
        claim_chunks_locked(pool);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static void run_job(em_pool *pool, int own, uint32_t own_chunk)
{
    if (own) { /* published first, so the workers start on theirs while the caller runs its own */
        pthread_mutex_lock(&pool->lock);
        pool->done = 0;
        pool->ticket = pool->chunks;
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
        pool->fn(pool->arg, own_chunk);
        pthread_mutex_lock(&pool->lock);
    } else {
        pthread_mutex_lock(&pool->lock);
        pool->done = 0;
        pool->ticket = pool->chunks;
        pthread_cond_broadcast(&pool->wake);
    }
    claim_chunks_locked(pool);
    while (pool->done != pool->chunks) pthread_cond_wait(&pool->finished, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}
#endif
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
        pthread_cond_init(&pool->finished, NULL);
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
#if EM_POOL_ATOMICS
        EM_STORE_SEQ(&pool->stop, 1);
#else
        pool->stop = 1;
#endif
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
        for (i = 0; i < pool->started; ++i) pthread_join(pool->handles[i], NULL);
        pthread_cond_destroy(&pool->finished);
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

void em_pool_run_chunks(em_pool *pool, em_pool_fn fn, void *arg, uint32_t chunks)
{
    uint32_t c;
#if EM_THREADS
    if (pool->threads > 1 && chunks > 1 && pthread_mutex_trylock(&pool->busy) == 0) {
        pool->fn = fn;
        pool->arg = arg;
        pool->chunks = chunks;
        pool->first = 0;
        run_job(pool, 0, 0);
        pthread_mutex_unlock(&pool->busy);
        return;
    }
#endif
    for (c = 0; c < chunks; ++c) fn(arg, c); /* no threads, one chunk, or the pool is busy: every chunk here */
}

/* Chunk 0 always on the calling thread, chunks 1.. claimed by the workers (and by the caller once its own is
 * done, so a sleeping or descheduled worker delays nothing). Why: em_run_all's task lanes are chunks, and a
 * lane whose chunk went to whichever thread claimed first changed cores from run to run; its activations and
 * tables were then written on one core in one run and on the other in the next, each cache line crossing
 * between the cores' caches. With the caller's lane fixed (and, with 2 threads, the worker's too) they stay. */
void em_pool_run(em_pool *pool, em_pool_fn fn, void *arg)
{
#if EM_THREADS
    if (pool->threads > 1 && pthread_mutex_trylock(&pool->busy) == 0) {
        pool->fn = fn;
        pool->arg = arg;
        pool->chunks = pool->threads - 1u;
        pool->first = 1;
        run_job(pool, 1, 0);
        pthread_mutex_unlock(&pool->busy);
        return;
    }
#endif
    em_pool_run_chunks(pool, fn, arg, pool->threads);
}
