/* kernels_internal.h - what every ISA file provides to dispatch.c.
 *
 * A variant is a table of row-range kernels: each computes output columns
 * [n0, n1) of y (all activation rows) and writes nothing else, so dispatch.c
 * can split n across pool threads. Arguments are validated by dispatch.c. */
#ifndef NANO_KERNELS_INTERNAL_H
#define NANO_KERNELS_INTERNAL_H

#include "nano_kernels.h"

typedef struct {
    const char *name;
    /* y [m, w->n], x [m, w->k] */
    void (*q4_f32)(const nano_q4_matrix *w, const float *x, float *y, int m, int n0, int n1);
    /* y [x->m, w->n] */
    void (*q4_q8)(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1);
    void (*q8_f32)(const nano_q8_matrix *w, const float *x, float *y, int m, int n0, int n1);
    void (*q8_q8)(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1);
    /* one row: x [k] -> q [k], d [k/32], ds [k/32]; must match the scalar one bit for bit */
    void (*quant_row)(const float *x, int k, int8_t *q, float *d, float *ds);
} nano_kernel_table;

extern const nano_kernel_table nano_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const nano_kernel_table nano_kernels_avx2;
extern const nano_kernel_table nano_kernels_avx512;
/* AVX2 pieces the AVX-512 table reuses (fp32-activation paths, act quantization) */
void nano_q4_f32_avx2(const nano_q4_matrix *w, const float *x, float *y, int m, int n0, int n1);
void nano_q8_f32_avx2(const nano_q8_matrix *w, const float *x, float *y, int m, int n0, int n1);
void nano_quant_row_avx2(const float *x, int k, int8_t *q, float *d, float *ds);
#endif
#if defined(__aarch64__)
extern const nano_kernel_table nano_kernels_neon;
extern const nano_kernel_table nano_kernels_neondot;
#endif

extern const nano_attn_ops nano_attn_ops_c;
void nano_glu_c(float *a, const float *b, size_t n, int gelu);
#if defined(__x86_64__) || defined(_M_X64)
extern const nano_attn_ops nano_attn_ops_avx2;
void nano_glu_avx2(float *a, const float *b, size_t n, int gelu);
#endif

/* Run fn(arg, chunk, n_chunks) for every chunk in [0, n_chunks), claimed dynamically by
 * the pool's threads (pool.c). */
int nano_pool_run_chunks(nano_pool *pool, nano_pool_fn fn, void *arg, int n_chunks);

/* Scalar helpers shared by the SIMD files for their tails. */
float nano_h2f(uint16_t h);
void nano_q4_f32_rows_scalar(const nano_q4_matrix *w, const float *x, float *y, int m,
                             int n0, int n1);
float nano_q4_q8_dot_scalar(const nano_q4_matrix *w, int row, const nano_q8_act *x, int mrow,
                            int b0, int b1);
float nano_q4_q8_corr_scalar(const nano_q4_matrix *w, int row, const nano_q8_act *x, int mrow);
void nano_quant_row_scalar(const float *x, int k, int8_t *q, float *d, float *ds);

static inline int nano_q4_ngroups(const nano_q4_matrix *w) {
    return (w->k + w->group_size - 1) / w->group_size;
}

#endif
