// The quantized-table kernels, written once and compiled per instruction set: a
// translation unit defines EMBTABLE_QBAG_TABLE (the accessor's name) and includes
// this file. Internal linkage throughout, as in bag_kernels_impl.hpp.
//
// A row is decoded kBlock columns at a time into a local block (value = scale *
// code + bias in float32, or the exact widening of a 16-bit float) and pooled in
// a second local block the compiler keeps in vector registers; the output row is
// stored once. The arithmetic is the float bag's, so the bits are too.
#ifndef EMBTABLE_QBAG_TABLE
#error "define EMBTABLE_QBAG_TABLE before including qbag_kernels_impl.hpp"
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "qbag_kernels.hpp"

namespace embtable::kernels {
namespace {

constexpr int64_t kBlock = 64;        // columns decoded and pooled at once
constexpr int64_t kBagPrefetch = 16;  // ids ahead to prefetch

enum class Kind { sum, wsum, mean, max };

inline void prefetch_bytes(const uint8_t* p, int64_t bytes) noexcept {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// One packed row and its decoder: decode<W>(col, w, v) writes value(col + d) to
// v[d] for d < w (W > 0: w is the compile-time W). col is a multiple of kBlock.
template <QFormat F>
struct Row;

template <>
struct Row<QFormat::int8> {
  const uint8_t* codes;
  float scale, bias;
  Row(const uint8_t* row, int64_t D) noexcept : codes(row) {
    std::memcpy(&scale, row + D, 4);
    std::memcpy(&bias, row + D + 4, 4);
  }
  template <int64_t W>
  void decode(int64_t col, int64_t width, float* __restrict v) const noexcept {
    const int64_t w = W > 0 ? W : width;
    const uint8_t* c = codes + col;
    const float s = scale, b = bias;
    for (int64_t d = 0; d < w; ++d) v[d] = s * static_cast<float>(c[d]) + b;
  }
};

template <>
struct Row<QFormat::int4> {
  const uint8_t* nibbles;
  float scale, bias;
  Row(const uint8_t* row, int64_t D) noexcept : nibbles(row) {
    uint16_t h[2];
    std::memcpy(h, row + (D + 1) / 2, 4);
    scale = half_bits_to_float(h[0]);
    bias = half_bits_to_float(h[1]);
  }
  template <int64_t W>
  void decode(int64_t col, int64_t width, float* __restrict v) const noexcept {
    const int64_t w = W > 0 ? W : width;
    const uint8_t* p = nibbles + col / 2;
    // Codes first (bytes, split into nibbles), then one vectorisable affine loop.
    uint8_t c[kBlock];
    for (int64_t k = 0; k < w / 2; ++k) {
      c[2 * k] = static_cast<uint8_t>(p[k] & 15u);
      c[2 * k + 1] = static_cast<uint8_t>(p[k] >> 4);
    }
    if (w & 1) c[w - 1] = static_cast<uint8_t>(p[w / 2] & 15u);
    const float s = scale, b = bias;
    for (int64_t d = 0; d < w; ++d) v[d] = s * static_cast<float>(c[d]) + b;
  }
};

template <>
struct Row<QFormat::float16> {
  const uint16_t* h;
  Row(const uint8_t* row, int64_t) noexcept
      : h(reinterpret_cast<const uint16_t*>(row)) {}
  template <int64_t W>
  void decode(int64_t col, int64_t width, float* __restrict v) const noexcept {
    const int64_t w = W > 0 ? W : width;
    const uint16_t* p = h + col;
    int64_t d = 0;
#if defined(__F16C__)
    for (; d + 8 <= w; d += 8)
      _mm256_storeu_ps(v + d, _mm256_cvtph_ps(_mm_loadu_si128(
                                  reinterpret_cast<const __m128i*>(p + d))));
#endif
    for (; d < w; ++d) v[d] = half_bits_to_float(p[d]);
  }
};

template <>
struct Row<QFormat::bfloat16> {
  const uint16_t* h;
  Row(const uint8_t* row, int64_t) noexcept
      : h(reinterpret_cast<const uint16_t*>(row)) {}
  template <int64_t W>
  void decode(int64_t col, int64_t width, float* __restrict v) const noexcept {
    const int64_t w = W > 0 ? W : width;
    const uint16_t* p = h + col;
    uint32_t u[kBlock];
    for (int64_t d = 0; d < w; ++d) u[d] = static_cast<uint32_t>(p[d]) << 16;
    std::memcpy(v, u, static_cast<size_t>(w) * 4);
  }
};

// Pools positions [s, e) over columns [col, col + width) into out.
template <Kind K, QFormat F, int64_t W, class Index>
inline void pool_block(const QBagArgs<Index>& a, int64_t s, int64_t e, int64_t col,
                       int64_t width, int64_t pf_end, float* __restrict out) noexcept {
  const int64_t w = W > 0 ? W : width;
  const QTable& t = a.t;
  const int64_t D = t.D, rb = t.row_bytes;
  const int64_t pad = a.padding_idx;
  const Index* idx = a.indices;
  const uint8_t* base = t.data;
  const bool prefetch = col == 0;
  alignas(64) float acc[kBlock];
  alignas(64) float v[kBlock];
  if constexpr (K == Kind::max) {
    int64_t i = s;
    while (i < e && static_cast<int64_t>(idx[i]) == pad) ++i;
    if (i == e) {  // empty, or only padding: zeros
      for (int64_t d = 0; d < w; ++d) out[d] = 0.0f;
      return;
    }
    Row<F>(base + static_cast<int64_t>(idx[i]) * rb, D).template decode<W>(col, w, acc);
    for (++i; i < e; ++i) {
      if (prefetch && i + kBagPrefetch < pf_end)
        prefetch_bytes(base + static_cast<int64_t>(idx[i + kBagPrefetch]) * rb, rb);
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r == pad) continue;
      Row<F>(base + r * rb, D).template decode<W>(col, w, v);
      for (int64_t d = 0; d < w; ++d) {
        const bool greater = v[d] > acc[d];  // ties keep the first id in bag order
        acc[d] = greater ? v[d] : acc[d];
      }
    }
    for (int64_t d = 0; d < w; ++d) out[d] = acc[d];
  } else {
    for (int64_t d = 0; d < w; ++d) acc[d] = 0.0f;
    int64_t count = 0;
    for (int64_t i = s; i < e; ++i) {
      if (prefetch && i + kBagPrefetch < pf_end)
        prefetch_bytes(base + static_cast<int64_t>(idx[i + kBagPrefetch]) * rb, rb);
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r == pad) continue;
      ++count;
      Row<F>(base + r * rb, D).template decode<W>(col, w, v);
      if constexpr (K == Kind::wsum) {
        const float weight = a.weights[i];
        for (int64_t d = 0; d < w; ++d) acc[d] += weight * v[d];
      } else {
        for (int64_t d = 0; d < w; ++d) acc[d] += v[d];
      }
    }
    if constexpr (K == Kind::mean) {
      if (count > 0) {
        const auto c = static_cast<float>(count);
        for (int64_t d = 0; d < w; ++d) acc[d] = acc[d] / c;
      }
    }
    for (int64_t d = 0; d < w; ++d) out[d] = acc[d];
  }
}

template <Kind K, QFormat F, class Index>
void bag_kind(const QBagArgs<Index>& a, int64_t b0, int64_t b1) {
  const int64_t D = a.t.D;
  const Bags& bags = *a.bags;
  const int64_t pf_end = bags.end(b1 - 1);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = bags.begin(b), e = bags.end(b);
    for (int64_t col = 0; col < D; col += kBlock) {
      const int64_t width = std::min(kBlock, D - col);
      float* out = a.out + b * a.out_stride + col;
      if (width == kBlock)
        pool_block<K, F, kBlock>(a, s, e, col, width, pf_end, out);
      else
        pool_block<K, F, 0>(a, s, e, col, width, pf_end, out);
    }
  }
}

template <QFormat F, class Index>
void bag_format(const QBagArgs<Index>& a, int64_t b0, int64_t b1) {
  switch (a.mode) {
    case BagMode::sum:
      if (a.weights)
        bag_kind<Kind::wsum, F>(a, b0, b1);
      else
        bag_kind<Kind::sum, F>(a, b0, b1);
      return;
    case BagMode::mean:
      bag_kind<Kind::mean, F>(a, b0, b1);
      return;
    case BagMode::max:
      bag_kind<Kind::max, F>(a, b0, b1);
      return;
  }
}

template <class Index>
void bag(const QBagArgs<Index>& a, int64_t b0, int64_t b1) {
  switch (a.t.format) {
    case QFormat::int8:
      return bag_format<QFormat::int8>(a, b0, b1);
    case QFormat::int4:
      return bag_format<QFormat::int4>(a, b0, b1);
    case QFormat::float16:
      return bag_format<QFormat::float16>(a, b0, b1);
    case QFormat::bfloat16:
      return bag_format<QFormat::bfloat16>(a, b0, b1);
  }
}

// Decodes whole rows (row of indices[i] or row r0 + i) straight into out.
template <QFormat F, class RowOf>
void decode_rows(const QTable& t, int64_t n, const RowOf& row_of, float* out) {
  const int64_t D = t.D;
  for (int64_t i = 0; i < n; ++i) {
    const Row<F> row(t.data + row_of(i) * t.row_bytes, D);
    float* o = out + i * D;
    int64_t col = 0;
    for (; col + kBlock <= D; col += kBlock) row.template decode<kBlock>(col, kBlock, o + col);
    if (col < D) row.template decode<0>(col, D - col, o + col);
  }
}

template <class RowOf>
void decode_any(const QTable& t, int64_t n, const RowOf& row_of, float* out) {
  switch (t.format) {
    case QFormat::int8:
      return decode_rows<QFormat::int8>(t, n, row_of, out);
    case QFormat::int4:
      return decode_rows<QFormat::int4>(t, n, row_of, out);
    case QFormat::float16:
      return decode_rows<QFormat::float16>(t, n, row_of, out);
    case QFormat::bfloat16:
      return decode_rows<QFormat::bfloat16>(t, n, row_of, out);
  }
}

template <class Index>
void gather(const QTable& t, const Index* indices, int64_t b, int64_t e, float* out) {
  decode_any(
      t, e - b,
      [&](int64_t i) {
        if (i + kBagPrefetch < e - b)
          prefetch_bytes(t.data + static_cast<int64_t>(indices[b + i + kBagPrefetch]) *
                                      t.row_bytes,
                         t.row_bytes);
        return static_cast<int64_t>(indices[b + i]);
      },
      out);
}

void dequantize(const QTable& t, int64_t r0, int64_t r1, float* out) {
  decode_any(t, r1 - r0, [&](int64_t i) { return r0 + i; }, out);
}

const QTableKernels kQKernels{&bag<int32_t>, &bag<int64_t>, &gather<int32_t>,
                              &gather<int64_t>, &dequantize};

}  // namespace

const QTableKernels& EMBTABLE_QBAG_TABLE() noexcept { return kQKernels; }

}  // namespace embtable::kernels
