// Compiled with -mavx512f -mavx512vl -mavx512bw -mavx512dq; used only when the CPU
// has them.
#define EMBTABLE_OPTIM_TABLE table_avx512
#include "optim_impl.hpp"
