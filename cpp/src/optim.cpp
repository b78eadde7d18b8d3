#include "embtable/optim.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <stdexcept>

#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/simd.hpp"
#include "embtable/validate.hpp"
#include "optim_kernels.hpp"
#include "prefetch.hpp"

namespace embtable {
namespace {

using optim_kernels::Variant;

const optim_kernels::Table& selected_table() noexcept {
  switch (simd_selected()) {
#if defined(EMBTABLE_HAVE_AVX512)
    case Simd::avx512:
      return optim_kernels::table_avx512();
#endif
#if defined(EMBTABLE_HAVE_AVX2)
    case Simd::avx2:
      return optim_kernels::table_avx2();
#endif
    default:
      return optim_kernels::table_baseline();
  }
}

Variant variant_of(const OptimParams& p) {
  switch (p.kind) {
    case OptimKind::sgd:
      if (p.momentum == 0.0) return Variant::sgd;
      return p.nesterov ? Variant::sgd_nesterov : Variant::sgd_momentum;
    case OptimKind::adagrad:
      return Variant::adagrad;
    case OptimKind::rmsprop:
      if (p.centered)
        return p.momentum > 0.0 ? Variant::rmsprop_centered_momentum
                                : Variant::rmsprop_centered;
      return p.momentum > 0.0 ? Variant::rmsprop_momentum : Variant::rmsprop;
    case OptimKind::adam:
      return Variant::adam;
  }
  throw std::invalid_argument("unknown optimizer kind");
}

// The step's scalars in the table's dtype. As Keras: powers and alpha in the
// variable's dtype. Computed here once, so every SIMD level sees the same values.
template <class Scalar>
optim_kernels::Coefs<Scalar> coefs_of(const OptimParams& p) {
  optim_kernels::Coefs<Scalar> c{};
  c.lr = static_cast<Scalar>(p.learning_rate);
  c.mom = static_cast<Scalar>(p.momentum);
  c.eps = static_cast<Scalar>(p.epsilon);
  c.rho = static_cast<Scalar>(p.rho);
  c.one_minus_rho = static_cast<Scalar>(1.0 - p.rho);
  c.c1 = static_cast<Scalar>(1.0 - p.beta_1);
  c.c2 = static_cast<Scalar>(1.0 - p.beta_2);
  const auto t = static_cast<Scalar>(p.step);
  const Scalar b1p = std::pow(static_cast<Scalar>(p.beta_1), t);
  const Scalar b2p = std::pow(static_cast<Scalar>(p.beta_2), t);
  c.alpha = c.lr * std::sqrt(Scalar(1) - b2p) / (Scalar(1) - b1p);
  return c;
}

// Lazy rows must lie in [0, V) and be strictly increasing. One pass checks the
// order; sorted rows are in range when both ends are. The range error (naming the
// first bad row) comes first, as check_indices gives it.
void check_rows(const int64_t* rows, int64_t n_rows, int64_t V) {
  bool sorted = true;
  for (int64_t k = 1; k < n_rows; ++k) sorted &= rows[k] > rows[k - 1];
  if (!sorted || (n_rows > 0 && (rows[0] < 0 || rows[n_rows - 1] >= V))) {
    const int64_t shape[1] = {n_rows};
    check_indices(rows, std::span<const int64_t>(shape, 1), V);
  }
  if (!sorted) throw std::invalid_argument("RowGrad indices must be sorted and unique");
}

}  // namespace

template <class Scalar>
void optim_step(const OptimParams& p, Scalar* table, int64_t V, int64_t D,
                const int64_t* rows, int64_t n_rows, const Scalar* grad, Scalar* state1,
                Scalar* state2, Scalar* state3) {
  const bool lazy = rows != nullptr;
  const int64_t n = lazy ? n_rows : V;
  if (lazy) check_rows(rows, n_rows, V);
  const bool need1 = p.kind != OptimKind::sgd || p.momentum != 0.0;
  const bool need2 =
      p.kind == OptimKind::adam || (p.kind == OptimKind::rmsprop && p.momentum > 0.0);
  const bool need3 = p.kind == OptimKind::rmsprop && p.centered;
  if ((need1 && state1 == nullptr) || (need2 && state2 == nullptr) ||
      (need3 && state3 == nullptr))
    throw std::invalid_argument("optimizer state buffer missing");
  if (n == 0 || D == 0) return;
  RangeGuard guard(table, table + V * D);
  const int64_t row_bytes = D * static_cast<int64_t>(sizeof(Scalar));
  // Arrays each updated row touches: the table, its gradient and the states used.
  const int64_t streams = 2 + int64_t{need1} + int64_t{need2} + int64_t{need3};
  optim_kernels::Args<Scalar> a{};
  a.variant = variant_of(p);
  a.c = coefs_of<Scalar>(p);
  a.table = table;
  a.D = D;
  a.rows = rows;
  a.grad = grad;
  // States the variant does not use stay null (never read, never prefetched).
  a.s1 = need1 ? state1 : nullptr;
  a.s2 = need2 ? state2 : nullptr;
  a.s3 = need3 ? state3 : nullptr;
  a.prefetch = lazy ? prefetch_ahead(row_bytes * (streams - 1)) : 0;
  const auto fn = selected_table().get<Scalar>();
  // Size tasks by the bytes each row moves.
  const int64_t grain = std::max<int64_t>(1, grain_rows(streams * row_bytes));
  parallel_for(0, n, grain, [&](int64_t b, int64_t e) { fn(a, b, e); });
}

template void optim_step<float>(const OptimParams&, float*, int64_t, int64_t,
                                const int64_t*, int64_t, const float*, float*, float*,
                                float*);
template void optim_step<double>(const OptimParams&, double*, int64_t, int64_t,
                                 const int64_t*, int64_t, const double*, double*,
                                 double*, double*);

}  // namespace embtable
