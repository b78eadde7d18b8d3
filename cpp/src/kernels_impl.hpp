// The hot loops, written once and compiled per instruction set: a translation
// unit defines EMBTABLE_ISA_TABLE (the accessor's name) and includes this file.
// Everything here has internal linkage, so no AVX-512 code can leak into a
// baseline caller through a shared inline symbol.
#ifndef EMBTABLE_ISA_TABLE
#error "define EMBTABLE_ISA_TABLE before including kernels_impl.hpp"
#endif

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "embtable/tuning.hpp"
#include "kernels.hpp"
#include "prefetch.hpp"

namespace embtable::kernels {
namespace {

// Rows are moved in 64-byte blocks through a GCC vector type: one zmm load or
// store per block in the AVX-512 unit, two ymm in AVX2, four xmm in baseline,
// from the same source. Elementwise adds only (no FMA, no reassociation): every
// level gives the bits of np.add.at.
// Loads and stores go through memcpy: rows need no alignment, and GCC turns a
// fixed 64-byte memcpy into unaligned vector moves.
typedef char Block __attribute__((vector_size(64)));
typedef float BlockF32 __attribute__((vector_size(64)));
typedef double BlockF64 __attribute__((vector_size(64)));
template <class Scalar>
struct VecOf;
template <>
struct VecOf<float> {
  using type = BlockF32;
};
template <>
struct VecOf<double> {
  using type = BlockF64;
};
template <class Scalar>
using VecBlock = typename VecOf<Scalar>::type;

template <class V>
inline V load(const void* p) noexcept {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
inline void store(void* p, const V& v) noexcept {
  __builtin_memcpy(p, &v, sizeof(V));
}

// Bytes of rows to have in flight ahead of the current one
// (tuning().prefetch_bytes, a share of L1): the prefetch distance in rows is
// this over the row size (clamped), so small rows look far ahead
// (latency-bound) and large rows do not flood the line-fill buffers.
inline int64_t prefetch_rows(int64_t row_bytes) noexcept {
  const int64_t bytes = tuning().prefetch_bytes.value;
  if (bytes <= 0) return 0;  // prefetch off (set_tuned("prefetch_bytes", 0))
  const int64_t d = bytes / (row_bytes > 0 ? row_bytes : 1);
  return d < 4 ? 4 : (d > 32 ? 32 : d);
}

// RB: row bytes when known at compile time (the fast paths), 0 for any size.
// Every line the row touches, also when it does not start a line (prefetch.hpp).
template <int RB, int RW>
[[gnu::always_inline]] inline void prefetch_row(const void* row, int64_t rb) noexcept {
  prefetch_lines<RW>(row, RB ? RB : rb);
}

template <int RB>
inline void copy_row(void* __restrict dst, const void* __restrict src,
                     int64_t rb) noexcept {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  const int64_t bytes = RB ? RB : rb;
  int64_t off = 0;
  for (; off + 64 <= bytes; off += 64) store(d + off, load<Block>(s + off));
  if constexpr (RB == 0 || RB % 64 != 0) {
    if (off < bytes) {
      if (bytes >= 64) {  // one overlapping block finishes the row
        store(d + bytes - 64, load<Block>(s + bytes - 64));
      } else {
        __builtin_memcpy(d + off, s + off, static_cast<size_t>(bytes - off));
      }
    }
  }
}

template <int RB, class Scalar>
inline void add_row(Scalar* __restrict dst, const Scalar* __restrict src,
                    int64_t D) noexcept {
  constexpr int64_t W = 64 / sizeof(Scalar);
  const int64_t n = RB ? RB / static_cast<int64_t>(sizeof(Scalar)) : D;
  int64_t d = 0;
  for (; d + W <= n; d += W) {
    using Vec = VecBlock<Scalar>;
    store(dst + d, load<Vec>(dst + d) + load<Vec>(src + d));
  }
  if constexpr (RB == 0 || RB % 64 != 0) {
    for (; d < n; ++d) dst[d] += src[d];
  }
}

#if defined(__SSE2__)
// Streaming (non-temporal) row copy for outputs too large to stay in cache:
// 16-byte stores that skip the read-for-ownership of every output line, which
// halves the memory traffic of a write-bound gather (measured 1.2-2x here).
// Needs 16-byte aligned rows.
template <int RB>
inline void stream_row(void* __restrict dst, const void* __restrict src) noexcept {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  for (int off = 0; off < RB; off += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + off),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + off)));
}

template <int RB, class Scalar, class Index>
void gather_rows_stream(const Scalar* table, int64_t D, const Index* indices, int64_t b,
                        int64_t e, Scalar* out) {
  const int64_t ahead = prefetch_rows(RB);
  int64_t i = b;
  for (; i + ahead < e; ++i) {
    prefetch_row<RB, 0>(table + static_cast<int64_t>(indices[i + ahead]) * D, RB);
    stream_row<RB>(out + (i - b) * D, table + static_cast<int64_t>(indices[i]) * D);
  }
  for (; i < e; ++i)
    stream_row<RB>(out + (i - b) * D, table + static_cast<int64_t>(indices[i]) * D);
  _mm_sfence();  // streaming stores are weakly ordered: drain them before the join
}
#endif

template <int RB, class Scalar, class Index>
void gather_rows(const Scalar* table, int64_t D, const Index* indices, int64_t b,
                 int64_t e, Scalar* out) {
  const int64_t rb = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t ahead = prefetch_rows(rb);
  int64_t i = b;
  for (; i + ahead < e; ++i) {
    prefetch_row<RB, 0>(table + static_cast<int64_t>(indices[i + ahead]) * D, rb);
    copy_row<RB>(out + (i - b) * D, table + static_cast<int64_t>(indices[i]) * D, rb);
  }
  for (; i < e; ++i)
    copy_row<RB>(out + (i - b) * D, table + static_cast<int64_t>(indices[i]) * D, rb);
}

template <class Scalar, class Index>
void gather(const Scalar* table, int64_t D, const Index* indices, int64_t b, int64_t e,
            Scalar* out) {
  switch (D * static_cast<int64_t>(sizeof(Scalar))) {
    case 64:
      return gather_rows<64>(table, D, indices, b, e, out);
    case 128:
      return gather_rows<128>(table, D, indices, b, e, out);
    case 256:
      return gather_rows<256>(table, D, indices, b, e, out);
    case 512:
      return gather_rows<512>(table, D, indices, b, e, out);
    case 1024:
      return gather_rows<1024>(table, D, indices, b, e, out);
    default:
      return gather_rows<0>(table, D, indices, b, e, out);
  }
}

template <class Scalar, class Index>
void gather_stream(const Scalar* table, int64_t D, const Index* indices, int64_t b,
                   int64_t e, Scalar* out) {
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(out) & 15) == 0) {
    switch (D * static_cast<int64_t>(sizeof(Scalar))) {
      case 64:
        return gather_rows_stream<64>(table, D, indices, b, e, out);
      case 128:
        return gather_rows_stream<128>(table, D, indices, b, e, out);
      case 256:
        return gather_rows_stream<256>(table, D, indices, b, e, out);
      case 512:
        return gather_rows_stream<512>(table, D, indices, b, e, out);
      case 1024:
        return gather_rows_stream<1024>(table, D, indices, b, e, out);
      default:
        break;
    }
  }
#endif
  gather(table, D, indices, b, e, out);
}

template <int RB, class Scalar, class Index>
void scatter_locked_rows(Scalar* target, int64_t D, const Index* indices, int64_t b,
                         int64_t e, const Scalar* updates, RowLocks& locks) {
  const int64_t rb = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t ahead = prefetch_rows(rb);
  for (int64_t i = b; i < e;) {
    const int64_t r = static_cast<int64_t>(indices[i]);
    if (i + ahead < e) {
      prefetch_row<RB, 1>(target + static_cast<int64_t>(indices[i + ahead]) * D, rb);
      prefetch_row<RB, 0>(updates + (i + ahead) * D, rb);
    }
    std::atomic<uint32_t>& lock = locks.lock[lock_stripe(r)].v;
    row_lock(lock);
    // A run of equal ids (hot rows, sorted input) takes the lock once.
    do {
      add_row<RB>(target + r * D, updates + i * D, D);
      ++i;
    } while (i < e && static_cast<int64_t>(indices[i]) == r);
    row_unlock(lock);
  }
}

template <class Scalar, class Index>
void scatter_locked(Scalar* target, int64_t D, const Index* indices, int64_t b,
                    int64_t e, const Scalar* updates, RowLocks& locks) {
  switch (D * static_cast<int64_t>(sizeof(Scalar))) {
    case 64:
      return scatter_locked_rows<64>(target, D, indices, b, e, updates, locks);
    case 128:
      return scatter_locked_rows<128>(target, D, indices, b, e, updates, locks);
    case 256:
      return scatter_locked_rows<256>(target, D, indices, b, e, updates, locks);
    case 512:
      return scatter_locked_rows<512>(target, D, indices, b, e, updates, locks);
    case 1024:
      return scatter_locked_rows<1024>(target, D, indices, b, e, updates, locks);
    default:
      return scatter_locked_rows<0>(target, D, indices, b, e, updates, locks);
  }
}

// All rows (one owner): a straight walk in index order with prefetch.
template <int RB, class Scalar, class Index>
void scatter_all_rows(Scalar* target, int64_t D, const Index* indices, int64_t n,
                      const Scalar* updates) {
  const int64_t rb = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t ahead = prefetch_rows(rb);
  int64_t i = 0;
  for (; i + ahead < n; ++i) {
    prefetch_row<RB, 1>(target + static_cast<int64_t>(indices[i + ahead]) * D, rb);
    add_row<RB>(target + static_cast<int64_t>(indices[i]) * D, updates + i * D, D);
  }
  for (; i < n; ++i)
    add_row<RB>(target + static_cast<int64_t>(indices[i]) * D, updates + i * D, D);
}

// Rows in [lo, hi) only. The indices are walked in blocks: a branchless pass
// lists the block's positions this owner keeps (no mispredicted branch per id
// when owners interleave), then their rows are added in order with prefetch.
template <int RB, class Scalar, class Index>
void scatter_owned_rows(Scalar* target, int64_t D, const Index* indices, int64_t n,
                        const Scalar* updates, int64_t lo, int64_t hi) {
  const int64_t rb = D * static_cast<int64_t>(sizeof(Scalar));
  const int64_t ahead = prefetch_rows(rb);
  const auto width = static_cast<uint64_t>(hi - lo);
  constexpr int64_t kBlock = 1024;
  uint32_t keep[kBlock];
  for (int64_t base = 0; base < n; base += kBlock) {
    const int64_t m = n - base < kBlock ? n - base : kBlock;
    const Index* blk = indices + base;
    int64_t k = 0;
    for (int64_t j = 0; j < m; ++j) {
      keep[k] = static_cast<uint32_t>(j);
      k += static_cast<uint64_t>(static_cast<int64_t>(blk[j]) - lo) < width;
    }
    int64_t q = 0;
    for (; q + ahead < k; ++q) {
      const int64_t pa = base + keep[q + ahead];
      prefetch_row<RB, 1>(target + static_cast<int64_t>(indices[pa]) * D, rb);
      prefetch_row<RB, 0>(updates + pa * D, rb);
      const int64_t p = base + keep[q];
      add_row<RB>(target + static_cast<int64_t>(indices[p]) * D, updates + p * D, D);
    }
    for (; q < k; ++q) {
      const int64_t p = base + keep[q];
      add_row<RB>(target + static_cast<int64_t>(indices[p]) * D, updates + p * D, D);
    }
  }
}

template <int RB, class Scalar, class Index>
void scatter_owned_any(Scalar* target, int64_t D, const Index* indices, int64_t n,
                       const Scalar* updates, int64_t lo, int64_t hi, int64_t V) {
  if (lo <= 0 && hi >= V) return scatter_all_rows<RB>(target, D, indices, n, updates);
  scatter_owned_rows<RB>(target, D, indices, n, updates, lo, hi);
}

template <class Scalar, class Index>
void scatter_owned(Scalar* target, int64_t D, const Index* indices, int64_t n,
                   const Scalar* updates, int64_t lo, int64_t hi, int64_t V) {
  switch (D * static_cast<int64_t>(sizeof(Scalar))) {
    case 64:
      return scatter_owned_any<64>(target, D, indices, n, updates, lo, hi, V);
    case 128:
      return scatter_owned_any<128>(target, D, indices, n, updates, lo, hi, V);
    case 256:
      return scatter_owned_any<256>(target, D, indices, n, updates, lo, hi, V);
    case 512:
      return scatter_owned_any<512>(target, D, indices, n, updates, lo, hi, V);
    case 1024:
      return scatter_owned_any<1024>(target, D, indices, n, updates, lo, hi, V);
    default:
      return scatter_owned_any<0>(target, D, indices, n, updates, lo, hi, V);
  }
}

// Position of the first index outside [0, V) in [b, e), or -1. Branch-free
// blocks: x is valid iff x >= 0 and V - 1 - x >= 0, i.e. iff the sign bit of
// (x | (V - 1 - x)) is clear, which vectorises at every level (or, sub).
template <class Index>
int64_t first_bad(const Index* indices, int64_t b, int64_t e, int64_t V) noexcept {
  if (V <= 0) return b < e ? b : -1;
  // An Index cannot exceed its own maximum: clamp V so V - 1 fits in Index.
  constexpr auto kMax = static_cast<int64_t>(std::numeric_limits<Index>::max());
  const auto last = static_cast<Index>(V - 1 > kMax ? kMax : V - 1);
  constexpr int64_t kBlock = 1024;
  for (int64_t base = b; base < e; base += kBlock) {
    const int64_t end = e - base < kBlock ? e : base + kBlock;
    // Unsigned arithmetic: wraps instead of overflowing for very negative ids.
    using U = std::make_unsigned_t<Index>;
    U acc = 0;
    for (int64_t i = base; i < end; ++i) {
      const auto x = static_cast<U>(indices[i]);
      acc |= x | static_cast<U>(static_cast<U>(last) - x);
    }
    if (acc >> (sizeof(U) * 8 - 1)) {
      for (int64_t i = base; i < end; ++i)
        if (indices[i] < 0 || indices[i] > last) return i;
    }
  }
  return -1;
}

template <class Scalar, class Index>
constexpr Ops<Scalar, Index> make_ops() {
  return Ops<Scalar, Index>{&gather<Scalar, Index>, &scatter_locked<Scalar, Index>,
                            &scatter_owned<Scalar, Index>,
                            &gather_stream<Scalar, Index>, &first_bad<Index>};
}

const Table kTable{make_ops<float, int32_t>(), make_ops<float, int64_t>(),
                   make_ops<double, int32_t>(), make_ops<double, int64_t>()};

}  // namespace

const Table& EMBTABLE_ISA_TABLE() noexcept { return kTable; }

}  // namespace embtable::kernels
