// Quantized tables (quantize, dequantize, gather, embedding_bag) and the
// multi-table embedding_bags.
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bag_args.hpp"
#include "checks.hpp"
#include "embtable/embedding_bags.hpp"
#include "embtable/quantized.hpp"
#include "embtable/validate.hpp"
#include "register.hpp"

namespace embtable::binding {
namespace {

QFormat format_of(const std::string& name) {
  try {
    return parse_qformat(name.c_str());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// The numpy dtype of a format's packed array.
py::dtype packed_dtype(QFormat f) {
  switch (f) {
    case QFormat::float16:
      return py::dtype("float16");
    case QFormat::bfloat16:
      return py::dtype::of<uint16_t>();
    default:
      return py::dtype::of<uint8_t>();
  }
}

std::vector<int64_t> packed_shape(QFormat f, int64_t V, int64_t D) {
  if (f == QFormat::int8 || f == QFormat::int4) return {V, qrow_bytes(f, D)};
  return {V, D};
}

// The packed array `data` of a (V, dim) table in format f, checked: its dtype,
// 2-D shape, C order and byte order. Never copied.
QTable qtable_of(const py::array& data, const std::string& fmt, int64_t dim) {
  const QFormat f = format_of(fmt);
  if (dim < 0) throw py::value_error("dim must be >= 0, got " + std::to_string(dim));
  const py::dtype want = packed_dtype(f);
  if (!data.dtype().is(want) && !data.dtype().equal(want))
    throw py::type_error("a packed " + fmt + " table has dtype " +
                         py::str(want).cast<std::string>() + ", got " +
                         py::str(data.dtype()).cast<std::string>());
  if (data.ndim() != 2)
    throw py::value_error("a packed " + fmt + " table is 2-D, got shape " +
                          shape_str(data));
  const int64_t V = data.shape(0);
  const std::vector<int64_t> expected = packed_shape(f, V, dim);
  if (shape_of(data) != expected)
    throw py::value_error("a packed " + fmt + " table of dim " + std::to_string(dim) +
                          " has shape " + shape_str(expected) + ", got " +
                          shape_str(data));
  if (!(data.flags() & py::array::c_style))
    throw py::value_error(
        "the packed table must be C-contiguous; tables are never copied "
        "(np.ascontiguousarray(data))");
  const char order = data.dtype().byteorder();
  if (order == '>') throw py::value_error("the packed table has non-native byte order");
  QTable t;
  t.data = static_cast<const uint8_t*>(data.data());
  t.format = f;
  t.V = V;
  t.D = dim;
  t.row_bytes = qrow_bytes(f, dim);
  return t;
}

py::array f32_like() {
  return py::array(py::dtype::of<float>(), std::vector<int64_t>{0});
}

py::array quantize_py(const py::array& table, const std::string& fmt, bool reference) {
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", false);
  const QFormat f = format_of(fmt);
  const int64_t V = table.shape(0), D = table.shape(1);
  py::array out(packed_dtype(f), packed_shape(f, V, D));
  auto* o = static_cast<uint8_t*>(out.mutable_data());
  auto run = [&](auto s) {
    using Scalar = decltype(s);
    const Scalar* t = const_ptr<Scalar>(table);
    py::gil_scoped_release nogil;
    if (reference)
      quantize_ref<Scalar>(t, V, D, f, o);
    else
      quantize<Scalar>(t, V, D, f, o);
  };
  if (fk == FloatKind::f32)
    run(float{});
  else
    run(double{});
  return out;
}

py::array dequantize_py(const py::array& data, const std::string& fmt, int64_t dim) {
  const QTable t = qtable_of(data, fmt, dim);
  py::array out(py::dtype::of<float>(), std::vector<int64_t>{t.V, t.D});
  float* o = mutable_ptr<float>(out);
  py::gil_scoped_release nogil;
  dequantize(t, o);
  return out;
}

py::array qgather_py(const py::array& data, const std::string& fmt, int64_t dim,
                     const py::array& indices, const py::object& out_obj,
                     bool reference) {
  const QTable t = qtable_of(data, fmt, dim);
  const IndexKind ik = index_kind(indices, "indices");
  std::vector<int64_t> out_shape = shape_of(indices);
  out_shape.push_back(t.D);
  py::array out;
  if (out_obj.is_none()) {
    out = py::array(py::dtype::of<float>(), out_shape);
  } else {
    out = inplace_array(out_obj, "out");
    check_same_float(out, "out", f32_like(), "a quantized table's output");
    check_shape(out, "out", out_shape, "indices.shape + (D,) is");
    check_inplace(out, "out");
    check_no_overlap(out, "out", data, "table");
    check_no_overlap(out, "out", indices, "indices");
  }
  const std::vector<int64_t> shape = shape_of(indices);
  float* o = mutable_ptr<float>(out);
  auto run = [&](auto i) {
    using Index = decltype(i);
    const Index* idx = const_ptr<Index>(indices);
    py::gil_scoped_release nogil;
    if (reference) {
      check_indices(idx, shape, t.V);
      qgather_ref<Index>(t, idx, shape_size(shape), o);
    } else {
      qgather<Index>(t, idx, shape, o);
    }
  };
  if (ik == IndexKind::i32)
    run(int32_t{});
  else
    run(int64_t{});
  return out;
}

py::array qbag_py(const py::array& data, const std::string& fmt, int64_t dim,
                  const py::array& indices, const py::object& offsets,
                  const std::string& mode_name, const py::object& weights_obj,
                  const py::object& padding_obj, bool include_last_offset,
                  const py::object& out_obj, bool reference) {
  const QTable t = qtable_of(data, fmt, dim);
  const BagMode mode = parse_bag_mode(mode_name.c_str());
  const BagInput in = bag_input(indices, offsets, include_last_offset);
  const int64_t padding_idx = padding_of(padding_obj, t.V);
  const py::array ref = f32_like();
  const auto weights =
      weights_of(weights_obj, mode, in, ref, "a quantized table's output");
  const int64_t B = in.bags.num_bags, D = t.D;
  py::array out;
  if (out_obj.is_none()) {
    out = py::array(py::dtype::of<float>(), std::vector<int64_t>{B, D});
  } else {
    out = inplace_array(out_obj, "out");
    check_same_float(out, "out", ref, "a quantized table's output");
    check_shape(out, "out", {B, D}, "(num_bags, D) is");
    check_inplace(out, "out");
    check_no_overlap(out, "out", data, "table");
    check_no_overlap(out, "out", indices, "indices");
    check_no_overlap(out, "out", in.offsets, "offsets");
    if (weights) check_no_overlap(out, "out", *weights, "per_sample_weights");
  }
  float* o = mutable_ptr<float>(out);
  const float* w = weights ? const_ptr<float>(*weights) : nullptr;
  auto run = [&](auto i) {
    using Index = decltype(i);
    const Index* idx = const_ptr<Index>(in.indices);
    py::gil_scoped_release nogil;
    if (reference) {
      check_indices(idx, in.index_shape, t.V);
      qembedding_bag_ref<Index>(t, idx, in.bags, mode, w, padding_idx, o, D);
    } else {
      qembedding_bag<Index>(t, idx, in.index_shape, in.bags, mode, w, padding_idx, o,
                            D);
    }
  };
  if (in.ik == IndexKind::i32)
    run(int32_t{});
  else
    run(int64_t{});
  return out;
}

// One table of embedding_bags, with every array it points into kept alive.
struct TableInput {
  py::array table;  // the float table or the packed data
  BagInput in;
  std::optional<py::array> weights;
};

// Runs f, rethrowing its Python or C++ error with "tables[t]: " in front.
template <class F>
auto named(size_t t, F&& f) {
  const std::string name = "tables[" + std::to_string(t) + "]: ";
  try {
    return f();
  } catch (const py::type_error& e) {
    throw py::type_error(name + e.what());
  } catch (const py::value_error& e) {
    throw py::value_error(name + e.what());
  } catch (const py::index_error& e) {
    throw py::index_error(name + e.what());
  } catch (const std::out_of_range& e) {
    throw py::index_error(name + e.what());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(name + e.what());
  }
}

py::array embedding_bags_py(const py::list& tables, const py::list& indices,
                            const py::list& offsets, const std::string& mode_name,
                            const py::list& weights, const py::list& paddings,
                            bool include_last_offset, const py::object& out_obj,
                            bool reference) {
  const BagMode mode = parse_bag_mode(mode_name.c_str());
  const size_t T = tables.size();
  if (indices.size() != T || offsets.size() != T || weights.size() != T ||
      paddings.size() != T)
    throw py::value_error(
        "embedding_bags needs one indices, offsets, weights and "
        "padding_idx entry per table");
  if (T == 0) throw py::value_error("embedding_bags needs at least one table");
  std::vector<TableInput> inputs;
  std::vector<BagsTable> specs(T);
  inputs.reserve(T);
  std::optional<FloatKind> out_kind;
  int64_t sum_d = 0;
  for (size_t t = 0; t < T; ++t) {
    named(t, [&] {
      BagsTable& s = specs[t];
      const py::handle obj = tables[t];
      FloatKind fk;
      py::array arr;
      if (py::isinstance<py::tuple>(obj)) {  // (packed data, format, dim)
        const auto tup = py::reinterpret_borrow<py::tuple>(obj);
        arr = tup[0].cast<py::array>();
        s.q = qtable_of(arr, tup[1].cast<std::string>(), tup[2].cast<int64_t>());
        s.kind = BagsTable::Kind::quantized;
        s.V = s.q.V;
        s.D = s.q.D;
        fk = FloatKind::f32;
      } else {
        arr = py::reinterpret_borrow<py::object>(obj).cast<py::array>();
        fk = float_kind(arr, "table");
        check_table(arr, "table", false);
        s.kind = fk == FloatKind::f32 ? BagsTable::Kind::f32 : BagsTable::Kind::f64;
        s.table = arr.data();
        s.V = arr.shape(0);
        s.D = arr.shape(1);
      }
      if (out_kind && *out_kind != fk)
        throw py::type_error(
            std::string("gives ") + (fk == FloatKind::f32 ? "float32" : "float64") +
            " output but tables[0] gives " +
            (*out_kind == FloatKind::f32 ? "float32" : "float64") +
            "; use one output dtype per call (quantized tables give float32)");
      out_kind = fk;
      const py::array idx =
          py::reinterpret_borrow<py::object>(indices[t]).cast<py::array>();
      BagInput in = bag_input(idx, offsets[t], include_last_offset);
      const py::array ref = fk == FloatKind::f32 ? f32_like()
                                                 : py::array(py::dtype::of<double>(),
                                                             std::vector<int64_t>{0});
      auto w = weights_of(weights[t], mode, in, ref, "the table's output");
      s.padding_idx = padding_of(paddings[t], s.V);
      if (t > 0 && in.bags.num_bags != specs[0].bags.num_bags)
        throw py::value_error("has " + std::to_string(in.bags.num_bags) +
                              " bags but tables[0] has " +
                              std::to_string(specs[0].bags.num_bags) +
                              "; every table describes the same B bags");
      s.indices = in.indices.data();
      s.indices_i64 = in.ik == IndexKind::i64;
      s.index_shape = in.index_shape;
      s.bags = in.bags;
      s.weights = w ? w->data() : nullptr;
      inputs.push_back(TableInput{arr, std::move(in), std::move(w)});
    });
    sum_d += specs[t].D;
  }
  const int64_t B = specs[0].bags.num_bags;
  const py::dtype dt =
      *out_kind == FloatKind::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
  py::array out;
  if (out_obj.is_none()) {
    out = py::array(dt, std::vector<int64_t>{B, sum_d});
  } else {
    out = inplace_array(out_obj, "out");
    const py::array ref(dt, std::vector<int64_t>{0});
    check_same_float(out, "out", ref, "the tables' output");
    check_shape(out, "out", {B, sum_d}, "(num_bags, sum of D) is");
    check_inplace(out, "out");
    for (size_t t = 0; t < T; ++t)
      named(t, [&] {
        const TableInput& ti = inputs[t];
        check_no_overlap(out, "out", ti.table, "table");
        check_no_overlap(out, "out", ti.in.indices, "indices");
        check_no_overlap(out, "out", ti.in.offsets, "offsets");
        if (ti.weights) check_no_overlap(out, "out", *ti.weights, "per_sample_weights");
      });
  }
  auto run = [&](auto s) {
    using Scalar = decltype(s);
    Scalar* o = mutable_ptr<Scalar>(out);
    std::span<const BagsTable> sp(specs);
    py::gil_scoped_release nogil;
    if (reference) {
      for (size_t t = 0; t < T; ++t)
        named(t, [&] {
          const BagsTable& tb = specs[t];
          if (tb.indices_i64)
            check_indices(static_cast<const int64_t*>(tb.indices), tb.index_shape,
                          tb.V);
          else
            check_indices(static_cast<const int32_t*>(tb.indices), tb.index_shape,
                          tb.V);
        });
      embedding_bags_ref<Scalar>(sp, mode, o);
    } else {
      embedding_bags<Scalar>(sp, mode, o);
    }
  };
  if (*out_kind == FloatKind::f32)
    run(float{});
  else
    run(double{});
  return out;
}

}  // namespace

void register_quant(py::module_& m) {
  m.def("quantize", &quantize_py, py::arg("table"), py::arg("dtype"), py::kw_only(),
        py::arg("reference") = false,
        "Packs a float32/float64 (V, D) table: int8/int4 (FBGEMM fused row-wise, "
        "uint8 (V, row_bytes)), float16 (V, D) or bfloat16 bits (V, D) uint16.");
  m.def("dequantize", &dequantize_py, py::arg("data"), py::arg("dtype"), py::arg("dim"),
        "The (V, D) float32 table of a packed one.");
  m.def(
      "check_packed",
      [](const py::array& data, const std::string& fmt, int64_t dim) {
        return qtable_of(data, fmt, dim).V;
      },
      py::arg("data"), py::arg("dtype"), py::arg("dim"),
      "Checks a packed array (dtype, shape, order) and returns its row count V.");
  m.def(
      "qrow_bytes",
      [](const std::string& fmt, int64_t dim) {
        return qrow_bytes(format_of(fmt), dim);
      },
      py::arg("dtype"), py::arg("dim"), "Bytes per packed row.");
  m.def("qgather", &qgather_py, py::arg("data"), py::arg("dtype"), py::arg("dim"),
        py::arg("indices"), py::kw_only(), py::arg("out") = py::none(),
        py::arg("reference") = false, "Dequantized rows: dequantize()[indices].");
  m.def("qembedding_bag", &qbag_py, py::arg("data"), py::arg("dtype"), py::arg("dim"),
        py::arg("indices"), py::arg("offsets") = py::none(), py::kw_only(),
        py::arg("mode") = "mean", py::arg("per_sample_weights") = py::none(),
        py::arg("padding_idx") = py::none(), py::arg("include_last_offset") = false,
        py::arg("out") = py::none(), py::arg("reference") = false,
        "embedding_bag on a packed table, rows dequantized in the kernel.");
  m.def("embedding_bags", &embedding_bags_py, py::arg("tables"), py::arg("indices"),
        py::arg("offsets"), py::kw_only(), py::arg("mode") = "sum",
        py::arg("per_sample_weights"), py::arg("padding_idx"),
        py::arg("include_last_offset") = false, py::arg("out") = py::none(),
        py::arg("reference") = false,
        "Bags over T tables in one parallel pass; tables are float arrays or "
        "(data, dtype, dim) tuples of packed tables.");
}

}  // namespace embtable::binding
