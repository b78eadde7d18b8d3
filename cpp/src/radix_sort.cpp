#include "radix_sort.hpp"

#include <algorithm>
#include <vector>

#include "embtable/parallel.hpp"
#include "embtable/tuning.hpp"

namespace embtable::radix {

int digit_bits() noexcept {
  return static_cast<int>(std::clamp<int64_t>(tuning().radix_bits.value, 1, 16));
}

int64_t chunks(int64_t n, int64_t item_bytes) noexcept {
  const int threads = get_num_threads();
  if (threads <= 1 || n <= 0) return 1;
  const int64_t g = grain_rows(item_bytes);
  return std::clamp<int64_t>(n / std::max<int64_t>(g, 1), 1, threads);
}

uint64_t* sort(uint64_t* values, uint64_t* scratch, int64_t n, int low_bits,
               int key_bits) {
  if (n <= 1 || key_bits <= 0) return values;
  const int max_digit = digit_bits();
  const int passes = (key_bits + max_digit - 1) / max_digit;
  const int digit = (key_bits + passes - 1) / passes;
  const int64_t buckets = int64_t{1} << digit;
  if (n < buckets) {
    std::sort(values, values + n);
    return values;
  }
  const uint64_t mask = static_cast<uint64_t>(buckets - 1);
  // Each pass reads and writes 8 bytes per value.
  const int64_t parts = chunks(n, 16);
  std::vector<int64_t> count(static_cast<size_t>(parts * buckets));
  uint64_t* src = values;
  uint64_t* dst = scratch;
  for (int p = 0; p < passes; ++p) {
    const int shift = low_bits + p * digit;
    std::fill(count.begin(), count.end(), 0);
    for_chunks(parts, [&](int64_t c) {
      int64_t* cnt = count.data() + c * buckets;
      const int64_t b = c * n / parts, e = (c + 1) * n / parts;
      for (int64_t i = b; i < e; ++i) ++cnt[(src[i] >> shift) & mask];
    });
    // Offsets: bucket-major, chunk-minor (chunk c's values of a bucket follow
    // those of chunks before it: stable).
    int64_t sum = 0;
    bool one_bucket = false;
    for (int64_t k = 0; k < buckets; ++k) {
      int64_t here = 0;
      for (int64_t c = 0; c < parts; ++c) {
        int64_t& v = count[static_cast<size_t>(c * buckets + k)];
        const int64_t x = v;
        v = sum + here;
        here += x;
      }
      one_bucket |= here == n;
      sum += here;
    }
    if (one_bucket) continue;  // this digit is the same for all: nothing moves
    for_chunks(parts, [&](int64_t c) {
      int64_t* off = count.data() + c * buckets;
      const int64_t b = c * n / parts, e = (c + 1) * n / parts;
      for (int64_t i = b; i < e; ++i) {
        const uint64_t v = src[i];
        dst[off[(v >> shift) & mask]++] = v;
      }
    });
    std::swap(src, dst);
  }
  return src;
}

}  // namespace embtable::radix
