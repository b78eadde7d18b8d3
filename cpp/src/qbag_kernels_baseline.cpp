#define EMBTABLE_QBAG_TABLE qkernels_baseline
#include "qbag_kernels_impl.hpp"
