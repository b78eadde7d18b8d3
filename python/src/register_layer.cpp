// Layer kernels: sparse-gradient coalesce / merge, max_norm renorm, optimizer steps.
#include <pybind11/stl.h>

#include <string>

#include "checks.hpp"
#include "embtable/optim.hpp"
#include "embtable/renorm.hpp"
#include "embtable/rowgrad.hpp"
#include "embtable/validate.hpp"
#include "register.hpp"

namespace embtable::binding {
namespace {

void check_indices_py(const py::array& indices, IndexKind ik, int64_t V) {
  const std::vector<int64_t> shape = shape_of(indices);
  if (ik == IndexKind::i32)
    check_indices(const_ptr<int32_t>(indices), shape, V);
  else
    check_indices(const_ptr<int64_t>(indices), shape, V);
}

py::array int64_array(const std::vector<int64_t>& v) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

// (rows, values): the coalesced gradient of `grads` (indices.shape + (D,)) by id.
py::tuple rowgrad_coalesce_py(const py::array& indices, const py::array& grads_in,
                              int64_t V, int64_t padding_idx) {
  const IndexKind ik = index_kind(indices, "indices");
  const FloatKind fk = float_kind(grads_in, "grad_output");
  if (grads_in.ndim() < 1)
    throw py::value_error("grad_output must have indices.shape + (D,), got shape ()");
  const int64_t D = grads_in.shape(grads_in.ndim() - 1);
  std::vector<int64_t> expected = shape_of(indices);
  expected.push_back(D);
  check_shape(grads_in, "grad_output", expected, "indices.shape + (D,) is");
  const py::array grads = c_contiguous_input(grads_in);
  const std::vector<int64_t> shape = shape_of(indices);
  RowGradPlan plan;
  py::array values;
  dispatch(fk, ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    const Index* idx = const_ptr<Index>(indices);
    {
      py::gil_scoped_release nogil;
      plan = rowgrad_plan<Index>(idx, shape, V, padding_idx);
    }
    values = py::array(grads.dtype(),
                       std::vector<int64_t>{static_cast<int64_t>(plan.rows.size()), D});
    Scalar* out = mutable_ptr<Scalar>(values);
    const Scalar* g = const_ptr<Scalar>(grads);
    py::gil_scoped_release nogil;
    rowgrad_sum<Scalar>(plan, g, D, out);
  });
  return py::make_tuple(int64_array(plan.rows), values);
}

py::tuple rowgrad_merge_py(const py::array& rows_a, const py::array& values_a,
                           const py::array& rows_b, const py::array& values_b) {
  if (index_kind(rows_a, "indices") != IndexKind::i64 ||
      index_kind(rows_b, "indices") != IndexKind::i64 || rows_a.ndim() != 1 ||
      rows_b.ndim() != 1)
    throw py::type_error("RowGrad indices must be 1-D int64");
  const FloatKind fk = float_kind(values_a, "values");
  check_same_float(values_b, "values", values_a, "values");
  check_table(values_a, "values", false);
  check_table(values_b, "values", false);
  const int64_t D = values_a.shape(1);
  if (values_b.shape(1) != D)
    throw py::value_error("cannot merge RowGrads of widths " + std::to_string(D) +
                          " and " + std::to_string(values_b.shape(1)));
  check_shape(values_a, "values", {rows_a.shape(0), D}, "its indices need");
  check_shape(values_b, "values", {rows_b.shape(0), D}, "its indices need");
  RowGradMergePlan plan;
  {
    const int64_t* a = const_ptr<int64_t>(rows_a);
    const int64_t* b = const_ptr<int64_t>(rows_b);
    const int64_t na = rows_a.shape(0), nb = rows_b.shape(0);
    py::gil_scoped_release nogil;
    plan = rowgrad_merge_plan(a, na, b, nb);
  }
  py::array out(values_a.dtype(),
                std::vector<int64_t>{static_cast<int64_t>(plan.rows.size()), D});
  dispatch(fk, IndexKind::i64, [&](auto s, auto) {
    using Scalar = decltype(s);
    const Scalar* va = const_ptr<Scalar>(values_a);
    const Scalar* vb = const_ptr<Scalar>(values_b);
    Scalar* o = mutable_ptr<Scalar>(out);
    py::gil_scoped_release nogil;
    rowgrad_merge_values<Scalar>(plan, va, vb, D, o);
  });
  return py::make_tuple(int64_array(plan.rows), out);
}

void embedding_renorm_py(const py::object& table_obj, const py::array& indices,
                         double max_norm, double norm_type) {
  py::array table = inplace_array(table_obj, "table");
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", true);
  const IndexKind ik = index_kind(indices, "indices");
  check_no_overlap(indices, "indices", table, "table");
  const int64_t V = table.shape(0), D = table.shape(1);
  const std::vector<int64_t> shape = shape_of(indices);
  dispatch(fk, ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    Scalar* t = mutable_ptr<Scalar>(table);
    const Index* idx = const_ptr<Index>(indices);
    py::gil_scoped_release nogil;
    embedding_renorm<Scalar, Index>(t, V, D, idx, shape, max_norm, norm_type);
  });
}

OptimKind parse_kind(const std::string& name) {
  if (name == "sgd") return OptimKind::sgd;
  if (name == "adagrad") return OptimKind::adagrad;
  if (name == "rmsprop") return OptimKind::rmsprop;
  if (name == "adam") return OptimKind::adam;
  throw py::value_error("unknown optimizer kind '" + name + "'");
}

// One optimizer step in place on `table`. rows None: dense grad (V, D);
// else a RowGrad's sorted unique int64 rows and their (U, D) values.
void optim_step_py(const std::string& kind, const py::object& table_obj,
                   const py::object& rows_obj, const py::array& grad_in,
                   const std::vector<py::object>& states, double learning_rate,
                   double momentum, bool nesterov, double epsilon, double rho,
                   bool centered, double beta_1, double beta_2, int64_t step) {
  py::array table = inplace_array(table_obj, "table");
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", true);
  check_same_float(grad_in, "grad", table, "table");
  const int64_t V = table.shape(0), D = table.shape(1);
  // A default py::array is an empty array, not a null handle: track presence apart.
  py::array rows;
  const bool lazy = !rows_obj.is_none();
  int64_t n_rows = 0;
  if (lazy) {
    rows = rows_obj.cast<py::array>();
    if (index_kind(rows, "RowGrad indices") != IndexKind::i64 || rows.ndim() != 1)
      throw py::type_error("RowGrad indices must be 1-D int64");
    n_rows = rows.shape(0);
    check_shape(grad_in, "RowGrad values", {n_rows, D}, "(len(indices), D) is");
  } else {
    check_shape(grad_in, "grad", {V, D}, "the table has shape");
  }
  check_no_overlap(grad_in, "grad", table, "table");
  const py::array grad = c_contiguous_input(grad_in);
  if (states.size() != 3) throw py::value_error("three state slots expected");
  std::vector<py::array> st(3);
  std::vector<bool> has(3, false);
  for (size_t k = 0; k < 3; ++k) {
    if (states[k].is_none()) continue;
    py::array s = inplace_array(states[k], "state");
    check_same_float(s, "state", table, "table");
    check_table(s, "state", true);
    check_shape(s, "state", {V, D}, "the table has shape");
    check_no_overlap(s, "state", table, "table");
    st[k] = s;
    has[k] = true;
  }
  OptimParams p;
  p.kind = parse_kind(kind);
  p.learning_rate = learning_rate;
  p.momentum = momentum;
  p.nesterov = nesterov;
  p.epsilon = epsilon;
  p.rho = rho;
  p.centered = centered;
  p.beta_1 = beta_1;
  p.beta_2 = beta_2;
  p.step = step;
  dispatch(fk, IndexKind::i64, [&](auto s, auto) {
    using Scalar = decltype(s);
    auto state_ptr = [&](size_t k) -> Scalar* {
      return has[k] ? mutable_ptr<Scalar>(st[k]) : nullptr;
    };
    Scalar* t = mutable_ptr<Scalar>(table);
    const int64_t* r = lazy ? const_ptr<int64_t>(rows) : nullptr;
    const Scalar* g = const_ptr<Scalar>(grad);
    Scalar *s1 = state_ptr(0), *s2 = state_ptr(1), *s3 = state_ptr(2);
    py::gil_scoped_release nogil;
    optim_step<Scalar>(p, t, V, D, r, n_rows, g, s1, s2, s3);
  });
}

// Oracles for the tests: the scalar *_ref twins on the same inputs.
py::tuple rowgrad_coalesce_ref_py(const py::array& indices, const py::array& grads,
                                  int64_t V, int64_t padding_idx) {
  const IndexKind ik = index_kind(indices, "indices");
  const FloatKind fk = float_kind(grads, "grad_output");
  check_inplace(grads, "grad_output");
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t D = grads.ndim() ? grads.shape(grads.ndim() - 1) : 0;
  if (static_cast<int64_t>(grads.size()) != n * D)
    throw py::value_error("grad_output must have indices.shape + (D,)");
  (void)V;
  return dispatch(fk, ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    std::vector<int64_t> rows;
    std::vector<Scalar> values;
    rowgrad_coalesce_ref<Scalar, Index>(const_ptr<Index>(indices), n,
                                        const_ptr<Scalar>(grads), D, padding_idx, rows,
                                        values);
    py::array out(grads.dtype(),
                  std::vector<int64_t>{static_cast<int64_t>(rows.size()), D});
    std::copy(values.begin(), values.end(), mutable_ptr<Scalar>(out));
    return py::make_tuple(int64_array(rows), out);
  });
}

void embedding_renorm_ref_py(const py::object& table_obj, const py::array& indices,
                             double max_norm, double norm_type) {
  py::array table = inplace_array(table_obj, "table");
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", true);
  const IndexKind ik = index_kind(indices, "indices");
  const std::vector<int64_t> shape = shape_of(indices);
  check_indices_py(indices, ik, table.shape(0));
  const int64_t D = table.shape(1);
  const auto n = static_cast<int64_t>(indices.size());
  dispatch(fk, ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    embedding_renorm_ref<Scalar, Index>(mutable_ptr<Scalar>(table), D,
                                        const_ptr<Index>(indices), n, max_norm,
                                        norm_type);
  });
}

}  // namespace

void register_layer(py::module_& m) {
  m.def("rowgrad_coalesce_ref", &rowgrad_coalesce_ref_py, py::arg("indices"),
        py::arg("grad_output"), py::arg("V"), py::arg("padding_idx") = -1,
        "Scalar oracle of rowgrad_coalesce (for tests).");
  m.def("embedding_renorm_ref", &embedding_renorm_ref_py, py::arg("table"),
        py::arg("indices"), py::arg("max_norm"), py::arg("norm_type") = 2.0,
        "Scalar oracle of embedding_renorm (for tests).");
  m.def("rowgrad_coalesce", &rowgrad_coalesce_py, py::arg("indices"),
        py::arg("grad_output"), py::arg("V"), py::arg("padding_idx") = -1,
        "(rows, values): grad_output summed by id, rows sorted unique int64, "
        "padding_idx dropped.");
  m.def("rowgrad_merge", &rowgrad_merge_py, py::arg("rows_a"), py::arg("values_a"),
        py::arg("rows_b"), py::arg("values_b"),
        "(rows, values): the sum of two row gradients.");
  m.def("embedding_renorm", &embedding_renorm_py, py::arg("table"), py::arg("indices"),
        py::arg("max_norm"), py::arg("norm_type") = 2.0,
        "In place: rescale each looked-up row whose norm exceeds max_norm "
        "(torch.embedding_renorm_).");
  m.def("optim_step", &optim_step_py, py::arg("kind"), py::arg("table"),
        py::arg("rows"), py::arg("grad"), py::arg("states"), py::arg("learning_rate"),
        py::arg("momentum") = 0.0, py::arg("nesterov") = false,
        py::arg("epsilon") = 1e-7, py::arg("rho") = 0.9, py::arg("centered") = false,
        py::arg("beta_1") = 0.9, py::arg("beta_2") = 0.999, py::arg("step") = 1,
        "One optimizer step in place (Keras 3 formulas); rows=None: dense.");
}

}  // namespace embtable::binding
