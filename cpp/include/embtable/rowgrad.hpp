// Row gradients (the sparse embedding backward): coalesce and merge.
//
// Coalesce, for n = prod(shape) ids and their per-id gradient rows:
//
//   rows   = sorted(set(indices) - {padding_idx})          (int64, unique)
//   for u, r in enumerate(rows):
//     values[u, :] = sum(grads[i, :] for i in [0, n) if indices[i] == r)   (in i order)
//
//   indices = [4, 1, 4, 0], padding_idx = 0 -> rows = [1, 4],
//   values = [grads[1], grads[0] + grads[2]]
//
// It is done in two steps so the caller can allocate `values` (U, D) in between:
// rowgrad_plan sorts the positions by id (a stable LSD radix sort, so each
// segment keeps index order) and rowgrad_sum adds each segment, in parallel
// over segments. Nothing proportional to V * D is ever allocated; the result is
// exact and independent of the thread count.
//
// Merge of two row gradients (a and b, each with sorted unique rows):
//
//   rows = sorted(set(a.rows) | set(b.rows))
//   values[r] = a.values[r] + b.values[r]   (a missing side counts as absent, not 0 +
//   x)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace embtable {

struct RowGradPlan {
  std::vector<int64_t> rows;    // unique ids, ascending (U)
  std::vector<int64_t> starts;  // U + 1 segment bounds into `order`
  std::vector<int64_t> order;   // positions into the flat index array, grouped by id
};

// Validates every index against [0, V) first (std::out_of_range naming the first
// bad one). padding_idx < 0 means none.
template <class Index>
RowGradPlan rowgrad_plan(const Index* indices, std::span<const int64_t> shape,
                         int64_t V, int64_t padding_idx);

// values[u, :] = sum of grads[order[k], :] for k in [starts[u], starts[u + 1]).
template <class Scalar>
void rowgrad_sum(const RowGradPlan& plan, const Scalar* grads, int64_t D,
                 Scalar* values);

// Scalar, single-threaded oracle of plan + sum (no validation): rows and values
// (U * D, row-major) of the coalesced gradient.
template <class Scalar, class Index>
void rowgrad_coalesce_ref(const Index* indices, int64_t n, const Scalar* grads,
                          int64_t D, int64_t padding_idx, std::vector<int64_t>& rows,
                          std::vector<Scalar>& values);

struct RowGradMergePlan {
  std::vector<int64_t> rows;    // union, ascending
  std::vector<int64_t> from_a;  // position in a.rows or -1
  std::vector<int64_t> from_b;  // position in b.rows or -1
};

// a and b must be strictly increasing (std::invalid_argument otherwise).
RowGradMergePlan rowgrad_merge_plan(const int64_t* a, int64_t na, const int64_t* b,
                                    int64_t nb);

template <class Scalar>
void rowgrad_merge_values(const RowGradMergePlan& plan, const Scalar* va,
                          const Scalar* vb, int64_t D, Scalar* out);

}  // namespace embtable
