// Compiled with -mavx2 (see CMakeLists.txt); used only when the CPU has AVX2.
#define EMBTABLE_OPTIM_TABLE table_avx2
#include "optim_impl.hpp"
