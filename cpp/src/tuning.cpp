// Machine-derived sizes: read once from sysfs / sysconf, derived, and replaced by
// calibrated values on request. Snapshots are immutable and never freed (a few
// per process), so a kernel holding one never races with set_tuned().
#include "embtable/tuning.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "embtable/parallel.hpp"

namespace embtable {
namespace {

constexpr int64_t KiB = 1024;

// Fields by name, in declaration order (the order show_config prints).
struct Field {
  const char* name;
  Tuned Tuning::* member;
};
constexpr Field kFields[] = {
    {"cpus", &Tuning::cpus},
    {"line_bytes", &Tuning::line_bytes},
    {"l1d_bytes", &Tuning::l1d_bytes},
    {"l2_bytes", &Tuning::l2_bytes},
    {"llc_bytes", &Tuning::llc_bytes},
    {"stream_bytes", &Tuning::stream_bytes},
    {"parallel_bytes", &Tuning::parallel_bytes},
    {"prefetch_bytes", &Tuning::prefetch_bytes},
    {"bag_prefetch_bytes", &Tuning::bag_prefetch_bytes},
    {"block_bytes", &Tuning::block_bytes},
    {"spin_ns", &Tuning::spin_ns},
    {"handoff_ns", &Tuning::handoff_ns},
    {"wake_ns", &Tuning::wake_ns},
    {"copy_bytes_per_us", &Tuning::copy_bytes_per_us},
    {"owner_scan_bytes", &Tuning::owner_scan_bytes},
    {"radix_bits", &Tuning::radix_bits},
};

// "48K" / "1024K" / "32M" / "65536" -> bytes; 0 when it does not parse.
int64_t parse_size(const std::string& s) noexcept {
  size_t i = 0;
  int64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    v = v * 10 + (s[i] - '0');
    if (v > (int64_t{1} << 50)) return 0;
    ++i;
  }
  if (i == 0) return 0;
  if (i < s.size()) {
    if (s[i] == 'K')
      v *= KiB;
    else if (s[i] == 'M')
      v *= KiB * KiB;
    else if (s[i] == 'G')
      v *= KiB * KiB * KiB;
  }
  return v;
}

std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (f) std::getline(f, line);
  return line;
}

int first_allowed_cpu() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(static_cast<size_t>(c), &set)) return c;
  return 0;
}

// The machine as it reports itself: caches from sysfs (the first CPU this
// process may run on), else sysconf, else a conservative fallback.
Tuning read_machine() {
  Tuning t;
  const int threads = default_num_threads();
  t.cpus = {threads, "affinity"};
  {
    int affinity = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) affinity = CPU_COUNT(&set);
    if (affinity > threads) t.cpus.source = "cgroup";
  }
  t.line_bytes = {64, "fallback"};
  t.l1d_bytes = {32 * KiB, "fallback"};
  t.l2_bytes = {1024 * KiB, "fallback"};
  t.llc_bytes = {8 * 1024 * KiB, "fallback"};
  try {
    const std::string base = "/sys/devices/system/cpu/cpu" +
                             std::to_string(first_allowed_cpu()) + "/cache/index";
    int llc_level = 0;
    for (int i = 0; i < 16; ++i) {
      const std::string dir = base + std::to_string(i) + "/";
      const std::string level = read_line(dir + "level");
      if (level.empty()) break;
      const std::string type = read_line(dir + "type");
      const int64_t size = parse_size(read_line(dir + "size"));
      if (size <= 0 || type == "Instruction") continue;
      const int lv = std::stoi(level);
      if (lv == 1) {
        t.l1d_bytes = {size, "sysfs"};
        const int64_t line = parse_size(read_line(dir + "coherency_line_size"));
        if (line >= 16 && line <= 1024) t.line_bytes = {line, "sysfs"};
      } else if (lv == 2) {
        t.l2_bytes = {size, "sysfs"};
      }
      if (lv >= 2 && lv >= llc_level) {
        llc_level = lv;
        t.llc_bytes = {size, "sysfs"};
      }
    }
  } catch (...) {
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  auto from_sysconf = [](Tuned& v, int name) {
    if (std::string(v.source) != "fallback") return;
    const long s = sysconf(name);
    if (s > 0) v = {static_cast<int64_t>(s), "sysconf"};
  };
  from_sysconf(t.l1d_bytes, _SC_LEVEL1_DCACHE_SIZE);
  from_sysconf(t.line_bytes, _SC_LEVEL1_DCACHE_LINESIZE);
  from_sysconf(t.l2_bytes, _SC_LEVEL2_CACHE_SIZE);
  if (std::string(t.llc_bytes.source) == "fallback") {
    from_sysconf(t.llc_bytes, _SC_LEVEL3_CACHE_SIZE);
    if (std::string(t.llc_bytes.source) == "fallback" &&
        std::string(t.l2_bytes.source) != "fallback")
      t.llc_bytes = {t.l2_bytes.value, "derived"};  // no L3: the L2 is the last level
  }
#endif
  // Each level holds at least the one below. A made-up sysfs (a VM's or a
  // container's: an L3 of 1 KiB) would otherwise stream every output above that.
  if (t.l2_bytes.value < t.l1d_bytes.value) t.l2_bytes = {t.l1d_bytes.value, "derived"};
  if (t.llc_bytes.value < t.l2_bytes.value) t.llc_bytes = {t.l2_bytes.value, "derived"};
  return t;
}

// The values that follow from others, unless set explicitly.
void derive(Tuning& t, const std::map<std::string, Tuned>& explicit_values) {
  auto set = [&](const char* name, Tuned Tuning::* m, int64_t v) {
    if (!explicit_values.count(name)) t.*m = {v, "derived"};
  };
  // Radix-sort digits: the counters of a pass stay in L1 beside the values.
  {
    int bits = 0;
    for (int64_t b = t.l1d_bytes.value / 4 / 8; b > 1; b >>= 1) ++bits;
    set("radix_bits", &Tuning::radix_bits, std::clamp<int64_t>(bits, 8, 12));
  }
  // An output that fits in the last-level cache stays there for its reader:
  // streaming it to DRAM would cost a round trip (a 3.4x cliff at 4 MiB on a
  // 32 MiB L3). Stream only what cannot stay.
  set("stream_bytes", &Tuning::stream_bytes, t.llc_bytes.value);
  // Prefetched lines must still be in L1 when used: keep a sixteenth of L1 in
  // flight (3 KiB of a 48 KiB L1, 2 KiB of 32 KiB).
  set("prefetch_bytes", &Tuning::prefetch_bytes,
      std::clamp<int64_t>(t.l1d_bytes.value / 16, 1 * KiB, 16 * KiB));
  // Twice that for the pooling kernels (measured on a 48 KiB L1, 1 thread:
  // float16 bag 0.60 -> 0.45 ms, int8 bag 0.42 -> 0.37, float32 bag 0.99 ->
  // 0.94, bag backward 2.05 -> 1.59; gather and scatter_add were no faster).
  set("bag_prefetch_bytes", &Tuning::bag_prefetch_bytes, 2 * t.prefetch_bytes.value);
  set("block_bytes", &Tuning::block_bytes,
      std::max<int64_t>(t.l2_bytes.value / 2, 64 * KiB));
  // The pool pays when the caller's saved half exceeds the hand-off: with a
  // measured hand-off h and copy rate c, a call of 8 h c bytes finishes in
  // about 4 h + h on two threads against 8 h on one. Without a measurement, a
  // quarter of L2 (rows that a second core can copy without spilling its L2).
  const int64_t h = t.handoff_ns.value, c = t.copy_bytes_per_us.value;
  if (h > 0 && c > 0) {
    // In double: 8 h c of any set_tuned() values would overflow an int64.
    const double lo =
        static_cast<double>(std::min(t.l1d_bytes.value, t.l2_bytes.value));
    const double hi =
        static_cast<double>(std::max(t.l1d_bytes.value, t.l2_bytes.value));
    const double bytes = 8.0 * static_cast<double>(h) * static_cast<double>(c) / 1000;
    set("parallel_bytes", &Tuning::parallel_bytes,
        static_cast<int64_t>(std::clamp(bytes, lo, hi)));
  } else {
    set("parallel_bytes", &Tuning::parallel_bytes,
        std::clamp<int64_t>(t.l2_bytes.value / 4, 64 * KiB, 1024 * KiB));
  }
  // Unmeasured, an owner's scan of an id is its two 8-byte accesses (the id
  // read, its position written).
  set("owner_scan_bytes", &Tuning::owner_scan_bytes, 16);
  // Spinning between jobs keeps a worker's hand-off at h instead of the wake-up
  // w. The pool spins for about the recent gaps between jobs, up to this cap:
  // 128 wake-ups' worth (a loop that calls every millisecond keeps its workers
  // awake when a wake-up costs >= 8 us), within [200 us, 5 ms]. Unmeasured: 2 ms.
  const int64_t w = t.wake_ns.value;
  set("spin_ns", &Tuning::spin_ns,
      w > 0 ? std::clamp<int64_t>(128 * w, 200'000, 5'000'000) : 2'000'000);
}

struct State {
  std::mutex m;
  Tuning machine;                          // as read from the machine
  std::map<std::string, Tuned> explicit_;  // set_tuned() values
  std::vector<std::string> sources;        // keeps source strings alive
};
State& state() {
  static State* s = new State;  // leaked: outlives every caller
  return *s;
}

std::atomic<const Tuning*> g_current{nullptr};

const Tuning* build_locked(State& s) {
  Tuning t = s.machine;
  for (const auto& [name, v] : s.explicit_)
    for (const Field& f : kFields)
      if (name == f.name) t.*f.member = v;
  derive(t, s.explicit_);
  return new Tuning(t);  // never freed: readers may hold any snapshot
}

const char* intern(State& s, const std::string& source) {
  for (const auto& x : s.sources)
    if (x == source) return x.c_str();
  s.sources.reserve(64);  // c_str() pointers must stay valid: no reallocation
  if (s.sources.size() >= 64) return "other";
  s.sources.push_back(source);
  return s.sources.back().c_str();
}

}  // namespace

const Tuning& tuning() noexcept {
  const Tuning* t = g_current.load(std::memory_order_acquire);
  if (t) return *t;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  t = g_current.load(std::memory_order_acquire);
  if (!t) {
    try {
      s.machine = read_machine();
      t = build_locked(s);
    } catch (...) {  // out of memory at first use: the fallbacks, derived
      static Tuning fallback = [] {
        Tuning f;
        f.cpus = {1, "fallback"};
        f.line_bytes = {64, "fallback"};
        f.l1d_bytes = {32 * KiB, "fallback"};
        f.l2_bytes = {1024 * KiB, "fallback"};
        f.llc_bytes = {8 * 1024 * KiB, "fallback"};
        derive(f, {});
        return f;
      }();
      t = &fallback;
    }
    g_current.store(t, std::memory_order_release);
  }
  return *t;
}

void set_tuned(const std::string& name, int64_t value, const std::string& source) {
  bool known = false;
  for (const Field& f : kFields) known = known || name == f.name;
  if (!known) throw std::invalid_argument("unknown tuning value '" + name + "'");
  if (value < 0)
    throw std::invalid_argument("tuning value '" + name + "' must be >= 0, got " +
                                std::to_string(value));
  (void)tuning();  // machine values read
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  s.explicit_[name] = Tuned{value, intern(s, source)};
  g_current.store(build_locked(s), std::memory_order_release);
}

void reset_tuning() {
  (void)tuning();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.m);
  s.explicit_.clear();
  s.machine = read_machine();
  g_current.store(build_locked(s), std::memory_order_release);
}

std::vector<TunedItem> tuning_items() {
  const Tuning& t = tuning();
  std::vector<TunedItem> out;
  for (const Field& f : kFields)
    out.push_back({f.name, (t.*f.member).value, (t.*f.member).source});
  return out;
}

int64_t grain_rows(int64_t row_bytes) noexcept {
  const int64_t bytes = tuning().parallel_bytes.value;
  if (row_bytes <= 0) return int64_t{1} << 20;
  return std::max<int64_t>(1, (bytes + row_bytes - 1) / row_bytes);
}

}  // namespace embtable
