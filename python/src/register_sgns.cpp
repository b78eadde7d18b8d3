// sgns_step: the fused skip-gram negative-sampling SGD step.
#include <cstdint>
#include <string>

#include "checks.hpp"
#include "embtable/sgns.hpp"
#include "register.hpp"

namespace embtable::binding {
namespace {

void check_aligned(const py::array& a, const char* name) {
  // std::atomic_ref needs naturally aligned elements (NumPy's ALIGNED flag).
  if (reinterpret_cast<uintptr_t>(a.data()) % static_cast<uintptr_t>(a.itemsize()) != 0)
    throw py::value_error(std::string(name) + " is not aligned; copy it with " +
                          "np.ascontiguousarray(" + name + ") and use the copy");
}

struct SgnsArgs {
  py::array in_table, out_table, centers, contexts, negatives;
  FloatKind fk;
  IndexKind ik;
  int64_t V_in, V_out, D, N, K;
};

SgnsArgs check_sgns(const py::object& in_obj, const py::object& out_obj, const py::array& centers,
                    const py::array& contexts, const py::array& negatives) {
  SgnsArgs a;
  a.in_table = inplace_array(in_obj, "in_table");
  a.out_table = inplace_array(out_obj, "out_table");
  a.fk = float_kind(a.in_table, "in_table");
  check_same_float(a.out_table, "out_table", a.in_table, "in_table");
  check_table(a.in_table, "in_table", true);
  check_table(a.out_table, "out_table", true);
  check_aligned(a.in_table, "in_table");
  check_aligned(a.out_table, "out_table");
  if (a.in_table.shape(1) != a.out_table.shape(1))
    throw py::value_error("in_table has shape " + shape_str(a.in_table) + " but out_table has "
                          "shape " + shape_str(a.out_table) + "; both need the same D");
  check_no_overlap(a.in_table, "in_table", a.out_table, "out_table");
  a.ik = index_kind(centers, "centers");
  if (index_kind(contexts, "contexts") != a.ik || index_kind(negatives, "negatives") != a.ik)
    throw py::type_error("centers, contexts and negatives must share one index dtype (int32 or "
                         "int64)");
  if (centers.ndim() != 1)
    throw py::value_error("centers must be 1-D (N,), got shape " + shape_str(centers));
  a.N = centers.shape(0);
  check_shape(contexts, "contexts", {a.N}, "centers has shape");
  if (negatives.ndim() != 2 || negatives.shape(0) != a.N)
    throw py::value_error("negatives has shape " + shape_str(negatives) +
                          " but must be (N, K) with N = len(centers) = " + std::to_string(a.N));
  for (const auto* idx : {&centers, &contexts, &negatives}) {
    check_no_overlap(*idx, "an index array", a.in_table, "in_table");
    check_no_overlap(*idx, "an index array", a.out_table, "out_table");
  }
  a.centers = centers;
  a.contexts = contexts;
  a.negatives = negatives;
  a.V_in = a.in_table.shape(0);
  a.V_out = a.out_table.shape(0);
  a.D = a.in_table.shape(1);
  a.K = negatives.shape(1);
  return a;
}

double sgns_step_py(const py::object& in_obj, const py::object& out_obj,
                    const py::array& centers, const py::array& contexts,
                    const py::array& negatives, double lr, bool ref) {
  SgnsArgs a = check_sgns(in_obj, out_obj, centers, contexts, negatives);
  return dispatch(a.fk, a.ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    Scalar* in = mutable_ptr<Scalar>(a.in_table);
    Scalar* out = mutable_ptr<Scalar>(a.out_table);
    const Index* c = const_ptr<Index>(a.centers);
    const Index* x = const_ptr<Index>(a.contexts);
    const Index* n = const_ptr<Index>(a.negatives);
    const auto step = static_cast<Scalar>(lr);
    py::gil_scoped_release nogil;
    if (ref) {  // the oracle validates too, so tests can't corrupt memory through it
      sgns_check_indices<Index>(a.V_in, a.V_out, c, x, a.N, n, a.K);
      return sgns_step_ref<Scalar, Index>(in, out, a.D, c, x, a.N, n, a.K, step);
    }
    return sgns_step<Scalar, Index>(in, a.V_in, out, a.V_out, a.D, c, x, a.N, n, a.K, step);
  });
}

}  // namespace

void register_sgns(py::module_& m) {
  m.def("sgns_step", &sgns_step_py, py::arg("in_table"), py::arg("out_table"),
        py::arg("centers"), py::arg("contexts"), py::arg("negatives"), py::arg("lr"),
        py::kw_only(), py::arg("ref") = false,
        "Fused skip-gram negative-sampling SGD step in place on both tables; returns the mean "
        "loss. ref=True runs the scalar single-threaded oracle.");
}

}  // namespace embtable::binding
