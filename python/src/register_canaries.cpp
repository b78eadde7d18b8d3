// Sanitizer self-test canaries (built only with -DEMBTABLE_TEST_CANARIES=ON).
//
// A green sanitizer run proves nothing unless the sanitizer is live. These
// functions commit deliberate undefined behaviour that ASan / UBSan / TSan must
// report (and abort on); ci/asan.sh, ci/tsan.sh and ci/fuzz.sh call each in a
// child process and fail unless the report appears. Never compiled into a release.
#include <cstdint>
#include <memory>
#include <thread>

#include "register.hpp"

namespace embtable::binding {
namespace {

// Opaque to the optimizer, so the UB below is not folded away at compile time.
template <class T>
T launder_value(T v) {
  asm volatile("" : "+r"(v));
  return v;
}

// Heap out-of-bounds read one element past a 4-element buffer (ASan:
// heap-buffer-overflow).
int64_t canary_oob_read() {
  auto buf = std::make_unique<int64_t[]>(4);
  for (size_t i = 0; i < 4; ++i) buf[i] = static_cast<int64_t>(i);
  const int64_t* p = launder_value(buf.get());
  const int64_t k = launder_value(int64_t{4});
  return p[k];
}

// Signed 32-bit overflow (UBSan: signed-integer-overflow) for x near INT32_MAX.
int32_t canary_signed_overflow(int32_t x) {
  const int32_t big = launder_value(int32_t{0x7fffffff});
  return launder_value(x) + big;
}

// Two threads increment one plain int64 (TSan: data race). Returns the sum.
int64_t canary_data_race() {
  int64_t shared = 0;
  auto bump = [&shared] {
    for (int i = 0; i < 100000; ++i) shared = launder_value(shared) + 1;
  };
  std::thread a(bump), b(bump);
  a.join();
  b.join();
  return shared;
}

}  // namespace

void register_canaries(py::module_& m) {
  m.def("_canary_oob_read", &canary_oob_read,
        "Deliberate heap out-of-bounds read (sanitizer self-test only).");
  m.def("_canary_signed_overflow", &canary_signed_overflow, py::arg("x"),
        "Deliberate signed int32 overflow for x >= 1 (sanitizer self-test only).");
  m.def("_canary_data_race", &canary_data_race,
        "Deliberate data race between two threads (sanitizer self-test only).");
}

}  // namespace embtable::binding
