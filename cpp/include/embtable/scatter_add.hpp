// Row scatter-add (the embedding backward), in place on `target`:
//
//   for i in [0, n):            n = prod(shape), in this order
//     target[indices[i], :] += updates[i, :]
//
// deterministic = true: each row owned by one thread (row ranges cut at sampled
//   quantiles of the ids), its updates added in index order: bitwise identical
//   to np.add.at for every thread count.
// deterministic = false: the same owners when they balance (no atomics, and the
//   result is then bitwise np.add.at too); when a hot row leaves one owner more
//   than 1.5x its share, or beyond 8 threads, threads split the indices instead
//   and each run of equal ids holds a striped row lock around vector adds (unless
//   rows are so hot that the threads would mostly wait on the same locks: the
//   owners then, which are never slower than deterministic=True). Row
//   sums are then exact up to summation order, which may vary between runs.
// Every index is checked before the first write. Concurrent calls whose targets
// overlap run one after the other (as np.add.at under the GIL).
#pragma once

#include <cstdint>
#include <span>

namespace embtable {

template <class Scalar, class Index>
void scatter_add(Scalar* target, int64_t V, int64_t D, const Index* indices,
                 std::span<const int64_t> shape, const Scalar* updates,
                 bool deterministic);

// Scalar, single-threaded oracle (np.add.at semantics, no validation).
template <class Scalar, class Index>
void scatter_add_ref(Scalar* target, int64_t D, const Index* indices, int64_t n,
                     const Scalar* updates);

// tuning().owner_scan_bytes measured now on the current threads (0 with one
// thread): the owners' and the inline scatter of the same 65,536 ids into
// 64-byte rows, the best of 9 calls of each, in turn. About 4 ms.
int64_t calibrate_owner_scan_bytes();

// Holds the byte range [begin, end) exclusively for the guard's lifetime: a
// writer whose range overlaps a held one waits. Used by every in-place op.
class RangeGuard {
 public:
  RangeGuard(const void* begin, const void* end);
  ~RangeGuard();
  RangeGuard(const RangeGuard&) = delete;
  RangeGuard& operator=(const RangeGuard&) = delete;

 private:
  uintptr_t begin_, end_;
};

}  // namespace embtable
