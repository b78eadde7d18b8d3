#include "embtable/quantized.hpp"

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "embtable/parallel.hpp"
#include "embtable/simd.hpp"
#include "embtable/validate.hpp"
#include "qbag_kernels.hpp"

#if defined(EMBTABLE_HAVE_AVX2) || defined(EMBTABLE_HAVE_AVX512)
#include <cpuid.h>
#endif

namespace embtable {

namespace kernels {

#if defined(EMBTABLE_HAVE_AVX2) || defined(EMBTABLE_HAVE_AVX512)
namespace {
// CPUID leaf 1, ECX bit 29. Read directly: clang before 15 does not accept
// "f16c" in __builtin_cpu_supports.
bool cpu_has_f16c() noexcept {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & bit_F16C) != 0;
}
}  // namespace
#endif

const QTableKernels& qkernels() noexcept {
  // The AVX2 / AVX-512 builds decode float16 with F16C: every such CPU has it,
  // but a hypervisor may mask it, so check once.
#if defined(EMBTABLE_HAVE_AVX2) || defined(EMBTABLE_HAVE_AVX512)
  static const bool f16c = cpu_has_f16c();
#endif
  switch (simd_selected()) {
#if defined(EMBTABLE_HAVE_AVX512)
    case Simd::avx512:
      if (f16c) return qkernels_avx512();
      break;
#endif
#if defined(EMBTABLE_HAVE_AVX2)
    case Simd::avx2:
      if (f16c) return qkernels_avx2();
      break;
#endif
    default:
      break;
  }
  return qkernels_baseline();
}

}  // namespace kernels

QFormat parse_qformat(const char* name) {
  const std::string s(name);
  if (s == "int8") return QFormat::int8;
  if (s == "int4") return QFormat::int4;
  if (s == "float16") return QFormat::float16;
  if (s == "bfloat16") return QFormat::bfloat16;
  throw std::invalid_argument("unknown quantized dtype '" + s +
                              "'; expected 'int8', 'int4', 'float16' or 'bfloat16'");
}

const char* qformat_name(QFormat f) noexcept {
  switch (f) {
    case QFormat::int8:
      return "int8";
    case QFormat::int4:
      return "int4";
    case QFormat::float16:
      return "float16";
    case QFormat::bfloat16:
      return "bfloat16";
  }
  return "?";
}

int64_t qrow_bytes(QFormat f, int64_t D) noexcept {
  switch (f) {
    case QFormat::int8:
      return D + 8;
    case QFormat::int4:
      return (D + 1) / 2 + 4;
    case QFormat::float16:
    case QFormat::bfloat16:
      return 2 * D;
  }
  return 0;
}

float half_to_float(uint16_t h) noexcept { return kernels::half_bits_to_float(h); }

uint16_t float_to_half(float f) noexcept {
  const uint32_t x = kernels::float_to_bits(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u)  // NaN: quiet, top payload bits kept (as F16C does)
    return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  const uint32_t e = a >> 23;                                 // biased float exponent
  if (e > 142) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 2^16: infinity
  if (e < 113) {
    // Below 2^-14: a half subnormal, mant * 2^-24 with mant = round(f / 2^-24).
    if (e < 102) return sign;  // below 2^-25: rounds to zero
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias, round the 13 dropped bits to nearest even (a carry into the
  // exponent is right, up to infinity).
  uint32_t h = ((e - 112) << 10) | ((a >> 13) & 0x3ffu);
  const uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t float_to_bfloat16(float f) noexcept {
  const uint32_t x = kernels::float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7fc0u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

namespace {

// Float-to-integer conversions as the x86 instructions FBGEMM uses do them:
// cvt_i32 is cvtps2dq (round to nearest even; NaN or out of range: INT32_MIN),
// lrint_i64 is lrintf (the same with int64 and INT64_MIN).
inline int32_t cvt_i32(float q) noexcept {
  if (!(std::fabs(q) < 2147483648.0f)) return INT32_MIN;
  return static_cast<int32_t>(std::nearbyint(q));
}
inline int64_t lrint_i64(float q) noexcept {
  if (!(std::fabs(q) < 9223372036854775808.0f)) return INT64_MIN;
  return static_cast<int64_t>(std::nearbyint(q));
}

// q in [0, 2^22): round to nearest even by adding and removing 1.5 * 2^23.
inline int rne_small(float q) noexcept {
  return static_cast<int>((q + 12582912.0f) - 12582912.0f);
}

// FBGEMM's code of column `col` of a D-column row. In range (the only case
// without a NaN or an infinity in the row) every path rounds to nearest even;
// out of range each path of its x86 code wraps or saturates its own way: the
// blocks of 32 columns saturate, the further blocks of 8 keep the low byte, the
// last columns convert through lrintf.
inline uint8_t code8(float q, int64_t col, int64_t D) noexcept {
  if (q >= 0.0f && q < 255.0f) return static_cast<uint8_t>(rne_small(q));
  if (col < D / 32 * 32) return static_cast<uint8_t>(std::clamp(cvt_i32(q), 0, 255));
  if (col < D / 8 * 8) return static_cast<uint8_t>(static_cast<uint32_t>(cvt_i32(q)));
  return static_cast<uint8_t>(static_cast<uint64_t>(lrint_i64(q)));
}
inline uint8_t code4(float q, int64_t col, int64_t D) noexcept {
  if (q >= 0.0f && q < 15.0f) return static_cast<uint8_t>(rne_small(q));
  if (col < D / 32 * 32) return static_cast<uint8_t>(std::clamp(cvt_i32(q), 0, 15));
  // std::max(0, std::min<int>(lrintf(q), 15)): the long narrows to int first.
  const auto v =
      static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(lrint_i64(q))));
  return static_cast<uint8_t>(std::clamp(v, 0, 15));
}

// The row minimum and maximum as FBGEMM's AVX2 code finds them: 8 lanes over the
// full blocks of 8 (min/max instructions that keep the new value on a tie or a
// NaN), the lanes folded with std::min/std::max, then the rest of the row. Only
// NaNs and signed zeros can tell the orders apart; the bytes follow FBGEMM's.
inline void row_min_max(const float* x, int64_t D, float& lo, float& hi) noexcept {
  float m[8], M[8];
  for (int l = 0; l < 8; ++l) m[l] = FLT_MAX, M[l] = -FLT_MAX;
  const int64_t full = D / 8 * 8;
  for (int64_t c = 0; c < full; c += 8)
    for (int l = 0; l < 8; ++l) {
      const float v = x[c + l];
      m[l] = m[l] < v ? m[l] : v;
      M[l] = M[l] > v ? M[l] : v;
    }
  lo = FLT_MAX;
  hi = -FLT_MAX;
  for (int l = 0; l < 8; ++l) {
    lo = m[l] < lo ? m[l] : lo;
    hi = hi < M[l] ? M[l] : hi;
  }
  for (int64_t c = full; c < D; ++c) {
    lo = x[c] < lo ? x[c] : lo;
    hi = hi < x[c] ? x[c] : hi;
  }
}

void quantize_row(const float* x, int64_t D, QFormat f, uint8_t* out) noexcept {
  switch (f) {
    case QFormat::int8: {
      float lo, hi;
      row_min_max(x, D, lo, hi);
      const float range = hi - lo;
      const float scale = range / 255.0f;
      const float inv = 255.0f / (range + 1e-8f);
      for (int64_t d = 0; d < D; ++d) out[d] = code8((x[d] - lo) * inv, d, D);
      std::memcpy(out + D, &scale, 4);
      std::memcpy(out + D + 4, &lo, 4);
      return;
    }
    case QFormat::int4: {
      float lo, hi;
      row_min_max(x, D, lo, hi);
      const uint16_t bias = float_to_half(lo);
      lo = half_to_float(bias);  // codes count from the stored bias
      const float range = hi - lo;
      float s = range == 0.0f ? 1.0f : range / 15.0f;
      s = half_to_float(float_to_half(s));
      if (s == 0.0f) s = 1.0f;
      float inv = 1.0f / s;
      if (std::isinf(inv)) s = 1.0f, inv = 1.0f;
      const uint16_t scale = float_to_half(s);
      const int64_t nb = (D + 1) / 2;
      for (int64_t k = 0; k < nb; ++k) {
        const uint8_t c0 = code4((x[2 * k] - lo) * inv, 2 * k, D);
        const uint8_t c1 =
            2 * k + 1 < D ? code4((x[2 * k + 1] - lo) * inv, 2 * k + 1, D) : 0;
        out[k] = static_cast<uint8_t>(c0 | (c1 << 4));
      }
      const uint16_t sb[2] = {scale, bias};
      std::memcpy(out + nb, sb, 4);
      return;
    }
    case QFormat::float16: {
      for (int64_t d = 0; d < D; ++d) {
        const uint16_t h = float_to_half(x[d]);
        std::memcpy(out + 2 * d, &h, 2);
      }
      return;
    }
    case QFormat::bfloat16: {
      for (int64_t d = 0; d < D; ++d) {
        const uint16_t h = float_to_bfloat16(x[d]);
        std::memcpy(out + 2 * d, &h, 2);
      }
      return;
    }
  }
}

// Rows [r0, r1) of a float32 or float64 table (float64 rounded to float32 first).
template <class Scalar>
void quantize_rows(const Scalar* table, int64_t D, QFormat f, uint8_t* out, int64_t r0,
                   int64_t r1) {
  const int64_t rb = qrow_bytes(f, D);
  std::vector<float> buf;
  if constexpr (!std::is_same_v<Scalar, float>) buf.resize(static_cast<size_t>(D));
  for (int64_t r = r0; r < r1; ++r) {
    const Scalar* src = table + r * D;
    const float* x;
    if constexpr (std::is_same_v<Scalar, float>) {
      x = src;
    } else {
      for (int64_t d = 0; d < D; ++d)
        buf[static_cast<size_t>(d)] = static_cast<float>(src[d]);
      x = buf.data();
    }
    quantize_row(x, D, f, out + r * rb);
  }
}

void check_bag_inputs(const QTable& t, BagMode mode, const float* weights,
                      int64_t padding_idx) {
  if (padding_idx >= t.V)
    throw std::invalid_argument("padding_idx " + std::to_string(padding_idx) +
                                " is out of bounds for a table with " +
                                std::to_string(t.V) + " rows; it must be in [0, V)");
  if (weights && mode != BagMode::sum)
    throw std::invalid_argument(
        "per_sample_weights are only supported with mode='sum'");
}

}  // namespace

template <class Scalar>
void quantize(const Scalar* table, int64_t V, int64_t D, QFormat f, uint8_t* out) {
  if (V == 0) return;
  const int64_t grain = grain_rows(D * static_cast<int64_t>(sizeof(Scalar)));
  parallel_for(0, V, grain, [&](int64_t r0, int64_t r1) {
    quantize_rows(table, D, f, out, r0, r1);
  });
}

template <class Scalar>
void quantize_ref(const Scalar* table, int64_t V, int64_t D, QFormat f, uint8_t* out) {
  quantize_rows(table, D, f, out, 0, V);
}

void dequantize(const QTable& t, float* out) {
  if (t.V == 0 || t.D == 0) return;
  const auto& k = kernels::qkernels();
  parallel_for(0, t.V, grain_rows(t.D * 4), [&](int64_t r0, int64_t r1) {
    k.dequantize(t, r0, r1, out + r0 * t.D);
  });
}

template <class Index>
void qgather(const QTable& t, const Index* indices, std::span<const int64_t> shape,
             float* out) {
  const int64_t n = shape_size(shape);
  check_indices(indices, shape, t.V);
  if (n == 0 || t.D == 0) return;
  const auto fn = kernels::qkernels().gather<Index>();
  parallel_for(0, n, grain_rows(t.D * 4),
               [&](int64_t b, int64_t e) { fn(t, indices, b, e, out + b * t.D); });
}

template <class Index>
void qgather_ref(const QTable& t, const Index* indices, int64_t n, float* out) {
  std::vector<float> row(static_cast<size_t>(t.D));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(indices[i]);
    const uint8_t* p = t.data + r * t.row_bytes;
    for (int64_t d = 0; d < t.D; ++d) {
      float v = 0.0f;
      switch (t.format) {
        case QFormat::int8: {
          float s, b;
          std::memcpy(&s, p + t.D, 4);
          std::memcpy(&b, p + t.D + 4, 4);
          v = s * static_cast<float>(p[d]) + b;
          break;
        }
        case QFormat::int4: {
          uint16_t sb[2];
          std::memcpy(sb, p + (t.D + 1) / 2, 4);
          const int code = (p[d / 2] >> (4 * (d % 2))) & 15;
          v = half_to_float(sb[0]) * static_cast<float>(code) + half_to_float(sb[1]);
          break;
        }
        case QFormat::float16: {
          uint16_t h;
          std::memcpy(&h, p + 2 * d, 2);
          v = half_to_float(h);
          break;
        }
        case QFormat::bfloat16: {
          uint16_t h;
          std::memcpy(&h, p + 2 * d, 2);
          v = kernels::bits_to_float(static_cast<uint32_t>(h) << 16);
          break;
        }
      }
      out[i * t.D + d] = v;
    }
  }
}

template <class Index>
void qembedding_bag(const QTable& t, const Index* indices,
                    std::span<const int64_t> index_shape, const Bags& bags,
                    BagMode mode, const float* per_sample_weights, int64_t padding_idx,
                    float* out, int64_t out_stride) {
  check_bag_inputs(t, mode, per_sample_weights, padding_idx);
  check_indices(indices, index_shape, t.V);
  const int64_t B = bags.num_bags;
  if (B == 0 || t.D == 0) return;
  const kernels::QBagArgs<Index> args{
      t, indices, &bags, mode, per_sample_weights, padding_idx, out, out_stride};
  const auto fn = kernels::qkernels().bag<Index>();
  // A task covers about tuning().parallel_bytes of packed rows.
  const int64_t per_bag = std::max<int64_t>(1, bags.num_indices / B);
  const int64_t grain = std::max<int64_t>(1, grain_rows(t.row_bytes) / per_bag);
  parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { fn(args, b0, b1); });
}

template <class Index>
void qembedding_bag_ref(const QTable& t, const Index* indices, const Bags& bags,
                        BagMode mode, const float* per_sample_weights,
                        int64_t padding_idx, float* out, int64_t out_stride) {
  const int64_t D = t.D;
  std::vector<float> row(static_cast<size_t>(D));
  for (int64_t b = 0; b < bags.num_bags; ++b) {
    const int64_t s = bags.begin(b), e = bags.end(b);
    float* o = out + b * out_stride;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    int64_t count = 0;
    for (int64_t i = s; i < e; ++i) {
      const Index r = indices[i];
      if (static_cast<int64_t>(r) == padding_idx) continue;
      qgather_ref(t, &r, 1, row.data());
      for (int64_t d = 0; d < D; ++d) {
        const float v = row[static_cast<size_t>(d)];
        if (mode == BagMode::max)
          o[d] = (count == 0 || v > o[d]) ? v : o[d];
        else
          o[d] += per_sample_weights ? per_sample_weights[i] * v : v;
      }
      ++count;
    }
    if (mode == BagMode::mean && count > 0)
      for (int64_t d = 0; d < D; ++d) o[d] = o[d] / static_cast<float>(count);
  }
}

template void quantize<float>(const float*, int64_t, int64_t, QFormat, uint8_t*);
template void quantize<double>(const double*, int64_t, int64_t, QFormat, uint8_t*);
template void quantize_ref<float>(const float*, int64_t, int64_t, QFormat, uint8_t*);
template void quantize_ref<double>(const double*, int64_t, int64_t, QFormat, uint8_t*);

#define EMBTABLE_INSTANTIATE(Index)                                                   \
  template void qgather<Index>(const QTable&, const Index*, std::span<const int64_t>, \
                               float*);                                               \
  template void qgather_ref<Index>(const QTable&, const Index*, int64_t, float*);     \
  template void qembedding_bag<Index>(const QTable&, const Index*,                    \
                                      std::span<const int64_t>, const Bags&, BagMode, \
                                      const float*, int64_t, float*, int64_t);        \
  template void qembedding_bag_ref<Index>(const QTable&, const Index*, const Bags&,   \
                                          BagMode, const float*, int64_t, float*,     \
                                          int64_t);
EMBTABLE_INSTANTIATE(int32_t)
EMBTABLE_INSTANTIATE(int64_t)
#undef EMBTABLE_INSTANTIATE

}  // namespace embtable
