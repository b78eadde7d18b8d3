"""Quantized tables and embedding_bags: embtable vs PyTorch's quantized ops.

Issue 12's measurements, printed as markdown tables: medians of --repeats
rounds, every method timed in each round in a new (shuffled) order, as
``python -m embtable bench`` does (embtable._bench.time_rotated): a sample is a
batch of back-to-back calls lasting about 2 ms, the steady state of a serving
loop. ``--calls single`` times one call per method per round instead (each
call then starts from the cache state the previous method left: the float32
bag's 26 MB of rows, or torch's threads).

(--clock cpu times process CPU time instead of wall time; it implies --calls single.)

1. embedding_bag (mode sum) on a 1M x 64 table, B = 2,048 bags of 50 ids, at
   --threads threads: embtable on the int8 / int4 table vs
   torch.ops.quantized.embedding_bag_byte_rowwise_offsets / _4bit_rowwise_offsets
   on the same packed bytes (goal >= 1.5x), and vs embtable's own float32 bag
   (goal: no slower).
2. embedding_bags over 26 tables shaped like DLRM's Criteo Kaggle tables (row
   counts capped at 1M, D = 64, B = 2,048, 1 to 50 ids per bag) vs the Python
   loop of per-table embedding_bag calls and np.concatenate (goal >= 2x), with
   embedding_bags writing into a reused out= buffer and into a new array.

    python bench/bench_quantized.py                 # the issue's sizes, 2 threads
    python bench/bench_quantized.py --repeats 50 --tables float32 int8
    python bench/bench_quantized.py --threads 1 --clock cpu   # under other load
    python bench/bench_quantized.py --calls single  # one call per method per round
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import embtable
import numpy as np
from embtable._bench import set_peer_spin, time_rotated

# torch's idle OpenMP threads would spin on the cores of the method timed next
# (see python -m embtable bench --help, --peer-spin): park them about 1 ms after
# a call, before torch loads.
PEER_SPIN = set_peer_spin("short")

try:
    import torch
except ImportError:  # torch is optional: its columns are then skipped
    torch = None

# Criteo Kaggle (DLRM) categorical feature cardinalities; capped at --max-rows.
CRITEO_ROWS = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]  # fmt: skip


CLOCK = time.perf_counter
SINGLE = False


def medians_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time (ms) per method: batches of back-to-back calls in a new
    order each round (time_rotated), or with --calls single one call per method
    per round, round r starting at method r mod n."""
    if not SINGLE:
        return time_rotated(fns, rounds=repeats)
    names = list(fns)
    for f in fns.values():  # warm-up: page faults, thread pools
        f()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            t0 = CLOCK()
            fns[k]()
            times[k].append(CLOCK() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def bench_single(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    V, D, B, L = args.rows, 64, args.bags, args.bag_size
    table = rng.standard_normal((V, D), dtype=np.float32)
    idx = rng.integers(0, V, B * L).astype(np.int64)
    offs = np.arange(0, B * L, L, dtype=np.int64)
    out = np.empty((B, D), np.float32)
    print(
        f"\n### embedding_bag, mode sum: {V:,} x {D}, B = {B:,} bags of {L} ids, "
        f"{args.threads} threads\n"
    )
    print("| table | embtable ms | torch quantized op ms | embtable float32 ms "
          "| torch / embtable | float32 / embtable |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for fmt in ("int8", "int4"):
        q = embtable.quantize(table, fmt)
        fns: dict[str, Callable[[], object]] = {
            "et": lambda q=q: embtable.embedding_bag(q, idx, offs, mode="sum", out=out),
            "f32": lambda: embtable.embedding_bag(
                table, idx, offs, mode="sum", out=out
            ),
        }
        if torch is not None:
            op = (
                torch.ops.quantized.embedding_bag_byte_rowwise_offsets
                if fmt == "int8"
                else torch.ops.quantized.embedding_bag_4bit_rowwise_offsets
            )
            data, ti, to = (torch.from_numpy(a) for a in (q.data, idx, offs))
            fns["torch"] = lambda op=op, data=data, ti=ti, to=to: op(
                data, ti, to, False, 0, False, None, None, False
            )
        ms = medians_ms(fns, args.repeats)
        t = ms.get("torch", float("nan"))
        print(
            f"| {fmt} ({q.nbytes / 2**20:.0f} MiB) | {ms['et']:.3f} | {t:.3f} | "
            f"{ms['f32']:.3f} | {t / ms['et']:.2f}x | {ms['f32'] / ms['et']:.2f}x |"
        )


def bench_multi(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    D, B = 64, args.bags
    rows = [min(r, args.max_rows) for r in CRITEO_ROWS]
    floats = [rng.standard_normal((r, D), dtype=np.float32) for r in rows]
    ids, offs = [], []
    for r in rows:
        lengths = rng.integers(1, 51, B)
        offs.append(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        ids.append(rng.integers(0, r, int(lengths.sum())).astype(np.int64))
    n_ids = sum(len(i) for i in ids)
    print(
        f"\n### embedding_bags: 26 Criteo-shaped tables (rows {min(rows):,} to "
        f"{max(rows):,}), D = {D}, B = {B:,}, 1 to 50 ids per bag ({n_ids:,} ids), "
        f"mode sum, {args.threads} threads\n"
    )
    print(
        "| tables | embedding_bags ms (out=) | embedding_bags ms (new array) "
        "| loop of embedding_bag ms | loop / embedding_bags (out=) | loop / (new array) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    out = np.empty((B, 26 * D), np.float32)
    for kind in args.tables:
        tables = (
            floats
            if kind == "float32"
            else [embtable.quantize(f, kind) for f in floats]
        )
        fns = {
            "bags": lambda t=tables: embtable.embedding_bags(t, ids, offs, out=out),
            "new": lambda t=tables: embtable.embedding_bags(t, ids, offs),
            "loop": lambda t=tables: np.concatenate(
                [
                    embtable.embedding_bag(t[k], ids[k], offs[k], mode="sum")
                    for k in range(26)
                ],
                axis=1,
            ),
        }
        ms = medians_ms(fns, args.repeats)
        print(
            f"| {kind} | {ms['bags']:.3f} | {ms['new']:.3f} | {ms['loop']:.3f} | "
            f"{ms['loop'] / ms['bags']:.2f}x | {ms['loop'] / ms['new']:.2f}x |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--bags", type=int, default=2048)
    p.add_argument("--bag-size", type=int, default=50)
    p.add_argument("--max-rows", type=int, default=1_000_000)
    p.add_argument("--tables", nargs="+", default=["float32", "int8"],
                   choices=["float32", "int8", "int4", "float16", "bfloat16"])  # fmt: skip
    p.add_argument("--skip-multi", action="store_true")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (with --threads 1, less sensitive to other load)",
    )
    p.add_argument(
        "--calls",
        choices=["batch", "single"],
        default="batch",
        help="batch: ~2 ms batches of back-to-back calls (the default); single: "
        "one call per method per round",
    )
    args = p.parse_args()
    global CLOCK, SINGLE
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    SINGLE = args.calls == "single" or args.clock == "cpu"
    embtable.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(
        f"embtable {embtable.__version__}, torch {torch.__version__ if torch else '-'}, "
        f"SIMD {embtable.show_config(mode='dicts')['simd']['selected']}, "
        f"{args.clock} clock, {'single calls' if SINGLE else '~2 ms batches of calls'}, "
        f"load average {load:.1f} at the start; {PEER_SPIN}"
    )
    bench_single(args)
    if not args.skip_multi:
        bench_multi(args)


if __name__ == "__main__":
    main()
