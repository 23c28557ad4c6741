/* pool.c - persistent pthread pool with dynamic chunk claiming.
 *
 * A job is n_chunks calls fn(arg, chunk, n_chunks). The caller publishes the job
 * (one atomic generation bump; sleeping workers are woken through a condition
 * variable only if there are any), then every thread, the caller included,
 * claims chunks with a CAS on one 64-bit word (generation << 32 | next chunk)
 * until none are left; the caller returns when all chunks are done. A worker
 * that is descheduled (oversubscribed CPU, a slow little core) therefore never
 * holds up the job: the others take its chunks. Workers spin briefly for the
 * next job, then sleep. No allocation or locking on the hot path.
 *
 * Waiting for the last chunks: a chunk already claimed cannot be taken back, so when
 * the thread holding it is preempted (more runnable threads than cores: another
 * process, or another library's spinning thread pool in the same process) the job
 * waits for it. A caller that spins (or sched_yield()s, which returns at once when
 * its own core has nothing else to run) keeps its core busy, and the preempted
 * thread stays queued behind whatever took its core for a whole time slice
 * (milliseconds, against a job of ~0.1-1 ms: 2 threads measured slower than 1).
 * So the caller spins only briefly (~50 us here: longer than the last chunk normally
 * takes) and then sleeps on a condition variable: its core is free for the scheduler
 * to run the preempted thread (or whatever preempted it) there, and the thread that
 * finishes the last chunk wakes the caller. On an idle machine nothing changes (the
 * wait is shorter than the spin); with both cores taken by other processes its effect
 * was within the noise (nano-1.up GEMV, 2 threads, 7.5-8.8 GB/s either way). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "kernels_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() ((void)0)
#endif

#define NANO_POOL_MAX_THREADS 256
#define NANO_POOL_SPIN 20000 /* ~0.1-1 ms of pause before sleeping / yielding */
#define NANO_POOL_WAIT_SPIN 2000 /* caller: ~20-100 us of pause for the last chunks, then sleep */

struct worker_arg {
    nano_pool *pool;
    int tid;
};

struct nano_pool {
    int n;
    pthread_t *threads;
    struct worker_arg *args;
    atomic_uint gen;          /* bumped once per job: wakes the workers           */
    atomic_ullong claim;      /* generation | chunk count | next chunk (see CLAIM)  */
    atomic_int done;          /* chunks finished in the current job               */
    atomic_int sleepers;
    atomic_int stop;
    atomic_int waiting;       /* the caller sleeps on done_cv until done == chunks  */
    nano_pool_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t done_cv;
};

/* The claim word holds everything a thread needs to decide whether a chunk is left:
 * bits 40..63 generation (low 24 bits), 20..39 chunk count, 0..19 next chunk. fn/arg
 * are read only after a chunk of generation g was claimed: job g cannot finish (and
 * the caller cannot publish the next job) before that chunk is done. */
#define CLAIM(g, n, next) (((unsigned long long)((g) & 0xFFFFFFu) << 40) | \
                           ((unsigned long long)(n) << 20) | (unsigned long long)(next))

static void work_on(nano_pool *pool, unsigned g) {
    for (;;) {
        unsigned long long c = atomic_load_explicit(&pool->claim, memory_order_acquire);
        const int n = (int)((c >> 20) & 0xFFFFFu), next = (int)(c & 0xFFFFFu);
        if ((unsigned)(c >> 40) != (g & 0xFFFFFFu) || next >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&pool->claim, &c, c + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        pool->fn(pool->arg, next, n);
        /* seq_cst: pairs with the caller's store to waiting before its last check */
        if (atomic_fetch_add(&pool->done, 1) + 1 == n && atomic_load(&pool->waiting)) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done_cv);
            pthread_mutex_unlock(&pool->mu);
        }
    }
}

static void *worker_main(void *p) {
    struct worker_arg *wa = (struct worker_arg *)p;
    nano_pool *pool = wa->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        for (int i = 0; g == seen && i < NANO_POOL_SPIN; i++) {
            CPU_RELAX();
            g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            while ((g = atomic_load(&pool->gen)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop)) break;
        seen = g;
        work_on(pool, g);
    }
    return NULL;
}

NANO_API nano_pool *nano_pool_create(int n_threads) {
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > NANO_POOL_MAX_THREADS) return NULL;
    nano_pool *pool = (nano_pool *)calloc(1, sizeof(*pool));
    if (!pool) return NULL;
    pool->n = 1;
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->claim, 0);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->stop, 0);
    atomic_init(&pool->waiting, 0);
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    if (n_threads > 1) {
        pool->threads = (pthread_t *)calloc((size_t)n_threads, sizeof(pthread_t));
        pool->args = (struct worker_arg *)calloc((size_t)n_threads, sizeof(struct worker_arg));
        if (!pool->threads || !pool->args) {
            nano_pool_free(pool);
            return NULL;
        }
        for (int t = 1; t < n_threads; t++) {
            pool->args[t].pool = pool;
            pool->args[t].tid = t;
            if (pthread_create(&pool->threads[t], NULL, worker_main, &pool->args[t]) != 0) {
                nano_pool_free(pool); /* joins the pool->n - 1 workers started */
                return NULL;
            }
            pool->n = t + 1;
        }
    }
    return pool;
}

NANO_API void nano_pool_free(nano_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    atomic_fetch_add(&pool->gen, 1);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int t = 1; t < pool->n; t++) pthread_join(pool->threads[t], NULL);
    free(pool->threads);
    free(pool->args);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    pthread_cond_destroy(&pool->done_cv);
    free(pool);
}

NANO_API int nano_pool_size(const nano_pool *pool) { return pool ? pool->n : 1; }

int nano_pool_run_chunks(nano_pool *pool, nano_pool_fn fn, void *arg, int n_chunks) {
    if (!fn) return NANO_K_ERR_NULL;
    if (n_chunks <= 0) return NANO_K_OK;
    if (n_chunks > 0xFFFFF) return NANO_K_ERR_SHAPE;
    if (!pool || pool->n == 1 || n_chunks == 1) {
        for (int c = 0; c < n_chunks; c++) fn(arg, c, n_chunks);
        return NANO_K_OK;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    const unsigned g = atomic_load_explicit(&pool->gen, memory_order_relaxed) + 1;
    atomic_store(&pool->claim, CLAIM(g, n_chunks, 0)); /* releases fn/arg */
    atomic_store(&pool->gen, g); /* seq_cst: pairs with the sleepers check below */
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
    }
    work_on(pool, g);
    for (int i = 0; i < NANO_POOL_WAIT_SPIN; i++) {
        if (atomic_load_explicit(&pool->done, memory_order_acquire) >= n_chunks) return NANO_K_OK;
        CPU_RELAX();
    }
    /* a chunk is held by a thread that is slow or preempted: give our core away */
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->waiting, 1); /* seq_cst: pairs with the finisher's fetch_add */
    while (atomic_load(&pool->done) < n_chunks) pthread_cond_wait(&pool->done_cv, &pool->mu);
    atomic_store(&pool->waiting, 0);
    pthread_mutex_unlock(&pool->mu);
    return NANO_K_OK;
}

NANO_API int nano_pool_run(nano_pool *pool, nano_pool_fn fn, void *arg) {
    return nano_pool_run_chunks(pool, fn, arg, nano_pool_size(pool));
}
