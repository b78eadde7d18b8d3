#include "embtable/prefetch.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

namespace embtable {

int64_t page_size() noexcept {
  static const int64_t ps = [] {
    const long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<int64_t>(v) : int64_t{4096};
  }();
  return ps;
}

namespace {

struct Run {
  int64_t first;  // page number relative to the aligned base
  int64_t count;
};

// Runs of adjacent pages from sorted unique page numbers:
// pages = [3, 4, 5, 9, 11, 12] -> runs (3, 3), (9, 1), (11, 2)
std::vector<Run> runs_of(const std::vector<int64_t>& pages) {
  std::vector<Run> runs;
  for (int64_t p : pages) {
    if (!runs.empty() && runs.back().first + runs.back().count == p)
      ++runs.back().count;
    else
      runs.push_back({p, 1});
  }
  return runs;
}

// Keeps only the pages not in the page cache. One mincore over the whole span when
// it is dense enough, else one call per run (a sparse span would need a byte per
// page of the whole table).
std::vector<int64_t> cold_pages(const char* base, const std::vector<int64_t>& pages) {
  const int64_t ps = page_size();
  std::vector<int64_t> cold;
  if (pages.empty()) return cold;
  const int64_t span = pages.back() - pages.front() + 1;
  std::vector<unsigned char> vec;
  auto query = [&](int64_t first, int64_t count) -> bool {
    vec.resize(static_cast<size_t>(count));
    void* addr = const_cast<char*>(base + first * ps);
    return mincore(addr, static_cast<size_t>(count * ps), vec.data()) == 0;
  };
  if (span <= 16 * static_cast<int64_t>(pages.size())) {
    if (!query(pages.front(), span)) return pages;  // unknown: read them all
    for (int64_t p : pages)
      if (!(vec[static_cast<size_t>(p - pages.front())] & 1)) cold.push_back(p);
    return cold;
  }
  for (const Run& r : runs_of(pages)) {
    if (!query(r.first, r.count)) {
      for (int64_t k = 0; k < r.count; ++k) cold.push_back(r.first + k);
      continue;
    }
    for (int64_t k = 0; k < r.count; ++k)
      if (!(vec[static_cast<size_t>(k)] & 1)) cold.push_back(r.first + k);
  }
  return cold;
}

}  // namespace

template <class Index>
PrefetchStats prefetch_rows(const void* table, int64_t V, int64_t row_bytes,
                            const Index* indices, int64_t n, PrefetchMethod method,
                            int64_t io_threads) {
  PrefetchStats stats;
  if (n <= 0 || V <= 0 || row_bytes <= 0) return stats;
  const int64_t ps = page_size();
  const auto addr = reinterpret_cast<uintptr_t>(table);
  const uintptr_t aligned = addr - addr % static_cast<uintptr_t>(ps);
  const int64_t lead = static_cast<int64_t>(addr - aligned);
  const char* base = reinterpret_cast<const char*>(aligned);

  std::vector<int64_t> pages;
  pages.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = static_cast<int64_t>(indices[i]);
    if (id < 0 || id >= V) continue;  // the kernel raises for it
    const int64_t begin = lead + id * row_bytes;
    const int64_t last = (begin + row_bytes - 1) / ps;
    for (int64_t p = begin / ps; p <= last; ++p) pages.push_back(p);
  }
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  stats.pages = static_cast<int64_t>(pages.size());

  const std::vector<int64_t> cold = cold_pages(base, pages);
  stats.cold = static_cast<int64_t>(cold.size());
  if (cold.empty()) return stats;

  if (method == PrefetchMethod::willneed) {
    for (const Run& r : runs_of(cold)) {
      void* a = const_cast<char*>(base + r.first * ps);
      // Advice only: a failure leaves the fault path to read the page.
      (void)madvise(a, static_cast<size_t>(r.count * ps), MADV_WILLNEED);
      ++stats.issued;
    }
    return stats;
  }

  // threads: each touches every T-th cold page, so T faults are in flight at once.
  const int64_t T = std::clamp<int64_t>(io_threads, 1, stats.cold);
  auto touch = [&](int64_t t) {
    for (int64_t k = t; k < stats.cold; k += T) {
      const volatile char* c = base + cold[static_cast<size_t>(k)] * ps;
      (void)*c;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(T - 1));
  try {
    for (int64_t t = 1; t < T; ++t) pool.emplace_back(touch, t);
  } catch (const std::system_error&) {
    // Fewer threads than asked for (a thread limit): the ones started and the
    // calling thread still cover every page, since each page belongs to one t.
  }
  const int64_t started = static_cast<int64_t>(pool.size()) + 1;
  // Pages of threads that could not start: the calling thread touches them.
  for (int64_t t = started; t < T; ++t) touch(t);
  touch(0);
  for (auto& th : pool) th.join();
  stats.issued = stats.cold;
  return stats;
}

std::string mapped_file(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  FILE* f = std::fopen("/proc/self/maps", "re");
  if (f == nullptr) return "";
  std::string result;
  char line[4096 + 256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    // 7f00-7f10 r--s 00000000 fd:01 1234   /path/to/file
    uintptr_t lo = 0, hi = 0;
    unsigned long long inode = 0;
    int path_at = 0;
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %*s %*s %*s %llu %n", &lo, &hi,
                    &inode, &path_at) < 3)
      continue;
    if (addr < lo || addr >= hi) continue;
    if (inode != 0 && path_at > 0 && line[path_at] == '/') {
      result = line + path_at;
      while (!result.empty() && (result.back() == '\n' || result.back() == '\r'))
        result.pop_back();
      // A file deleted while mapped stays mapped (and file-backed).
    }
    break;
  }
  std::fclose(f);
  return result;
}

int64_t resident_pages(const void* p, int64_t nbytes) {
  if (nbytes <= 0) return 0;
  const int64_t ps = page_size();
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = addr - addr % static_cast<uintptr_t>(ps);
  const int64_t len = nbytes + static_cast<int64_t>(addr - aligned);
  std::vector<unsigned char> vec(static_cast<size_t>((len + ps - 1) / ps));
  if (mincore(reinterpret_cast<void*>(aligned), static_cast<size_t>(len), vec.data()) !=
      0)
    throw std::invalid_argument(std::string("mincore failed: ") + std::strerror(errno));
  int64_t count = 0;
  for (unsigned char v : vec) count += v & 1;
  return count;
}

template PrefetchStats prefetch_rows<int32_t>(const void*, int64_t, int64_t,
                                              const int32_t*, int64_t, PrefetchMethod,
                                              int64_t);
template PrefetchStats prefetch_rows<int64_t>(const void*, int64_t, int64_t,
                                              const int64_t*, int64_t, PrefetchMethod,
                                              int64_t);

}  // namespace embtable
