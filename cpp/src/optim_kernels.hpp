// Internal: the per-ISA table of the fused optimizer kernels (optim_impl.hpp
// compiled once per level; optim.cpp picks the selected level's entry per call).
#pragma once

#include <cstdint>

#include "embtable/optim.hpp"

namespace embtable::optim_kernels {

// Which loop of optim_step runs: one per formula of optim.hpp, the flags that
// pick a formula resolved once per call, not per element.
enum class Variant : int {
  sgd,           // momentum == 0
  sgd_momentum,  // momentum != 0, plain
  sgd_nesterov,  // momentum != 0, nesterov
  adagrad,
  rmsprop,                    // plain
  rmsprop_momentum,           // momentum > 0
  rmsprop_centered,           // centered
  rmsprop_centered_momentum,  // both
  adam,
};

// The scalars of one step, already cast to the table's dtype (and Adam's alpha
// computed) by optim.cpp, so every SIMD level works on the same values.
template <class Scalar>
struct Coefs {
  Scalar lr, mom, eps, rho, one_minus_rho, c1, c2, alpha;
};

template <class Scalar>
struct Args {
  Variant variant;
  Coefs<Scalar> c;
  Scalar* table;
  int64_t D;
  const int64_t* rows;  // nullptr: dense (row k of grad updates row k)
  const Scalar* grad;   // (n, D)
  Scalar* s1;           // states (V, D) or nullptr when the variant has no use
  Scalar* s2;
  Scalar* s3;
  int64_t prefetch;  // lazy: rows to prefetch ahead (0: none)
};

// Updates rows k in [b, e) of the step (rows[k], or k when dense).
template <class Scalar>
using RangeFn = void (*)(const Args<Scalar>& a, int64_t b, int64_t e);

struct Table {
  RangeFn<float> f32;
  RangeFn<double> f64;

  template <class Scalar>
  RangeFn<Scalar> get() const noexcept {
    if constexpr (sizeof(Scalar) == 4)
      return f32;
    else
      return f64;
  }
};

const Table& table_baseline() noexcept;
#if defined(EMBTABLE_HAVE_AVX2)
const Table& table_avx2() noexcept;
#endif
#if defined(EMBTABLE_HAVE_AVX512)
const Table& table_avx512() noexcept;
#endif

}  // namespace embtable::optim_kernels
