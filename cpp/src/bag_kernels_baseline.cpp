#define EMBTABLE_BAG_TABLE bag_table_baseline
#include "bag_kernels_impl.hpp"
