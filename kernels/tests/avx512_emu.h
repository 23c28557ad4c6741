/* avx512_emu.h - run the AVX-512 kernel source on a CPU without AVX-512 (test builds only).
 *
 * `make test-avx512-emu` compiles src/q4_avx512.c with `-include tests/avx512_emu.h`:
 * every _mm512_* / __m512* name then resolves to SIMDe's portable implementation (SIMD
 * Everywhere, Debian package libsimde-dev, native aliases), so the kernel's own logic
 * (block regrouping, vpermt2q/vpdpbusd lanes, scale expansion, tails) runs on AVX2 hardware
 * and is checked against the scalar reference by tests/test_kernels.c. It verifies the
 * source, not the silicon: a real AVX-512 CPU is still the final word.
 * SIMDe 0.7.4 lacks two intrinsics the kernel uses; they are defined here with the same
 * results (reduce_add_ps in GCC's own pairwise order: 512 -> 256 -> 128 -> 64 -> 32). */
#ifndef NANO_AVX512_EMU_H
#define NANO_AVX512_EMU_H
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

static inline simde__m512 nano_emu_mm512_cvtepi32_ps(simde__m512i a) {
    int32_t i[16];
    float f[16];
    simde_mm512_storeu_si512(i, a);
    for (int k = 0; k < 16; k++) f[k] = (float)i[k];
    return simde_mm512_loadu_ps(f);
}

static inline float nano_emu_mm512_reduce_add_ps(simde__m512 a) {
    float v[16];
    simde_mm512_storeu_ps(v, a);
    float h[8], q[4];
    for (int k = 0; k < 8; k++) h[k] = v[k] + v[k + 8];
    for (int k = 0; k < 4; k++) q[k] = h[k] + h[k + 4];
    const float p0 = q[0] + q[2], p1 = q[1] + q[3];
    return p0 + p1;
}

#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps(a) nano_emu_mm512_cvtepi32_ps(a)
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps(a) nano_emu_mm512_reduce_add_ps(a)
#endif
