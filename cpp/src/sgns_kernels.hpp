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
                           const Index* contexts, const Index* negatives, int64_t K,
                           Scalar lr, int64_t b, int64_t e, bool locked);

// The token stream of sgns_train (see sgns_window.hpp for how it becomes pairs).
template <class Index>
struct TokenArgs {
  const Index* tokens;
  const int64_t* sentences;  // nullptr: one sentence
  int64_t n;
  int64_t start, stop;  // the centers
  int64_t window, K;
  const Index* noise;
  int64_t noise_len;
  uint64_t seed;
};

// Trains the pairs of centers [b, e) of sgns_train; returns their summed loss
// and stores their count in *pairs.
template <class Scalar, class Index>
using TokensFn = double (*)(Scalar* in, Scalar* out, int64_t D,
                            const TokenArgs<Index>& args, Scalar lr, Scalar end_lr,
                            int64_t b, int64_t e, bool locked, int64_t* pairs);

struct Table {
  RangeFn<float, int32_t> f32_i32;
  RangeFn<float, int64_t> f32_i64;
  RangeFn<double, int32_t> f64_i32;
  RangeFn<double, int64_t> f64_i64;
  TokensFn<float, int32_t> tokens_f32_i32;
  TokensFn<float, int64_t> tokens_f32_i64;
  TokensFn<double, int32_t> tokens_f64_i32;
  TokensFn<double, int64_t> tokens_f64_i64;

  template <class Scalar, class Index>
  RangeFn<Scalar, Index> get() const noexcept {
    if constexpr (sizeof(Scalar) == 4 && sizeof(Index) == 4)
      return f32_i32;
    else if constexpr (sizeof(Scalar) == 4)
      return f32_i64;
    else if constexpr (sizeof(Index) == 4)
      return f64_i32;
    else
      return f64_i64;
  }
  template <class Scalar, class Index>
  TokensFn<Scalar, Index> get_tokens() const noexcept {
    if constexpr (sizeof(Scalar) == 4 && sizeof(Index) == 4)
      return tokens_f32_i32;
    else if constexpr (sizeof(Scalar) == 4)
      return tokens_f32_i64;
    else if constexpr (sizeof(Index) == 4)
      return tokens_f64_i32;
    else
      return tokens_f64_i64;
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
