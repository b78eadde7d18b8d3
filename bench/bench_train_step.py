"""One training step (forward + backward + optimizer step) of an embedding table.

Frameworks are timed round-robin (A, B, C, A, B, C, ...) so that they share the
same machine load; each cell is the median (and the min) of --repeats steps after
a warm-up; ratios use the medians.

embtable (dense and sparse layers, SGD and Adam) against the same step in plain
NumPy (np.take + np.add.at + update) and PyTorch (nn.Embedding + SGD / Adam /
SparseAdam) when torch is installed.

    python bench/bench_train_step.py   # 1M x 64 float32, 262,144 ids, 2 threads
    python bench/bench_train_step.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import embtable
import numpy as np
from embtable import Embedding, optimizers


def interleaved_times(
    steps: list[Callable[[], None]], repeats: int
) -> list[tuple[float, float]]:
    """(median, min) ms of each step, timed round-robin so all see the same load."""
    for step in steps:
        step()  # warm-up: allocates state and buffers
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for k, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    return [(1e3 * statistics.median(t), 1e3 * min(t)) for t in times]


def embtable_step(V, D, ids, g, sparse, opt_name):
    layer = Embedding(V, D, sparse=sparse, seed=0)
    opt = optimizers.get(opt_name)

    def step():
        layer(ids)
        layer.backward(g)
        opt.step(layer)
        layer.zero_grad()

    return step


def embtable_breakdown(V, D, ids, g, repeats):
    """Median ms of embtable's forward / backward / optimizer step, run alone."""
    print("embtable alone, median ms:  forward  backward  step  total")
    for opt_name in ("sgd", "adam"):
        for sparse in (False, True):
            layer = Embedding(V, D, sparse=sparse, seed=0)
            opt = optimizers.get(opt_name)
            parts: list[list[float]] = [[], [], [], []]
            for r in range(repeats + 1):
                t0 = time.perf_counter()
                layer(ids)
                t1 = time.perf_counter()
                layer.backward(g)
                t2 = time.perf_counter()
                opt.step(layer)
                t3 = time.perf_counter()
                layer.zero_grad()
                if r:  # the first step is the warm-up
                    for k, (a, b) in enumerate(
                        [(t0, t1), (t1, t2), (t2, t3), (t0, t3)]
                    ):
                        parts[k].append(1e3 * (b - a))
            cells = " ".join(f"{statistics.median(p):8.1f}" for p in parts)
            kind = "sparse" if sparse else "dense"
            print(f"  {opt_name:<5} {kind:<6}             {cells}")
            del layer, opt
            gc.collect()


def numpy_step(V, D, ids, g, sparse, opt_name):
    rng = np.random.default_rng(0)
    W = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
    lr = np.float32(0.01 if opt_name == "sgd" else 0.001)
    b1, b2, eps = np.float32(0.9), np.float32(0.999), np.float32(1e-7)
    m = np.zeros_like(W) if opt_name == "adam" else None
    v = np.zeros_like(W) if opt_name == "adam" else None
    grad = np.zeros_like(W) if not sparse else None
    t = [0]

    def adam(rows, gr):
        t[0] += 1
        alpha = lr * np.sqrt(1 - b2 ** t[0]) / (1 - b1 ** t[0])
        if rows is None:
            m[...] += (gr - m) * (1 - b1)
            v[...] += (gr * gr - v) * (1 - b2)
            W[...] -= (m * alpha) / (np.sqrt(v) + eps)
        else:
            mr = m[rows] + (gr - m[rows]) * (1 - b1)
            vr = v[rows] + (gr * gr - v[rows]) * (1 - b2)
            m[rows], v[rows] = mr, vr
            W[rows] -= (mr * alpha) / (np.sqrt(vr) + eps)

    def step():
        np.take(W, ids, axis=0)
        if sparse:
            rows, inv = np.unique(ids, return_inverse=True)
            vals = np.zeros((rows.size, D), np.float32)
            np.add.at(vals, inv, g)
            if opt_name == "sgd":
                W[rows] -= lr * vals
            else:
                adam(rows, vals)
        else:
            grad.fill(0)
            np.add.at(grad, ids, g)
            if opt_name == "sgd":
                W[...] -= lr * grad
            else:
                adam(None, grad)

    return step


def torch_step(V, D, ids, g, sparse, opt_name):
    import torch

    emb = torch.nn.Embedding(V, D, sparse=sparse)
    if opt_name == "sgd":
        opt = torch.optim.SGD(emb.parameters(), lr=0.01)
    elif sparse:
        opt = torch.optim.SparseAdam(emb.parameters(), lr=0.001)
    else:
        opt = torch.optim.Adam(emb.parameters(), lr=0.001)
    tids = torch.from_numpy(ids)
    tg = torch.from_numpy(g)

    def step():
        opt.zero_grad()
        emb(tids).backward(tg)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--ids", type=int, default=262_144)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument(
        "--breakdown", action="store_true", help="also time embtable's parts alone"
    )
    args = ap.parse_args()
    V, D, n = args.rows, args.dim, args.ids
    rng = np.random.default_rng(42)
    ids = rng.integers(0, V, size=n, dtype=np.int64)
    g = rng.standard_normal((n, D)).astype(np.float32)
    embtable.set_num_threads(args.threads)
    frameworks: list[tuple[str, Callable]] = [
        ("embtable", embtable_step),
        ("numpy", numpy_step),
    ]
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
            frameworks.append((f"torch {torch.__version__}", torch_step))
        except ImportError:
            pass
    print(
        f"train step: table {V} x {D} float32, {n} ids (uniform), "
        f"{args.threads} threads, "
        f"median (min) of {args.repeats}; unique rows per step: {np.unique(ids).size}"
    )
    print(
        f"{'optimizer':<9} {'layer':<7} "
        + " ".join(f"{name:>18}" for name, _ in frameworks)
        + "   numpy/embtable"
        + ("   torch/embtable" if len(frameworks) > 2 else "")
    )
    for opt_name in ("sgd", "adam"):
        for sparse in (False, True):
            steps = [make(V, D, ids, g, sparse, opt_name) for _, make in frameworks]
            timed = interleaved_times(steps, args.repeats)
            row = [med for med, _ in timed]
            del steps
            gc.collect()
            cells = " ".join(f"{med:7.0f} ({low:5.0f}) ms" for med, low in timed)
            ratios = "".join(f"   {t / row[0]:14.1f}x" for t in row[1:])
            print(f"{opt_name:<9} {'sparse' if sparse else 'dense':<7} {cells}{ratios}")

    if args.breakdown:
        embtable_breakdown(V, D, ids, g, args.repeats)


if __name__ == "__main__":
    main()
