// Argument checks shared by every register_*.cpp: dtype, rank, shape,
// contiguity, writability, byte order and overlap, raised as the TypeError /
// ValueError a NumPy user expects. Nothing here converts a float buffer.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace embtable::binding {

namespace py = pybind11;

enum class FloatKind { f32, f64 };
enum class IndexKind { i32, i64 };

std::string shape_str(const py::array& a);
std::string shape_str(const std::vector<int64_t>& shape);
std::vector<int64_t> shape_of(const py::array& a);

// float32 / float64 in native byte order, else TypeError (wrong dtype) or
// ValueError (byte-swapped). `name` is the argument's name in messages.
FloatKind float_kind(const py::array& a, const char* name);
// Same dtype as `ref_kind` (checked by float_kind first), else TypeError naming both.
void check_same_float(const py::array& a, const char* name, const py::array& ref,
                      const char* ref_name);
// A 2-D C-contiguous table; `writable` adds the in-place checks.
void check_table(const py::array& a, const char* name, bool writable);
// An in-place output buffer: C-contiguous and writeable, else ValueError.
void check_inplace(const py::array& a, const char* name);
// Native int32 / int64, C-contiguous (the Python layer converts other integers).
IndexKind index_kind(const py::array& a, const char* name);
// ValueError when `a` and `b` share an element in memory (np.shares_memory,
// exact under a work bound; undecided counts as shared).
void check_no_overlap(const py::array& a, const char* a_name, const py::array& b,
                      const char* b_name);
// A read-only input: returned as is when C-contiguous, else copied once (same dtype).
py::array c_contiguous_input(const py::array& a);
// `expected` must equal a's shape exactly, else ValueError naming both.
void check_shape(const py::array& a, const char* name,
                 const std::vector<int64_t>& expected, const char* what);

template <class F>
decltype(auto) dispatch(FloatKind f, IndexKind i, F&& fn) {
  if (f == FloatKind::f32) {
    if (i == IndexKind::i32) return fn(float{}, int32_t{});
    return fn(float{}, int64_t{});
  }
  if (i == IndexKind::i32) return fn(double{}, int32_t{});
  return fn(double{}, int64_t{});
}

template <class Scalar>
Scalar* mutable_ptr(py::array& a) {
  return static_cast<Scalar*>(a.mutable_data());
}
template <class Scalar>
const Scalar* const_ptr(const py::array& a) {
  return static_cast<const Scalar*>(a.data());
}

}  // namespace embtable::binding
