// The hot loops, written once and compiled per instruction set: a translation
// unit defines EMBTABLE_ISA_TABLE (the accessor's name) and includes this file.
// Everything here has internal linkage, so no AVX-512 code can leak into a
// baseline caller through a shared inline symbol.
#ifndef EMBTABLE_ISA_TABLE
#error "define EMBTABLE_ISA_TABLE before including kernels_impl.hpp"
#endif

#include <cstdint>
#include <cstring>

#include "kernels.hpp"

namespace embtable::kernels {
namespace {

// Rows ahead to prefetch: enough to cover DRAM latency at one row per ~2 ns.
constexpr int64_t kPrefetch = 16;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

template <class Scalar>
inline void prefetch_row(const Scalar* row, int64_t D) noexcept {
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = D * static_cast<int64_t>(sizeof(Scalar));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 0);
}

template <class Scalar>
inline void copy_row(Scalar* __restrict dst, const Scalar* __restrict src, int64_t D) noexcept {
  std::memcpy(dst, src, static_cast<size_t>(D) * sizeof(Scalar));
}

template <class Scalar>
inline void add_row(Scalar* __restrict dst, const Scalar* __restrict src, int64_t D) noexcept {
  for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
}

template <class Scalar, class Index>
void gather(const Scalar* table, int64_t D, const Index* indices, int64_t b, int64_t e,
            Scalar* out) {
  for (int64_t i = b; i < e; ++i) {
    if (i + kPrefetch < e) prefetch_row(table + static_cast<int64_t>(indices[i + kPrefetch]) * D, D);
    copy_row(out + (i - b) * D, table + static_cast<int64_t>(indices[i]) * D, D);
  }
}

template <class Scalar, class Index>
void scatter_locked(Scalar* target, int64_t D, const Index* indices, int64_t b, int64_t e,
                    const Scalar* updates, RowLocks& locks) {
  for (int64_t i = b; i < e; ++i) {
    const int64_t r = static_cast<int64_t>(indices[i]);
    if (i + kPrefetch < e)
      prefetch_row(target + static_cast<int64_t>(indices[i + kPrefetch]) * D, D);
    std::atomic<uint32_t>& lock = locks.lock[lock_stripe(r)];
    while (lock.exchange(1, std::memory_order_acquire) != 0) {
      while (lock.load(std::memory_order_relaxed) != 0) cpu_relax();
    }
    add_row(target + r * D, updates + i * D, D);
    lock.store(0, std::memory_order_release);
  }
}

template <class Scalar, class Index>
void scatter_owned(Scalar* target, int64_t D, const Index* indices, int64_t n,
                   const Scalar* updates, int64_t lo, int64_t hi) {
  const auto width = static_cast<uint64_t>(hi - lo);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(indices[i]);
    if (static_cast<uint64_t>(r - lo) < width) add_row(target + r * D, updates + i * D, D);
  }
}

template <class Scalar, class Index>
constexpr Ops<Scalar, Index> make_ops() {
  return Ops<Scalar, Index>{&gather<Scalar, Index>, &scatter_locked<Scalar, Index>,
                            &scatter_owned<Scalar, Index>};
}

const Table kTable{make_ops<float, int32_t>(), make_ops<float, int64_t>(),
                   make_ops<double, int32_t>(), make_ops<double, int64_t>()};

}  // namespace

const Table& EMBTABLE_ISA_TABLE() noexcept { return kTable; }

}  // namespace embtable::kernels
