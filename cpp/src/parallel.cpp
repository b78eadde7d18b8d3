// A persistent pool behind parallel_for. One job at a time owns the pool; the
// caller starts on the job at once and the workers join as they arrive, each
// claiming chunks until none are left, so a late worker delays nobody.
// Each thread first claims chunks from its own home segment of the range (the
// caller the first, worker k the (k+1)-th), then from the others': calls that
// repeat the same range split it the same way when every thread is on time, so
// the rows each thread touched last time are still in its own L1/L2 (as
// OpenMP's static schedule gives numba and torch), while a late thread's
// segment is still taken over chunk by chunk.
// Between jobs a worker spins for about as long as the recent gaps between jobs
// (capped by tuning().spin_ns), then parks on a condition variable: back-to-back
// calls and a training loop's calls ~1 ms apart find it awake; an idle process
// does not burn a core.
// Fork-safe: the child drops the parent's pool (its threads do not exist there)
// and builds a new one on first use. A thread the system refuses to create
// leaves a smaller working pool, never an abort.
#include "embtable/parallel.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "embtable/scatter_add.hpp"

namespace embtable {
namespace {

struct Job {
  detail::RangeFn fn = nullptr;
  const void* ctx = nullptr;
  int64_t begin = 0, end = 0, chunk = 1;
  std::exception_ptr error;
};

thread_local bool t_in_parallel = false;

// Calibration: while set, workers park as soon as a job is done (no spin).
std::atomic<bool> g_park_now{false};

using detail::now_ns;

inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until ready() or `budget_ns` have passed; true when ready. The budget is
// time, not a pause count: PAUSE takes 10 to 140 cycles depending on the CPU.
template <class Ready>
bool spin_until(const Ready& ready, int64_t budget_ns) noexcept {
  if (ready()) return true;
  if (budget_ns <= 0) return false;
  const int64_t start = now_ns();
  const int64_t deadline = start + budget_ns;
  // Past a wake-up's worth of pure spinning, yield between checks: on an idle
  // core this still answers within microseconds, and on a busy one (BLAS or a
  // peer's threads between our calls) it gives the core away instead of
  // holding it until the budget runs out.
  const int64_t wake = tuning().wake_ns.value;
  const int64_t polite = start + (wake > 0 ? 2 * wake : int64_t{50'000});
  for (;;) {
    for (int k = 0; k < 32; ++k) {
      if (ready()) return true;
      spin_pause();
    }
    const int64_t now = now_ns();
    if (now >= deadline) return ready();
    if (now >= polite) std::this_thread::yield();
  }
}

// The job lives in the pool. Chunks are claimed with a CAS on a segment's ticket
// (generation << 32 | next chunk): a claim succeeds only while the ticket still
// holds this job's generation with chunks left in the segment, so a worker that
// wakes late never touches a finished job, and the caller waits only for chunks
// that were actually claimed (a descheduled worker that claimed nothing delays
// nobody).
class Pool {
 public:
  // Starts up to `workers` threads. A thread the system refuses (EAGAIN: a pids
  // limit, RLIMIT_NPROC) ends the loop: the pool runs with those it got.
  explicit Pool(int workers)
      : tickets_(
            std::make_unique<Ticket[]>(static_cast<size_t>(std::max(workers, 0)) + 1)) {
    threads_.reserve(static_cast<size_t>(std::max(workers, 0)));
    for (int w = 0; w < workers; ++w) {
      try {
        threads_.emplace_back([this, w] { loop(static_cast<uint32_t>(w) + 1); });
      } catch (const std::exception& e) {
        error_ = e.what();
        break;
      }
    }
  }
  ~Pool() {
    stop_.store(true, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(m_);
      generation_.fetch_add(1);
      wake_.notify_all();
    }
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  int workers() const noexcept { return static_cast<int>(threads_.size()); }
  // Home segments: one per thread that exists (a refused thread has none).
  uint32_t segments() const noexcept {
    return static_cast<uint32_t>(threads_.size()) + 1;
  }
  const std::string& error() const noexcept { return error_; }
  bool all_parked() const noexcept { return sleepers_.load() == workers(); }

  // Runs `job` on the workers and the calling thread; returns when all its
  // chunks are done. One caller at a time (parallel_run holds g_run_mutex).
  void run(Job& job) {
    const int64_t start = now_ns();
    if (last_end_ns_ > 0) {
      // A decaying maximum of the idle gaps: a loop that alternates 1 ms of
      // other work with back-to-back calls keeps the 1 ms.
      const int64_t gap = start - last_end_ns_;
      const int64_t prev = recent_gap_ns_.load(std::memory_order_relaxed);
      recent_gap_ns_.store(std::max(gap, prev - prev / 4), std::memory_order_relaxed);
    }
    const int64_t chunks = (job.end - job.begin + job.chunk - 1) / job.chunk;
    job_ = job;
    job_.error = nullptr;
    const uint32_t gen = ++gen_;
    // Release: a worker that reads this count also sees the previous job's
    // ticket closed (below), so it cannot claim a chunk past that job's end.
    nchunks_.store(static_cast<uint32_t>(chunks), std::memory_order_release);
    done_.store(0, std::memory_order_relaxed);
    const uint32_t segs = segments();
    for (uint32_t s = 0; s < segs; ++s)
      tickets_[s].v.store((static_cast<uint64_t>(gen) << 32) |
                              segment_begin(s, static_cast<uint32_t>(chunks)),
                          std::memory_order_release);
    generation_.store(gen);  // seq_cst, paired with sleepers_ (no lost wake-up)
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(m_);
      wake_.notify_all();
    }
    t_in_parallel = true;
    work(gen, 0);
    t_in_parallel = false;
    const auto all = static_cast<uint32_t>(chunks);
    // Every chunk left is being run by a worker that claimed it: worth a spin.
    if (!spin_until([&] { return done_.load(std::memory_order_acquire) == all; },
                    tuning().spin_ns.value)) {
      std::unique_lock<std::mutex> lock(m_);
      caller_sleeping_.store(true);
      done_cv_.wait(lock, [&] { return done_.load() == all; });
      caller_sleeping_.store(false);
    }
    // Close the tickets: no claim on this generation can succeed from now on,
    // even by a worker that reads the next job's chunk count.
    for (uint32_t s = 0; s < segs; ++s)
      tickets_[s].v.store((static_cast<uint64_t>(gen) << 32) | 0xFFFFFFFFu,
                          std::memory_order_relaxed);
    job.error = job_.error;
    last_end_ns_ = now_ns();
  }

 private:
  // How long a worker spins for the next job before parking: about 1.5x the
  // recent idle gap when that is under the cap, else a short floor (a wake-up's
  // worth) that still covers back-to-back calls from Python.
  int64_t spin_budget() const noexcept {
    if (g_park_now.load(std::memory_order_relaxed)) return 0;
    const Tuning& t = tuning();
    const int64_t cap = t.spin_ns.value;
    const int64_t floor =
        std::min(cap, t.wake_ns.value > 0 ? 2 * t.wake_ns.value : int64_t{50'000});
    const int64_t gap = recent_gap_ns_.load(std::memory_order_relaxed);
    if (gap <= 0 || gap > cap) return floor;
    return std::clamp(gap + gap / 2, floor, cap);
  }

  // Segment s of `chunks` chunks: [segment_begin(s), segment_begin(s + 1)).
  uint32_t segment_begin(uint32_t s, uint32_t chunks) const noexcept {
    return static_cast<uint32_t>(static_cast<uint64_t>(s) * chunks / segments());
  }

  bool claim(uint32_t gen, uint32_t s, uint32_t& index, uint32_t& chunks) noexcept {
    std::atomic<uint64_t>& ticket = tickets_[s].v;
    uint64_t t = ticket.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(t >> 32) != gen) return false;
      chunks = nchunks_.load(std::memory_order_acquire);
      const auto i = static_cast<uint32_t>(t);
      if (i >= segment_begin(s + 1, chunks)) return false;
      if (ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        index = i;
        return true;
      }
    }
  }

  // The home segment first, then the others' in turn.
  void work(uint32_t gen, uint32_t home) noexcept {
    const uint32_t segs = segments();
    for (uint32_t k = 0; k < segs; ++k) work_segment(gen, (home + k) % segs);
  }

  void work_segment(uint32_t gen, uint32_t s) noexcept {
    uint32_t i = 0, chunks = 0;
    while (claim(gen, s, i, chunks)) {
      // The claim keeps this job alive: its fields are stable until done_ counts it.
      const int64_t b = job_.begin + static_cast<int64_t>(i) * job_.chunk;
      const int64_t e = std::min(job_.end, b + job_.chunk);
      try {
        job_.fn(job_.ctx, b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!job_.error) job_.error = std::current_exception();
      }
      if (done_.fetch_add(1) + 1 == chunks && caller_sleeping_.load()) {
        std::lock_guard<std::mutex> lock(m_);
        done_cv_.notify_one();
      }
    }
  }

  void loop(uint32_t home) noexcept {
    t_in_parallel = true;
    uint32_t seen = 0;
    for (;;) {
      uint32_t g = seen;
      if (spin_until(
              [&] {
                g = generation_.load(std::memory_order_acquire);
                return g != seen;
              },
              spin_budget())) {
      } else {
        std::unique_lock<std::mutex> lock(m_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        sleepers_.fetch_sub(1);
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_.load(std::memory_order_relaxed)) return;
      work(g, home);
    }
  }

  Job job_;                  // written by the caller before the ticket is published
  uint32_t gen_ = 0;         // the caller's generation count
  int64_t last_end_ns_ = 0;  // the caller's: end of the previous job
  std::atomic<int64_t> recent_gap_ns_{0};
  // One ticket per home segment, each on its own cache line.
  struct alignas(64) Ticket {
    std::atomic<uint64_t> v{0};
  };
  std::unique_ptr<Ticket[]> tickets_;
  std::atomic<uint32_t> nchunks_{0};
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  // Sleeping after the spin: a mutex + condition variables. sleepers_ and
  // caller_sleeping_ let the other side skip the lock when nobody sleeps
  // (seq_cst on both sides, so a wake-up is never lost).
  std::mutex m_;
  std::condition_variable wake_, done_cv_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::mutex error_mutex_;
  std::string error_;
  std::vector<std::thread> threads_;
};

std::atomic<int> g_threads{0};  // 0: not set yet, use default_num_threads()
std::mutex g_run_mutex;         // held by the caller that owns the pool
Pool* g_pool = nullptr;         // guarded by g_run_mutex; leaked at exit on purpose
std::once_flag g_atfork_once;

std::mutex g_shortfall_mutex;
bool g_shortfall_pending = false;
ThreadShortfall g_shortfall;

void atfork_prepare() { g_run_mutex.lock(); }
void atfork_parent() { g_run_mutex.unlock(); }
void atfork_child() {
  // The pool's threads were not copied into the child: forget the pool (leaked,
  // never joined) and let the next call build a fresh one.
  g_pool = nullptr;
  g_run_mutex.unlock();
}

// The pool for `threads` threads (caller included), under g_run_mutex. Returns
// the thread count it really has.
int pool_for_locked(int threads) {
  std::call_once(g_atfork_once,
                 [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
  if (g_pool != nullptr && g_pool->workers() == threads - 1) return threads;
  delete g_pool;
  g_pool = nullptr;
  g_pool = new Pool(threads - 1);
  const int got = g_pool->workers() + 1;
  if (got < threads) {
    // Tell the truth from now on, unless another thread asked for a new count
    // meanwhile (its request is built on its next call).
    int expected = threads;
    g_threads.compare_exchange_strong(expected, got, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(g_shortfall_mutex);
    g_shortfall = ThreadShortfall{threads, got, g_pool->error()};
    g_shortfall_pending = true;
  }
  return got;
}

std::string read_text(const std::string& path, bool& found) {
  std::ifstream f(path);
  found = static_cast<bool>(f);
  if (!found) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The cgroup v1 quota of one directory (cpu.cfs_quota_us / cpu.cfs_period_us).
int cpus_from_cfs(const std::string& dir) {
  std::ifstream q(dir + "/cpu.cfs_quota_us");
  std::ifstream p(dir + "/cpu.cfs_period_us");
  long long quota = -1, period = 0;
  if (q && p && (q >> quota) && (p >> period) && quota > 0 && period > 0)
    return static_cast<int>(
        std::min<long long>((quota + period - 1) / period, 1 << 16));
  return 0;
}

}  // namespace

int cpus_from_cgroup(const std::string& root,
                     const std::string& proc_self_cgroup) noexcept {
  try {
    // "0::/path" (v2) and "N:cpu,cpuacct:/path" (v1): where this process sits.
    std::string v2_path = "/", v1_path = "/";
    std::istringstream lines(proc_self_cgroup);
    for (std::string line; std::getline(lines, line);) {
      const size_t a = line.find(':');
      const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
      if (b == std::string::npos) continue;
      const std::string id = line.substr(0, a),
                        controllers = line.substr(a + 1, b - a - 1);
      std::string path = line.substr(b + 1);
      if (path.find("/..") != std::string::npos) path = "/";  // outside our namespace
      if (id == "0" && controllers.empty()) v2_path = path;
      if (("," + controllers + ",").find(",cpu,") != std::string::npos) v1_path = path;
    }
    // Every cgroup from this one up to the root limits it. A path that does not
    // exist under `root` (a container's cgroup mounted at the root while
    // /proc/self/cgroup names it as the host sees it) is skipped: its ancestors
    // are still read, down to the root.
    auto walk = [](const std::string& base, std::string rel, auto&& quota_of,
                   bool& any) {
      int limit = 0;
      for (;;) {
        while (!rel.empty() && rel.back() == '/') rel.pop_back();
        bool found = false;
        const int n = quota_of(base + rel, found);
        any = any || found;
        if (n > 0) limit = limit == 0 ? n : std::min(limit, n);
        if (rel.empty()) return limit;
        rel.erase(rel.rfind('/') == std::string::npos ? 0 : rel.rfind('/'));
      }
    };
    bool v2_found = false;
    const int v2 = walk(
        root, v2_path,
        [](const std::string& dir, bool& found) {
          const std::string text = read_text(dir + "/cpu.max", found);
          return found ? cpus_from_cgroup_cpu_max(text) : 0;
        },
        v2_found);
    if (v2_found) return v2;
    bool v1_found = false;
    return walk(
        root + "/cpu", v1_path,
        [](const std::string& dir, bool& found) {
          found = false;
          return cpus_from_cfs(dir);
        },
        v1_found);
  } catch (...) {
    return 0;
  }
}

namespace {

int read_cgroup_limit() noexcept {
  try {
    bool found = false;
    return cpus_from_cgroup("/sys/fs/cgroup", read_text("/proc/self/cgroup", found));
  } catch (...) {
    return 0;
  }
}

}  // namespace

int cpus_from_cgroup_cpu_max(const std::string& contents) noexcept {
  std::istringstream in(contents);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  long long q = 0;
  try {
    size_t used = 0;
    q = std::stoll(quota, &used);
    if (used != quota.size()) return 0;
  } catch (...) {
    return 0;
  }
  if (q <= 0) return 0;
  const long long cpus = (q + period - 1) / period;
  return static_cast<int>(std::min<long long>(cpus, 1 << 16));
}

int default_num_threads() noexcept {
  int n = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  const int quota = read_cgroup_limit();
  if (quota > 0) n = std::min(n, quota);
  return std::max(n, 1);
}

int max_threads() noexcept {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online <= 0) online = static_cast<long>(std::thread::hardware_concurrency());
  return static_cast<int>(std::clamp<long>(4 * online, 64, 1 << 16));
}

int get_num_threads() noexcept {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    int expected = 0;
    const int d = std::min(default_num_threads(), max_threads());
    g_threads.compare_exchange_strong(expected, d, std::memory_order_relaxed);
    n = g_threads.load(std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) {
  if (n < 1)
    throw std::invalid_argument("number of threads must be >= 1, got " +
                                std::to_string(n));
  const int limit = max_threads();
  if (n > limit)
    throw std::invalid_argument(
        "number of threads must be <= " + std::to_string(limit) +
        " (4 per online CPU, at least 64), got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

int ensure_threads() {
  const int threads = get_num_threads();
  if (threads <= 1) return threads;
  std::lock_guard<std::mutex> own(g_run_mutex);
  return pool_for_locked(threads);
}

bool take_thread_shortfall(ThreadShortfall& out) {
  std::lock_guard<std::mutex> lock(g_shortfall_mutex);
  if (!g_shortfall_pending) return false;
  g_shortfall_pending = false;
  out = g_shortfall;
  return true;
}

namespace detail {

bool in_parallel_region() noexcept { return t_in_parallel; }

void parallel_run(int64_t begin, int64_t end, int64_t grain, RangeFn fn,
                  const void* ctx) {
  std::unique_lock<std::mutex> own(g_run_mutex, std::try_to_lock);
  if (!own.owns_lock()) {  // another caller owns the pool: do this one here
    fn(ctx, begin, end);
    return;
  }
  const int threads = pool_for_locked(get_num_threads());
  if (threads <= 1) {
    own.unlock();
    fn(ctx, begin, end);
    return;
  }
  Job job;
  job.fn = fn;
  job.ctx = ctx;
  job.begin = begin;
  job.end = end;
  // About 8 chunks per thread, each at least a quarter of the grain: uneven
  // rows balance, a late worker joins a job already under way, and a worker
  // preempted inside a chunk delays the caller by one small chunk at most.
  const int64_t n = end - begin;
  const int64_t per = 8 * static_cast<int64_t>(threads);
  job.chunk = std::max((grain + 3) / 4, (n + per - 1) / per);
  g_pool->run(job);
  own.unlock();
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace detail

// --- calibration ------------------------------------------------------------

namespace {

// Two chunks: the first to arrive waits (bounded) for the second; the second's
// arrival time after the publish is the hand-off latency.
struct Probe {
  std::thread::id caller;
  int64_t t0 = 0;
  std::atomic<int> arrived{0};
  std::atomic<int64_t> t_second{0};
  std::atomic<bool> second_is_worker{false};
};

int64_t probe_once() {
  Probe p;
  p.caller = std::this_thread::get_id();
  p.t0 = now_ns();
  detail::parallel_run(
      0, 2, 1,
      [](const void* ctx, int64_t, int64_t) {
        auto* q = const_cast<Probe*>(static_cast<const Probe*>(ctx));
        const int64_t t = now_ns();
        if (q->arrived.fetch_add(1) == 0) {
          const int64_t deadline = t + 2'000'000;
          while (q->arrived.load() < 2 && now_ns() < deadline) spin_pause();
        } else {
          q->t_second.store(t);
          q->second_is_worker.store(std::this_thread::get_id() != q->caller);
        }
      },
      &p);
  return p.second_is_worker.load() ? p.t_second.load() - p.t0 : -1;
}

// A low quantile: on a busy machine every sample only gains delay.
int64_t low_quantile(std::vector<int64_t> v, size_t div) {
  v.erase(std::remove(v.begin(), v.end(), int64_t{-1}), v.end());
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() / div)];
}

bool wait_all_parked(int64_t timeout_ns) {
  const int64_t deadline = now_ns() + timeout_ns;
  for (;;) {
    {
      std::lock_guard<std::mutex> own(g_run_mutex);
      if (g_pool == nullptr || g_pool->all_parked()) return g_pool != nullptr;
    }
    if (now_ns() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

int64_t copy_rate() {
  // Rows that stay in L2: what a worker copies once the rows are near.
  const auto bytes = static_cast<size_t>(
      std::clamp<int64_t>(tuning().l2_bytes.value / 4, 16 * 1024, 1 << 20));
  // Source and destination half a page apart modulo 4 KiB, in one block. Two
  // separate vectors land wherever malloc puts them, and at some distances the
  // copy is far slower than a kernel's copy of rows ever is: on AMD Zen 3 the
  // `rep movsb` of glibc's memcpy moved 128 KiB at 2.8 GB/s when the
  // destination was 16 bytes past the source modulo 4 KiB (40 GB/s at 0, 64,
  // 256 or 2,048), which set the pool's threshold from a rate 14x too low.
  constexpr size_t kPage = 4096;
  std::vector<char> block(2 * bytes + 2 * kPage, 1);
  char* src = block.data();
  char* dst = src + bytes + kPage + kPage / 2;
  int64_t best = 0;
  for (int r = 0; r < 8; ++r) {
    const int64_t t0 = now_ns();
    std::memcpy(dst, src, bytes);
    const int64_t t = now_ns() - t0;
    src[static_cast<size_t>(r)] = dst[bytes - 1 - static_cast<size_t>(r)];
    if (t > 0) best = std::max<int64_t>(best, static_cast<int64_t>(bytes) * 1000 / t);
  }
  return best;
}

}  // namespace

Calibration calibrate() {
  // At most ~60 ms in all, however busy the machine: a probe that waits 2 ms for
  // a worker already says the machine is too busy to measure.
  const int64_t deadline = now_ns() + 60'000'000;
  Calibration c;
  c.copy_bytes_per_us = copy_rate();
  if (ensure_threads() < 2 || detail::in_parallel_region()) return c;
  // Workers that were just created must be running before the first probe.
  wait_all_parked(20'000'000);
  std::vector<int64_t> hot, cold;
  for (int r = 0; r < 24 && now_ns() < deadline; ++r) {
    const int64_t h = probe_once();
    if (r >= 4) hot.push_back(h);
  }
  g_park_now.store(true);
  for (int r = 0; r < 9 && now_ns() < deadline; ++r) {
    if (!wait_all_parked(std::max<int64_t>(deadline - now_ns(), 0))) break;
    cold.push_back(probe_once());
  }
  g_park_now.store(false);
  if (hot.size() >= 8 && cold.size() >= 5) {
    c.handoff_ns = low_quantile(hot, hot.size());  // the minimum
    c.wake_ns = low_quantile(cold, 2);
    // With the workers awake again (they spin for the calls that follow).
    if (now_ns() < deadline) c.owner_scan_bytes = calibrate_owner_scan_bytes();
  }
  return c;
}

}  // namespace embtable
