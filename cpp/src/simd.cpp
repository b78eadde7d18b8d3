#include "embtable/simd.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "kernels.hpp"

namespace embtable {
namespace {

bool cpu_has(Simd level) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (level) {
    case Simd::baseline:
      return true;
    case Simd::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Simd::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return level == Simd::baseline;
#endif
}

// The emulated build (cmake -DEMBTABLE_EMULATE_AVX512=ON, tests only): its avx512
// units need AVX2, FMA and F16C, so a forced avx512 runs on any CPU with those. The
// detected level stays the CPU's own.
bool emulated(Simd level) noexcept {
#if defined(EMBTABLE_AVX512_EMULATED) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return level == Simd::avx512 && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  (void)level;
  return false;
#endif
}

bool compiled(Simd level) noexcept {
  switch (level) {
    case Simd::baseline:
      return true;
    case Simd::avx2:
#if defined(EMBTABLE_HAVE_AVX2)
      return true;
#else
      return false;
#endif
    case Simd::avx512:
#if defined(EMBTABLE_HAVE_AVX512)
      return true;
#else
      return false;
#endif
  }
  return false;
}

// -1: not chosen yet.
std::atomic<int> g_selected{-1};

Simd initial_level() noexcept {
  const Simd best = simd_detected();
  if (const char* env = std::getenv("EMBTABLE_SIMD")) {
    try {
      const Simd want = parse_simd(env);
      // A level above what the CPU runs would crash: keep the best it has.
      if (compiled(want) && (cpu_has(want) || emulated(want))) return want;
    } catch (const std::invalid_argument&) {
    }
  }
  return best;
}

}  // namespace

const char* simd_name(Simd level) noexcept {
  switch (level) {
    case Simd::baseline:
      return "baseline";
    case Simd::avx2:
      return "avx2";
    case Simd::avx512:
      return "avx512";
  }
  return "unknown";
}

Simd parse_simd(const std::string& name) {
  if (name == "baseline") return Simd::baseline;
  if (name == "avx2") return Simd::avx2;
  if (name == "avx512") return Simd::avx512;
  throw std::invalid_argument("unknown SIMD level '" + name +
                              "'; expected 'baseline', 'avx2' or 'avx512'");
}

std::vector<Simd> simd_compiled() {
  std::vector<Simd> out;
  for (Simd s : {Simd::baseline, Simd::avx2, Simd::avx512})
    if (compiled(s)) out.push_back(s);
  return out;
}

Simd simd_detected() noexcept {
  for (Simd s : {Simd::avx512, Simd::avx2})
    if (compiled(s) && cpu_has(s)) return s;
  return Simd::baseline;
}

Simd simd_selected() noexcept {
  int v = g_selected.load(std::memory_order_acquire);
  if (v < 0) {
    int expected = -1;
    g_selected.compare_exchange_strong(expected, static_cast<int>(initial_level()));
    v = g_selected.load(std::memory_order_acquire);
  }
  return static_cast<Simd>(v);
}

void set_simd_level(Simd level) {
  if (!compiled(level))
    throw std::invalid_argument(std::string("SIMD level '") + simd_name(level) +
                                "' is not compiled into this build");
  if (!cpu_has(level) && !emulated(level))
    throw std::invalid_argument(std::string("this CPU does not support SIMD level '") +
                                simd_name(level) + "'");
  g_selected.store(static_cast<int>(level), std::memory_order_release);
}

namespace kernels {

RowLocks& row_locks() noexcept {
  static RowLocks locks{};
  return locks;
}

const Table& selected() noexcept {
  switch (simd_selected()) {
#if defined(EMBTABLE_HAVE_AVX512)
    case Simd::avx512:
      return table_avx512();
#endif
#if defined(EMBTABLE_HAVE_AVX2)
    case Simd::avx2:
      return table_avx2();
#endif
    default:
      return table_baseline();
  }
}

}  // namespace kernels
}  // namespace embtable
