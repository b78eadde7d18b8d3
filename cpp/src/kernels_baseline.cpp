#define EMBTABLE_ISA_TABLE table_baseline
#include "kernels_impl.hpp"
