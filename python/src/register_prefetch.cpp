// Read-ahead for file-backed tables (np.memmap): prefetch_rows and its probes.
#include <string>

#include "checks.hpp"
#include "embtable/prefetch.hpp"
#include "register.hpp"

namespace embtable::binding {

namespace {

// Any 2-D C-contiguous table (float or a packed quantized one): only its row size
// matters here.
void check_rows_table(const py::array& table) {
  if (table.ndim() != 2)
    throw py::value_error("table must be 2-D (V, D), got shape " + shape_str(table));
  if (!(table.flags() & py::array::c_style))
    throw py::value_error(
        "table must be C-contiguous; np.ascontiguousarray(table) makes it so");
}

py::dict prefetch_rows_py(const py::array& table, const py::array& indices,
                          const std::string& method, int64_t io_threads) {
  check_rows_table(table);
  const IndexKind ik = index_kind(indices, "indices");
  PrefetchMethod m;
  if (method == "willneed")
    m = PrefetchMethod::willneed;
  else if (method == "threads")
    m = PrefetchMethod::threads;
  else
    throw py::value_error("method must be 'willneed' or 'threads', got '" + method +
                          "'");
  if (io_threads < 1)
    throw py::value_error("io_threads must be >= 1, got " + std::to_string(io_threads));
  const int64_t V = table.shape(0);
  const int64_t row_bytes = table.shape(1) * static_cast<int64_t>(table.itemsize());
  const int64_t n = static_cast<int64_t>(indices.size());
  const void* t = table.data();
  PrefetchStats s;
  if (ik == IndexKind::i32) {
    const auto* idx = static_cast<const int32_t*>(indices.data());
    py::gil_scoped_release nogil;
    s = prefetch_rows<int32_t>(t, V, row_bytes, idx, n, m, io_threads);
  } else {
    const auto* idx = static_cast<const int64_t*>(indices.data());
    py::gil_scoped_release nogil;
    s = prefetch_rows<int64_t>(t, V, row_bytes, idx, n, m, io_threads);
  }
  py::dict out;
  out["pages"] = s.pages;
  out["cold"] = s.cold;
  out["issued"] = s.issued;
  return out;
}

int64_t nbytes_of(const py::array& a) {
  return static_cast<int64_t>(a.size()) * static_cast<int64_t>(a.itemsize());
}

}  // namespace

void register_prefetch(py::module_& m) {
  m.def("prefetch_rows", &prefetch_rows_py, py::arg("table"), py::arg("indices"),
        py::arg("method"), py::arg("io_threads"),
        "Read ahead the cold pages of table[indices] (a file-backed table); returns "
        "{'pages', 'cold', 'issued'}.");
  m.def(
      "mapped_file", [](const py::array& a) { return mapped_file(a.data()); },
      py::arg("array"), "The file mapped at the array's first byte, or ''.");
  m.def(
      "resident_pages",
      [](const py::array& a) { return resident_pages(a.data(), nbytes_of(a)); },
      py::arg("array"), "Pages of the array's memory in the page cache (mincore).");
  m.def("page_size", &page_size);
}

}  // namespace embtable::binding
