"""The issue-9 grid in one command: every cell, geometric means, the loop.

    python bench/bench_grid.py > grid.md            # ~1-2 min on 2 quiet cores
    python bench/bench_grid.py --quick > grid.md    # D 16/64, uniform: ~30 s

Prints Markdown: the machine and the tuned sizes in use, the pool's measured
hand-off latency, the gather and scatter_add grids (V in {10k, 1M}, D in
{16, 64, 256}, N in {4,096, 262,144}, uniform and Zipf ids, 1 and all threads;
peers numba prange, torch index_select(out=) / index_add_, np.take(out=),
np.add.at; ratios peer time / embtable time, sorted/random ids), the goals with
their worst cells, geometric means per (op, N, threads), every cell where
embtable is behind, and the training-loop table (gather, ~1 ms of NumPy work,
scatter_add) against back-to-back calls, torch and numba.

Every method of a cell is timed round-robin in one process with the order
rotated each round (medians), so a busy machine shifts all methods alike.
The peers' idle OpenMP threads park about a millisecond after their last call
(`--peer-spin short`, the default), so they do not spin on the cores of the
method timed next; `--peer-spin default` keeps the runtimes' own spin.
Needs `pip install ".[bench]"` for the peers (skipped when absent).
"""

from __future__ import annotations

import argparse
import sys
import time

import embtable
from embtable import _bench


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="D 16/64, uniform ids only")
    p.add_argument("--repeats", type=int, default=7, help="rounds per cell (medians)")
    p.add_argument("--no-loop", action="store_true", help="skip the loop table")
    p.add_argument(
        "--peer-spin",
        choices=("short", "default"),
        default="short",
        help="the peers' idle OpenMP spin (see python -m embtable bench --help)",
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    all_threads = embtable.get_num_threads()
    threads = sorted({1, all_threads})
    spin = _bench.set_peer_spin(args.peer_spin)
    peers = _bench._Peers()
    missing = {"torch", "numba"} - set(peers.names)
    if missing:
        sys.stderr.write(f"not installed, skipped: {', '.join(sorted(missing))}\n")
    print("# embtable: the issue-9 grid")
    print()
    print(_bench.machine_description())
    print()
    print(_bench.pool_report())
    print()
    print(spin)
    print()
    Ds = _bench.QUICK_D if args.quick else _bench.FULL_D
    dists = ("uniform",) if args.quick else _bench.DISTS
    results = _bench.run_grid(
        _bench.FULL_V,
        Ds,
        _bench.FULL_N,
        dists,
        threads,
        repeats=args.repeats,
        peers=peers,
    )
    print(_bench.format_tables(results))
    if not args.no_loop:
        print()
        cases = _bench.LOOP_CASES[:1] if args.quick else _bench.LOOP_CASES
        rows = _bench.run_loop(
            cases, threads=all_threads, rounds=args.repeats, peers=peers
        )
        print(_bench.format_loop(rows))
    print()
    print(f"(ran in {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
