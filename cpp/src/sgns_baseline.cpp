#define EMBTABLE_SGNS_TABLE table_baseline
#include "sgns_impl.hpp"
