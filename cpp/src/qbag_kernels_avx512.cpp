// Compiled with -mavx512f -mf16c (see CMakeLists.txt); used only when the CPU has both.
#define EMBTABLE_QBAG_TABLE qkernels_avx512
#include "qbag_kernels_impl.hpp"
