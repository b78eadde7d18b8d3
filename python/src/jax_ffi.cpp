// embtable._jax_ffi: XLA FFI handlers so embtable.jax runs the core inside an XLA
// program, on XLA's own buffers (no copy in, none out). Built only when jaxlib's FFI
// headers are found at configure time (EMBTABLE_JAX_FFI); embtable.jax falls back to
// jax.pure_callback without it.
//
// Under jax.vmap (vmap_method="expand_dims") every operand gains the same k leading
// batch dims, of size 1 where that operand is unbatched. Each handler learns k from
// a static attribute (the unbatched rank of the ids) and runs the kernel once per
// batch element, broadcasting size-1 dims; a gather whose table is unbatched is one
// call over every id.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "embtable/embedding_bag.hpp"
#include "embtable/gather.hpp"
#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/tuning.hpp"
#include "xla/ffi/api/ffi.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ffi = xla::ffi;
namespace py = pybind11;

namespace {

using Shape = std::vector<int64_t>;

Shape dims_of(const ffi::AnyBuffer& b) {
  const auto d = b.dimensions();
  return Shape(d.begin(), d.end());
}

int64_t product(const Shape& s, size_t from = 0) {
  int64_t n = 1;
  for (size_t i = from; i < s.size(); ++i) n *= s[i];
  return n;
}

// The k leading batch dims of several operands, broadcast together.
struct Batch {
  Shape shape;  // broadcast batch shape (k dims)
  int64_t count = 1;

  explicit Batch(const std::vector<Shape>& operands, size_t k) : shape(k, 1) {
    for (const Shape& s : operands)
      for (size_t d = 0; d < k; ++d) shape[d] = std::max(shape[d], s[d]);
    count = product(shape);
  }

  // Element offset of batch element b in an operand of shape s (inner = elements
  // per batch element); size-1 dims broadcast.
  int64_t offset(const Shape& s, int64_t inner, int64_t b) const {
    int64_t off = 0, stride = inner;
    for (size_t d = shape.size(); d-- > 0;) {
      const int64_t i = b % shape[d];
      b /= shape[d];
      if (s[d] != 1) off += i * stride;
      stride *= s[d];
    }
    return off;
  }
};

template <class F>
ffi::Error guarded(F&& f) {
  try {
    f();
  } catch (const std::out_of_range& e) {
    return ffi::Error(ffi::ErrorCode::kOutOfRange, e.what());
  } catch (const std::invalid_argument& e) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, e.what());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, e.what());
  }
  return ffi::Error::Success();
}

// Call f(Scalar{}, Index{}) for the (float, int) dtypes of a call.
template <class F>
void dispatch(ffi::DataType scalar, ffi::DataType index, F&& f) {
  const bool s64 = index == ffi::DataType::S64;
  if (!s64 && index != ffi::DataType::S32)
    throw std::invalid_argument("embtable: ids must be int32 or int64");
  if (scalar == ffi::DataType::F32) {
    s64 ? f(float{}, int64_t{}) : f(float{}, int32_t{});
  } else if (scalar == ffi::DataType::F64) {
    s64 ? f(double{}, int64_t{}) : f(double{}, int32_t{});
  } else {
    throw std::invalid_argument("embtable: tables must be float32 or float64");
  }
}

// XLA hands us fresh output buffers whose pages are not yet mapped; with 4 KiB pages
// the first touch of a (V, D) gradient costs one page fault per 4 KiB, more than the
// kernel itself. Ask for transparent huge pages first (NumPy does the same for its
// own large allocations); a hint only, harmless where THP is off or unsupported.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (bytes < 2 * kHuge) return;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
  if (last > first)
    madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

void zero(void* data, int64_t bytes) {
  advise_huge_pages(data, static_cast<size_t>(bytes));
  // Parallel first touch: the gradient buffer is as large as the table.
  auto* p = static_cast<char*>(data);
  const int64_t grain =
      std::max<int64_t>(embtable::tuning().parallel_bytes.value, 4096);
  embtable::parallel_for(0, bytes, grain, [&](int64_t b, int64_t e) {
    std::memset(p + b, 0, static_cast<size_t>(e - b));
  });
}

Shape tail(const Shape& s, size_t k) {
  return Shape(s.begin() + static_cast<std::ptrdiff_t>(k), s.end());
}

// out[..., i, :] = table[..., ids[..., i], :]
ffi::Error gather_impl(ffi::AnyBuffer table, ffi::AnyBuffer ids,
                       ffi::Result<ffi::AnyBuffer> out) {
  return guarded([&] {
    const Shape ts = dims_of(table), is = dims_of(ids);
    const size_t k = ts.size() - 2;
    const int64_t V = ts[k], D = ts[k + 1];
    const Batch batch({ts, is}, k);
    const bool table_unbatched =
        product(Shape(ts.begin(), ts.begin() + static_cast<std::ptrdiff_t>(k))) == 1;
    dispatch(table.element_type(), ids.element_type(), [&](auto s, auto i) {
      using Scalar = decltype(s);
      using Index = decltype(i);
      const auto* t = static_cast<const Scalar*>(table.untyped_data());
      const auto* idx = static_cast<const Index*>(ids.untyped_data());
      auto* o = static_cast<Scalar*>(out->untyped_data());
      advise_huge_pages(o, out->size_bytes());
      if (table_unbatched &&
          product(is) * D == static_cast<int64_t>(out->element_count())) {
        embtable::gather<Scalar, Index>(t, V, D, idx, is, o);
        return;
      }
      const Shape it = tail(is, k);
      const int64_t n = product(it);
      for (int64_t b = 0; b < batch.count; ++b)
        embtable::gather<Scalar, Index>(t + batch.offset(ts, V * D, b), V, D,
                                        idx + batch.offset(is, n, b), it,
                                        o + b * n * D);
    });
  });
}

// target = zeros; target[..., ids[..., i], :] += updates[..., i, :]
ffi::Error scatter_impl(ffi::AnyBuffer ids, ffi::AnyBuffer updates,
                        ffi::Result<ffi::AnyBuffer> target, int64_t ids_rank,
                        bool deterministic) {
  return guarded([&] {
    const Shape is = dims_of(ids), us = dims_of(updates), ts = dims_of(*target);
    const size_t k = is.size() - static_cast<size_t>(ids_rank);
    const int64_t V = ts[k], D = ts[k + 1];
    const Batch batch({is, us}, k);
    zero(target->untyped_data(), static_cast<int64_t>(target->size_bytes()));
    dispatch(updates.element_type(), ids.element_type(), [&](auto s, auto i) {
      using Scalar = decltype(s);
      using Index = decltype(i);
      const auto* idx = static_cast<const Index*>(ids.untyped_data());
      const auto* u = static_cast<const Scalar*>(updates.untyped_data());
      auto* t = static_cast<Scalar*>(target->untyped_data());
      const Shape it = tail(is, k);
      const int64_t n = product(it);
      for (int64_t b = 0; b < batch.count; ++b)
        embtable::scatter_add<Scalar, Index>(
            t + b * V * D, V, D, idx + batch.offset(is, n, b), it,
            u + batch.offset(us, n * D, b), deterministic);
    });
  });
}

std::vector<int64_t> offsets_of(const ffi::AnyBuffer& offsets, int64_t off, int64_t n) {
  std::vector<int64_t> o(static_cast<size_t>(n));
  if (offsets.element_type() == ffi::DataType::S64) {
    const auto* p = static_cast<const int64_t*>(offsets.untyped_data()) + off;
    std::copy(p, p + n, o.begin());
  } else if (offsets.element_type() == ffi::DataType::S32) {
    const auto* p = static_cast<const int32_t*>(offsets.untyped_data()) + off;
    std::copy(p, p + n, o.begin());
  } else {
    throw std::invalid_argument("embtable: offsets must be int32 or int64");
  }
  return o;
}

// The bags of one batch element: rows of 2-D ids, or runs starting at offsets.
struct BagsOf {
  std::vector<int64_t> offsets;
  embtable::Bags bags;
};

BagsOf bags_of(const Shape& it, bool has_offsets, const ffi::AnyBuffer& offsets,
               const Shape& os, const Batch& batch, size_t k, int64_t b) {
  BagsOf r;
  if (!has_offsets) {
    r.bags = embtable::fixed_bags(it[0], it[1]);
    return r;
  }
  const int64_t nof = os[k];
  r.offsets = offsets_of(offsets, batch.offset(os, nof, b), nof);
  r.bags = embtable::ragged_bags(r.offsets.data(), nof, it[0], false);
  return r;
}

// out[..., bag, :] = pool(table[..., ids of bag, :]); argmax as the max mode's winners
ffi::Error bag_impl(ffi::AnyBuffer table, ffi::AnyBuffer ids, ffi::AnyBuffer offsets,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> argmax,
                    int64_t mode_id, bool has_offsets) {
  return guarded([&] {
    const Shape ts = dims_of(table), is = dims_of(ids), os = dims_of(offsets);
    const size_t k = ts.size() - 2;
    const int64_t V = ts[k], D = ts[k + 1];
    const auto mode = static_cast<embtable::BagMode>(mode_id);
    const Batch batch({ts, is, os}, k);
    const Shape it = tail(is, k);
    const int64_t n = product(it);
    const int64_t B = has_offsets ? os[k] : it[0];
    const bool want_argmax = mode == embtable::BagMode::max;
    std::vector<int64_t> winners(want_argmax ? static_cast<size_t>(B * D) : 0);
    dispatch(table.element_type(), ids.element_type(), [&](auto s, auto i) {
      using Scalar = decltype(s);
      using Index = decltype(i);
      const auto* t = static_cast<const Scalar*>(table.untyped_data());
      const auto* idx = static_cast<const Index*>(ids.untyped_data());
      auto* o = static_cast<Scalar*>(out->untyped_data());
      advise_huge_pages(o, out->size_bytes());
      for (int64_t b = 0; b < batch.count; ++b) {
        const BagsOf bo = bags_of(it, has_offsets, offsets, os, batch, k, b);
        embtable::embedding_bag<Scalar, Index>(
            t + batch.offset(ts, V * D, b), V, D, idx + batch.offset(is, n, b), it,
            bo.bags, mode, nullptr, -1, o + b * B * D,
            want_argmax ? winners.data() : nullptr);
        if (!want_argmax) continue;
        // JAX without x64 has no int64 arrays: the winners go out as int32 then.
        if (argmax->element_type() == ffi::DataType::S64) {
          auto* a = static_cast<int64_t*>(argmax->untyped_data()) + b * B * D;
          std::copy(winners.begin(), winners.end(), a);
        } else {
          auto* a = static_cast<int32_t*>(argmax->untyped_data()) + b * B * D;
          for (size_t j = 0; j < winners.size(); ++j)
            a[j] = static_cast<int32_t>(winners[j]);
        }
      }
    });
  });
}

// target = zeros; target += the table gradient of bag_impl's output gradient
ffi::Error bag_backward_impl(ffi::AnyBuffer grad, ffi::AnyBuffer ids,
                             ffi::AnyBuffer offsets, ffi::AnyBuffer argmax,
                             ffi::Result<ffi::AnyBuffer> target, int64_t mode_id,
                             bool has_offsets, bool deterministic) {
  return guarded([&] {
    const Shape gs = dims_of(grad), is = dims_of(ids), os = dims_of(offsets),
                as = dims_of(argmax), ts = dims_of(*target);
    const size_t k = gs.size() - 2;
    const int64_t B = gs[k], D = gs[k + 1], V = ts[k];
    const auto mode = static_cast<embtable::BagMode>(mode_id);
    const bool max_mode = mode == embtable::BagMode::max;
    const Batch batch({gs, is, os, as}, k);
    const Shape it = tail(is, k);
    const int64_t n = product(it);
    zero(target->untyped_data(), static_cast<int64_t>(target->size_bytes()));
    // At least one element: with no bags (B * D == 0) an empty vector's data() may
    // be null, which the core reads as a missing argmax.
    std::vector<int64_t> winners(
        max_mode ? static_cast<size_t>(std::max<int64_t>(B * D, 1)) : 0);
    dispatch(grad.element_type(), ids.element_type(), [&](auto s, auto i) {
      using Scalar = decltype(s);
      using Index = decltype(i);
      const auto* g = static_cast<const Scalar*>(grad.untyped_data());
      const auto* idx = static_cast<const Index*>(ids.untyped_data());
      auto* t = static_cast<Scalar*>(target->untyped_data());
      for (int64_t b = 0; b < batch.count; ++b) {
        const BagsOf bo = bags_of(it, has_offsets, offsets, os, batch, k, b);
        if (max_mode) {
          const int64_t off = batch.offset(as, B * D, b);
          if (argmax.element_type() == ffi::DataType::S64) {
            const auto* a = static_cast<const int64_t*>(argmax.untyped_data()) + off;
            std::copy(a, a + B * D, winners.begin());
          } else {
            const auto* a = static_cast<const int32_t*>(argmax.untyped_data()) + off;
            std::copy(a, a + B * D, winners.begin());
          }
        }
        embtable::embedding_bag_backward<Scalar, Index>(
            g + batch.offset(gs, B * D, b), V, D, idx + batch.offset(is, n, b), it,
            bo.bags, mode, nullptr, -1, max_mode ? winners.data() : nullptr,
            t + b * V * D, deterministic);
      }
    });
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    EmbtableGather, gather_impl,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmbtableScatterAdd, scatter_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("ids_rank")
                                  .Attr<bool>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmbtableBag, bag_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("mode")
                                  .Attr<bool>("has_offsets"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmbtableBagBackward, bag_backward_impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("mode")
                                  .Attr<bool>("has_offsets")
                                  .Attr<bool>("deterministic"));

PYBIND11_MODULE(_jax_ffi, m) {
  m.doc() = "XLA FFI handlers of embtable's kernels (for embtable.jax)";
  m.def("handlers", [] {
    py::dict d;
    d["embtable_gather"] = py::capsule(reinterpret_cast<void*>(&EmbtableGather));
    d["embtable_scatter_add"] =
        py::capsule(reinterpret_cast<void*>(&EmbtableScatterAdd));
    d["embtable_bag"] = py::capsule(reinterpret_cast<void*>(&EmbtableBag));
    d["embtable_bag_backward"] =
        py::capsule(reinterpret_cast<void*>(&EmbtableBagBackward));
    return d;
  });
}
