#include "embtable/renorm.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/validate.hpp"

namespace embtable {
namespace {

// torch.norm(row, p) for every p torch.embedding_renorm_ takes (see renorm.hpp).
template <class Scalar>
double row_norm(const Scalar* row, int64_t D, double p) {
  double acc = 0.0;
  if (p == std::numeric_limits<double>::infinity()) {
    for (int64_t d = 0; d < D; ++d)
      acc = std::max(acc, std::abs(static_cast<double>(row[d])));
    return acc;
  }
  if (p == -std::numeric_limits<double>::infinity()) {
    acc = std::numeric_limits<double>::infinity();
    for (int64_t d = 0; d < D; ++d)
      acc = std::min(acc, std::abs(static_cast<double>(row[d])));
    return acc;
  }
  if (p == 0.0) {  // not a power: (sum |x|^0)^(1/0) would be inf
    for (int64_t d = 0; d < D; ++d) acc += row[d] != Scalar(0) ? 1.0 : 0.0;
    return acc;
  }
  if (p == 2.0) {
    for (int64_t d = 0; d < D; ++d)
      acc += static_cast<double>(row[d]) * static_cast<double>(row[d]);
    return std::sqrt(acc);
  }
  if (p == 1.0) {
    for (int64_t d = 0; d < D; ++d) acc += std::abs(static_cast<double>(row[d]));
    return acc;
  }
  // Negative p: a zero element gives |0|^p = inf and a norm of 0, as in torch.
  for (int64_t d = 0; d < D; ++d)
    acc += std::pow(std::abs(static_cast<double>(row[d])), p);
  return std::pow(acc, 1.0 / p);
}

template <class Scalar>
void renorm_row(Scalar* row, int64_t D, double max_norm, double p) {
  const double norm = row_norm(row, D, p);
  if (norm > max_norm) {
    const double scale = max_norm / (norm + 1e-7);
    for (int64_t d = 0; d < D; ++d)
      row[d] = static_cast<Scalar>(static_cast<double>(row[d]) * scale);
  }
}

}  // namespace

template <class Scalar, class Index>
void embedding_renorm(Scalar* table, int64_t V, int64_t D, const Index* indices,
                      std::span<const int64_t> shape, double max_norm,
                      double norm_type) {
  check_indices(indices, shape, V);
  const int64_t n = shape_size(shape);
  if (n == 0 || D == 0) return;
  std::vector<int64_t> rows(indices, indices + n);
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  RangeGuard guard(table, table + V * D);
  parallel_for(
      0, static_cast<int64_t>(rows.size()),
      grain_rows(D * static_cast<int64_t>(sizeof(Scalar))), [&](int64_t b, int64_t e) {
        for (int64_t u = b; u < e; ++u)
          renorm_row(table + rows[static_cast<size_t>(u)] * D, D, max_norm, norm_type);
      });
}

template <class Scalar, class Index>
void embedding_renorm_ref(Scalar* table, int64_t D, const Index* indices, int64_t n,
                          double max_norm, double norm_type) {
  std::vector<int64_t> seen;
  for (int64_t i = 0; i < n; ++i) {
    const auto r = static_cast<int64_t>(indices[i]);
    if (std::find(seen.begin(), seen.end(), r) != seen.end()) continue;
    seen.push_back(r);
    renorm_row(table + r * D, D, max_norm, norm_type);
  }
}

#define EMBTABLE_INST(S, I)                                                        \
  template void embedding_renorm<S, I>(S*, int64_t, int64_t, const I*,             \
                                       std::span<const int64_t>, double, double);  \
  template void embedding_renorm_ref<S, I>(S*, int64_t, const I*, int64_t, double, \
                                           double);
EMBTABLE_INST(float, int32_t)
EMBTABLE_INST(float, int64_t)
EMBTABLE_INST(double, int32_t)
EMBTABLE_INST(double, int64_t)
#undef EMBTABLE_INST

}  // namespace embtable
