/* fuzz_load.c - mutation fuzzer for nano_model_load (build with
 * -fsanitize=address,undefined; tests/test_engine_fuzz.py does).
 *
 *   fuzz_load SEED.nano N [RNG_SEED]
 *
 * Writes N mutated copies of SEED (bit flips and byte overwrites, mostly inside
 * the JSON header; digit edits; truncations; header-length edits) into a memfd,
 * loads each through its /proc/self/fd path, and when a load succeeds runs a
 * context with a few tokens through the forward pass and one generate step.
 * Every load must either succeed or return a non-zero status with a message;
 * a crash, a sanitizer report or a leak fails. Prints one summary line.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nano.h"

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static size_t mutate(uint8_t *b, size_t n, size_t hdr_end) {
    int kind = (int)(rnd() % 10);
    size_t span = hdr_end > 8 ? hdr_end : n;
    switch (kind) {
    case 0: /* truncate anywhere */
        return (size_t)(rnd() % n);
    case 1: { /* header length field */
        b[rnd() % 8] ^= (uint8_t)(1u << (rnd() % 8));
        return n;
    }
    case 2: case 3: { /* digit edit inside the header (shapes, offsets, config numbers) */
        for (int tries = 0; tries < 64; tries++) {
            size_t i = 8 + rnd() % (span - 8);
            if (b[i] >= '0' && b[i] <= '9') {
                static const char repl[] = "0123456789-.e9";
                b[i] = (uint8_t)repl[rnd() % (sizeof repl - 1)];
                break;
            }
        }
        return n;
    }
    case 4: case 5: case 6: { /* a few random bytes inside the header */
        int k = 1 + (int)(rnd() % 4);
        for (int j = 0; j < k; j++) {
            size_t i = 8 + rnd() % (span - 8);
            static const char tok[] = "{}[]\",:\\0tfn ";
            b[i] = (rnd() & 1) ? (uint8_t)tok[rnd() % (sizeof tok - 1)] : (uint8_t)rnd();
        }
        return n;
    }
    case 7: { /* truncate inside the header */
        return 8 + (size_t)(rnd() % (span - 8));
    }
    default: { /* bit flips anywhere (weights, norms) */
        int k = 1 + (int)(rnd() % 8);
        for (int j = 0; j < k; j++) b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
        return n;
    }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SEED.nano N [RNG_SEED]\n", argv[0]);
        return 2;
    }
    size_t n;
    uint8_t *seed = read_file(argv[1], &n);
    if (!seed || n < 16) { fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    long iters = atol(argv[2]);
    if (argc > 3) rng_state ^= (uint64_t)atoll(argv[3]) * 0x9E3779B97F4A7C15ULL;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | seed[i];
    size_t hdr_end = 8 + (size_t)hl < n ? 8 + (size_t)hl : n;

    /* the unmutated seed must load */
    nano_model *m = NULL;
    if (nano_model_load(argv[1], NULL, &m) != NANO_OK) {
        fprintf(stderr, "seed does not load: %s\n", nano_last_error());
        return 2;
    }
    nano_model_free(m);

    int fd = memfd_create("nano_fuzz", 0);
    if (fd < 0) { perror("memfd_create"); return 2; }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    uint8_t *buf = malloc(n);
    long ok = 0, rejected = 0, no_msg = 0, ran = 0;
    for (long it = 0; it < iters; it++) {
        memcpy(buf, seed, n);
        size_t len = mutate(buf, n, hdr_end);
        if (ftruncate(fd, 0) || pwrite(fd, buf, len, 0) != (ssize_t)len) { perror("write"); return 2; }
        int rc = nano_model_load(path, NULL, &m);
        if (rc != NANO_OK) {
            rejected++;
            if (!nano_last_error()[0] || m != NULL) no_msg++;
            continue;
        }
        ok++;
        nano_context_params cp = nano_context_default_params();
        cp.n_ctx = 16;
        cp.n_threads = 1;
        cp.n_batch = 4;
        nano_context *ctx = NULL;
        if (nano_context_create(m, &cp, &ctx) == NANO_OK) {
            nano_model_info info;
            nano_model_get_info(m, &info);
            int32_t toks[6];
            for (int i = 0; i < 6; i++) toks[i] = (int32_t)(rnd() % (uint64_t)info.vocab_size);
            if (nano_eval(ctx, toks, 6, NULL) == NANO_OK) {
                nano_generate_params gp = nano_generate_default_params();
                gp.max_tokens = 2;
                gp.sampler.temperature = 0.8f;
                gp.sampler.top_p = 0.9f;
                int32_t out[2];
                nano_generate_result res;
                nano_generate(ctx, NULL, 0, &gp, out, 2, &res);
                ran++;
            }
            nano_context_free(ctx);
        }
        nano_model_free(m);
    }
    close(fd);
    free(buf);
    free(seed);
    printf("fuzz: %ld files, %ld rejected with a message, %ld loaded (%ld ran), %ld without message\n",
           iters, rejected - no_msg, ok, ran, no_msg);
    return no_msg ? 1 : 0;
}
