// The embedding_bag forward, written once and compiled per instruction set: a
// translation unit defines EMBTABLE_BAG_TABLE (the accessor's name) and includes
// this file. Internal linkage throughout, as in kernels_impl.hpp.
//
// Each bag's output row is pooled in a local block of kBlock columns that the
// compiler keeps in vector registers, and stored once; wider rows take several
// blocks (the rows are then in cache for the later ones).
#ifndef EMBTABLE_BAG_TABLE
#error "define EMBTABLE_BAG_TABLE before including bag_kernels_impl.hpp"
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bag_kernels.hpp"
#include "prefetch.hpp"

namespace embtable::kernels {
namespace {

constexpr int64_t kBlock = 64;  // columns pooled at once (256 B of float32)
// How far ahead ids are prefetched (the first block of their rows):
// BagArgs::prefetch_ids, from the machine's tuning (embedding_bag.cpp).

enum class Kind { sum, wsum, mean, max, max_arg };

template <class Scalar>
[[gnu::always_inline]] inline void prefetch_cols(const Scalar* row,
                                                 int64_t width) noexcept {
  prefetch_lines<0>(row, width * static_cast<int64_t>(sizeof(Scalar)));
}

// body(i) for i in [b, e); when `on`, the row of id i + ahead is prefetched first
// (`width` columns) while i + ahead < pf_end. Two loops, so the one with
// prefetches has no bounds test per id.
template <class Scalar, class Index, class Body>
inline void for_ids(const Scalar* table, int64_t D, const Index* idx, int64_t b,
                    int64_t e, bool on, int64_t ahead, int64_t pf_end, int64_t width,
                    const Body& body) noexcept {
  int64_t i = b;
  if (on && ahead > 0) {
    const int64_t mid = std::clamp(pf_end - ahead, b, e);
    for (; i < mid; ++i) {
      prefetch_cols(table + static_cast<int64_t>(idx[i + ahead]) * D, width);
      body(i);
    }
  }
  for (; i < e; ++i) body(i);
}

// 64-byte GCC vectors of values and of row ids of the same lane width: the max
// mode's compare-and-select of values and winners stays in registers (the
// plain array form became masked stores behind branches).
template <class Scalar>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float Values __attribute__((vector_size(64)));
  typedef int32_t Ids __attribute__((vector_size(64)));
  using Id = int32_t;
};
template <>
struct Lanes<double> {
  typedef double Values __attribute__((vector_size(64)));
  typedef int64_t Ids __attribute__((vector_size(64)));
  using Id = int64_t;
};

// Max with winners over a full block of kBlock columns, for row ids that fit
// Lanes<Scalar>::Id. Same semantics and bits as the max_arg branch of pool_block.
template <class Scalar, class Index>
inline void max_arg_block(const BagArgs<Scalar, Index>& a, int64_t s, int64_t e,
                          int64_t col, int64_t pf_end, Scalar* __restrict out,
                          int64_t* __restrict arg) noexcept {
  using L = Lanes<Scalar>;
  constexpr int64_t N = 64 / static_cast<int64_t>(sizeof(Scalar));  // lanes per vector
  constexpr size_t NV = static_cast<size_t>(kBlock / N);
  const int64_t D = a.D;
  const int64_t pad = a.padding_idx;
  const Index* idx = a.indices;
  const Scalar* table = a.table + col;
  const int64_t pf_ids = a.prefetch_ids;
  int64_t i = s;
  while (i < e && static_cast<int64_t>(idx[i]) == pad) ++i;
  if (i == e) {
    for (int64_t d = 0; d < kBlock; ++d) out[d] = Scalar(0), arg[d] = -1;
    return;
  }
  typename L::Values acc[NV];
  typename L::Ids win[NV];
  {
    const int64_t r = static_cast<int64_t>(idx[i]);
    const typename L::Ids rid = typename L::Ids{} + static_cast<typename L::Id>(r);
    for (size_t v = 0; v < NV; ++v) {
      std::memcpy(&acc[v], table + r * D + static_cast<int64_t>(v) * N, 64);
      win[v] = rid;
    }
  }
  for_ids(table, D, idx, i + 1, e, col == 0, pf_ids, pf_end, kBlock, [&](int64_t k) {
    const int64_t r = static_cast<int64_t>(idx[k]);
    if (r == pad) return;
    const typename L::Ids rid = typename L::Ids{} + static_cast<typename L::Id>(r);
    for (size_t v = 0; v < NV; ++v) {
      typename L::Values x;
      std::memcpy(&x, table + r * D + static_cast<int64_t>(v) * N, 64);
      const auto greater = x > acc[v];  // ties keep the first id in bag order
      acc[v] = greater ? x : acc[v];
      win[v] = greater ? rid : win[v];
    }
  });
  for (size_t v = 0; v < NV; ++v) {
    std::memcpy(out + static_cast<int64_t>(v) * N, &acc[v], 64);
    for (int64_t k = 0; k < N; ++k)
      arg[static_cast<int64_t>(v) * N + k] = static_cast<int64_t>(win[v][k]);
  }
}

// Pools positions [s, e) over columns [col, col + width) into out / arg.
// W > 0: the width is the compile-time constant W (== width).
template <Kind K, int64_t W, class Scalar, class Index>
inline void pool_block(const BagArgs<Scalar, Index>& a, int64_t s, int64_t e,
                       int64_t col, int64_t width, int64_t pf_end,
                       Scalar* __restrict out, int64_t* __restrict arg) noexcept {
  const int64_t w = W > 0 ? W : width;
  const int64_t D = a.D;
  const int64_t pad = a.padding_idx;
  const Index* idx = a.indices;
  const Scalar* table = a.table + col;
  const bool prefetch = col == 0;
  const int64_t pf_ids = a.prefetch_ids;
  Scalar acc[kBlock];
  if constexpr (K == Kind::max || K == Kind::max_arg) {
    int64_t win[K == Kind::max_arg ? kBlock : 1];
    int64_t i = s;
    while (i < e && static_cast<int64_t>(idx[i]) == pad) ++i;
    if (i == e) {  // empty, or only padding: zeros
      for (int64_t d = 0; d < w; ++d) out[d] = Scalar(0);
      if constexpr (K == Kind::max_arg)
        for (int64_t d = 0; d < w; ++d) arg[d] = -1;
      return;
    }
    // The first id seeds the block (a NaN there stays, as in PyTorch).
    {
      const int64_t r = static_cast<int64_t>(idx[i]);
      const Scalar* row = table + r * D;
      for (int64_t d = 0; d < w; ++d) acc[d] = row[d];
      if constexpr (K == Kind::max_arg)
        for (int64_t d = 0; d < w; ++d) win[d] = r;
    }
    for_ids(table, D, idx, i + 1, e, prefetch, pf_ids, pf_end, w, [&](int64_t k) {
      const int64_t r = static_cast<int64_t>(idx[k]);
      if (r == pad) return;
      const Scalar* row = table + r * D;
      for (int64_t d = 0; d < w; ++d) {
        const bool greater = row[d] > acc[d];  // ties keep the first id in bag order
        acc[d] = greater ? row[d] : acc[d];
        if constexpr (K == Kind::max_arg) win[d] = greater ? r : win[d];
      }
    });
    for (int64_t d = 0; d < w; ++d) out[d] = acc[d];
    if constexpr (K == Kind::max_arg)
      for (int64_t d = 0; d < w; ++d) arg[d] = win[d];
  } else {
    for (int64_t d = 0; d < w; ++d) acc[d] = Scalar(0);
    int64_t count = 0;
    for_ids(table, D, idx, s, e, prefetch, pf_ids, pf_end, w, [&](int64_t i) {
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r == pad) return;
      ++count;
      const Scalar* row = table + r * D;
      if constexpr (K == Kind::wsum) {
        const Scalar weight = a.weights[i];
        for (int64_t d = 0; d < w; ++d) acc[d] += weight * row[d];
      } else {
        for (int64_t d = 0; d < w; ++d) acc[d] += row[d];
      }
    });
    if constexpr (K == Kind::mean) {
      if (count > 0) {
        const auto c = static_cast<Scalar>(count);
        for (int64_t d = 0; d < w; ++d) acc[d] = acc[d] / c;
      }
    }
    for (int64_t d = 0; d < w; ++d) out[d] = acc[d];
  }
}

template <Kind K, class Scalar, class Index>
void forward_kind(const BagArgs<Scalar, Index>& a, int64_t b0, int64_t b1) {
  const int64_t D = a.D;
  const Bags& bags = *a.bags;
  const int64_t pf_end = bags.end(b1 - 1);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = bags.begin(b), e = bags.end(b);
    for (int64_t col = 0; col < D; col += kBlock) {
      const int64_t width = std::min(kBlock, D - col);
      Scalar* out = a.out + b * a.out_stride + col;
      int64_t* arg = K == Kind::max_arg ? a.argmax + b * D + col : nullptr;
      if constexpr (K == Kind::max_arg) {
        if (width == kBlock && a.narrow_argmax) {
          max_arg_block(a, s, e, col, pf_end, out, arg);
          continue;
        }
      }
      if (width == kBlock)
        pool_block<K, kBlock>(a, s, e, col, width, pf_end, out, arg);
      else
        pool_block<K, 0>(a, s, e, col, width, pf_end, out, arg);
    }
  }
}

template <class Scalar, class Index>
void forward(const BagArgs<Scalar, Index>& a, int64_t b0, int64_t b1) {
  switch (a.mode) {
    case BagMode::sum:
      if (a.weights)
        forward_kind<Kind::wsum>(a, b0, b1);
      else
        forward_kind<Kind::sum>(a, b0, b1);
      return;
    case BagMode::mean:
      forward_kind<Kind::mean>(a, b0, b1);
      return;
    case BagMode::max:
      if (a.argmax)
        forward_kind<Kind::max_arg>(a, b0, b1);
      else
        forward_kind<Kind::max>(a, b0, b1);
      return;
  }
}

const BagTable kBagTable{&forward<float, int32_t>, &forward<float, int64_t>,
                         &forward<double, int32_t>, &forward<double, int64_t>};

}  // namespace

const BagTable& EMBTABLE_BAG_TABLE() noexcept { return kBagTable; }

}  // namespace embtable::kernels
