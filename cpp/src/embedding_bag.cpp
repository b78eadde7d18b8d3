#include "embtable/embedding_bag.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "bag_kernels.hpp"
#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/validate.hpp"
#include "kernels.hpp"
#include "prefetch.hpp"
#include "radix_sort.hpp"

namespace embtable {

namespace kernels {

template <class Scalar, class Index>
BagForwardFn<Scalar, Index> bag_forward() noexcept {
  switch (simd_selected()) {
#if defined(EMBTABLE_HAVE_AVX512)
    case Simd::avx512:
      return bag_table_avx512().get<Scalar, Index>();
#endif
#if defined(EMBTABLE_HAVE_AVX2)
    case Simd::avx2:
      return bag_table_avx2().get<Scalar, Index>();
#endif
    default:
      return bag_table_baseline().get<Scalar, Index>();
  }
}

}  // namespace kernels

namespace {

std::string pos(int64_t k) { return "offsets[" + std::to_string(k) + "] = "; }

void check_padding_idx(int64_t padding_idx, int64_t V) {
  if (padding_idx >= V)
    throw std::invalid_argument("padding_idx " + std::to_string(padding_idx) +
                                " is out of bounds for a table with " +
                                std::to_string(V) + " rows; it must be in [0, V)");
}

// Rows of the bag's ids that count (not padding).
template <class Index>
int64_t bag_count(const Index* indices, int64_t s, int64_t e,
                  int64_t padding_idx) noexcept {
  if (padding_idx < 0) return e - s;
  int64_t c = 0;
  for (int64_t i = s; i < e; ++i) c += static_cast<int64_t>(indices[i]) != padding_idx;
  return c;
}

// Per-bag scale of the mean backward: 1 / count (0 for a bag with no ids).
template <class Scalar, class Index>
std::vector<Scalar> mean_scales(const Index* indices, const Bags& bags,
                                int64_t padding_idx) {
  std::vector<Scalar> scale(static_cast<size_t>(bags.num_bags));
  // A task reads about tuning().parallel_bytes of ids.
  const int64_t per_bag =
      std::max<int64_t>(1, bags.num_indices / std::max<int64_t>(bags.num_bags, 1));
  const int64_t grain = grain_rows(per_bag * static_cast<int64_t>(sizeof(Index)));
  parallel_for(0, bags.num_bags, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c = bag_count(indices, bags.begin(b), bags.end(b), padding_idx);
      scale[static_cast<size_t>(b)] =
          c > 0 ? Scalar(1) / static_cast<Scalar>(c) : Scalar(0);
    }
  });
  return scale;
}

// Row boundaries [0 = b_0 < ... < b_T = V) that split `count` row ids (read with
// row(k)) about evenly between `parts` owners, from the quantiles of a sample.
// Any split is correct; a good one balances the work.
template <class RowAt>
std::vector<int64_t> owner_rows(int64_t count, int64_t V, int parts, const RowAt& row) {
  const int64_t samples = std::min<int64_t>(count, 256 * static_cast<int64_t>(parts));
  std::vector<int64_t> sample;
  sample.reserve(static_cast<size_t>(samples));
  for (int64_t s = 0; s < samples; ++s) {
    const int64_t r = row(s * count / samples);
    if (r >= 0) sample.push_back(r);
  }
  std::sort(sample.begin(), sample.end());
  std::vector<int64_t> bounds{0};
  const auto m = static_cast<int64_t>(sample.size());
  for (int p = 1; p < parts && m > 0; ++p) {
    const int64_t cut = sample[static_cast<size_t>(p * m / parts)];
    if (cut > bounds.back() && cut < V) bounds.push_back(cut);
  }
  bounds.push_back(V);
  return bounds;
}

// Max mode: every argmax entry must be -1 or a row of the table.
void check_argmax(const int64_t* argmax, int64_t count, int64_t V) {
  for (int64_t k = 0; k < count; ++k)
    if (argmax[k] < -1 || argmax[k] >= V)
      throw std::invalid_argument("argmax entry " + std::to_string(argmax[k]) +
                                  " at flat position " + std::to_string(k) +
                                  " is neither -1 nor a row of a table with " +
                                  std::to_string(V) + " rows");
}

void check_mode_inputs(BagMode mode, const void* weights, const int64_t* argmax) {
  if (weights && mode != BagMode::sum)
    throw std::invalid_argument(
        "per_sample_weights are only supported with mode='sum'");
  if (mode == BagMode::max && !argmax)
    throw std::invalid_argument("the max-mode backward needs the forward's argmax");
}

// Target rows ahead to prefetch in the backward (the table is usually far
// larger than the caches: each update is a cache miss without it): about
// tuning().bag_prefetch_bytes in flight (an id costs less here than in
// scatter_add: its gradient row is the bag's, already in L1), at least 16 rows.
// Measured (mean, 1 thread, B = 2,048 x 50 ids): D = 64 2.05 ms with
// prefetch_bytes, 1.59 with twice; D = 256 (B = 512) 1.32 and 1.06 ms.
inline int64_t row_prefetch(int64_t D, int64_t scalar_bytes) noexcept {
  const int64_t ahead =
      prefetch_ahead(D * scalar_bytes, tuning().bag_prefetch_bytes.value);
  return ahead == 0 ? 0 : std::max<int64_t>(16, ahead);
}

template <class Scalar>
[[gnu::always_inline]] inline void prefetch_write(const Scalar* row,
                                                  int64_t D) noexcept {
  prefetch_lines<1>(row, D * static_cast<int64_t>(sizeof(Scalar)));
}

// Sum/mean updates of bags [b0, b1) to rows in [lo, hi), in index order:
// target[r] += scale_i * grad_out[b].
template <class Scalar, class Index>
void scatter_bags(const Scalar* grad_out, int64_t D, const Index* indices,
                  const Bags& bags, BagMode mode, const Scalar* weights,
                  int64_t padding_idx, const Scalar* scales, Scalar* target, int64_t b0,
                  int64_t b1, int64_t lo, int64_t hi) {
  if (b1 <= b0) return;
  const auto width = static_cast<uint64_t>(hi - lo);
  const int64_t last = bags.end(b1 - 1);  // bags are contiguous runs of positions
  const int64_t pf_rows = row_prefetch(D, sizeof(Scalar));
  for (int64_t b = b0; b < b1; ++b) {
    const Scalar* g = grad_out + b * D;
    const int64_t e = bags.end(b);
    for (int64_t i = bags.begin(b); i < e; ++i) {
      if (pf_rows > 0 && i + pf_rows < last) {
        const auto ahead = static_cast<int64_t>(indices[i + pf_rows]);
        if (static_cast<uint64_t>(ahead - lo) < width)
          prefetch_write(target + ahead * D, D);
      }
      const int64_t r = static_cast<int64_t>(indices[i]);
      if (r == padding_idx || static_cast<uint64_t>(r - lo) >= width) continue;
      Scalar* t = target + r * D;
      if (weights) {
        const Scalar w = weights[i];
        for (int64_t d = 0; d < D; ++d) t[d] += w * g[d];
      } else if (mode == BagMode::mean) {
        const Scalar w = scales[b];
        for (int64_t d = 0; d < D; ++d) t[d] += w * g[d];
      } else {
        for (int64_t d = 0; d < D; ++d) t[d] += g[d];
      }
    }
  }
}

int bit_width(uint64_t x) noexcept { return radix::bit_width(x); }

// (row, source) pairs sorted by row, then source. The pairs come in increasing
// source order, so only the row bits are sorted (radix::sort, stable): packed into
// one 64-bit value (row << source_bits | source) when both fit, else std::sort.
void sort_entries(std::vector<std::pair<int64_t, int64_t>>& entries, int64_t V,
                  int64_t num_sources) {
  const int src_bits = bit_width(static_cast<uint64_t>(num_sources));
  const int row_bits = bit_width(static_cast<uint64_t>(V));
  if (src_bits + row_bits > 64 || src_bits == 64) {
    std::sort(entries.begin(), entries.end());
    return;
  }
  const auto n = static_cast<int64_t>(entries.size());
  std::vector<uint64_t> buf(2 * entries.size());
  for (size_t k = 0; k < entries.size(); ++k)
    buf[k] = static_cast<uint64_t>(entries[k].first) << src_bits |
             static_cast<uint64_t>(entries[k].second);
  const uint64_t* keys = radix::sort(buf.data(), buf.data() + n, n, src_bits, row_bits);
  const uint64_t mask = (uint64_t{1} << src_bits) - 1;
  for (size_t k = 0; k < entries.size(); ++k)
    entries[k] = {static_cast<int64_t>(keys[k] >> src_bits),
                  static_cast<int64_t>(keys[k] & mask)};
}

// Max updates to rows in [lo, hi), in bag order.
template <class Scalar>
void scatter_max(const Scalar* grad_out, int64_t B, int64_t D, const int64_t* argmax,
                 Scalar* target, int64_t lo, int64_t hi) {
  const auto width = static_cast<uint64_t>(hi - lo);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* win = argmax + b * D;
    const Scalar* g = grad_out + b * D;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t r = win[d];  // -1 (empty bag) fails the range test too
      if (static_cast<uint64_t>(r - lo) < width) target[r * D + d] += g[d];
    }
  }
}

}  // namespace

BagMode parse_bag_mode(const char* name) {
  const std::string m(name);
  if (m == "sum") return BagMode::sum;
  if (m == "mean") return BagMode::mean;
  if (m == "max") return BagMode::max;
  throw std::invalid_argument("mode must be 'sum', 'mean' or 'max', got '" + m + "'");
}

Bags fixed_bags(int64_t B, int64_t L) noexcept {
  Bags bags;
  bags.num_bags = B;
  bags.bag_size = L;
  bags.num_indices = B * L;
  return bags;
}

Bags ragged_bags(const int64_t* offsets, int64_t num_offsets, int64_t n,
                 bool include_last_offset) {
  if (num_offsets == 0) {
    if (include_last_offset)
      throw std::invalid_argument(
          "offsets is empty but include_last_offset=True needs at least one offset "
          "(the end "
          "of the last bag, len(indices))");
    if (n != 0)
      throw std::invalid_argument("offsets is empty (zero bags) but indices has " +
                                  std::to_string(n) +
                                  " entries; pass offsets=[0] for a single bag");
  }
  // One read-only pass; the first bad position wins, whatever the rule.
  for (int64_t k = 0; k < num_offsets; ++k) {
    const int64_t o = offsets[k];
    if (k == 0 && o != 0)
      throw std::invalid_argument(
          pos(0) + std::to_string(o) +
          " but the first bag must start at 0; offsets[0] must be 0");
    if (k > 0 && o < offsets[k - 1])
      throw std::invalid_argument(pos(k) + std::to_string(o) + " is less than " +
                                  pos(k - 1) + std::to_string(offsets[k - 1]) +
                                  "; offsets must be non-decreasing");
    if (o > n)
      throw std::invalid_argument(
          pos(k) + std::to_string(o) + " is past the end of indices (length " +
          std::to_string(n) + "); every offset must be <= len(indices)");
  }
  if (include_last_offset && offsets[num_offsets - 1] != n)
    throw std::invalid_argument(
        "with include_last_offset=True the last offset closes the last bag and must be "
        "len(indices) = " +
        std::to_string(n) + ", got " + pos(num_offsets - 1) +
        std::to_string(offsets[num_offsets - 1]));
  Bags bags;
  bags.offsets = offsets;
  bags.num_offsets = num_offsets;
  bags.num_indices = n;
  bags.num_bags = include_last_offset ? num_offsets - 1 : num_offsets;
  return bags;
}

template <class Scalar, class Index>
void embedding_bag(const Scalar* table, int64_t V, int64_t D, const Index* indices,
                   std::span<const int64_t> index_shape, const Bags& bags, BagMode mode,
                   const Scalar* per_sample_weights, int64_t padding_idx, Scalar* out,
                   int64_t* argmax) {
  check_padding_idx(padding_idx, V);
  if (per_sample_weights && mode != BagMode::sum)
    throw std::invalid_argument(
        "per_sample_weights are only supported with mode='sum'");
  check_indices(indices, index_shape, V);
  const int64_t B = bags.num_bags;
  if (B == 0 || D == 0) return;
  const int64_t row_bytes = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t per_bag = std::max<int64_t>(1, bags.num_indices / B);
  const int64_t pf_ids = kernels::bag_prefetch_ids<Scalar>(D);
  const kernels::BagArgs<Scalar, Index> args{
      table,
      D,
      indices,
      &bags,
      mode,
      per_sample_weights,
      padding_idx,
      out,
      mode == BagMode::max ? argmax : nullptr,
      sizeof(Scalar) == 8 || V <= int64_t{INT32_MAX} + 1,
      pf_ids,
      D};
  const auto fn = kernels::bag_forward<Scalar, Index>();
  // A task covers about tuning().parallel_bytes of table rows.
  const int64_t grain = std::max<int64_t>(1, grain_rows(row_bytes) / per_bag);
  parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { fn(args, b0, b1); });
}

template <class Scalar, class Index>
void embedding_bag_ref(const Scalar* table, int64_t D, const Index* indices,
                       const Bags& bags, BagMode mode, const Scalar* per_sample_weights,
                       int64_t padding_idx, Scalar* out, int64_t* argmax) {
  for (int64_t b = 0; b < bags.num_bags; ++b) {
    const int64_t s = bags.begin(b), e = bags.end(b);
    for (int64_t d = 0; d < D; ++d) {
      Scalar acc = 0;
      int64_t count = 0, win = -1;
      for (int64_t i = s; i < e; ++i) {
        const int64_t r = static_cast<int64_t>(indices[i]);
        if (r == padding_idx) continue;
        const Scalar v = table[r * D + d];
        if (mode == BagMode::max) {
          if (count == 0 || v > acc) acc = v, win = r;
        } else {
          acc += per_sample_weights ? per_sample_weights[i] * v : v;
        }
        ++count;
      }
      if (mode == BagMode::mean && count > 0) acc = acc / static_cast<Scalar>(count);
      out[b * D + d] = count > 0 ? acc : Scalar(0);
      if (mode == BagMode::max && argmax) argmax[b * D + d] = win;
    }
  }
}

template <class Scalar, class Index>
void embedding_bag_backward(const Scalar* grad_out, int64_t V, int64_t D,
                            const Index* indices, std::span<const int64_t> index_shape,
                            const Bags& bags, BagMode mode,
                            const Scalar* per_sample_weights, int64_t padding_idx,
                            const int64_t* argmax, Scalar* target, bool deterministic) {
  check_padding_idx(padding_idx, V);
  check_mode_inputs(mode, per_sample_weights, argmax);
  check_indices(indices, index_shape, V);
  const int64_t B = bags.num_bags;
  if (mode == BagMode::max) check_argmax(argmax, B * D, V);
  if (B == 0 || D == 0 || V == 0) return;
  RangeGuard guard(target, target + V * D);
  const int64_t n = bags.num_indices;
  const int threads = get_num_threads();
  const int64_t work =
      (mode == BagMode::max ? B : n) * D * static_cast<int64_t>(sizeof(Scalar));

  if (mode == BagMode::max) {
    if (threads == 1 || work <= tuning().parallel_bytes.value) {
      scatter_max(grad_out, B, D, argmax, target, 0, V);
      return;
    }
    // Owner rows: each part applies, in bag order, the entries of its rows only.
    const auto bounds =
        owner_rows(B * D, V, threads, [&](int64_t k) { return argmax[k]; });
    parallel_for(
        0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t p0, int64_t p1) {
          for (int64_t p = p0; p < p1; ++p)
            scatter_max(grad_out, B, D, argmax, target, bounds[static_cast<size_t>(p)],
                        bounds[static_cast<size_t>(p) + 1]);
        });
    return;
  }

  std::vector<Scalar> scales;
  if (mode == BagMode::mean) scales = mean_scales<Scalar>(indices, bags, padding_idx);
  const Scalar* sc = scales.data();
  if (threads == 1 || work <= tuning().parallel_bytes.value) {
    scatter_bags(grad_out, D, indices, bags, mode, per_sample_weights, padding_idx, sc,
                 target, 0, B, 0, V);
    return;
  }
  if (deterministic) {
    const auto bounds = owner_rows(n, V, threads, [&](int64_t i) {
      const auto r = static_cast<int64_t>(indices[i]);
      return r == padding_idx ? int64_t{-1} : r;
    });
    parallel_for(
        0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t p0, int64_t p1) {
          for (int64_t p = p0; p < p1; ++p)
            scatter_bags(grad_out, D, indices, bags, mode, per_sample_weights,
                         padding_idx, sc, target, 0, B, bounds[static_cast<size_t>(p)],
                         bounds[static_cast<size_t>(p) + 1]);
        });
    return;
  }
  // Atomic: threads split the bags; each row update holds its striped row lock.
  kernels::RowLocks& locks = kernels::row_locks();
  const int64_t per_bag = std::max<int64_t>(1, n / B);
  const int64_t grain = std::max<int64_t>(
      1, grain_rows(D * static_cast<int64_t>(sizeof(Scalar))) / per_bag);
  const int64_t pf_rows = row_prefetch(D, sizeof(Scalar));
  parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    const int64_t last = bags.end(b1 - 1);
    for (int64_t b = b0; b < b1; ++b) {
      const Scalar* g = grad_out + b * D;
      const int64_t e = bags.end(b);
      const Scalar w_bag = mode == BagMode::mean ? sc[b] : Scalar(1);
      for (int64_t i = bags.begin(b); i < e; ++i) {
        if (pf_rows > 0 && i + pf_rows < last)
          prefetch_write(target + static_cast<int64_t>(indices[i + pf_rows]) * D, D);
        const int64_t r = static_cast<int64_t>(indices[i]);
        if (r == padding_idx) continue;
        const Scalar w = per_sample_weights ? per_sample_weights[i] : w_bag;
        std::atomic<uint32_t>& lock = locks.lock[kernels::lock_stripe(r)].v;
        kernels::row_lock(lock);
        Scalar* t = target + r * D;
        if (mode == BagMode::sum && !per_sample_weights)
          for (int64_t d = 0; d < D; ++d) t[d] += g[d];
        else
          for (int64_t d = 0; d < D; ++d) t[d] += w * g[d];
        kernels::row_unlock(lock);
      }
    }
  });
}

template <class Scalar, class Index>
void embedding_bag_backward_ref(const Scalar* grad_out, int64_t D, const Index* indices,
                                const Bags& bags, BagMode mode,
                                const Scalar* per_sample_weights, int64_t padding_idx,
                                const int64_t* argmax, Scalar* target) {
  for (int64_t b = 0; b < bags.num_bags; ++b) {
    const int64_t s = bags.begin(b), e = bags.end(b);
    if (mode == BagMode::max) {
      for (int64_t d = 0; d < D; ++d) {
        const int64_t r = argmax[b * D + d];
        if (r >= 0) target[r * D + d] += grad_out[b * D + d];
      }
      continue;
    }
    int64_t count = 0;
    for (int64_t i = s; i < e; ++i)
      count += static_cast<int64_t>(indices[i]) != padding_idx;
    const Scalar inv = count > 0 ? Scalar(1) / static_cast<Scalar>(count) : Scalar(0);
    for (int64_t i = s; i < e; ++i) {
      const int64_t r = static_cast<int64_t>(indices[i]);
      if (r == padding_idx) continue;
      for (int64_t d = 0; d < D; ++d) {
        const Scalar g = grad_out[b * D + d];
        if (per_sample_weights)
          target[r * D + d] += per_sample_weights[i] * g;
        else if (mode == BagMode::mean)
          target[r * D + d] += inv * g;
        else
          target[r * D + d] += g;
      }
    }
  }
}

template <class Scalar, class Index>
void embedding_bag_backward_sparse(
    const Scalar* grad_out, int64_t V, int64_t D, const Index* indices,
    std::span<const int64_t> index_shape, const Bags& bags, BagMode mode,
    const Scalar* per_sample_weights, int64_t padding_idx, const int64_t* argmax,
    std::vector<int64_t>& rows, RowValues<Scalar>& values) {
  check_padding_idx(padding_idx, V);
  check_mode_inputs(mode, per_sample_weights, argmax);
  check_indices(indices, index_shape, V);
  const int64_t B = bags.num_bags;
  if (mode == BagMode::max) check_argmax(argmax, B * D, V);
  rows.clear();
  values.clear();
  // (row, source) pairs sorted by row then source: each row's updates in order.
  // source = position i (sum/mean) or flat output position b * D + d (max).
  std::vector<std::pair<int64_t, int64_t>> entries;
  std::vector<int64_t> bag_of;
  if (mode == BagMode::max) {
    entries.reserve(static_cast<size_t>(B * D));
    for (int64_t k = 0; k < B * D; ++k)
      if (argmax[k] >= 0) entries.emplace_back(argmax[k], k);
  } else {
    entries.reserve(static_cast<size_t>(bags.num_indices));
    bag_of.resize(static_cast<size_t>(bags.num_indices));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t e = bags.end(b);
      for (int64_t i = bags.begin(b); i < e; ++i) {
        bag_of[static_cast<size_t>(i)] = b;
        const int64_t r = static_cast<int64_t>(indices[i]);
        if (r != padding_idx) entries.emplace_back(r, i);
      }
    }
  }
  sort_entries(entries, V, mode == BagMode::max ? B * D : bags.num_indices);
  std::vector<int64_t> starts;
  for (size_t k = 0; k < entries.size(); ++k)
    if (k == 0 || entries[k].first != entries[k - 1].first) {
      starts.push_back(static_cast<int64_t>(k));
      rows.push_back(entries[k].first);
    }
  const auto U = static_cast<int64_t>(rows.size());
  starts.push_back(static_cast<int64_t>(entries.size()));
  values.resize(
      static_cast<size_t>(U * D));  // not zero-filled: each worker zeroes its rows
  if (U == 0 || D == 0) return;
  std::vector<Scalar> scales;
  if (mode == BagMode::mean) scales = mean_scales<Scalar>(indices, bags, padding_idx);
  const int64_t per_row =
      std::max<int64_t>(1, static_cast<int64_t>(entries.size()) / U);
  const int64_t grain = std::max<int64_t>(
      1, grain_rows(D * static_cast<int64_t>(sizeof(Scalar))) / per_row);
  parallel_for(0, U, grain, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      Scalar* v = values.data() + u * D;
      std::fill(v, v + D, Scalar(0));  // 0 + u_1 + ...: the dense backward's bits
      for (int64_t k = starts[static_cast<size_t>(u)];
           k < starts[static_cast<size_t>(u) + 1]; ++k) {
        const int64_t src = entries[static_cast<size_t>(k)].second;
        if (mode == BagMode::max) {
          v[src % D] += grad_out[src];
          continue;
        }
        const int64_t b = bag_of[static_cast<size_t>(src)];
        const Scalar* g = grad_out + b * D;
        if (per_sample_weights) {
          const Scalar w = per_sample_weights[src];
          for (int64_t d = 0; d < D; ++d) v[d] += w * g[d];
        } else if (mode == BagMode::mean) {
          const Scalar w = scales[static_cast<size_t>(b)];
          for (int64_t d = 0; d < D; ++d) v[d] += w * g[d];
        } else {
          for (int64_t d = 0; d < D; ++d) v[d] += g[d];
        }
      }
    }
  });
}

template <class Scalar, class Index>
void embedding_bag_per_sample_weights_backward(const Scalar* grad_out,
                                               const Scalar* table, int64_t V,
                                               int64_t D, const Index* indices,
                                               std::span<const int64_t> index_shape,
                                               const Bags& bags, int64_t padding_idx,
                                               Scalar* grad_w) {
  check_padding_idx(padding_idx, V);
  check_indices(indices, index_shape, V);
  const int64_t B = bags.num_bags;
  if (B == 0) return;
  const int64_t per_bag = std::max<int64_t>(1, bags.num_indices / B);
  const int64_t grain = std::max<int64_t>(
      1, grain_rows(D * static_cast<int64_t>(sizeof(Scalar))) / per_bag);
  parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const Scalar* g = grad_out + b * D;
      for (int64_t i = bags.begin(b); i < bags.end(b); ++i) {
        const int64_t r = static_cast<int64_t>(indices[i]);
        Scalar dot = 0;
        if (r != padding_idx) {
          const Scalar* row = table + r * D;
          for (int64_t d = 0; d < D; ++d) dot += g[d] * row[d];
        }
        grad_w[i] = dot;
      }
    }
  });
}

template <class Scalar, class Index>
void embedding_bag_per_sample_weights_backward_ref(
    const Scalar* grad_out, const Scalar* table, int64_t D, const Index* indices,
    const Bags& bags, int64_t padding_idx, Scalar* grad_w) {
  for (int64_t b = 0; b < bags.num_bags; ++b)
    for (int64_t i = bags.begin(b); i < bags.end(b); ++i) {
      const int64_t r = static_cast<int64_t>(indices[i]);
      Scalar dot = 0;
      if (r != padding_idx)
        for (int64_t d = 0; d < D; ++d) dot += grad_out[b * D + d] * table[r * D + d];
      grad_w[i] = dot;
    }
}

#define EMBTABLE_INSTANTIATE(Scalar, Index)                                            \
  template kernels::BagForwardFn<Scalar, Index>                                        \
  kernels::bag_forward<Scalar, Index>() noexcept;                                      \
  template void embedding_bag<Scalar, Index>(                                          \
      const Scalar*, int64_t, int64_t, const Index*, std::span<const int64_t>,         \
      const Bags&, BagMode, const Scalar*, int64_t, Scalar*, int64_t*);                \
  template void embedding_bag_ref<Scalar, Index>(const Scalar*, int64_t, const Index*, \
                                                 const Bags&, BagMode, const Scalar*,  \
                                                 int64_t, Scalar*, int64_t*);          \
  template void embedding_bag_backward<Scalar, Index>(                                 \
      const Scalar*, int64_t, int64_t, const Index*, std::span<const int64_t>,         \
      const Bags&, BagMode, const Scalar*, int64_t, const int64_t*, Scalar*, bool);    \
  template void embedding_bag_backward_ref<Scalar, Index>(                             \
      const Scalar*, int64_t, const Index*, const Bags&, BagMode, const Scalar*,       \
      int64_t, const int64_t*, Scalar*);                                               \
  template void embedding_bag_backward_sparse<Scalar, Index>(                          \
      const Scalar*, int64_t, int64_t, const Index*, std::span<const int64_t>,         \
      const Bags&, BagMode, const Scalar*, int64_t, const int64_t*,                    \
      std::vector<int64_t>&, RowValues<Scalar>&);                                      \
  template void embedding_bag_per_sample_weights_backward<Scalar, Index>(              \
      const Scalar*, const Scalar*, int64_t, int64_t, const Index*,                    \
      std::span<const int64_t>, const Bags&, int64_t, Scalar*);                        \
  template void embedding_bag_per_sample_weights_backward_ref<Scalar, Index>(          \
      const Scalar*, const Scalar*, int64_t, const Index*, const Bags&, int64_t,       \
      Scalar*);
EMBTABLE_INSTANTIATE(float, int32_t)
EMBTABLE_INSTANTIATE(float, int64_t)
EMBTABLE_INSTANTIATE(double, int32_t)
EMBTABLE_INSTANTIATE(double, int64_t)
#undef EMBTABLE_INSTANTIATE

}  // namespace embtable
