// Compiled with -mavx512f (see CMakeLists.txt); used only when the CPU has AVX-512.
#define EMBTABLE_BAG_TABLE bag_table_avx512
#include "bag_kernels_impl.hpp"
