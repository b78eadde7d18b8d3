// Pretrained vectors: the word2vec / GloVe reader and the word2vec writer.
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "embtable/vectors.hpp"
#include "register.hpp"

namespace embtable::binding {
namespace {

// Runs fn without the GIL; a std::system_error comes back as the OSError
// (FileNotFoundError, ...) Python's open() raises, naming the file.
template <class F>
void without_gil(const std::string& display, F&& fn) {
  std::exception_ptr failure;
  {
    py::gil_scoped_release nogil;
    try {
      fn();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (!failure) return;
  try {
    std::rethrow_exception(failure);
  } catch (const std::system_error& e) {
    const int code = e.code().value();
    py::object err = py::module_::import("builtins")
                         .attr("OSError")(code, std::strerror(code), display);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    throw py::error_already_set();
  }
}

py::tuple load_vectors_py(const py::bytes& path, const std::string& display, int binary,
                          int64_t limit, const std::string& dtype) {
  if (dtype != "float32" && dtype != "float64")
    throw py::value_error("dtype must be float32 or float64, got " + dtype);
  std::unique_ptr<VectorsReader> reader;
  const std::string p = path;
  without_gil(display, [&] {
    reader = std::make_unique<VectorsReader>(p, display, binary, limit);
  });
  const int64_t V = reader->rows(), D = reader->dim();
  py::array table(py::dtype(dtype), std::vector<int64_t>{V, D});
  WordList words;
  if (dtype == "float32") {
    float* t = static_cast<float*>(table.mutable_data());
    without_gil(display, [&] { reader->read(t, words); });
  } else {
    double* t = static_cast<double*>(table.mutable_data());
    without_gil(display, [&] { reader->read(t, words); });
  }
  reader.reset();
  const int64_t n = words.size();
  py::list out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = words.offsets[static_cast<size_t>(i)];
    const int64_t e = words.offsets[static_cast<size_t>(i) + 1];
    PyObject* s = PyUnicode_DecodeUTF8(words.bytes.data() + b, e - b, "strict");
    if (s == nullptr) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), s);
  }
  return py::make_tuple(out, table);
}

// (bytes, offsets) of the encoded words, checked: offsets int64, V + 1 entries.
std::pair<std::string_view, const int64_t*> word_arena(const py::bytes& blob,
                                                       const py::array& offsets,
                                                       int64_t V) {
  const py::dtype dt = offsets.dtype();
  if (dt.kind() != 'i' || dt.itemsize() != 8 || offsets.ndim() != 1 ||
      !(offsets.flags() & py::array::c_style) || offsets.shape(0) != V + 1)
    throw py::value_error("word offsets must be a C-contiguous int64 array of V + 1");
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(blob.ptr(), &data, &size) != 0)
    throw py::error_already_set();
  const auto* o = static_cast<const int64_t*>(offsets.data());
  if (o[0] != 0 || o[V] != size)
    throw py::value_error("word offsets do not match the word bytes");
  for (int64_t i = 0; i < V; ++i)
    if (o[i + 1] < o[i]) throw py::value_error("word offsets must not decrease");
  return {std::string_view(data, static_cast<size_t>(size)), o};
}

py::object check_words_py(const py::bytes& blob, const py::array& offsets) {
  const int64_t V = offsets.shape(0) - 1;
  const auto [bytes, o] = word_arena(blob, offsets, V);
  std::string why;
  const int64_t bad = find_unwritable_word(bytes.data(), o, V, &why);
  if (bad < 0) return py::none();
  return py::make_tuple(bad, why);
}

void save_vectors_py(int fd, const std::string& display, const py::bytes& blob,
                     const py::array& offsets, const py::array& table, bool binary) {
  const FloatKind fk = float_kind(table, "table");
  check_table(table, "table", false);
  const int64_t V = table.shape(0), D = table.shape(1);
  const auto [bytes, offs] = word_arena(blob, offsets, V);
  std::string why;
  if (find_unwritable_word(bytes.data(), offs, V, &why) >= 0)
    throw py::value_error("a word " + why);
  const char* w = bytes.data();
  const int64_t* o = offs;  // clang 14 cannot capture a structured binding
  if (fk == FloatKind::f32) {
    const float* t = static_cast<const float*>(table.data());
    without_gil(display, [&] { write_vectors(fd, w, o, t, V, D, binary); });
  } else {
    const double* t = static_cast<const double*>(table.data());
    without_gil(display, [&] { write_vectors(fd, w, o, t, V, D, binary); });
  }
}

}  // namespace

void register_vectors(py::module_& m) {
  m.def("load_vectors", &load_vectors_py, py::arg("path"), py::arg("display"),
        py::arg("binary"), py::arg("limit"), py::arg("dtype"),
        "(words, table) from a word2vec text / binary or GloVe file "
        "(binary: -1 detect, 0 text, 1 binary; limit < 0: all).");
  m.def("vectors_check_words", &check_words_py, py::arg("blob"), py::arg("offsets"),
        "None, or (index, reason) of the first word the word2vec format cannot hold.");
  m.def("save_vectors", &save_vectors_py, py::arg("fd"), py::arg("display"),
        py::arg("blob"), py::arg("offsets"), py::arg("table"), py::arg("binary"),
        "Write the word2vec text or binary format to the open file descriptor fd.");
  m.def("vectors_config", [] {
    const VectorsIoConfig c = vectors_io_config();
    py::dict d;
    d["text_block_bytes"] = c.text_block_bytes;
    d["text_piece_bytes"] = c.text_piece_bytes;
    d["binary_buffer_bytes"] = c.binary_buffer_bytes;
    return d;
  });
  m.def("_set_vectors_io_override", &set_vectors_io_override, py::arg("piece_bytes"),
        py::arg("binary_buffer_bytes"),
        "Tests only: tiny text pieces / binary buffers (0: the derived sizes).");
  m.def(
      "parse_vector_value",
      [](const std::string& text) -> py::object {
        double d = 0.0;
        float f = 0.0f;
        if (!parse_vector_value(text, &d, &f)) return py::none();
        return py::make_tuple(
            d, py::array(py::dtype("float32"), std::vector<int64_t>{}, &f));
      },
      py::arg("text"), "The reader's parse of one value: None or (double, float32).");
}

}  // namespace embtable::binding
