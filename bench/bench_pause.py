"""What an idle pause between calls costs: the evidence behind the --loop miss.

    python bench/bench_pause.py            # ~30 s; 1 thread by default
    python bench/bench_pause.py --threads 2

Gathers N = 4,096 ids from a 1M x 64 float32 table, each call after an idle
pause (a spin on the clock: the core stays awake and touches no memory) of
0 to 10 ms, with the ids cycling over 1 batch (1 MiB of rows: they fit the
core's own L2) or 8 batches (8 MiB: they fit only the shared L3). Prints the
median us per call for embtable and np.take(out=) (and numba's prange gather
when installed), and each one's time after the pause over its time without.

If the 8-batch rows slow down after a pause that leaves the 1-batch rows
untouched, the pause costs the time by itself: other tenants of the L3 evict
the rows while this core waits, and no method's code is involved.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import embtable
import numpy as np
from embtable._bench import _Peers, set_peer_spin

PEER_SPIN = set_peer_spin("short")  # before numba loads (see python -m embtable bench)

PAUSES_MS = (0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=240, help="timed calls per cell")
    p.add_argument("--no-numba", action="store_true")
    args = p.parse_args()
    embtable.set_num_threads(args.threads)
    peers = _Peers(use_torch=False, use_numba=not args.no_numba)
    peers.set_threads(args.threads)
    rng = np.random.default_rng(0)
    V, D, N = 1_000_000, 64, 4_096
    table = rng.random((V, D), dtype=np.float32)
    out = np.empty((N, D), np.float32)
    methods: dict[str, Callable[[np.ndarray], object]] = {
        "embtable": lambda i: embtable.gather(table, i, out=out),
        "np.take(out=)": lambda i: np.take(table, i, axis=0, out=out),
    }
    if peers.numba is not None:
        methods["numba"] = lambda i: peers.nb_gather(table, i, out)
    print(
        f"gather of {N:,} ids from {V:,} x {D} float32, {args.threads} thread(s), "
        f"median us per call after an idle pause; {PEER_SPIN}\n"
    )
    header = " | ".join(f"{ms:g} ms" for ms in PAUSES_MS)
    print(f"| rows cycled over | method | {header} | 1 ms / 0 |")
    print("|---" * (len(PAUSES_MS) + 3) + "|")
    order = random.Random(0)
    for n_batches in (1, 8):
        batches = [rng.integers(0, V, N) for _ in range(n_batches)]
        times: dict[tuple[str, float], list[float]] = {}
        cells = [(m, ms) for m in methods for ms in PAUSES_MS]
        for fn in methods.values():  # warm-up: JIT, pool, page faults
            for b in batches:
                fn(b)
        for _ in range(3):  # rounds, cells shuffled in each
            order.shuffle(cells)
            for name, ms in cells:
                fn = methods[name]
                for b in batches:  # the steady state of back-to-back calls first
                    fn(b)
                for k in range(args.calls // 3):
                    spin(ms * 1e-3)
                    t0 = time.perf_counter()
                    fn(batches[k % n_batches])
                    times.setdefault((name, ms), []).append(time.perf_counter() - t0)
        label = f"{n_batches} batch{'es' if n_batches > 1 else ''} ({n_batches} MiB)"
        for name in methods:
            us = [float(np.median(times[(name, ms)])) * 1e6 for ms in PAUSES_MS]
            row = " | ".join(f"{u:.1f}" for u in us)
            print(
                f"| {label} | {name} | {row} | {us[PAUSES_MS.index(1.0)] / us[0]:.2f} |"
            )


if __name__ == "__main__":
    main()
