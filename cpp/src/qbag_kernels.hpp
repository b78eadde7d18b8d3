// Internal: the per-ISA kernels of quantized tables (gather, bag forward,
// dequantize), rows decoded on the fly. One table per SIMD level.
#pragma once

#include <cstdint>
#include <cstring>

#include "embtable/quantized.hpp"

namespace embtable::kernels {

template <class Index>
struct QBagArgs {
  QTable t;
  const Index* indices;
  const Bags* bags;
  BagMode mode;
  const float* weights;  // nullptr unless weighted sum
  int64_t padding_idx;   // < 0: none
  float* out;            // row b at out + b * out_stride
  int64_t out_stride;
};

template <class Index>
using QBagFn = void (*)(const QBagArgs<Index>& a, int64_t b0, int64_t b1);
template <class Index>
using QGatherFn = void (*)(const QTable& t, const Index* indices, int64_t b, int64_t e,
                           float* out);

struct QTableKernels {
  QBagFn<int32_t> bag_i32;
  QBagFn<int64_t> bag_i64;
  QGatherFn<int32_t> gather_i32;
  QGatherFn<int64_t> gather_i64;
  // out[(r - r0) * D + d] = value(r, d) for r in [r0, r1)
  void (*dequantize)(const QTable& t, int64_t r0, int64_t r1, float* out);

  template <class Index>
  QBagFn<Index> bag() const noexcept {
    if constexpr (sizeof(Index) == 4)
      return bag_i32;
    else
      return bag_i64;
  }
  template <class Index>
  QGatherFn<Index> gather() const noexcept {
    if constexpr (sizeof(Index) == 4)
      return gather_i32;
    else
      return gather_i64;
  }
};

const QTableKernels& qkernels_baseline() noexcept;
#if defined(EMBTABLE_HAVE_AVX2)
const QTableKernels& qkernels_avx2() noexcept;
#endif
#if defined(EMBTABLE_HAVE_AVX512)
const QTableKernels& qkernels_avx512() noexcept;
#endif

// The kernels of the selected SIMD level.
const QTableKernels& qkernels() noexcept;

// Exact scalar conversions, inline for the kernels (`static`: each ISA translation
// unit keeps its own copy).
static inline float bits_to_float(uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline uint32_t float_to_bits(float f) noexcept {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float half_bits_to_float(uint16_t h) noexcept {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_to_float(sign);
  // Subnormal half: mant * 2^-24, exact in float32.
  const float v = static_cast<float>(mant) * bits_to_float(0x33800000u);  // 2^-24
  return bits_to_float(sign | float_to_bits(v));
}

}  // namespace embtable::kernels
