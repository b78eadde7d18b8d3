// Runtime SIMD dispatch. The hot loops are compiled once per instruction set
// (baseline x86-64, AVX2, AVX-512) from one source; the level is chosen per call
// from the running CPU, or forced with EMBTABLE_SIMD=baseline|avx2|avx512 (read
// on first use) or set_simd_level().
#pragma once

#include <string>
#include <vector>

namespace embtable {

enum class Simd : int { baseline = 0, avx2 = 1, avx512 = 2 };

const char* simd_name(Simd level) noexcept;
// Parses "baseline" / "avx2" / "avx512"; std::invalid_argument otherwise.
Simd parse_simd(const std::string& name);
// Levels compiled into this build, lowest first.
std::vector<Simd> simd_compiled();
// The best compiled level this CPU runs.
Simd simd_detected() noexcept;
// The level kernels use now.
Simd simd_selected() noexcept;
// Forces a level; std::invalid_argument when it is not compiled or the CPU lacks it.
void set_simd_level(Simd level);

}  // namespace embtable
