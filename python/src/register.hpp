// One register_<area> per binding source; module.cpp calls them all.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace embtable::binding {

namespace py = pybind11;

void register_core(py::module_& m);
void register_bag(py::module_& m);
void register_layer(py::module_& m);
void register_sgns(py::module_& m);
void register_vectors(py::module_& m);
void register_quant(py::module_& m);
void register_prefetch(py::module_& m);
void register_canaries(py::module_& m);  // only with EMBTABLE_TEST_CANARIES

// A numpy.ndarray that an op writes in place, else TypeError (never converted).
py::array inplace_array(const py::handle& obj, const char* name);

}  // namespace embtable::binding
