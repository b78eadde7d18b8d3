// Internal: how far ahead the layer kernels (optimizers, RowGrad sums) prefetch
// rows read at random.
#pragma once

#include <algorithm>
#include <cstdint>

#include "embtable/tuning.hpp"

namespace embtable {

// Rows to prefetch ahead when each row brings `bytes_per_row` bytes of random
// reads: about `budget` bytes in flight (tuning().prefetch_bytes by default, a
// share of L1, so the lines are still there when used), between 1 and 32 rows;
// 0 (no prefetch) when the budget is 0.
inline int64_t prefetch_ahead(int64_t bytes_per_row, int64_t budget) noexcept {
  if (budget <= 0) return 0;
  return std::clamp<int64_t>(budget / std::max<int64_t>(1, bytes_per_row), 1, 32);
}
inline int64_t prefetch_ahead(int64_t bytes_per_row) noexcept {
  return prefetch_ahead(bytes_per_row, tuning().prefetch_bytes.value);
}

}  // namespace embtable
