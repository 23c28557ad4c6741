/* test_kernels.c - every available variant against the scalar reference.
 *
 * fp32 paths: |y - y_ref| <= 5e-5 * sum_k |W x| + 1e-6 (float reassociation).
 * int8 paths: on integer-valued data (power-of-two scales, integer mins,
 *             activations already on the int8 grid) every term is exact in
 *             fp32, so results must be bit-identical; activation quantization
 *             is bit-identical on any finite input.
 * Prints "available: <v>..." and "selected: <v>"; exit status 0 = pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nano_kernels.h"

static int g_fail = 0;
#define CHECK(cond, ...)                                           \
    do {                                                           \
        if (!(cond)) {                                             \
            g_fail++;                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
            fprintf(stderr, __VA_ARGS__);                          \
            fprintf(stderr, "\n");                                 \
        }                                                          \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float frand(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

typedef struct {
    nano_q4_matrix w;
    uint8_t *qw;
    uint16_t *sc, *mn;
} q4buf;

static void make_q4(q4buf *b, int n, int k, int g, int asym, int exact) {
    const int ng = (k + g - 1) / g;
    b->qw = malloc((size_t)n * k / 2);
    b->sc = malloc((size_t)n * ng * 2);
    b->mn = asym ? malloc((size_t)n * ng * 2) : NULL;
    for (size_t i = 0; i < (size_t)n * k / 2; i++) b->qw[i] = (uint8_t)rnd();
    for (size_t i = 0; i < (size_t)n * ng; i++) {
        const float s = exact ? ldexpf(1.0f, (int)(rnd() % 3) - 1) : 0.01f + 0.02f * (frand() + 1.0f);
        b->sc[i] = nano_fp32_to_fp16(s);
        if (asym) b->mn[i] = nano_fp32_to_fp16(exact ? (float)((int)(rnd() % 17) - 8) : -8.0f * s * (1.0f + 0.1f * frand()));
    }
    b->w = (nano_q4_matrix){b->qw, b->sc, b->mn, n, k, g};
}
static void free_q4(q4buf *b) { free(b->qw); free(b->sc); free(b->mn); }

static float *make_x(int m, int k, int exact) {
    float *x = malloc((size_t)m * k * sizeof(float));
    for (size_t i = 0; i < (size_t)m * k; i++)
        x[i] = exact ? (float)((int)(rnd() % 255) - 127) : frand();
    if (exact) /* every block reaches |127| so the act scale is exactly 1 */
        for (size_t b = 0; b < (size_t)m * k / 32; b++) x[b * 32 + rnd() % 32] = (rnd() & 1) ? 127.0f : -127.0f;
    return x;
}

/* sum |W| |x| per output, for the fp tolerance */
static void absdot_q4(const nano_q4_matrix *w, const float *x, int m, float *out) {
    float *row = malloc((size_t)w->k * sizeof(float));
    for (int n = 0; n < w->n; n++) {
        nano_q4_dequant_row(w, n, row);
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int k = 0; k < w->k; k++) s += fabs(row[k] * x[(size_t)i * w->k + k]);
            out[(size_t)i * w->n + n] = (float)s;
        }
    }
    free(row);
}

static int nvariants(int *vs) { return nano_kernel_variant_list(vs, NANO_VARIANT_COUNT); }

static void test_q4(nano_pool *pool, int n, int k, int g, int asym, int m) {
    int vs[NANO_VARIANT_COUNT];
    const int nv = nvariants(vs);
    for (int exact = 0; exact < 2; exact++) {
        q4buf b;
        make_q4(&b, n, k, g, asym, exact);
        float *x = make_x(m, k, exact);
        float *ref = malloc((size_t)m * n * 4), *out = malloc((size_t)m * n * 4), *tol = malloc((size_t)m * n * 4);
        size_t ab = nano_q8_act_bytes(m, k);
        void *abuf = calloc(1, ab), *abuf_ref = calloc(1, ab);
        nano_q8_act act, act_ref;
        CHECK(nano_q8_act_init(&act_ref, abuf_ref, ab, m, k) == 0, "act init");
        CHECK(nano_q8_act_init(&act, abuf, ab, m, k) == 0, "act init");
        absdot_q4(&b.w, x, m, tol);
        nano_kernel_set_variant(NANO_VARIANT_SCALAR);
        /* fp32 reference */
        CHECK(nano_q4_matmul_f32(&b.w, x, ref, m, NULL) == 0, "scalar q4 f32");
        float *ref8 = malloc((size_t)m * n * 4);
        CHECK(nano_quantize_act_q8(x, m, k, &act_ref, NULL) == 0, "quant");
        CHECK(nano_q4_matmul_q8act(&b.w, &act_ref, ref8, NULL) == 0, "scalar q4 q8");
        for (int vi = 0; vi < nv; vi++) {
            nano_kernel_set_variant(vs[vi]);
            const char *vn = nano_kernel_variant_name(vs[vi]);
            CHECK(nano_q4_matmul_f32(&b.w, x, out, m, pool) == 0, "q4 f32");
            for (size_t i = 0; i < (size_t)m * n; i++)
                CHECK(fabsf(out[i] - ref[i]) <= 5e-5f * tol[i] + 1e-6f,
                      "%s q4_f32 n=%d k=%d g=%d asym=%d m=%d i=%zu: %g vs %g", vn, n, k, g, asym, m, i, out[i], ref[i]);
            CHECK(nano_quantize_act_q8(x, m, k, &act, pool) == 0, "quant");
            CHECK(memcmp(abuf, abuf_ref, ab) == 0, "%s quantize_act_q8 not bit-identical k=%d m=%d", vn, k, m);
            CHECK(nano_q4_matmul_q8act(&b.w, &act, out, pool) == 0, "q4 q8");
            for (size_t i = 0; i < (size_t)m * n; i++) {
                if (exact) CHECK(out[i] == ref8[i], "%s q4_q8 exact n=%d k=%d g=%d asym=%d m=%d i=%zu: %.9g vs %.9g", vn, n, k, g, asym, m, i, out[i], ref8[i]);
                else CHECK(fabsf(out[i] - ref8[i]) <= 5e-5f * tol[i] + 1e-6f, "%s q4_q8 n=%d k=%d g=%d i=%zu: %g vs %g", vn, n, k, g, i, out[i], ref8[i]);
                if (exact) CHECK(ref8[i] == ref[i], "scalar q8act != f32 on exact data i=%zu %g %g", i, ref8[i], ref[i]);
            }
        }
        free(ref8); free(x); free(ref); free(out); free(tol); free(abuf); free(abuf_ref);
        free_q4(&b);
    }
}

/* Several matrices on one input in one dispatch (q/k/v, gate/up): every variant, bit-identical
 * to each matrix alone on one thread, whatever the pool's split of the joint row range
 * (decode, m = 1, splits it in shrinking guided chunks; m > 1 evenly). */
static void test_q4_multi(nano_pool *pool, int m) {
    static const int ns[3] = {1000, 264, 37};
    const int k = 96;
    int vs[NANO_VARIANT_COUNT];
    const int nv = nvariants(vs);
    q4buf b[3];
    const nano_q4_matrix *ws[3];
    float *ref[3], *out[3];
    for (int i = 0; i < 3; i++) {
        make_q4(&b[i], ns[i], k, 32, i & 1, 0);
        ws[i] = &b[i].w;
        ref[i] = malloc((size_t)m * ns[i] * 4);
        out[i] = malloc((size_t)m * ns[i] * 4);
    }
    float *x = make_x(m, k, 0);
    size_t ab = nano_q8_act_bytes(m, k);
    void *abuf = calloc(1, ab);
    nano_q8_act act;
    CHECK(nano_q8_act_init(&act, abuf, ab, m, k) == 0, "act init");
    for (int vi = 0; vi < nv; vi++) {
        nano_kernel_set_variant(vs[vi]);
        CHECK(nano_quantize_act_q8(x, m, k, &act, NULL) == 0, "quant");
        for (int i = 0; i < 3; i++) CHECK(nano_q4_matmul_q8act(ws[i], &act, ref[i], NULL) == 0, "q4 q8");
        for (int i = 0; i < 3; i++) memset(out[i], 0xff, (size_t)m * ns[i] * 4); /* NaN: a row left out shows */
        CHECK(nano_q4_matmul_q8act_multi(ws, out, 3, &act, pool) == 0, "q4 q8 multi");
        for (int i = 0; i < 3; i++)
            CHECK(memcmp(out[i], ref[i], (size_t)m * ns[i] * 4) == 0, "%s q4 multi m=%d matrix %d differs",
                  nano_kernel_variant_name(vs[vi]), m, i);
    }
    for (int i = 0; i < 3; i++) {
        free_q4(&b[i]);
        free(ref[i]);
        free(out[i]);
    }
    free(x);
    free(abuf);
}

static void test_q8(nano_pool *pool, int n, int k, int m) {
    int vs[NANO_VARIANT_COUNT];
    const int nv = nvariants(vs);
    for (int exact = 0; exact < 2; exact++) {
        int8_t *qw = malloc((size_t)n * k);
        uint16_t *sc = malloc((size_t)n * k / 32 * 2);
        for (size_t i = 0; i < (size_t)n * k; i++) qw[i] = (int8_t)rnd();
        for (size_t i = 0; i < (size_t)n * k / 32; i++)
            sc[i] = nano_fp32_to_fp16(exact ? ldexpf(1.0f, (int)(rnd() % 3) - 1) : 0.001f + 0.01f * (frand() + 1));
        nano_q8_matrix w = {qw, sc, n, k};
        float *x = make_x(m, k, exact);
        float *ref = malloc((size_t)m * n * 4), *ref8 = malloc((size_t)m * n * 4), *out = malloc((size_t)m * n * 4);
        size_t ab = nano_q8_act_bytes(m, k);
        void *abuf = malloc(ab);
        nano_q8_act act;
        nano_q8_act_init(&act, abuf, ab, m, k);
        nano_kernel_set_variant(NANO_VARIANT_SCALAR);
        CHECK(nano_q8_matmul_f32(&w, x, ref, m, NULL) == 0, "q8 f32");
        nano_quantize_act_q8(x, m, k, &act, NULL);
        CHECK(nano_q8_matmul_q8act(&w, &act, ref8, NULL) == 0, "q8 q8");
        float *row = malloc((size_t)k * 4);
        for (int vi = 0; vi < nv; vi++) {
            nano_kernel_set_variant(vs[vi]);
            const char *vn = nano_kernel_variant_name(vs[vi]);
            CHECK(nano_q8_matmul_f32(&w, x, out, m, pool) == 0, "q8 f32");
            for (int nn = 0; nn < n; nn++) {
                nano_q8_dequant_row(&w, nn, row);
                for (int i = 0; i < m; i++) {
                    double t = 0;
                    for (int kk = 0; kk < k; kk++) t += fabs(row[kk] * x[(size_t)i * k + kk]);
                    const size_t o = (size_t)i * n + nn;
                    CHECK(fabsf(out[o] - ref[o]) <= 5e-5f * (float)t + 1e-6f, "%s q8_f32 %g vs %g", vn, out[o], ref[o]);
                }
            }
            CHECK(nano_q8_matmul_q8act(&w, &act, out, pool) == 0, "q8 q8");
            for (size_t i = 0; i < (size_t)m * n; i++) {
                if (exact) CHECK(out[i] == ref8[i], "%s q8_q8 exact i=%zu %.9g vs %.9g", vn, i, out[i], ref8[i]);
                else CHECK(fabsf(out[i] - ref8[i]) <= 1e-4f * fabsf(ref8[i]) + 1e-3f, "%s q8_q8 %g vs %g", vn, out[i], ref8[i]);
            }
        }
        free(row); free(qw); free(sc); free(x); free(ref); free(ref8); free(out); free(abuf);
    }
}

static void test_bad_input(void) {
    uint8_t qw[64 * 16];
    uint16_t sc[64 * 2];
    float x[64], y[64];
    memset(qw, 0, sizeof qw); memset(sc, 0, sizeof sc); memset(x, 0, sizeof x);
    nano_q4_matrix w = {qw, sc, NULL, 16, 64, 32};
    CHECK(nano_q4_matmul_f32(&w, x, y, 1, NULL) == NANO_K_OK, "good call");
    CHECK(nano_q4_matmul_f32(NULL, x, y, 1, NULL) == NANO_K_ERR_NULL, "null w");
    CHECK(nano_q4_matmul_f32(&w, NULL, y, 1, NULL) == NANO_K_ERR_NULL, "null x");
    CHECK(nano_q4_matmul_f32(&w, x, y, 0, NULL) == NANO_K_ERR_SHAPE, "m=0");
    nano_q4_matrix bad = w; bad.group_size = 48;
    CHECK(nano_q4_matmul_f32(&bad, x, y, 1, NULL) == NANO_K_ERR_GROUP, "group 48");
    bad = w; bad.k = 48;
    CHECK(nano_q4_matmul_f32(&bad, x, y, 1, NULL) == NANO_K_ERR_SHAPE, "k=48");
    bad = w; bad.scales = (const uint16_t *)((const char *)sc + 1);
    CHECK(nano_q4_matmul_f32(&bad, x, y, 1, NULL) == NANO_K_ERR_ALIGN, "misaligned scales");
    CHECK(nano_q4_matmul_f32(&w, (const float *)((const char *)x + 2), y, 1, NULL) == NANO_K_ERR_ALIGN, "misaligned x");
    char abuf[4096];
    nano_q8_act act;
    CHECK(nano_q8_act_init(&act, abuf, 10, 1, 64) == NANO_K_ERR_SCRATCH, "small scratch");
    CHECK(nano_q8_act_init(&act, abuf, sizeof abuf, 1, 32) == NANO_K_OK, "act init");
    CHECK(nano_quantize_act_q8(x, 1, 32, &act, NULL) == NANO_K_OK, "quant");
    CHECK(nano_q4_matmul_q8act(&w, &act, y, NULL) == NANO_K_ERR_SHAPE, "k mismatch");
    CHECK(nano_quantize_act_q8(x, 2, 32, &act, NULL) == NANO_K_ERR_SHAPE, "m > capacity");
    CHECK(nano_kernel_set_variant(99) == NANO_K_ERR_UNSUPPORTED, "bad variant");
    CHECK(nano_pool_run(NULL, NULL, NULL) == NANO_K_ERR_NULL, "pool null fn");
}

/* attention inner loops (attn*.c): the grouped-query forms must equal G single-head calls
 * bit for bit (same arithmetic in the same order), and every variant must match the plain C
 * loops within fp32 reassociation error. G over 1..9 covers blocks of 4 and the remainders;
 * the rows include odd counts (the 2-row loop's tail). */
static void test_attn(void) {
    /* rows 33 and 100: the grouped accumulation's 32-row blocks and their partial tails */
    static const int hds[] = {16, 64, 128, 256}, rowss[] = {1, 7, 33, 100};
    const int nv = NANO_VARIANT_COUNT;
    for (int v = 0; v < nv; v++) {
        if (!nano_kernel_variant_available(v) || nano_kernel_set_variant(v) != 0) continue;
        for (int hi = 0; hi < 4; hi++)
            for (int ri = 0; ri < 4; ri++)
                for (int G = 1; G <= 9; G++) {
                    const int hd = hds[hi], rows = rowss[ri], ws = rows + 5;
                    nano_kernel_set_variant(v);
                    const nano_attn_ops *op = nano_attn_ops_get(hd);
                    nano_kernel_set_variant(NANO_VARIANT_SCALAR);
                    const nano_attn_ops *ref = nano_attn_ops_get(hd);
                    nano_kernel_set_variant(v);
                    float *q = malloc(sizeof(float) * G * hd), *w = malloc(sizeof(float) * G * ws);
                    uint16_t *k16 = malloc(2 * (size_t)rows * hd);
                    int8_t *k8 = malloc((size_t)rows * hd);
                    float *ks = malloc(sizeof(float) * rows);
                    float *a = malloc(sizeof(float) * G * ws), *b = malloc(sizeof(float) * G * ws);
                    float *c = malloc(sizeof(float) * G * ws);
                    float *oa = malloc(sizeof(float) * G * hd), *ob = malloc(sizeof(float) * G * hd);
                    float *oc = malloc(sizeof(float) * G * hd);
                    for (int i = 0; i < G * hd; i++) q[i] = frand();
                    for (int i = 0; i < G * ws; i++) w[i] = frand();
                    for (int i = 0; i < rows * hd; i++) {
                        k16[i] = nano_fp32_to_fp16(frand());
                        k8[i] = (int8_t)((int)(rnd() % 255) - 127);
                    }
                    for (int r = 0; r < rows; r++) ks[r] = 0.01f + 0.01f * (frand() + 1.0f);
                    for (int i8 = 0; i8 < 2; i8++) {
                        memset(a, 0, sizeof(float) * G * ws);
                        memset(b, 0, sizeof(float) * G * ws);
                        memset(c, 0, sizeof(float) * G * ws);
                        const int cold = (G + rows) & 1; /* both paths (prefetching or not) */
                        if (i8) op->scores_i8_g(q, G, k8, ks, rows, hd, 0.125f, a, ws, cold);
                        else op->scores_f16_g(q, G, k16, rows, hd, 0.125f, a, ws, cold);
                        for (int j = 0; j < G; j++) {
                            if (i8) {
                                op->scores_i8(q + j * hd, k8, ks, rows, hd, 0.125f, b + j * ws);
                                ref->scores_i8(q + j * hd, k8, ks, rows, hd, 0.125f, c + j * ws);
                            } else {
                                op->scores_f16(q + j * hd, k16, rows, hd, 0.125f, b + j * ws);
                                ref->scores_f16(q + j * hd, k16, rows, hd, 0.125f, c + j * ws);
                            }
                        }
                        CHECK(!memcmp(a, b, sizeof(float) * G * ws), "%s scores_%s_g G=%d hd=%d rows=%d "
                              "differs from %d single-head calls", nano_kernel_variant_name(v),
                              i8 ? "i8" : "f16", G, hd, rows, G);
                        for (int i = 0; i < G * ws; i++)
                            CHECK(fabsf(a[i] - c[i]) <= 1e-4f * (1.0f + fabsf(c[i])) * hd, "%s scores_%s "
                                  "vs plain C: %g vs %g", nano_kernel_variant_name(v), i8 ? "i8" : "f16",
                                  a[i], c[i]);
                        for (int i = 0; i < G * hd; i++) oa[i] = ob[i] = oc[i] = frand();
                        if (i8) op->accum_i8_g(w, ws, G, k8, ks, rows, hd, oa, !cold);
                        else op->accum_f16_g(w, ws, G, k16, rows, hd, oa, !cold);
                        for (int j = 0; j < G; j++) {
                            if (i8) {
                                op->accum_i8(w + j * ws, k8, ks, rows, hd, ob + j * hd);
                                ref->accum_i8(w + j * ws, k8, ks, rows, hd, oc + j * hd);
                            } else {
                                op->accum_f16(w + j * ws, k16, rows, hd, ob + j * hd);
                                ref->accum_f16(w + j * ws, k16, rows, hd, oc + j * hd);
                            }
                        }
                        CHECK(!memcmp(oa, ob, sizeof(float) * G * hd), "%s accum_%s_g G=%d hd=%d rows=%d "
                              "differs from %d single-head calls", nano_kernel_variant_name(v),
                              i8 ? "i8" : "f16", G, hd, rows, G);
                        for (int i = 0; i < G * hd; i++)
                            CHECK(fabsf(oa[i] - oc[i]) <= 1e-4f * (1.0f + fabsf(oc[i])) * rows, "%s accum_%s "
                                  "vs plain C: %g vs %g", nano_kernel_variant_name(v), i8 ? "i8" : "f16",
                                  oa[i], oc[i]);
                    }
                    free(q); free(w); free(k16); free(k8); free(ks); free(a); free(b); free(c);
                    free(oa); free(ob); free(oc);
                }
    }
    nano_kernel_set_variant(-1);
}

/* softmax (attn*.c): every variant against exp and the sum in double, within the float
 * error bound of its summation order (a few ulp per exp, one rounding per add: n adds for
 * the plain C loop, n / 8 per lane plus the horizontal sum and the tail for the vector
 * ones) and of the float subtraction s - max, the outputs sum to 1, and a spread of 100 (scores far below the max underflow to
 * ~0) stays finite. Lengths cover the 8-wide body, its tail and n = 1. */
static void test_softmax(void) {
    static const int ns[] = {1, 5, 8, 13, 64, 1027};
    for (int v = 0; v < NANO_VARIANT_COUNT; v++) {
        if (!nano_kernel_variant_available(v) || nano_kernel_set_variant(v) != 0) continue;
        const nano_attn_ops *op = nano_attn_ops_get(64);
        nano_kernel_set_variant(NANO_VARIANT_SCALAR);
        const int plain = op->softmax == nano_attn_ops_get(64)->softmax;
        for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++)
            for (int spread = 1; spread <= 100; spread *= 10) {
                const int n = ns[t];
                float *a = malloc(sizeof(float) * n);
                double *b = malloc(sizeof(double) * n), mx = -INFINITY, tot = 0;
                for (int i = 0; i < n; i++) a[i] = 3.0f + spread * frand(); /* 3 - spread .. 3 + spread */
                for (int i = 0; i < n; i++) mx = a[i] > mx ? a[i] : mx;
                for (int i = 0; i < n; i++) tot += b[i] = exp((double)a[i] - mx);
                op->softmax(a, n);
                const int adds = plain ? n : n / 8 + 7 + 3;
                double sum = 0;
                for (int i = 0; i < n; i++) {
                    /* s - max in float is off by up to half an ulp of |s - max|: exp takes that
                     * relative error times |s - max| */
                    const double r = b[i] / tot, tol = 4e-7 + 6e-8 * (adds + fabs(log(b[i])));
                    CHECK(isfinite(a[i]) && fabs(a[i] - r) <= tol * r + 1e-30,
                          "%s softmax n=%d spread=%d [%d]: %.9g vs %.9g (tolerance %.2g relative)",
                          nano_kernel_variant_name(v), n, spread, i, a[i], r, tol);
                    sum += a[i];
                }
                CHECK(fabs(sum - 1.0) < 1e-5, "%s softmax n=%d sums to %g", nano_kernel_variant_name(v),
                      n, sum);
                free(a);
                free(b);
            }
    }
    nano_kernel_set_variant(-1);
}

/* to_f16 (storing K/V rows): every variant bit for bit against nano_fp32_to_fp16 over a
 * sweep of all float bit patterns (every 997th: both signs, zeros, subnormals, the
 * rounding ties, overflow to infinity, NaNs) and lengths that leave vector tails. */
static void test_to_f16(void) {
    enum { N = 4099 };
    float *src = malloc(sizeof(float) * N);
    uint16_t *got = malloc(2 * N);
    for (int v = 0; v < NANO_VARIANT_COUNT; v++) {
        if (!nano_kernel_variant_available(v) || nano_kernel_set_variant(v) != 0) continue;
        const nano_attn_ops *op = nano_attn_ops_get(64);
        int bad = 0;
        for (uint64_t u0 = 0; u0 < (1ull << 32) && !bad; u0 += (uint64_t)N * 997) {
            int n = 0;
            for (uint64_t u = u0; n < N && u < (1ull << 32); u += 997, n++) {
                const uint32_t b = (uint32_t)u;
                memcpy(&src[n], &b, 4);
            }
            op->to_f16(src, got, n);
            for (int i = 0; i < n && !bad; i++) {
                const uint16_t want = nano_fp32_to_fp16(src[i]);
                uint32_t b;
                memcpy(&b, &src[i], 4);
                if (got[i] != want) {
                    bad = 1;
                    CHECK(0, "%s to_f16(0x%08x) = 0x%04x, want 0x%04x", nano_kernel_variant_name(v), b,
                          got[i], want);
                }
            }
        }
        /* exact ties and the edges, at every offset of a short row */
        static const uint32_t edge[] = {0x00000000u, 0x80000000u, 0x3f801000u, 0x3f803000u, 0x477fe000u,
                                        0x477ff000u, 0x477fefffu, 0x7f800000u, 0xff800000u, 0x7fc00001u,
                                        0xffa00000u, 0x38800000u, 0x387fffffu, 0x33000000u, 0x33000001u,
                                        0x337fffffu, 0x00000001u};
        const int ne = (int)(sizeof edge / sizeof edge[0]);
        for (int i = 0; i < ne; i++) memcpy(&src[i], &edge[i], 4);
        op->to_f16(src, got, ne);
        for (int i = 0; i < ne; i++)
            CHECK(got[i] == nano_fp32_to_fp16(src[i]), "%s to_f16(0x%08x) = 0x%04x, want 0x%04x",
                  nano_kernel_variant_name(v), edge[i], got[i], nano_fp32_to_fp16(src[i]));
    }
    nano_kernel_set_variant(-1);
    free(src);
    free(got);
}

int main(void) {
    printf("available:");
    for (int v = 0; v < NANO_VARIANT_COUNT; v++)
        if (nano_kernel_variant_available(v)) printf(" %s", nano_kernel_variant_name(v));
    printf("\nselected: %s\n", nano_kernel_variant_name(nano_kernel_variant()));
    fflush(stdout);
    test_bad_input();
    test_attn();
    test_softmax();
    test_to_f16();
    static const int shapes[][2] = {{1, 32}, {7, 96}, {33, 160}, {17, 288}, {64, 256}, {5, 416}, {40, 1056}, {6, 16416}};
    static const int groups[] = {32, 64, 128};
    static const int ms[] = {1, 3, 5};
    for (int t = 1; t <= 3; t++) {
        nano_pool *pool = t > 1 ? nano_pool_create(t) : NULL;
        CHECK(t == 1 || pool != NULL, "pool create");
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int gi = 0; gi < 3; gi++)
                for (int asym = 0; asym < 2; asym++)
                    test_q4(pool, shapes[s][0], shapes[s][1], groups[gi], asym, ms[(s + gi + asym) % 3]);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) test_q8(pool, shapes[s][0], shapes[s][1], ms[s % 3]);
        /* GEMM tiling (AVX2: 64-row activation tiles, 16-block K chunks, 4x4 micro-tiles):
         * m across tile and micro-tile edges, odd block counts, odd n, several K chunks */
        static const int gshapes[][3] = {{37, 1056, 67}, {20, 544, 131}, {9, 1024, 64}};
        for (size_t s = 0; s < sizeof gshapes / sizeof gshapes[0]; s++)
            for (int gi = 0; gi < 3; gi++)
                test_q4(pool, gshapes[s][0], gshapes[s][1], groups[gi], (int)((s + gi) & 1), gshapes[s][2]);
        /* decode's GEMV split (guided: shrinking chunks) over many 16-row units, n not a
         * multiple of 16; and the fused multi-matrix dispatch, decode and prefill */
        test_q4(pool, 1003, 64, 32, 1, 1);
        test_q4(pool, 4100, 32, 64, 0, 1);
        test_q4_multi(pool, 1);
        test_q4_multi(pool, 3);
        nano_pool_free(pool);
    }
    nano_kernel_set_variant(-1);
    printf("%s\n", g_fail ? "FAILED" : "PASSED");
    return g_fail ? 1 : 0;
}
