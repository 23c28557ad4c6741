/* gemv_bound.c - the int4 GEMV kernels alone against the DRAM read probe, in one process.
 *
 * Built and run by benchmarks/gemv_bound.py (links the built libnano and membw.c):
 *   gemv_bound THREADS ROUNDS LAYERS
 * Weights: LAYERS nano-1-shaped blocks (q, k, v, o, gate, up, down; int4 group 32 with fp16
 * scales and mins, as `nano quantize` writes them; random codes), far beyond the L3. A pass
 * runs decode's GEMV sequence over them (one activation row; q/k/v and gate/up fused in one
 * dispatch each, as kernels/engine/forward.c does) and nothing else. Each round: one pass,
 * then the probe (membw.c, same thread count, 1 GiB freshly allocated and advised for huge
 * pages, like bench_engine.dram_probe). Ratio of a pass = its GB/s / mean of the probes
 * either side. Prints one line per round: "pass_gbs probe_gbs ratio". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "nano_kernels.h"

double nano_membw_read(const void *buf, size_t bytes, int threads, int reps);

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
    double bytes = 0;
    unsigned s = 1;
    for (int l = 0; l < NL; l++)
        for (int j = 0; j < 7; j++) {
            nano_q4_matrix *w = &W[l * 7 + j];
            const int n = shapes[j][0], k = shapes[j][1];
            const size_t nb = (size_t)n * k / 2, ng = (size_t)n * (k / 32);
            uint8_t *q = region(nb);
            uint16_t *sc = region(ng * 2), *mn = region(ng * 2);
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
        const double t0 = now();
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
        const double g = bytes / (now() - t0) / 1e9, after = probe(nt);
        printf("%.3f %.3f %.4f\n", g, after, g / ((before + after) / 2));
        fflush(stdout);
        before = after;
    }
    nano_pool_free(pool);
    return 0;
}
