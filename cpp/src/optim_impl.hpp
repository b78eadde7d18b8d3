// The fused optimizer loops, written once and compiled per instruction set: a
// translation unit defines EMBTABLE_OPTIM_TABLE (the accessor's name) and
// includes this file. Internal linkage throughout (see kernels_impl.hpp).
//
// Every level gives the same bits: the formulas use only +, -, *, / and sqrt,
// each correctly rounded per element in IEEE arithmetic whatever the vector
// width, evaluated in the order optim.hpp writes them (the build forbids FMA
// contraction). Only the width of the vectors differs between the levels.
#ifndef EMBTABLE_OPTIM_TABLE
#error "define EMBTABLE_OPTIM_TABLE before including optim_impl.hpp"
#endif

#include <cmath>
#include <cstdint>

#include "optim_kernels.hpp"
#include "prefetch.hpp"

namespace embtable::optim_kernels {
namespace {

// One element of each formula; w, g and the states at element d.
template <Variant V, class Scalar>
inline void update(const Coefs<Scalar>& c, Scalar* __restrict w,
                   const Scalar* __restrict g, Scalar* __restrict s1,
                   Scalar* __restrict s2, Scalar* __restrict s3, int64_t n) noexcept {
  const Scalar lr = c.lr, mom = c.mom, eps = c.eps, rho = c.rho, omr = c.one_minus_rho,
               c1 = c.c1, c2 = c.c2, alpha = c.alpha;
  if constexpr (V == Variant::sgd) {
    for (int64_t d = 0; d < n; ++d) w[d] -= g[d] * lr;
  } else if constexpr (V == Variant::sgd_momentum) {
    for (int64_t d = 0; d < n; ++d) {
      const Scalar m = s1[d] * mom - g[d] * lr;
      s1[d] = m;
      w[d] += m;
    }
  } else if constexpr (V == Variant::sgd_nesterov) {
    for (int64_t d = 0; d < n; ++d) {
      const Scalar m = s1[d] * mom - g[d] * lr;
      s1[d] = m;
      w[d] += m * mom - g[d] * lr;
    }
  } else if constexpr (V == Variant::adagrad) {
    for (int64_t d = 0; d < n; ++d) {
      const Scalar a = s1[d] + g[d] * g[d];
      s1[d] = a;
      w[d] -= (lr * g[d]) / std::sqrt(a + eps);
    }
  } else if constexpr (V == Variant::rmsprop || V == Variant::rmsprop_momentum ||
                       V == Variant::rmsprop_centered ||
                       V == Variant::rmsprop_centered_momentum) {
    constexpr bool centered =
        V == Variant::rmsprop_centered || V == Variant::rmsprop_centered_momentum;
    constexpr bool momentum =
        V == Variant::rmsprop_momentum || V == Variant::rmsprop_centered_momentum;
    for (int64_t d = 0; d < n; ++d) {
      const Scalar v = rho * s1[d] + omr * (g[d] * g[d]);
      s1[d] = v;
      Scalar den;
      if constexpr (centered) {
        const Scalar mg = rho * s3[d] + omr * g[d];
        s3[d] = mg;
        den = v - mg * mg + eps;
      } else {
        den = v + eps;
      }
      const Scalar inc = (lr * g[d]) / std::sqrt(den);
      if constexpr (momentum) {
        const Scalar m = mom * s2[d] + inc;
        s2[d] = m;
        w[d] -= m;
      } else {
        w[d] -= inc;
      }
    }
  } else {
    static_assert(V == Variant::adam);
    for (int64_t d = 0; d < n; ++d) {
      const Scalar m = s1[d] + (g[d] - s1[d]) * c1;
      const Scalar v = s2[d] + (g[d] * g[d] - s2[d]) * c2;
      s1[d] = m;
      s2[d] = v;
      w[d] -= (m * alpha) / (std::sqrt(v) + eps);
    }
  }
}

template <class Scalar>
inline Scalar* at(Scalar* base, int64_t off) noexcept {
  return base == nullptr ? nullptr : base + off;
}

// A row of the table or of a state array; state arrays a variant lacks are null.
template <class Scalar>
[[gnu::always_inline]] inline void prefetch_row(const Scalar* row,
                                                int64_t bytes) noexcept {
  if (row != nullptr) prefetch_lines<1>(row, bytes);
}

template <Variant V, class Scalar>
void run(const Args<Scalar>& a, int64_t b, int64_t e) {
  const int64_t D = a.D;
  if (a.rows == nullptr) {
    // Dense: rows b..e are contiguous in every array, so the range is one flat loop
    // (no per-row overhead, whatever D).
    const int64_t off = b * D;
    update<V>(a.c, a.table + off, a.grad + off, at(a.s1, off), at(a.s2, off),
              at(a.s3, off), (e - b) * D);
    return;
  }
  // Lazy: rows[k] are sorted but spread over the table; fetch the rows `prefetch`
  // ahead so their table and state lines are in flight while this row computes.
  const int64_t bytes = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t ahead = a.prefetch;
  for (int64_t k = b; k < e; ++k) {
    if (ahead > 0 && k + ahead < e) {
      const int64_t off = a.rows[k + ahead] * D;
      prefetch_row(a.table + off, bytes);
      prefetch_row(at(a.s1, off), bytes);
      prefetch_row(at(a.s2, off), bytes);
      prefetch_row(at(a.s3, off), bytes);
    }
    const int64_t off = a.rows[k] * D;
    update<V>(a.c, a.table + off, a.grad + k * D, at(a.s1, off), at(a.s2, off),
              at(a.s3, off), D);
  }
}

template <class Scalar>
void range(const Args<Scalar>& a, int64_t b, int64_t e) {
  switch (a.variant) {
    case Variant::sgd:
      return run<Variant::sgd>(a, b, e);
    case Variant::sgd_momentum:
      return run<Variant::sgd_momentum>(a, b, e);
    case Variant::sgd_nesterov:
      return run<Variant::sgd_nesterov>(a, b, e);
    case Variant::adagrad:
      return run<Variant::adagrad>(a, b, e);
    case Variant::rmsprop:
      return run<Variant::rmsprop>(a, b, e);
    case Variant::rmsprop_momentum:
      return run<Variant::rmsprop_momentum>(a, b, e);
    case Variant::rmsprop_centered:
      return run<Variant::rmsprop_centered>(a, b, e);
    case Variant::rmsprop_centered_momentum:
      return run<Variant::rmsprop_centered_momentum>(a, b, e);
    case Variant::adam:
      return run<Variant::adam>(a, b, e);
  }
}

}  // namespace

const Table& EMBTABLE_OPTIM_TABLE() noexcept {
  static const Table t{&range<float>, &range<double>};
  return t;
}

}  // namespace embtable::optim_kernels
