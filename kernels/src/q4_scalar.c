/* q4_scalar.c - the reference kernels: plain C, always compiled, the spec
 * every SIMD variant is tested against.
 *
 *   q4 x f32 : y = sum_k W[n,k] * x[k],  W[n,k] = s*(q-8)  or  s*q + min
 *   q4 x q8  : per 32-block b of group g:  isum_b = sum q_w * q_x   (exact int)
 *              y = sum_b (s_g * d_b) * isum_b  +  sum_g c_g * (sum_{b in g} ds_b)
 *              with c_g = -8 s_g (symmetric) or min_g (asymmetric)
 *   q8 x f32 : y = sum_b s_b * (sum_{k in b} q_w * x)
 *   q8 x q8  : y = sum_b (s_b * d_b) * isum_b
 * SIMD variants compute the same terms in a different summation order. */
#include <math.h>

#include "kernels_internal.h"

void nano_q4_f32_rows_scalar(const nano_q4_matrix *w, const float *x, float *y, int m,
                             int n0, int n1) {
    const int K = w->k, G = w->group_size, ng = nano_q4_ngroups(w);
    for (int n = n0; n < n1; n++) {
        const uint8_t *row = w->qweight + (size_t)n * (K / 2);
        const uint16_t *sc = w->scales + (size_t)n * ng;
        const uint16_t *mn = w->mins ? w->mins + (size_t)n * ng : NULL;
        for (int i = 0; i < m; i++) {
            const float *xr = x + (size_t)i * K;
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                const int g = k / G, q = nano_q4_code(row, k);
                const float s = nano_h2f(sc[g]);
                const float wv = mn ? s * (float)q + nano_h2f(mn[g]) : s * (float)(q - 8);
                acc += wv * xr[k];
            }
            y[(size_t)i * w->n + n] = acc;
        }
    }
}

static inline int32_t q4_q8_block_isum(const uint8_t *blk, const int8_t *xq) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) {
        s += (int32_t)(blk[j] & 0x0F) * xq[j];
        s += (int32_t)(blk[j] >> 4) * xq[j + 16];
    }
    return s;
}

/* sum over blocks [b0, b1) of (s_g * d_b) * isum_b for weight row `row`, act row `mrow` */
float nano_q4_q8_dot_scalar(const nano_q4_matrix *w, int row, const nano_q8_act *x, int mrow,
                            int b0, int b1) {
    const int K = w->k, bpg = w->group_size / NANO_QK, ng = nano_q4_ngroups(w);
    const uint8_t *qr = w->qweight + (size_t)row * (K / 2);
    const uint16_t *sc = w->scales + (size_t)row * ng;
    const int8_t *xq = x->q + (size_t)mrow * K;
    const float *xd = x->d + (size_t)mrow * (K / NANO_QK);
    float acc = 0.0f;
    for (int b = b0; b < b1; b++) {
        const int32_t isum = q4_q8_block_isum(qr + b * NANO_Q4_BLOCK_BYTES, xq + b * NANO_QK);
        acc += (nano_h2f(sc[b / bpg]) * xd[b]) * (float)isum;
    }
    return acc;
}

/* sum_g c_g * (sum_{b in g} ds_b): the zero-point (-8) or min term */
float nano_q4_q8_corr_scalar(const nano_q4_matrix *w, int row, const nano_q8_act *x, int mrow) {
    const int K = w->k, bpg = w->group_size / NANO_QK, ng = nano_q4_ngroups(w), nb = K / NANO_QK;
    const uint16_t *sc = w->scales + (size_t)row * ng;
    const uint16_t *mn = w->mins ? w->mins + (size_t)row * ng : NULL;
    const float *ds = x->ds + (size_t)mrow * nb;
    float acc = 0.0f;
    for (int g = 0; g < ng; g++) {
        float dsg = 0.0f;
        for (int b = g * bpg; b < nb && b < (g + 1) * bpg; b++) dsg += ds[b];
        const float c = mn ? nano_h2f(mn[g]) : -8.0f * nano_h2f(sc[g]);
        acc += c * dsg;
    }
    return acc;
}

static void q4_q8_scalar(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int nb = w->k / NANO_QK;
    for (int n = n0; n < n1; n++)
        for (int i = 0; i < x->m; i++)
            y[(size_t)i * w->n + n] =
                nano_q4_q8_dot_scalar(w, n, x, i, 0, nb) + nano_q4_q8_corr_scalar(w, n, x, i);
}

static void q8_f32_scalar(const nano_q8_matrix *w, const float *x, float *y, int m, int n0, int n1) {
    const int K = w->k, nb = K / NANO_QK;
    for (int n = n0; n < n1; n++) {
        const int8_t *row = w->qweight + (size_t)n * K;
        const uint16_t *sc = w->scales + (size_t)n * nb;
        for (int i = 0; i < m; i++) {
            const float *xr = x + (size_t)i * K;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                float s = 0.0f;
                for (int j = 0; j < NANO_QK; j++) s += (float)row[b * NANO_QK + j] * xr[b * NANO_QK + j];
                acc += nano_h2f(sc[b]) * s;
            }
            y[(size_t)i * w->n + n] = acc;
        }
    }
}

static void q8_q8_scalar(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int K = w->k, nb = K / NANO_QK;
    for (int n = n0; n < n1; n++) {
        const int8_t *row = w->qweight + (size_t)n * K;
        const uint16_t *sc = w->scales + (size_t)n * nb;
        for (int i = 0; i < x->m; i++) {
            const int8_t *xq = x->q + (size_t)i * K;
            const float *xd = x->d + (size_t)i * nb;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                int32_t isum = 0;
                for (int j = 0; j < NANO_QK; j++) isum += (int32_t)row[b * NANO_QK + j] * xq[b * NANO_QK + j];
                acc += (nano_h2f(sc[b]) * xd[b]) * (float)isum;
            }
            y[(size_t)i * w->n + n] = acc;
        }
    }
}

/* d = max|x| / 127, q = round-half-even(x * (127 / max|x|)), ds = d * sum(q).
 * NaN activations give unspecified (but in-range) codes. */
void nano_quant_row_scalar(const float *x, int k, int8_t *q, float *d, float *ds) {
    for (int b = 0; b < k / NANO_QK; b++) {
        const float *xb = x + b * NANO_QK;
        float amax = 0.0f;
        for (int j = 0; j < NANO_QK; j++) {
            const float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        const float db = amax / 127.0f;
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < NANO_QK; j++) {
            const float r = nearbyintf(xb[j] * id);
            const int v = (r >= -127.0f && r <= 127.0f) ? (int)r : 0;
            q[b * NANO_QK + j] = (int8_t)v;
            sum += v;
        }
        d[b] = db;
        ds[b] = db * (float)sum;
    }
}

const nano_kernel_table nano_kernels_scalar = {
    "scalar", nano_q4_f32_rows_scalar, q4_q8_scalar, q8_f32_scalar, q8_q8_scalar,
    nano_quant_row_scalar,
};
