"""``python -m embtable bench``: embtable against NumPy, the copy limit and its peers.

Runs a grid of gather and scatter-add cases, times every method side by side in
the same process (medians of several repeats), and prints one table per op with
ratios. PyTorch and numba are timed when importable, skipped otherwise;
matplotlib is only needed for ``--plot``.

Ratios are ``other time / embtable time``: above 1 means embtable is faster.
Throughput counts the bytes of the rows moved once (``N * D * itemsize``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import embtable

from ._atomic import atomic_write

__all__ = ["main", "run_grid", "Case"]

FULL_V = (10_000, 1_000_000)
FULL_D = (16, 64, 256)
FULL_N = (4_096, 262_144)
QUICK_D = (16, 64)
DISTS = ("uniform", "zipf")
ZIPF_A = 1.1  # the hottest row gets about 10% of the ids
PLOT_N = (1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576)


@dataclass(frozen=True)
class Case:
    """One grid point."""

    V: int
    D: int
    N: int
    dist: str
    threads: int


@dataclass
class Result:
    op: str
    method: str
    case: Case
    ms: float
    gbps: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- timing


def _median_ms(fn: Callable[[], object], repeats: int, budget_s: float = 1.5) -> float:
    """Median wall time of `fn` in ms; fast calls are batched to ~2 ms per sample."""
    fn()  # warm-up: page faults, JIT, pool start
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    inner = max(1, int(2e-3 / max(first, 1e-7)))
    reps = (
        repeats
        if first * repeats <= budget_s
        else max(3, int(budget_s / max(first, 1e-9)))
    )
    reps = min(reps, repeats)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    samples.sort()
    return samples[len(samples) // 2] * 1e3


# ---------------------------------------------------------------- optional peers


class _Peers:
    """PyTorch and numba implementations, loaded lazily; absent ones are None."""

    def __init__(self, use_torch: bool = True, use_numba: bool = True) -> None:
        self.torch: Any = None
        self.numba: Any = None
        self.nb_gather: Any = None
        self.nb_scatter: Any = None
        self.nb_copy: Any = None
        if use_torch:
            try:
                import torch

                self.torch = torch
            except Exception:  # noqa: BLE001 - any import failure means "skip"
                self.torch = None
        if use_numba:
            try:
                self._load_numba()
            except Exception:  # noqa: BLE001
                self.numba = None

    def _load_numba(self) -> None:
        import numba
        from numba import njit, prange

        @njit(parallel=True, cache=True)
        def nb_gather(table, ids, out):  # type: ignore[no-untyped-def]
            for i in prange(ids.shape[0]):
                out[i, :] = table[ids[i], :]

        @njit(parallel=True, cache=True)
        def nb_scatter(target, ids, updates, parts):  # type: ignore[no-untyped-def]
            V = target.shape[0]
            for p in prange(parts):
                lo = p * V // parts
                hi = (p + 1) * V // parts
                for i in range(ids.shape[0]):
                    r = ids[i]
                    if r >= lo and r < hi:
                        target[r, :] += updates[i, :]

        self.numba = numba
        self.nb_gather = nb_gather
        self.nb_scatter = nb_scatter

    def set_threads(self, n: int) -> None:
        if self.torch is not None:
            self.torch.set_num_threads(n)
        if self.numba is not None:
            self.numba.set_num_threads(min(n, self.numba.config.NUMBA_NUM_THREADS))

    @property
    def names(self) -> list[str]:
        return [
            n
            for n, m in (("torch", self.torch), ("numba", self.numba))
            if m is not None
        ]


# ---------------------------------------------------------------- inputs


def make_ids(V: int, N: int, dist: str, rng: np.random.Generator) -> np.ndarray:
    """N int64 ids in [0, V): uniform, or Zipf(1.1) ranks scattered by a permutation."""
    if dist == "uniform":
        return rng.integers(0, V, N, dtype=np.int64)
    ranks = (rng.zipf(ZIPF_A, N) - 1) % V
    perm = rng.permutation(V)
    return perm[ranks].astype(np.int64)


class _Pool:
    """A parallel memory copy with Python threads over np.copyto (releases the GIL)."""

    def __init__(self) -> None:
        self.ex: concurrent.futures.ThreadPoolExecutor | None = None
        self.n = 0

    def copy(self, dst: np.ndarray, src: np.ndarray, threads: int) -> None:
        if threads <= 1:
            np.copyto(dst, src)
            return
        if self.ex is None or self.n != threads:
            if self.ex is not None:
                self.ex.shutdown()
            self.ex = concurrent.futures.ThreadPoolExecutor(threads)
            self.n = threads
        d = dst.reshape(-1)
        s = src.reshape(-1)
        cuts = [len(d) * k // threads for k in range(threads + 1)]
        futs = [
            self.ex.submit(
                np.copyto, d[cuts[k] : cuts[k + 1]], s[cuts[k] : cuts[k + 1]]
            )
            for k in range(threads)
        ]
        for f in futs:
            f.result()

    def close(self) -> None:
        if self.ex is not None:
            self.ex.shutdown()


# ---------------------------------------------------------------- the grid


def _progress(msg: str, done: int, total: int, t0: float) -> None:
    el = time.perf_counter() - t0
    sys.stderr.write(f"\r[{done:3d}/{total}] {el:6.1f}s  {msg:<60}")
    sys.stderr.flush()


def run_grid(
    Vs: Sequence[int],
    Ds: Sequence[int],
    Ns: Sequence[int],
    dists: Sequence[str],
    thread_counts: Sequence[int],
    repeats: int = 7,
    peers: _Peers | None = None,
    seed: int = 0,
    with_sorted: bool = True,
    progress: bool = True,
) -> list[Result]:
    """Time every method on every case; returns one Result per (op, method, case)."""
    peers = peers or _Peers()
    rng = np.random.default_rng(seed)
    results: list[Result] = []
    pool = _Pool()
    total = len(Vs) * len(Ds) * len(Ns) * len(dists) * len(thread_counts)
    done = 0
    t0 = time.perf_counter()
    saved_threads = embtable.get_num_threads()
    try:
        for V in Vs:
            for D in Ds:
                table = np.empty((V, D), np.float32)
                table[...] = rng.random((min(V, 4096), D), dtype=np.float32).repeat(
                    -(-V // min(V, 4096)), axis=0
                )[:V]
                t_torch = (
                    peers.torch.from_numpy(table) if peers.torch is not None else None
                )
                for N in Ns:
                    out = np.empty((N, D), np.float32)
                    out.fill(0)
                    updates = rng.random((N, D), dtype=np.float32)
                    src = updates
                    for dist in dists:
                        ids = make_ids(V, N, dist, rng)
                        sids = np.sort(ids)
                        once: dict[str, float] = {}
                        for th in thread_counts:
                            case = Case(V, D, N, dist, th)
                            _progress(
                                f"V={V} D={D} N={N} {dist} threads={th}",
                                done,
                                total,
                                t0,
                            )
                            embtable.set_num_threads(th)
                            peers.set_threads(th)
                            results += _time_case(
                                case,
                                table,
                                t_torch,
                                ids,
                                sids,
                                out,
                                updates,
                                src,
                                peers,
                                pool,
                                repeats,
                                once,
                                with_sorted,
                            )
                            done += 1
                del table, t_torch
    finally:
        embtable.set_num_threads(saved_threads)
        pool.close()
        if progress:
            _progress("done", done, total, t0)
            sys.stderr.write("\n")
    return results


def _time_case(
    case: Case,
    table: np.ndarray,
    t_table: Any,
    ids: np.ndarray,
    sids: np.ndarray,
    out: np.ndarray,
    updates: np.ndarray,
    src: np.ndarray,
    peers: _Peers,
    pool: _Pool,
    repeats: int,
    once: dict[str, float],
    with_sorted: bool,
) -> list[Result]:
    """All methods on one case. `once` caches the single-threaded NumPy timings."""
    nbytes = case.N * case.D * table.itemsize
    res: list[Result] = []

    def add(op: str, method: str, ms: float) -> None:
        res.append(
            Result(op, method, case, ms, nbytes / (ms * 1e-3) / 1e9 if ms > 0 else 0.0)
        )

    def t(fn: Callable[[], object], reps: int = repeats) -> float:
        return _median_ms(fn, reps)

    # Order matters on a small machine: embtable and the copies first, NumPy next,
    # then the peers, whose OpenMP / numba workers keep spinning for a while after
    # each call; a short pause lets them settle before the next case.
    add("copy", "parallel copy", t(lambda: pool.copy(out, src, case.threads)))
    add("gather", "embtable", t(lambda: embtable.gather(table, ids, out=out)))
    add("scatter_add", "embtable", t(lambda: embtable.scatter_add(table, ids, updates)))
    add(
        "scatter_add",
        "embtable det",
        t(lambda: embtable.scatter_add(table, ids, updates, deterministic=True)),
    )
    if with_sorted:
        add(
            "gather",
            "embtable sorted ids",
            t(lambda: embtable.gather(table, sids, out=out)),
        )
        add(
            "scatter_add",
            "embtable sorted ids",
            t(lambda: embtable.scatter_add(table, sids, updates)),
        )
    # NumPy is single-threaded: time it once per (V, D, N, dist).
    if "take" not in once:
        once["copyto"] = t(lambda: np.copyto(out, src))
        once["take"] = t(lambda: np.take(table, ids, axis=0, out=out))
        once["fancy"] = t(lambda: table[ids])
        once["add.at"] = t(lambda: np.add.at(table, ids, updates), max(3, repeats // 2))
    add("copy", "np.copyto", once["copyto"])
    add("gather", "np.take(out=)", once["take"])
    add("gather", "fancy", once["fancy"])
    add("scatter_add", "np.add.at", once["add.at"])
    if peers.torch is not None:
        torch = peers.torch
        tid = torch.from_numpy(ids)
        tout = torch.from_numpy(out)
        tupd = torch.from_numpy(updates)
        add("gather", "torch", t(lambda: torch.index_select(t_table, 0, tid, out=tout)))
        add("scatter_add", "torch", t(lambda: t_table.index_add_(0, tid, tupd)))
    if peers.numba is not None:
        parts = max(1, min(case.threads, peers.numba.config.NUMBA_NUM_THREADS))
        add("gather", "numba", t(lambda: peers.nb_gather(table, ids, out)))
        add(
            "scatter_add",
            "numba",
            t(lambda: peers.nb_scatter(table, ids, updates, parts)),
        )
    if peers.names:
        time.sleep(0.05)
    return res


# ---------------------------------------------------------------- report


def _by_case(results: list[Result]) -> dict[Case, dict[tuple[str, str], Result]]:
    table: dict[Case, dict[tuple[str, str], Result]] = {}
    for r in results:
        table.setdefault(r.case, {})[(r.op, r.method)] = r
    return table


def _ratio(other: Result | None, mine: Result | None) -> str:
    if other is None or mine is None or mine.ms <= 0:
        return "-"
    return f"{other.ms / mine.ms:.2f}"


def format_tables(results: list[Result]) -> str:
    """Markdown tables: one for gather, one for scatter_add."""
    cases = _by_case(results)
    peer_names = sorted({r.method for r in results if r.method in ("torch", "numba")})
    lines: list[str] = []
    hdr = "| V | D | N | ids | thr |"
    # gather
    g_cols = [
        "embtable ms",
        "GB/s",
        "x np.take",
        "x fancy",
        *[f"x {p}" for p in peer_names],
        "% pcopy",
        "sorted/random",
    ]
    lines.append(
        "### gather (ratios: other time / embtable time; % pcopy: embtable GB/s "
        "over the parallel copy of the same bytes)"
    )
    lines.append("")
    lines.append(hdr + "".join(f" {c} |" for c in g_cols))
    lines.append("|---" * (5 + len(g_cols)) + "|")
    for c, m in cases.items():
        e = m.get(("gather", "embtable"))
        if e is None:
            continue
        pc = m.get(("copy", "parallel copy"))
        cp = m.get(("copy", "np.copyto"))
        limit = min(x.ms for x in (pc, cp) if x is not None)
        srt = m.get(("gather", "embtable sorted ids"))
        row = [
            f"{e.ms:.3f}",
            f"{e.gbps:.1f}",
            _ratio(m.get(("gather", "np.take(out=)")), e),
            _ratio(m.get(("gather", "fancy")), e),
            *[_ratio(m.get(("gather", p)), e) for p in peer_names],
            f"{100 * limit / e.ms:.0f}%",
            f"{srt.ms / e.ms:.2f}" if srt else "-",
        ]
        lines.append(
            f"| {c.V} | {c.D} | {c.N} | {c.dist} | {c.threads} |"
            + "".join(f" {x} |" for x in row)
        )
    lines.append("")
    s_cols = [
        "atomic ms",
        "det ms",
        "det/atomic",
        "GB/s",
        "x np.add.at",
        *[f"x {p}" for p in peer_names],
        "% pcopy",
        "sorted/random",
    ]
    lines.append("### scatter_add (ratios: other time / embtable atomic time)")
    lines.append("")
    lines.append(hdr + "".join(f" {c} |" for c in s_cols))
    lines.append("|---" * (5 + len(s_cols)) + "|")
    for c, m in cases.items():
        e = m.get(("scatter_add", "embtable"))
        if e is None:
            continue
        d = m.get(("scatter_add", "embtable det"))
        pc = m.get(("copy", "parallel copy"))
        cp = m.get(("copy", "np.copyto"))
        limit = min(x.ms for x in (pc, cp) if x is not None)
        srt = m.get(("scatter_add", "embtable sorted ids"))
        row = [
            f"{e.ms:.3f}",
            f"{d.ms:.3f}" if d else "-",
            f"{d.ms / e.ms:.2f}" if d else "-",
            f"{e.gbps:.1f}",
            _ratio(m.get(("scatter_add", "np.add.at")), e),
            *[_ratio(m.get(("scatter_add", p)), e) for p in peer_names],
            f"{100 * limit / e.ms:.0f}%",
            f"{srt.ms / e.ms:.2f}" if srt else "-",
        ]
        lines.append(
            f"| {c.V} | {c.D} | {c.N} | {c.dist} | {c.threads} |"
            + "".join(f" {x} |" for x in row)
        )
    lines.append("")
    lines.append(summarize(results))
    return "\n".join(lines)


def summarize(results: list[Result]) -> str:
    """The issue's goals, each with the worst grid case."""
    cases = _by_case(results)
    out = [
        "### goals (worst case over the grid; ratio > 1 means embtable is faster)",
        "",
    ]

    def worst(
        op: str,
        other: Callable[[dict[tuple[str, str], Result]], float | None],
        mine: str = "embtable",
        pred: Callable[[Case], bool] = lambda c: True,
    ) -> tuple[float, Case | None]:
        best: tuple[float, Case | None] = (float("inf"), None)
        for c, m in cases.items():
            e = m.get((op, mine))
            o = other(m)
            if e is None or o is None or not pred(c):
                continue
            r = o / e.ms
            if r < best[0]:
                best = (r, c)
        return best

    def ms(
        op: str, method: str
    ) -> Callable[[dict[tuple[str, str], Result]], float | None]:
        return lambda m: m[(op, method)].ms if (op, method) in m else None

    def fastest_peer(
        op: str,
    ) -> Callable[[dict[tuple[str, str], Result]], float | None]:
        def f(m: dict[tuple[str, str], Result]) -> float | None:
            ts = [m[(op, p)].ms for p in ("torch", "numba") if (op, p) in m]
            return min(ts) if ts else None

        return f

    def limit(m: dict[tuple[str, str], Result]) -> float | None:
        ts = [
            m[k].ms
            for k in (("copy", "parallel copy"), ("copy", "np.copyto"))
            if k in m
        ]
        return min(ts) if ts else None

    def fmt(name: str, goal: float, w: tuple[float, Case | None]) -> str:
        r, c = w
        if c is None:
            return f"- {name}: not measured"
        ok = "met" if r >= goal else "MISSED"
        where = f"V={c.V} D={c.D} N={c.N} {c.dist} threads={c.threads}"
        return f"- {name}: worst {r:.2f} (goal >= {goal:g}) {ok}; at {where}"

    out.append(
        fmt(
            "gather vs np.take(out=)", 4, worst("gather", ms("gather", "np.take(out=)"))
        )
    )
    out.append(
        fmt("gather vs fastest peer", 1, worst("gather", fastest_peer("gather")))
    )
    out.append(
        fmt(
            "scatter_add vs np.add.at",
            20,
            worst("scatter_add", ms("scatter_add", "np.add.at")),
        )
    )
    out.append(
        fmt(
            "scatter_add vs fastest peer",
            1,
            worst("scatter_add", fastest_peer("scatter_add")),
        )
    )
    det = worst("scatter_add", ms("scatter_add", "embtable"), mine="embtable det")
    out.append(fmt("scatter_add atomic time / det time", 1 / 1.5, det))

    def big(c: Case) -> bool:
        return c.D >= 64 and c.V <= 10_000 and c.N >= 65_536

    out.append(
        fmt(
            "gather: fraction of the copy limit (D >= 64, in cache)",
            0.5,
            worst("gather", limit, pred=big),
        )
    )
    out.append(
        fmt(
            "scatter_add: fraction of the copy limit (D >= 64, in cache)",
            0.5,
            worst("scatter_add", limit, pred=big),
        )
    )

    def mem(c: Case) -> bool:
        return c.V >= 1_000_000 and c.N >= 65_536 and c.dist == "uniform"

    out.append(
        fmt(
            "gather random vs sorted ids (V = 1M)",
            0.9,
            worst("gather", ms("gather", "embtable sorted ids"), pred=mem),
        )
    )
    out.append(
        fmt(
            "scatter_add random vs sorted ids (V = 1M)",
            0.9,
            worst("scatter_add", ms("scatter_add", "embtable sorted ids"), pred=mem),
        )
    )

    def small(c: Case) -> bool:
        return c.N <= 4_096 and c.D == 16

    out.append(
        fmt(
            "small calls gather vs np.take(out=)",
            1,
            worst("gather", ms("gather", "np.take(out=)"), pred=small),
        )
    )
    out.append(
        fmt(
            "small calls scatter_add vs np.add.at",
            1,
            worst("scatter_add", ms("scatter_add", "np.add.at"), pred=small),
        )
    )
    return "\n".join(out)


def machine_description() -> str:
    """A one-paragraph description of this machine and build."""
    cfg = embtable.show_config(mode="dicts") or {}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    simd = cfg.get("simd", {})
    return (
        f"{cpu}; {os.cpu_count()} CPUs, embtable threads {embtable.get_num_threads()}; "
        f"Python {platform.python_version()}, NumPy {np.__version__}; embtable "
        f"{embtable.__version__}, SIMD selected {simd.get('selected')} "
        f"(compiled {simd.get('compiled')})"
    )


def plot(results: list[Result], path: str) -> None:
    """Throughput (GB/s) against N, one line per method, one panel per op."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, op in zip(axes, ("gather", "scatter_add"), strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in results:
            if r.op in (op, "copy") and r.method != "embtable sorted ids":
                series.setdefault(r.method, []).append((r.case.N, r.gbps))
        for method, pts in sorted(series.items()):
            pts.sort()
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=method,
                linestyle="--" if method in ("parallel copy", "np.copyto") else "-",
            )
        c = results[0].case
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (ids per call)")
        ax.set_ylabel("GB/s of rows moved")
        ax.set_title(f"{op}: V={c.V}, D={c.D}, float32, {c.dist}, {c.threads} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fmt = Path(path).suffix[1:].lower() or None  # None: matplotlib's default (png)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format=fmt)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m embtable bench``."""
    p = argparse.ArgumentParser(
        prog="python -m embtable bench",
        description="Time embtable's gather and scatter_add against NumPy, the "
        "memory-copy limit, PyTorch and numba (when installed), side by side.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="D 16 and 64, uniform ids, all threads: under a minute",
    )
    p.add_argument("--json", metavar="PATH", help="save all timings as JSON")
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="draw GB/s against N for each method (needs matplotlib)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per method")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts to run (default: 1 and all)",
    )
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch and numba")
    args = p.parse_args(argv)

    all_threads = embtable.get_num_threads()
    # --quick: all threads only; the full grid adds the single-threaded runs.
    threads = args.threads or (
        [all_threads] if args.quick else sorted({1, all_threads})
    )
    if any(t < 1 for t in threads):
        p.error("--threads must be >= 1")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    if repeats < 1:
        p.error("--repeats must be >= 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("--plot needs matplotlib: pip install matplotlib")
    peers = _Peers(use_torch=not args.no_peers, use_numba=not args.no_peers)
    missing = {"torch", "numba"} - set(peers.names)
    if missing and not args.no_peers:
        sys.stderr.write(f"not installed, skipped: {', '.join(sorted(missing))}\n")
    Ds = QUICK_D if args.quick else FULL_D
    print(f"# embtable bench{' --quick' if args.quick else ''}")
    print()
    print(machine_description())
    print()
    dists = ("uniform",) if args.quick else DISTS
    results = run_grid(FULL_V, Ds, FULL_N, dists, threads, repeats=repeats, peers=peers)
    print(format_tables(results))
    if args.plot:
        sys.stderr.write("plot sweep over N...\n")
        sweep = run_grid(
            (10_000,),
            (64,),
            PLOT_N,
            ("uniform",),
            (max(threads),),
            repeats=repeats,
            peers=peers,
            with_sorted=False,
        )
        plot(sweep, args.plot)
        results += sweep
        print(f"\nplot saved to {args.plot}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_description(),
                    "results": [{**asdict(r), **asdict(r.case)} for r in results],
                },
                f,
                indent=1,
            )
        print(f"results saved to {args.json}")
    return 0
