/* pool.c - persistent pthread pool: the caller is thread 0, n-1 workers wait
 * for a generation counter to change (spinning briefly, then sleeping on a
 * condition variable). A job costs one atomic increment to start and one
 * atomic counter to finish; the mutex is touched only to wake sleepers. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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
#define NANO_POOL_SPIN 20000 /* ~0.1-1 ms of pause before sleeping */

struct nano_pool {
    int n;
    pthread_t *threads;
    struct worker_arg *args;
    atomic_uint gen;
    atomic_int done;
    atomic_int sleepers;
    atomic_int stop;
    nano_pool_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct worker_arg {
    nano_pool *pool;
    int tid;
};

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
        pool->fn(pool->arg, wa->tid, pool->n);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
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
    pool->n = n_threads;
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->stop, 0);
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    if (n_threads > 1) {
        pool->threads = (pthread_t *)calloc((size_t)n_threads, sizeof(pthread_t));
        pool->args = (struct worker_arg *)calloc((size_t)n_threads, sizeof(struct worker_arg));
        if (!pool->threads || !pool->args) goto fail;
        for (int t = 1; t < n_threads; t++) {
            pool->args[t].pool = pool;
            pool->args[t].tid = t;
            if (pthread_create(&pool->threads[t], NULL, worker_main, &pool->args[t]) != 0) {
                pool->n = t; /* join the ones started */
                nano_pool_free(pool);
                return NULL;
            }
        }
    }
    return pool;
fail:
    free(pool->threads);
    free(pool->args);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool);
    return NULL;
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
    free(pool);
}

NANO_API int nano_pool_size(const nano_pool *pool) { return pool ? pool->n : 1; }

NANO_API int nano_pool_run(nano_pool *pool, nano_pool_fn fn, void *arg) {
    if (!fn) return NANO_K_ERR_NULL;
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return NANO_K_OK;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    atomic_fetch_add(&pool->gen, 1); /* seq_cst: pairs with the sleepers check below */
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
    }
    fn(arg, 0, pool->n);
    const int want = pool->n - 1;
    for (long i = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < want; i++) {
        if (i < NANO_POOL_SPIN) CPU_RELAX();
        else sched_yield();
    }
    return NANO_K_OK;
}
