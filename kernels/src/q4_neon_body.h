/* q4_neon_body.h - integer-path NEON kernels, included twice by q4_neon.c with
 * ISUM4 / ISUM8 (block dot products: SDOT or SMLAL) and SUFFIX set. */

INLINE void SUFFIX(q4q8_tile)(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n,
                              int i, const int NR, const int MR, const int ASYM) {
    const int K = w->k, nb = K / NANO_QK, ng = nano_q4_ngroups(w), G = w->group_size;
    float32x4_t acc[NR][MR];
    for (int r = 0; r < NR; r++)
        for (int m = 0; m < MR; m++) acc[r][m] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const int g = b * NANO_QK / G;
        for (int r = 0; r < NR; r++) {
            const uint8x16_t v = vld1q_u8(w->qweight + (size_t)(n + r) * (K / 2) + (size_t)b * 16);
            const float s = h2f(w->scales[(size_t)(n + r) * ng + g]);
            const float mn = ASYM ? h2f(w->mins[(size_t)(n + r) * ng + g]) : 0.0f;
            for (int m = 0; m < MR; m++) {
                const size_t xb = (size_t)(i + m) * nb + b;
                const float32x4_t f = vcvtq_f32_s32(ISUM4(v, x->q + xb * NANO_QK));
                if (ASYM) {
                    acc[r][m] = vfmaq_n_f32(acc[r][m], f, s * x->d[xb]);
                    acc[r][m] = vaddq_f32(acc[r][m], vdupq_n_f32(0.25f * mn * x->ds[xb]));
                } else {
                    const float32x4_t t = vfmaq_n_f32(vdupq_n_f32(-2.0f * x->ds[xb]), f, x->d[xb]);
                    acc[r][m] = vfmaq_n_f32(acc[r][m], t, s);
                }
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int m = 0; m < MR; m++) y[(size_t)(i + m) * w->n + n + r] = vaddvq_f32(acc[r][m]);
}

/* 4 weight rows x MR activation rows: the block sums of the 4 rows are folded with
 * three pairwise adds into one int32x4 [r0 r1 r2 r3], so the float work (cvt, scale,
 * zero point) is done once per block for 4 rows and y needs no horizontal reduction.
 * Scales (and mins) come from a [group][row] table built by scale_table4_neon. */
INLINE void SUFFIX(q4q8_rows4)(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n,
                               int i, const int MR, const int ASYM, const float *stab,
                               const float *mtab, int bstart, int bend, int first) {
    const int K = w->k, nb = K / NANO_QK, G = w->group_size, g0 = bstart * NANO_QK / G;
    const uint8_t *wr = w->qweight + (size_t)n * (K / 2);
    const size_t ws = (size_t)(K / 2);
    float32x4_t acc[MR];
    for (int m = 0; m < MR; m++) acc[m] = vdupq_n_f32(0.0f);
    for (int b = bstart; b < bend; b++) {
        const int gt = b * NANO_QK / G - g0;
        int8x16_t xl[MR], xh[MR];
        for (int m = 0; m < MR; m++) {
            const int8_t *xq = x->q + ((size_t)(i + m) * nb + b) * NANO_QK;
            xl[m] = vld1q_s8(xq);
            xh[m] = vld1q_s8(xq + 16);
        }
        int32x4_t s[MR][4];
        for (int r = 0; r < 4; r++) {
            const uint8x16_t v = vld1q_u8(wr + r * ws + (size_t)b * 16);
            const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
            const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
            for (int m = 0; m < MR; m++) s[m][r] = ISUM4P(lo, hi, xl[m], xh[m]);
        }
        const float32x4_t sv = vld1q_f32(stab + 4 * gt);
        for (int m = 0; m < MR; m++) {
            const int32x4_t t = vpaddq_s32(vpaddq_s32(s[m][0], s[m][1]), vpaddq_s32(s[m][2], s[m][3]));
            const float32x4_t f = vcvtq_f32_s32(t);
            const size_t xb = (size_t)(i + m) * nb + b;
            if (ASYM) {
                acc[m] = vfmaq_f32(acc[m], vmulq_n_f32(f, x->d[xb]), sv);
                acc[m] = vfmaq_n_f32(acc[m], vld1q_f32(mtab + 4 * gt), x->ds[xb]);
            } else {
                acc[m] = vfmaq_f32(acc[m], vfmaq_n_f32(vdupq_n_f32(-8.0f * x->ds[xb]), f, x->d[xb]), sv);
            }
        }
    }
    for (int m = 0; m < MR; m++) {
        float *yp = y + (size_t)(i + m) * w->n + n;
        vst1q_f32(yp, first ? acc[m] : vaddq_f32(acc[m], vld1q_f32(yp)));
    }
}

static void SUFFIX(q4_q8)(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int M = x->m, K = w->k, nb = K / NANO_QK, ng = nano_q4_ngroups(w);
    const int bpg = w->group_size / NANO_QK;
    float stab[NEON_SCHUNK * 4], mtab[NEON_SCHUNK * 4];
    for (int i0 = 0; i0 < M; i0 += 64) {
        const int i1 = i0 + 64 < M ? i0 + 64 : M;
        int n = n0;
        for (; n + 4 <= n1; n += 4) {
            for (int c0 = 0; c0 < ng; c0 += NEON_SCHUNK) {
                const int cnt = ng - c0 < NEON_SCHUNK ? ng - c0 : NEON_SCHUNK;
                scale_table4_neon(w->scales + (size_t)n * ng, ng, c0, cnt, stab);
                if (w->mins) scale_table4_neon(w->mins + (size_t)n * ng, ng, c0, cnt, mtab);
                const int bs = c0 * bpg, be = (c0 + cnt) * bpg < nb ? (c0 + cnt) * bpg : nb;
                int i = i0;
                if (w->mins) {
                    for (; i + 2 <= i1; i += 2) SUFFIX(q4q8_rows4)(w, x, y, n, i, 2, 1, stab, mtab, bs, be, c0 == 0);
                    for (; i < i1; i++) SUFFIX(q4q8_rows4)(w, x, y, n, i, 1, 1, stab, mtab, bs, be, c0 == 0);
                } else {
                    for (; i + 2 <= i1; i += 2) SUFFIX(q4q8_rows4)(w, x, y, n, i, 2, 0, stab, mtab, bs, be, c0 == 0);
                    for (; i < i1; i++) SUFFIX(q4q8_rows4)(w, x, y, n, i, 1, 0, stab, mtab, bs, be, c0 == 0);
                }
            }
        }
        for (; n < n1; n++)
            for (int i = i0; i < i1; i++) {
                if (w->mins) SUFFIX(q4q8_tile)(w, x, y, n, i, 1, 1, 1);
                else SUFFIX(q4q8_tile)(w, x, y, n, i, 1, 1, 0);
            }
    }
}

/* int8 weights: 4 rows per step, block sums folded with pairwise adds into [r0 r1 r2 r3] */
static void SUFFIX(q8_q8)(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int K = w->k, nb = K / NANO_QK;
    float stab[NEON_SCHUNK * 4];
    int n = n0;
    for (; n + 4 <= n1; n += 4) {
        const int8_t *wr = w->qweight + (size_t)n * K;
        for (int c0 = 0; c0 < nb; c0 += NEON_SCHUNK) {
            const int cnt = nb - c0 < NEON_SCHUNK ? nb - c0 : NEON_SCHUNK;
            scale_table4_neon(w->scales + (size_t)n * nb, nb, c0, cnt, stab);
            for (int i = 0; i < x->m; i++) {
                float32x4_t acc = vdupq_n_f32(0.0f);
                for (int b = c0; b < c0 + cnt; b++) {
                    const size_t xb = (size_t)i * nb + b;
                    const int8_t *xq = x->q + xb * NANO_QK;
                    int32x4_t s[4];
                    for (int r = 0; r < 4; r++) s[r] = ISUM8(wr + (size_t)r * K + b * 32, xq);
                    const int32x4_t t = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
                    acc = vfmaq_f32(acc, vcvtq_f32_s32(t), vmulq_n_f32(vld1q_f32(stab + 4 * (b - c0)), x->d[xb]));
                }
                float *yp = y + (size_t)i * w->n + n;
                vst1q_f32(yp, c0 ? vaddq_f32(acc, vld1q_f32(yp)) : acc);
            }
        }
    }
    for (; n < n1; n++)
        for (int i = 0; i < x->m; i++) {
            const int8_t *wr = w->qweight + (size_t)n * K;
            float32x4_t acc = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                const size_t xb = (size_t)i * nb + b;
                const float32x4_t f = vcvtq_f32_s32(ISUM8(wr + b * 32, x->q + xb * NANO_QK));
                acc = vfmaq_n_f32(acc, f, h2f(w->scales[(size_t)n * nb + b]) * x->d[xb]);
            }
            y[(size_t)i * w->n + n] = vaddvq_f32(acc);
        }
}
