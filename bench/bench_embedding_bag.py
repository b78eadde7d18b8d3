"""embedding_bag forward / backward: embtable vs NumPy (and PyTorch when installed).

The issue's measurement: B = 2048 bags of 50 ids over a 1M x 64 float32 table,
modes sum and mean, with and without padding_idx, at 1 and 2 threads. Prints the
median of --repeats runs of each, side by side.

    python bench/bench_embedding_bag.py            # the issue's sizes
    python bench/bench_embedding_bag.py --V 100000 --repeats 5

Backward timings: embtable and NumPy accumulate into an existing (V, D) buffer
(what a training loop reuses); PyTorch's dense backward allocates its (V, D) grad
each call (that is how it works), so its sparse=True backward is shown too, next
to embtable's RowGrad (sparse) backward.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import embtable
from embtable import _bag

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None


def median_ms(
    fn: Callable[[Any], object], repeats: int, setup: Callable[[], Any] | None = None
) -> float:
    """Median wall time of fn(setup()) in ms; setup (untimed) runs before each call."""
    fn(setup() if setup else None)  # warm-up (page faults, thread pool)
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def numpy_forward(table, ids, offsets, counts, mode, pad):
    rows = np.take(table, ids, axis=0)
    if pad is not None:
        rows[ids == pad] = 0
    out = np.add.reduceat(rows, offsets, axis=0)
    if mode == "mean":
        out /= np.maximum(counts, 1)[:, None]
    return out


def numpy_backward(target, grad, ids, counts, bag_len, mode, pad):
    g = grad / np.maximum(counts, 1)[:, None] if mode == "mean" else grad
    upd = np.repeat(g, bag_len, axis=0)
    if pad is not None:
        upd[ids == pad] = 0
    np.add.at(target, ids, upd)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--V", type=int, default=1_000_000)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--B", type=int, default=2048)
    p.add_argument("--L", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args()
    use_torch = torch is not None and not args.no_torch

    rng = np.random.default_rng(0)
    V, D, B, L = args.V, args.D, args.B, args.L
    table = rng.standard_normal((V, D)).astype(args.dtype)
    ids = rng.integers(0, V, size=B * L).astype(np.int64)
    pad_idx = 0
    ids[::10] = pad_idx  # 10 % of the ids are padding (in the runs with padding_idx)
    offsets = np.arange(0, B * L, L, dtype=np.int64)
    grad = rng.standard_normal((B, D)).astype(args.dtype)
    target = np.zeros_like(table)
    if use_torch:
        t_table = torch.from_numpy(table)  # shares memory
        t_ids, t_offsets, t_grad = map(torch.from_numpy, (ids, offsets, grad))

    print(f"embedding_bag: B={B} bags of L={L} ids, table {V} x {D} {args.dtype}, "
          f"median of {args.repeats} (ms)")
    print(f"embtable {embtable.__version__}, SIMD {embtable.show_config(mode='dicts')['simd']['selected']}"
          + (f", torch {torch.__version__}" if use_torch else ", torch not installed"))
    header = f"{'op':<34}{'threads':>8}{'embtable':>10}{'numpy':>10}"
    if use_torch:
        header += f"{'torch':>10}"
    header += f"{'vs numpy':>10}" + (f"{'vs torch':>10}" if use_torch else "")
    print(header)

    for n in args.threads:
        embtable.set_num_threads(n)
        if use_torch:
            torch.set_num_threads(n)
        for mode in ("sum", "mean"):
            for pad in (None, pad_idx):
                pad_label = "" if pad is None else " pad"
                mask = ids != pad if pad is not None else np.ones_like(ids, dtype=bool)
                counts = np.add.reduceat(mask.astype(np.int64), offsets)
                out = np.empty((B, D), dtype=table.dtype)
                kw = dict(mode=mode, padding_idx=pad)
                # -- forward
                e = median_ms(lambda _: embtable.embedding_bag(table, ids, offsets, out=out, **kw),
                              args.repeats)
                nfw = median_ms(lambda _: numpy_forward(table, ids, offsets, counts, mode, pad),
                                args.repeats)
                row = [f"forward {mode}{pad_label}", n, e, nfw]
                if use_torch:
                    tf = median_ms(lambda _: F.embedding_bag(t_ids, t_table, t_offsets, mode=mode,
                                                           padding_idx=pad), args.repeats)
                    row.append(tf)
                emit(row, use_torch)
                # -- dense backward
                e = median_ms(lambda _: _bag.embedding_bag_backward(
                    grad, ids, offsets, target=target, **kw), args.repeats)
                nbw = median_ms(lambda _: numpy_backward(target, grad, ids, counts, L, mode, pad),
                                args.repeats)
                row = [f"backward dense {mode}{pad_label}", n, e, nbw]
                if use_torch:
                    w = t_table.clone().requires_grad_(True)

                    def torch_forward(w=w, sparse=False):
                        w.grad = None
                        return F.embedding_bag(t_ids, w, t_offsets, mode=mode, padding_idx=pad,
                                               sparse=sparse)

                    row.append(median_ms(lambda y: y.backward(t_grad), args.repeats,
                                         torch_forward))
                emit(row, use_torch)
                # -- sparse backward (RowGrad)
                e = median_ms(lambda _: _bag.embedding_bag_backward_sparse(
                    grad, ids, offsets, num_embeddings=V, **kw), args.repeats)
                row = [f"backward sparse {mode}{pad_label}", n, e, float("nan")]
                if use_torch:
                    row.append(median_ms(lambda y: y.backward(t_grad), args.repeats,
                                         lambda: torch_forward(sparse=True)))
                emit(row, use_torch)
    print("(torch's dense backward allocates and zeroes a (V, D) grad in each call)")


def emit(row: list, use_torch: bool) -> None:
    name, n, e, npy = row[:4]
    line = f"{name:<34}{n:>8}{e:>10.2f}{npy:>10.2f}"
    if use_torch:
        line += f"{row[4]:>10.2f}"
    line += f"{npy / e:>9.1f}x" if npy == npy else f"{'':>10}"
    if use_torch:
        line += f"{row[4] / e:>9.1f}x"
    print(line, flush=True)


if __name__ == "__main__":
    main()
