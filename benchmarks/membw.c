/* membw.c - memory read-bandwidth probe for bench_kernels.py.
 *
 * nano_membw_read(buf, bytes, threads, reps) reads `bytes` (split evenly over
 * `threads` pthreads) `reps` times with wide vector loads summed into a few
 * accumulators (so the loads cannot be dropped) and returns the best GB/s.
 * Built by the benchmark with `cc -O2 -march=native -shared -fPIC -pthread`. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef long long v4i __attribute__((vector_size(32)));

typedef struct {
    const char *p;
    size_t n;
    long long sink;
} part_t;

static void *reader(void *arg) {
    part_t *t = (part_t *)arg;
    const v4i *v = (const v4i *)t->p;
    const size_t nv = t->n / sizeof(v4i);
    v4i a = {0}, b = {0}, c = {0}, d = {0};
    for (size_t i = 0; i + 4 <= nv; i += 4) {
        a += v[i]; b += v[i + 1]; c += v[i + 2]; d += v[i + 3];
    }
    a += b + c + d;
    t->sink = a[0] + a[1] + a[2] + a[3];
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double nano_membw_read(const void *buf, size_t bytes, int threads, int reps) {
    if (threads < 1 || threads > 64) return -1.0;
    part_t parts[64];
    pthread_t tids[64];
    const size_t per = (bytes / threads) & ~(size_t)127;
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        for (int t = 0; t < threads; t++) {
            parts[t].p = (const char *)buf + (size_t)t * per;
            parts[t].n = per;
            if (t) pthread_create(&tids[t], NULL, reader, &parts[t]);
        }
        reader(&parts[0]);
        for (int t = 1; t < threads; t++) pthread_join(tids[t], NULL);
        const double gbs = (double)per * threads / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}
