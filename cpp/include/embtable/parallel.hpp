// The one threading primitive of the core: parallel_for over a persistent pool.
//
// parallel_for(begin, end, grain, f) calls f(b, e) on disjoint sub-ranges that
// cover [begin, end), each at least `grain / 4` long (but the last): the pool is
// worth waking for more than `grain` items, and pieces a quarter of that let a
// worker that arrives late (or is preempted) hold up the caller for little. Work
// of at most `grain` items, a pool of one thread, a call from inside a pool job
// (nesting), and a call made while another caller owns the pool all run inline on the
// calling thread, so a small call never pays a thread wake-up and concurrent
// callers never wait on each other. f must not throw (kernels validate first);
// an exception that escapes anyway is re-thrown on the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "embtable/tuning.hpp"

namespace embtable {

// The grain: grain_rows(row_bytes) in tuning.hpp (tuning().parallel_bytes of rows).

// The threads parallel_for uses: the caller plus the pool's workers. After a
// failed thread creation this is what the pool really has.
int get_num_threads() noexcept;
// 1 <= n <= max_threads(), else std::invalid_argument naming the limit. The pool
// is resized at the next parallel call (or by ensure_threads()).
void set_num_threads(int n);
// The largest accepted thread count: 4 per online CPU, at least 64 (more
// threads than that only oversubscribe the cores).
int max_threads() noexcept;
// Builds the pool for get_num_threads() now (blocks while another caller owns
// it). When the system refuses some threads (a pids limit, RLIMIT_NPROC), the
// pool keeps those it got and get_num_threads() drops to match; returns the
// thread count. Never throws for a failed thread creation.
int ensure_threads();
// Set when a thread creation failed since the last call; cleared by the read.
// {requested, obtained, error message}.
struct ThreadShortfall {
  int requested = 0;
  int obtained = 0;
  std::string error;
};
bool take_thread_shortfall(ThreadShortfall& out);
// CPUs this process may run on (sched_getaffinity), capped by a cgroup CPU
// quota if one is set (a fractional quota rounds up), at least 1.
int default_num_threads() noexcept;
// Parses the contents of a cgroup v2 `cpu.max` ("quota period" or "max period")
// into a CPU count (rounded up); 0 when there is no limit or it does not parse.
int cpus_from_cgroup_cpu_max(const std::string& contents) noexcept;
// The CPU quota of this process's cgroup given the cgroup filesystem's mount point
// (`/sys/fs/cgroup`) and the contents of /proc/self/cgroup: the smallest quota of
// its cgroup and every ancestor (cgroup v2 `cpu.max`; without any, cgroup v1
// `cpu/cpu.cfs_quota_us`), rounded up; 0 when none is set.
int cpus_from_cgroup(const std::string& root,
                     const std::string& proc_self_cgroup) noexcept;

namespace detail {
using RangeFn = void (*)(const void* ctx, int64_t begin, int64_t end);
void parallel_run(int64_t begin, int64_t end, int64_t grain, RangeFn fn,
                  const void* ctx);
bool in_parallel_region() noexcept;
// The steady clock in nanoseconds (the pool's probes and the calibrations).
inline int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
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
