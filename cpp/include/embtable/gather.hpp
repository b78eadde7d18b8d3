// Row gather (the embedding forward):
//
//   for i in [0, n):            n = prod(shape)
//     out[i, :] = table[indices[i], :]
//
// Every index is checked against [0, V) before the first write (std::out_of_range
// naming the first bad one). Rows are copied in parallel straight into `out`;
// the result is exact and independent of the thread count.
#pragma once

#include <cstdint>
#include <span>

namespace embtable {

template <class Scalar, class Index>
void gather(const Scalar* table, int64_t V, int64_t D, const Index* indices,
            std::span<const int64_t> shape, Scalar* out);

// Scalar, single-threaded oracle of gather (no validation).
template <class Scalar, class Index>
void gather_ref(const Scalar* table, int64_t D, const Index* indices, int64_t n,
                Scalar* out);

}  // namespace embtable
