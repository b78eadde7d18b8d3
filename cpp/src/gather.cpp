#include "embtable/gather.hpp"

#include "embtable/parallel.hpp"
#include "embtable/validate.hpp"
#include "kernels.hpp"

namespace embtable {

template <class Scalar, class Index>
void gather(const Scalar* table, int64_t V, int64_t D, const Index* indices,
            std::span<const int64_t> shape, Scalar* out) {
  const int64_t n = shape_size(shape);
  check_indices(indices, shape, V);
  if (n == 0 || D == 0) return;
  const auto& ops = kernels::ops<Scalar, Index>();
  const int64_t row_bytes = D * static_cast<int64_t>(sizeof(Scalar));
  // An output larger than the last-level cache cannot stay there for its reader
  // anyway: stream it past the cache instead of reading every output line in
  // before writing it. A smaller one stays cached (streaming it to DRAM would
  // cost the reader a round trip).
  const auto kernel =
      n * row_bytes > tuning().stream_bytes.value ? ops.gather_stream : ops.gather;
  parallel_for(0, n, grain_rows(row_bytes), [&](int64_t b, int64_t e) {
    kernel(table, D, indices, b, e, out + b * D);
  });
}

template <class Scalar, class Index>
void gather_ref(const Scalar* table, int64_t D, const Index* indices, int64_t n,
                Scalar* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d)
      out[i * D + d] = table[static_cast<int64_t>(indices[i]) * D + d];
}

#define EMBTABLE_INSTANTIATE(Scalar, Index)                                          \
  template void gather<Scalar, Index>(const Scalar*, int64_t, int64_t, const Index*, \
                                      std::span<const int64_t>, Scalar*);            \
  template void gather_ref<Scalar, Index>(const Scalar*, int64_t, const Index*,      \
                                          int64_t, Scalar*);
EMBTABLE_INSTANTIATE(float, int32_t)
EMBTABLE_INSTANTIATE(float, int64_t)
EMBTABLE_INSTANTIATE(double, int32_t)
EMBTABLE_INSTANTIATE(double, int64_t)
#undef EMBTABLE_INSTANTIATE

}  // namespace embtable
