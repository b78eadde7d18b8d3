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

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif
// The AVX-512 blocks below: compiled with -mavx512f / -mavx512bw, or, in the
// test-only emulated build (EMBTABLE_EMULATE_AVX512), through SIMDe.
#if defined(EMBTABLE_EMULATE_AVX512_UNIT)
#include "avx512_emulation.hpp"
#else
#if defined(__AVX512F__)
#define EMBTABLE_AVX512F 1
#endif
#if defined(__AVX512BW__)
#define EMBTABLE_AVX512BW 1
#endif
#endif

#include "embtable/tuning.hpp"
#include "prefetch.hpp"
#include "qbag_kernels.hpp"

namespace embtable::kernels {
namespace {

constexpr int64_t kBlock = 64;  // columns decoded and pooled at once
// This unit's vector registers, in bytes.
#if defined(EMBTABLE_AVX512F)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
// Ids ahead to prefetch: about tuning().bag_prefetch_bytes of packed rows in
// flight (small rows need more of them to hide the same memory latency), between
// 16 and 64 rows; none when it is 0 (prefetch off).
inline int64_t prefetch_ahead(int64_t row_bytes) noexcept {
  const int64_t bytes = tuning().bag_prefetch_bytes.value;
  if (bytes <= 0) return 0;
  return std::clamp<int64_t>(bytes / std::max<int64_t>(row_bytes, 1), 16, 64);
}

enum class Kind { sum, wsum, mean, max };

// Every cache line of [p, p + bytes) (prefetch.hpp): packed rows are rarely
// line-aligned (36 bytes for int4 D = 64) and the scale and bias sit at the
// row's end.
[[gnu::always_inline]] inline void prefetch_bytes(const uint8_t* p,
                                                  int64_t bytes) noexcept {
  prefetch_lines<0>(p, bytes);
}

// float16 bits to float32: F16C where compiled in, else the exact bit recipe.
inline float half_scalar(uint16_t h) noexcept {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return half_bits_to_float(h);
#endif
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
    scale = half_scalar(h[0]);
    bias = half_scalar(h[1]);
  }
  template <int64_t W>
  void decode(int64_t col, int64_t width, float* __restrict v) const noexcept {
    const int64_t w = W > 0 ? W : width;
    const uint8_t* p = nibbles + col / 2;
    const float s = scale, b = bias;
#if defined(EMBTABLE_AVX512BW)
    if constexpr (W == kBlock) {
      // 32 bytes -> 32 (low, high) 16-bit pairs = the 64 codes in column order,
      // stored once (64 bytes) and read back by the affine loop below in loads
      // that store forwarding serves.
      const __m512i pairs =
          _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      alignas(64) uint8_t c[kBlock];
      _mm512_store_si512(
          c, _mm512_or_si512(_mm512_and_si512(pairs, _mm512_set1_epi16(0x0f)),
                             _mm512_and_si512(_mm512_slli_epi16(pairs, 4),
                                              _mm512_set1_epi16(0x0f00))));
      for (int64_t d = 0; d < kBlock; ++d) v[d] = s * static_cast<float>(c[d]) + b;
      return;
    }
#elif defined(__AVX2__)
    if constexpr (W == kBlock) {
      const __m256 sv = _mm256_set1_ps(s), bv = _mm256_set1_ps(b);
      for (int64_t half = 0; half < 2; ++half) {
        // 16 bytes -> 16 (low, high) pairs = 32 codes in column order.
        const __m256i pairs = _mm256_cvtepu8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * half)));
        const __m256i codes = _mm256_or_si256(
            _mm256_and_si256(pairs, _mm256_set1_epi16(0x0f)),
            _mm256_and_si256(_mm256_slli_epi16(pairs, 4), _mm256_set1_epi16(0x0f00)));
        const __m128i lo = _mm256_castsi256_si128(codes);
        const __m128i hi = _mm256_extracti128_si256(codes, 1);
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; ++k)
          _mm256_storeu_ps(
              v + 32 * half + 8 * k,
              _mm256_add_ps(
                  _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k]))),
                  bv));
      }
      return;
    }
#endif
    // Byte k -> the 16-bit pair (low nibble, high nibble): read as bytes, the
    // pairs are the codes in column order. One vector store, then loads the
    // store forwards (no split stores read back as one wide load).
    alignas(64) uint16_t pairs[kBlock / 2];
    for (int64_t k = 0; k < (w + 1) / 2; ++k) {
      const uint16_t b = p[k];
      pairs[k] = static_cast<uint16_t>((b & 0x0fu) | ((b << 4) & 0x0f00u));
    }
    const auto* c = reinterpret_cast<const uint8_t*>(pairs);
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
#if defined(EMBTABLE_AVX512F)
    // Stores as wide as the pooling loop's loads (a zmm load of two ymm stores
    // would miss store forwarding).
    for (; d + 16 <= w; d += 16)
      _mm512_storeu_ps(
          v + d,
          _mm512_maskz_cvtph_ps(  // (the unmasked form trips GCC 12's uninit warning)
              0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + d))));
#endif
#if defined(__F16C__)
    for (; d + 8 <= w; d += 8)
      _mm256_storeu_ps(
          v + d,
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + d))));
    if constexpr (W % 8 == 0 && W > 0) return;  // a full block: no tail
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
                       int64_t width, int64_t pf_end, int64_t ahead,
                       float* __restrict out) noexcept {
  const int64_t w = W > 0 ? W : width;
  const QTable& t = a.t;
  const int64_t D = t.D, rb = t.row_bytes;
  const int64_t pad = a.padding_idx;
  const Index* idx = a.indices;
  const uint8_t* base = t.data;
  const bool prefetch = col == 0 && ahead > 0;
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
      if (prefetch && i + ahead < pf_end)
        prefetch_bytes(base + static_cast<int64_t>(idx[i + ahead]) * rb, rb);
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r == pad) continue;
      Row<F>(base + r * rb, D).template decode<W>(col, w, v);
      for (int64_t d = 0; d < w; ++d) {
        const bool greater = v[d] > acc[d];  // ties keep the first id in bag order
        acc[d] = greater ? v[d] : acc[d];
      }
    }
    for (int64_t d = 0; d < w; ++d) out[d] = acc[d];
  } else if constexpr (W == kBlock && (F == QFormat::int8 || F == QFormat::int4)) {
    // A full block of int8 / int4 codes: the sums live in vector registers
    // across the bag (an array in memory would put a store-to-load round trip
    // on every id's chain), as wide as this unit's registers. Same operations in
    // the same order as the loop below: the same bits. (float16 / bfloat16 rows
    // measured no faster this way.)
    constexpr int kLanes = kVecBytes / 4;
    constexpr int kParts = kBlock / kLanes;
    typedef float Vec __attribute__((vector_size(kVecBytes)));
    // One loop and no lambdas: with the id's work in a lambda called from two
    // loops (one prefetching, one not), GCC 12 kept the sums in memory, a store
    // and a reload on every id's chain, at every SIMD level (int8 1.13-1.18x
    // faster without, on Zen 3). Nor may their address be taken: they are
    // copied out at the end.
    Vec sum[kParts] = {};
    int64_t count = 0;
    const int64_t mid = prefetch ? std::clamp(pf_end - ahead, s, e) : s;
    for (int64_t i = s; i < e; ++i) {
      if (i < mid) prefetch_bytes(base + static_cast<int64_t>(idx[i + ahead]) * rb, rb);
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r == pad) continue;
      ++count;
      if constexpr (F == QFormat::int8 && kVecBytes >= 32) {
        // Decoded in registers: float(code) * scale + bias, as Row<int8>::decode,
        // and each part added as soon as it is decoded (all 8 parts decoded
        // first, beside 8 sums, would need more than AVX2's 16 registers).
        const Row<F> row(base + r * rb, D);
        Vec sv, bv;  // broadcasts (0 + x would turn a -0.0 scale into +0.0)
        for (int j = 0; j < kLanes; ++j) sv[j] = row.scale, bv[j] = row.bias;
#pragma GCC unroll 16
        for (int k = 0; k < kParts; ++k) {
          const uint8_t* c = row.codes + col + kLanes * k;
#if defined(EMBTABLE_AVX512F)
          const __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(c))));
#elif defined(__AVX2__)
          const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c))));
#else
          const Vec x = {};  // not reached: kVecBytes is 16 without AVX2
          (void)c;
#endif
          Vec f;
          std::memcpy(&f, &x, sizeof(f));
          const Vec xk = sv * f + bv;
          if constexpr (K == Kind::wsum) {
            sum[k] += a.weights[i] * xk;
          } else {
            sum[k] += xk;
          }
        }
      } else {
        Row<F>(base + r * rb, D).template decode<W>(col, w, v);
#pragma GCC unroll 16
        for (int k = 0; k < kParts; ++k) {
          Vec xk;
          std::memcpy(&xk, v + kLanes * k, sizeof(Vec));
          if constexpr (K == Kind::wsum) {
            sum[k] += a.weights[i] * xk;
          } else {
            sum[k] += xk;
          }
        }
      }
    }
#pragma GCC unroll 16
    for (int k = 0; k < kParts; ++k) {
      const Vec part = sum[k];
      std::memcpy(acc + kLanes * k, &part, sizeof(Vec));
    }
    if constexpr (K == Kind::mean) {
      if (count > 0) {
        const auto c = static_cast<float>(count);
        for (int64_t d = 0; d < kBlock; ++d) acc[d] = acc[d] / c;
      }
    }
    for (int64_t d = 0; d < kBlock; ++d) out[d] = acc[d];
  } else {
    for (int64_t d = 0; d < w; ++d) acc[d] = 0.0f;
    int64_t count = 0;
    for (int64_t i = s; i < e; ++i) {
      if (prefetch && i + ahead < pf_end)
        prefetch_bytes(base + static_cast<int64_t>(idx[i + ahead]) * rb, rb);
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
  const int64_t ahead = prefetch_ahead(a.t.row_bytes);  // once per range, not per bag
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = bags.begin(b), e = bags.end(b);
    for (int64_t col = 0; col < D; col += kBlock) {
      const int64_t width = std::min(kBlock, D - col);
      float* out = a.out + b * a.out_stride + col;
      if (width == kBlock)
        pool_block<K, F, kBlock>(a, s, e, col, width, pf_end, ahead, out);
      else
        pool_block<K, F, 0>(a, s, e, col, width, pf_end, ahead, out);
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
    for (; col + kBlock <= D; col += kBlock)
      row.template decode<kBlock>(col, kBlock, o + col);
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
        const int64_t ahead = prefetch_ahead(t.row_bytes);
        if (ahead > 0 && i + ahead < e - b)
          prefetch_bytes(
              t.data + static_cast<int64_t>(indices[b + i + ahead]) * t.row_bytes,
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
