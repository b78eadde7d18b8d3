// Internal: the per-ISA SGNS kernels (sgns_impl.hpp compiled once per level).
#pragma once

#include <atomic>
#include <cstdint>

#include "embtable/simd.hpp"

namespace embtable::sgns_kernels {

// Striped spin locks of the threaded (Hogwild) mode, one cache line each so two
// threads only share a line when they touch rows of the same stripe.
inline constexpr int kLockBits = 12;
struct alignas(64) PaddedLock {
  std::atomic<uint32_t> v{0};
};
PaddedLock* sgns_locks() noexcept;  // kLockStripes entries, shared by all SIMD levels

// Runs pairs [b, e) of sgns_step and returns their summed loss. `locked`: hold a
// row's striped lock while reading or updating it (the threaded mode).
template <class Scalar, class Index>
using RangeFn = double (*)(Scalar* in, Scalar* out, int64_t D, const Index* centers,
                           const Index* contexts, const Index* negatives, int64_t K, Scalar lr,
                           int64_t b, int64_t e, bool locked);

struct Table {
  RangeFn<float, int32_t> f32_i32;
  RangeFn<float, int64_t> f32_i64;
  RangeFn<double, int32_t> f64_i32;
  RangeFn<double, int64_t> f64_i64;

  template <class Scalar, class Index>
  RangeFn<Scalar, Index> get() const noexcept {
    if constexpr (sizeof(Scalar) == 4 && sizeof(Index) == 4) return f32_i32;
    else if constexpr (sizeof(Scalar) == 4) return f32_i64;
    else if constexpr (sizeof(Index) == 4) return f64_i32;
    else return f64_i64;
  }
};

const Table& table_baseline() noexcept;
#if defined(EMBTABLE_HAVE_AVX2)
const Table& table_avx2() noexcept;
#endif
#if defined(EMBTABLE_HAVE_AVX512)
const Table& table_avx512() noexcept;
#endif

}  // namespace embtable::sgns_kernels
