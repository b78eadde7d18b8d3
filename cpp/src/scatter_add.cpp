#include "embtable/scatter_add.hpp"

#include <pthread.h>

#include <algorithm>
#include <climits>
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
// more than a 1/T share, as under a steep Zipf law). The sample is left in
// `sample` for sample_collision().
//
// Quantiles by selection (std::nth_element), not a sort: the sort of the 512
// samples of a 2-thread call took 5.7 us on AMD Zen 3, as long as the whole
// inline scatter of 2,048 ids of 64 bytes.
template <class Index>
std::vector<int64_t> owner_bounds(const Index* indices, int64_t n, int64_t V, int parts,
                                  double* heaviest, std::vector<int64_t>& sample) {
  const int64_t samples = std::min<int64_t>(n, 256 * static_cast<int64_t>(parts));
  sample.resize(static_cast<size_t>(samples));
  for (int64_t s = 0; s < samples; ++s)
    sample[static_cast<size_t>(s)] = static_cast<int64_t>(indices[s * n / samples]);
  std::vector<int64_t> bounds{0};
  int64_t done = 0;  // sample[0, done) holds only values <= sample[done]
  for (int p = 1; p < parts; ++p) {
    const int64_t k = p * samples / parts;
    std::nth_element(sample.begin() + done, sample.begin() + k, sample.end());
    done = k;
    const int64_t cut = sample[static_cast<size_t>(k)];
    if (cut > bounds.back()) bounds.push_back(cut);
  }
  bounds.push_back(V);
  std::vector<int64_t> count(bounds.size() - 1, 0);
  for (const int64_t x : sample) {
    const auto part = std::upper_bound(bounds.begin() + 1, bounds.end() - 1, x) -
                      (bounds.begin() + 1);
    ++count[static_cast<size_t>(part)];
  }
  const int64_t most = *std::max_element(count.begin(), count.end());
  *heaviest =
      static_cast<double>(most) / static_cast<double>(std::max<int64_t>(samples, 1));
  return bounds;
}

// The chance that two ids drawn at random from the sample are the same row
// (the sum of squared row shares). Sorts the sample.
double sample_collision(std::vector<int64_t>& sample) {
  std::sort(sample.begin(), sample.end());
  const auto samples = static_cast<double>(std::max<size_t>(sample.size(), 1));
  double same = 0;
  for (size_t i = 0; i < sample.size();) {
    size_t j = i;
    while (j < sample.size() && sample[j] == sample[i]) ++j;
    const double share = static_cast<double>(j - i) / samples;
    same += share * share;
    i = j;
  }
  return same;
}

// Each owner adds the updates of its rows [bounds[p], bounds[p + 1]) in id
// order: no atomics, and bitwise np.add.at.
template <class Scalar, class Index>
void scatter_by_owners(Scalar* target, int64_t V, int64_t D, const Index* indices,
                       int64_t n, const Scalar* updates,
                       const std::vector<int64_t>& bounds) {
  const auto& ops = kernels::ops<Scalar, Index>();
  const auto parts = static_cast<int64_t>(bounds.size()) - 1;
  parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      ops.scatter_owned(target, D, indices, n, updates, bounds[static_cast<size_t>(p)],
                        bounds[static_cast<size_t>(p) + 1], V);
  });
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
  const int64_t saved_per_id =
      row_bytes * (threads - 1) / threads - tuning().owner_scan_bytes.value;
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
  double heaviest = 1.0;
  std::vector<int64_t> sample;
  const std::vector<int64_t> bounds =
      owner_bounds(indices, n, V, threads, &heaviest, sample);
  const bool balanced = heaviest * threads <= 1.5;
  if (!deterministic && (threads > kLockedAbove || !balanced) &&
      (threads - 1) * sample_collision(sample) <= 0.25) {  // not contended
    kernels::RowLocks& locks = kernels::row_locks();
    parallel_for(0, n, grain, [&](int64_t b, int64_t e) {
      ops.scatter_locked(target, D, indices, b, e, updates, locks);
    });
    return;
  }
  scatter_by_owners(target, V, D, indices, n, updates, bounds);
}

int64_t calibrate_owner_scan_bytes() {
  const int threads = get_num_threads();
  if (threads < 2) return 0;
  // 64-byte rows, where the scan weighs most against the rows it saves; sizes
  // that stay in L2 and L3 (a 512 KiB table, 65,536 ids, 4 MiB of updates),
  // with enough ids that the fixed costs of a call (the sample, the hand-off)
  // hardly count: parallel_bytes covers those. (At 16,384 ids the reading was
  // 27-44 bytes on a Zen 3 guest, where 65,536 ids cost the owners 51.)
  constexpr int64_t D = 16, V = 8192, n = 65536;
  constexpr int64_t rb = D * static_cast<int64_t>(sizeof(float));
  std::vector<float> target(static_cast<size_t>(V * D), 0.0f);
  std::vector<float> updates(static_cast<size_t>(n * D), 1.0f / 1024);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  uint64_t x = 0x9E3779B97F4A7C15ull;  // a fixed LCG: the same ids every time
  for (auto& id : ids) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(V));
  }
  const auto& ops = kernels::ops<float, int64_t>();
  double heaviest = 1.0;
  std::vector<int64_t> sample;
  const std::vector<int64_t> bounds =
      owner_bounds(ids.data(), n, V, threads, &heaviest, sample);
  using detail::now_ns;
  // The best of 9 calls of each, in turn: the floor, as little of other
  // processes' time in it as the machine allows.
  int64_t inline_ns = INT64_MAX, owners_ns = INT64_MAX;
  for (int r = 0; r < 10; ++r) {
    const int64_t t0 = now_ns();
    ops.scatter_owned(target.data(), D, ids.data(), n, updates.data(), 0, V, V);
    const int64_t t1 = now_ns();
    scatter_by_owners(target.data(), V, D, ids.data(), n, updates.data(), bounds);
    const int64_t t2 = now_ns();
    if (r > 0) {  // the first of each: page faults and cold caches
      inline_ns = std::min(inline_ns, t1 - t0);
      owners_ns = std::min(owners_ns, t2 - t1);
    }
  }
  if (inline_ns <= 0 || owners_ns <= 0) return 0;
  // Inline, a thread moves n * rb bytes of rows in inline_ns; each owner does
  // n scans and n / T rows: owners_ns = n (scan + rb / T) / rate.
  const double rate = static_cast<double>(n * rb) / static_cast<double>(inline_ns);
  const double scan = static_cast<double>(owners_ns) * rate / static_cast<double>(n) -
                      static_cast<double>(rb) / threads;
  return std::clamp<int64_t>(static_cast<int64_t>(scan), 1, 64 * rb);
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
