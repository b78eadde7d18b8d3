"""Concurrency: many Python threads calling at once, thread counts changed under
load, deterministic results over thread counts, and fork after the pool ran.

Every wait here has a timeout, so a deadlock fails the test instead of hanging CI.
These tests are also the workload of the TSan stage (ci/tsan.sh).
"""

from __future__ import annotations

import os
import signal
import threading
import warnings

import embtable
import numpy as np
import pytest

N_THREADS = 8
CALLS = 200
JOIN_TIMEOUT = 300.0  # seconds; generous for TSan on 2 shared cores
V, D = 512, 64  # float32 rows of 256 B: 600 indices exceed the grain, so the pool runs
N_IDX = 600


def _run_threads(targets: list, timeout: float = JOIN_TIMEOUT) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {timeout} s (deadlock?): {hung}"


class _Workload:
    """Pre-computed inputs and NumPy results, so worker threads only call embtable."""

    def __init__(self, seed: int, variants: int = 4) -> None:
        rng = np.random.default_rng(seed)
        self.table = rng.standard_normal((V, D)).astype(np.float32)
        self.table.flags.writeable = False
        self.idx = [
            rng.integers(0, V, size=N_IDX).astype(dt)
            for dt in (np.int32, np.int64)
            for _ in range(variants // 2)
        ]
        # Integer-valued updates: every summation order gives the exact same sum.
        self.upd = [
            rng.integers(0, 4, size=(N_IDX, D)).astype(np.float32) for _ in self.idx
        ]
        self.gathered = [np.take(self.table, i, axis=0) for i in self.idx]
        self.contrib = []
        for i, u in zip(self.idx, self.upd, strict=True):
            c = np.zeros((V, D), dtype=np.float32)
            np.add.at(c, i.astype(np.int64), u)
            self.contrib.append(c)
        self.has_bag = hasattr(embtable, "embedding_bag")
        if self.has_bag:
            self.bag_idx = [i.reshape(150, 4) for i in self.idx]
            self.bagged = [
                np.take(self.table, b.astype(np.int64), axis=0).sum(
                    axis=1, dtype=np.float32
                )
                for b in self.bag_idx
            ]


@pytest.mark.parametrize("internal_threads", [1, 2, 4])
def test_threads_mixing_gather_scatter_bag(internal_threads):
    embtable.set_num_threads(internal_threads)
    w = _Workload(seed=internal_threads)
    target = np.zeros((V, D), dtype=np.float32)
    scatter_counts = [[0] * len(w.idx) for _ in range(N_THREADS)]
    errors: list[str] = []
    start = threading.Barrier(N_THREADS)

    def worker(tid: int) -> None:
        try:
            start.wait(JOIN_TIMEOUT)
            for call in range(CALLS):
                v = (tid + call) % len(w.idx)
                op = (tid + call) % 3
                if op == 0:
                    got = embtable.gather(w.table, w.idx[v])
                    if not np.array_equal(got, w.gathered[v]):
                        errors.append(f"thread {tid} call {call}: gather differs")
                elif op == 1 or not w.has_bag:
                    embtable.scatter_add(
                        target, w.idx[v], w.upd[v], deterministic=call % 2 == 0
                    )
                    scatter_counts[tid][v] += 1
                else:
                    got = embtable.embedding_bag(w.table, w.bag_idx[v], mode="sum")
                    if not np.allclose(got, w.bagged[v], rtol=1e-5, atol=1e-5):
                        errors.append(
                            f"thread {tid} call {call}: embedding_bag differs"
                        )
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"thread {tid}: {type(e).__name__}: {e}")

    _run_threads([lambda t=t: worker(t) for t in range(N_THREADS)])
    assert not errors, errors[:5]
    want = np.zeros((V, D), dtype=np.float32)
    for v in range(len(w.idx)):
        want += sum(c[v] for c in scatter_counts) * w.contrib[v]
    np.testing.assert_array_equal(target, want)


def test_set_num_threads_changed_while_calls_run():
    """One thread keeps changing the thread count while eight others call: no
    wrong result, no crash, no hang (the pool is rebuilt between jobs)."""
    w = _Workload(seed=7)
    target = np.zeros((V, D), dtype=np.float32)
    counts = [0] * len(w.idx)
    lock = threading.Lock()
    errors: list[str] = []
    done = threading.Event()

    def worker(tid: int) -> None:
        try:
            for call in range(CALLS // 2):
                v = (tid + call) % len(w.idx)
                if call % 2:
                    if not np.array_equal(
                        embtable.gather(w.table, w.idx[v]), w.gathered[v]
                    ):
                        errors.append(f"thread {tid}: gather differs")
                else:
                    embtable.scatter_add(
                        target, w.idx[v], w.upd[v], deterministic=tid % 2 == 0
                    )
                    with lock:
                        counts[v] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {tid}: {type(e).__name__}: {e}")

    def changer() -> None:
        k = 0
        while not done.is_set() and k < 100_000:
            embtable.set_num_threads(1 + k % 4)
            k += 1
            done.wait(0.0005)

    ch = threading.Thread(target=changer, daemon=True)
    ch.start()
    try:
        _run_threads([lambda t=t: worker(t) for t in range(N_THREADS)])
    finally:
        done.set()
        ch.join(JOIN_TIMEOUT)
    assert not ch.is_alive()
    assert not errors, errors[:5]
    want = sum(n * c for n, c in zip(counts, w.contrib, strict=True))
    np.testing.assert_array_equal(target, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deterministic_bitwise_over_thread_counts(dtype):
    rng = np.random.default_rng(11)
    Vd, Dd, n = 97, 40, 6000  # ~100 updates per row, in a known order
    idx = rng.integers(0, Vd, size=n)
    idx[: n // 3] = rng.integers(0, 5, size=n // 3)  # skew: a few very hot rows
    upd = rng.standard_normal((n, Dd)).astype(dtype)
    base = rng.standard_normal((Vd, Dd)).astype(dtype)
    want = base.copy()
    np.add.at(want, idx, upd)
    for threads in (1, 2, 3, 4, 8):
        embtable.set_num_threads(threads)
        for rep in range(20):
            target = base.copy()
            embtable.scatter_add(target, idx, upd, deterministic=True)
            assert target.tobytes() == want.tobytes(), f"threads={threads} repeat={rep}"


def _child_work() -> bool:
    rng = np.random.default_rng(os.getpid())
    table = rng.standard_normal((V, D)).astype(np.float32)
    idx = rng.integers(0, V, size=4 * N_IDX)
    upd = rng.integers(-3, 4, size=(idx.size, D)).astype(np.float32)
    ok = np.array_equal(embtable.gather(table, idx), np.take(table, idx, axis=0))
    target = np.zeros((V, D), dtype=np.float32)
    want = target.copy()
    np.add.at(want, idx, upd)
    embtable.scatter_add(target, idx, upd)
    ok &= np.array_equal(target, want)
    target[...] = 0
    embtable.scatter_add(target, idx, upd, deterministic=True)
    return bool(ok & np.array_equal(target, want))


def _fork_children(count: int, timeout_s: int) -> list[str]:
    """Fork `count` children that each run _child_work under an alarm; return failures."""
    failures = []
    for k in range(count):
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a multi-threaded process: that
            # is exactly the situation under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 3
            try:
                signal.alarm(timeout_s)  # a hang kills the child with SIGALRM
                code = 0 if _child_work() else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            why = "timed out" if sig == signal.SIGALRM else f"died of signal {sig}"
            failures.append(f"child {k} {why}")
        elif os.WEXITSTATUS(status) != 0:
            failures.append(f"child {k} exited {os.WEXITSTATUS(status)} (wrong result)")
    return failures


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_pool_ran():
    embtable.set_num_threads(2)
    assert _child_work()  # the parent's pool has threads now
    failures = _fork_children(20, timeout_s=10)
    assert not failures, failures
    assert _child_work()  # and the parent's pool still works


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_another_thread_uses_the_pool():
    embtable.set_num_threads(2)
    w = _Workload(seed=3)
    stop = threading.Event()
    errors: list[str] = []

    def busy() -> None:
        k = 0
        while not stop.is_set() and k < 1_000_000:
            v = k % len(w.idx)
            if not np.array_equal(embtable.gather(w.table, w.idx[v]), w.gathered[v]):
                errors.append("gather differs")
            k += 1

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        failures = _fork_children(20, timeout_s=10)
    finally:
        stop.set()
        t.join(JOIN_TIMEOUT)
    assert not t.is_alive()
    assert not failures, failures
    assert not errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_another_thread_scatters_into_the_same_array():
    """A writer thread holds `shared` (its RangeGuard) when fork() happens: the
    child, which inherits a copy of `shared`, must still be able to write it."""
    embtable.set_num_threads(2)
    shared = np.zeros((V, D), dtype=np.float32)
    idx = np.random.default_rng(5).integers(0, V, size=20 * N_IDX)
    upd = np.ones((idx.size, D), dtype=np.float32)
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set() and k < 1_000_000:
            embtable.scatter_add(shared, idx, upd, deterministic=k % 2 == 0)
            k += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    failures = []
    try:
        for k in range(20):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                code = 3
                try:
                    signal.alarm(10)
                    before = shared.copy()
                    embtable.scatter_add(shared, idx[:10], upd[:10])
                    want = before
                    np.add.at(want, idx[:10], upd[:10])
                    code = 0 if np.array_equal(shared, want) else 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
                failures.append(f"child {k}: status {status:#x}")
    finally:
        stop.set()
        t.join(JOIN_TIMEOUT)
    assert not t.is_alive()
    assert not failures, failures
