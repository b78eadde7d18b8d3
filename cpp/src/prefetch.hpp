// Internal: how far ahead the layer kernels (optimizers, RowGrad sums) prefetch
// rows read at random.
#pragma once

#include <algorithm>
#include <cstdint>

#include "embtable/tuning.hpp"

namespace embtable {

// Rows to prefetch ahead when each row brings `bytes_per_row` bytes of random
// reads: about tuning().prefetch_bytes in flight (a share of L1, so the lines
// are still there when used), between 1 and 32 rows.
inline int64_t prefetch_ahead(int64_t bytes_per_row) noexcept {
  return std::clamp<int64_t>(
      tuning().prefetch_bytes.value / std::max<int64_t>(1, bytes_per_row), 1, 32);
}

}  // namespace embtable
