/* attn_avx2.c - AVX2/FMA/F16C attention inner loops (see attn.c); head_dim % 16 == 0. */
#include <immintrin.h>
#include <math.h>

#include "kernels_internal.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define LDH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define LDB(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))

/* Rows are taken two at a time so two independent FMA chains hide the latency. */
static void scores_f16(const float *q, const uint16_t *k, int rows, int hd, float scale,
                       float *out) {
    int r = 0;
    for (; r + 2 <= rows; r += 2) {
        const uint16_t *k0 = k + (size_t)r * hd, *k1 = k0 + hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            const __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
            a0 = _mm256_fmadd_ps(q0, LDH(k0 + d), a0);
            a1 = _mm256_fmadd_ps(q1, LDH(k0 + d + 8), a1);
            b0 = _mm256_fmadd_ps(q0, LDH(k1 + d), b0);
            b1 = _mm256_fmadd_ps(q1, LDH(k1 + d + 8), b1);
        }
        out[r] = hsum8(_mm256_add_ps(a0, a1)) * scale;
        out[r + 1] = hsum8(_mm256_add_ps(b0, b1)) * scale;
    }
    for (; r < rows; r++) {
        const uint16_t *k0 = k + (size_t)r * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), LDH(k0 + d), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), LDH(k0 + d + 8), a1);
        }
        out[r] = hsum8(_mm256_add_ps(a0, a1)) * scale;
    }
}

/* out[0..hd) += sum_r w[r] v[r]: out is kept in registers 64 columns at a time. */
static void accum_f16(const float *w, const uint16_t *v, int rows, int hd, float *out) {
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 o0 = _mm256_loadu_ps(out + d), o1 = _mm256_loadu_ps(out + d + 8);
        __m256 o2 = _mm256_loadu_ps(out + d + 16), o3 = _mm256_loadu_ps(out + d + 24);
        for (int r = 0; r < rows; r++) {
            const uint16_t *vr = v + (size_t)r * hd + d;
            const __m256 a = _mm256_broadcast_ss(w + r);
            o0 = _mm256_fmadd_ps(a, LDH(vr), o0);
            o1 = _mm256_fmadd_ps(a, LDH(vr + 8), o1);
            o2 = _mm256_fmadd_ps(a, LDH(vr + 16), o2);
            o3 = _mm256_fmadd_ps(a, LDH(vr + 24), o3);
        }
        _mm256_storeu_ps(out + d, o0);
        _mm256_storeu_ps(out + d + 8, o1);
        _mm256_storeu_ps(out + d + 16, o2);
        _mm256_storeu_ps(out + d + 24, o3);
    }
    for (; d < hd; d += 16) {
        __m256 o0 = _mm256_loadu_ps(out + d), o1 = _mm256_loadu_ps(out + d + 8);
        for (int r = 0; r < rows; r++) {
            const uint16_t *vr = v + (size_t)r * hd + d;
            const __m256 a = _mm256_broadcast_ss(w + r);
            o0 = _mm256_fmadd_ps(a, LDH(vr), o0);
            o1 = _mm256_fmadd_ps(a, LDH(vr + 8), o1);
        }
        _mm256_storeu_ps(out + d, o0);
        _mm256_storeu_ps(out + d + 8, o1);
    }
}

static void scores_i8(const float *q, const int8_t *k, const float *ks, int rows, int hd,
                      float scale, float *out) {
    for (int r = 0; r < rows; r++) {
        const int8_t *k0 = k + (size_t)r * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), LDB(k0 + d), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), LDB(k0 + d + 8), a1);
        }
        out[r] = hsum8(_mm256_add_ps(a0, a1)) * ks[r] * scale;
    }
}

static void accum_i8(const float *w, const int8_t *v, const float *vs, int rows, int hd,
                     float *out) {
    for (int d = 0; d < hd; d += 16) {
        __m256 o0 = _mm256_loadu_ps(out + d), o1 = _mm256_loadu_ps(out + d + 8);
        for (int r = 0; r < rows; r++) {
            const int8_t *vr = v + (size_t)r * hd + d;
            const __m256 a = _mm256_set1_ps(w[r] * vs[r]);
            o0 = _mm256_fmadd_ps(a, LDB(vr), o0);
            o1 = _mm256_fmadd_ps(a, LDB(vr + 8), o1);
        }
        _mm256_storeu_ps(out + d, o0);
        _mm256_storeu_ps(out + d + 8, o1);
    }
}

/* ---- grouped-query forms: the G query heads of one kv head together ----------------
 * Each cached row is loaded and converted once for up to 4 heads (blocks of 4 beyond
 * that). Per output element the arithmetic is the same, in the same order, as the
 * single-head loops above, so the results are bit-identical to G separate calls. */
#define GQ 4

/* 16 cached values at element offset off, from the f16 rows (p16) or else the int8 rows */
static inline __attribute__((always_inline)) void load_row16(const uint16_t *p16, const int8_t *p8,
                                                             size_t off, __m256 *lo, __m256 *hi) {
    if (p16) {
        *lo = LDH(p16 + off);
        *hi = LDH(p16 + off + 8);
    } else {
        *lo = LDB(p8 + off);
        *hi = LDB(p8 + off + 8);
    }
}

/* Decode reads the cache rows cold (the weights streamed since evicted them): the rows
 * KV_PF_ROWS ahead are prefetched (4 KiB at fp16, head_dim 128; the hardware prefetcher
 * alone stalls at every page). nano-1 at position ~400: scores 18% faster. */
#define KV_PF_ROWS 16
static inline __attribute__((always_inline)) void prefetch_row(const char *base, size_t row, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch(base + row * bytes + o, _MM_HINT_T0);
}

static inline __attribute__((always_inline)) void scores_blk(const float *q, const int B,
        const uint16_t *k16, const int8_t *k8, const float *ks, int rows, int hd, float scale,
        float *out, int ostride, const int PF) {
    const int rb = k16 ? 2 * hd : hd;
    const char *kb = k16 ? (const char *)k16 : (const char *)k8;
    for (int r = 0; r < rows; r++) {
        if (PF && r + KV_PF_ROWS < rows) prefetch_row(kb, (size_t)(r + KV_PF_ROWS), rb);
        __m256 a[GQ], b[GQ];
        for (int j = 0; j < B; j++) a[j] = b[j] = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            __m256 k0, k1;
            load_row16(k16, k8, (size_t)r * hd + d, &k0, &k1);
            for (int j = 0; j < B; j++) {
                a[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)j * hd + d), k0, a[j]);
                b[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)j * hd + d + 8), k1, b[j]);
            }
        }
        for (int j = 0; j < B; j++) {
            const float s = hsum8(_mm256_add_ps(a[j], b[j]));
            out[(size_t)j * ostride + r] = k16 ? s * scale : s * ks[r] * scale;
        }
    }
}

static inline __attribute__((always_inline)) void scores_g(const float *q, int G, const uint16_t *k16, const int8_t *k8, const float *ks,
                     int rows, int hd, float scale, float *out, int ostride, const int PF) {
    for (int j0 = 0; j0 < G; j0 += GQ) {
        const float *qj = q + (size_t)j0 * hd;
        float *oj = out + (size_t)j0 * ostride;
        switch (G - j0 < GQ ? G - j0 : GQ) {
        case 1: scores_blk(qj, 1, k16, k8, ks, rows, hd, scale, oj, ostride, PF); break;
        case 2: scores_blk(qj, 2, k16, k8, ks, rows, hd, scale, oj, ostride, PF); break;
        case 3: scores_blk(qj, 3, k16, k8, ks, rows, hd, scale, oj, ostride, PF); break;
        default: scores_blk(qj, 4, k16, k8, ks, rows, hd, scale, oj, ostride, PF); break;
        }
    }
}

/* The rows are taken in blocks of ACC_RB (2 KiB of fp16 cache at head_dim 128, in L1 across
 * the head_dim / 16 strips; the walk through the cache stays nearly sequential), and while
 * the first strip of a block is walked the next block's rows are prefetched whole. Per
 * output element the FMAs run over the rows in the same order as an unblocked walk (the
 * partial sum goes through out between blocks, exactly), so blocking changes no result.
 * nano-1 at position ~400: 32-row blocks with a line of the next block per strip took
 * 1.4x as long. */
#define ACC_RB 8
static inline __attribute__((always_inline)) void accum_blk(const float *w, int wstride, const int B,
        const uint16_t *v16, const int8_t *v8, const float *vs, int rows, int hd, float *out, const int PF) {
    const int rowbytes = v16 ? 2 * hd : hd;
    const char *vb = v16 ? (const char *)v16 : (const char *)v8;
    for (int r0 = 0; r0 < rows; r0 += ACC_RB) {
        const int r1 = rows - r0 < ACC_RB ? rows : r0 + ACC_RB;
        for (int d = 0; d < hd; d += 16) {
            __m256 o0[GQ], o1[GQ];
            for (int j = 0; j < B; j++) {
                o0[j] = _mm256_loadu_ps(out + (size_t)j * hd + d);
                o1[j] = _mm256_loadu_ps(out + (size_t)j * hd + d + 8);
            }
            for (int r = r0; r < r1; r++) {
                __m256 v0, v1;
                if (PF && d == 0 && r + ACC_RB < rows) prefetch_row(vb, (size_t)(r + ACC_RB), rowbytes);
                load_row16(v16, v8, (size_t)r * hd + d, &v0, &v1);
                for (int j = 0; j < B; j++) {
                    const __m256 a = v16 ? _mm256_broadcast_ss(w + (size_t)j * wstride + r)
                                         : _mm256_set1_ps(w[(size_t)j * wstride + r] * vs[r]);
                    o0[j] = _mm256_fmadd_ps(a, v0, o0[j]);
                    o1[j] = _mm256_fmadd_ps(a, v1, o1[j]);
                }
            }
            for (int j = 0; j < B; j++) {
                _mm256_storeu_ps(out + (size_t)j * hd + d, o0[j]);
                _mm256_storeu_ps(out + (size_t)j * hd + d + 8, o1[j]);
            }
        }
    }
}

static inline __attribute__((always_inline)) void accum_g(const float *w, int wstride, int G, const uint16_t *v16, const int8_t *v8,
                    const float *vs, int rows, int hd, float *out, const int PF) {
    for (int j0 = 0; j0 < G; j0 += GQ) {
        const float *wj = w + (size_t)j0 * wstride;
        float *oj = out + (size_t)j0 * hd;
        switch (G - j0 < GQ ? G - j0 : GQ) {
        case 1: accum_blk(wj, wstride, 1, v16, v8, vs, rows, hd, oj, PF); break;
        case 2: accum_blk(wj, wstride, 2, v16, v8, vs, rows, hd, oj, PF); break;
        case 3: accum_blk(wj, wstride, 3, v16, v8, vs, rows, hd, oj, PF); break;
        default: accum_blk(wj, wstride, 4, v16, v8, vs, rows, hd, oj, PF); break;
        }
    }
}

/* cold: decode's walk over rows the weight stream evicted, prefetched ahead; prefill reads
 * rows it has just written (in cache), where the prefetches only cost (SmolLM2 prefill
 * 1,000 tokens: accumulation 9% of the time without them, 14% with) */
static void scores_f16_g(const float *q, int G, const uint16_t *k, int rows, int hd, float scale,
                         float *out, int ostride, int cold) {
    if (cold) scores_g(q, G, k, NULL, NULL, rows, hd, scale, out, ostride, 1);
    else scores_g(q, G, k, NULL, NULL, rows, hd, scale, out, ostride, 0);
}

static void accum_f16_g(const float *w, int wstride, int G, const uint16_t *v, int rows, int hd,
                        float *out, int cold) {
    if (cold) accum_g(w, wstride, G, v, NULL, NULL, rows, hd, out, 1);
    else accum_g(w, wstride, G, v, NULL, NULL, rows, hd, out, 0);
}

static void scores_i8_g(const float *q, int G, const int8_t *k, const float *ks, int rows, int hd,
                        float scale, float *out, int ostride, int cold) {
    if (cold) scores_g(q, G, NULL, k, ks, rows, hd, scale, out, ostride, 1);
    else scores_g(q, G, NULL, k, ks, rows, hd, scale, out, ostride, 0);
}

static void accum_i8_g(const float *w, int wstride, int G, const int8_t *v, const float *vs,
                       int rows, int hd, float *out, int cold) {
    if (cold) accum_g(w, wstride, G, NULL, v, vs, rows, hd, out, 1);
    else accum_g(w, wstride, G, NULL, v, vs, rows, hd, out, 0);
}

/* exp(x) for x in [-87.3, 88.7] (clamped outside): x = n ln2 + r, |r| <= ln2/2, degree-6
 * polynomial for e^r (Cephes coefficients), 2^n through the exponent bits. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* n in [-126, 128]: split 2^n = 2^(n/2) 2^(n - n/2) so n = 128 does not overflow the bits */
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i h = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* softmax in place: vector max, exp(s - max) with its sum, then one scaling pass; the last
 * n % 8 scores are done with libm (the same formula). */
static void softmax(float *s, int n) {
    const int n8 = n / 8 * 8;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (int r = 0; r < n8; r += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + r));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float mx = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (int r = n8; r < n; r++) mx = s[r] > mx ? s[r] : mx;
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (int r = 0; r < n8; r += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + r), vmx));
        _mm256_storeu_ps(s + r, e);
        vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum8(vs);
    for (int r = n8; r < n; r++) {
        s[r] = expf(s[r] - mx);
        sum += s[r];
    }
    const float inv = 1.0f / sum;
    const __m256 vi = _mm256_set1_ps(inv);
    for (int r = 0; r < n8; r += 8) _mm256_storeu_ps(s + r, _mm256_mul_ps(_mm256_loadu_ps(s + r), vi));
    for (int r = n8; r < n; r++) s[r] *= inv;
}

/* F16C conversion rounds to nearest even, gives infinities and subnormals as the C form
 * does and keeps a NaN quiet with its top payload bits: the same bits */
static void to_f16(const float *src, uint16_t *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    nano_fp32_to_fp16_array(src + i, dst + i, (size_t)(n - i));
}

const nano_attn_ops nano_attn_ops_avx2 = {scores_f16,   accum_f16,   scores_i8,   accum_i8,
                                          scores_f16_g, accum_f16_g, scores_i8_g, accum_i8_g,
                                          softmax, to_f16};

void nano_glu_avx2(float *a, const float *b, size_t n, int gelu) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 c1 = _mm256_set1_ps(gelu ? -2.0f * 0.7978845608028654f : -1.0f);
    const __m256 c3 = _mm256_set1_ps(gelu ? 0.044715f : 0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(a + i);
        /* z = -c (g + 0.044715 g^3)  (GELU)   or   -g  (SiLU) */
        const __m256 z = _mm256_mul_ps(c1, _mm256_fmadd_ps(_mm256_mul_ps(c3, g), _mm256_mul_ps(g, g), g));
        const __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp256(z)));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(s, _mm256_loadu_ps(b + i)));
    }
    if (i < n) nano_glu_c(a + i, b + i, n - i, gelu);
}
