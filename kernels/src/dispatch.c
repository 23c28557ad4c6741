/* dispatch.c - the one place that picks a kernel variant from CPU features,
 * validates arguments and splits work over the thread pool. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_internal.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static const char *const VARIANT_NAMES[NANO_VARIANT_COUNT] = {"scalar", "avx2", "avx512", "neon",
                                                              "neondot"};

NANO_API const char *nano_kernel_status_string(int status) {
    switch (status) {
    case NANO_K_OK: return "ok";
    case NANO_K_ERR_NULL: return "null pointer";
    case NANO_K_ERR_SHAPE: return "bad or mismatched shape";
    case NANO_K_ERR_GROUP: return "unsupported group size (must be 32, 64 or 128)";
    case NANO_K_ERR_ALIGN: return "misaligned pointer";
    case NANO_K_ERR_UNSUPPORTED: return "kernel variant not available on this build/CPU";
    case NANO_K_ERR_SCRATCH: return "scratch buffer too small";
    case NANO_K_ERR_THREADS: return "bad thread count or thread pool failure";
    default: return "unknown status";
    }
}

/* ---- variants ------------------------------------------------------------- */
static const nano_kernel_table *table_of(int v) {
    switch (v) {
    case NANO_VARIANT_SCALAR: return &nano_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
    case NANO_VARIANT_AVX2: return &nano_kernels_avx2;
    case NANO_VARIANT_AVX512: return &nano_kernels_avx512;
#endif
#if defined(__aarch64__)
    case NANO_VARIANT_NEON: return &nano_kernels_neon;
    case NANO_VARIANT_NEONDOT: return &nano_kernels_neondot;
#endif
    default: return NULL;
    }
}

static int cpu_supports(int v) {
    switch (v) {
    case NANO_VARIANT_SCALAR: return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    case NANO_VARIANT_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case NANO_VARIANT_AVX512:
        __builtin_cpu_init();
#ifdef NANO_AVX512_EMULATED /* test build: q4_avx512.c runs on SIMDe (tests/avx512_emu.h) */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
#endif
#if defined(__aarch64__)
    case NANO_VARIANT_NEON: return 1; /* ASIMD is mandatory on AArch64 */
    case NANO_VARIANT_NEONDOT:
#if defined(__linux__)
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
        return 0;
#endif
#endif
    default: return 0;
    }
}

NANO_API int nano_kernel_variant_available(int v) {
    if (v < 0 || v >= NANO_VARIANT_COUNT) return 0;
    return table_of(v) != NULL && cpu_supports(v);
}

NANO_API int nano_kernel_variant_list(int *out, int max) {
    int c = 0;
    for (int v = 0; v < NANO_VARIANT_COUNT; v++)
        if (nano_kernel_variant_available(v)) {
            if (out && c < max) out[c] = v;
            c++;
        }
    return c;
}

NANO_API const char *nano_kernel_variant_name(int v) {
    return (v >= 0 && v < NANO_VARIANT_COUNT) ? VARIANT_NAMES[v] : NULL;
}

NANO_API int nano_kernel_variant_from_name(const char *name) {
    if (!name) return NANO_K_ERR_NULL;
    for (int v = 0; v < NANO_VARIANT_COUNT; v++)
        if (strcmp(name, VARIANT_NAMES[v]) == 0) return v;
    return NANO_K_ERR_UNSUPPORTED;
}

static int auto_variant(void) {
    const char *env = getenv("NANO_KERNEL");
    if (env && *env) {
        const int v = nano_kernel_variant_from_name(env);
        if (v >= 0 && nano_kernel_variant_available(v)) return v;
    }
    static const int order[] = {NANO_VARIANT_AVX512, NANO_VARIANT_AVX2, NANO_VARIANT_NEONDOT,
                                NANO_VARIANT_NEON};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (nano_kernel_variant_available(order[i])) return order[i];
    return NANO_VARIANT_SCALAR;
}

static atomic_int g_variant = -1;

NANO_API int nano_kernel_variant(void) {
    int v = atomic_load_explicit(&g_variant, memory_order_acquire);
    if (v < 0) {
        v = auto_variant();
        atomic_store_explicit(&g_variant, v, memory_order_release);
    }
    return v;
}

NANO_API int nano_kernel_set_variant(int v) {
    if (v == -1) {
        atomic_store(&g_variant, auto_variant());
        return NANO_K_OK;
    }
    if (!nano_kernel_variant_available(v)) return NANO_K_ERR_UNSUPPORTED;
    atomic_store(&g_variant, v);
    return NANO_K_OK;
}

static const nano_kernel_table *active(void) { return table_of(nano_kernel_variant()); }

/* ---- validation ----------------------------------------------------------- */
#define MAX_DIM (1 << 26)
#define ALIGNED(p, a) ((((uintptr_t)(const void *)(p)) & ((a) - 1)) == 0)

static int check_q4(const nano_q4_matrix *w) {
    if (!w || !w->qweight || !w->scales) return NANO_K_ERR_NULL;
    if (w->n < 1 || w->n > MAX_DIM || w->k < NANO_QK || w->k > MAX_DIM || w->k % NANO_QK)
        return NANO_K_ERR_SHAPE;
    if (w->group_size != 32 && w->group_size != 64 && w->group_size != 128) return NANO_K_ERR_GROUP;
    if (!ALIGNED(w->scales, 2) || (w->mins && !ALIGNED(w->mins, 2))) return NANO_K_ERR_ALIGN;
    return NANO_K_OK;
}

static int check_q8(const nano_q8_matrix *w) {
    if (!w || !w->qweight || !w->scales) return NANO_K_ERR_NULL;
    if (w->n < 1 || w->n > MAX_DIM || w->k < NANO_QK || w->k > MAX_DIM || w->k % NANO_QK)
        return NANO_K_ERR_SHAPE;
    if (!ALIGNED(w->scales, 2)) return NANO_K_ERR_ALIGN;
    return NANO_K_OK;
}

static int check_f32_io(const float *x, const float *y, int m) {
    if (!x || !y) return NANO_K_ERR_NULL;
    if (m < 1 || m > MAX_DIM) return NANO_K_ERR_SHAPE;
    if (!ALIGNED(x, 4) || !ALIGNED(y, 4)) return NANO_K_ERR_ALIGN;
    return NANO_K_OK;
}

static int check_act(const nano_q8_act *a, int k, const float *y) {
    if (!a || !a->q || !a->d || !a->ds || !y) return NANO_K_ERR_NULL;
    if (a->k != k || a->m < 1 || a->m > MAX_DIM) return NANO_K_ERR_SHAPE;
    if (!ALIGNED(a->d, 4) || !ALIGNED(a->ds, 4) || !ALIGNED(y, 4)) return NANO_K_ERR_ALIGN;
    return NANO_K_OK;
}

/* ---- q8 activation buffer ---------------------------------------------------- */
NANO_API size_t nano_q8_act_bytes(int m, int k) {
    if (m < 1 || k < NANO_QK || k % NANO_QK || m > MAX_DIM || k > MAX_DIM) return 0;
    const size_t nb = (size_t)m * (size_t)(k / NANO_QK);
    const size_t qbytes = ((size_t)m * (size_t)k + 63) & ~(size_t)63;
    return qbytes + 2 * nb * sizeof(float);
}

NANO_API int nano_q8_act_init(nano_q8_act *act, void *buf, size_t bytes, int m, int k) {
    if (!act || !buf) return NANO_K_ERR_NULL;
    const size_t need = nano_q8_act_bytes(m, k);
    if (need == 0) return NANO_K_ERR_SHAPE;
    if (!ALIGNED(buf, 4)) return NANO_K_ERR_ALIGN;
    if (bytes < need) return NANO_K_ERR_SCRATCH;
    const size_t nb = (size_t)m * (size_t)(k / NANO_QK);
    const size_t qbytes = ((size_t)m * (size_t)k + 63) & ~(size_t)63;
    act->q = (int8_t *)buf;
    act->d = (float *)((char *)buf + qbytes);
    act->ds = act->d + nb;
    act->m = m;
    act->k = k;
    return NANO_K_OK;
}

/* ---- work splitting ------------------------------------------------------------- */
enum { JOB_Q4_F32, JOB_Q4_Q8, JOB_Q8_F32, JOB_Q8_Q8, JOB_QUANT };

typedef struct {
    const nano_kernel_table *t;
    int kind, m, n;
    const void *w;
    const void *x;
    float *y;
    nano_q8_act *act; /* JOB_QUANT */
    int gnt;          /* GEMV: the thread count of a guided split (0: even split) */
} job_t;

#define ROW_ALIGN 16 /* output rows per thread chunk are a multiple of this */

static void split(int total, int align, int tid, int nt, int *lo, int *hi) { /* part tid of nt */
    int chunk = (total + nt - 1) / nt;
    chunk = (chunk + align - 1) / align * align;
    *lo = tid * chunk < total ? tid * chunk : total;
    *hi = *lo + chunk < total ? *lo + chunk : total;
}

/* Guided split of `units` over nt threads: chunk sizes shrink (each a 1/(2 nt) share of
 * what is left, at least 2 units), so the last chunks are small and the threads finish
 * together. Returns the chunk count; with c >= 0 also chunk c's unit range. Used for
 * GEMV (decode), where a job is short and memory-bound: with 4 even chunks per thread
 * the thread that lost the race for the last chunk sat idle for up to a chunk's time
 * (nano-1, 2 threads: the worker idle 8.4% of its time; guided: 2.9%, decode ~4% faster). */
static int guided(int units, int nt, int c, int *lo, int *hi) {
    int rem = units, pos = 0, i = 0;
    if (c >= 0) *lo = *hi = units;
    while (rem > 0) {
        int sz = (rem + 2 * nt - 1) / (2 * nt);
        if (sz < 2) sz = 2;
        if (sz > rem) sz = rem;
        if (i == c) {
            *lo = pos;
            *hi = pos + sz;
        }
        pos += sz;
        rem -= sz;
        i++;
    }
    return i;
}

/* chunk c of nc over n output rows: guided over gnt threads (gnt > 0), else even */
static void out_rows(int n, int gnt, int c, int nc, int *lo, int *hi) {
    if (!gnt) {
        split(n, ROW_ALIGN, c, nc, lo, hi);
        return;
    }
    guided((n + ROW_ALIGN - 1) / ROW_ALIGN, gnt, c, lo, hi);
    *lo = *lo * ROW_ALIGN < n ? *lo * ROW_ALIGN : n;
    *hi = *hi * ROW_ALIGN < n ? *hi * ROW_ALIGN : n;
}

/* How many chunks a matmul over `units` row units is cut into: guided for a GEMV (m = 1)
 * on several threads (*gnt = nt), else up to CHUNKS_PER_THREAD even ones (*gnt = 0). */
#define CHUNKS_PER_THREAD 4 /* dynamic balance: a slow or descheduled thread loses chunks */
static int out_chunks(int units, int m, int nt, int *gnt) {
    *gnt = m == 1 && nt > 1 ? nt : 0;
    if (*gnt) return guided(units, nt, -1, NULL, NULL);
    return units < nt * CHUNKS_PER_THREAD ? units : nt * CHUNKS_PER_THREAD;
}

/* chunk c of nc: a contiguous range of rows (quantization) or output columns */
static void job_fn(void *arg, int c, int nc) {
    const job_t *j = (const job_t *)arg;
    int lo, hi;
    if (j->kind == JOB_QUANT) {
        split(j->m, 1, c, nc, &lo, &hi);
        const float *x = (const float *)j->x;
        const int k = j->act->k, nb = k / NANO_QK;
        for (int i = lo; i < hi; i++)
            j->t->quant_row(x + (size_t)i * k, k, j->act->q + (size_t)i * k,
                            j->act->d + (size_t)i * nb, j->act->ds + (size_t)i * nb);
        return;
    }
    out_rows(j->n, j->gnt, c, nc, &lo, &hi);
    if (lo >= hi) return;
    switch (j->kind) {
    case JOB_Q4_F32: j->t->q4_f32(j->w, j->x, j->y, j->m, lo, hi); break;
    case JOB_Q4_Q8: j->t->q4_q8(j->w, j->x, j->y, lo, hi); break;
    case JOB_Q8_F32: j->t->q8_f32(j->w, j->x, j->y, j->m, lo, hi); break;
    case JOB_Q8_Q8: j->t->q8_q8(j->w, j->x, j->y, lo, hi); break;
    }
}

static int run_job(job_t *j, nano_pool *pool) {
    j->t = active();
    const int nt = nano_pool_size(pool);
    int units, nc;
    if (j->kind == JOB_QUANT) {
        units = j->m;
        nc = units < nt * CHUNKS_PER_THREAD ? units : nt * CHUNKS_PER_THREAD;
    } else {
        units = (j->n + ROW_ALIGN - 1) / ROW_ALIGN;
        nc = out_chunks(units, j->m, nt, &j->gnt);
    }
    if (!pool || nt == 1 || nc <= 1) {
        job_fn(j, 0, 1);
        return NANO_K_OK;
    }
    return nano_pool_run_chunks(pool, job_fn, j, nc);
}

NANO_API int nano_quantize_act_q8(const float *x, int m, int k, nano_q8_act *act,
                                  nano_pool *pool) {
    if (!x || !act || !act->q || !act->d || !act->ds) return NANO_K_ERR_NULL;
    if (m < 1 || k < NANO_QK || k % NANO_QK || act->k != k || m > act->m) return NANO_K_ERR_SHAPE;
    if (!ALIGNED(x, 4) || !ALIGNED(act->d, 4) || !ALIGNED(act->ds, 4)) return NANO_K_ERR_ALIGN;
    act->m = m;
    job_t j = {NULL, JOB_QUANT, m, 0, NULL, x, NULL, act, 0};
    return run_job(&j, pool);
}

NANO_API int nano_q4_matmul_f32(const nano_q4_matrix *w, const float *x, float *y, int m,
                                nano_pool *pool) {
    int st = check_q4(w);
    if (st == NANO_K_OK) st = check_f32_io(x, y, m);
    if (st != NANO_K_OK) return st;
    job_t j = {NULL, JOB_Q4_F32, m, w->n, w, x, y, NULL, 0};
    return run_job(&j, pool);
}

NANO_API int nano_q4_matmul_q8act(const nano_q4_matrix *w, const nano_q8_act *x, float *y,
                                  nano_pool *pool) {
    int st = check_q4(w);
    if (st == NANO_K_OK) st = check_act(x, w->k, y);
    if (st != NANO_K_OK) return st;
    job_t j = {NULL, JOB_Q4_Q8, x->m, w->n, w, x, y, NULL, 0};
    return run_job(&j, pool);
}

/* Several q4 matrices on one quantized input in one pool dispatch (q/k/v, gate/up): the
 * output rows of all matrices are split as one range, so the threads wake once. */
typedef struct {
    const nano_kernel_table *t;
    const nano_q4_matrix *const *w;
    float *const *y;
    const nano_q8_act *x;
    int count, total, gnt;
} multi_job_t;

static void multi_fn(void *arg, int c, int nc) {
    const multi_job_t *j = (const multi_job_t *)arg;
    int lo, hi;
    out_rows(j->total, j->gnt, c, nc, &lo, &hi);
    for (int i = 0, base = 0; i < j->count && lo < hi; base += j->w[i]->n, i++) {
        const int a = lo > base ? lo - base : 0;
        const int b = hi - base < j->w[i]->n ? hi - base : j->w[i]->n;
        if (a < b) j->t->q4_q8(j->w[i], j->x, j->y[i], a, b);
    }
}

NANO_API int nano_q4_matmul_q8act_multi(const nano_q4_matrix *const *w, float *const *y, int count,
                                        const nano_q8_act *x, nano_pool *pool) {
    if (!w || !y) return NANO_K_ERR_NULL;
    if (count < 1 || count > 16) return NANO_K_ERR_SHAPE;
    long total = 0;
    for (int i = 0; i < count; i++) {
        int st = check_q4(w[i]);
        if (st == NANO_K_OK) st = check_act(x, w[i]->k, y[i]);
        if (st != NANO_K_OK) return st;
        total += w[i]->n;
    }
    if (total > MAX_DIM) return NANO_K_ERR_SHAPE;
    multi_job_t j = {active(), w, y, x, count, (int)total, 0};
    const int nt = nano_pool_size(pool), units = (j.total + ROW_ALIGN - 1) / ROW_ALIGN;
    const int nc = out_chunks(units, x->m, nt, &j.gnt);
    if (!pool || nt == 1 || nc <= 1) {
        multi_fn(&j, 0, 1);
        return NANO_K_OK;
    }
    return nano_pool_run_chunks(pool, multi_fn, &j, nc);
}

NANO_API int nano_q8_matmul_f32(const nano_q8_matrix *w, const float *x, float *y, int m,
                                nano_pool *pool) {
    int st = check_q8(w);
    if (st == NANO_K_OK) st = check_f32_io(x, y, m);
    if (st != NANO_K_OK) return st;
    job_t j = {NULL, JOB_Q8_F32, m, w->n, w, x, y, NULL, 0};
    return run_job(&j, pool);
}

NANO_API int nano_q8_matmul_q8act(const nano_q8_matrix *w, const nano_q8_act *x, float *y,
                                  nano_pool *pool) {
    int st = check_q8(w);
    if (st == NANO_K_OK) st = check_act(x, w->k, y);
    if (st != NANO_K_OK) return st;
    job_t j = {NULL, JOB_Q8_Q8, x->m, w->n, w, x, y, NULL, 0};
    return run_job(&j, pool);
}

NANO_API int nano_q4_dequant_row(const nano_q4_matrix *w, int row, float *out) {
    int st = check_q4(w);
    if (st != NANO_K_OK) return st;
    if (!out) return NANO_K_ERR_NULL;
    if (!ALIGNED(out, 4)) return NANO_K_ERR_ALIGN;
    if (row < 0 || row >= w->n) return NANO_K_ERR_SHAPE;
    const int ng = nano_q4_ngroups(w);
    const uint8_t *qr = w->qweight + (size_t)row * (w->k / 2);
    for (int k = 0; k < w->k; k++) {
        const int g = k / w->group_size, q = nano_q4_code(qr, k);
        const float s = nano_h2f(w->scales[(size_t)row * ng + g]);
        out[k] = w->mins ? s * (float)q + nano_h2f(w->mins[(size_t)row * ng + g])
                         : s * (float)(q - 8);
    }
    return NANO_K_OK;
}

NANO_API int nano_q8_dequant_row(const nano_q8_matrix *w, int row, float *out) {
    int st = check_q8(w);
    if (st != NANO_K_OK) return st;
    if (!out) return NANO_K_ERR_NULL;
    if (!ALIGNED(out, 4)) return NANO_K_ERR_ALIGN;
    if (row < 0 || row >= w->n) return NANO_K_ERR_SHAPE;
    const int nb = w->k / NANO_QK;
    for (int k = 0; k < w->k; k++)
        out[k] = nano_h2f(w->scales[(size_t)row * nb + k / NANO_QK]) *
                 (float)w->qweight[(size_t)row * w->k + k];
    return NANO_K_OK;
}
