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

import embtable
import numpy as np
from embtable import _bag

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None


Case = tuple[Callable[[Any], object], Callable[[], Any] | None]


def medians_ms(cases: list[Case | None], repeats: int) -> list[float]:
    """Median wall time (ms) of each fn(setup()), timed round-robin.

    Each repeat runs every case once, in turn, so a change of machine load (other
    processes) hits all columns alike. setup (untimed) runs before each call;
    a None case gives nan.
    """
    live = [c for c in cases if c is not None]
    for fn, setup in live:  # warm-up (page faults, thread pool)
        fn(setup() if setup else None)
    times: list[list[float]] = [[] for _ in live]
    for _ in range(repeats):
        for k, (fn, setup) in enumerate(live):
            arg = setup() if setup else None
            t0 = time.perf_counter()
            fn(arg)
            times[k].append(time.perf_counter() - t0)
    it = iter(times)
    return [
        float("nan") if c is None else 1e3 * statistics.median(next(it)) for c in cases
    ]


def numpy_max(table, ids, bag_len, pad):
    """Fixed-size bags: (out, winner ids) of the max mode."""
    rows = np.take(table, ids, axis=0).reshape(-1, bag_len, table.shape[1])
    if pad is not None:
        rows[(ids == pad).reshape(-1, bag_len)] = -np.inf
    k = np.argmax(rows, axis=1)  # (B, D): first maximum
    out = np.take_along_axis(rows, k[:, None, :], axis=1)[:, 0, :]
    winners = np.take_along_axis(ids.reshape(-1, bag_len), k, axis=1)
    empty = np.isneginf(out)
    out[empty] = 0
    winners[empty] = -1
    return out, winners


def numpy_max_backward(target, grad, winners):
    cols = np.broadcast_to(np.arange(grad.shape[1]), grad.shape)
    keep = winners >= 0
    np.add.at(target, (winners[keep], cols[keep]), grad[keep])


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


class Data:
    """The arrays of one benchmark run (and their torch views)."""

    def __init__(self, args: argparse.Namespace, use_torch: bool) -> None:
        rng = np.random.default_rng(0)
        V, D, B, L = args.V, args.D, args.B, args.L
        self.V, self.L, self.repeats, self.use_torch = V, L, args.repeats, use_torch
        self.table = rng.standard_normal((V, D)).astype(args.dtype)
        self.ids = rng.integers(0, V, size=B * L).astype(np.int64)
        self.pad_idx = 0
        self.ids[::10] = self.pad_idx  # 10 % of the ids (used in the "pad" runs)
        self.offsets = np.arange(0, B * L, L, dtype=np.int64)
        self.grad = rng.standard_normal((B, D)).astype(args.dtype)
        self.target = np.zeros_like(self.table)
        self.out = np.empty((B, D), dtype=self.table.dtype)
        if use_torch:
            self.t_table = torch.from_numpy(self.table)  # shares memory
            self.t_ids = torch.from_numpy(self.ids)
            self.t_offsets = torch.from_numpy(self.offsets)
            self.t_grad = torch.from_numpy(self.grad)


def run_case(d: Data, n: int, mode: str, pad: int | None) -> None:
    """Prints the forward, dense backward and sparse backward rows of one case."""
    label = f"{mode}{'' if pad is None else ' pad'}"
    mask = d.ids != pad if pad is not None else np.ones_like(d.ids, dtype=bool)
    counts = np.add.reduceat(mask.astype(np.int64), d.offsets)
    kw: dict[str, Any] = dict(mode=mode, padding_idx=pad)
    r = d.repeats
    is_max = mode == "max"
    if is_max:  # the backward needs the winners of the forward
        _, argmax = _bag.embedding_bag_forward(d.table, d.ids, d.offsets, **kw)
        _, winners = numpy_max(d.table, d.ids, d.L, pad)

    def torch_forward(w: Any = None, sparse: bool = False) -> Any:
        w = d.t_table if w is None else w
        w.grad = None
        return F.embedding_bag(
            d.t_ids, w, d.t_offsets, mode=mode, padding_idx=pad, sparse=sparse
        )

    def emb_forward(_: Any) -> object:
        if is_max:  # with the winners, as training needs (PyTorch computes them too)
            return _bag.embedding_bag_forward(
                d.table, d.ids, d.offsets, out=d.out, **kw
            )
        return embtable.embedding_bag(d.table, d.ids, d.offsets, out=d.out, **kw)

    def np_forward(_: Any) -> object:
        if is_max:
            return numpy_max(d.table, d.ids, d.L, pad)
        return numpy_forward(d.table, d.ids, d.offsets, counts, mode, pad)

    bw = dict(kw, argmax=argmax) if is_max else kw

    def emb_dense(_: Any) -> object:
        return _bag.embedding_bag_backward(
            d.grad, d.ids, d.offsets, target=d.target, **bw
        )

    def np_dense(_: Any) -> None:
        if is_max:
            numpy_max_backward(d.target, d.grad, winners)
        else:
            numpy_backward(d.target, d.grad, d.ids, counts, d.L, mode, pad)

    def emb_sparse(_: Any) -> object:
        return _bag.embedding_bag_backward_sparse(
            d.grad, d.ids, d.offsets, num_embeddings=d.V, **bw
        )

    def torch_backward(y: Any) -> None:
        y.backward(d.t_grad)

    t = d.use_torch
    w = d.t_table.clone().requires_grad_(True) if t else None
    rows = {
        "forward": [
            (emb_forward, None),
            (np_forward, None),
            (lambda _: torch_forward(), None) if t else None,
        ],
        "backward dense": [
            (emb_dense, None),
            (np_dense, None),
            (torch_backward, lambda: torch_forward(w)) if t else None,
        ],
        "backward sparse": [
            (emb_sparse, None),
            None,
            (torch_backward, lambda: torch_forward(w, sparse=True))
            if t and not is_max  # PyTorch: "max mode does not support sparse weights"
            else None,
        ],
    }
    for name, cases in rows.items():
        emit([f"{name} {label}", n, *medians_ms(cases, r)], t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--V", type=int, default=1_000_000)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--B", type=int, default=2048)
    p.add_argument("--L", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--modes", nargs="+", default=["sum", "mean"])
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args()
    use_torch = torch is not None and not args.no_torch
    d = Data(args, use_torch)

    print(
        f"embedding_bag: B={args.B} bags of L={args.L} ids, table {args.V} x {args.D} "
        f"{args.dtype}, median of {args.repeats} (ms)"
    )
    simd = embtable.show_config(mode="dicts")["simd"]["selected"]
    print(
        f"embtable {embtable.__version__}, SIMD {simd}"
        + (f", torch {torch.__version__}" if use_torch else ", torch not installed")
    )
    header = f"{'op':<34}{'threads':>8}{'embtable':>10}{'numpy':>10}"
    if use_torch:
        header += f"{'torch':>10}"
    header += f"{'vs numpy':>10}" + (f"{'vs torch':>10}" if use_torch else "")
    print(header)
    for n in args.threads:
        embtable.set_num_threads(n)
        if use_torch:
            torch.set_num_threads(n)
        for mode in args.modes:
            for pad in (None, d.pad_idx):
                run_case(d, n, mode, pad)
    print(
        "(numpy and embtable backward accumulate into an existing (V, D) buffer; "
        "torch's dense backward allocates and zeroes one in each call; torch's sparse "
        "gradient is uncoalesced, embtable's is a coalesced RowGrad)"
    )


def emit(row: list, use_torch: bool) -> None:
    name, n, e, npy = row[:4]
    line = f"{name:<34}{n:>8}{e:>10.2f}" + (
        f"{npy:>10.2f}" if npy == npy else f"{'-':>10}"
    )
    if use_torch:
        line += f"{row[4]:>10.2f}" if row[4] == row[4] else f"{'-':>10}"
    line += f"{npy / e:>9.1f}x" if npy == npy else f"{'':>10}"
    if use_torch and row[4] == row[4]:
        line += f"{row[4] / e:>9.1f}x"
    print(line, flush=True)


if __name__ == "__main__":
    main()
