// Internal: how far ahead the kernels prefetch rows read at random, and the
// prefetch of one row's lines.
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

// Every cache line of [p, p + bytes) (RW: 0 to read, 1 to write), also when p
// does not start a line. NumPy's large arrays start 16 bytes into a line
// (malloc's header at the front of an mmap), so a 64-byte row spans two lines
// and a 256-byte row five: one prefetch per 64 bytes from the row's start would
// leave the row's last line to a demand miss (1.35x slower gathers of 64-byte
// rows from DRAM, measured). The count depends on `bytes` only, not on where
// the row starts: a loop over the lines actually touched would mispredict its
// exit on every other row.
//
// Always inlined, and so must be every helper that wraps it: GCC's IPA finds a
// function made only of prefetches free of side effects ("const"), and deletes
// every call of it that was not inlined (`-fdump-ipa-pure-const` shows it).
// That silently removed all the prefetches of the optimizer kernels, whose
// large loop body did not inline their helper (and most likely those of a
// quantized-bag variant tried earlier). After changing any of them, count
// them: `objdump -d obj.o | grep -cE '\sprefetch'`.
template <int RW = 0>
[[gnu::always_inline]] inline void prefetch_lines(const void* p,
                                                  int64_t bytes) noexcept {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, RW, 3);
  if (bytes > 0) __builtin_prefetch(c + (bytes - 1), RW, 3);
}

}  // namespace embtable
