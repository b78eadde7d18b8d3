// Read-ahead for tables that are file-backed mappings (np.memmap):
//
//   pages = sorted unique { page p : p holds a byte of table[indices[i], :] }
//   cold  = { p in pages : p is not in the page cache }          (mincore)
//   issue the reads of `cold` at once, so the device sees a deep queue instead of
//   one synchronous page fault per thread:
//     willneed: madvise(MADV_WILLNEED) per run of adjacent cold pages (the kernel
//               queues the reads and returns; the gather that follows waits on them)
//     threads:  `io_threads` threads touch the cold pages (one blocking fault each,
//               so `io_threads` reads in flight), joined before returning
//
// Nothing is written and nothing is copied; ids outside [0, V) are skipped (the
// kernel that follows raises for them). The output order of that kernel is
// untouched: this only warms the page cache.
#pragma once

#include <cstdint>
#include <string>

namespace embtable {

enum class PrefetchMethod { willneed, threads };

struct PrefetchStats {
  int64_t pages = 0;   // distinct pages the ids touch
  int64_t cold = 0;    // of those, not resident before the call
  int64_t issued = 0;  // read requests issued (runs for willneed, pages for threads)
};

// Row pages of the ids, deduplicated, cold ones read ahead (see above).
// `table` is the first byte of row 0; rows are `row_bytes` apart.
template <class Index>
PrefetchStats prefetch_rows(const void* table, int64_t V, int64_t row_bytes,
                            const Index* indices, int64_t n, PrefetchMethod method,
                            int64_t io_threads);

// The path of the file mapped at address p (from /proc/self/maps), or "" when p is
// anonymous memory (heap, stack, anonymous mmap) or not mapped.
std::string mapped_file(const void* p);

// Pages of [p, p + nbytes) that are resident in the page cache (mincore).
int64_t resident_pages(const void* p, int64_t nbytes);

int64_t page_size() noexcept;

}  // namespace embtable
