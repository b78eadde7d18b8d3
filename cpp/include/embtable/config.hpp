// What this build is: reported by show_config().
#pragma once

#include <string>

namespace embtable {

struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string build_type;
  std::string cxx_flags;
  std::string sanitize;
};

BuildInfo build_info();

}  // namespace embtable
