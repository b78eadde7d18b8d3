// Internal: the per-ISA table of the embedding_bag forward kernel (one pointer
// per dtype pair; the kernel loops over a whole range of bags per call).
#pragma once

#include <algorithm>
#include <cstdint>

#include "embtable/embedding_bag.hpp"
#include "embtable/tuning.hpp"

namespace embtable::kernels {

template <class Scalar, class Index>
struct BagArgs {
  const Scalar* table;
  int64_t D;
  const Index* indices;
  const Bags* bags;
  BagMode mode;
  const Scalar* weights;  // nullptr unless weighted sum
  int64_t padding_idx;    // < 0: none
  Scalar* out;            // row b at out + b * out_stride
  int64_t* argmax;        // (B, D) or nullptr; max mode only
  bool narrow_argmax;     // every row id fits Lanes<Scalar>::Id (int32 for float)
  int64_t prefetch_ids;   // ids ahead to prefetch (0: none)
  int64_t out_stride;     // D for one table; sum of D over the tables of embedding_bags
};

// Ids ahead to prefetch: about tuning().bag_prefetch_bytes of the first column
// block (64 columns; the kernel prefetches that much of each row) in flight.
template <class Scalar>
inline int64_t bag_prefetch_ids(int64_t D) {
  const int64_t pf_bytes =
      std::min<int64_t>(D, 64) * static_cast<int64_t>(sizeof(Scalar));
  const int64_t budget = tuning().bag_prefetch_bytes.value;
  return budget <= 0 || pf_bytes <= 0 ? 0
                                      : std::clamp<int64_t>(budget / pf_bytes, 4, 32);
}

// Pools bags [b0, b1) into out (and argmax).
template <class Scalar, class Index>
using BagForwardFn = void (*)(const BagArgs<Scalar, Index>& a, int64_t b0, int64_t b1);

struct BagTable {
  BagForwardFn<float, int32_t> f32_i32;
  BagForwardFn<float, int64_t> f32_i64;
  BagForwardFn<double, int32_t> f64_i32;
  BagForwardFn<double, int64_t> f64_i64;

  template <class Scalar, class Index>
  BagForwardFn<Scalar, Index> get() const noexcept {
    if constexpr (sizeof(Scalar) == 4) {
      if constexpr (sizeof(Index) == 4)
        return f32_i32;
      else
        return f32_i64;
    } else {
      if constexpr (sizeof(Index) == 4)
        return f64_i32;
      else
        return f64_i64;
    }
  }
};

const BagTable& bag_table_baseline() noexcept;
#if defined(EMBTABLE_HAVE_AVX2)
const BagTable& bag_table_avx2() noexcept;
#endif
#if defined(EMBTABLE_HAVE_AVX512)
const BagTable& bag_table_avx512() noexcept;
#endif

// The forward of the selected SIMD level.
template <class Scalar, class Index>
BagForwardFn<Scalar, Index> bag_forward() noexcept;

}  // namespace embtable::kernels
