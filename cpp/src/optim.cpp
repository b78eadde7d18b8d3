#include "embtable/optim.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <stdexcept>

#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/validate.hpp"

namespace embtable {
namespace {

// One row's update; w, g and the states point at D elements.
template <class Scalar>
struct RowUpdate {
  OptimParams p;
  Scalar lr, mom, eps, rho, one_minus_rho, c1, c2, alpha;

  explicit RowUpdate(const OptimParams& params) : p(params) {
    lr = static_cast<Scalar>(p.learning_rate);
    mom = static_cast<Scalar>(p.momentum);
    eps = static_cast<Scalar>(p.epsilon);
    rho = static_cast<Scalar>(p.rho);
    one_minus_rho = static_cast<Scalar>(1.0 - p.rho);
    c1 = static_cast<Scalar>(1.0 - p.beta_1);
    c2 = static_cast<Scalar>(1.0 - p.beta_2);
    // As Keras: powers and alpha in the variable's dtype.
    const auto t = static_cast<Scalar>(p.step);
    const Scalar b1p = std::pow(static_cast<Scalar>(p.beta_1), t);
    const Scalar b2p = std::pow(static_cast<Scalar>(p.beta_2), t);
    alpha = lr * std::sqrt(Scalar(1) - b2p) / (Scalar(1) - b1p);
  }

  void operator()(Scalar* __restrict w, const Scalar* __restrict g,
                  Scalar* __restrict s1, Scalar* __restrict s2, Scalar* __restrict s3,
                  int64_t D) const {
    switch (p.kind) {
      case OptimKind::sgd:
        if (p.momentum == 0.0) {
          for (int64_t d = 0; d < D; ++d) w[d] -= g[d] * lr;
        } else if (p.nesterov) {
          for (int64_t d = 0; d < D; ++d) {
            s1[d] = s1[d] * mom - g[d] * lr;
            w[d] += s1[d] * mom - g[d] * lr;
          }
        } else {
          for (int64_t d = 0; d < D; ++d) {
            s1[d] = s1[d] * mom - g[d] * lr;
            w[d] += s1[d];
          }
        }
        break;
      case OptimKind::adagrad:
        for (int64_t d = 0; d < D; ++d) {
          s1[d] += g[d] * g[d];
          w[d] -= (lr * g[d]) / std::sqrt(s1[d] + eps);
        }
        break;
      case OptimKind::rmsprop:
        for (int64_t d = 0; d < D; ++d) {
          s1[d] = rho * s1[d] + one_minus_rho * (g[d] * g[d]);
          Scalar den;
          if (p.centered) {
            s3[d] = rho * s3[d] + one_minus_rho * g[d];
            den = s1[d] - s3[d] * s3[d] + eps;
          } else {
            den = s1[d] + eps;
          }
          const Scalar inc = (lr * g[d]) / std::sqrt(den);
          if (p.momentum > 0.0) {
            s2[d] = mom * s2[d] + inc;
            w[d] -= s2[d];
          } else {
            w[d] -= inc;
          }
        }
        break;
      case OptimKind::adam:
        for (int64_t d = 0; d < D; ++d) {
          s1[d] += (g[d] - s1[d]) * c1;
          s2[d] += (g[d] * g[d] - s2[d]) * c2;
          w[d] -= (s1[d] * alpha) / (std::sqrt(s2[d]) + eps);
        }
        break;
    }
  }
};

template <class Scalar>
Scalar* row_of(Scalar* base, int64_t r, int64_t D) {
  return base == nullptr ? nullptr : base + r * D;
}

}  // namespace

template <class Scalar>
void optim_step(const OptimParams& p, Scalar* table, int64_t V, int64_t D,
                const int64_t* rows, int64_t n_rows, const Scalar* grad, Scalar* state1,
                Scalar* state2, Scalar* state3) {
  const bool lazy = rows != nullptr;
  const int64_t n = lazy ? n_rows : V;
  if (lazy) {
    const int64_t shape[1] = {n_rows};
    check_indices(rows, std::span<const int64_t>(shape, 1), V);
    for (int64_t k = 1; k < n_rows; ++k)
      if (rows[k] <= rows[k - 1])
        throw std::invalid_argument("RowGrad indices must be sorted and unique");
  }
  const bool need1 = p.kind != OptimKind::sgd || p.momentum != 0.0;
  const bool need2 =
      p.kind == OptimKind::adam || (p.kind == OptimKind::rmsprop && p.momentum > 0.0);
  const bool need3 = p.kind == OptimKind::rmsprop && p.centered;
  if ((need1 && state1 == nullptr) || (need2 && state2 == nullptr) ||
      (need3 && state3 == nullptr))
    throw std::invalid_argument("optimizer state buffer missing");
  if (n == 0 || D == 0) return;
  RangeGuard guard(table, table + V * D);
  const RowUpdate<Scalar> update(p);
  // The update reads and writes about 4 rows per row: size tasks by that.
  const int64_t grain =
      std::max<int64_t>(1, grain_rows(4 * D * static_cast<int64_t>(sizeof(Scalar))));
  parallel_for(0, n, grain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t r = lazy ? rows[k] : k;
      update(table + r * D, grad + k * D, row_of(state1, r, D), row_of(state2, r, D),
             row_of(state3, r, D), D);
    }
  });
}

template void optim_step<float>(const OptimParams&, float*, int64_t, int64_t,
                                const int64_t*, int64_t, const float*, float*, float*,
                                float*);
template void optim_step<double>(const OptimParams&, double*, int64_t, int64_t,
                                 const int64_t*, int64_t, const double*, double*,
                                 double*, double*);

}  // namespace embtable
