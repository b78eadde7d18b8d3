#include "embtable/sgns.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/simd.hpp"
#include "embtable/validate.hpp"
#include "sgns_kernels.hpp"
#include "sgns_window.hpp"

namespace embtable {
namespace {

const sgns_kernels::Table& selected_table() noexcept {
  switch (simd_selected()) {
#if defined(EMBTABLE_HAVE_AVX512)
    case Simd::avx512:
      return sgns_kernels::table_avx512();
#endif
#if defined(EMBTABLE_HAVE_AVX2)
    case Simd::avx2:
      return sgns_kernels::table_avx2();
#endif
    default:
      return sgns_kernels::table_baseline();
  }
}

// check_indices, with the argument's name in front of the message.
template <class Index>
void check_named(const char* name, const Index* indices, std::span<const int64_t> shape,
                 int64_t V) {
  try {
    check_indices(indices, shape, V);
  } catch (const std::out_of_range& e) {
    throw std::out_of_range(std::string(name) + ": " + e.what());
  }
}

}  // namespace

namespace sgns_kernels {
PaddedLock* sgns_locks() noexcept {
  static PaddedLock locks[1 << kLockBits];
  return locks;
}
}  // namespace sgns_kernels

template <class Index>
void sgns_check_indices(int64_t V_in, int64_t V_out, const Index* centers,
                        const Index* contexts, int64_t N, const Index* negatives,
                        int64_t K) {
  if (N < 0 || K < 0) throw std::invalid_argument("sgns_step: negative size");
  const int64_t pair_shape[1] = {N};
  const int64_t neg_shape[2] = {N, K};
  check_named("centers", centers, pair_shape, V_in);
  check_named("contexts", contexts, pair_shape, V_out);
  check_named("negatives", negatives, neg_shape, V_out);
}

template <class Scalar, class Index>
double sgns_step(Scalar* in_table, int64_t V_in, Scalar* out_table, int64_t V_out,
                 int64_t D, const Index* centers, const Index* contexts, int64_t N,
                 const Index* negatives, int64_t K, Scalar lr) {
  sgns_check_indices(V_in, V_out, centers, contexts, N, negatives, K);
  if (N == 0) return 0.0;
  // One guard over the hull of both tables: a single acquisition cannot deadlock
  // with another caller that passes the same two tables the other way round.
  Scalar* lo = std::min(in_table, out_table);
  Scalar* hi = std::max(in_table + V_in * D, out_table + V_out * D);
  RangeGuard guard(lo, hi);
  const auto run = selected_table().get<Scalar, Index>();
  // Rows a pair touches: its center and K + 1 targets, each read and written.
  const int64_t pair_bytes = (K + 2) * D * static_cast<int64_t>(sizeof(Scalar)) * 2;
  // A task covers about tuning().parallel_bytes of rows (no fixed floor: a pair
  // of wide rows alone can be worth a hand-off).
  const int64_t grain = grain_rows(pair_bytes);
  if (get_num_threads() == 1 || N <= grain)
    return run(in_table, out_table, D, centers, contexts, negatives, K, lr, 0, N,
               false) /
           static_cast<double>(N);
  std::atomic<double> loss{0.0};
  parallel_for(0, N, grain, [&](int64_t b, int64_t e) {
    const double part =
        run(in_table, out_table, D, centers, contexts, negatives, K, lr, b, e, true);
    loss.fetch_add(part, std::memory_order_relaxed);
  });
  return loss.load() / static_cast<double>(N);
}

namespace {

void check_stream(int64_t n, int64_t start, int64_t stop, int64_t window, int64_t K,
                  int64_t noise_len) {
  if (start < 0 || start > stop || stop > n)
    throw std::invalid_argument(
        "sgns_train: need 0 <= start <= stop <= len(tokens) = " + std::to_string(n) +
        ", got start=" + std::to_string(start) + ", stop=" + std::to_string(stop));
  if (window < 0) throw std::invalid_argument("sgns_train: window must be >= 0");
  if (K < 0) throw std::invalid_argument("sgns_train: negative must be >= 0");
  if (K > 0 && noise_len == 0 && stop > start && window > 0)
    throw std::invalid_argument("sgns_train: noise is empty but negative > 0");
}

}  // namespace

template <class Scalar, class Index>
SgnsTrainResult sgns_train(Scalar* in_table, Scalar* out_table, int64_t V, int64_t D,
                           const Index* tokens, const int64_t* sentences, int64_t n,
                           int64_t start, int64_t stop, int64_t window, int64_t K,
                           const Index* noise, int64_t noise_len, Scalar lr,
                           Scalar end_lr, uint64_t seed) {
  check_stream(n, start, stop, window, K, noise_len);
  const int64_t tok_shape[1] = {n};
  const int64_t noise_shape[1] = {noise_len};
  check_named("tokens", tokens, tok_shape, V);
  check_named("noise", noise, noise_shape, V);
  if (stop == start || window == 0 || n < 2) return {0.0, 0};
  Scalar* lo = std::min(in_table, out_table);
  Scalar* hi = std::max(in_table + V * D, out_table + V * D);
  RangeGuard guard(lo, hi);
  const auto run = selected_table().get_tokens<Scalar, Index>();
  const sgns_kernels::TokenArgs<Index> args{tokens, sentences, n,     start,     stop,
                                            window, K,         noise, noise_len, seed};
  // A center trains about `window` pairs (no more than n - 1) of K + 1 rows each;
  // a task covers about tuning().parallel_bytes of them.
  const int64_t reach = std::min(window, n - 1);
  const int64_t grain =
      grain_rows(reach * (K + 2) * D * static_cast<int64_t>(sizeof(Scalar)) * 2);
  int64_t pairs = 0;
  double loss = 0;
  if (get_num_threads() == 1 || stop - start <= grain) {
    loss = run(in_table, out_table, D, args, lr, end_lr, start, stop, false, &pairs);
  } else {
    std::atomic<double> loss_sum{0.0};
    std::atomic<int64_t> pair_sum{0};
    parallel_for(start, stop, grain, [&](int64_t b, int64_t e) {
      int64_t part_pairs = 0;
      const double part =
          run(in_table, out_table, D, args, lr, end_lr, b, e, true, &part_pairs);
      loss_sum.fetch_add(part, std::memory_order_relaxed);
      pair_sum.fetch_add(part_pairs, std::memory_order_relaxed);
    });
    loss = loss_sum.load();
    pairs = pair_sum.load();
  }
  return {pairs ? loss / static_cast<double>(pairs) : 0.0, pairs};
}

template <class Index>
void sgns_pairs(const Index* tokens, const int64_t* sentences, int64_t n, int64_t start,
                int64_t stop, int64_t window, int64_t K, const Index* noise,
                int64_t noise_len, uint64_t seed, std::vector<int64_t>& inputs,
                std::vector<int64_t>& targets, std::vector<int64_t>& negatives) {
  check_stream(n, start, stop, window, K, noise_len);
  std::vector<int64_t> negs;
  for (int64_t i = start; i < stop; ++i)
    sgns_kernels::for_each_pair(tokens, sentences, n, window, K, noise, noise_len, seed,
                                i, negs, [&](int64_t in, int64_t t, const int64_t* ng) {
                                  inputs.push_back(in);
                                  targets.push_back(t);
                                  negatives.insert(negatives.end(), ng, ng + K);
                                });
}

template <class Scalar, class Index>
double sgns_step_ref(Scalar* in_table, Scalar* out_table, int64_t D,
                     const Index* centers, const Index* contexts, int64_t N,
                     const Index* negatives, int64_t K, Scalar lr) {
  std::vector<Scalar> h(static_cast<size_t>(D)), grad(static_cast<size_t>(D));
  double loss = 0;
  for (int64_t i = 0; i < N; ++i) {
    Scalar* in_row = in_table + static_cast<int64_t>(centers[i]) * D;
    const int64_t ctx = static_cast<int64_t>(contexts[i]);
    for (int64_t d = 0; d < D; ++d) {
      h[static_cast<size_t>(d)] = in_row[d];
      grad[static_cast<size_t>(d)] = 0;
    }
    for (int64_t k = -1; k < K; ++k) {
      const int64_t t = k < 0 ? ctx : static_cast<int64_t>(negatives[i * K + k]);
      if (k >= 0 && t == ctx) continue;
      Scalar* row = out_table + t * D;
      Scalar s = 0;
      for (int64_t d = 0; d < D; ++d) s += h[static_cast<size_t>(d)] * row[d];
      const Scalar label = k < 0 ? Scalar{1} : Scalar{0};
      const Scalar sig = Scalar{1} / (Scalar{1} + std::exp(-s));
      const Scalar g = (label - sig) * lr;
      loss += k < 0 ? std::log1p(std::exp(-static_cast<double>(s)))
                    : std::log1p(std::exp(static_cast<double>(s)));
      for (int64_t d = 0; d < D; ++d) grad[static_cast<size_t>(d)] += g * row[d];
      for (int64_t d = 0; d < D; ++d) row[d] += g * h[static_cast<size_t>(d)];
    }
    for (int64_t d = 0; d < D; ++d) in_row[d] += grad[static_cast<size_t>(d)];
  }
  return N == 0 ? 0.0 : loss / static_cast<double>(N);
}

#define EMBTABLE_INSTANTIATE(Scalar, Index)                                         \
  template double sgns_step<Scalar, Index>(Scalar*, int64_t, Scalar*, int64_t,      \
                                           int64_t, const Index*, const Index*,     \
                                           int64_t, const Index*, int64_t, Scalar); \
  template double sgns_step_ref<Scalar, Index>(Scalar*, Scalar*, int64_t,           \
                                               const Index*, const Index*, int64_t, \
                                               const Index*, int64_t, Scalar);
template void sgns_check_indices<int32_t>(int64_t, int64_t, const int32_t*,
                                          const int32_t*, int64_t, const int32_t*,
                                          int64_t);
template void sgns_check_indices<int64_t>(int64_t, int64_t, const int64_t*,
                                          const int64_t*, int64_t, const int64_t*,
                                          int64_t);
#define EMBTABLE_INSTANTIATE_TRAIN(Scalar, Index)                                \
  template SgnsTrainResult sgns_train<Scalar, Index>(                            \
      Scalar*, Scalar*, int64_t, int64_t, const Index*, const int64_t*, int64_t, \
      int64_t, int64_t, int64_t, int64_t, const Index*, int64_t, Scalar, Scalar, \
      uint64_t);
EMBTABLE_INSTANTIATE_TRAIN(float, int32_t)
EMBTABLE_INSTANTIATE_TRAIN(float, int64_t)
EMBTABLE_INSTANTIATE_TRAIN(double, int32_t)
EMBTABLE_INSTANTIATE_TRAIN(double, int64_t)
#undef EMBTABLE_INSTANTIATE_TRAIN
template void sgns_pairs<int32_t>(const int32_t*, const int64_t*, int64_t, int64_t,
                                  int64_t, int64_t, int64_t, const int32_t*, int64_t,
                                  uint64_t, std::vector<int64_t>&,
                                  std::vector<int64_t>&, std::vector<int64_t>&);
template void sgns_pairs<int64_t>(const int64_t*, const int64_t*, int64_t, int64_t,
                                  int64_t, int64_t, int64_t, const int64_t*, int64_t,
                                  uint64_t, std::vector<int64_t>&,
                                  std::vector<int64_t>&, std::vector<int64_t>&);
EMBTABLE_INSTANTIATE(float, int32_t)
EMBTABLE_INSTANTIATE(float, int64_t)
EMBTABLE_INSTANTIATE(double, int32_t)
EMBTABLE_INSTANTIATE(double, int64_t)
#undef EMBTABLE_INSTANTIATE

}  // namespace embtable
