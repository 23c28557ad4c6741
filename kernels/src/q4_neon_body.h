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

static void SUFFIX(q4_q8)(const nano_q4_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int M = x->m;
    for (int i0 = 0; i0 < M; i0 += 64) {
        const int i1 = i0 + 64 < M ? i0 + 64 : M;
        int n = n0;
        for (; n + 4 <= n1; n += 4) {
            int i = i0;
            if (w->mins) {
                for (; i + 2 <= i1; i += 2) SUFFIX(q4q8_tile)(w, x, y, n, i, 4, 2, 1);
                for (; i < i1; i++) SUFFIX(q4q8_tile)(w, x, y, n, i, 4, 1, 1);
            } else {
                for (; i + 2 <= i1; i += 2) SUFFIX(q4q8_tile)(w, x, y, n, i, 4, 2, 0);
                for (; i < i1; i++) SUFFIX(q4q8_tile)(w, x, y, n, i, 4, 1, 0);
            }
        }
        for (; n < n1; n++)
            for (int i = i0; i < i1; i++) {
                if (w->mins) SUFFIX(q4q8_tile)(w, x, y, n, i, 1, 1, 1);
                else SUFFIX(q4q8_tile)(w, x, y, n, i, 1, 1, 0);
            }
    }
}

static void SUFFIX(q8_q8)(const nano_q8_matrix *w, const nano_q8_act *x, float *y, int n0, int n1) {
    const int K = w->k, nb = K / NANO_QK;
    for (int i = 0; i < x->m; i++)
        for (int n = n0; n < n1; n++) {
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
