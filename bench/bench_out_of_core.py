"""Out-of-core gather: random rows of a table file that is not in the page cache.

    python bench/bench_out_of_core.py            # 4 GiB file (16M x 64 float32)
    python bench/bench_out_of_core.py --rows 4194304 --ids 16384 --rounds 5

Writes the table file (real data, fsynced; deleted afterwards unless ``--keep``),
then per round and method: evicts the file from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``, so the table is as cold as one several
times larger than RAM would be), maps it afresh with ``np.memmap(mode="r")`` and
gathers the same random ids. Methods rotate between rounds; figures are medians.
``fio`` (if installed) gives the device's random 4 KiB read rate at a deep queue.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import embtable
import numpy as np
from embtable import _core, _prefetch


def write_table(path: str, V: int, D: int) -> None:
    """Row r holds r + c / 1000 in column c (checkable), written atomically."""
    chunk = max(1, (64 << 20) // (D * 4))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for s in range(0, V, chunk):
            e = min(V, s + chunk)
            a = np.empty((e - s, D), np.float32)
            a[:] = np.arange(s, e, dtype=np.float32)[:, None]
            a += np.arange(D, dtype=np.float32) * np.float32(1e-3)
            f.write(a.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fio_iops(path: str, depth: int, seconds: int) -> tuple[float, str] | None:
    """Random 4 KiB direct reads at queue depth `depth`: (IOPS, engine) or None."""
    if shutil.which("fio") is None:
        return None
    for engine in ("io_uring", "libaio"):
        cmd = [
            "fio", "--name=randread", f"--filename={path}", "--rw=randread",
            "--bs=4k", f"--ioengine={engine}", "--direct=1", f"--iodepth={depth}",
            f"--runtime={seconds}", "--time_based", "--readonly",
            "--output-format=json",
        ]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode == 0:
            try:
                return float(json.loads(r.stdout)["jobs"][0]["read"]["iops"]), engine
            except (ValueError, KeyError, IndexError):
                continue
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1 << 24)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--ids", type=int, default=1 << 16, help="random ids per call")
    ap.add_argument("--bag", type=int, default=8, help="ids per bag (embedding_bag)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="folder of the table file")
    ap.add_argument("--keep", action="store_true", help="keep the table file")
    ap.add_argument("--fio-depth", type=int, default=32)
    a = ap.parse_args()

    folder = a.dir or os.environ.get("EMBTABLE_BENCH_DIR") or tempfile.gettempdir()
    path = os.path.join(folder, f"embtable-ooc-{a.rows}x{a.dim}.f32")
    nbytes = a.rows * a.dim * 4
    if not (os.path.exists(path) and os.path.getsize(path) == nbytes):
        free = shutil.disk_usage(folder).free
        if free < nbytes + (1 << 30):
            sys.exit(f"{folder}: {free >> 20} MiB free, the table needs {nbytes >> 20}")
        t0 = time.perf_counter()
        write_table(path, a.rows, a.dim)
        print(
            f"wrote {path} ({nbytes / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s"
        )

    rng = np.random.default_rng(0)
    n = a.ids - a.ids % a.bag
    depth = _prefetch.device_queue_depth(path) or _prefetch._FALLBACK_IO_THREADS

    def take(t: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.take(t, ids, axis=0)

    def plain(t: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return _core.gather(t, ids)  # the kernel alone: no read-ahead

    def with_prefetch(method: str):
        def f(t: np.ndarray, ids: np.ndarray) -> np.ndarray:
            embtable.prefetch(t, ids, method=method)
            return _core.gather(t, ids)

        return f

    def bag_take(t: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.take(t, ids, axis=0).reshape(-1, a.bag, a.dim).sum(axis=1)

    def bag(t: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return embtable.embedding_bag(t, ids.reshape(-1, a.bag), mode="sum")

    methods = {
        "np.take": take,
        "embtable.gather, no read-ahead": plain,
        f"embtable.gather + read-ahead (threads, {depth} I/O threads)": with_prefetch(
            "threads"
        ),
        "embtable.gather + read-ahead (madvise WILLNEED)": with_prefetch("willneed"),
        f"np.take + sum, bags of {a.bag}": bag_take,
        f"embtable.embedding_bag sum, bags of {a.bag} (auto read-ahead)": bag,
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for r in range(a.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            ids = rng.integers(0, a.rows, n)
            evict(path)
            t = np.memmap(path, np.float32, "r", shape=(a.rows, a.dim))
            t0 = time.perf_counter()
            out = methods[name](t, ids)
            times[name].append(time.perf_counter() - t0)
            if "bag" in name:
                want = ids.reshape(-1, a.bag).astype(np.float64).sum(axis=1)
                ok = np.allclose(out[:, 0], want, rtol=1e-6)
            else:
                ok = np.array_equal(out[:, 0], ids.astype(np.float32))
            assert ok, name
            del t, out

    fio = fio_iops(path, a.fio_depth, 5)
    base = statistics.median(times["np.take"])
    base_bag = statistics.median(times[f"np.take + sum, bags of {a.bag}"])
    print()
    print(
        f"{a.rows} x {a.dim} float32 table ({nbytes / 2**30:.2f} GiB) evicted before "
        f"each call, {n} random ids per call, median of {a.rounds}; "
        f"{os.cpu_count()} CPUs, {embtable.get_num_threads()} embtable threads"
    )
    print()
    fio_col = f"% of fio ({fio[1]}, QD {a.fio_depth})" if fio else "% of fio"
    print(f"| method | s / call | rows/s | x np.take | {fio_col} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in names:
        s = statistics.median(times[name])
        ref = base_bag if "bag" in name else base
        pct = f"{100 * n / s / fio[0]:.0f} %" if fio else "(fio absent)"
        print(f"| {name} | {s:.3f} | {n / s:,.0f} | {ref / s:.1f} | {pct} |")
    if fio:
        print(
            f"| fio randread 4 KiB, {fio[1]}, O_DIRECT, QD {a.fio_depth} | | "
            f"{fio[0]:,.0f} IOPS | | 100 % |"
        )
    else:
        print("\nfio is not installed (apt-get install fio): its column is left out")
    if not a.keep:
        os.remove(path)


if __name__ == "__main__":
    main()
