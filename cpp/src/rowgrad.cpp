#include "embtable/rowgrad.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <utility>

#include "embtable/parallel.hpp"
#include "embtable/validate.hpp"
#include "prefetch.hpp"
#include "radix_sort.hpp"

namespace embtable {
namespace {

template <class Scalar>
void add_row(Scalar* dst, const Scalar* src, int64_t D) {
  for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
}

template <class Scalar>
[[gnu::always_inline]] inline void prefetch_read(const Scalar* row,
                                                 int64_t bytes) noexcept {
  prefetch_lines<0>(row, bytes);
}

// Fallback when (id range, position) do not fit one 64-bit value together (beyond
// any table that fits in memory): a stable sort of pairs.
template <class Index>
void plan_pairs(const Index* indices, int64_t n, int64_t padding_idx,
                RowGradPlan& plan) {
  std::vector<std::pair<int64_t, int64_t>> kp;
  for (int64_t i = 0; i < n; ++i) {
    const auto id = static_cast<int64_t>(indices[i]);
    if (id != padding_idx) kp.emplace_back(id, i);
  }
  std::stable_sort(kp.begin(), kp.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t k = 0; k < kp.size(); ++k) {
    if (k == 0 || kp[k].first != kp[k - 1].first) {
      plan.rows.push_back(kp[k].first);
      plan.starts.push_back(static_cast<int64_t>(k));
    }
    plan.order.push_back(kp[k].second);
  }
  plan.starts.push_back(static_cast<int64_t>(kp.size()));
}

}  // namespace

template <class Index>
RowGradPlan rowgrad_plan(const Index* indices, std::span<const int64_t> shape,
                         int64_t V, int64_t padding_idx) {
  check_indices(indices, shape, V);
  const int64_t n = shape_size(shape);
  RowGradPlan plan;
  if (n == 0) {
    plan.starts.push_back(0);
    return plan;
  }
  // 1. Per chunk of the ids: how many are kept (not padding) and their range.
  // Every pass below reads or writes about 16 bytes per id.
  const int64_t parts = radix::chunks(n, 16);
  struct Part {
    int64_t kept = 0, lo = INT64_MAX, hi = -1;
  };
  std::vector<Part> part(static_cast<size_t>(parts));
  radix::for_chunks(parts, [&](int64_t c) {
    Part p;
    const int64_t b = c * n / parts, e = (c + 1) * n / parts;
    for (int64_t i = b; i < e; ++i) {
      const auto id = static_cast<int64_t>(indices[i]);
      const bool keep = id != padding_idx;
      p.kept += keep;
      p.lo = std::min(p.lo, keep ? id : INT64_MAX);
      p.hi = std::max(p.hi, keep ? id : int64_t{-1});
    }
    part[static_cast<size_t>(c)] = p;
  });
  int64_t m = 0, lo = INT64_MAX, hi = -1;
  for (const Part& p : part) {
    m += p.kept;
    lo = std::min(lo, p.lo);
    hi = std::max(hi, p.hi);
  }
  if (m == 0) {
    plan.starts.push_back(0);
    return plan;
  }
  // 2. Packed values (id - lo) << pos_bits | position: the sort moves 8 bytes per
  // id, and only the bits the ids' range needs are sorted.
  const int pos_bits = radix::bit_width(static_cast<uint64_t>(n - 1));
  const int key_bits = radix::bit_width(static_cast<uint64_t>(hi - lo));
  if (pos_bits + key_bits > 64) {
    plan_pairs(indices, n, padding_idx, plan);
    return plan;
  }
  std::vector<uint64_t> buf(static_cast<size_t>(2 * m));
  uint64_t* packed = buf.data();
  radix::for_chunks(parts, [&](int64_t c) {
    int64_t at = 0;
    for (int64_t k = 0; k < c; ++k) at += part[static_cast<size_t>(k)].kept;
    const int64_t b = c * n / parts, e = (c + 1) * n / parts;
    for (int64_t i = b; i < e; ++i) {
      const auto id = static_cast<int64_t>(indices[i]);
      if (id == padding_idx) continue;
      packed[at++] =
          static_cast<uint64_t>(id - lo) << pos_bits | static_cast<uint64_t>(i);
    }
  });
  const uint64_t* sorted = radix::sort(packed, packed + m, m, pos_bits, key_bits);
  // 3. Unpacked: order, and rows / starts at each change of id. Per chunk of the
  // sorted values: count the segments that start in it, then write them.
  const uint64_t pos_mask = pos_bits == 0 ? 0 : ~uint64_t{0} >> (64 - pos_bits);
  const int64_t sparts = radix::chunks(m, 24);
  std::vector<int64_t> seg(static_cast<size_t>(sparts) + 1, 0);
  auto starts_at = [&](int64_t k) {
    return k == 0 || (sorted[k] >> pos_bits) != (sorted[k - 1] >> pos_bits);
  };
  plan.order.resize(static_cast<size_t>(m));
  radix::for_chunks(sparts, [&](int64_t c) {
    const int64_t b = c * m / sparts, e = (c + 1) * m / sparts;
    int64_t count = 0;
    for (int64_t k = b; k < e; ++k) {
      count += starts_at(k);
      plan.order[static_cast<size_t>(k)] = static_cast<int64_t>(sorted[k] & pos_mask);
    }
    seg[static_cast<size_t>(c) + 1] = count;
  });
  for (int64_t c = 0; c < sparts; ++c)
    seg[static_cast<size_t>(c) + 1] += seg[static_cast<size_t>(c)];
  const int64_t U = seg[static_cast<size_t>(sparts)];
  plan.rows.resize(static_cast<size_t>(U));
  plan.starts.resize(static_cast<size_t>(U) + 1);
  plan.starts[static_cast<size_t>(U)] = m;
  radix::for_chunks(sparts, [&](int64_t c) {
    const int64_t b = c * m / sparts, e = (c + 1) * m / sparts;
    auto u = static_cast<size_t>(seg[static_cast<size_t>(c)]);
    for (int64_t k = b; k < e; ++k) {
      if (!starts_at(k)) continue;
      plan.rows[u] = static_cast<int64_t>(sorted[k] >> pos_bits) + lo;
      plan.starts[u++] = k;
    }
  });
  return plan;
}

template <class Scalar>
void rowgrad_sum(const RowGradPlan& plan, const Scalar* grads, int64_t D,
                 Scalar* values) {
  const auto U = static_cast<int64_t>(plan.rows.size());
  if (U == 0 || D == 0) return;
  const int64_t row_bytes = D * static_cast<int64_t>(sizeof(Scalar));
  // Segments average n / U rows each; size the grain by the rows read.
  const int64_t reads =
      std::max<int64_t>(1, static_cast<int64_t>(plan.order.size()) / U);
  const int64_t grain = std::max<int64_t>(1, grain_rows(row_bytes) / reads);
  const int64_t ahead = prefetch_ahead(row_bytes);
  const int64_t* order = plan.order.data();
  const int64_t* starts = plan.starts.data();
  parallel_for(0, U, grain, [&](int64_t b, int64_t e) {
    // The gradient rows are read in id order, i.e. at random: prefetch `ahead`.
    const int64_t last = starts[e];
    for (int64_t u = b; u < e; ++u) {
      Scalar* out = values + u * D;
      const int64_t s = starts[u], t = starts[u + 1];
      for (int64_t k = s; k < t; ++k) {
        if (ahead > 0 && k + ahead < last)
          prefetch_read(grads + order[k + ahead] * D, row_bytes);
        const Scalar* g = grads + order[k] * D;
        if (k == s)
          std::copy_n(g, D, out);
        else
          add_row(out, g, D);
      }
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
