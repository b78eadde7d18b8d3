// A persistent pool behind parallel_for. One job at a time owns the pool; the
// caller works on the job too. Fork-safe: the child drops the parent's pool
// (its threads do not exist there) and builds a new one on first use.
#include "embtable/parallel.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace embtable {
namespace {

struct Job {
  detail::RangeFn fn = nullptr;
  const void* ctx = nullptr;
  int64_t begin = 0, end = 0, chunk = 1;
  std::exception_ptr error;
};

thread_local bool t_in_parallel = false;

// Wake-ups: a worker that just finished spins briefly on the generation
// counter before it sleeps on a condition variable, so back-to-back calls
// (a training loop) skip the futex round trip. The spin is bounded (tens of
// microseconds) because the cores may be shared with other processes.
// The budget is time, not a pause count: PAUSE takes 10 to 140 cycles
// depending on the CPU. 200 us covers the Python overhead between the calls of
// a training step, so a worker that just finished is still awake for the next.
constexpr auto kSpinBudget = std::chrono::microseconds(200);

inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until ready() or the budget runs out; true when ready.
template <class Ready>
bool spin_until(const Ready& ready) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + kSpinBudget;
  for (;;) {
    for (int k = 0; k < 32; ++k) {
      if (ready()) return true;
      spin_pause();
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

// The job lives in the pool. Chunks are claimed with a CAS on `ticket_`
// (generation << 32 | next chunk): a claim succeeds only while the ticket still
// holds this job's generation with chunks left, so a worker that wakes late
// never touches a finished job, and the caller waits only for chunks that were
// actually claimed (a descheduled worker that claimed nothing delays nobody).
class Pool {
 public:
  explicit Pool(int workers) {
    threads_.reserve(static_cast<size_t>(workers));
    for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    stop_.store(true, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(m_);
      generation_.fetch_add(1);
      wake_.notify_all();
    }
    for (auto& t : threads_) t.join();
  }
  int workers() const noexcept { return static_cast<int>(threads_.size()); }

  // Runs `job` on the workers and the calling thread; returns when all its
  // chunks are done. One caller at a time (parallel_run holds g_run_mutex).
  void run(Job& job) {
    const int64_t chunks = (job.end - job.begin + job.chunk - 1) / job.chunk;
    job_ = job;
    job_.error = nullptr;
    const uint32_t gen = ++gen_;
    // Release: a worker that reads this count also sees the previous job's
    // ticket closed (below), so it cannot claim a chunk past that job's end.
    nchunks_.store(static_cast<uint32_t>(chunks), std::memory_order_release);
    done_.store(0, std::memory_order_relaxed);
    ticket_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    generation_.store(gen);  // seq_cst, paired with sleepers_ (no lost wake-up)
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(m_);
      wake_.notify_all();
    }
    t_in_parallel = true;
    work(gen);
    t_in_parallel = false;
    const auto all = static_cast<uint32_t>(chunks);
    if (!spin_until([&] { return done_.load(std::memory_order_acquire) == all; })) {
      std::unique_lock<std::mutex> lock(m_);
      caller_sleeping_.store(true);
      done_cv_.wait(lock, [&] { return done_.load() == all; });
      caller_sleeping_.store(false);
    }
    // Close the ticket: no claim on this generation can succeed from now on,
    // even by a worker that reads the next job's chunk count.
    ticket_.store((static_cast<uint64_t>(gen) << 32) | 0xFFFFFFFFu,
                  std::memory_order_relaxed);
    job.error = job_.error;
  }

 private:
  bool claim(uint32_t gen, uint32_t& index, uint32_t& chunks) noexcept {
    uint64_t t = ticket_.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(t >> 32) != gen) return false;
      chunks = nchunks_.load(std::memory_order_acquire);
      const auto i = static_cast<uint32_t>(t);
      if (i >= chunks) return false;
      if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        index = i;
        return true;
      }
    }
  }

  void work(uint32_t gen) noexcept {
    uint32_t i = 0, chunks = 0;
    while (claim(gen, i, chunks)) {
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

  void loop() {
    t_in_parallel = true;
    uint32_t seen = 0;
    for (;;) {
      uint32_t g = generation_.load(std::memory_order_acquire);
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      g = generation_.load(std::memory_order_acquire);
      if (g == seen) {
        std::unique_lock<std::mutex> lock(m_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        sleepers_.fetch_sub(1);
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_.load(std::memory_order_relaxed)) return;
      work(g);
    }
  }

  Job job_;           // written by the caller before the ticket is published
  uint32_t gen_ = 0;  // the caller's generation count
  std::atomic<uint64_t> ticket_{0};
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
  std::vector<std::thread> threads_;
};

std::atomic<int> g_threads{0};  // 0: not set yet, use default_num_threads()
std::mutex g_run_mutex;         // held by the caller that owns the pool
Pool* g_pool = nullptr;         // guarded by g_run_mutex; leaked at exit on purpose
std::once_flag g_atfork_once;

void atfork_prepare() { g_run_mutex.lock(); }
void atfork_parent() { g_run_mutex.unlock(); }
void atfork_child() {
  // The pool's threads were not copied into the child: forget the pool (leaked,
  // never joined) and let the next call build a fresh one.
  g_pool = nullptr;
  g_run_mutex.unlock();
}

int read_cgroup_limit() noexcept {
  try {
    std::ifstream v2("/sys/fs/cgroup/cpu.max");
    if (v2) {
      std::stringstream ss;
      ss << v2.rdbuf();
      return cpus_from_cgroup_cpu_max(ss.str());
    }
    std::ifstream q("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    std::ifstream p("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    long long quota = -1, period = 0;
    if (q && p && (q >> quota) && (p >> period) && quota > 0 && period > 0)
      return static_cast<int>((quota + period - 1) / period);
  } catch (...) {
  }
  return 0;
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

int get_num_threads() noexcept {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    int expected = 0;
    const int d = default_num_threads();
    g_threads.compare_exchange_strong(expected, d, std::memory_order_relaxed);
    n = g_threads.load(std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) {
  if (n < 1)
    throw std::invalid_argument("number of threads must be >= 1, got " +
                                std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

namespace detail {

bool in_parallel_region() noexcept { return t_in_parallel; }

void parallel_run(int64_t begin, int64_t end, int64_t grain, RangeFn fn,
                  const void* ctx) {
  const int threads = get_num_threads();
  std::unique_lock<std::mutex> own(g_run_mutex, std::try_to_lock);
  if (!own.owns_lock()) {  // another caller owns the pool: do this one here
    fn(ctx, begin, end);
    return;
  }
  std::call_once(g_atfork_once,
                 [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
  if (g_pool == nullptr || g_pool->workers() != threads - 1) {
    delete g_pool;
    g_pool = nullptr;
    g_pool = new Pool(threads - 1);
  }
  Job job;
  job.fn = fn;
  job.ctx = ctx;
  job.begin = begin;
  job.end = end;
  // About 4 tasks per thread balance uneven rows without many atomics.
  const int64_t n = end - begin;
  job.chunk =
      std::max(grain, (n + 4 * threads - 1) / (4 * static_cast<int64_t>(threads)));
  g_pool->run(job);
  own.unlock();
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace detail
}  // namespace embtable
