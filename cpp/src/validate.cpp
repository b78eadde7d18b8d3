#include "embtable/validate.hpp"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <vector>

#include "embtable/parallel.hpp"
#include "kernels.hpp"

namespace embtable {

int64_t shape_size(std::span<const int64_t> shape) noexcept {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

template <class Index>
int64_t find_first_bad_index(const Index* indices, int64_t n, int64_t V) noexcept {
  // The scan itself is a per-ISA kernel (vectorised); any scalar type selects it.
  const auto scan = kernels::ops<float, Index>().first_bad;
  std::atomic<int64_t> first{n};
  parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    if (b >= first.load(std::memory_order_relaxed)) return;
    const int64_t i = scan(indices, b, e, V);
    if (i < 0) return;
    int64_t cur = first.load(std::memory_order_relaxed);
    while (i < cur && !first.compare_exchange_weak(cur, i, std::memory_order_relaxed)) {
    }
  });
  const int64_t pos = first.load();
  return pos == n ? -1 : pos;
}

std::string index_error_message(const std::string& value,
                                std::span<const int64_t> shape, int64_t flat,
                                int64_t V) {
  // Unravel `flat` in C order: the last axis varies fastest.
  std::vector<int64_t> coord(shape.size());
  int64_t rest = flat;
  for (size_t k = shape.size(); k-- > 0;) {
    const int64_t extent = std::max<int64_t>(shape[k], 1);
    coord[k] = rest % extent;
    rest /= extent;
  }
  std::string msg;
  msg.reserve(96);
  msg.append("index ").append(value).append(" at position (");
  for (size_t k = 0; k < coord.size(); ++k) {
    if (k) msg.append(", ");
    msg.append(std::to_string(coord[k]));
  }
  if (coord.size() == 1) msg.append(",");
  msg.append(") is out of bounds for a table with ").append(std::to_string(V));
  msg.append(V == 1 ? " row" : " rows");
  return msg;
}

template <class Index>
void check_indices(const Index* indices, std::span<const int64_t> shape, int64_t V) {
  const int64_t n = shape_size(shape);
  const int64_t bad = find_first_bad_index(indices, n, V);
  if (bad >= 0)
    throw std::out_of_range(
        index_error_message(std::to_string(indices[bad]), shape, bad, V));
}

template int64_t find_first_bad_index<int32_t>(const int32_t*, int64_t,
                                               int64_t) noexcept;
template int64_t find_first_bad_index<int64_t>(const int64_t*, int64_t,
                                               int64_t) noexcept;
template void check_indices<int32_t>(const int32_t*, std::span<const int64_t>, int64_t);
template void check_indices<int64_t>(const int64_t*, std::span<const int64_t>, int64_t);

}  // namespace embtable
