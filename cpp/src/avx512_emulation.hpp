// Test builds only (cmake -DEMBTABLE_EMULATE_AVX512=ON): the AVX-512 intrinsics of
// the *_avx512.cpp units, run on a CPU without AVX-512. Those units are then
// compiled for AVX2 + FMA + F16C, and their explicit _mm512_* calls resolve to
// SIMDe's portable implementations (SIMDE_ENABLE_NATIVE_ALIASES), so the source
// lines behind `#if EMBTABLE_AVX512F` run here exactly as written and their bits
// can be compared with the baseline and AVX2 units. Release builds never include
// this file: there EMBTABLE_AVX512F / EMBTABLE_AVX512BW follow the compiler's own
// __AVX512F__ / __AVX512BW__.
#pragma once

#if !defined(EMBTABLE_EMULATE_AVX512_UNIT)
#error "avx512_emulation.hpp is for the emulated AVX-512 units only"
#endif
#if defined(__AVX512F__)
#error "the emulated AVX-512 units must be compiled without -mavx512f"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

namespace embtable::emulate512 {

// SIMDe 0.7.4 (Debian's) lacks these four: lane by lane, from Intel's definitions.

// VPMOVZXBW: 32 bytes zero-extended to 32 16-bit lanes.
[[gnu::always_inline]] inline __m512i cvtepu8_epi16(__m256i a) noexcept {
  uint8_t in[32];
  uint16_t out[32];
  std::memcpy(in, &a, sizeof(in));
  for (int i = 0; i < 32; ++i) out[i] = in[i];
  __m512i r;
  std::memcpy(&r, out, sizeof(r));
  return r;
}

// VPMOVZXBD: 16 bytes zero-extended to 16 32-bit lanes.
[[gnu::always_inline]] inline __m512i cvtepu8_epi32(__m128i a) noexcept {
  uint8_t in[16];
  uint32_t out[16];
  std::memcpy(in, &a, sizeof(in));
  for (int i = 0; i < 16; ++i) out[i] = in[i];
  __m512i r;
  std::memcpy(&r, out, sizeof(r));
  return r;
}

// VCVTDQ2PS: 16 int32 to float32, rounded to nearest even (the default MXCSR).
[[gnu::always_inline]] inline __m512 cvtepi32_ps(__m512i a) noexcept {
  int32_t in[16];
  float out[16];
  std::memcpy(in, &a, sizeof(in));
  for (int i = 0; i < 16; ++i) out[i] = static_cast<float>(in[i]);
  __m512 r;
  std::memcpy(&r, out, sizeof(r));
  return r;
}

// VCVTPH2PS with a zeroing mask: 16 float16 to float32 (exact), lane i zero where
// bit i of k is clear. Each half through F16C's 8-lane conversion (exact too).
[[gnu::always_inline]] inline __m512 maskz_cvtph_ps(uint16_t k, __m256i a) noexcept {
  __m128i half[2];
  std::memcpy(half, &a, sizeof(half));
  float out[16];
  for (int h = 0; h < 2; ++h) {
    const __m256 f = _mm256_cvtph_ps(half[h]);
    std::memcpy(out + 8 * h, &f, sizeof(f));
  }
  for (int i = 0; i < 16; ++i)
    if (!((k >> i) & 1u)) out[i] = 0.0f;
  __m512 r;
  std::memcpy(&r, out, sizeof(r));
  return r;
}

}  // namespace embtable::emulate512

#undef _mm512_cvtepu8_epi16
#undef _mm512_cvtepu8_epi32
#undef _mm512_cvtepi32_ps
#undef _mm512_maskz_cvtph_ps
#define _mm512_cvtepu8_epi16(a) ::embtable::emulate512::cvtepu8_epi16(a)
#define _mm512_cvtepu8_epi32(a) ::embtable::emulate512::cvtepu8_epi32(a)
#define _mm512_cvtepi32_ps(a) ::embtable::emulate512::cvtepi32_ps(a)
#define _mm512_maskz_cvtph_ps(k, a) \
  ::embtable::emulate512::maskz_cvtph_ps(static_cast<uint16_t>(k), a)

#define EMBTABLE_AVX512F 1
#define EMBTABLE_AVX512BW 1
