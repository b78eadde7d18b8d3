"""load_vectors: embtable's C++ parser vs gensim, and the binary format vs the disk.

The issue's measurement: a generated 400,000 x 300 word2vec text file (values with 6
decimals, as the C tool writes them), read by ``embtable.load_vectors`` and by
gensim's ``KeyedVectors.load_word2vec_format`` (goal: >= 5x); the same vectors in
the C binary format, read by ``load_vectors`` and by ``dd`` (the disk's read speed),
warm (file in the page cache) and cold (the file's pages dropped first with
``posix_fadvise(POSIX_FADV_DONTNEED)``).

    python bench/bench_vectors.py                      # the issue's size (~3 min)
    python bench/bench_vectors.py --rows 50000         # a quick look
    python bench/bench_vectors.py --no-gensim

Methods are timed round-robin (the order rotates every round), medians printed as
markdown tables. The generated files stay in --dir for the next run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import embtable
import numpy as np

try:
    from gensim.models import KeyedVectors
except ImportError:  # gensim is optional (pip install gensim)
    KeyedVectors = None


def make_files(folder: Path, rows: int, dim: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / f"vectors-{rows}x{dim}.txt"
    binary = folder / f"vectors-{rows}x{dim}.bin"
    if not (text.exists() and binary.exists()):
        rng = np.random.default_rng(0)
        table = np.round(rng.standard_normal((rows, dim)) * 0.1, 6).astype(np.float32)
        words = [f"w{i}_{'x' * int(n)}" for i, n in enumerate(rng.integers(0, 8, rows))]
        embtable.save_vectors(text, words, table)
        embtable.save_vectors(binary, words, table, binary=True)
    return text, binary


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dd(path: Path) -> None:
    subprocess.run(
        ["dd", f"if={path}", "of=/dev/null", "bs=4M"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rounds(
    methods: dict[str, Callable[[], object]],
    repeats: dict[str, int],
    before: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median seconds per method; each round runs the methods in a rotated order."""
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(max(repeats.values())):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if len(times[name]) >= repeats[name]:
                continue
            if before is not None:
                before()
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def gensim_load(path: Path, binary: bool) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return KeyedVectors.load_word2vec_format(os.fspath(path), binary=binary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5, help="rounds for embtable and dd")
    ap.add_argument("--gensim-repeats", type=int, default=1)
    ap.add_argument("--no-gensim", action="store_true")
    ap.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "embtable-bench-vectors",
    )
    args = ap.parse_args()
    use_gensim = KeyedVectors is not None and not args.no_gensim
    text, binary = make_files(args.dir, args.rows, args.dim)
    threads = embtable.get_num_threads()
    mb_text = text.stat().st_size / 1e6
    mb_bin = binary.stat().st_size / 1e6
    print(
        f"# load_vectors, {args.rows:,} x {args.dim}; {threads} threads; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )

    def with_threads(n: int, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            embtable.set_num_threads(n)
            try:
                return fn()
            finally:
                embtable.set_num_threads(threads)

        return run

    # Equality first (also warms the page cache).
    words, table = embtable.load_vectors(text)
    if use_gensim:
        kv = gensim_load(binary, True)
        assert list(kv.index_to_key) == words and np.array_equal(kv.vectors, table)
    w2, t2 = embtable.load_vectors(binary)
    assert w2 == words and np.array_equal(t2, table)
    del w2, t2, table, words

    # Text.
    methods: dict[str, Callable[[], object]] = {
        f"embtable.load_vectors ({threads} threads)": lambda: embtable.load_vectors(
            text
        ),
    }
    if threads > 1:
        methods["embtable.load_vectors (1 thread)"] = with_threads(
            1, lambda: embtable.load_vectors(text)
        )
    reps = {n: args.repeats for n in methods}
    if use_gensim:
        methods["gensim load_word2vec_format"] = lambda: gensim_load(text, False)
        reps["gensim load_word2vec_format"] = args.gensim_repeats
    med = rounds(methods, reps)
    base = med.get("gensim load_word2vec_format")
    print(f"## word2vec text ({mb_text:,.0f} MB), warm page cache\n")
    print("| method | s | MB/s | speedup vs gensim |\n|---|---:|---:|---:|")
    for name, s in med.items():
        ratio = f"{base / s:.1f}x" if base else ""
        print(f"| {name} | {s:.3f} | {mb_text / s:,.0f} | {ratio} |")

    # Binary, warm then cold.
    for cold in (False, True):
        methods = {
            "dd bs=4M (the read alone)": lambda: dd(binary),
            f"embtable.load_vectors ({threads} threads)": lambda: embtable.load_vectors(
                binary
            ),
        }
        reps = {n: args.repeats for n in methods}
        if use_gensim:
            methods["gensim load_word2vec_format(binary=True)"] = lambda: gensim_load(
                binary, True
            )
            reps["gensim load_word2vec_format(binary=True)"] = args.gensim_repeats
        med = rounds(methods, reps, (lambda: drop_cache(binary)) if cold else None)
        base = med["dd bs=4M (the read alone)"]
        label = "cold (pages dropped before each run)" if cold else "warm page cache"
        print(f"\n## word2vec binary ({mb_bin:,.0f} MB), {label}\n")
        print("| method | s | MB/s | time / dd |\n|---|---:|---:|---:|")
        for name, s in med.items():
            print(f"| {name} | {s:.3f} | {mb_bin / s:,.0f} | {s / base:.2f} |")


if __name__ == "__main__":
    main()
