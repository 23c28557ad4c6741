/* gemv_bound.c - the int4 GEMV kernels alone against the DRAM read probe, in one process.
 *
 * Built and run by benchmarks/gemv_bound.py (links the built libnano and membw.c):
 *   gemv_bound THREADS ROUNDS LAYERS
 * Weights: LAYERS nano-1-shaped blocks (q, k, v, o, gate, up, down; int4 group 32 with fp16
 * scales and mins, as `nano quantize` writes them; random codes), far beyond the L3, laid one
 * after another in one arena advised for huge pages (as the engine's --no-mmap copy of a .nano
 * file is). Each round, in a rotating order so that none always follows the probe:
 *   - a GEMV pass: decode's GEMV sequence over all layers (one activation row; q/k/v and
 *     gate/up fused in one dispatch each, as kernels/engine/forward.c does) and nothing else;
 *   - a plain read of the same buffers with wide loads on the same pool (each thread its share
 *     of every buffer, summed so the loads stay): what a stream with no arithmetic gets from
 *     these very pages;
 *   - the same plain read with the GEMV's software prefetch (every 64-byte line, GEMV_PF bytes
 *     ahead, T0): what the prefetch alone costs a plain read;
 * then the probe (membw.c, same thread count, 1 GiB freshly allocated and advised for huge
 * pages, like bench_engine.dram_probe). The GEMV's ratio to the bound = its GB/s / mean of the
 * probes either side of the round.
 * Prints one line per round: "gemv_gbs probe_gbs ratio plain_gbs plain_prefetch_gbs". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "nano_kernels.h"

double nano_membw_read(const void *buf, size_t bytes, int threads, int reps);

#define GEMV_PF 2048 /* as kernels/src/q4_avx2.c */

typedef long long v4i __attribute__((vector_size(32)));

typedef struct {
    const nano_q4_matrix *w;
    int count, prefetch;
    long long sink[256];
} plain_job;

/* thread tid's share of one buffer, 128-byte steps */
static v4i read_part(const uint8_t *p, size_t n, int tid, int nth, int prefetch, v4i acc) {
    const size_t per = (n / nth) & ~(size_t)127, lo = (size_t)tid * per;
    const size_t hi = tid == nth - 1 ? n & ~(size_t)127 : lo + per;
    for (size_t o = lo; o < hi; o += 128) {
        if (prefetch) {
            __builtin_prefetch(p + o + GEMV_PF, 0, 3);
            __builtin_prefetch(p + o + GEMV_PF + 64, 0, 3);
        }
        const v4i *v = (const v4i *)(p + o);
        acc += v[0] + v[1] + v[2] + v[3];
    }
    return acc;
}

static void plain_fn(void *arg, int tid, int nth) {
    plain_job *j = arg;
    v4i acc = {0};
    for (int m = 0; m < j->count; m++) {
        const nano_q4_matrix *w = &j->w[m];
        const size_t ng = (size_t)w->n * (w->k / 32);
        acc = read_part(w->qweight, (size_t)w->n * w->k / 2, tid, nth, j->prefetch, acc);
        acc = read_part((const uint8_t *)w->scales, ng * 2, tid, nth, j->prefetch, acc);
        acc = read_part((const uint8_t *)w->mins, ng * 2, tid, nth, j->prefetch, acc);
    }
    j->sink[tid & 255] = acc[0] + acc[1] + acc[2] + acc[3];
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *region(size_t n) {
    void *p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
    if (!p) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    return p;
}

/* one 2 MiB-aligned region advised for transparent huge pages, handed out in 128-byte steps */
static uint8_t *arena, *arena_end;

static size_t up128(size_t n) { return (n + 127) / 128 * 128; }

static void *carve(size_t n) {
    n = up128(n);
    if ((size_t)(arena_end - arena) < n) {
        fprintf(stderr, "error: arena exhausted\n");
        exit(1);
    }
    void *p = arena;
    arena += n;
    return p;
}

static double probe(int threads) {
    const size_t n = (size_t)1 << 30;
    char *b = aligned_alloc((size_t)2 << 20, n);
    if (!b) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    madvise(b, n, MADV_HUGEPAGE);
    memset(b, 1, n);
    const double g = nano_membw_read(b, n, threads, 1);
    free(b);
    return g;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: gemv_bound THREADS ROUNDS LAYERS\n");
        return 2;
    }
    const int nt = atoi(argv[1]), rounds = atoi(argv[2]), NL = atoi(argv[3]);
    if (nt < 1 || rounds < 1 || NL < 1) {
        fprintf(stderr, "error: THREADS, ROUNDS and LAYERS must be >= 1\n");
        return 2;
    }
    static const int shapes[7][2] = {{2048, 2048}, {512, 2048}, {512, 2048}, {2048, 2048},
                                     {9856, 2048}, {9856, 2048}, {2048, 9856}};
    nano_q4_matrix *W = calloc((size_t)NL * 7, sizeof *W);
    size_t total = 0;
    for (int j = 0; j < 7; j++) /* codes + scales + mins of one layer, as carve() hands them out */
        total += up128((size_t)shapes[j][0] * shapes[j][1] / 2) +
                 2 * up128((size_t)shapes[j][0] * (shapes[j][1] / 32) * 2);
    total = (total * NL + ((size_t)2 << 20) - 1) / ((size_t)2 << 20) * ((size_t)2 << 20);
    arena = aligned_alloc((size_t)2 << 20, total);
    if (!W || !arena) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    madvise(arena, total, MADV_HUGEPAGE); /* advice only: 4 KiB pages where THP is off */
    arena_end = arena + total;
    double bytes = 0;
    unsigned s = 1;
    for (int l = 0; l < NL; l++)
        for (int j = 0; j < 7; j++) {
            nano_q4_matrix *w = &W[l * 7 + j];
            const int n = shapes[j][0], k = shapes[j][1];
            const size_t nb = (size_t)n * k / 2, ng = (size_t)n * (k / 32);
            uint8_t *q = carve(nb);
            uint16_t *sc = carve(ng * 2), *mn = carve(ng * 2);
            for (size_t i = 0; i < nb; i++) q[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
            for (size_t i = 0; i < ng; i++) {
                sc[i] = (uint16_t)(0x2000 + (((s = s * 1103515245u + 12345u) >> 16) & 0xff));
                mn[i] = (uint16_t)(0xA000 + (((s = s * 1103515245u + 12345u) >> 16) & 0xff));
            }
            w->qweight = q, w->scales = sc, w->mins = mn;
            w->n = n, w->k = k, w->group_size = 32;
            bytes += (double)nb + 4.0 * ng;
        }
    nano_pool *pool = nano_pool_create(nt);
    float *x = region(sizeof(float) * 9856), *y = region(sizeof(float) * 9856 * 2);
    for (int i = 0; i < 9856; i++) x[i] = (float)((i * 7919) % 13 - 6);
    const size_t ab = nano_q8_act_bytes(1, 9856);
    nano_q8_act a2k, a10k;
    nano_q8_act_init(&a2k, region(ab), ab, 1, 2048);
    nano_q8_act_init(&a10k, region(ab), ab, 1, 9856);
    if (!pool || nano_quantize_act_q8(x, 1, 2048, &a2k, pool) ||
        nano_quantize_act_q8(x, 1, 9856, &a10k, pool)) {
        fprintf(stderr, "error: kernel set-up failed\n");
        return 1;
    }
    printf("bytes %.0f\n", bytes);
    double before = probe(nt);
    for (int r = 0; r < rounds; r++) {
        double gbs[3]; /* GEMV pass, plain read, plain read + prefetch */
        for (int i = 0; i < 3; i++) {
            const int which = (i + r) % 3;
            const double t0 = now();
            if (which == 0) {
                for (int l = 0; l < NL; l++) {
                    const nano_q4_matrix *qkv[3] = {&W[l * 7], &W[l * 7 + 1], &W[l * 7 + 2]};
                    float *ys[3] = {y, y + 2048, y + 2560};
                    const nano_q4_matrix *gu[2] = {&W[l * 7 + 4], &W[l * 7 + 5]};
                    float *y2[2] = {y, y + 9856};
                    if (nano_q4_matmul_q8act_multi(qkv, ys, 3, &a2k, pool) ||
                        nano_q4_matmul_q8act(&W[l * 7 + 3], &a2k, y, pool) ||
                        nano_q4_matmul_q8act_multi(gu, y2, 2, &a2k, pool) ||
                        nano_q4_matmul_q8act(&W[l * 7 + 6], &a10k, y, pool)) {
                        fprintf(stderr, "error: kernel failed\n");
                        return 1;
                    }
                }
            } else {
                plain_job j = {W, NL * 7, which == 2, {0}};
                if (nano_pool_run(pool, plain_fn, &j)) {
                    fprintf(stderr, "error: pool failed\n");
                    return 1;
                }
            }
            gbs[which] = bytes / (now() - t0) / 1e9;
        }
        const double after = probe(nt);
        printf("%.3f %.3f %.4f %.3f %.3f\n", gbs[0], after, gbs[0] / ((before + after) / 2), gbs[1],
               gbs[2]);
        fflush(stdout);
        before = after;
    }
    nano_pool_free(pool);
    return 0;
}
