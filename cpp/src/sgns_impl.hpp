// The SGNS hot loop, written once and compiled per instruction set: a
// translation unit defines EMBTABLE_SGNS_TABLE (the accessor's name) and
// includes this file. Internal linkage throughout (see kernels_impl.hpp).
#ifndef EMBTABLE_SGNS_TABLE
#error "define EMBTABLE_SGNS_TABLE before including sgns_impl.hpp"
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels.hpp"
#include "prefetch.hpp"
#include "sgns_kernels.hpp"
#include "sgns_window.hpp"

namespace embtable::sgns_kernels {
namespace {

// Partial sums of dot(): a fixed count, so every SIMD level adds in the same
// order and gives the same bits (no fast-math flag needed to vectorize).
constexpr int kLanes = 16;

template <class Scalar>
inline Scalar dot(const Scalar* __restrict a, const Scalar* __restrict b,
                  int64_t D) noexcept {
  Scalar acc[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[d + l] * b[d + l];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  Scalar s = acc[0];
  for (; d < D; ++d) s += a[d] * b[d];
  return s;
}

template <class Scalar>
[[gnu::always_inline]] inline void prefetch_row(const Scalar* row, int64_t D) noexcept {
  prefetch_lines<1>(row, D * static_cast<int64_t>(sizeof(Scalar)));
}

// y += g * x
template <class Scalar>
inline void axpy(Scalar* __restrict y, Scalar g, const Scalar* __restrict x,
                 int64_t D) noexcept {
  for (int64_t d = 0; d < D; ++d) y[d] += g * x[d];
}

// The summed loss, sum_t log(1 + e_t) + max(margin_t, 0), kept cheap: the logs
// of the (1 + e_t) in (1, 2] are taken as the log of their product, folded
// every kFold factors (2^kFold stays far inside double's range), so the loss
// costs a multiply and an add per target instead of a log1p.
class LossSum {
 public:
  void add(double one_plus_e, double linear) noexcept {
    prod_ *= one_plus_e;
    linear_ += linear;
    if (++n_ == kFold) fold();
  }
  double total() noexcept {
    fold();
    return logs_ + linear_;
  }

 private:
  static constexpr int kFold = 256;
  void fold() noexcept {
    logs_ += std::log(prod_);
    prod_ = 1;
    n_ = 0;
  }
  double prod_ = 1, logs_ = 0, linear_ = 0;
  int n_ = 0;
};

// (label - sigmoid(s)), and adds -log(sigmoid(s)) (label 1) or
// -log(sigmoid(-s)) (label 0) to `loss`.
template <class Scalar>
inline Scalar sigmoid_residual(Scalar s, bool positive, LossSum& loss) noexcept {
  const Scalar e = std::exp(-std::abs(s));  // in (0, 1]: no overflow either way
  const Scalar one = 1;
  const Scalar p = s >= 0 ? one / (one + e) : e / (one + e);  // sigmoid(s)
  // -log(sigmoid(x)) = log(1 + exp(-|x|)) + max(-x, 0)
  const Scalar margin = positive ? -s : s;
  loss.add(1.0 + static_cast<double>(e),
           static_cast<double>(std::max(margin, Scalar{0})));
  return positive ? one - p : -p;
}

// Holds the striped spin lock of one row (of either table) for its lifetime, or
// nothing when `on` is false. A pair never holds two, so there is no lock order
// to get wrong. The stripes are shared by every SIMD level's kernels.
class RowLock {
 public:
  RowLock(const void* row, bool on) noexcept
      : l_(on ? &sgns_locks()[stripe(reinterpret_cast<uintptr_t>(row))].v : nullptr) {
    // Held for one dot + two axpys; row_lock yields after a short spin, so a
    // preempted holder (an oversubscribed machine) gets its CPU back.
    if (l_) kernels::row_lock(*l_);
  }
  ~RowLock() {
    if (l_) kernels::row_unlock(*l_);
  }
  RowLock(const RowLock&) = delete;
  RowLock& operator=(const RowLock&) = delete;

 private:
  static uint32_t stripe(uintptr_t address) noexcept {
    // Fibonacci hashing of the row's address: rows of both tables, spread.
    return static_cast<uint32_t>(
        (static_cast<uint64_t>(address) * 0x9E3779B97F4A7C15ull) >> (64 - kLockBits));
  }
  std::atomic<uint32_t>* l_;
};

// One pair: input row `in_row`, positive output row `ctx`, K negatives.
// h and grad are scratch rows of D.
template <class Scalar, bool Locked, class Neg>
inline void train_pair(Scalar* in_row, Scalar* out, int64_t D, int64_t ctx,
                       const Neg* negs, int64_t K, Scalar lr, Scalar* __restrict h,
                       Scalar* __restrict grad, LossSum& loss) noexcept {
  {
    RowLock lock(in_row, Locked);
    std::memcpy(h, in_row, static_cast<size_t>(D) * sizeof(Scalar));
  }
  std::fill(grad, grad + D, Scalar{0});
  for (int64_t k = -1; k < K; ++k) {
    const int64_t t = k < 0 ? ctx : static_cast<int64_t>(negs[k]);
    if (k >= 0 && t == ctx) continue;
    Scalar* row = out + t * D;
    RowLock lock(row, Locked);
    const Scalar g = sigmoid_residual(dot(h, row, D), k < 0, loss) * lr;
    axpy(grad, g, row, D);
    axpy(row, g, h, D);
  }
  RowLock lock(in_row, Locked);
  for (int64_t d = 0; d < D; ++d) in_row[d] += grad[d];
}

template <class Scalar, class Index, bool Locked>
double run(Scalar* in, Scalar* out, int64_t D, const Index* centers,
           const Index* contexts, const Index* negatives, int64_t K, Scalar lr,
           int64_t b, int64_t e) {
  std::vector<Scalar> buf(static_cast<size_t>(2 * D));
  LossSum loss;
  for (int64_t i = b; i < e; ++i) {
    if (i + 1 < e) {  // the next pair's rows, while this one computes
      prefetch_row(in + static_cast<int64_t>(centers[i + 1]) * D, D);
      prefetch_row(out + static_cast<int64_t>(contexts[i + 1]) * D, D);
      for (int64_t k = 0; k < K; ++k)
        prefetch_row(out + static_cast<int64_t>(negatives[(i + 1) * K + k]) * D, D);
    }
    train_pair<Scalar, Locked>(in + static_cast<int64_t>(centers[i]) * D, out, D,
                               static_cast<int64_t>(contexts[i]), negatives + i * K, K,
                               lr, buf.data(), buf.data() + D, loss);
  }
  return loss.total();
}

template <class Scalar, class Index>
double run_range(Scalar* in, Scalar* out, int64_t D, const Index* centers,
                 const Index* contexts, const Index* negatives, int64_t K, Scalar lr,
                 int64_t b, int64_t e, bool locked) {
  return locked ? run<Scalar, Index, true>(in, out, D, centers, contexts, negatives, K,
                                           lr, b, e)
                : run<Scalar, Index, false>(in, out, D, centers, contexts, negatives, K,
                                            lr, b, e);
}

template <class Scalar, class Index, bool Locked>
double run_tokens(Scalar* in, Scalar* out, int64_t D, const TokenArgs<Index>& a,
                  Scalar lr, Scalar end_lr, int64_t b, int64_t e, int64_t* pairs) {
  std::vector<Scalar> buf(static_cast<size_t>(2 * D));
  // The pairs of one center (at most 2 * window, and no more than its sentence
  // holds), collected first so the rows of pair p + 1 can be prefetched while
  // pair p computes. The buffers grow to the most pairs a center has had.
  std::vector<int64_t> inputs, targets, negs;
  LossSum loss;
  int64_t count = 0;
  const double span = static_cast<double>(a.stop - a.start);
  for (int64_t i = b; i < e; ++i) {
    // Linear decay over the centers [start, stop), as word2vec does over the corpus.
    const auto frac = static_cast<Scalar>(static_cast<double>(i - a.start) / span);
    const Scalar step = lr + (end_lr - lr) * frac;
    inputs.clear();
    targets.clear();
    for_each_pair(a.tokens, a.sentences, a.n, a.window, a.K, a.noise, a.noise_len,
                  a.seed, i, negs, [&](int64_t input, int64_t target, const int64_t*) {
                    inputs.push_back(input);
                    targets.push_back(target);
                  });
    const auto m = static_cast<int64_t>(inputs.size());
    for (int64_t p = 0; p < m; ++p) {
      const auto q = static_cast<size_t>(p);
      if (p + 1 < m) {
        prefetch_row(in + inputs[q + 1] * D, D);
        prefetch_row(out + targets[q + 1] * D, D);
        const int64_t* next = negs.data() + (p + 1) * a.K;
        for (int64_t k = 0; k < a.K; ++k) prefetch_row(out + next[k] * D, D);
      }
      train_pair<Scalar, Locked>(in + inputs[q] * D, out, D, targets[q],
                                 negs.data() + p * a.K, a.K, step, buf.data(),
                                 buf.data() + D, loss);
    }
    count += m;
  }
  *pairs = count;
  return loss.total();
}

template <class Scalar, class Index>
double tokens_range(Scalar* in, Scalar* out, int64_t D, const TokenArgs<Index>& a,
                    Scalar lr, Scalar end_lr, int64_t b, int64_t e, bool locked,
                    int64_t* pairs) {
  return locked
             ? run_tokens<Scalar, Index, true>(in, out, D, a, lr, end_lr, b, e, pairs)
             : run_tokens<Scalar, Index, false>(in, out, D, a, lr, end_lr, b, e, pairs);
}

const Table kTable{&run_range<float, int32_t>,     &run_range<float, int64_t>,
                   &run_range<double, int32_t>,    &run_range<double, int64_t>,
                   &tokens_range<float, int32_t>,  &tokens_range<float, int64_t>,
                   &tokens_range<double, int32_t>, &tokens_range<double, int64_t>};

}  // namespace

const Table& EMBTABLE_SGNS_TABLE() noexcept { return kTable; }

}  // namespace embtable::sgns_kernels
