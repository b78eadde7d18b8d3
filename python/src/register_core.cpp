// gather, scatter_add, threads, SIMD and build information.
#include <pybind11/stl.h>

#include "checks.hpp"
#include "embtable/config.hpp"
#include "embtable/gather.hpp"
#include "embtable/parallel.hpp"
#include "embtable/scatter_add.hpp"
#include "embtable/simd.hpp"
#include "embtable/tuning.hpp"
#include "embtable/validate.hpp"
#include "register.hpp"

namespace embtable::binding {

py::array inplace_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(
        std::string(name) +
        " must be a numpy.ndarray (it is written in place), "
        "got " +
        py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  return py::reinterpret_borrow<py::array>(obj);
}

namespace {

py::array gather_py(const py::array& table, const py::array& indices,
                    const py::object& out_obj) {
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", false);
  const IndexKind ik = index_kind(indices, "indices");
  const int64_t V = table.shape(0), D = table.shape(1);
  std::vector<int64_t> out_shape = shape_of(indices);
  out_shape.push_back(D);
  py::array out;
  if (out_obj.is_none()) {
    out = py::array(table.dtype(), out_shape);
  } else {
    out = inplace_array(out_obj, "out");
    check_same_float(out, "out", table, "table");
    check_shape(out, "out", out_shape, "indices.shape + (D,) is");
    check_inplace(out, "out");
    check_no_overlap(out, "out", table, "table");
    check_no_overlap(out, "out", indices, "indices");
  }
  const std::vector<int64_t> shape = shape_of(indices);
  dispatch(fk, ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    const Scalar* t = const_ptr<Scalar>(table);
    const Index* idx = const_ptr<Index>(indices);
    Scalar* o = mutable_ptr<Scalar>(out);
    py::gil_scoped_release nogil;
    gather<Scalar, Index>(t, V, D, idx, shape, o);
  });
  return out;
}

py::array scatter_add_py(const py::object& target_obj, const py::array& indices,
                         const py::array& updates_in, bool deterministic) {
  py::array target = inplace_array(target_obj, "target");
  const FloatKind fk = float_kind(target, "target");
  check_table(target, "target", true);
  const IndexKind ik = index_kind(indices, "indices");
  check_same_float(updates_in, "updates", target, "target");
  const int64_t V = target.shape(0), D = target.shape(1);
  std::vector<int64_t> upd_shape = shape_of(indices);
  upd_shape.push_back(D);
  check_shape(updates_in, "updates", upd_shape, "indices.shape + (D,) is");
  check_no_overlap(updates_in, "updates", target, "target");
  check_no_overlap(indices, "indices", target, "target");
  const py::array updates = c_contiguous_input(updates_in);
  const std::vector<int64_t> shape = shape_of(indices);
  dispatch(fk, ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    Scalar* t = mutable_ptr<Scalar>(target);
    const Index* idx = const_ptr<Index>(indices);
    const Scalar* u = const_ptr<Scalar>(updates);
    py::gil_scoped_release nogil;
    scatter_add<Scalar, Index>(t, V, D, idx, shape, u, deterministic);
  });
  return target;
}

py::dict config_py() {
  const BuildInfo b = build_info();
  py::dict build;
  build["compiler"] = b.compiler;
  build["build_type"] = b.build_type;
  build["cxx_flags"] = b.cxx_flags;
  build["sanitize"] = b.sanitize;
  py::list compiled;
  for (Simd s : simd_compiled()) compiled.append(simd_name(s));
  py::dict simd;
  simd["compiled"] = compiled;
  simd["detected"] = simd_name(simd_detected());
  simd["selected"] = simd_name(simd_selected());
#if defined(EMBTABLE_AVX512_EMULATED)
  // Only in the test build whose avx512 units run through SIMDe (CMakeLists.txt).
  py::list emulated;
  emulated.append(simd_name(Simd::avx512));
  simd["emulated"] = emulated;
#endif
  py::dict threads;
  threads["num_threads"] = get_num_threads();
  threads["default"] = default_num_threads();
  threads["backend"] = "embtable thread pool (std::thread)";
  threads["max"] = max_threads();
  py::dict tuned;
  for (const TunedItem& item : tuning_items()) {
    py::dict v;
    v["value"] = item.value;
    v["source"] = item.source;
    tuned[py::str(item.name)] = v;
  }
  py::dict out;
  out["version"] = b.version;
  out["build"] = build;
  out["simd"] = simd;
  out["threads"] = threads;
  out["tuning"] = tuned;
  return out;
}

}  // namespace

void register_core(py::module_& m) {
  m.def("gather", &gather_py, py::arg("table"), py::arg("indices"), py::kw_only(),
        py::arg("out") = py::none(),
        "Row gather: np.take(table, indices, axis=0) for native int32/int64 "
        "C-contiguous indices.");
  m.def("scatter_add", &scatter_add_py, py::arg("target"), py::arg("indices"),
        py::arg("updates"), py::kw_only(), py::arg("deterministic") = false,
        "Row scatter-add in place: np.add.at(target, indices, updates).");
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("default_num_threads", &default_num_threads);
  m.def("max_threads", &max_threads);
  m.def("ensure_threads", &ensure_threads, py::call_guard<py::gil_scoped_release>(),
        "Builds the pool now; returns the thread count it really has.");
  m.def("take_thread_shortfall", []() -> py::object {
    ThreadShortfall s;
    if (!take_thread_shortfall(s)) return py::none();
    return py::make_tuple(s.requested, s.obtained, s.error);
  });
  m.def("set_tuned", &set_tuned, py::arg("name"), py::arg("value"), py::arg("source"));
  m.def("reset_tuning", &reset_tuning);
  m.def(
      "calibrate",
      [] {
        Calibration c;
        {
          py::gil_scoped_release nogil;
          c = calibrate();
        }
        py::dict d;
        d["handoff_ns"] = c.handoff_ns;
        d["wake_ns"] = c.wake_ns;
        d["copy_bytes_per_us"] = c.copy_bytes_per_us;
        d["owner_scan_bytes"] = c.owner_scan_bytes;
        return d;
      },
      "Measures the pool's hand-off and wake-up latency, the copy rate and the "
      "owners' scan of an id now.");
  m.def("cpus_from_cgroup_cpu_max", &cpus_from_cgroup_cpu_max, py::arg("contents"));
  m.def("cpus_from_cgroup", &cpus_from_cgroup, py::arg("root"),
        py::arg("proc_self_cgroup"));
  m.def("config", &config_py);
  m.def(
      "set_simd_level",
      [](const std::string& name) { set_simd_level(parse_simd(name)); },
      py::arg("level"));
  m.def("get_simd_level", [] { return std::string(simd_name(simd_selected())); });
  m.def(
      "index_error_message",
      [](const std::string& value, const std::vector<int64_t>& shape, int64_t flat,
         int64_t V) { return index_error_message(value, shape, flat, V); },
      py::arg("value"), py::arg("shape"), py::arg("flat"), py::arg("V"));
}

}  // namespace embtable::binding
