/* q4_avx512.c - AVX-512 (F/BW/VL/DQ) + VNNI integer kernels.
 *
 * int4 x int8: four 32-column blocks (64 bytes of codes) per step. Low nibbles
 * of 128-bit lane j are columns 0..15 of block b+j, high nibbles columns
 * 16..31; the activations are regrouped to match with one vpermt2q each and
 * vpdpbusd (u8 code x s8 act, 4 products summed per int32 lane) accumulates
 * both halves into one register: int32 lanes 4j..4j+3 belong to block b+j.
 * Scaling works as in q4_avx2.c (per-lane activation scale, zero point
 * folded in as -2 ds per lane). int8 weights use |w| x sign-adjusted x.
 * The fp32-activation paths and the activation quantizer are the AVX2 ones
 * (AVX2 code runs unchanged on every AVX-512 CPU). Tails use scalar code. */
#include <immintrin.h>
#include <string.h>

#include "kernels_internal.h"

#define INLINE static inline __attribute__((always_inline))

INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* four floats -> [a0 x4, a1 x4, a2 x4, a3 x4] */
INLINE __m512 expand4(__m128 v4) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v4));
}
/* two floats -> [a0 x8, a1 x8] */
INLINE __m512 expand2x8(__m128 v2) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v2));
}
INLINE __m128 load4h(const uint16_t *p) {
    return _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)p));
}
INLINE __m128 load2h(const uint16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(v));
}

static float q4_q8_tail_block(const nano_q4_matrix *w, int n, const nano_q8_act *x, int i, int b) {
    const int K = w->k, ng = nano_q4_ngroups(w), g = b * NANO_QK / w->group_size;
    const uint8_t *blk = w->qweight + (size_t)n * (K / 2) + (size_t)b * NANO_Q4_BLOCK_BYTES;
    const int8_t *xq = x->q + (size_t)i * K + (size_t)b * NANO_QK;
    int32_t isum = 0;
    for (int j = 0; j < 16; j++) isum += (blk[j] & 15) * xq[j] + (blk[j] >> 4) * xq[j + 16];
    const size_t xb = (size_t)i * (K / NANO_QK) + b;
    const float s = h2f(w->scales[(size_t)n * ng + g]);
    const float ds = x->ds[xb];
    if (w->mins) return s * (x->d[xb] * (float)isum) + h2f(w->mins[(size_t)n * ng + g]) * ds;
    return s * (x->d[xb] * (float)isum - 8.0f * ds);
}

/* GS: 32, 64 or 128 (compile-time), NR weight rows x MR activation rows */
INLINE void q4q8_tile(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n, int i,
                      const int NR, const int MR, const int GS, const int ASYM) {
    const int K = w->k, nb = K / NANO_QK, ng = nano_q4_ngroups(w);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i ilo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i ihi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    __m512 acc[NR][MR];
    for (int r = 0; r < NR; r++)
        for (int m = 0; m < MR; m++) acc[r][m] = _mm512_setzero_ps();
    const uint8_t *wr[NR];
    const uint16_t *sc[NR], *mn[NR];
    for (int r = 0; r < NR; r++) {
        wr[r] = w->qweight + (size_t)(n + r) * (K / 2);
        sc[r] = w->scales + (size_t)(n + r) * ng;
        mn[r] = ASYM ? w->mins + (size_t)(n + r) * ng : NULL;
    }
    const __m128 cz = _mm_set1_ps(ASYM ? 0.25f : -2.0f);
    int b = 0;
    for (; b + 3 < nb; b += 4) {
        __m512i xlo[MR], xhi[MR];
        __m512 dxv[MR], dsv[MR];
        for (int m = 0; m < MR; m++) {
            const int8_t *xq = x->q + (size_t)(i + m) * K + b * 32;
            const __m512i a = _mm512_loadu_si512(xq), c = _mm512_loadu_si512(xq + 64);
            xlo[m] = _mm512_permutex2var_epi64(a, ilo, c);
            xhi[m] = _mm512_permutex2var_epi64(a, ihi, c);
            const size_t xb = (size_t)(i + m) * nb + b;
            dxv[m] = expand4(_mm_loadu_ps(x->d + xb));
            dsv[m] = expand4(_mm_mul_ps(_mm_loadu_ps(x->ds + xb), cz));
        }
        for (int r = 0; r < NR; r++) {
            const __m512i wv = _mm512_loadu_si512(wr[r] + b * 16);
            const __m512i lo = _mm512_and_si512(wv, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m4);
            __m512 sv, mv = _mm512_setzero_ps();
            if (GS == 32) {
                sv = expand4(load4h(sc[r] + b));
                if (ASYM) mv = expand4(load4h(mn[r] + b));
            } else if (GS == 64) {
                sv = expand2x8(load2h(sc[r] + b / 2));
                if (ASYM) mv = expand2x8(load2h(mn[r] + b / 2));
            } else {
                sv = _mm512_set1_ps(h2f(sc[r][b / 4]));
                if (ASYM) mv = _mm512_set1_ps(h2f(mn[r][b / 4]));
            }
            for (int m = 0; m < MR; m++) {
                __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xlo[m]);
                is = _mm512_dpbusd_epi32(is, hi, xhi[m]);
                const __m512 f = _mm512_cvtepi32_ps(is);
                if (ASYM) {
                    acc[r][m] = _mm512_fmadd_ps(_mm512_mul_ps(f, dxv[m]), sv, acc[r][m]);
                    acc[r][m] = _mm512_fmadd_ps(mv, dsv[m], acc[r][m]);
                } else {
                    acc[r][m] = _mm512_fmadd_ps(_mm512_fmadd_ps(f, dxv[m], dsv[m]), sv, acc[r][m]);
                }
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int m = 0; m < MR; m++) {
            float v = _mm512_reduce_add_ps(acc[r][m]);
            for (int t = b; t < nb; t++) v += q4_q8_tail_block(w, n + r, x, i + m, t);
            y[(size_t)(i + m) * w->n + n + r] = v;
        }
}

#define MB 64

#define Q4Q8_VARIANT(NAME, GS, ASYM)                                                      \
    static void NAME(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) { \
        const int M = x->m;                                                               \
        for (int i0 = 0; i0 < M; i0 += MB) {                                              \
            const int i1 = i0 + MB < M ? i0 + MB : M;                                     \
            int n = n0;                                                                   \
            for (; n + 4 <= n1; n += 4) {                                                 \
                int i = i0;                                                               \
                for (; i + 3 <= i1; i += 3) q4q8_tile(w, x, y, n, i, 4, 3, GS, ASYM);     \
                for (; i < i1; i++) q4q8_tile(w, x, y, n, i, 4, 1, GS, ASYM);             \
            }                                                                             \
            for (; n < n1; n++)                                                           \
                for (int i = i0; i < i1; i++) q4q8_tile(w, x, y, n, i, 1, 1, GS, ASYM);   \
        }                                                                                 \
    }
Q4Q8_VARIANT(q4q8_g32_sym, 32, 0)
Q4Q8_VARIANT(q4q8_g32_asym, 32, 1)
Q4Q8_VARIANT(q4q8_g64_sym, 64, 0)
Q4Q8_VARIANT(q4q8_g64_asym, 64, 1)
Q4Q8_VARIANT(q4q8_g128_sym, 128, 0)
Q4Q8_VARIANT(q4q8_g128_asym, 128, 1)

static void q4_q8_avx512(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int a = w->mins != NULL;
    switch (w->group_size) {
    case 32: (a ? q4q8_g32_asym : q4q8_g32_sym)(w, x, y, n0, n1); break;
    case 64: (a ? q4q8_g64_asym : q4q8_g64_sym)(w, x, y, n0, n1); break;
    default: (a ? q4q8_g128_asym : q4q8_g128_sym)(w, x, y, n0, n1); break;
    }
}

/* int8 weights x int8 activations: two blocks per 512-bit step */
INLINE void q8q8_tile(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n, int i,
                      const int NR) {
    const int K = w->k, nb = K / NANO_QK;
    const int8_t *xr = x->q + (size_t)i * K;
    const float *xd = x->d + (size_t)i * nb;
    __m512 tot[NR];
    for (int r = 0; r < NR; r++) tot[r] = _mm512_setzero_ps();
    int b = 0;
    for (; b + 1 < nb; b += 2) {
        const __m512i xv = _mm512_loadu_si512(xr + b * 32);
        const __m512 dx = expand2x8(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(xd + b))));
        for (int r = 0; r < NR; r++) {
            const int8_t *wb = w->qweight + (size_t)(n + r) * K + b * 32;
            const __m512i wv = _mm512_loadu_si512(wb);
            const __mmask64 neg = _mm512_movepi8_mask(wv);
            const __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            const __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(wv), sx);
            const __m512 sv = expand2x8(load2h(w->scales + (size_t)(n + r) * nb + b));
            tot[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dx, sv), tot[r]);
        }
    }
    for (int r = 0; r < NR; r++) {
        float v = _mm512_reduce_add_ps(tot[r]);
        for (int t = b; t < nb; t++) {
            const int8_t *wb = w->qweight + (size_t)(n + r) * K + t * 32;
            int32_t isum = 0;
            for (int j = 0; j < 32; j++) isum += (int32_t)wb[j] * xr[t * 32 + j];
            v += (h2f(w->scales[(size_t)(n + r) * nb + t]) * xd[t]) * (float)isum;
        }
        y[(size_t)i * w->n + n + r] = v;
    }
}

static void q8_q8_avx512(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    for (int i = 0; i < x->m; i++) {
        int n = n0;
        for (; n + 4 <= n1; n += 4) q8q8_tile(w, x, y, n, i, 4);
        for (; n < n1; n++) q8q8_tile(w, x, y, n, i, 1);
    }
}

const nano_kernel_table nano_kernels_avx512 = {
    "avx512", nano_q4_f32_avx2, q4_q8_avx512, nano_q8_f32_avx2, q8_q8_avx512, nano_quant_row_avx2,
};
