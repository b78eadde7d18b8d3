// Internal: the one sort of the core's sparse gradients (RowGrad building, the bag's
// sparse backward). Values are packed (key << low_bits | position); positions are
// written in increasing order, so a stable sort of the key bits alone orders the
// values as wholes: each key's positions stay in index order.
#pragma once

#include <cstdint>

namespace embtable::radix {

// Sorts values[0, n) ascending by bits [low_bits, low_bits + key_bits) (the bits
// above must be zero), stably: a parallel LSD radix sort over chunks of the input,
// with digits sized to the L1 data cache, passes spread evenly over the key bits,
// and a pass skipped when every value falls in one bucket. Small inputs (fewer
// values than buckets) take std::sort of the whole values instead, the same
// result when positions ascend. `scratch` has room for n values. Returns the
// buffer that holds the result (values or scratch).
uint64_t* sort(uint64_t* values, uint64_t* scratch, int64_t n, int low_bits,
               int key_bits);

// Digit bits of a pass: tuning().radix_bits (counters in a quarter of L1).
int digit_bits() noexcept;

// Chunks to split n items of `item_bytes` into: one per thread when the work is
// worth a hand-off to the pool, else 1.
int64_t chunks(int64_t n, int64_t item_bytes) noexcept;

// Runs f(c) for chunk c in [0, parts) of a split of n items, each on one thread of
// the pool; chunk c covers [c * n / parts, (c + 1) * n / parts).
template <class F>
void for_chunks(int64_t parts, const F& f);

inline int bit_width(uint64_t x) noexcept {
  return x == 0 ? 0 : 64 - __builtin_clzll(x);
}

}  // namespace embtable::radix

#include "embtable/parallel.hpp"

template <class F>
void embtable::radix::for_chunks(int64_t parts, const F& f) {
  if (parts <= 1) {
    f(int64_t{0});
    return;
  }
  parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) f(c);
  });
}
