"""Sharded table on a local Ray cluster: lookups and updates per second against the
number of shards, and the cost per call against the single-process layer.

    python bench/bench_distributed.py                 # 1, 2, 4 shards
    python bench/bench_distributed.py --shards 1 2 4 8 --batch 4096 --calls 50

Prints a markdown table. Each sharded call pays one Ray round trip per shard touched
(in parallel), plus pickling of ids and rows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import embtable
import numpy as np
import ray
from embtable import distributed as dist


def timed(f, calls: int) -> float:
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1 << 20)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--calls", type=int, default=30)
    a = ap.parse_args()
    ray.init(num_cpus=max(a.shards), include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, a.rows, a.batch) for _ in range(a.calls)]
    g = np.ones((a.batch, a.dim), np.float32)

    single = embtable.Embedding(a.rows, a.dim, sparse=True, seed=0)
    opt = embtable.optimizers.Adam(0.01)
    it = iter(range(10**9))

    def step(layer, stepper):
        i = ids[next(it) % a.calls]
        layer(i)
        layer.backward(g)
        stepper()
        layer.zero_grad()

    rows = [("1 process (embtable.Embedding)", timed(lambda: single(ids[next(it) % a.calls]), a.calls),
             timed(lambda: step(single, lambda: opt.step(single)), a.calls))]  # fmt: skip
    for S in a.shards:
        sh = dist.ShardedEmbedding(a.rows, a.dim, S, optimizer="adam", seed=0)
        sh(ids[0])  # warm the actors
        look = timed(lambda sh=sh: sh(ids[next(it) % a.calls]), a.calls)
        upd = timed(lambda sh=sh: step(sh, sh.step), a.calls)
        rows.append((f"ShardedEmbedding, {S} shard(s)", look, upd))
        sh.shutdown()
    print(
        f"\n{a.rows} x {a.dim} float32, batches of {a.batch} random ids, median of "
        f"{a.calls} calls, Ray {ray.__version__} local cluster on loopback\n"
    )
    print(
        "| layer | lookup ms | lookups/s (ids) | train step ms | updates/s (ids) | lookup overhead vs 1 process |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = rows[0][1]
    for name, look, upd in rows:
        print(
            f"| {name} | {look * 1e3:.2f} | {a.batch / look:,.0f} | {upd * 1e3:.2f} | "
            f"{a.batch / upd:,.0f} | {(look - base) * 1e3:+.2f} ms |"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
