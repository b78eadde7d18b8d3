// Quantized tables: rows stored as 8- or 4-bit codes (FBGEMM's fused row-wise
// formats) or as 16-bit floats, looked up with the rows dequantized on the fly.
//
// Row layouts (row_bytes bytes per row, V rows, row-major):
//   int8:     D uint8 codes, float32 scale, float32 bias          row_bytes = D + 8
//   int4:     ceil(D / 2) bytes of nibbles (code 2k in the low nibble of byte k,
//             code 2k + 1 in the high one; an odd D leaves the last high nibble 0),
//             float16 scale, float16 bias                       row_bytes = ceil(D/2) +
//             4
//   float16:  D IEEE half floats                                  row_bytes = 2 D
//   bfloat16: D bfloat16 values (the high 16 bits of a float32)   row_bytes = 2 D
//
// Dequantized value of row r, column d (computed in float32, no FMA contraction):
//   int8 / int4:  value(r, d) = scale_r * float(code(r, d)) + bias_r
//   float16:      value(r, d) = float(half)        (exact)
//   bfloat16:     value(r, d) = bits << 16         (exact)
//
// Quantize (per row x of D float32 values; FBGEMM's x86 code, bit for bit):
//   lo, hi = min, max of x (8 lanes over the full blocks of 8, then the rest)
//   int8:  scale = (hi - lo) / 255;  bias = lo;  inv = 255 / ((hi - lo) + 1e-8)
//          code = clamp(rne((x - lo) * inv), 0, 255)       (NaN -> 0)
//   int4:  bias = half(lo) (round to nearest even);  lo' = float(bias)
//          s = hi - lo' == 0 ? 1 : (hi - lo') / 15;  s = float(half(s));  s == 0 -> 1
//          inv = 1 / s; inv infinite -> s = inv = 1;  scale = half(s)
//          code = clamp(rne((x - lo') * inv), 0, 15)       (NaN -> 0)
//   float16 / bfloat16: each value rounded to nearest even (NaN stays NaN:
//          bfloat16 NaN is 0x7FC0 with the sign kept).
//
// gather:  out[i, :] = value(indices[i], :)
// bag:     the float embedding_bag (embedding_bag.hpp) over value(r, :), with the
//          output row b written at out + b * out_stride: sums in index order in
//          float32 (w[i] * value for weighted sums), mean = sum / count, max keeps the
//          first greatest id; padding skipped; an empty bag gives zeros.
// Both are therefore bitwise equal to the float ops on the dequantized table, for
// every thread count and SIMD level. Indices are checked before the first write.
#pragma once

#include <cstdint>
#include <span>

#include "embtable/embedding_bag.hpp"

namespace embtable {

enum class QFormat : int { int8 = 0, int4 = 1, float16 = 2, bfloat16 = 3 };

// Parses "int8" / "int4" / "float16" / "bfloat16"; std::invalid_argument otherwise.
QFormat parse_qformat(const char* name);
const char* qformat_name(QFormat f) noexcept;
// Bytes per packed row of D columns.
int64_t qrow_bytes(QFormat f, int64_t D) noexcept;

// A packed table (not owned): V rows of qrow_bytes(format, D) bytes.
struct QTable {
  const uint8_t* data = nullptr;
  QFormat format = QFormat::int8;
  int64_t V = 0;
  int64_t D = 0;
  int64_t row_bytes = 0;
};

// Packs the (V, D) table into out (V * qrow_bytes(f, D) bytes), in parallel.
// float64 values are first rounded to float32.
template <class Scalar>
void quantize(const Scalar* table, int64_t V, int64_t D, QFormat f, uint8_t* out);

// Scalar, single-threaded oracle of quantize.
template <class Scalar>
void quantize_ref(const Scalar* table, int64_t V, int64_t D, QFormat f, uint8_t* out);

// out (V, D) float32 = value(r, d) for every row, in parallel.
void dequantize(const QTable& t, float* out);

// out[i, :] = value(indices[i], :); indices checked against [0, V) first.
template <class Index>
void qgather(const QTable& t, const Index* indices, std::span<const int64_t> shape,
             float* out);

// Scalar, single-threaded oracle of qgather (no validation).
template <class Index>
void qgather_ref(const QTable& t, const Index* indices, int64_t n, float* out);

// The bag forward on a packed table (see above); out rows are out_stride apart.
template <class Index>
void qembedding_bag(const QTable& t, const Index* indices,
                    std::span<const int64_t> index_shape, const Bags& bags,
                    BagMode mode, const float* per_sample_weights, int64_t padding_idx,
                    float* out, int64_t out_stride);

// Scalar, single-threaded oracle of qembedding_bag (no validation).
template <class Index>
void qembedding_bag_ref(const QTable& t, const Index* indices, const Bags& bags,
                        BagMode mode, const float* per_sample_weights,
                        int64_t padding_idx, float* out, int64_t out_stride);

// Scalar conversions shared by the kernels and the oracles.
float half_to_float(uint16_t h) noexcept;
uint16_t float_to_half(float f) noexcept;      // round to nearest even
uint16_t float_to_bfloat16(float f) noexcept;  // round to nearest even

}  // namespace embtable
