// Every machine-dependent size and time of the core, in one place.
//
// Nothing here is a constant tuned on one CPU: each value is read from what the
// machine reports (sysfs caches, sysconf, the CPU affinity mask, the cgroup CPU
// quota), derived from those, or measured by a short calibration (hand-off and
// wake-up latency of the pool, copy bandwidth) that the Python package runs once
// per machine and caches (EMBTABLE_TUNE=0 turns it off). show_config() lists each
// value with its source.
//
//   const Tuning& t = tuning();          // a consistent snapshot, never freed
//   if (out_bytes > t.stream_bytes.value) ...   // non-temporal stores
//   parallel_for(0, n, grain_rows(row_bytes), f);  // grain from t.parallel_bytes
//
// Kernels read tuning() once per call (one atomic load). Values change only when
// set_tuned() publishes a new snapshot (at import, after calibration).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace embtable {

// One value and where it came from: "sysfs", "sysconf", "affinity", "cgroup",
// "derived", "measured", "cache" (a cached measurement), "env", "fallback".
struct Tuned {
  int64_t value = 0;
  const char* source = "fallback";
};

struct Tuning {
  // What the machine reports.
  Tuned cpus;        // CPUs this process may run on, capped by a cgroup CPU quota
  Tuned line_bytes;  // cache line
  Tuned l1d_bytes;   // L1 data cache of one core
  Tuned l2_bytes;    // L2 of one core
  Tuned llc_bytes;   // the last-level cache this CPU sees (shared by its cores)

  // Sizes derived from the caches (or set from a measurement).
  // Outputs larger than this are written with streaming (non-temporal) stores:
  // they cannot stay in the last-level cache for their reader anyway.
  Tuned stream_bytes;
  // Work of fewer bytes of rows runs inline on the caller: below it a hand-off
  // to the pool costs more than it saves. The grain of parallel_for.
  Tuned parallel_bytes;
  // Bytes of rows kept in flight by software prefetch ahead of the current row.
  Tuned prefetch_bytes;
  // The same for the pooling kernels (bags forward and backward, quantized
  // bags): an id there costs less than a gathered row (no output row per id),
  // so covering the same memory latency takes more rows in flight.
  Tuned bag_prefetch_bytes;
  // Working-set size for cache-blocked kernels (bag, optimizers): a share of L2.
  Tuned block_bytes;

  // The pool (times in nanoseconds).
  Tuned spin_ns;            // longest a worker spins between jobs before it parks
  Tuned handoff_ns;         // a job reaching a spinning worker (measured)
  Tuned wake_ns;            // a job reaching a parked worker (measured)
  Tuned copy_bytes_per_us;  // single-core copy bandwidth of L2-resident rows (measured)
  // What reading and sorting out one id costs each owner of the owners'
  // scatter_add (every owner reads every id), in bytes of row work: the owners
  // pay when the row bytes they save per id exceed it (measured: the owners'
  // and the inline scatter of 64-byte rows timed in turn; else 16, the two
  // 8-byte accesses).
  Tuned owner_scan_bytes;

  // The layer kernels (RowGrad building, the bag's sparse backward).
  // Digit bits of a radix-sort pass: its bucket counters (8 bytes each) fill at
  // most a quarter of L1, in [8, 12].
  Tuned radix_bits;
};

// The current values. Never null; each snapshot lives for the whole process.
const Tuning& tuning() noexcept;

// Sets one value by its field name (as listed by tuning_items()), e.g. from a
// cached calibration, and re-derives the values that depend on it unless they
// were set explicitly. std::invalid_argument for an unknown name or value < 0.
void set_tuned(const std::string& name, int64_t value, const std::string& source);

// Restores the values read from the machine (drops calibrations and overrides).
void reset_tuning();

// (name, value, source) of every field, in declaration order.
struct TunedItem {
  std::string name;
  int64_t value;
  std::string source;
};
std::vector<TunedItem> tuning_items();

// The pool's latencies and copy bandwidth, measured now (a few milliseconds;
// needs >= 2 threads, else handoff/wake are 0). Does not change tuning().
struct Calibration {
  int64_t handoff_ns = 0;
  int64_t wake_ns = 0;
  int64_t copy_bytes_per_us = 0;
  int64_t owner_scan_bytes = 0;
};
Calibration calibrate();

// Rows per parallel task for rows of `row_bytes` bytes (tuning().parallel_bytes
// of rows), never below 1.
int64_t grain_rows(int64_t row_bytes) noexcept;

}  // namespace embtable
