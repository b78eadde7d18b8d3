#include "embtable/scatter_add.hpp"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "embtable/parallel.hpp"
#include "embtable/validate.hpp"
#include "kernels.hpp"

namespace embtable {
namespace {

struct HeldRanges {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::pair<uintptr_t, uintptr_t>> held;
};
// Leaked: outlives every caller. After fork() the child has only the forking
// thread, which holds no range; the ranges (and mutex / condition variable
// state) of the parent's other writers would block the child forever, so the
// child starts from a fresh, empty set.
HeldRanges* g_held = nullptr;
void held_prepare() { g_held->m.lock(); }
void held_parent() { g_held->m.unlock(); }
void held_child() { g_held = new HeldRanges; }  // the old one stays locked, unused
HeldRanges& held_ranges() {
  static const bool once = [] {
    g_held = new HeldRanges;
    pthread_atfork(held_prepare, held_parent, held_child);
    return true;
  }();
  (void)once;
  return *g_held;
}

// Row boundaries [b_0 = 0, ..., b_T = V) that split the updates about evenly
// between T owners, from the quantiles of a sample of the indices. Any split is
// correct; a good one balances the work. `heaviest` gets the largest share of
// the sample one owner received (1/T when balanced; more when a hot row holds
// more than a 1/T share, as under a steep Zipf law); `collision` the chance that
// two ids drawn at random are the same row (sum of squared row shares).
template <class Index>
std::vector<int64_t> owner_bounds(const Index* indices, int64_t n, int64_t V, int parts,
                                  double* heaviest, double* collision) {
  const int64_t samples = std::min<int64_t>(n, 256 * static_cast<int64_t>(parts));
  std::vector<int64_t> sample(static_cast<size_t>(samples));
  for (int64_t s = 0; s < samples; ++s)
    sample[static_cast<size_t>(s)] = static_cast<int64_t>(indices[s * n / samples]);
  std::sort(sample.begin(), sample.end());
  double same = 0;
  for (size_t i = 0; i < sample.size();) {
    size_t j = i;
    while (j < sample.size() && sample[j] == sample[i]) ++j;
    const double share = static_cast<double>(j - i) / static_cast<double>(samples);
    same += share * share;
    i = j;
  }
  *collision = same;
  std::vector<int64_t> bounds{0};
  for (int p = 1; p < parts; ++p) {
    const int64_t cut = sample[static_cast<size_t>(p * samples / parts)];
    if (cut > bounds.back()) bounds.push_back(cut);
  }
  bounds.push_back(V);
  int64_t most = 0;
  for (size_t p = 0; p + 1 < bounds.size(); ++p) {
    const auto lo = std::lower_bound(sample.begin(), sample.end(), bounds[p]);
    const auto hi = std::lower_bound(sample.begin(), sample.end(), bounds[p + 1]);
    most = std::max<int64_t>(most, hi - lo);
  }
  *heaviest =
      static_cast<double>(most) / static_cast<double>(std::max<int64_t>(samples, 1));
  return bounds;
}

}  // namespace

RangeGuard::RangeGuard(const void* begin, const void* end)
    : begin_(reinterpret_cast<uintptr_t>(begin)),
      end_(reinterpret_cast<uintptr_t>(end)) {
  if (begin_ >= end_) return;
  auto& r = held_ranges();
  std::unique_lock<std::mutex> lock(r.m);
  r.cv.wait(lock, [&] {
    for (const auto& [b, e] : r.held)
      if (b < end_ && begin_ < e) return false;
    return true;
  });
  r.held.emplace_back(begin_, end_);
}

RangeGuard::~RangeGuard() {
  if (begin_ >= end_) return;
  auto& r = held_ranges();
  {
    std::lock_guard<std::mutex> lock(r.m);
    auto it = std::find(r.held.begin(), r.held.end(), std::make_pair(begin_, end_));
    if (it != r.held.end()) r.held.erase(it);
  }
  r.cv.notify_all();
}

template <class Scalar, class Index>
void scatter_add(Scalar* target, int64_t V, int64_t D, const Index* indices,
                 std::span<const int64_t> shape, const Scalar* updates,
                 bool deterministic) {
  const int64_t n = shape_size(shape);
  check_indices(indices, shape, V);
  if (n == 0 || D == 0) return;
  RangeGuard guard(target, target + V * D);
  const auto& ops = kernels::ops<Scalar, Index>();
  const int64_t row_bytes = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t grain = grain_rows(row_bytes);
  const int threads = get_num_threads();
  // Up to kLockedAbove threads the owners (below) take every balanced call. They
  // each read every id: against one thread they save (T - 1) / T of the row
  // work per id but pay a scan of it (the id read and a compacted position
  // written). Worth the pool only when that saving, in bytes, exceeds what the
  // pool costs (parallel_bytes): at D = 16 float32 this takes ~4x the rows
  // gather needs, at D >= 64 about the same. Such a call stays inline before
  // the ids are sampled, so the locked path below is not tried for it either
  // (at 2 threads that path needs one row holding about half the ids, which the
  // contention rule gives to the owners anyway).
  constexpr int kLockedAbove = 8;
  const int64_t scan_bytes = 2 * static_cast<int64_t>(sizeof(Index));
  const int64_t saved_per_id = row_bytes * (threads - 1) / threads - scan_bytes;
  const bool owners_pay =
      saved_per_id > 0 && n > tuning().parallel_bytes.value / saved_per_id;
  if (n <= grain || threads == 1 || (threads <= kLockedAbove && !owners_pay)) {
    ops.scatter_owned(target, D, indices, n, updates, 0, V,
                      V);  // in order: np.add.at exactly
    return;
  }
  // Owners first, in both modes: no atomics, and bitwise np.add.at. Each owner
  // reads all n ids (cheap next to the rows), so beyond a few threads, or when
  // a hot row leaves one owner far more than its share, the atomic mode splits
  // the ids instead and locks rows; but not when rows are so hot that threads
  // would mostly wait on each other's locks (another thread holds the same row
  // a quarter of the time or more): the owners are then never slower.
  double heaviest = 1.0, collision = 0.0;
  const std::vector<int64_t> bounds =
      owner_bounds(indices, n, V, threads, &heaviest, &collision);
  const auto parts = static_cast<int64_t>(bounds.size()) - 1;
  const bool balanced = heaviest * threads <= 1.5;
  const bool contended = (threads - 1) * collision > 0.25;
  if (!deterministic && (threads > kLockedAbove || !balanced) && !contended) {
    kernels::RowLocks& locks = kernels::row_locks();
    parallel_for(0, n, grain, [&](int64_t b, int64_t e) {
      ops.scatter_locked(target, D, indices, b, e, updates, locks);
    });
    return;
  }
  parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      ops.scatter_owned(target, D, indices, n, updates, bounds[static_cast<size_t>(p)],
                        bounds[static_cast<size_t>(p) + 1], V);
  });
}

template <class Scalar, class Index>
void scatter_add_ref(Scalar* target, int64_t D, const Index* indices, int64_t n,
                     const Scalar* updates) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d)
      target[static_cast<int64_t>(indices[i]) * D + d] += updates[i * D + d];
}

#define EMBTABLE_INSTANTIATE(Scalar, Index)                                         \
  template void scatter_add<Scalar, Index>(Scalar*, int64_t, int64_t, const Index*, \
                                           std::span<const int64_t>, const Scalar*, \
                                           bool);                                   \
  template void scatter_add_ref<Scalar, Index>(Scalar*, int64_t, const Index*,      \
                                               int64_t, const Scalar*);
EMBTABLE_INSTANTIATE(float, int32_t)
EMBTABLE_INSTANTIATE(float, int64_t)
EMBTABLE_INSTANTIATE(double, int32_t)
EMBTABLE_INSTANTIATE(double, int64_t)
#undef EMBTABLE_INSTANTIATE

}  // namespace embtable
