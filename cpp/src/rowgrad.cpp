#include "embtable/rowgrad.hpp"

#include <algorithm>
#include <bit>
#include <map>
#include <stdexcept>

#include "embtable/parallel.hpp"
#include "embtable/validate.hpp"

namespace embtable {
namespace {

constexpr int kRadixBits = 11;
constexpr int64_t kBuckets = int64_t{1} << kRadixBits;

// Stable LSD radix sort of (key, pos) pairs by key, keys in [0, V).
// Passes = ceil(bit_width(V - 1) / 11): two for a million rows.
void radix_sort_pairs(std::vector<int64_t>& key, std::vector<int64_t>& pos, int64_t V) {
  const int64_t n = static_cast<int64_t>(key.size());
  const int bits =
      V <= 1 ? 0 : static_cast<int>(std::bit_width(static_cast<uint64_t>(V - 1)));
  std::vector<int64_t> key2(key.size()), pos2(pos.size()), count(kBuckets + 1);
  for (int shift = 0; shift < bits; shift += kRadixBits) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t i = 0; i < n; ++i)
      ++count[static_cast<size_t>(
          ((key[static_cast<size_t>(i)] >> shift) & (kBuckets - 1)) + 1)];
    for (int64_t b = 0; b < kBuckets; ++b)
      count[static_cast<size_t>(b + 1)] += count[static_cast<size_t>(b)];
    for (int64_t i = 0; i < n; ++i) {
      const auto d =
          static_cast<size_t>((key[static_cast<size_t>(i)] >> shift) & (kBuckets - 1));
      const auto dst = static_cast<size_t>(count[d]++);
      key2[dst] = key[static_cast<size_t>(i)];
      pos2[dst] = pos[static_cast<size_t>(i)];
    }
    key.swap(key2);
    pos.swap(pos2);
  }
}

template <class Scalar>
void add_row(Scalar* dst, const Scalar* src, int64_t D) {
  for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
}

}  // namespace

template <class Index>
RowGradPlan rowgrad_plan(const Index* indices, std::span<const int64_t> shape,
                         int64_t V, int64_t padding_idx) {
  check_indices(indices, shape, V);
  const int64_t n = shape_size(shape);
  std::vector<int64_t> key, pos;
  key.reserve(static_cast<size_t>(n));
  pos.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto id = static_cast<int64_t>(indices[i]);
    if (id == padding_idx) continue;  // the padding row gets no gradient
    key.push_back(id);
    pos.push_back(i);
  }
  radix_sort_pairs(key, pos, V);
  RowGradPlan plan;
  const auto m = static_cast<int64_t>(key.size());
  for (int64_t k = 0; k < m; ++k) {
    if (k == 0 || key[static_cast<size_t>(k)] != key[static_cast<size_t>(k - 1)]) {
      plan.rows.push_back(key[static_cast<size_t>(k)]);
      plan.starts.push_back(k);
    }
  }
  plan.starts.push_back(m);
  plan.order = std::move(pos);
  return plan;
}

template <class Scalar>
void rowgrad_sum(const RowGradPlan& plan, const Scalar* grads, int64_t D,
                 Scalar* values) {
  const auto U = static_cast<int64_t>(plan.rows.size());
  if (U == 0 || D == 0) return;
  // Segments average n / U rows each; size the grain by the rows read.
  const int64_t reads =
      std::max<int64_t>(1, static_cast<int64_t>(plan.order.size()) / U);
  const int64_t grain = std::max<int64_t>(
      1, grain_rows(D * static_cast<int64_t>(sizeof(Scalar))) / reads);
  parallel_for(0, U, grain, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      Scalar* out = values + u * D;
      const int64_t s = plan.starts[static_cast<size_t>(u)];
      const int64_t t = plan.starts[static_cast<size_t>(u + 1)];
      std::copy_n(grads + plan.order[static_cast<size_t>(s)] * D, D, out);
      for (int64_t k = s + 1; k < t; ++k)
        add_row(out, grads + plan.order[static_cast<size_t>(k)] * D, D);
    }
  });
}

template <class Scalar, class Index>
void rowgrad_coalesce_ref(const Index* indices, int64_t n, const Scalar* grads,
                          int64_t D, int64_t padding_idx, std::vector<int64_t>& rows,
                          std::vector<Scalar>& values) {
  std::map<int64_t, std::vector<Scalar>> acc;
  for (int64_t i = 0; i < n; ++i) {
    const auto id = static_cast<int64_t>(indices[i]);
    if (id == padding_idx) continue;
    auto [it, fresh] = acc.try_emplace(id);
    if (fresh)
      it->second.assign(grads + i * D, grads + (i + 1) * D);
    else
      for (int64_t d = 0; d < D; ++d)
        it->second[static_cast<size_t>(d)] += grads[i * D + d];
  }
  rows.clear();
  values.clear();
  for (const auto& [id, v] : acc) {
    rows.push_back(id);
    values.insert(values.end(), v.begin(), v.end());
  }
}

RowGradMergePlan rowgrad_merge_plan(const int64_t* a, int64_t na, const int64_t* b,
                                    int64_t nb) {
  for (int64_t i = 1; i < na; ++i)
    if (a[i] <= a[i - 1])
      throw std::invalid_argument("RowGrad indices must be strictly increasing");
  for (int64_t i = 1; i < nb; ++i)
    if (b[i] <= b[i - 1])
      throw std::invalid_argument("RowGrad indices must be strictly increasing");
  RowGradMergePlan p;
  p.rows.reserve(static_cast<size_t>(na + nb));
  int64_t i = 0, j = 0;
  while (i < na || j < nb) {
    if (j == nb || (i < na && a[i] < b[j])) {
      p.rows.push_back(a[i]);
      p.from_a.push_back(i++);
      p.from_b.push_back(-1);
    } else if (i == na || b[j] < a[i]) {
      p.rows.push_back(b[j]);
      p.from_a.push_back(-1);
      p.from_b.push_back(j++);
    } else {
      p.rows.push_back(a[i]);
      p.from_a.push_back(i++);
      p.from_b.push_back(j++);
    }
  }
  return p;
}

template <class Scalar>
void rowgrad_merge_values(const RowGradMergePlan& plan, const Scalar* va,
                          const Scalar* vb, int64_t D, Scalar* out) {
  const auto U = static_cast<int64_t>(plan.rows.size());
  if (U == 0 || D == 0) return;
  parallel_for(0, U, grain_rows(D * static_cast<int64_t>(sizeof(Scalar))),
               [&](int64_t b, int64_t e) {
                 for (int64_t u = b; u < e; ++u) {
                   const int64_t ia = plan.from_a[static_cast<size_t>(u)];
                   const int64_t ib = plan.from_b[static_cast<size_t>(u)];
                   Scalar* o = out + u * D;
                   if (ia >= 0) {
                     std::copy_n(va + ia * D, D, o);
                     if (ib >= 0) add_row(o, vb + ib * D, D);
                   } else {
                     std::copy_n(vb + ib * D, D, o);
                   }
                 }
               });
}

template RowGradPlan rowgrad_plan<int32_t>(const int32_t*, std::span<const int64_t>,
                                           int64_t, int64_t);
template RowGradPlan rowgrad_plan<int64_t>(const int64_t*, std::span<const int64_t>,
                                           int64_t, int64_t);
template void rowgrad_sum<float>(const RowGradPlan&, const float*, int64_t, float*);
template void rowgrad_sum<double>(const RowGradPlan&, const double*, int64_t, double*);
template void rowgrad_merge_values<float>(const RowGradMergePlan&, const float*,
                                          const float*, int64_t, float*);
template void rowgrad_merge_values<double>(const RowGradMergePlan&, const double*,
                                           const double*, int64_t, double*);
#define EMBTABLE_REF(S, I)                                                       \
  template void rowgrad_coalesce_ref<S, I>(const I*, int64_t, const S*, int64_t, \
                                           int64_t, std::vector<int64_t>&,       \
                                           std::vector<S>&);
EMBTABLE_REF(float, int32_t)
EMBTABLE_REF(float, int64_t)
EMBTABLE_REF(double, int32_t)
EMBTABLE_REF(double, int64_t)
#undef EMBTABLE_REF

}  // namespace embtable
