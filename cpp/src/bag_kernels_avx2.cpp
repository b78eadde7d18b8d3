// Compiled with -mavx2 (see CMakeLists.txt); used only when the CPU has AVX2.
#define EMBTABLE_BAG_TABLE bag_table_avx2
#include "bag_kernels_impl.hpp"
