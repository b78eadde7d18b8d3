// Compiled with -mavx2 -mf16c (see CMakeLists.txt); used only when the CPU has both.
#define EMBTABLE_QBAG_TABLE qkernels_avx2
#include "qbag_kernels_impl.hpp"
