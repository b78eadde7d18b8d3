// The one threading primitive of the core: parallel_for over a persistent pool.
//
// parallel_for(begin, end, grain, f) calls f(b, e) on disjoint sub-ranges that
// cover [begin, end), each at least `grain` long (but the last). Work of at most
// `grain` items, a pool of one thread, a call from inside a pool job (nesting),
// and a call made while another caller owns the pool all run inline on the
// calling thread, so a small call never pays a thread wake-up and concurrent
// callers never wait on each other. f must not throw (kernels validate first);
// an exception that escapes anyway is re-thrown on the calling thread.
#pragma once

#include <cstdint>
#include <string>

namespace embtable {

// Work below this many bytes of rows runs inline: a wake-up costs more than it saves.
inline constexpr int64_t kGrainBytes = 512 * 1024;

// Rows per task for rows of `row_bytes` bytes, never below 1.
inline int64_t grain_rows(int64_t row_bytes) noexcept {
  return row_bytes <= 0 ? int64_t{1 << 20} : (kGrainBytes + row_bytes - 1) / row_bytes;
}

int get_num_threads() noexcept;
// n >= 1, else std::invalid_argument. Takes effect at the next parallel call.
void set_num_threads(int n);
// CPUs this process may run on (sched_getaffinity), capped by a cgroup CPU
// quota if one is set (a fractional quota rounds up), at least 1.
int default_num_threads() noexcept;
// Parses the contents of a cgroup v2 `cpu.max` ("quota period" or "max period")
// into a CPU count (rounded up); 0 when there is no limit or it does not parse.
int cpus_from_cgroup_cpu_max(const std::string& contents) noexcept;

namespace detail {
using RangeFn = void (*)(const void* ctx, int64_t begin, int64_t end);
void parallel_run(int64_t begin, int64_t end, int64_t grain, RangeFn fn,
                  const void* ctx);
bool in_parallel_region() noexcept;
}  // namespace detail

template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  if (end - begin <= grain || get_num_threads() == 1 || detail::in_parallel_region()) {
    f(begin, end);
    return;
  }
  detail::parallel_run(
      begin, end, grain,
      [](const void* ctx, int64_t b, int64_t e) {
        (*static_cast<const F*>(ctx))(b, e);
      },
      &f);
}

}  // namespace embtable
