"""What a gather of few small rows from a large table costs: pages, not bytes.

    python bench/bench_pages.py              # ~20 s; 1 thread by default
    python bench/bench_pages.py --threads 2

The grid's worst `np.take(out=)` cell is V = 1M, D = 16, N = 4,096: 4,096 rows of
64 bytes. The grid times the same ids every round, so after the first call those
rows are in cache whatever the table's size. This script separates what the
rows' spread costs from what their bytes cost:

1. The same 1M x 16 float32 table, 4,096 ids each time (rows in cache after
   the warm-up), spread over the first 4, 8, 16 or all 61 MiB of the table,
   then over 256 random 4 KiB pages of the whole table (16 rows per page) and
   over 4,096 random pages (one row per page).
2. The floor: embtable, `np.take(out=)` and `np.copyto` of the same bytes from a
   contiguous slice, at V = 10k and V = 1M.

If the time follows the number of distinct 4 KiB pages and not the table's size
or the rows' bytes, the cost is address translation (TLB misses and page walks),
which no prefetch hides.
"""

from __future__ import annotations

import argparse

import embtable
import numpy as np
from embtable._bench import time_rotated

D, N = 16, 4096
PAGE = 4096


def spread_cases(V: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    row_bytes = D * 4
    per_page = PAGE // row_bytes
    cases: dict[str, np.ndarray] = {}
    for mib in (4, 8, 16):
        cases[f"random rows of the first {mib} MiB"] = rng.integers(
            0, (mib << 20) // row_bytes, N
        )
    cases[f"random rows of all {V * row_bytes >> 20} MiB"] = rng.integers(0, V, N)
    for pages in (N // per_page * 4, N):  # 256 pages x 16 rows, 4,096 pages x 1 row
        chosen = rng.choice(V // per_page, pages, replace=False)
        offs = rng.integers(0, per_page, (pages, N // pages))
        ids = (chosen[:, None] * per_page + offs).ravel()
        rng.shuffle(ids)
        cases[f"{pages:,} random 4 KiB pages, {N // pages} rows each"] = ids
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    embtable.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = np.empty((N, D), np.float32)

    V = 1_000_000
    table = np.empty((V, D), np.float32)
    table[...] = rng.random((V, D), dtype=np.float32)
    cases = spread_cases(V, rng)
    ms = time_rotated(
        {k: (lambda i=i: embtable.gather(table, i, out=out)) for k, i in cases.items()},
        rounds=args.rounds,
    )
    print(f"gather of {N:,} ids from {V:,} x {D} float32, {args.threads} thread(s):")
    for k, i in cases.items():
        pages = np.unique(i * (D * 4) // PAGE).size
        print(f"  {k:40s} {pages:6,} pages  {ms[k] * 1e3:7.1f} us")

    print("the floor (us): embtable, np.take(out=), np.copyto of the same bytes")
    for V in (10_000, 1_000_000):
        ms = floor(V, out, rng, args.rounds)
        print(
            f"  V = {V:>9,}: "
            + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in ms.items())
            + f"  (np.take / embtable {ms['np.take'] / ms['embtable']:.2f}x)"
        )


def floor(V: int, out: np.ndarray, rng: np.random.Generator, rounds: int) -> dict:
    t = np.empty((V, D), np.float32)
    t[...] = rng.random((V, D), dtype=np.float32)
    ids = rng.integers(0, V, N)
    src = t[:N]
    return time_rotated(
        {
            "embtable": lambda: embtable.gather(t, ids, out=out),
            "np.take": lambda: np.take(t, ids, axis=0, out=out),
            "np.copyto": lambda: np.copyto(out, src),
        },
        rounds=rounds,
    )


if __name__ == "__main__":
    main()
