/* q4_neon.c - AArch64 NEON kernels, two tables:
 *   "neondot": int8 dot products with SDOT (ARMv8.2 dotprod), used only when
 *              getauxval(AT_HWCAP) has HWCAP_ASIMDDP (dispatch.c checks);
 *   "neon"   : the same algorithms with SMULL/SMLAL (any ARMv8-A).
 * The file is compiled with -march=armv8.2-a+dotprod; everything reachable
 * from the "neon" table is compiled under `#pragma GCC target("+nodotprod")`
 * so the vectorizer cannot slip an SDOT into code that runs on a Cortex-A53.
 *
 * int4 x int8, per 32-column block: low nibbles of the 16 code bytes are
 * columns 0..15, high nibbles 16..31; two SDOTs (or four SMLALs + a pairwise
 * add) give 4 int32 lanes whose sum is the block's integer dot product. Each
 * lane is scaled by the activation scale, the symmetric zero point is folded
 * in as -2 ds per lane (4 lanes -> -8 ds), then one fma by the weight scale. */
#include <arm_neon.h>
#include <string.h>

#include "kernels_internal.h"

#define INLINE static inline __attribute__((always_inline))

/* ======================= plain NEON (no SDOT) ========================== */
#pragma GCC push_options
#pragma GCC target("+nodotprod")

INLINE float h2f(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}


#define NEON_SCHUNK 256 /* groups per scale-table chunk (multiple of 4) */

/* tab[4 g + r] = fp32 scale of group g0 + g of row r (rows ng apart), g < cnt */
static void scale_table4_neon(const uint16_t *s, int ng, int g0, int cnt, float *tab) {
    int g = 0;
    for (; g + 4 <= cnt; g += 4) {
        float32x4_t r[4];
        for (int k = 0; k < 4; k++)
            r[k] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(s + (size_t)k * ng + g0 + g)));
        const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
        const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
#define F64(v) vreinterpretq_f64_f32(v)
#define F32(v) vreinterpretq_f32_f64(v)
        vst1q_f32(tab + 4 * g + 0, F32(vtrn1q_f64(F64(t0), F64(t2))));
        vst1q_f32(tab + 4 * g + 4, F32(vtrn1q_f64(F64(t1), F64(t3))));
        vst1q_f32(tab + 4 * g + 8, F32(vtrn2q_f64(F64(t0), F64(t2))));
        vst1q_f32(tab + 4 * g + 12, F32(vtrn2q_f64(F64(t1), F64(t3))));
#undef F64
#undef F32
    }
    for (; g < cnt; g++)
        for (int r = 0; r < 4; r++) tab[4 * g + r] = h2f(s[(size_t)r * ng + g0 + g]);
}

/* block dot products from already unpacked codes (lo = columns 0..15, hi = 16..31) */
INLINE int32x4_t q4_isum_pre_neon(int8x16_t lo, int8x16_t hi, int8x16_t x0, int8x16_t x1) {
    int16x8_t p = vmull_s8(vget_low_s8(lo), vget_low_s8(x0));
    p = vmlal_s8(p, vget_high_s8(lo), vget_high_s8(x0));
    p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(x1));
    p = vmlal_s8(p, vget_high_s8(hi), vget_high_s8(x1));
    return vpaddlq_s16(p);
}

/* one 32-block: sum of code*x as 4 int32 lanes, without SDOT */
INLINE int32x4_t q4_block_isum_neon(uint8x16_t v, const int8_t *xq) {
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    const int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
    int16x8_t p = vmull_s8(vget_low_s8(lo), vget_low_s8(x0)); /* |4 terms| <= 7620 */
    p = vmlal_s8(p, vget_high_s8(lo), vget_high_s8(x0));
    p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(x1));
    p = vmlal_s8(p, vget_high_s8(hi), vget_high_s8(x1));
    return vpaddlq_s16(p);
}

INLINE int32x4_t q8_block_isum_neon(const int8_t *w, const int8_t *xq) {
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
    const int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
    int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(x0)); /* |2 terms| <= 32512 */
    p = vmlal_s8(p, vget_high_s8(w0), vget_high_s8(x0));
    int16x8_t p2 = vmull_s8(vget_low_s8(w1), vget_low_s8(x1));
    p2 = vmlal_s8(p2, vget_high_s8(w1), vget_high_s8(x1));
    return vpadalq_s16(vpaddlq_s16(p), p2);
}

#define ISUM4 q4_block_isum_neon
#define ISUM4P q4_isum_pre_neon
#define ISUM8 q8_block_isum_neon
#define SUFFIX(name) name##_neon
#include "q4_neon_body.h"
#undef ISUM4
#undef ISUM4P
#undef ISUM8
#undef SUFFIX

/* fp32-activation paths and the quantizer have no integer dot: shared by both tables */
static void q4_f32_neon(const nano_q4_matrix *w, const float *x, float *y, int m, int n0, int n1) {
    const int K = w->k, G = w->group_size, ng = nano_q4_ngroups(w);
    for (int i = 0; i < m; i++) {
        const float *xr = x + (size_t)i * K;
        for (int n = n0; n < n1; n++) {
            const uint8_t *wr = w->qweight + (size_t)n * (K / 2);
            float32x4_t tot = vdupq_n_f32(0.0f);
            for (int g = 0; g < ng; g++) {
                const int k0 = g * G, k1 = k0 + G < K ? k0 + G : K;
                float32x4_t ga = vdupq_n_f32(0.0f), gx = vdupq_n_f32(0.0f);
                for (int k = k0; k < k1; k += 32) {
                    const uint8x16_t v = vld1q_u8(wr + k / 2);
                    const uint8x16_t c[2] = {vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8(v, 4)};
                    for (int h = 0; h < 2; h++) {
                        const uint16x8_t a = vmovl_u8(vget_low_u8(c[h])), b = vmovl_u8(vget_high_u8(c[h]));
                        const float *xp = xr + k + 16 * h;
                        const float32x4_t x0 = vld1q_f32(xp), x1 = vld1q_f32(xp + 4);
                        const float32x4_t x2 = vld1q_f32(xp + 8), x3 = vld1q_f32(xp + 12);
                        ga = vfmaq_f32(ga, vcvtq_f32_u32(vmovl_u16(vget_low_u16(a))), x0);
                        ga = vfmaq_f32(ga, vcvtq_f32_u32(vmovl_u16(vget_high_u16(a))), x1);
                        ga = vfmaq_f32(ga, vcvtq_f32_u32(vmovl_u16(vget_low_u16(b))), x2);
                        ga = vfmaq_f32(ga, vcvtq_f32_u32(vmovl_u16(vget_high_u16(b))), x3);
                        gx = vaddq_f32(gx, vaddq_f32(vaddq_f32(x0, x1), vaddq_f32(x2, x3)));
                    }
                }
                const float s = h2f(w->scales[(size_t)n * ng + g]);
                if (w->mins)
                    tot = vfmaq_n_f32(vfmaq_n_f32(tot, ga, s), gx, h2f(w->mins[(size_t)n * ng + g]));
                else
                    tot = vfmaq_n_f32(tot, vfmsq_f32(ga, gx, vdupq_n_f32(8.0f)), s);
            }
            y[(size_t)i * w->n + n] = vaddvq_f32(tot);
        }
    }
}

static void q8_f32_neon(const nano_q8_matrix *w, const float *x, float *y, int m, int n0, int n1) {
    const int K = w->k, nb = K / NANO_QK;
    for (int i = 0; i < m; i++) {
        const float *xr = x + (size_t)i * K;
        for (int n = n0; n < n1; n++) {
            const int8_t *wr = w->qweight + (size_t)n * K;
            float32x4_t tot = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                float32x4_t a = vdupq_n_f32(0.0f);
                for (int h = 0; h < 2; h++) {
                    const int8x16_t v = vld1q_s8(wr + b * 32 + 16 * h);
                    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
                    const float *xp = xr + b * 32 + 16 * h;
                    a = vfmaq_f32(a, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vld1q_f32(xp));
                    a = vfmaq_f32(a, vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), vld1q_f32(xp + 4));
                    a = vfmaq_f32(a, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vld1q_f32(xp + 8));
                    a = vfmaq_f32(a, vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), vld1q_f32(xp + 12));
                }
                tot = vfmaq_n_f32(tot, a, h2f(w->scales[(size_t)n * nb + b]));
            }
            y[(size_t)i * w->n + n] = vaddvq_f32(tot);
        }
    }
}

/* bit-identical to nano_quant_row_scalar (FCVTNS rounds half to even) */
static void quant_row_neon(const float *x, int k, int8_t *q, float *d, float *ds) {
    for (int b = 0; b < k / NANO_QK; b++) {
        const float *xb = x + b * 32;
        float32x4_t v[8];
        float32x4_t mx = vdupq_n_f32(0.0f);
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(xb + 4 * j);
            mx = vmaxq_f32(mx, vabsq_f32(v[j]));
        }
        const float amax = vmaxvq_f32(mx);
        if (!(amax == amax)) {
            nano_quant_row_scalar(xb, 32, q + b * 32, d + b, ds + b);
            continue;
        }
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32x4_t sum = vdupq_n_s32(0);
        int16x8_t h16[4];
        for (int j = 0; j < 4; j++) {
            float32x4_t t0 = vmulq_n_f32(v[2 * j], id), t1 = vmulq_n_f32(v[2 * j + 1], id);
            t0 = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(t0), vceqq_f32(t0, t0)));
            t1 = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(t1), vceqq_f32(t1, t1)));
            const int32x4_t i0 = vcvtnq_s32_f32(t0), i1 = vcvtnq_s32_f32(t1);
            sum = vaddq_s32(sum, vaddq_s32(i0, i1));
            h16[j] = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
        }
        vst1q_s8(q + b * 32, vcombine_s8(vqmovn_s16(h16[0]), vqmovn_s16(h16[1])));
        vst1q_s8(q + b * 32 + 16, vcombine_s8(vqmovn_s16(h16[2]), vqmovn_s16(h16[3])));
        d[b] = amax / 127.0f;
        ds[b] = d[b] * (float)vaddvq_s32(sum);
    }
}

const nano_kernel_table nano_kernels_neon = {
    "neon", q4_f32_neon, q4_q8_neon, q8_f32_neon, q8_q8_neon, quant_row_neon,
};
#pragma GCC pop_options

/* ========================= NEON + SDOT ================================= */
INLINE int32x4_t q4_block_isum_dot(uint8x16_t v, const int8_t *xq) {
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(xq)), hi, vld1q_s8(xq + 16));
}

INLINE int32x4_t q4_isum_pre_dot(int8x16_t lo, int8x16_t hi, int8x16_t x0, int8x16_t x1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, x0), hi, x1);
}

INLINE int32x4_t q8_block_isum_dot(const int8_t *w, const int8_t *xq) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(xq)), vld1q_s8(w + 16),
                     vld1q_s8(xq + 16));
}

#define ISUM4 q4_block_isum_dot
#define ISUM4P q4_isum_pre_dot
#define ISUM8 q8_block_isum_dot
#define SUFFIX(name) name##_dot
#include "q4_neon_body.h"
#undef ISUM4
#undef ISUM4P
#undef ISUM8
#undef SUFFIX

const nano_kernel_table nano_kernels_neondot = {
    "neondot", q4_f32_neon, q4_q8_dot, q8_f32_neon, q8_q8_dot, quant_row_neon,
};
