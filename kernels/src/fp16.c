/* fp16.c - IEEE binary16 <-> binary32, portable C (round to nearest even).
 * Hardware conversion (F16C / NEON fcvt) gives the same results; these are
 * the reference and what the scalar kernels use. */
#include <string.h>

#include "kernels_internal.h"

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float nano_h2f(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) return u2f(sign | 0x7F800000u | (man << 13)); /* inf / nan */
    if (exp != 0) return u2f(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return u2f(sign);
    /* subnormal: man * 2^-24 is exact in fp32 */
    const float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
}

NANO_API float nano_fp16_to_fp32(uint16_t h) { return nano_h2f(h); }

NANO_API uint16_t nano_fp32_to_fp16(float f) {
    const uint32_t u = f2u(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) /* inf or nan (keep a quiet nan) */
        return (uint16_t)(sign | 0x7C00u | (a > 0x7F800000u ? 0x200u | ((a >> 13) & 0x3FFu) : 0));
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal */
        /* value / 2^-24 rounded to nearest even; the float add does the rounding */
        const float v = u2f(a) * 16777216.0f;                /* exact (power of two) */
        const float r = v + 12582912.0f;                     /* 1.5 * 2^23: RNE to integer */
        return (uint16_t)(sign | (uint16_t)(f2u(r) - 0x4B400000u));
    }
    /* normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even */
    uint32_t m = a - ((uint32_t)(127 - 15) << 23);
    m += 0xFFFu + ((m >> 13) & 1u);
    return (uint16_t)(sign | (m >> 13));
}

NANO_API void nano_fp16_to_fp32_array(const uint16_t *src, float *dst, size_t n) {
    if (!src || !dst) return;
    for (size_t i = 0; i < n; i++) dst[i] = nano_h2f(src[i]);
}

NANO_API void nano_fp32_to_fp16_array(const float *src, uint16_t *dst, size_t n) {
    if (!src || !dst) return;
    for (size_t i = 0; i < n; i++) dst[i] = nano_fp32_to_fp16(src[i]);
}
