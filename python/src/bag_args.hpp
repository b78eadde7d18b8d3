// Bag arguments shared by the single-table, quantized and multi-table bindings:
// the bag structure, padding_idx and per_sample_weights, checked as NumPy users
// expect (ValueError / TypeError naming the argument).
#pragma once

#include <optional>
#include <vector>

#include "checks.hpp"
#include "embtable/embedding_bag.hpp"

namespace embtable::binding {

// The bag structure of one call, with the arrays it points into kept alive.
struct BagInput {
  py::array indices;  // native int32/int64, C-contiguous
  IndexKind ik;
  std::vector<int64_t> index_shape;
  py::array offsets;  // int64 1-D or empty
  Bags bags;
};

// 2-D indices (offsets None) or 1-D indices + int64 offsets; ValueError otherwise.
BagInput bag_input(const py::array& indices, const py::object& offsets_obj,
                   bool include_last_offset);

// padding_idx as an int64 (-1 for None); ValueError outside [0, V).
int64_t padding_of(const py::object& padding_idx, int64_t V);

// per_sample_weights: float like `ref`, shaped like indices, mode sum; or none.
std::optional<py::array> weights_of(const py::object& w_obj, BagMode mode,
                                    const BagInput& in, const py::array& ref,
                                    const char* ref_name);

}  // namespace embtable::binding
