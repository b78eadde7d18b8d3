#include "embtable/config.hpp"

#ifndef EMBTABLE_VERSION
#define EMBTABLE_VERSION "unknown"
#endif

namespace embtable {

BuildInfo build_info() {
  return BuildInfo{EMBTABLE_VERSION, EMBTABLE_COMPILER, EMBTABLE_BUILD_TYPE,
                   EMBTABLE_CXX_FLAGS, EMBTABLE_SANITIZE_STR};
}

}  // namespace embtable
