#include "checks.hpp"

#include <algorithm>

namespace embtable::binding {
namespace {

const char* kFix = "np.ascontiguousarray(x, dtype=np.float32)";

// Bound on np.shares_memory's search (candidate solutions it may try) when two
// arrays' byte ranges overlap: enough for the strided views users make, and a
// cap on the time an adversarial pair of strides can take.
constexpr long kOverlapMaxWork = 1L << 16;

std::string dtype_str(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

bool is_native(const py::dtype& dt) {
  const char order = dt.byteorder();
  if (order == '=' || order == '|') return true;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return order == '<';
#else
  return order == '>';
#endif
}

// [lowest byte, one past the highest byte] touched by `a`.
std::pair<uintptr_t, uintptr_t> extent(const py::array& a) {
  auto lo = reinterpret_cast<uintptr_t>(a.data());
  auto hi = lo;
  if (a.size() == 0) return {lo, lo};
  for (py::ssize_t k = 0; k < a.ndim(); ++k) {
    const auto step = static_cast<intptr_t>(a.strides(k)) * (a.shape(k) - 1);
    if (step < 0)
      lo = static_cast<uintptr_t>(static_cast<intptr_t>(lo) + step);
    else
      hi = static_cast<uintptr_t>(static_cast<intptr_t>(hi) + step);
  }
  return {lo, hi + static_cast<uintptr_t>(a.itemsize())};
}

}  // namespace

std::vector<int64_t> shape_of(const py::array& a) {
  std::vector<int64_t> s(static_cast<size_t>(a.ndim()));
  for (py::ssize_t k = 0; k < a.ndim(); ++k) s[static_cast<size_t>(k)] = a.shape(k);
  return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t k = 0; k < shape.size(); ++k) {
    if (k) s += ", ";
    s += std::to_string(shape[k]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

std::string shape_str(const py::array& a) { return shape_str(shape_of(a)); }

FloatKind float_kind(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  const bool is_float = dt.kind() == 'f' && (dt.itemsize() == 4 || dt.itemsize() == 8);
  if (!is_float)
    throw py::type_error(std::string(name) + " has dtype " + dtype_str(a) +
                         "; embtable supports float32 and float64 (" + kFix + ")");
  if (!is_native(dt))
    throw py::value_error(std::string(name) + " has non-native byte order (" +
                          dtype_str(a) + "); convert it with " + kFix);
  return dt.itemsize() == 4 ? FloatKind::f32 : FloatKind::f64;
}

void check_same_float(const py::array& a, const char* name, const py::array& ref,
                      const char* ref_name) {
  if (float_kind(a, name) != float_kind(ref, ref_name))
    throw py::type_error(std::string(name) + " has dtype " + dtype_str(a) + " but " +
                         ref_name + " has dtype " + dtype_str(ref) +
                         "; use one float dtype per call (float32 or float64)");
}

void check_table(const py::array& a, const char* name, bool writable) {
  if (a.ndim() != 2)
    throw py::value_error(std::string(name) + " must be 2-D (V, D), got shape " +
                          shape_str(a));
  if (!(a.flags() & py::array::c_style)) {
    if (writable)
      throw py::value_error(
          std::string(name) +
          " must be C-contiguous: it is updated in place and can't be "
          "silently copied; pass np.ascontiguousarray(" +
          name + ") and use the result");
    throw py::value_error(std::string(name) +
                          " must be C-contiguous; tables are never copied. "
                          "Convert it once with " +
                          kFix);
  }
  if (writable) check_inplace(a, name);
}

void check_inplace(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(
        std::string(name) +
        " must be C-contiguous: it is written in place and can't be silently "
        "copied");
  if (!a.writeable())
    throw py::value_error(std::string(name) + " is read-only: it is written in place");
}

IndexKind index_kind(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  const bool ok =
      dt.kind() == 'i' && (dt.itemsize() == 4 || dt.itemsize() == 8) && is_native(dt);
  if (!ok)
    throw py::type_error(std::string(name) +
                         " must be native int32 or int64 here, got " + dtype_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous here");
  return dt.itemsize() == 4 ? IndexKind::i32 : IndexKind::i64;
}

void check_no_overlap(const py::array& a, const char* a_name, const py::array& b,
                      const char* b_name) {
  if (a.size() == 0 || b.size() == 0) return;
  const auto [alo, ahi] = extent(a);
  const auto [blo, bhi] = extent(b);
  if (!(alo < bhi && blo < ahi)) return;
  // The byte ranges overlap, but interleaved strided views (rows 0 and 2 of a
  // buffer against row 1) may still share no element: ask NumPy's exact test,
  // with bounded work. Undecided (TooHardError) counts as an overlap; every
  // other error propagates.
  const py::module_ np = py::module_::import("numpy");
  bool shared = true;
  try {
    shared = np.attr("shares_memory")(a, b, py::arg("max_work") = kOverlapMaxWork)
                 .cast<bool>();
  } catch (py::error_already_set& e) {
    if (!e.matches(np.attr("exceptions").attr("TooHardError"))) throw;
  }
  if (shared)
    throw py::value_error(std::string(a_name) + " overlaps " + b_name +
                          " in memory; pass a separate array");
}

py::array c_contiguous_input(const py::array& a) {
  if (a.flags() & py::array::c_style) return a;
  // Same dtype, new C-ordered buffer: a copy of a read-only input, never a cast.
  return a.attr("copy")("C").cast<py::array>();
}

void check_shape(const py::array& a, const char* name,
                 const std::vector<int64_t>& expected, const char* what) {
  if (shape_of(a) != expected)
    throw py::value_error(std::string(name) + " has shape " + shape_str(a) + " but " +
                          what + " " + shape_str(expected));
}

}  // namespace embtable::binding
