// Compiled with -mavx2 -mfma (see CMakeLists.txt); used only when the CPU has AVX2.
#define EMBTABLE_SGNS_TABLE table_avx2
#include "sgns_impl.hpp"
