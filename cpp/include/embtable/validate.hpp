// Index validation: one read-only pass before any write.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace embtable {

// Position (C order) of the first index outside [0, V), or -1 when all are valid.
// Parallel, but the answer is always the smallest bad position.
template <class Index>
int64_t find_first_bad_index(const Index* indices, int64_t n, int64_t V) noexcept;

// "index 10 at position (3, 1) is out of bounds for a table with 5 rows"
// `shape` is the index array's shape; `flat` the C-order position in it.
std::string index_error_message(const std::string& value,
                                std::span<const int64_t> shape, int64_t flat,
                                int64_t V);

// Throws std::out_of_range with index_error_message for the first bad index.
template <class Index>
void check_indices(const Index* indices, std::span<const int64_t> shape, int64_t V);

// Product of a shape's extents (the number of indices).
int64_t shape_size(std::span<const int64_t> shape) noexcept;

}  // namespace embtable
