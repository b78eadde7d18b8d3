// max_norm renorm of looked-up rows, in place (torch.embedding_renorm_):
//
//   for r in unique(indices):
//     norm = ||table[r, :]||_p              p = norm_type, as torch.norm:
//                                             inf: max |x|, -inf: min |x|,
//                                             0: the number of non-zeros,
//                                             else (sum |x|^p)^(1/p)
//     if norm > max_norm:
//       table[r, :] *= max_norm / (norm + 1e-7)
//
// Every index is checked before the first write; each row is rescaled once
// however often it appears. Parallel over the unique rows.
#pragma once

#include <cstdint>
#include <span>

namespace embtable {

template <class Scalar, class Index>
void embedding_renorm(Scalar* table, int64_t V, int64_t D, const Index* indices,
                      std::span<const int64_t> shape, double max_norm,
                      double norm_type);

// Scalar, single-threaded oracle (no validation).
template <class Scalar, class Index>
void embedding_renorm_ref(Scalar* table, int64_t D, const Index* indices, int64_t n,
                          double max_norm, double norm_type);

}  // namespace embtable
