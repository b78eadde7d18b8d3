// Internal: how far ahead the layer kernels (optimizers, RowGrad sums) prefetch
// rows read at random.
#pragma once

#include <algorithm>
#include <cstdint>

namespace embtable {

// Rows to prefetch ahead when each row brings `bytes_per_row` bytes of random
// reads: about kPrefetchBytes in flight, between 1 and 32 rows.
// TODO(tuning): the byte count from the machine's tuning once it exists.
inline int64_t prefetch_ahead(int64_t bytes_per_row) noexcept {
  constexpr int64_t kPrefetchBytes = 2048;
  return std::clamp<int64_t>(kPrefetchBytes / std::max<int64_t>(1, bytes_per_row), 1,
                             32);
}

}  // namespace embtable
