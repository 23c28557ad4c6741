/* nano_kernels.h - int4 / int8 matmul kernels, CPU dispatch and thread pool.
 *
 * Weights use the packed layout of nano_format.h (read it first):
 *   Q4: qweight uint8 [N, K/2], scales fp16 [N, ceil(K/G)], mins fp16 [N, ceil(K/G)]
 *       (mins only for asymmetric groups), G in {32, 64, 128}, K % 32 == 0.
 *   Q8: qweight int8 [N, K], scales fp16 [N, K/32].
 * Every matmul computes y[m, n] = sum_k x[m, k] * W[n, k]   (y = x W^T, like
 * torch.nn.functional.linear), y row-major [M, N], x row-major [M, K].
 *
 * Two activation paths:
 *   *_f32    : fp32 activations, fp32 accumulation.
 *   *_q8act  : activations first quantized per 32 columns to int8
 *              (nano_quantize_act_q8), then integer dot products per 32-block
 *              (AVX2 maddubs, AVX-512 VNNI vpdpbusd, NEON sdot) and one float
 *              multiply-add per block. This is the fast path for decode and prefill.
 *
 * Status codes: every function returning int returns NANO_K_OK (0) or a
 * negative NANO_K_ERR_*; nano_kernel_status_string() names it. Nothing here
 * allocates, prints, exits or aborts, except nano_pool_create/free.
 *
 * Thread-safety: kernels are reentrant; they only write y (and the q8 act
 * buffer for nano_quantize_act_q8). A nano_pool must be used by one calling
 * thread at a time (one pool per engine/session); pass pool = NULL to run in
 * the calling thread only. nano_kernel_set_variant() is global: call it at
 * start-up or in tests, not while kernels run on other threads.
 *
 * Pointer requirements (else NANO_K_ERR_ALIGN): float arrays 4-byte aligned,
 * fp16 arrays 2-byte aligned; qweight and int8 arrays have no requirement.
 */
#ifndef NANO_KERNELS_H
#define NANO_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "nano_format.h"
#include "nano_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes -------------------------------------------------------- */
#define NANO_K_OK 0
#define NANO_K_ERR_NULL (-1)        /* a required pointer is NULL              */
#define NANO_K_ERR_SHAPE (-2)       /* n, k or m out of range / mismatched      */
#define NANO_K_ERR_GROUP (-3)       /* group size not 32, 64 or 128             */
#define NANO_K_ERR_ALIGN (-4)       /* pointer not aligned to its element type  */
#define NANO_K_ERR_UNSUPPORTED (-5) /* variant not compiled in or not on this CPU */
#define NANO_K_ERR_SCRATCH (-6)     /* caller buffer too small                  */
#define NANO_K_ERR_THREADS (-7)     /* thread count out of range / pool failure */

NANO_API const char *nano_kernel_status_string(int status);

/* ---- weights and quantized activations ------------------------------------ */
typedef struct {
    const uint8_t *qweight;  /* [n, k/2] packed codes (nano_format.h order)   */
    const uint16_t *scales;  /* [n, ceil(k/group_size)] fp16                  */
    const uint16_t *mins;    /* [n, ceil(k/group_size)] fp16, NULL = symmetric */
    int32_t n, k, group_size;
} nano_q4_matrix;

typedef struct {
    const int8_t *qweight;   /* [n, k] */
    const uint16_t *scales;  /* [n, k/32] fp16 */
    int32_t n, k;
} nano_q8_matrix;

/* Activations quantized per 32 columns: x[m, k] ~= d[m, k/32] * q[m, k].
 * ds = d * sum(q over the block) (used for the zero-point / min terms).
 * The struct is a view into one caller buffer (nano_q8_act_bytes). */
typedef struct {
    int8_t *q;   /* [m, k]    */
    float *d;    /* [m, k/32] */
    float *ds;   /* [m, k/32] */
    int32_t m, k;
} nano_q8_act;

/* Bytes of the buffer nano_q8_act_init needs for m rows of k columns (0 on bad shape). */
NANO_API size_t nano_q8_act_bytes(int m, int k);
/* Carve `act` out of buf (>= nano_q8_act_bytes(m, k) bytes, 4-byte aligned). */
NANO_API int nano_q8_act_init(nano_q8_act *act, void *buf, size_t bytes, int m, int k);

/* ---- thread pool ---------------------------------------------------------- */
typedef struct nano_pool nano_pool;
/* n_threads >= 1 including the caller (n_threads - 1 workers are started);
 * n_threads <= 0 means one per online CPU. NULL on failure. Workers spin
 * briefly after each job, then sleep on a condition variable. */
NANO_API nano_pool *nano_pool_create(int n_threads);
NANO_API void nano_pool_free(nano_pool *pool);           /* NULL is a no-op */
NANO_API int nano_pool_size(const nano_pool *pool);      /* 1 for NULL      */
/* Call fn(arg, tid, nthreads) once for every tid in [0, nthreads) and wait. The calls
 * are claimed dynamically by the pool's threads (the caller included), so a thread
 * that is descheduled never holds the job up; a tid may therefore run on any thread,
 * and one thread may run several tids in turn, but no two calls share a tid (per-tid
 * scratch is safe). No allocation or locking on the hot path. The engine may use it
 * for its own loops; fn must not call nano_pool_run on the same pool (no nesting). */
typedef void (*nano_pool_fn)(void *arg, int tid, int nthreads);
NANO_API int nano_pool_run(nano_pool *pool, nano_pool_fn fn, void *arg);

/* ---- kernels -------------------------------------------------------------- */
/* x [m, k] fp32 -> act (initialised with nano_q8_act_init for >= m rows, same k).
 * Sets act->m = m. Per 32-block: d = max|x|/127, q = round_half_even(x/d). */
NANO_API int nano_quantize_act_q8(const float *x, int m, int k, nano_q8_act *act,
                                  nano_pool *pool);

/* y [m, w->n] = x [m, w->k] . W^T ; 1 <= m (m = 1 is GEMV, prefill uses m <= 512+). */
NANO_API int nano_q4_matmul_f32(const nano_q4_matrix *w, const float *x, float *y, int m,
                                nano_pool *pool);
/* y [x->m, w->n] from quantized activations (x->k == w->k). */
NANO_API int nano_q4_matmul_q8act(const nano_q4_matrix *w, const nano_q8_act *x, float *y,
                                  nano_pool *pool);
/* y[i] [x->m, w[i]->n] for count (1..16) matrices sharing the input x, in one pool
 * dispatch (the fused q/k/v and gate/up projections). Same results as count calls. */
NANO_API int nano_q4_matmul_q8act_multi(const nano_q4_matrix *const *w, float *const *y, int count,
                                        const nano_q8_act *x, nano_pool *pool);
NANO_API int nano_q8_matmul_f32(const nano_q8_matrix *w, const float *x, float *y, int m,
                                nano_pool *pool);
NANO_API int nano_q8_matmul_q8act(const nano_q8_matrix *w, const nano_q8_act *x, float *y,
                                  nano_pool *pool);

/* Dequantize one weight row (embedding lookup): out [k] fp32. */
NANO_API int nano_q4_dequant_row(const nano_q4_matrix *w, int row, float *out);
NANO_API int nano_q8_dequant_row(const nano_q8_matrix *w, int row, float *out);

/* ---- attention inner loops (used by the engine; not exported) -------------- */
/* scores: out[r] = scale * dot(q, k row r) [* ks[r]]   (rows of hd values, contiguous)
 * accum : out[d] += sum_r w[r] [* vs[r]] * v[r][d]
 * fp16 rows or int8 rows with a per-row scale.
 * The *_g forms do the same for the G query heads that share one kv head (grouped-query
 * attention), reading and converting each cached row once for all G:
 *   scores_g: q [G, hd] contiguous -> out[j * ostride + r], j < G
 *   accum_g : w[j * wstride + r] -> out [G, hd] contiguous.
 *   cold != 0: the rows are likely out of cache (decode: the weights streamed since they
 *   were last read), so the vector forms prefetch ahead of the walk; results are the same.
 * softmax: in place over n >= 1 finite scores, s[r] = exp(s[r] - max) / sum (the exact
 * two-pass form; the AVX2 one through a polynomial exp, ~2e-7 relative to libm's).
 * to_f16: dst[i] = nano_fp32_to_fp16(src[i]) for i < n, bit for bit (storing K/V rows). */
typedef struct {
    void (*scores_f16)(const float *q, const uint16_t *k, int rows, int hd, float scale, float *out);
    void (*accum_f16)(const float *w, const uint16_t *v, int rows, int hd, float *out);
    void (*scores_i8)(const float *q, const int8_t *k, const float *ks, int rows, int hd,
                      float scale, float *out);
    void (*accum_i8)(const float *w, const int8_t *v, const float *vs, int rows, int hd, float *out);
    void (*scores_f16_g)(const float *q, int G, const uint16_t *k, int rows, int hd, float scale,
                         float *out, int ostride, int cold);
    void (*accum_f16_g)(const float *w, int wstride, int G, const uint16_t *v, int rows, int hd,
                        float *out, int cold);
    void (*scores_i8_g)(const float *q, int G, const int8_t *k, const float *ks, int rows, int hd,
                        float scale, float *out, int ostride, int cold);
    void (*accum_i8_g)(const float *w, int wstride, int G, const int8_t *v, const float *vs,
                       int rows, int hd, float *out, int cold);
    void (*softmax)(float *s, int n);
    void (*to_f16)(const float *src, uint16_t *dst, int n);
} nano_attn_ops;
/* The best implementation for the active kernel variant and this head_dim. */
const nano_attn_ops *nano_attn_ops_get(int head_dim);

/* Gated MLP activation in place: a[i] = act(a[i]) * b[i] for i < n, act = SiLU
 * (gelu == 0) or GELU with the tanh approximation (gelu != 0), both computed as
 * z * sigmoid(c z) (0.5 g (1 + tanh u) == g sigmoid(2u)). The AVX2 version uses a
 * polynomial exp (relative error ~2e-7 against the libm one). Not exported. */
void nano_glu(float *a, const float *b, size_t n, int gelu);

/* ---- fp16 <-> fp32 (IEEE binary16, round to nearest even) ---------------- */
NANO_API float nano_fp16_to_fp32(uint16_t h);
NANO_API uint16_t nano_fp32_to_fp16(float f);
NANO_API void nano_fp16_to_fp32_array(const uint16_t *src, float *dst, size_t n);
NANO_API void nano_fp32_to_fp16_array(const float *src, uint16_t *dst, size_t n);

/* ---- variant selection ---------------------------------------------------- */
/* Chosen once (first kernel call) from CPU features: best of avx512 (F/BW/VL/DQ +
 * VNNI), avx2 (AVX2+FMA+F16C), neondot (HWCAP_ASIMDDP), neon, scalar. The env
 * var NANO_KERNEL=scalar|avx2|avx512|neon|neondot forces one (ignored, falling
 * back to auto, when that variant is unavailable). */
typedef enum {
    NANO_VARIANT_SCALAR = 0,
    NANO_VARIANT_AVX2 = 1,
    NANO_VARIANT_AVX512 = 2,
    NANO_VARIANT_NEON = 3,
    NANO_VARIANT_NEONDOT = 4,
    NANO_VARIANT_COUNT = 5
} nano_variant;

NANO_API int nano_kernel_variant(void);                   /* active variant     */
NANO_API const char *nano_kernel_variant_name(int variant); /* "scalar", ... or NULL */
NANO_API int nano_kernel_variant_from_name(const char *name); /* id or NANO_K_ERR_UNSUPPORTED */
/* 1 if compiled into this build and supported by this CPU, else 0. */
NANO_API int nano_kernel_variant_available(int variant);
/* Force a variant (-1 = automatic choice again). NANO_K_ERR_UNSUPPORTED if unavailable. */
NANO_API int nano_kernel_set_variant(int variant);
/* Write the available variants (ascending id, scalar first) to out[0..max); returns how many
 * are available (may exceed max; out may be NULL to count). */
NANO_API int nano_kernel_variant_list(int *out, int max);

#ifdef __cplusplus
}
#endif
#endif /* NANO_KERNELS_H */
