"""Checkpoint save / load speed against the disk's own write speed.

    python bench/bench_checkpoint.py                 # 2 GiB table, 3 rounds, ~2 min
    python bench/bench_checkpoint.py --gib 4 --dir /data --rounds 5

Writes the same table (float32, in RAM, then as an ``np.memmap``) in rounds, the
methods in a rotated order each round, every one ending with ``fsync`` so the
figure is the disk's, not the page cache's:

- ``dd conv=fsync``: the disk's raw sequential write rate (zeros, 16 MiB blocks);
- ``ndarray.tofile + fsync``: Python writing the raw bytes, the floor for any format;
- ``np.savez + fsync``: NumPy's own ``.npz`` writer (not atomic);
- ``layer.save``: embtable's checkpoint (zip + CRC-32, temp file, fsync, rename,
  folder fsync);
- ``layer.save(optimizer=Adagrad)``: the same plus one slot (twice the bytes).

and reads it back (``Embedding.load`` vs ``np.load``, from the page cache: the file
was just written). Prints markdown tables: medians in seconds, GB/s, the ratio to
``dd`` and the peak Python memory allocated during the call (``tracemalloc``: a
copy of the table would show as its size).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import embtable
import numpy as np
from embtable import optimizers


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _measure(fn: Callable[[], object]) -> tuple[float, int]:
    """Wall seconds and peak traced bytes of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, peak


def _make_table(rows: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """A table of distinct values, filled slice by slice (no full-size temporary)."""
    table = np.empty((rows, dim), np.float32) if out is None else out
    step = max(1, (64 << 20) // (dim * 4))
    base = np.arange(dim, dtype=np.float32) * np.float32(1e-3)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        table[start:stop] = base + np.arange(start, stop, dtype=np.float32)[:, None]
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=2.0, help="table size in GiB (2)")
    p.add_argument("--dim", type=int, default=256, help="row width D (256)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per method (3)")
    p.add_argument(
        "--dir", default=None, help="folder on the disk to measure (default: $TMPDIR)"
    )
    p.add_argument("--no-memmap", action="store_true", help="skip the memmap table")
    args = p.parse_args(argv)

    rows = int(args.gib * (1 << 30)) // (args.dim * 4)
    nbytes = rows * args.dim * 4
    work = Path(tempfile.mkdtemp(prefix="embtable-ckbench-", dir=args.dir))
    try:
        free = shutil.disk_usage(work).free
        if free < 4 * nbytes:
            p.error(f"needs {4 * nbytes / 2**30:.1f} GiB free in {work}")
        print("# checkpoint bench")
        print()
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, "
            f"embtable {embtable.__version__}; folder {work} "
            f"(load average {os.getloadavg()[0]:.1f} at the start)"
        )
        tables = [("in RAM", _make_table(rows, args.dim))]
        if not args.no_memmap:
            mm = np.memmap(
                work / "table.f32", dtype=np.float32, mode="w+", shape=(rows, args.dim)
            )
            _make_table(rows, args.dim, out=mm)
            mm.flush()
            tables.append(("np.memmap", mm))
        for label, table in tables:
            _run(label, table, work, args.rounds, nbytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _run(label: str, table: np.ndarray, work: Path, rounds: int, nbytes: int) -> None:
    rows, dim = table.shape
    layer = embtable.Embedding(1, dim, name="bench")
    layer.embeddings = table  # the layer saves this very array (RAM or memmap)
    adagrad = optimizers.Adagrad()
    adagrad.set_state(
        layer,
        {"iterations": 1, "accumulator": np.full_like(np.asarray(table), 0.5)},
    )
    target = work / "out"

    def dd() -> None:
        blocks = -(-nbytes // (16 << 20))
        subprocess.run(
            [
                "dd",
                "if=/dev/zero",
                f"of={target}.raw",
                "bs=16M",
                f"count={blocks}",
                "conv=fsync",
                "status=none",
            ],
            check=True,
        )

    def tofile() -> None:
        with open(f"{target}.raw", "wb") as f:
            table.tofile(f)
            f.flush()
            os.fsync(f.fileno())

    def savez() -> None:
        np.savez(f"{target}.npz", embeddings=table)
        _fsync_path(Path(f"{target}.npz"))

    def save() -> None:
        layer.save(target)

    def save_opt() -> None:
        layer.save(target, optimizer=adagrad)

    methods: list[tuple[str, Callable[[], None], int]] = [
        ("dd conv=fsync (disk)", dd, nbytes),
        ("ndarray.tofile + fsync", tofile, nbytes),
        ("np.savez + fsync", savez, nbytes),
        ("layer.save (atomic)", save, nbytes),
        ("layer.save(optimizer=Adagrad)", save_opt, 2 * nbytes),
    ]
    times: dict[str, list[float]] = {m[0]: [] for m in methods}
    peaks: dict[str, int] = {m[0]: 0 for m in methods}
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for name, fn, _ in order:
            dt, peak = _measure(fn)
            times[name].append(dt)
            peaks[name] = max(peaks[name], peak)
            for leftover in work.glob("out*"):
                leftover.unlink()
            sys.stderr.write(f"  {label}: {name}: {dt:.2f} s\n")

    dd_rate = nbytes / statistics.median(times[methods[0][0]])
    print()
    print(
        f"## save: {rows:,} x {dim} float32 = {nbytes / 2**30:.2f} GiB, table "
        f"{label} (medians of {rounds})"
    )
    print()
    print("| method | s | GB/s | rate / dd | peak Python alloc |")
    print("|---|---:|---:|---:|---:|")
    for name, _, size in methods:
        t = statistics.median(times[name])
        rate = size / t
        print(
            f"| {name} | {t:.2f} | {rate / 1e9:.2f} | {rate / dd_rate:.2f} | "
            f"{peaks[name] / 2**20:.1f} MiB |"
        )

    if label != "in RAM":
        return
    # Reading back: from the page cache (the file was just written).
    path = layer.save(target)
    load_times: dict[str, list[float]] = {"Embedding.load": [], "np.load": []}

    def load() -> None:
        embtable.Embedding.load(path)

    def npload() -> None:
        with np.load(path, allow_pickle=False) as data:
            data["embeddings"]

    loads = [("Embedding.load", load), ("np.load", npload)]
    load_peaks = {"Embedding.load": 0, "np.load": 0}
    for r in range(rounds):
        for name, fn in loads[r % 2 :] + loads[: r % 2]:
            dt, peak = _measure(fn)
            load_times[name].append(dt)
            load_peaks[name] = max(load_peaks[name], peak)
    print()
    print(f"## load the same checkpoint (page cache; medians of {rounds})")
    print()
    print("| method | s | GB/s | peak Python alloc |")
    print("|---|---:|---:|---:|")
    for name, _ in loads:
        t = statistics.median(load_times[name])
        print(
            f"| {name} | {t:.2f} | {nbytes / t / 1e9:.2f} | "
            f"{load_peaks[name] / 2**20:.0f} MiB |"
        )
    path.unlink()


if __name__ == "__main__":
    raise SystemExit(main())
