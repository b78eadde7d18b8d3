"""A/B of the kernels: gather and scatter_add, fused optimizers, RowGrad
building, embedding_bag (float and quantized), sgns.

Each case runs under every variant in one process, round-robin with the order
rotated each round; a cell is the median over --repeats rounds (ms). Variants:

- one column per SIMD level this CPU runs (``_core.set_simd_level``);
- with ``--ref PATH/_core*.so`` (an older build's extension module), a ``ref``
  column: the same call through that build, at its best SIMD level. This is how
  a change is measured before/after in one run:

    cp $(python -c "import embtable._core as c; print(c.__file__)") /tmp/ref_core.so
    # ... rebuild and install the new version, then:
    python bench/bench_kernels.py --ref /tmp/ref_core.so

Plain ``python bench/bench_kernels.py`` takes about a minute and prints a
Markdown table (cases x variants, then ratios against the first column).
``--only core,optim,rowgrad,bag,qbag,sgns`` picks sections; ``--threads 1,2``.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import embtable
import numpy as np
from embtable import _core


def load_ref(path: str) -> ModuleType:
    """An older build's _core extension, loaded beside the installed one."""
    name = "embtable_ref._core"  # the last part must stay "_core" (its init symbol)
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def levels() -> list[str]:
    saved = _core.get_simd_level()
    out = []
    for lv in embtable.show_config(mode="dicts")["simd"]["compiled"]:
        try:
            _core.set_simd_level(lv)
            out.append(lv)
        except ValueError:
            pass
    _core.set_simd_level(saved)
    return out


Variant = tuple[str, ModuleType, str | None]  # (column, module, simd level or None)


def time_case(
    run: Callable[[ModuleType], Callable[[], object]],
    variants: list[Variant],
    threads: int,
    repeats: int,
    gap: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median ms of each variant; run(mod) returns the zero-argument call to time."""
    calls = []
    for _, mod, _lv in variants:
        mod.set_num_threads(threads)
        calls.append(run(mod))
    times: list[list[float]] = [[] for _ in variants]
    order = list(range(len(variants)))
    for r in range(repeats + 1):
        k0 = r % len(order)
        for k in order[k0:] + order[:k0]:
            _, mod, lv = variants[k]
            if lv is not None:
                mod.set_simd_level(lv)
            if gap > 0:
                # Lets the previous call's pool workers stop spinning (two builds
                # in one process have two pools) and starts each call alike.
                time.sleep(gap)
            t0 = clock()
            calls[k]()
            dt = clock() - t0
            if r:  # the first round warms up (page faults, pool threads)
                times[k].append(dt)
    return [1e3 * statistics.median(t) for t in times]


def core_cases(rng: np.random.Generator):
    """gather and scatter_add on NumPy's own arrays, which start 16 bytes into
    a cache line when large (as a user's table does): rows in DRAM (V = 1M) and
    in cache (V = 10k)."""
    for V, D, n in (
        (1_000_000, 16, 262_144),
        (1_000_000, 64, 262_144),
        (1_000_000, 256, 65_536),
        (1_000_000, 64, 4_096),
        (10_000, 64, 262_144),
    ):
        table = rng.standard_normal((V, D), dtype=np.float32)
        ids = rng.integers(0, V, n)
        out = np.empty((n, D), np.float32)
        updates = rng.standard_normal((n, D), dtype=np.float32)

        def gather(mod, table=table, ids=ids, out=out):
            return lambda: mod.gather(table, ids, out=out)

        def scatter(mod, table=table, ids=ids, updates=updates):
            return lambda: mod.scatter_add(table, ids, updates)

        yield f"gather V={V:,} D={D} n={n:,}", gather
        yield f"scatter_add V={V:,} D={D} n={n:,}", scatter


def optim_cases(rng: np.random.Generator):
    for V, D, n in (
        (1_000_000, 64, 262_144),
        (100_000, 64, 4_096),
        (20_000, 256, 4_096),
    ):
        ids = rng.integers(0, V, n)
        rows = np.unique(ids).astype(np.int64)
        for kind, hp, n_states in (("sgd", {}, 0), ("adam", {"step": 5}, 2)):
            table = rng.standard_normal((V, D)).astype(np.float32)
            states = [
                np.zeros((V, D), np.float32) if k < n_states else None for k in range(3)
            ]
            g_lazy = rng.standard_normal((rows.size, D)).astype(np.float32)
            g_dense = None
            if V * D <= 20_000_000:
                g_dense = rng.standard_normal((V, D)).astype(np.float32)

            def lazy(
                mod, table=table, states=states, g=g_lazy, kind=kind, hp=hp, rows=rows
            ):
                return lambda: mod.optim_step(kind, table, rows, g, states, 1e-4, **hp)

            yield f"optim {kind} lazy V={V:,} D={D} U={rows.size:,}", lazy
            if g_dense is not None:

                def dense(mod, table=table, states=states, g=g_dense, kind=kind, hp=hp):
                    return lambda: mod.optim_step(
                        kind, table, None, g, states, 1e-4, **hp
                    )

                yield f"optim {kind} dense V={V:,} D={D}", dense


def rowgrad_cases(rng: np.random.Generator):
    for V, D, n, dist in (
        (1_000_000, 64, 262_144, "uniform"),
        (1_000_000, 64, 4_096, "uniform"),
        (10_000, 64, 262_144, "zipf"),
        (100_000, 16, 65_536, "uniform"),
    ):
        if dist == "zipf":
            ids = np.minimum(rng.zipf(1.2, n) - 1, V - 1).astype(np.int64)
        else:
            ids = rng.integers(0, V, n)
        g = rng.standard_normal((n, D)).astype(np.float32)

        def case(mod, ids=ids, g=g, V=V):
            return lambda: mod.rowgrad_coalesce(ids, g, V)

        yield f"rowgrad V={V:,} D={D} n={n:,} {dist}", case


def bag_cases(rng: np.random.Generator):
    for V, D, B, L in (
        (1_000_000, 64, 2_048, 50),
        (100_000, 64, 64, 20),
        (100_000, 256, 512, 50),
    ):
        ids = rng.integers(0, V, B * L)
        offsets = np.arange(0, B * L, L, dtype=np.int64)
        table = rng.standard_normal((V, D)).astype(np.float32)
        out = np.empty((B, D), np.float32)
        go = rng.standard_normal((B, D)).astype(np.float32)
        target = np.zeros((V, D), np.float32)

        def fwd(mod, table=table, ids=ids, offsets=offsets, out=out):
            return lambda: mod.embedding_bag(table, ids, offsets, mode="sum", out=out)

        def bwd(mod, go=go, ids=ids, offsets=offsets, target=target):
            return lambda: mod.embedding_bag_backward(
                go, ids, offsets, mode="mean", target=target
            )

        def bwd_sparse(mod, go=go, ids=ids, offsets=offsets, V=V):
            return lambda: mod.embedding_bag_backward_sparse(
                go, ids, offsets, num_embeddings=V, mode="sum"
            )

        tag = f"V={V:,} D={D} B={B:,} L={L}"
        yield f"bag forward sum {tag}", fwd
        yield f"bag backward mean {tag}", bwd
        yield f"bag backward sparse {tag}", bwd_sparse


def qbag_cases(rng: np.random.Generator):
    """The quantized bag (issue 12's shape): int8 and int4 rows, sum and mean."""
    V, D, B, L = 1_000_000, 64, 2_048, 50
    table = rng.standard_normal((V, D), dtype=np.float32)
    ids = rng.integers(0, V, B * L)
    offsets = np.arange(0, B * L, L, dtype=np.int64)
    out = np.empty((B, D), np.float32)
    for fmt in ("int8", "int4"):
        data = embtable.quantize(table, fmt).data
        for mode in ("sum", "mean"):

            def case(mod, data=data, fmt=fmt, mode=mode):
                return lambda: mod.qembedding_bag(
                    data, fmt, D, ids, offsets, mode=mode, per_sample_weights=None,
                    padding_idx=None, include_last_offset=False, out=out,
                )  # fmt: skip

            yield f"quantized bag {fmt} {mode} V={V:,} D={D} B={B:,} L={L}", case


def sgns_cases(rng: np.random.Generator):
    V, D, n = 20_000, 100, 50_000
    tokens = np.minimum(rng.zipf(1.3, n) - 1, V - 1).astype(np.int32)
    noise = rng.integers(0, V, 100_000).astype(np.int32)
    tin = (rng.standard_normal((V, D)) * 0.01).astype(np.float32)
    tout = np.zeros((V, D), np.float32)

    def case(mod):
        return lambda: mod.sgns_train(
            tin, tout, tokens, None, noise, 0, n, 5, 5, 0.025, 0.0001, 1
        )

    yield f"sgns_train V={V:,} D={D} tokens={n:,} window=5 K=5", case


SECTIONS = {
    "core": core_cases,
    "optim": optim_cases,
    "rowgrad": rowgrad_cases,
    "bag": bag_cases,
    "qbag": qbag_cases,
    "sgns": sgns_cases,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", help="an older build's _core*.so to compare against")
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=1.0,
        help="pause before each timed call (pool workers park; 0: back to back)",
    )
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: the calling thread's CPU time (robust to a loaded machine; "
        "meaningful at 1 thread only, where the kernels run on the caller)",
    )
    ap.add_argument(
        "--levels", default=None, help="SIMD levels to run (default: all runnable)"
    )
    args = ap.parse_args()
    lvls = args.levels.split(",") if args.levels else levels()
    variants: list[Variant] = []
    if args.ref:
        variants.append(("ref", load_ref(args.ref), None))
    variants += [(lv, _core, lv) for lv in lvls]
    names = [v[0] for v in variants]
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    cfg = embtable.show_config(mode="dicts")
    print(
        f"embtable {embtable.__version__}, SIMD detected {cfg['simd']['detected']}; "
        f"median ms ({args.clock} clock) of {args.repeats} rounds, order rotated "
        f"each round, {args.gap_ms} ms pause before each call"
    )
    print()
    print(
        "| case | threads | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{names[0]}/{n}" for n in names[1:])
        + " |"
    )
    print("|---|---:|" + "---:|" * (2 * len(names) - 1))
    rng = np.random.default_rng(0)
    for section in args.only.split(","):
        for label, run in SECTIONS[section](rng):
            for threads in (int(t) for t in args.threads.split(",")):
                ms = time_case(
                    run, variants, threads, args.repeats, args.gap_ms / 1e3, clock
                )
                cells = " | ".join(f"{m:.3f}" for m in ms)
                ratios = " | ".join(f"{ms[0] / m:.2f}x" for m in ms[1:])
                print(f"| {label} | {threads} | {cells} | {ratios} |", flush=True)
    saved = cfg["simd"]["selected"]
    _core.set_simd_level(saved)


if __name__ == "__main__":
    main()
