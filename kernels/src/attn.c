/* attn.c - attention inner loops for the engine (kernels/engine/forward.c): scores of one
 * query against a run of cached keys and the weighted sum of a run of cached values, for
 * fp16, int8 (per-row scale) and fp32 rows. Plain C here (the reference, and what NEON
 * builds use: the compiler vectorizes these loops); attn_avx2.c has the F16C/FMA versions.
 * Chosen per call from the active kernel variant. fp results may differ from the plain
 * loops in summation order only. */
#include <math.h>

#include "kernels_internal.h"

static void scores_f16_c(const float *q, const uint16_t *k, int rows, int hd, float scale,
                         float *out) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *kr = k + (size_t)r * hd;
        float s = 0;
        for (int d = 0; d < hd; d++) s += q[d] * nano_h2f(kr[d]);
        out[r] = s * scale;
    }
}

static void accum_f16_c(const float *w, const uint16_t *v, int rows, int hd, float *out) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *vr = v + (size_t)r * hd;
        for (int d = 0; d < hd; d++) out[d] += w[r] * nano_h2f(vr[d]);
    }
}

static void scores_i8_c(const float *q, const int8_t *k, const float *ks, int rows, int hd,
                        float scale, float *out) {
    for (int r = 0; r < rows; r++) {
        const int8_t *kr = k + (size_t)r * hd;
        float s = 0;
        for (int d = 0; d < hd; d++) s += q[d] * (float)kr[d];
        out[r] = s * ks[r] * scale;
    }
}

static void accum_i8_c(const float *w, const int8_t *v, const float *vs, int rows, int hd,
                       float *out) {
    for (int r = 0; r < rows; r++) {
        const int8_t *vr = v + (size_t)r * hd;
        const float a = w[r] * vs[r];
        for (int d = 0; d < hd; d++) out[d] += a * (float)vr[d];
    }
}

/* grouped forms: head by head (the reference; bit-identical to G separate calls) */
static void scores_f16_g_c(const float *q, int G, const uint16_t *k, int rows, int hd, float scale,
                           float *out, int ostride, int cold) {
    (void)cold;
    for (int j = 0; j < G; j++) scores_f16_c(q + (size_t)j * hd, k, rows, hd, scale, out + (size_t)j * ostride);
}

static void accum_f16_g_c(const float *w, int wstride, int G, const uint16_t *v, int rows, int hd,
                          float *out, int cold) {
    (void)cold;
    for (int j = 0; j < G; j++) accum_f16_c(w + (size_t)j * wstride, v, rows, hd, out + (size_t)j * hd);
}

static void scores_i8_g_c(const float *q, int G, const int8_t *k, const float *ks, int rows, int hd,
                          float scale, float *out, int ostride, int cold) {
    (void)cold;
    for (int j = 0; j < G; j++)
        scores_i8_c(q + (size_t)j * hd, k, ks, rows, hd, scale, out + (size_t)j * ostride);
}

static void accum_i8_g_c(const float *w, int wstride, int G, const int8_t *v, const float *vs,
                         int rows, int hd, float *out, int cold) {
    (void)cold;
    for (int j = 0; j < G; j++) accum_i8_c(w + (size_t)j * wstride, v, vs, rows, hd, out + (size_t)j * hd);
}

static void softmax_c(float *s, int n) {
    float mx = -INFINITY;
    for (int r = 0; r < n; r++) mx = s[r] > mx ? s[r] : mx;
    float sum = 0;
    for (int r = 0; r < n; r++) {
        const float e = expf(s[r] - mx);
        s[r] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    for (int r = 0; r < n; r++) s[r] *= inv;
}

static void to_f16_c(const float *src, uint16_t *dst, int n) { nano_fp32_to_fp16_array(src, dst, (size_t)n); }

const nano_attn_ops nano_attn_ops_c = {scores_f16_c,   accum_f16_c,   scores_i8_c,   accum_i8_c,
                                       scores_f16_g_c, accum_f16_g_c, scores_i8_g_c, accum_i8_g_c,
                                       softmax_c, to_f16_c};

const nano_attn_ops *nano_attn_ops_get(int head_dim) {
#if defined(__x86_64__) || defined(_M_X64)
    const int v = nano_kernel_variant();
    if ((v == NANO_VARIANT_AVX2 || v == NANO_VARIANT_AVX512) && head_dim % 16 == 0)
        return &nano_attn_ops_avx2;
#endif
    (void)head_dim;
    return &nano_attn_ops_c;
}

void nano_glu_c(float *a, const float *b, size_t n, int gelu) {
    if (gelu) {
        const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
        for (size_t i = 0; i < n; i++) {
            const float g = a[i];
            a[i] = 0.5f * g * (1.0f + tanhf(k0 * (g + 0.044715f * g * g * g))) * b[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const float g = a[i];
            a[i] = g / (1.0f + expf(-g)) * b[i];
        }
    }
}

void nano_glu(float *a, const float *b, size_t n, int gelu) {
#if defined(__x86_64__) || defined(_M_X64)
    const int v = nano_kernel_variant();
    if (v == NANO_VARIANT_AVX2 || v == NANO_VARIANT_AVX512) {
        nano_glu_avx2(a, b, n, gelu);
        return;
    }
#endif
    nano_glu_c(a, b, n, gelu);
}
