// Compiled with AVX-512 flags (see CMakeLists.txt); used only when the CPU has them.
#define EMBTABLE_SGNS_TABLE table_avx512
#include "sgns_impl.hpp"
