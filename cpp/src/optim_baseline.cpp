#define EMBTABLE_OPTIM_TABLE table_baseline
#include "optim_impl.hpp"
