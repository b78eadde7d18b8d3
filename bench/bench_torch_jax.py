"""One training step: torch.nn vs embtable.torch, and jnp.take vs embtable.jax.

    python bench/bench_torch_jax.py [--reps 5] [--threads 2]

Prints a markdown table (median ms per step over rotated repetitions, and the ratio).
Each pair also checks that both variants give the same results.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def median_ms(fns: dict, reps: int) -> dict:
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def torch_rows(reps: int, threads: int) -> list[tuple[str, float, float]]:
    import embtable
    from embtable._bench import set_peer_spin

    set_peer_spin("short")  # torch's idle OpenMP threads park ~1 ms after a call
    import embtable.torch as et
    import torch

    torch.set_num_threads(threads)
    embtable.set_num_threads(threads)
    V, D, B, L = 1_000_000, 64, 2048, 50
    gen = torch.Generator().manual_seed(0)
    rows = []
    for sparse, opt_name, our_opt in (
        (False, "SGD", torch.optim.SGD),
        (True, "SparseAdam", torch.optim.SparseAdam),
        (True, "SparseAdam", et.SparseAdam),
    ):
        torch.manual_seed(0)
        ref = torch.nn.EmbeddingBag(V, D, mode="sum", sparse=sparse)
        ours = et.EmbeddingBag(V, D, mode="sum", sparse=sparse)
        with torch.no_grad():
            ours.weight.copy_(ref.weight)
        opt = getattr(torch.optim, opt_name)
        o_ref, o_ours = (
            opt(ref.parameters(), lr=0.01),
            our_opt(ours.parameters(), lr=0.01),
        )
        ids = torch.randint(0, V, (B * L,), generator=gen)
        offsets = torch.arange(0, B * L, L)
        target = torch.randn(B, D, generator=gen)

        def step(m, o, ids=ids, offsets=offsets, target=target):
            def run():
                o.zero_grad()
                ((m(ids, offsets) - target) ** 2).sum().backward()
                o.step()

            return run

        a, b = step(ref, o_ref), step(ours, o_ours)
        a(), b()  # warm up (optimizer state), then compare the tables
        torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-4, atol=1e-5)
        t = median_ms({"torch": a, "embtable": b}, reps)
        kind = "dense + SGD"
        if sparse:
            kind = "sparse=True + SparseAdam (" + (
                "embtable.torch.SparseAdam)"
                if our_opt is et.SparseAdam
                else "torch.optim.SparseAdam on both)"
            )
        rows.append(
            (f"EmbeddingBag(1M, 64, sum) step, {kind}", t["torch"], t["embtable"])
        )
    return rows


def jax_rows(reps: int, threads: int) -> list[tuple[str, float, float]]:
    import embtable
    import embtable.jax as ej
    import jax
    import jax.numpy as jnp

    embtable.set_num_threads(threads)
    V, D, N = 1_000_000, 64, 262_144
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.standard_normal((V, D), dtype=np.float32))
    ids = jnp.asarray(rng.integers(0, V, N).astype(np.int32))
    w = jnp.asarray(rng.standard_normal((N, D), dtype=np.float32))

    def make(g):
        f = jax.jit(jax.value_and_grad(lambda t: jnp.sum(g(t, ids) * w)))
        return lambda: jax.block_until_ready(f(table))

    a = make(lambda t, i: jnp.take(t, i, axis=0))
    b = make(ej.gather)
    (_, ga), (_, gb) = a(), b()
    np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), rtol=1e-5, atol=1e-5)
    t = median_ms({"jax": a, "embtable": b}, reps)
    return [
        (
            f"gather + grad under jit, V=1M D=64 N=262,144 ({ej.BACKEND})",
            t["jax"],
            t["embtable"],
        )
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    rows = torch_rows(args.reps, args.threads) + jax_rows(args.reps, args.threads)
    print(f"threads = {args.threads}, median of {args.reps} rotated repetitions\n")
    print("| step | torch / jax (ms) | embtable (ms) | speedup |")
    print("| --- | ---: | ---: | ---: |")
    for name, ref, ours in rows:
        print(f"| {name} | {ref:.1f} | {ours:.1f} | {ref / ours:.2f}x |")


if __name__ == "__main__":
    main()
