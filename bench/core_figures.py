"""The core's headline figures: one table, every method side by side in one run.

    python bench/core_figures.py [--repeats 9]

1,000,000 x 64 float32 table, 262,144 uniform ids: embtable.gather vs
np.take(out=), embtable.scatter_add (both modes) vs np.add.at, and both against
np.copyto of the same 64 MiB (the memory-copy limit), at 1 and 2 threads.
Each repeat runs every method once, in a new shuffled order (a fixed order let
the deterministic scatter_add always follow the default one and find the same
rows still cached), medians.
"""

from __future__ import annotations

import argparse

import embtable
import numpy as np
from embtable._bench import time_rotated


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    V, D, N = 1_000_000, 64, 262_144
    rng = np.random.default_rng(0)
    table = rng.standard_normal((V, D), dtype=np.float32)
    ids = rng.integers(0, V, size=N)
    updates = rng.standard_normal((N, D), dtype=np.float32)
    out = np.empty((N, D), np.float32)
    target = np.zeros((V, D), np.float32)
    src = np.ones((N, D), np.float32)
    for threads in (1, 2):
        embtable.set_num_threads(threads)
        methods = {
            "embtable.gather(out=)": lambda: embtable.gather(table, ids, out=out),
            "np.take(out=)": lambda: np.take(table, ids, axis=0, out=out),
            "embtable.scatter_add (default)": lambda: embtable.scatter_add(
                target, ids, updates
            ),
            "embtable.scatter_add (deterministic)": lambda: embtable.scatter_add(
                target, ids, updates, deterministic=True
            ),
            "np.add.at": lambda: np.add.at(target, ids, updates),
            "np.copyto (same 64 MiB)": lambda: np.copyto(out, src),
        }
        # One call per sample, every method in every round (no time budget).
        med = time_rotated(
            methods, rounds=args.repeats, sample_s=0, budget_s=float("inf")
        )
        copy = med["np.copyto (same 64 MiB)"]
        print(f"\nthreads = {threads} (medians of {args.repeats}, ms)\n")
        print("| method | ms | vs NumPy | time / np.copyto |")
        print("|---|---:|---:|---:|")
        for name, ms in med.items():
            base = (
                med["np.take(out=)"]
                if "gather" in name
                else med["np.add.at"]
                if "scatter" in name
                else None
            )
            ratio = f"{base / ms:.1f}x faster" if base else ""
            print(f"| {name} | {ms:.2f} | {ratio} | {ms / copy:.2f} |")


if __name__ == "__main__":
    main()
