// Internal: how sgns_train turns a token stream into (center, context,
// negatives) pairs. Shared by the per-ISA kernels and sgns_pairs (the tests'
// view of the same pairs); internal linkage, like kernels_impl.hpp.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace embtable::sgns_kernels {
namespace {

// splitmix64: a counter-based generator, so the draws for position i depend on
// (seed, i) only, never on how the positions are split between threads.
inline uint64_t mix64(uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct PositionRng {
  uint64_t state;
  PositionRng(uint64_t seed, int64_t position) noexcept
      : state(mix64(seed ^
                    mix64(static_cast<uint64_t>(position) + 0x9E3779B97F4A7C15ull))) {}
  uint64_t next() noexcept { return mix64(state += 0x9E3779B97F4A7C15ull); }
  // Uniform in [0, n) for n >= 1 (multiply-shift: no division, no visible bias).
  int64_t below(int64_t n) noexcept {
    return static_cast<int64_t>(
        (static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n)) >> 64);
  }
};

// The pairs of position i, word2vec's order: a reduced window b uniform in
// [1, window], then the positions j = i - b .. i + b (j != i, inside [0, n) and
// the same sentence) from left to right. For each, f(token[j], token[i], negs):
// the input row is the context token j, the output row the token at i, and
// negs holds K ids drawn uniformly from `noise`. The m-th pair's negatives are
// written at negs.data() + m * K (f gets that pointer); `negs` grows as pairs
// come, so it stays as small as the most pairs one center has had, whatever the
// window.
// tokens = [7, 3, 9], window 1 (so b = 1), i = 1 -> f(7, 3, ..), f(9, 3, ..)
template <class Index, class F>
inline void for_each_pair(const Index* tokens, const int64_t* sentences, int64_t n,
                          int64_t window, int64_t K, const Index* noise,
                          int64_t noise_len, uint64_t seed, int64_t i,
                          std::vector<int64_t>& negs, F&& f) {
  if (window < 1) return;
  PositionRng rng(seed, i);
  const int64_t b = 1 + rng.below(window);
  const int64_t lo = i - b < 0 ? 0 : i - b;
  const int64_t hi = b >= n - i ? n - 1 : i + b;  // (i + b may not fit int64)
  const int64_t s = sentences ? sentences[i] : 0;
  const int64_t target = static_cast<int64_t>(tokens[i]);
  const auto k_ids = static_cast<size_t>(K);
  size_t used = 0;
  for (int64_t j = lo; j <= hi; ++j) {
    if (j == i || (sentences && sentences[j] != s)) continue;
    // (+ 1: data() is never null, also for K = 0.)
    if (negs.size() < used + k_ids + 1)
      negs.resize(std::max(2 * negs.size(), used + k_ids + 1));
    int64_t* ng = negs.data() + used;
    for (int64_t k = 0; k < K; ++k)
      ng[k] = static_cast<int64_t>(noise[rng.below(noise_len)]);
    f(static_cast<int64_t>(tokens[j]), target, static_cast<const int64_t*>(ng));
    used += k_ids;
  }
}

}  // namespace
}  // namespace embtable::sgns_kernels
