// Many tables in one call (FBGEMM's table-batched embedding bag):
//
//   col_t = D_0 + ... + D_{t-1}
//   for every table t and bag b in [0, B):
//     out[b, col_t : col_t + D_t] = embedding_bag(tables[t], indices[t], bags[t],
//                                                 mode, weights[t], padding_idx[t])[b]
//
// Each table is a float table (of the output's dtype) or a quantized one (float32
// output). Every table's padding_idx, weights and indices are checked before the
// first write; an error names the table ("tables[2]: index 9 at position (4,) is
// out of bounds for a table with 5 rows"). The (table, range of bags) work items
// run in one parallel pass; each output row block is computed by the same kernel
// as the single-table op, so the result is exactly the concatenation of the
// per-table calls, for every thread count.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "embtable/embedding_bag.hpp"
#include "embtable/quantized.hpp"

namespace embtable {

struct BagsTable {
  enum class Kind { f32, f64, quantized };
  Kind kind = Kind::f32;
  const void* table = nullptr;  // (V, D) float32 / float64, when not quantized
  QTable q;                     // when quantized
  int64_t V = 0;
  int64_t D = 0;
  const void* indices = nullptr;  // int32 or int64, index_shape
  bool indices_i64 = true;
  std::vector<int64_t> index_shape;
  Bags bags;  // bags.num_bags == B for every table
  const void* weights =
      nullptr;               // per_sample_weights of the output's dtype, or nullptr
  int64_t padding_idx = -1;  // < 0: none
};

// Scalar: the output dtype (float for quantized tables). out: (B, sum D_t).
template <class Scalar>
void embedding_bags(std::span<const BagsTable> tables, BagMode mode, Scalar* out);

// Scalar, single-threaded oracle (no validation): the per-table references.
template <class Scalar>
void embedding_bags_ref(std::span<const BagsTable> tables, BagMode mode, Scalar* out);

}  // namespace embtable
