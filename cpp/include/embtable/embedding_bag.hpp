// Pooled lookups (torch.nn.functional.embedding_bag) and their gradients.
//
// Bags: bag b covers the index positions [begin(b), end(b)):
//   fixed   (2-D indices (B, L)):          begin(b) = b * L,       end(b) = (b + 1) * L
//   ragged  (1-D indices + offsets):       begin(b) = offsets[b],  end(b) = offsets[b +
//   1],
//           the last bag ending at n = len(indices) (include_last_offset=False), or
//           at offsets[B] == n, the extra last offset (include_last_offset=True).
//   // offsets = [0, 2, 2, 5], n = 7          -> bags of 2, 0, 3, 2 ids
//   // offsets = [0, 2, 2, 5], n = 5, last   -> bags of 2, 0, 3 ids
//
// Forward, for every bag b and column d (ids equal to padding_idx are skipped):
//   sum:   out[b, d] = sum_{i in bag b} w[i] * table[indices[i], d]   (w[i] = 1
//   unweighted) mean:  out[b, d] = (sum_{i in bag b} table[indices[i], d]) / count_b
//          count_b = number of non-padding ids in the bag
//   max:   out[b, d] = table[r, d] for the first id r in bag order whose value is
//          greater than every earlier one (`>`), argmax[b, d] = r
//   a bag with no non-padding id: out[b, :] = 0 (argmax[b, :] = -1)
// Each output row is computed by one thread, in index order, kept in registers and
// stored once: the forward is exact and independent of the thread count.
//
// Backward (target[V, D] is accumulated into, never cleared):
//   sum/mean:  target[indices[i], :] += scale_i * grad_out[bag(i), :]   in index order,
//              scale_i = w[i] (weighted sum), 1 / count_b (mean), 1 (sum); padding
//              skipped
//   max:       target[argmax[b, d], d] += grad_out[b, d]  for argmax[b, d] >= 0, in bag
//   order per_sample_weights gradient (sum only):
//              grad_w[i] = dot(grad_out[bag(i), :], table[indices[i], :]), 0 for
//              padding
//
// Validation happens before the first write: bag structure (std::invalid_argument,
// naming the offending offset position) and then every index (std::out_of_range).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace embtable {

enum class BagMode : int { sum = 0, mean = 1, max = 2 };

// An allocator whose value-initialization is a no-op: a vector resized with it is
// not zero-filled (the sparse backward writes every element itself, in parallel).
template <class T>
struct NoInitAllocator {
  using value_type = T;
  NoInitAllocator() noexcept = default;
  template <class U>
  NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  void construct(U*) noexcept {}
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const NoInitAllocator<U>&) const noexcept {
    return true;
  }
};
template <class Scalar>
using RowValues = std::vector<Scalar, NoInitAllocator<Scalar>>;

// Parses "sum" / "mean" / "max"; std::invalid_argument otherwise.
BagMode parse_bag_mode(const char* name);

// The bag structure over n index positions (see the header comment). Build it
// with fixed_bags or ragged_bags; the latter validates offsets.
struct Bags {
  int64_t num_bags = 0;
  int64_t num_indices = 0;
  int64_t bag_size = 0;              // fixed bags only
  const int64_t* offsets = nullptr;  // ragged bags: bag starts (not owned)
  int64_t num_offsets = 0;

  int64_t begin(int64_t b) const noexcept {
    return offsets ? offsets[b] : b * bag_size;
  }
  int64_t end(int64_t b) const noexcept {
    if (!offsets) return (b + 1) * bag_size;
    return b + 1 < num_offsets ? offsets[b + 1] : num_indices;
  }
};

// B bags of L ids each over B * L positions.
Bags fixed_bags(int64_t B, int64_t L) noexcept;

// Ragged bags from `num_offsets` bag starts over n positions. Throws
// std::invalid_argument naming the first bad position when offsets[0] != 0, an
// offset decreases, an offset is past n, include_last_offset is set and the last
// offset is not n (or there is none), or there are no offsets but n > 0.
Bags ragged_bags(const int64_t* offsets, int64_t num_offsets, int64_t n,
                 bool include_last_offset);

// Forward. `index_shape` is the shape of `indices` (for the IndexError position);
// per_sample_weights (n values) or nullptr; padding_idx < 0 means none;
// argmax (B * D int64) or nullptr, written in max mode only.
template <class Scalar, class Index>
void embedding_bag(const Scalar* table, int64_t V, int64_t D, const Index* indices,
                   std::span<const int64_t> index_shape, const Bags& bags, BagMode mode,
                   const Scalar* per_sample_weights, int64_t padding_idx, Scalar* out,
                   int64_t* argmax);

// Scalar, single-threaded oracle of the forward (no validation).
template <class Scalar, class Index>
void embedding_bag_ref(const Scalar* table, int64_t D, const Index* indices,
                       const Bags& bags, BagMode mode, const Scalar* per_sample_weights,
                       int64_t padding_idx, Scalar* out, int64_t* argmax);

// Dense backward into target (V, D). `argmax` (B * D) is required in max mode
// (the forward's), ignored otherwise. deterministic = true: each target row is
// owned by one thread that applies its updates in index (bag) order, so the
// result is bitwise identical for every thread count. false: sum/mean threads
// split the bags and update rows under striped row locks (order may vary).
template <class Scalar, class Index>
void embedding_bag_backward(const Scalar* grad_out, int64_t V, int64_t D,
                            const Index* indices, std::span<const int64_t> index_shape,
                            const Bags& bags, BagMode mode,
                            const Scalar* per_sample_weights, int64_t padding_idx,
                            const int64_t* argmax, Scalar* target, bool deterministic);

// Scalar, single-threaded oracle of the dense backward (no validation).
template <class Scalar, class Index>
void embedding_bag_backward_ref(const Scalar* grad_out, int64_t D, const Index* indices,
                                const Bags& bags, BagMode mode,
                                const Scalar* per_sample_weights, int64_t padding_idx,
                                const int64_t* argmax, Scalar* target);

// Sparse backward: the rows that receive gradient (sorted, unique; never
// padding_idx; in max mode the rows that won) and their summed gradients
// (rows.size() x D, row-major), each summed in index (bag) order, so equal to the
// dense backward's rows bit for bit. Memory is proportional to the number of ids
// (B * D entries in max mode), never to V.
template <class Scalar, class Index>
void embedding_bag_backward_sparse(
    const Scalar* grad_out, int64_t V, int64_t D, const Index* indices,
    std::span<const int64_t> index_shape, const Bags& bags, BagMode mode,
    const Scalar* per_sample_weights, int64_t padding_idx, const int64_t* argmax,
    std::vector<int64_t>& rows, RowValues<Scalar>& values);

// Gradient with respect to per_sample_weights (sum mode): grad_w (n values).
template <class Scalar, class Index>
void embedding_bag_per_sample_weights_backward(const Scalar* grad_out,
                                               const Scalar* table, int64_t V,
                                               int64_t D, const Index* indices,
                                               std::span<const int64_t> index_shape,
                                               const Bags& bags, int64_t padding_idx,
                                               Scalar* grad_w);

// Scalar, single-threaded oracle of the per_sample_weights gradient.
template <class Scalar, class Index>
void embedding_bag_per_sample_weights_backward_ref(const Scalar* grad_out,
                                                   const Scalar* table, int64_t D,
                                                   const Index* indices,
                                                   const Bags& bags,
                                                   int64_t padding_idx, Scalar* grad_w);

}  // namespace embtable
