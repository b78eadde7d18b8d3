// embtable._core: the binding only checks, converts and dispatches.
#include "register.hpp"

#ifndef EMBTABLE_VERSION
#define EMBTABLE_VERSION "unknown"
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "embtable's compiled core (use the embtable package, not this module)";
  m.attr("__version__") = EMBTABLE_VERSION;
  embtable::binding::register_core(m);
  embtable::binding::register_bag(m);
  embtable::binding::register_layer(m);
  embtable::binding::register_sgns(m);
  embtable::binding::register_vectors(m);
  embtable::binding::register_quant(m);
  embtable::binding::register_prefetch(m);
#if defined(EMBTABLE_TEST_CANARIES)
  embtable::binding::register_canaries(m);
#endif
}
