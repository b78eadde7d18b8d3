// embedding_bag forward, backward (dense and sparse) and the per_sample_weights
// gradient.
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "bag_args.hpp"
#include "checks.hpp"
#include "embtable/embedding_bag.hpp"
#include "embtable/validate.hpp"
#include "register.hpp"

namespace embtable::binding {

BagInput bag_input(const py::array& indices, const py::object& offsets_obj,
                   bool include_last_offset) {
  BagInput in{indices, index_kind(indices, "indices"), shape_of(indices), py::array(),
              Bags{}};
  const bool has_offsets = !offsets_obj.is_none();
  if (indices.ndim() == 2) {
    if (has_offsets)
      throw py::value_error(
          "offsets must be None when indices is 2-D " + shape_str(indices) +
          " (B fixed-size bags); pass 1-D indices with offsets for ragged "
          "bags");
    in.bags = fixed_bags(indices.shape(0), indices.shape(1));
    return in;
  }
  if (indices.ndim() != 1)
    throw py::value_error(
        "indices must be 2-D (B, L) fixed-size bags, or 1-D with offsets; "
        "got shape " +
        shape_str(indices));
  if (!has_offsets)
    throw py::value_error(
        "1-D indices " + shape_str(indices) +
        " need offsets (the start of each bag); or pass 2-D indices (B, L)");
  in.offsets = offsets_obj.cast<py::array>();
  const py::dtype dt = in.offsets.dtype();
  if (dt.kind() != 'i' || dt.itemsize() != 8 ||
      !(in.offsets.flags() & py::array::c_style))
    throw py::type_error("offsets must be a C-contiguous int64 array here, got " +
                         py::str(dt).cast<std::string>());
  if (in.offsets.ndim() != 1)
    throw py::value_error("offsets must be 1-D (the start of each bag), got shape " +
                          shape_str(in.offsets));
  const auto* o = static_cast<const int64_t*>(in.offsets.data());
  const int64_t num = in.offsets.shape(0), n = indices.shape(0);
  in.bags = ragged_bags(o, num, n, include_last_offset);
  return in;
}

int64_t padding_of(const py::object& padding_idx, int64_t V) {
  if (padding_idx.is_none()) return -1;
  // Any Python integer (operator.index), compared before narrowing: 2**63 or
  // np.uint64(2**63) is out of bounds like 5 is, not a failed int64 cast.
  const auto value =
      py::reinterpret_steal<py::object>(PyNumber_Index(padding_idx.ptr()));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long p = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0 && p == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || p < 0 || p >= V)
    throw py::value_error("padding_idx " + py::str(value).cast<std::string>() +
                          " is out of bounds for a table with " + std::to_string(V) +
                          " rows; it must be in [0, V)");
  return static_cast<int64_t>(p);
}

// per_sample_weights: float like `ref`, shaped like indices, mode sum; or none.
std::optional<py::array> weights_of(const py::object& w_obj, BagMode mode,
                                    const BagInput& in, const py::array& ref,
                                    const char* ref_name) {
  if (w_obj.is_none()) return std::nullopt;
  const py::array w = w_obj.cast<py::array>();
  float_kind(w, "per_sample_weights");
  check_same_float(w, "per_sample_weights", ref, ref_name);
  if (mode != BagMode::sum)
    throw py::value_error(
        "per_sample_weights are only supported with mode='sum'; use "
        "mode='sum' or drop the weights");
  check_shape(w, "per_sample_weights", in.index_shape, "indices has shape");
  return c_contiguous_input(w);
}

namespace {

template <class Scalar>
const Scalar* opt_ptr(const std::optional<py::array>& a) {
  return a ? const_ptr<Scalar>(*a) : nullptr;
}

// argmax of the max mode: int64 (B, D), C-contiguous.
py::array argmax_of(const py::object& obj, BagMode mode, int64_t B, int64_t D) {
  if (mode != BagMode::max) return py::array();
  if (obj.is_none())
    throw py::value_error(
        "the max-mode backward needs argmax, the (B, D) winners of the "
        "forward (embedding_bag(..., return_argmax=True))");
  const py::array a = obj.cast<py::array>();
  if (a.dtype().kind() != 'i' || a.dtype().itemsize() != 8 ||
      !(a.flags() & py::array::c_style))
    throw py::type_error("argmax must be a C-contiguous int64 array");
  check_shape(a, "argmax", {B, D}, "(B, D) is");
  return a;
}

// grad_out: float like `ref`, (B, D).
py::array grad_of(const py::array& g, const py::array& ref, const char* ref_name,
                  int64_t B, int64_t D) {
  float_kind(g, "grad_out");
  check_same_float(g, "grad_out", ref, ref_name);
  check_shape(g, "grad_out", {B, D}, "(num_bags, D) is");
  return c_contiguous_input(g);
}

py::object embedding_bag_py(const py::array& table, const py::array& indices,
                            const py::object& offsets, const std::string& mode_name,
                            const py::object& weights_obj,
                            const py::object& padding_obj, bool include_last_offset,
                            const py::object& out_obj, bool return_argmax,
                            bool reference) {
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", false);
  const BagMode mode = parse_bag_mode(mode_name.c_str());
  const int64_t V = table.shape(0), D = table.shape(1);
  const BagInput in = bag_input(indices, offsets, include_last_offset);
  const int64_t padding_idx = padding_of(padding_obj, V);
  const auto weights = weights_of(weights_obj, mode, in, table, "table");
  const int64_t B = in.bags.num_bags;
  py::array out;
  if (out_obj.is_none()) {
    out = py::array(table.dtype(), std::vector<int64_t>{B, D});
  } else {
    out = inplace_array(out_obj, "out");
    check_same_float(out, "out", table, "table");
    check_shape(out, "out", {B, D}, "(num_bags, D) is");
    check_inplace(out, "out");
    check_no_overlap(out, "out", table, "table");
    check_no_overlap(out, "out", indices, "indices");
    check_no_overlap(out, "out", in.offsets, "offsets");  // empty for fixed bags
    if (weights) check_no_overlap(out, "out", *weights, "per_sample_weights");
  }
  const bool want_argmax = return_argmax && mode == BagMode::max;
  py::array argmax =
      want_argmax ? py::array(py::dtype::of<int64_t>(), std::vector<int64_t>{B, D})
                  : py::array();
  dispatch(fk, in.ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    const Scalar* t = const_ptr<Scalar>(table);
    const Index* idx = const_ptr<Index>(in.indices);
    const Scalar* w = opt_ptr<Scalar>(weights);
    int64_t* am = want_argmax ? mutable_ptr<int64_t>(argmax) : nullptr;
    Scalar* o = mutable_ptr<Scalar>(out);
    py::gil_scoped_release nogil;
    if (reference) {
      check_indices(idx, in.index_shape, V);
      embedding_bag_ref<Scalar, Index>(t, D, idx, in.bags, mode, w, padding_idx, o, am);
    } else {
      embedding_bag<Scalar, Index>(t, V, D, idx, in.index_shape, in.bags, mode, w,
                                   padding_idx, o, am);
    }
  });
  if (return_argmax)
    return py::make_tuple(out, want_argmax ? py::object(argmax) : py::none());
  return out;
}

py::array backward_py(const py::array& grad_out, const py::array& indices,
                      const py::object& offsets, const std::string& mode_name,
                      const py::object& weights_obj, const py::object& padding_obj,
                      bool include_last_offset, const py::object& argmax_obj,
                      const py::object& target_obj, bool deterministic,
                      bool reference) {
  py::array target = inplace_array(target_obj, "target");
  const FloatKind fk = float_kind(target, "target");
  check_table(target, "target", true);
  const BagMode mode = parse_bag_mode(mode_name.c_str());
  const int64_t V = target.shape(0), D = target.shape(1);
  const BagInput in = bag_input(indices, offsets, include_last_offset);
  const int64_t padding_idx = padding_of(padding_obj, V);
  const auto weights = weights_of(weights_obj, mode, in, target, "target");
  const int64_t B = in.bags.num_bags;
  const py::array g = grad_of(grad_out, target, "target", B, D);
  check_no_overlap(g, "grad_out", target, "target");
  const py::array argmax = argmax_of(argmax_obj, mode, B, D);
  dispatch(fk, in.ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    const Scalar* gp = const_ptr<Scalar>(g);
    const Index* idx = const_ptr<Index>(in.indices);
    const Scalar* w = opt_ptr<Scalar>(weights);
    const int64_t* am = mode == BagMode::max ? const_ptr<int64_t>(argmax) : nullptr;
    Scalar* t = mutable_ptr<Scalar>(target);
    py::gil_scoped_release nogil;
    if (reference) {
      check_indices(idx, in.index_shape, V);
      for (int64_t k = 0; am && k < B * D;
           ++k)  // the oracle trusts argmax: check it here
        if (am[k] < -1 || am[k] >= V)
          throw std::invalid_argument("argmax entry " + std::to_string(am[k]) +
                                      " is neither -1 nor a row of the table");
      embedding_bag_backward_ref<Scalar, Index>(gp, D, idx, in.bags, mode, w,
                                                padding_idx, am, t);
    } else {
      embedding_bag_backward<Scalar, Index>(gp, V, D, idx, in.index_shape, in.bags,
                                            mode, w, padding_idx, am, t, deterministic);
    }
  });
  return target;
}

// A vector handed to NumPy without a copy: the array owns it through a capsule.
template <class Vec>
py::array vector_array(Vec&& v, std::vector<int64_t> shape) {
  using T = typename std::decay_t<Vec>::value_type;
  auto* heap = new std::decay_t<Vec>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::decay_t<Vec>*>(p); });
  return py::array(py::dtype::of<T>(), shape, {}, heap->data(), owner);
}

py::tuple backward_sparse_py(const py::array& grad_out, const py::array& indices,
                             const py::object& offsets, int64_t V,
                             const std::string& mode_name,
                             const py::object& weights_obj,
                             const py::object& padding_obj, bool include_last_offset,
                             const py::object& argmax_obj) {
  const FloatKind fk = float_kind(grad_out, "grad_out");
  if (grad_out.ndim() != 2)
    throw py::value_error("grad_out must be 2-D (num_bags, D), got shape " +
                          shape_str(grad_out));
  if (V < 0) throw py::value_error("num_embeddings must be >= 0");
  const BagMode mode = parse_bag_mode(mode_name.c_str());
  const int64_t D = grad_out.shape(1);
  const BagInput in = bag_input(indices, offsets, include_last_offset);
  const int64_t padding_idx = padding_of(padding_obj, V);
  const auto weights = weights_of(weights_obj, mode, in, grad_out, "grad_out");
  const int64_t B = in.bags.num_bags;
  const py::array g = grad_of(grad_out, grad_out, "grad_out", B, D);
  const py::array argmax = argmax_of(argmax_obj, mode, B, D);
  return dispatch(fk, in.ik, [&](auto s, auto i) -> py::tuple {
    using Scalar = decltype(s);
    using Index = decltype(i);
    const Scalar* gp = const_ptr<Scalar>(g);
    const Index* idx = const_ptr<Index>(in.indices);
    const Scalar* w = opt_ptr<Scalar>(weights);
    const int64_t* am = mode == BagMode::max ? const_ptr<int64_t>(argmax) : nullptr;
    std::vector<int64_t> rows;
    RowValues<Scalar> values;
    {
      py::gil_scoped_release nogil;
      embedding_bag_backward_sparse<Scalar, Index>(gp, V, D, idx, in.index_shape,
                                                   in.bags, mode, w, padding_idx, am,
                                                   rows, values);
    }
    const auto U = static_cast<int64_t>(rows.size());
    return py::make_tuple(vector_array(std::move(rows), {U}),
                          vector_array(std::move(values), {U, D}));
  });
}

py::array weights_backward_py(const py::array& grad_out, const py::array& table,
                              const py::array& indices, const py::object& offsets,
                              const py::object& padding_obj, bool include_last_offset,
                              bool reference) {
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", false);
  const int64_t V = table.shape(0), D = table.shape(1);
  const BagInput in = bag_input(indices, offsets, include_last_offset);
  const int64_t padding_idx = padding_of(padding_obj, V);
  const int64_t B = in.bags.num_bags;
  const py::array g = grad_of(grad_out, table, "table", B, D);
  py::array grad_w(table.dtype(), in.index_shape);
  dispatch(fk, in.ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    const Scalar* gp = const_ptr<Scalar>(g);
    const Scalar* t = const_ptr<Scalar>(table);
    const Index* idx = const_ptr<Index>(in.indices);
    Scalar* gw = mutable_ptr<Scalar>(grad_w);
    py::gil_scoped_release nogil;
    const int64_t n = in.bags.num_indices;
    // Positions past the last bag (none with validated offsets) stay defined.
    for (int64_t k = 0; k < n; ++k) gw[k] = Scalar(0);
    if (reference) {
      check_indices(idx, in.index_shape, V);
      embedding_bag_per_sample_weights_backward_ref<Scalar, Index>(
          gp, t, D, idx, in.bags, padding_idx, gw);
    } else {
      embedding_bag_per_sample_weights_backward<Scalar, Index>(
          gp, t, V, D, idx, in.index_shape, in.bags, padding_idx, gw);
    }
  });
  return grad_w;
}

}  // namespace

void register_bag(py::module_& m) {
  m.def("embedding_bag", &embedding_bag_py, py::arg("table"), py::arg("indices"),
        py::arg("offsets") = py::none(), py::kw_only(), py::arg("mode") = "mean",
        py::arg("per_sample_weights") = py::none(), py::arg("padding_idx") = py::none(),
        py::arg("include_last_offset") = false, py::arg("out") = py::none(),
        py::arg("return_argmax") = false, py::arg("reference") = false,
        "Pooled lookup (torch.nn.functional.embedding_bag). return_argmax=True returns "
        "(out, argmax) with argmax the (B, D) int64 winners of max mode (None "
        "otherwise); "
        "reference=True runs the scalar oracle.");
  m.def(
      "embedding_bag_backward", &backward_py, py::arg("grad_out"), py::arg("indices"),
      py::arg("offsets") = py::none(), py::kw_only(), py::arg("mode") = "mean",
      py::arg("per_sample_weights") = py::none(), py::arg("padding_idx") = py::none(),
      py::arg("include_last_offset") = false, py::arg("argmax") = py::none(),
      py::arg("target"), py::arg("deterministic") = true, py::arg("reference") = false,
      "Adds the embedding_bag gradient with respect to the table into target (V, D).");
  m.def(
      "embedding_bag_backward_sparse", &backward_sparse_py, py::arg("grad_out"),
      py::arg("indices"), py::arg("offsets") = py::none(), py::kw_only(),
      py::arg("num_embeddings"), py::arg("mode") = "mean",
      py::arg("per_sample_weights") = py::none(), py::arg("padding_idx") = py::none(),
      py::arg("include_last_offset") = false, py::arg("argmax") = py::none(),
      "The embedding_bag table gradient as (rows sorted unique int64, values (U, D)).");
  m.def("embedding_bag_per_sample_weights_backward", &weights_backward_py,
        py::arg("grad_out"), py::arg("table"), py::arg("indices"),
        py::arg("offsets") = py::none(), py::kw_only(),
        py::arg("padding_idx") = py::none(), py::arg("include_last_offset") = false,
        py::arg("reference") = false,
        "Gradient of embedding_bag(mode='sum') with respect to per_sample_weights.");
}

}  // namespace embtable::binding
