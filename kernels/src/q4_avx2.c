/* q4_avx2.c - AVX2 + FMA + F16C kernels (x86-64 since Haswell / Zen).
 *
 * int4 x int8: two 32-column blocks (32 bytes of codes) at a time. The low
 * nibbles of the 32 bytes are columns 0..15 of blocks b and b+1, the high
 * nibbles columns 16..31, so activations are permuted to match
 * ([b 0..15 | b+1 0..15], [b 16..31 | b+1 16..31]) once per tile and shared
 * by the NR weight rows. maddubs (u8 code x s8 act -> s16 pairs, at most
 * 2*15*127 so never saturating) + madd(1) give 8 int32 lanes: lanes 0..3
 * belong to block b, 4..7 to block b+1. Each lane is scaled by its block's
 * activation scale and the symmetric zero point is folded in per lane
 * (-8 * ds / 4 per lane), so one fma per block pair and row finishes it.
 * Rows are processed NR at a time against MR activation rows (GEMM reuses
 * each unpacked weight pair for MR activation rows). Tails use scalar code. */
#include <immintrin.h>
#include <string.h>

#include "kernels_internal.h"

#define INLINE static inline __attribute__((always_inline))

INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* [a0, a1] (two floats at p) -> [a0 x4, a1 x4] */
INLINE __m256 expand2(__m128 v2) {
    const __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v2), idx);
}
INLINE __m128 load2f(const float *p) { return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p)); }
INLINE __m128 load2h(const uint16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(v));
}

/* scalar tail: block b of weight row n against act row i, including its zero/min term */
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

/* NR weight rows starting at n  x  MR activation rows starting at i. */
INLINE void q4q8_tile(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n, int i,
                      const int NR, const int MR, const int G32, const int ASYM) {
    const int K = w->k, nb = K / NANO_QK, ng = nano_q4_ngroups(w);
    const int gshift = w->group_size == 64 ? 1 : 2; /* blocks per group = 1 << gshift (G > 32) */
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[NR][MR];
    for (int r = 0; r < NR; r++)
        for (int m = 0; m < MR; m++) acc[r][m] = _mm256_setzero_ps();
    const uint8_t *wr[NR];
    const uint16_t *sc[NR], *mn[NR];
    for (int r = 0; r < NR; r++) {
        wr[r] = w->qweight + (size_t)(n + r) * (K / 2);
        sc[r] = w->scales + (size_t)(n + r) * ng;
        mn[r] = ASYM ? w->mins + (size_t)(n + r) * ng : NULL;
    }
    const int8_t *xr[MR];
    const float *xd[MR], *xs[MR];
    for (int m = 0; m < MR; m++) {
        xr[m] = x->q + (size_t)(i + m) * K;
        xd[m] = x->d + (size_t)(i + m) * nb;
        xs[m] = x->ds + (size_t)(i + m) * nb;
    }
    const __m128 cz = _mm_set1_ps(ASYM ? 0.25f : -2.0f);
    for (int b = 0; b + 1 < nb; b += 2) {
        __m256i xlo[MR], xhi[MR];
        __m256 dxv[MR], dsv[MR];
        for (int m = 0; m < MR; m++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(xr[m] + b * 32));
            const __m256i c = _mm256_loadu_si256((const __m256i *)(xr[m] + b * 32 + 32));
            xlo[m] = _mm256_permute2x128_si256(a, c, 0x20);
            xhi[m] = _mm256_permute2x128_si256(a, c, 0x31);
            dxv[m] = expand2(load2f(xd[m] + b));
            dsv[m] = expand2(_mm_mul_ps(load2f(xs[m] + b), cz));
        }
        for (int r = 0; r < NR; r++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(wr[r] + b * 16));
            const __m256i lo = _mm256_and_si256(wv, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
            __m256 sv, mv = _mm256_setzero_ps();
            if (G32) {
                sv = expand2(load2h(sc[r] + b));
                if (ASYM) mv = expand2(load2h(mn[r] + b));
            } else {
                sv = _mm256_set1_ps(h2f(sc[r][b >> gshift]));
                if (ASYM) mv = _mm256_set1_ps(h2f(mn[r][b >> gshift]));
            }
            for (int m = 0; m < MR; m++) {
                const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo[m]),
                                                     _mm256_maddubs_epi16(hi, xhi[m]));
                const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
                if (ASYM) {
                    acc[r][m] = _mm256_fmadd_ps(_mm256_mul_ps(f, dxv[m]), sv, acc[r][m]);
                    acc[r][m] = _mm256_fmadd_ps(mv, dsv[m], acc[r][m]);
                } else {
                    acc[r][m] = _mm256_fmadd_ps(_mm256_fmadd_ps(f, dxv[m], dsv[m]), sv, acc[r][m]);
                }
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int m = 0; m < MR; m++) {
            float v = hsum8(acc[r][m]);
            if (nb & 1) v += q4_q8_tail_block(w, n + r, x, i + m, nb - 1);
            y[(size_t)(i + m) * w->n + n + r] = v;
        }
}

/* ---- 4-row tiles ------------------------------------------------------------
 * For 4 weight rows and one activation row, the per-row s16 partial sums of a
 * block pair are folded with three vphaddw into one vector holding the 8 block
 * sums [r0 r1 r2 r3 | r0 r1 r2 r3] (blocks b | b+1; a block sum of 16 s16
 * lanes is at most 16*15*128 = 30720, so s16 never overflows), then one madd,
 * one cvt and two fma finish all 4 rows: the float work is paid once per 4 rows.
 * Weight scales (and mins) of the 4 rows are first converted and transposed
 * into a small table [group][row] so a block pair needs one load. */
#define SCHUNK 256 /* groups per scale-table chunk (multiple of 8) */

/* tab[4 g + r] = scale of group g0 + g of row r (rows ng apart), g < cnt */
static void scale_table4(const uint16_t *s, int ng, int g0, int cnt, float *tab) {
    int g = 0;
    for (; g + 8 <= cnt; g += 8) {
        const __m256 r0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + g0 + g)));
        const __m256 r1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + ng + g0 + g)));
        const __m256 r2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * ng + g0 + g)));
        const __m256 r3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 3 * ng + g0 + g)));
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpacklo_ps(r2, r3);
        const __m256 t2 = _mm256_unpackhi_ps(r0, r1), t3 = _mm256_unpackhi_ps(r2, r3);
        const __m256 u0 = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0));
        const __m256 u1 = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2));
        const __m256 u2 = _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(1, 0, 1, 0));
        const __m256 u3 = _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(3, 2, 3, 2));
        _mm256_storeu_ps(tab + 4 * g + 0, _mm256_permute2f128_ps(u0, u1, 0x20));
        _mm256_storeu_ps(tab + 4 * g + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
        _mm256_storeu_ps(tab + 4 * g + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
        _mm256_storeu_ps(tab + 4 * g + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
    }
    for (; g < cnt; g++)
        for (int r = 0; r < 4; r++) tab[4 * g + r] = h2f(s[(size_t)r * ng + g0 + g]);
}

INLINE __m256 tab_pair(const float *tab, int rel_b, const int GS) {
    if (GS == 32) return _mm256_loadu_ps(tab + 4 * rel_b);
    if (GS == 64) return _mm256_broadcast_ps((const __m128 *)(tab + 4 * (rel_b >> 1)));
    return _mm256_broadcast_ps((const __m128 *)(tab + 4 * (rel_b >> 2)));
}

/* ---- GEMM (m > 1): prepared activation tiles, 4 weight rows x 4 activation rows ----
 * K is walked in chunks of GKB blocks and M in blocks of GMB rows. For each (row block,
 * K chunk) the activations are prepared once into a stack tile (nibble-matched halves
 * as in q4q8_tile, and the activation scales already expanded to the lane order the
 * reduction leaves: [d_b x4 | d_b+1 x4]), so the inner loop reads them as memory
 * operands, and every weight tile of the thread's output range reuses them. Per block
 * pair, 4 weight rows are unpacked once and multiplied with 4 activation rows (16 s16
 * partial-sum vectors, folded with vphaddw two rows at a time to keep the register
 * count down); then per activation row one madd, one cvt and two fma finish the 4
 * rows x 2 blocks. Partial dot products of a K chunk are added into y (the float
 * summation order differs from the scalar reference only by the chunking: the int
 * block sums are exact). */
#ifndef GKB
#define GKB 16 /* blocks per K chunk (multiple of 4: whole groups for g128) */
#endif
#ifndef GMB
#define GMB 64 /* activation rows per prepared tile (the tile is 64 KiB of stack) */
#endif

typedef struct {
    int8_t q[GMB][GKB * 32];  /* per pair: [b 0..15 | b+1 0..15], [b 16..31 | b+1 16..31] */
    float d[GMB][GKB / 2][8]; /* [d_b x4 | d_b+1 x4] */
    float s[GMB][GKB / 2][8]; /* the same for c * ds (c = -8 symmetric, 1 asymmetric) */
} gemm_act_tile;

static void gemm_prep(const nano_q8_act *x, int i0, int mr, int b0, int npairs, float cz,
                      gemm_act_tile *t) {
    const int K = x->k, nb = K / NANO_QK;
    for (int m = 0; m < mr; m++) {
        const int8_t *xq = x->q + (size_t)(i0 + m) * K + b0 * 32;
        const float *xd = x->d + (size_t)(i0 + m) * nb + b0, *xs = x->ds + (size_t)(i0 + m) * nb + b0;
        for (int p = 0; p < npairs; p++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(xq + p * 64));
            const __m256i c = _mm256_loadu_si256((const __m256i *)(xq + p * 64 + 32));
            _mm256_store_si256((__m256i *)(t->q[m] + p * 64), _mm256_permute2x128_si256(a, c, 0x20));
            _mm256_store_si256((__m256i *)(t->q[m] + p * 64 + 32), _mm256_permute2x128_si256(a, c, 0x31));
            _mm256_store_ps(t->d[m][p], _mm256_set_m128(_mm_set1_ps(xd[2 * p + 1]), _mm_set1_ps(xd[2 * p])));
            _mm256_store_ps(t->s[m][p], _mm256_set_m128(_mm_set1_ps(xs[2 * p + 1] * cz), _mm_set1_ps(xs[2 * p] * cz)));
        }
    }
}

INLINE __m256i gemm_p(__m256i lo, __m256i hi, const int8_t *xq) {
    return _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)xq)),
                            _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xq + 32))));
}

/* 4 weight rows (wr, row stride ws) x MR prepared rows [m0, m0+MR) over npairs pairs;
 * out[m] = the 4 row sums (lanes 0..3 of a __m128) */
INLINE void gemm_kernel(const uint8_t *wr, size_t ws, int npairs, const float *stab,
                        const float *mtab, const gemm_act_tile *t, int m0, __m128 *out,
                        const int MR, const int GS, const int ASYM) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4], acc2[4]; /* MR <= 4; fixed sizes keep them in registers (a [MR] array is a VLA to gcc) */
    for (int m = 0; m < MR; m++) acc[m] = acc2[m] = _mm256_setzero_ps();
    for (int p = 0; p < npairs; p++) {
        __m256i h01[4];
        {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(wr + p * 32));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wr + ws + p * 32));
            const __m256i lo0 = _mm256_and_si256(w0, m4), hi0 = _mm256_and_si256(_mm256_srli_epi16(w0, 4), m4);
            const __m256i lo1 = _mm256_and_si256(w1, m4), hi1 = _mm256_and_si256(_mm256_srli_epi16(w1, 4), m4);
            for (int m = 0; m < MR; m++) {
                const int8_t *xq = t->q[m0 + m] + p * 64;
                h01[m] = _mm256_hadd_epi16(gemm_p(lo0, hi0, xq), gemm_p(lo1, hi1, xq));
            }
        }
        const __m256i w2 = _mm256_loadu_si256((const __m256i *)(wr + 2 * ws + p * 32));
        const __m256i w3 = _mm256_loadu_si256((const __m256i *)(wr + 3 * ws + p * 32));
        const __m256i lo2 = _mm256_and_si256(w2, m4), hi2 = _mm256_and_si256(_mm256_srli_epi16(w2, 4), m4);
        const __m256i lo3 = _mm256_and_si256(w3, m4), hi3 = _mm256_and_si256(_mm256_srli_epi16(w3, 4), m4);
        const __m256 sv = tab_pair(stab, 2 * p, GS);
        for (int m = 0; m < MR; m++) {
            const int8_t *xq = t->q[m0 + m] + p * 64;
            const __m256i h = _mm256_hadd_epi16(h01[m], _mm256_hadd_epi16(gemm_p(lo2, hi2, xq), gemm_p(lo3, hi3, xq)));
            const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(h, ones));
            const __m256 dv = _mm256_load_ps(t->d[m0 + m][p]);
            if (ASYM) {
                acc[m] = _mm256_fmadd_ps(_mm256_mul_ps(f, dv), sv, acc[m]);
            } else {
                acc[m] = _mm256_fmadd_ps(_mm256_fmadd_ps(f, dv, _mm256_load_ps(t->s[m0 + m][p])), sv, acc[m]);
            }
        }
    }
    /* asymmetric: the mins term sum_b min_b * (d_b * sum x_b) does not involve the codes;
     * a second pass keeps its 4 accumulators out of the main loop's registers (the
     * summation order is unchanged: acc2 was always a separate sum added at the end) */
    if (ASYM)
        for (int m = 0; m < MR; m++)
            for (int p = 0; p < npairs; p++)
                acc2[m] = _mm256_fmadd_ps(tab_pair(mtab, 2 * p, GS), _mm256_load_ps(t->s[m0 + m][p]), acc2[m]);
    for (int m = 0; m < MR; m++) {
        const __m256 a = ASYM ? _mm256_add_ps(acc[m], acc2[m]) : acc[m];
        out[m] = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    }
}

/* output columns [n0, n1) x all activation rows */
INLINE void q4q8_gemm(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1,
                      const int GS, const int ASYM) {
    const int K = w->k, N = w->n, M = x->m, nb = K / NANO_QK, ng = nano_q4_ngroups(w), bpg = GS / 32;
    const size_t ws = (size_t)(K / 2);
    const int n4 = n0 + (n1 - n0) / 4 * 4;
    gemm_act_tile t __attribute__((aligned(32)));
    float stab[GKB * 4] __attribute__((aligned(32)));
    float mtab[ASYM ? GKB * 4 : 1] __attribute__((aligned(32)));
    const int npt = nb / 2 * 2; /* blocks done in pairs; an odd last block goes to the tail */
    for (int i0 = 0; i0 < M; i0 += GMB) {
        const int mr = M - i0 < GMB ? M - i0 : GMB;
        for (int b0 = 0; b0 < npt || (b0 == 0 && npt == 0); b0 += GKB) {
            const int nbc = npt - b0 < GKB ? npt - b0 : GKB; /* even */
            const int last = b0 + GKB >= npt;
            if (nbc > 0) gemm_prep(x, i0, mr, b0, nbc / 2, ASYM ? 1.0f : -8.0f, &t);
            const int g0 = b0 / bpg, gcnt = (nbc + bpg - 1) / bpg;
            for (int n = n0; n < n4; n += 4) {
                if (nbc > 0) {
                    scale_table4(w->scales + (size_t)n * ng, ng, g0, gcnt, stab);
                    if (ASYM) scale_table4(w->mins + (size_t)n * ng, ng, g0, gcnt, mtab);
                }
                const uint8_t *wr = w->qweight + (size_t)n * ws + (size_t)b0 * 16;
                if (n + 4 < n4) /* the next weight tile: 4 rows x nbc * 16 bytes, far apart */
                    for (int r = 0; r < 4; r++) {
                        for (int o = 0; o < nbc * 16; o += 64)
                            _mm_prefetch((const char *)(wr + (size_t)(4 + r) * ws + o), _MM_HINT_T0);
                        /* and its scales (and mins): scale_table4 would otherwise wait on them */
                        const size_t so = (size_t)(n + 4 + r) * ng + g0;
                        _mm_prefetch((const char *)(w->scales + so), _MM_HINT_T0);
                        if (ASYM) _mm_prefetch((const char *)(w->mins + so), _MM_HINT_T0);
                    }
                for (int m = 0; m < mr;) {
                    __m128 v[4];
                    int step;
                    if (mr - m >= 4) { gemm_kernel(wr, ws, nbc / 2, stab, mtab, &t, m, v, 4, GS, ASYM); step = 4; }
                    else if (mr - m >= 2) { gemm_kernel(wr, ws, nbc / 2, stab, mtab, &t, m, v, 2, GS, ASYM); step = 2; }
                    else { gemm_kernel(wr, ws, nbc / 2, stab, mtab, &t, m, v, 1, GS, ASYM); step = 1; }
                    for (int u = 0; u < step; u++) {
                        float *yp = y + (size_t)(i0 + m + u) * N + n;
                        __m128 r = v[u];
                        if (b0 > 0) r = _mm_add_ps(r, _mm_loadu_ps(yp));
                        if (last && npt < nb) { /* odd block count: the last block of the rows */
                            float tl[4];
                            for (int q = 0; q < 4; q++) tl[q] = q4_q8_tail_block(w, n + q, x, i0 + m + u, nb - 1);
                            r = _mm_add_ps(r, _mm_loadu_ps(tl));
                        }
                        _mm_storeu_ps(yp, r);
                    }
                    m += step;
                }
            }
            if (npt == 0) break;
        }
        for (int n = n4; n < n1; n++)
            for (int i = i0; i < i0 + mr; i++) q4q8_tile(w, x, y, n, i, 1, 1, GS == 32, ASYM);
    }
}

/* ---- GEMV (one activation row): the decode hot path ------------------------
 * The activation row is re-laid once per call into a stack buffer: per block pair the
 * nibble-matched halves (xlo, xhi as in q4q8_tile), and per 8 blocks the activation
 * scales in the order the reduction below leaves the block sums in:
 * [b0 b2 b4 b6 | b1 b3 b5 b7]. Then each weight row is streamed 8 blocks (128 bytes)
 * at a time: 4 x (and, shift, 2 maddubs, add), three vphaddw (block sums of 16 products
 * stay within s16, see the 4-row tiles above), one madd, one cvt, and two or three fma with the
 * row's scales (and mins) read straight from the row: no per-row-set scale table. */
#define GEMV_KMAX 16384
#ifndef GEMV_PF
#define GEMV_PF 2048 /* bytes of the weight stream prefetched ahead (the rows are contiguous) */
#endif
#ifndef GEMV_PF_HINT
#define GEMV_PF_HINT _MM_HINT_T0
#endif
#ifndef GEMV_PF2
#define GEMV_PF2 0 /* optional second, farther prefetch into L2 (0: off) */
#endif

INLINE __m256 gemv_scales8(const uint16_t *s, int b, const int GS) {
    if (GS == 32) {
        const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + b)));
        return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    }
    if (GS == 64) { /* groups b/2 .. b/2+3: [g0 g1 g2 g3 | g0 g1 g2 g3] */
        const __m128 v = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(s + (b >> 1))));
        return _mm256_set_m128(v, v);
    }
    /* GS == 128: groups b/4, b/4+1: [g0 g0 g1 g1 | g0 g0 g1 g1] */
    const __m128 v = load2h(s + (b >> 2));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v), _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1));
}

INLINE void q4q8_gemv(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1,
                      const int GS, const int ASYM) {
    const int K = w->k, nb = K / NANO_QK, ng = nano_q4_ngroups(w);
    const int n8 = nb / 8 * 8, np = nb / 2 * 2; /* blocks done 8 at a time / in pairs */
    int8_t xq[GEMV_KMAX] __attribute__((aligned(32)));
    float xd[GEMV_KMAX / 32] __attribute__((aligned(32)));
    float xs[GEMV_KMAX / 32] __attribute__((aligned(32)));
    const float cz = ASYM ? 1.0f : -8.0f;
    for (int b = 0; b + 1 < nb; b += 2) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(x->q + b * 32));
        const __m256i c = _mm256_loadu_si256((const __m256i *)(x->q + b * 32 + 32));
        _mm256_store_si256((__m256i *)(xq + b * 32), _mm256_permute2x128_si256(a, c, 0x20));
        _mm256_store_si256((__m256i *)(xq + b * 32 + 32), _mm256_permute2x128_si256(a, c, 0x31));
    }
    for (int b = 0; b < n8; b += 8)
        for (int j = 0; j < 4; j++) {
            xd[b + j] = x->d[b + 2 * j];
            xd[b + 4 + j] = x->d[b + 2 * j + 1];
            xs[b + j] = x->ds[b + 2 * j] * cz;
            xs[b + 4 + j] = x->ds[b + 2 * j + 1] * cz;
        }
    for (int b = n8; b < nb; b++) {
        xd[b] = x->d[b];
        xs[b] = x->ds[b] * cz;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int n = n0; n < n1; n++) {
        const uint8_t *wr = w->qweight + (size_t)n * (K / 2);
        const uint16_t *sc = w->scales + (size_t)n * ng;
        const uint16_t *mn = ASYM ? w->mins + (size_t)n * ng : NULL;
        __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
        int b = 0;
        for (; b < n8; b += 8) {
            __m256i P[4];
#if GEMV_PF > 0
            _mm_prefetch((const char *)(wr + b * 16 + GEMV_PF), GEMV_PF_HINT);
            _mm_prefetch((const char *)(wr + b * 16 + GEMV_PF + 64), GEMV_PF_HINT);
            if ((b & 31) == 0) { /* the scales (and mins) streams: a line per 32 blocks */
                _mm_prefetch((const char *)(sc + b + GEMV_PF / 16), GEMV_PF_HINT);
                if (ASYM) _mm_prefetch((const char *)(mn + b + GEMV_PF / 16), GEMV_PF_HINT);
            }
#endif
#if GEMV_PF2 > 0
            _mm_prefetch((const char *)(wr + b * 16 + GEMV_PF2), _MM_HINT_T1);
            _mm_prefetch((const char *)(wr + b * 16 + GEMV_PF2 + 64), _MM_HINT_T1);
#endif
            for (int j = 0; j < 4; j++) {
                const __m256i wv = _mm256_loadu_si256((const __m256i *)(wr + b * 16 + j * 32));
                const __m256i lo = _mm256_and_si256(wv, m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
                P[j] = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)(xq + b * 32 + j * 64))),
                    _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xq + b * 32 + j * 64 + 32))));
            }
            const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(P[0], P[1]), _mm256_hadd_epi16(P[2], P[3]));
            const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(h, ones));
            const __m256 sv = gemv_scales8(sc, b, GS);
            const __m256 dv = _mm256_load_ps(xd + b), dsv = _mm256_load_ps(xs + b);
            if (ASYM) {
                acc = _mm256_fmadd_ps(_mm256_mul_ps(f, dv), sv, acc);
                acc2 = _mm256_fmadd_ps(gemv_scales8(mn, b, GS), dsv, acc2);
            } else {
                acc = _mm256_fmadd_ps(_mm256_fmadd_ps(f, dv, dsv), sv, acc);
            }
        }
        for (; b < np; b += 2) { /* leftover pairs: lanes 0..3 block b, 4..7 block b+1 */
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(wr + b * 16));
            const __m256i lo = _mm256_and_si256(wv, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
            const __m256i s16 = _mm256_add_epi16(
                _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)(xq + b * 32))),
                _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xq + b * 32 + 32))));
            const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
            __m256 sv, mv = _mm256_setzero_ps();
            if (GS == 32) {
                sv = expand2(load2h(sc + b));
                if (ASYM) mv = expand2(load2h(mn + b));
            } else {
                const int g = b * 32 / GS;
                sv = _mm256_set1_ps(h2f(sc[g]));
                if (ASYM) mv = _mm256_set1_ps(h2f(mn[g]));
            }
            const __m256 dv = expand2(load2f(xd + b)), dsv = expand2(_mm_mul_ps(load2f(xs + b), _mm_set1_ps(0.25f)));
            if (ASYM) {
                acc = _mm256_fmadd_ps(_mm256_mul_ps(f, dv), sv, acc);
                acc2 = _mm256_fmadd_ps(mv, dsv, acc2);
            } else {
                acc = _mm256_fmadd_ps(_mm256_fmadd_ps(f, dv, dsv), sv, acc);
            }
        }
        float v = hsum8(ASYM ? _mm256_add_ps(acc, acc2) : acc);
        if (b < nb) v += q4_q8_tail_block(w, n, x, 0, b);
        y[n] = v;
    }
}

#define MB 64 /* activation rows per cache block in GEMM */

#define Q4Q8_VARIANT(NAME, GS, ASYM)                                                      \
    static void NAME(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) { \
        const int M = x->m;                                                               \
        if (M == 1 && w->k <= GEMV_KMAX) {                                                \
            q4q8_gemv(w, x, y, n0, n1, GS, ASYM);                                         \
            return;                                                                       \
        }                                                                                 \
        q4q8_gemm(w, x, y, n0, n1, GS, ASYM);                                             \
    }
Q4Q8_VARIANT(q4q8_g32_sym, 32, 0)
Q4Q8_VARIANT(q4q8_g32_asym, 32, 1)
Q4Q8_VARIANT(q4q8_g64_sym, 64, 0)
Q4Q8_VARIANT(q4q8_g64_asym, 64, 1)
Q4Q8_VARIANT(q4q8_g128_sym, 128, 0)
Q4Q8_VARIANT(q4q8_g128_asym, 128, 1)

static void q4_q8_avx2(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int a = w->mins != NULL;
    switch (w->group_size) {
    case 32: (a ? q4q8_g32_asym : q4q8_g32_sym)(w, x, y, n0, n1); break;
    case 64: (a ? q4q8_g64_asym : q4q8_g64_sym)(w, x, y, n0, n1); break;
    default: (a ? q4q8_g128_asym : q4q8_g128_sym)(w, x, y, n0, n1); break;
    }
}

/* ---- int4 x fp32 ----------------------------------------------------------
 * Per group: gacc = sum q * x (codes widened to fp32), gx = sum x (shared by the
 * rows); then y += s * (gacc - 8 gx)   or   s * gacc + min * gx. */
INLINE void q4f32_tile(const nano_q4_matrix *w, const float *xr, float *yr, int n, const int NR,
                       const int ASYM) {
    const int K = w->k, G = w->group_size, ng = nano_q4_ngroups(w);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 tot[NR];
    const uint8_t *wr[NR];
    for (int r = 0; r < NR; r++) {
        tot[r] = _mm256_setzero_ps();
        wr[r] = w->qweight + (size_t)(n + r) * (K / 2);
    }
    for (int g = 0; g < ng; g++) {
        const int k0 = g * G, k1 = k0 + G < K ? k0 + G : K;
        __m256 gacc[NR], gx = _mm256_setzero_ps();
        for (int r = 0; r < NR; r++) gacc[r] = _mm256_setzero_ps();
        for (int k = k0; k < k1; k += 32) {
            const __m256 x0 = _mm256_loadu_ps(xr + k), x1 = _mm256_loadu_ps(xr + k + 8);
            const __m256 x2 = _mm256_loadu_ps(xr + k + 16), x3 = _mm256_loadu_ps(xr + k + 24);
            gx = _mm256_add_ps(gx, _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)));
            for (int r = 0; r < NR; r++) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(wr[r] + k / 2));
                const __m128i lo = _mm_and_si128(v, m4);
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
                const __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
                const __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
                const __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
                const __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
                gacc[r] = _mm256_fmadd_ps(q0, x0, gacc[r]);
                gacc[r] = _mm256_fmadd_ps(q1, x1, gacc[r]);
                gacc[r] = _mm256_fmadd_ps(q2, x2, gacc[r]);
                gacc[r] = _mm256_fmadd_ps(q3, x3, gacc[r]);
            }
        }
        for (int r = 0; r < NR; r++) {
            const __m256 s = _mm256_set1_ps(h2f(w->scales[(size_t)(n + r) * ng + g]));
            if (ASYM) {
                const __m256 mn = _mm256_set1_ps(h2f(w->mins[(size_t)(n + r) * ng + g]));
                tot[r] = _mm256_fmadd_ps(s, gacc[r], _mm256_fmadd_ps(mn, gx, tot[r]));
            } else {
                const __m256 c = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), gx, gacc[r]);
                tot[r] = _mm256_fmadd_ps(s, c, tot[r]);
            }
        }
    }
    for (int r = 0; r < NR; r++) yr[n + r] = hsum8(tot[r]);
}

/* GEMM (m >= 4): dequantize a 4-row x KC-column weight tile to fp32 once, then run a
 * 2-activation-row x 4-weight-row FMA micro-kernel over every activation row of the
 * cache block, accumulating partial dot products into y chunk by chunk. */
#define KC 512

static void dequant_tile_row(const nano_q4_matrix *w, int n, int k0, int kc, float *out) {
    const int G = w->group_size, ng = nano_q4_ngroups(w);
    const uint8_t *wr = w->qweight + (size_t)n * (w->k / 2);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int k = k0; k < k0 + kc; k += 32) {
        const int g = k / G;
        const float sc = h2f(w->scales[(size_t)n * ng + g]);
        const __m256 s = _mm256_set1_ps(sc);
        const __m256 bias = _mm256_set1_ps(w->mins ? h2f(w->mins[(size_t)n * ng + g]) : -8.0f * sc);
        const __m128i v = _mm_loadu_si128((const __m128i *)(wr + k / 2));
        const __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        float *o = out + (k - k0);
        _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), s, bias));
        _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), s, bias));
        _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), s, bias));
        _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), s, bias));
    }
}

INLINE __m128 hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

static void q4_f32_gemm_avx2(const nano_q4_matrix *w, const float *x, float *y, int M, int n0, int n1) {
    const int K = w->k;
    float wt[4 * KC] __attribute__((aligned(32)));
    for (int i0 = 0; i0 < M; i0 += MB) {
        const int i1 = i0 + MB < M ? i0 + MB : M;
        for (int n = n0; n < n1; n += 4) {
            const int nr = n1 - n < 4 ? n1 - n : 4;
            for (int k0 = 0; k0 < K; k0 += KC) {
                const int kc = K - k0 < KC ? K - k0 : KC;
                for (int r = 0; r < 4; r++) {
                    if (r < nr) dequant_tile_row(w, n + r, k0, kc, wt + r * KC);
                    else memset(wt + r * KC, 0, sizeof(float) * (size_t)kc);
                }
                for (int i = i0; i < i1; i += 2) {
                    const int two = i + 1 < i1;
                    const float *xa = x + (size_t)i * K + k0, *xb = two ? xa + K : xa;
                    __m256 a[2][4];
                    for (int u = 0; u < 2; u++)
                        for (int r = 0; r < 4; r++) a[u][r] = _mm256_setzero_ps();
                    for (int j = 0; j < kc; j += 8) {
                        const __m256 x0 = _mm256_loadu_ps(xa + j), x1 = _mm256_loadu_ps(xb + j);
                        for (int r = 0; r < 4; r++) {
                            const __m256 wv = _mm256_load_ps(wt + r * KC + j);
                            a[0][r] = _mm256_fmadd_ps(x0, wv, a[0][r]);
                            a[1][r] = _mm256_fmadd_ps(x1, wv, a[1][r]);
                        }
                    }
                    for (int u = 0; u <= two; u++) {
                        float v[4];
                        _mm_storeu_ps(v, hsum4x8(a[u][0], a[u][1], a[u][2], a[u][3]));
                        float *yp = y + (size_t)(i + u) * w->n + n;
                        for (int r = 0; r < nr; r++) yp[r] = k0 ? yp[r] + v[r] : v[r];
                    }
                }
            }
        }
    }
}

void nano_q4_f32_avx2(const nano_q4_matrix *w, const float *x, float *y, int m, int n0, int n1) {
    if (m >= 4) {
        q4_f32_gemm_avx2(w, x, y, m, n0, n1);
        return;
    }
    for (int i = 0; i < m; i++) {
        const float *xr = x + (size_t)i * w->k;
        float *yr = y + (size_t)i * w->n;
        int n = n0;
        if (w->mins) {
            for (; n + 4 <= n1; n += 4) q4f32_tile(w, xr, yr, n, 4, 1);
            for (; n < n1; n++) q4f32_tile(w, xr, yr, n, 1, 1);
        } else {
            for (; n + 4 <= n1; n += 4) q4f32_tile(w, xr, yr, n, 4, 0);
            for (; n < n1; n++) q4f32_tile(w, xr, yr, n, 1, 0);
        }
    }
}

/* ---- int8 weights ---------------------------------------------------------- */
INLINE void q8f32_tile(const nano_q8_matrix *w, const float *xr, float *yr, int n, const int NR) {
    const int K = w->k, nb = K / NANO_QK;
    __m256 tot[NR];
    for (int r = 0; r < NR; r++) tot[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const float *xb = xr + b * 32;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
        const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
        for (int r = 0; r < NR; r++) {
            const int8_t *wb = w->qweight + (size_t)(n + r) * K + b * 32;
#define CVT8(off) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(wb + off))))
            __m256 a = _mm256_mul_ps(CVT8(0), x0);
            a = _mm256_fmadd_ps(CVT8(8), x1, a);
            a = _mm256_fmadd_ps(CVT8(16), x2, a);
            a = _mm256_fmadd_ps(CVT8(24), x3, a);
#undef CVT8
            tot[r] = _mm256_fmadd_ps(a, _mm256_set1_ps(h2f(w->scales[(size_t)(n + r) * nb + b])), tot[r]);
        }
    }
    for (int r = 0; r < NR; r++) yr[n + r] = hsum8(tot[r]);
}

void nano_q8_f32_avx2(const nano_q8_matrix *w, const float *x, float *y, int m, int n0, int n1) {
    for (int i = 0; i < m; i++) {
        const float *xr = x + (size_t)i * w->k;
        float *yr = y + (size_t)i * w->n;
        int n = n0;
        for (; n + 4 <= n1; n += 4) q8f32_tile(w, xr, yr, n, 4);
        for (; n < n1; n++) q8f32_tile(w, xr, yr, n, 1);
    }
}

INLINE void q8q8_tile(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n, int i,
                      const int NR) {
    const int K = w->k, nb = K / NANO_QK;
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *xr = x->q + (size_t)i * K;
    const float *xd = x->d + (size_t)i * nb;
    __m256 tot[NR];
    for (int r = 0; r < NR; r++) tot[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xr + b * 32));
        const __m256 dx = _mm256_set1_ps(xd[b]);
        for (int r = 0; r < NR; r++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w->qweight + (size_t)(n + r) * K + b * 32));
            /* |w| (u8, 128 for -128 is right) times x with w's sign: max 2*128*127 fits s16 */
            const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
            const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
            const __m256 d = _mm256_mul_ps(dx, _mm256_set1_ps(h2f(w->scales[(size_t)(n + r) * nb + b])));
            tot[r] = _mm256_fmadd_ps(f, d, tot[r]);
        }
    }
    for (int r = 0; r < NR; r++) y[(size_t)i * w->n + n + r] = hsum8(tot[r]);
}

/* GEMV (one activation row: the output head and the int8 layers in decode): per weight
 * row 8 blocks (256 bytes) at a time; the 8 per-block int32 sums are folded with vphaddd
 * into natural block order [b0..b3 | b4..b7] so the row's 8 scales and the 8 activation
 * scales are plain loads: one cvt and one mul + fma per 8 blocks. A remaining group of 4
 * blocks (K = 640: 16 + 4) is folded the same way at 128-bit width; only the last 1-3
 * blocks take the scalar tail. The weight stream (rows are contiguous) is prefetched
 * Q8_PF bytes ahead. */
#ifndef Q8_PF
#define Q8_PF 4096
#endif

INLINE __m256i q8_dot_block(const int8_t *w, const int8_t *x, const __m256i ones) {
    const __m256i wv = _mm256_loadu_si256((const __m256i *)w);
    const __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv)), ones);
}

static void q8q8_gemv(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int K = w->k, nb = K / NANO_QK, n8 = nb / 8 * 8, n4 = nb / 4 * 4;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int n = n0; n < n1; n++) {
        const int8_t *wr = w->qweight + (size_t)n * K;
        const uint16_t *sc = w->scales + (size_t)n * nb;
        __m256 acc = _mm256_setzero_ps();
        int b = 0;
        for (; b < n8; b += 8) {
#if Q8_PF > 0
            _mm_prefetch((const char *)(wr + b * 32 + Q8_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(wr + b * 32 + Q8_PF + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(wr + b * 32 + Q8_PF + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(wr + b * 32 + Q8_PF + 192), _MM_HINT_T0);
#endif
            __m256i M[8];
            for (int j = 0; j < 8; j++) M[j] = q8_dot_block(wr + (b + j) * 32, x->q + (b + j) * 32, ones);
            const __m256i A = _mm256_hadd_epi32(_mm256_hadd_epi32(M[0], M[1]), _mm256_hadd_epi32(M[2], M[3]));
            const __m256i B = _mm256_hadd_epi32(_mm256_hadd_epi32(M[4], M[5]), _mm256_hadd_epi32(M[6], M[7]));
            const __m256i C = _mm256_add_epi32(_mm256_permute2x128_si256(A, B, 0x20),
                                               _mm256_permute2x128_si256(A, B, 0x31));
            const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + b))),
                                           _mm256_loadu_ps(x->d + b));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(C), d, acc);
        }
        __m128 acc4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        if (b < n4) {
#if Q8_PF > 0
            _mm_prefetch((const char *)(wr + b * 32 + Q8_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(wr + b * 32 + Q8_PF + 64), _MM_HINT_T0);
#endif
            __m256i M[4];
            for (int j = 0; j < 4; j++) M[j] = q8_dot_block(wr + (b + j) * 32, x->q + (b + j) * 32, ones);
            const __m256i A = _mm256_hadd_epi32(_mm256_hadd_epi32(M[0], M[1]), _mm256_hadd_epi32(M[2], M[3]));
            const __m128i C = _mm_add_epi32(_mm256_castsi256_si128(A), _mm256_extracti128_si256(A, 1));
            const __m128 d = _mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(sc + b))),
                                        _mm_loadu_ps(x->d + b));
            acc4 = _mm_fmadd_ps(_mm_cvtepi32_ps(C), d, acc4);
            b += 4;
        }
        acc4 = _mm_add_ps(acc4, _mm_movehl_ps(acc4, acc4));
        float v = _mm_cvtss_f32(_mm_add_ss(acc4, _mm_movehdup_ps(acc4)));
        for (; b < nb; b++) {
            const __m256i m = q8_dot_block(wr + b * 32, x->q + b * 32, ones);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            v += (h2f(sc[b]) * x->d[b]) * (float)_mm_cvtsi128_si32(s4);
        }
        y[n] = v;
    }
}

/* GEMM for int8 weights (prefill through the embedding-derived / Q8_0-imported layers):
 * M is walked in tiles of GMB activation rows and K in chunks of Q8KB blocks, so the
 * activation tile (GMB x Q8KB x 32 bytes = 64 KiB) stays in L2 while every 4-row weight
 * tile of the thread's range (4 KiB, in L1) is multiplied with it. Per block the 4
 * weight rows' |w| are formed once and reused by MR activation rows; the products use
 * the sign trick (maddubs(|w|, sign(x, w)), at most 2*128*127 per s16 lane), madd to
 * int32, and two rounds of vphaddd fold the 4 rows to [r0 r1 r2 r3 | r0 r1 r2 r3]. Partial dot products
 * of a K chunk are added into y (the int block sums are exact; the float summation
 * order differs from the scalar reference by the chunking only). */
#ifndef Q8KB
#define Q8KB 32
#endif

INLINE void q8_gemm_kernel(const int8_t *wr, size_t ws, const nano_q8_act *x, int i, int b0,
                           int nbc, const float *stab, __m128 *out, const int MR) {
    const int K = x->k, nb = K / NANO_QK;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[MR];
    const int8_t *xr[MR];
    const float *xd[MR];
    for (int m = 0; m < MR; m++) {
        acc[m] = _mm256_setzero_ps();
        xr[m] = x->q + (size_t)(i + m) * K;
        xd[m] = x->d + (size_t)(i + m) * nb;
    }
    for (int b = b0; b < b0 + nbc; b++) {
        const int8_t *wb = wr + (size_t)b * 32;
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)wb);
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + ws));
        const __m256i w2 = _mm256_loadu_si256((const __m256i *)(wb + 2 * ws));
        const __m256i w3 = _mm256_loadu_si256((const __m256i *)(wb + 3 * ws));
        const __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
        const __m256i a2 = _mm256_abs_epi8(w2), a3 = _mm256_abs_epi8(w3);
        const __m256 sv = _mm256_broadcast_ps((const __m128 *)(stab + 4 * (b - b0)));
        for (int m = 0; m < MR; m++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xr[m] + b * 32));
            const __m256i R0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(xv, w0)), ones);
            const __m256i R1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(xv, w1)), ones);
            const __m256i R2 = _mm256_madd_epi16(_mm256_maddubs_epi16(a2, _mm256_sign_epi8(xv, w2)), ones);
            const __m256i R3 = _mm256_madd_epi16(_mm256_maddubs_epi16(a3, _mm256_sign_epi8(xv, w3)), ones);
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(R0, R1), _mm256_hadd_epi32(R2, R3));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_mul_ps(sv, _mm256_set1_ps(xd[m][b])), acc[m]);
        }
    }
    for (int m = 0; m < MR; m++)
        out[m] = _mm_add_ps(_mm256_castps256_ps128(acc[m]), _mm256_extractf128_ps(acc[m], 1));
}

static void q8q8_gemm(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int K = w->k, N = w->n, M = x->m, nb = K / NANO_QK;
    const int n4 = n0 + (n1 - n0) / 4 * 4;
    float stab[Q8KB * 4] __attribute__((aligned(32)));
    for (int i0 = 0; i0 < M; i0 += GMB) {
        const int mr = M - i0 < GMB ? M - i0 : GMB;
        for (int b0 = 0; b0 < nb; b0 += Q8KB) {
            const int nbc = nb - b0 < Q8KB ? nb - b0 : Q8KB;
            for (int n = n0; n < n4; n += 4) {
                scale_table4(w->scales + (size_t)n * nb, nb, b0, nbc, stab);
                const int8_t *wr = w->qweight + (size_t)n * K;
                if (n + 4 < n4)
                    for (int r = 0; r < 4; r++)
                        for (int o = 0; o < nbc * 32; o += 64)
                            _mm_prefetch((const char *)(wr + (size_t)(4 + r) * K + b0 * 32 + o), _MM_HINT_T0);
                for (int m = 0; m < mr;) {
                    __m128 v[4];
                    int step;
                    if (mr - m >= 4) { q8_gemm_kernel(wr, (size_t)K, x, i0 + m, b0, nbc, stab, v, 4); step = 4; }
                    else if (mr - m >= 2) { q8_gemm_kernel(wr, (size_t)K, x, i0 + m, b0, nbc, stab, v, 2); step = 2; }
                    else { q8_gemm_kernel(wr, (size_t)K, x, i0 + m, b0, nbc, stab, v, 1); step = 1; }
                    for (int u = 0; u < step; u++) {
                        float *yp = y + (size_t)(i0 + m + u) * N + n;
                        __m128 r = v[u];
                        if (b0 > 0) r = _mm_add_ps(r, _mm_loadu_ps(yp));
                        _mm_storeu_ps(yp, r);
                    }
                    m += step;
                }
            }
        }
        for (int n = n4; n < n1; n++)
            for (int i = i0; i < i0 + mr; i++) q8q8_tile(w, x, y, n, i, 1);
    }
}

static void q8_q8_avx2(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    if (x->m == 1) {
        q8q8_gemv(w, x, y, n0, n1);
        return;
    }
    q8q8_gemm(w, x, y, n0, n1);
}

/* ---- activation quantization (bit-identical to nano_quant_row_scalar) ----- */
void nano_quant_row_avx2(const float *x, int k, int8_t *q, float *d, float *ds) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int b = 0; b < k / NANO_QK; b++) {
        const float *xb = x + b * 32;
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(xb + 8 * j);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], absmask), _mm256_and_ps(v[1], absmask)),
                                  _mm256_max_ps(_mm256_and_ps(v[2], absmask), _mm256_and_ps(v[3], absmask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (!(amax == amax)) { /* NaN somewhere: let the reference define it */
            nano_quant_row_scalar(xb, 32, q + b * 32, d + b, ds + b);
            continue;
        }
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        const __m256 idv = _mm256_set1_ps(id);
        __m256i iv[4];
        for (int j = 0; j < 4; j++) {
            __m256 t = _mm256_mul_ps(v[j], idv);
            t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q)); /* inf*0 -> 0 like the reference */
            iv[j] = _mm256_cvtps_epi32(t);                          /* round half even */
        }
        const __m256i s = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        const __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]);
        const __m256i p16b = _mm256_packs_epi32(iv[2], iv[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + b * 32), p8);
        d[b] = amax / 127.0f;
        ds[b] = d[b] * (float)_mm_cvtsi128_si32(s4);
    }
}

const nano_kernel_table nano_kernels_avx2 = {
    "avx2", nano_q4_f32_avx2, q4_q8_avx2, nano_q8_f32_avx2, q8_q8_avx2, nano_quant_row_avx2,
};
