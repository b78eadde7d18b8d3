// Internal: the table of per-ISA kernels. Each kernel works on a whole range of
// indices (never one row per call), so dispatch costs one pointer load per call.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include "embtable/simd.hpp"

namespace embtable::kernels {

// Striped row locks of the atomic scatter-add: row r is guarded by
// locks[stripe(r)]; one atomic exchange per run of equal ids, then vector adds.
// One lock per cache line: two threads on different rows never share a line.
inline constexpr int kLockBits = 11;
inline constexpr int kLockStripes = 1 << kLockBits;
inline uint32_t lock_stripe(int64_t row) noexcept {
  // Fibonacci hashing spreads neighbouring rows over different stripes.
  return static_cast<uint32_t>((static_cast<uint64_t>(row) * 0x9E3779B97F4A7C15ull) >>
                               (64 - kLockBits));
}
struct alignas(64) PaddedLock {
  std::atomic<uint32_t> v;
};
struct RowLocks {
  PaddedLock lock[kLockStripes];
};
RowLocks& row_locks() noexcept;

// The one spin lock of the core's striped row locks (scatter_add, bag backward,
// sgns): test-and-test-and-set; after a short spin it yields, so a holder that was
// preempted on an oversubscribed machine gets its CPU back. `static`: every ISA
// translation unit keeps its own copy (no shared inline symbol across ISAs).
static inline void row_lock(std::atomic<uint32_t>& lock) noexcept {
  for (int spins = 0; lock.exchange(1, std::memory_order_acquire) != 0;) {
    while (lock.load(std::memory_order_relaxed) != 0) {
      if (++spins < 128) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }
}
static inline void row_unlock(std::atomic<uint32_t>& lock) noexcept {
  lock.store(0, std::memory_order_release);
}

template <class Scalar, class Index>
struct Ops {
  // out[i - b] = table[indices[i]] for i in [b, e)
  void (*gather)(const Scalar* table, int64_t D, const Index* indices, int64_t b,
                 int64_t e, Scalar* out);
  // target[indices[i]] += updates[i] for i in [b, e), each row under its lock
  void (*scatter_locked)(Scalar* target, int64_t D, const Index* indices, int64_t b,
                         int64_t e, const Scalar* updates, RowLocks& locks);
  // target[r] += updates[i] for i in [0, n) in order, only rows r in [lo, hi)
  // (V: the row count, so an owner of every row skips the filter)
  void (*scatter_owned)(Scalar* target, int64_t D, const Index* indices, int64_t n,
                        const Scalar* updates, int64_t lo, int64_t hi, int64_t V);
  // gather with non-temporal stores (outputs larger than the cache); falls back
  // to gather when `out` is not 16-byte aligned or the row size has no fast path
  void (*gather_stream)(const Scalar* table, int64_t D, const Index* indices, int64_t b,
                        int64_t e, Scalar* out);
  // position of the first index outside [0, V) in [b, e), or -1 (vectorised)
  int64_t (*first_bad)(const Index* indices, int64_t b, int64_t e, int64_t V);
};

struct Table {
  Ops<float, int32_t> f32_i32;
  Ops<float, int64_t> f32_i64;
  Ops<double, int32_t> f64_i32;
  Ops<double, int64_t> f64_i64;

  template <class Scalar, class Index>
  const Ops<Scalar, Index>& get() const noexcept;
};

template <>
inline const Ops<float, int32_t>& Table::get<float, int32_t>() const noexcept {
  return f32_i32;
}
template <>
inline const Ops<float, int64_t>& Table::get<float, int64_t>() const noexcept {
  return f32_i64;
}
template <>
inline const Ops<double, int32_t>& Table::get<double, int32_t>() const noexcept {
  return f64_i32;
}
template <>
inline const Ops<double, int64_t>& Table::get<double, int64_t>() const noexcept {
  return f64_i64;
}

const Table& table_baseline() noexcept;
#if defined(EMBTABLE_HAVE_AVX2)
const Table& table_avx2() noexcept;
#endif
#if defined(EMBTABLE_HAVE_AVX512)
const Table& table_avx512() noexcept;
#endif

// The table of the selected SIMD level.
const Table& selected() noexcept;

template <class Scalar, class Index>
const Ops<Scalar, Index>& ops() noexcept {
  return selected().get<Scalar, Index>();
}

}  // namespace embtable::kernels
