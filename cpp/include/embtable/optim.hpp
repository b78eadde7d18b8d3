// Optimizer steps, in place on a table, with Keras 3's update formulas
// (keras/src/optimizers/{sgd,adagrad,rmsprop,adam}.py), for each updated row r
// and its gradient row g (scalars cast to the table's dtype first, as Keras):
//
//   sgd      momentum == 0: w -= lr * g
//            else: m = m * momentum - g * lr
//                  w += nesterov ? m * momentum - g * lr : m
//   adagrad  a += g * g;  w -= lr * g / sqrt(a + eps)
//   rmsprop  v = rho * v + (1 - rho) * g * g
//            centered: mg = rho * mg + (1 - rho) * g;  den = v - mg * mg + eps
//            else den = v + eps
//            inc = lr * g / sqrt(den)
//            momentum > 0: m = momentum * m + inc;  w -= m   else w -= inc
//   adam     t = step (1 for the first);  alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)
//            m += (g - m) * (1 - b1);  v += (g * g - v) * (1 - b2)
//            w -= m * alpha / (sqrt(v) + eps)
//
// Dense (rows == nullptr): every row r in [0, V) with g = grad[r].
// Lazy (rows != nullptr): only rows[k], with g = grad[k], k in [0, n_rows); the
// state of other rows is untouched (PyTorch SparseAdam, TF LazyAdam).
// State arrays are (V, D) like the table; unused ones may be null.
// Lazy rows are validated before the first write and must be unique
// (std::invalid_argument otherwise: a row updated twice would race).
#pragma once

#include <cstdint>

namespace embtable {

enum class OptimKind { sgd, adagrad, rmsprop, adam };

struct OptimParams {
  OptimKind kind = OptimKind::sgd;
  double learning_rate = 0.01;
  double momentum = 0.0;
  bool nesterov = false;
  double epsilon = 1e-7;
  double rho = 0.9;
  bool centered = false;
  double beta_1 = 0.9;
  double beta_2 = 0.999;
  int64_t step = 1;  // Adam: 1-based step count of this update
};

template <class Scalar>
void optim_step(const OptimParams& p, Scalar* table, int64_t V, int64_t D,
                const int64_t* rows, int64_t n_rows, const Scalar* grad, Scalar* state1,
                Scalar* state2, Scalar* state3);

}  // namespace embtable
