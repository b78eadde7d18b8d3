"""The thread pool: thread-count independence, concurrent callers, fork safety, defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import embtable
import numpy as np
import pytest
from embtable import _core


def test_results_identical_for_1_to_4_threads(rng):
    V, D, N = 2000, 24, 50_000
    table = rng.standard_normal((V, D)).astype(np.float32)
    ids = (rng.zipf(1.5, size=N) % V).astype(np.int64)
    updates = rng.standard_normal((N, D)).astype(np.float32)
    gathered, det = [], []
    for threads in (1, 2, 3, 4):
        embtable.set_num_threads(threads)
        assert embtable.get_num_threads() == threads
        gathered.append(embtable.gather(table, ids).tobytes())
        target = table.copy()
        embtable.scatter_add(target, ids, updates, deterministic=True)
        det.append(target.tobytes())
    assert len(set(gathered)) == 1
    assert len(set(det)) == 1


def test_eight_python_threads_at_once(rng):
    V, D, N = 500, 16, 20_000
    table = rng.standard_normal((V, D)).astype(np.float32)
    shared = np.zeros((V, D), np.float32)
    ids = [rng.integers(0, V, size=N) for _ in range(8)]
    ones = np.ones((N, D), np.float32)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(k):
        try:
            barrier.wait()
            for rep in range(10):
                out = embtable.gather(table, ids[k])
                np.testing.assert_array_equal(out, table[ids[k]])
                # concurrent writers on one target must not lose updates
                embtable.scatter_add(shared, ids[k], ones, deterministic=bool(rep % 2))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[0]
    counts = sum(np.bincount(i, minlength=V) for i in ids) * 10
    np.testing.assert_array_equal(
        shared, np.repeat(counts[:, None], D, 1).astype(np.float32)
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_after_pool_ran(rng):
    embtable.set_num_threads(2)
    table = rng.standard_normal((100_000, 32)).astype(np.float32)
    ids = rng.integers(0, 100_000, size=200_000)
    embtable.gather(table, ids)  # the pool has run
    pid = os.fork()
    if pid == 0:  # child: must be able to use the pool again
        code = 1
        try:
            out = embtable.gather(table, ids)
            target = np.zeros_like(table)
            embtable.scatter_add(target, ids, out)
            ok = np.array_equal(out, table[ids])
            code = 0 if ok else 2
        finally:
            os._exit(code)
    deadline = 60
    import time

    waited = 0.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if waited > deadline:
            os.kill(pid, 9)
            pytest.fail("forked child hung")
        time.sleep(0.05)
        waited += 0.05
    assert os.waitstatus_to_exitcode(status) == 0


def test_env_var_sets_threads_at_import():
    code = "import embtable; print(embtable.get_num_threads())"
    env = dict(os.environ, EMBTABLE_NUM_THREADS="3")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"


def test_bad_env_var_warns_and_is_ignored():
    code = (
        "import warnings, embtable, os; "
        "print(embtable.get_num_threads() == embtable._core.default_num_threads())"
    )
    env = dict(os.environ, EMBTABLE_NUM_THREADS="zero")
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True"
    assert "EMBTABLE_NUM_THREADS" in out.stderr


def test_default_is_affinity_capped_by_quota():
    default = _core.default_num_threads()
    assert 1 <= default <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "contents,cpus",
    [
        ("max 100000", 0),
        ("150000 100000", 2),
        ("100000 100000", 1),
        ("50000 100000", 1),
        ("250001 100000", 3),
        ("garbage", 0),
        ("", 0),
        ("-1 100000", 0),
    ],
)
def test_cgroup_quota_rounds_up(contents, cpus):
    assert _core.cpus_from_cgroup_cpu_max(contents) == cpus


@pytest.mark.parametrize("threads", [2, 3, 5, 16])
def test_every_piece_of_a_range_runs_exactly_once(rng, threads):
    # Each thread works its home segment first and then takes over the others':
    # a piece skipped would leave NaN in `out`, a piece run twice would add its
    # rows twice. Sizes that split unevenly into pieces and segments, repeated
    # (the second call reuses the split), at thread counts above the cores.
    saved = embtable.get_num_threads()
    embtable.set_num_threads(threads)
    try:
        for V, D, N in ((5_000, 8, 99_991), (300, 16, 20_011), (50_000, 64, 7_777)):
            table = rng.standard_normal((V, D)).astype(np.float32)
            ids = rng.integers(0, V, size=N)
            updates = rng.standard_normal((N, D)).astype(np.float32)
            want = np.zeros((V, D))
            np.add.at(want, ids, updates.astype(np.float64))
            for _ in range(2):
                out = np.full((N, D), np.nan, np.float32)
                embtable.gather(table, ids, out=out)
                np.testing.assert_array_equal(out, table[ids])
                target = np.zeros((V, D), np.float32)
                embtable.scatter_add(target, ids, updates)  # split by ids above 8
                np.testing.assert_allclose(target, want, rtol=1e-4, atol=1e-4)
    finally:
        embtable.set_num_threads(saved)


def test_many_threads_requested_work(rng):
    embtable.set_num_threads(16)
    table = rng.standard_normal((300, 8)).astype(np.float32)
    ids = rng.integers(0, 300, size=100_000)
    np.testing.assert_array_equal(embtable.gather(table, ids), table[ids])


def test_torch_and_embtable_together(rng):
    """No OpenMP in embtable: importing torch next to it (either order) just works."""
    torch = pytest.importorskip("torch")
    code = (
        "import torch, embtable, numpy as np\n"
        "t = np.arange(40, dtype=np.float32).reshape(10, 4)\n"
        "ids = np.array([3, 1, 3])\n"
        "a = embtable.gather(t, ids)\n"
        "b = torch.nn.functional.embedding(torch.from_numpy(ids), torch.from_numpy(t)).numpy()\n"
        "assert (a == b).all()\n"
        "print('ok')\n"
    )
    for first in ("torch", "embtable"):
        src = f"import {first}\n" + code
        out = subprocess.run(
            [sys.executable, "-c", src], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok"
    assert torch.get_num_threads() >= 1


def test_absurd_thread_count_is_a_value_error_naming_the_limit():
    before = embtable.get_num_threads()
    limit = embtable.show_config(mode="dicts")["threads"]["max"]
    assert limit >= 64
    for n in (limit + 1, 40_000, 1 << 20):
        with pytest.raises(ValueError, match=str(limit)):
            embtable.set_num_threads(n)
    assert embtable.get_num_threads() == before
    embtable.set_num_threads(limit)  # the limit itself is accepted and works
    table = np.arange(40.0, dtype=np.float32).reshape(20, 2)
    ids = np.arange(20)[::-1].copy()
    np.testing.assert_array_equal(embtable.gather(table, ids), table[ids])
    embtable.set_num_threads(before)


def test_bad_env_thread_count_above_the_limit_warns():
    env = dict(os.environ, EMBTABLE_NUM_THREADS="40000", EMBTABLE_TUNE="0")
    code = "import embtable; print(embtable.get_num_threads())"
    r = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "EMBTABLE_NUM_THREADS" in r.stderr and "RuntimeWarning" in r.stderr
    assert int(r.stdout) == embtable._core.default_num_threads()


# Runs in a child whose user may create only a few more tasks: the pool gets
# fewer threads than asked, warns once, tells the truth, and computes correctly.
_SCARCE_THREADS = r"""
import os, resource, sys, warnings

# Everything imported first: the unprivileged user may not read the installation.
import numpy as np
import numpy.testing
import embtable

rng = np.random.default_rng(0)
table = rng.standard_normal((5000, 32)).astype(np.float32)
ids = rng.integers(0, 5000, size=200_000)
updates = rng.standard_normal((200_000, 32)).astype(np.float32)
expected = table.copy()
np.add.at(expected, ids, updates)


def tasks_of(uid):
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            n += int(line.split()[1]) == uid
                            break
        except OSError:
            pass
    return n

uid = 65534 if os.geteuid() == 0 else os.getuid()
room = tasks_of(uid) + 3  # this thread and two more
resource.setrlimit(resource.RLIMIT_NPROC, (room, room))
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)

rng = np.random.default_rng(0)
table = rng.standard_normal((5000, 32)).astype(np.float32)
ids = rng.integers(0, 5000, size=200_000)
updates = rng.standard_normal((200_000, 32)).astype(np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    embtable.set_num_threads(16)
    got = embtable.get_num_threads()
    out = embtable.gather(table, ids)
    target = table.copy()
    embtable.scatter_add(target, ids, updates, deterministic=True)
    target2 = table.copy()
    embtable.scatter_add(target2, ids, updates)
runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(runtime) == 1, [str(w.message) for w in caught]
assert "16" in str(runtime[0].message), runtime[0].message
assert 1 <= got < 16, got
assert embtable.get_num_threads() == got
np.testing.assert_array_equal(out, table[ids])
np.testing.assert_array_equal(target, expected)
np.testing.assert_allclose(target2, expected, rtol=1e-5, atol=1e-5)
print("OK", got)
"""


def test_thread_creation_failure_leaves_a_working_pool():
    if os.geteuid() != 0 and not hasattr(os, "setuid"):
        pytest.skip("needs a POSIX user to limit")
    env = dict(
        os.environ,
        EMBTABLE_TUNE="0",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    env.pop("EMBTABLE_NUM_THREADS", None)
    r = subprocess.run(
        [sys.executable, "-c", _SCARCE_THREADS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "terminate called" not in r.stderr
    assert r.stdout.startswith("OK"), r.stdout


def _gil_cases():
    from embtable import optimizers

    rng = np.random.default_rng(9)
    V, D, N = 1 << 17, 64, 1 << 21  # a 32 MiB table, 2M ids in bags
    table = rng.standard_normal((V, D), dtype=np.float32)
    ids = rng.integers(0, V, N)
    bags = ids.reshape(-1, 16)
    rows = ids[: N // 4]  # gathers and scatters: 128 MiB of rows
    q = embtable.quantize(table, "int8")
    ones = np.ones((N // 4, D), np.float32)
    sparse = embtable.Embedding(V, D, sparse=True, weights=table)
    dense = embtable.Embedding(V, D, weights=table)
    for layer in (sparse, dense):
        layer(ids[: N // 4])
        layer.backward(np.ones((N // 4, D), np.float32))
    adam = optimizers.Adam()
    adam.step(sparse)
    adam.step(dense)
    big = np.zeros((4 * V, D), np.float32)
    return {
        "gather": lambda: embtable.gather(table, rows),
        "scatter_add": lambda: embtable.scatter_add(table.copy(), rows, ones),
        "scatter_add_det": lambda: embtable.scatter_add(
            table.copy(), rows, ones, deterministic=True
        ),
        "bag_sum": lambda: embtable.embedding_bag(table, bags, mode="sum"),
        "bag_max": lambda: embtable.embedding_bag(table, bags, mode="max"),
        "bags": lambda: embtable.embedding_bags([table, q], [bags, bags]),
        "qgather": lambda: embtable.gather(q, rows),
        "quantize": lambda: embtable.quantize(big, "int4"),
        # One step took 10-20 ms here, about 10 ticks even with the GIL released:
        # four, so that it shows (a held GIL would tick once per step, 4 in all).
        "lazy_adam": lambda: [adam.step(sparse) for _ in range(4)],
        "dense_adam": lambda: [adam.step(dense) for _ in range(4)],
        "sparse_backward": lambda: sparse.backward(np.ones((N // 4, D), np.float32)),
    }


def test_kernels_release_the_gil():
    from gil_probe import ticks_during

    # Every kernel runs without the GIL: another Python thread keeps running. One
    # thread in the pool, so that the calls last and a CPU is left for the counter.
    threads = embtable.get_num_threads()
    embtable.set_num_threads(1)
    try:
        cases = _gil_cases()
        ticks = {name: ticks_during(fn)[0] for name, fn in cases.items()}
    finally:
        embtable.set_num_threads(threads)
    stalled = {name: n for name, n in ticks.items() if n < 10}
    assert not stalled, stalled


def _cgroup_tree(root, quotas):
    """Writes {relative dir: file contents} under root ("cpu.max" for v2, the v1
    pair "cpu/...": "quota period")."""
    for rel, text in quotas.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        if rel.startswith("cpu/") or rel == "cpu":
            quota, period = text.split()
            (d / "cpu.cfs_quota_us").write_text(quota + "\n")
            (d / "cpu.cfs_period_us").write_text(period + "\n")
        else:
            (d / "cpu.max").write_text(text + "\n")


@pytest.mark.parametrize(
    "quotas,proc,cpus",
    [
        # A container with its own cgroup namespace: its cgroup is the root.
        ({".": "150000 100000"}, "0::/\n", 2),
        ({".": "max 100000"}, "0::/\n", 0),
        # systemd CPUQuota=50% or docker --cgroupns=host: the quota is in the
        # process's own cgroup, not at the root (which has no cpu.max at all).
        ({"system.slice": "max 100000", "system.slice/job.service": "50000 100000"},
         "0::/system.slice/job.service\n", 1),
        # An ancestor's quota limits its children.
        ({"a": "300000 100000", "a/b": "max 100000", "a/b/c": "800000 100000"},
         "0::/a/b/c\n", 3),
        # The host's name for a cgroup mounted at the root: its ancestors still count.
        ({".": "200000 100000"}, "0::/docker/0123abcd\n", 2),
        # cgroup v1 (no cpu.max anywhere): the cpu controller's line.
        ({"cpu": "-1 100000", "cpu/user.slice": "150000 100000"},
         "4:memory:/x\n3:cpu,cpuacct:/user.slice\n0::/\n", 2),
        ({"cpu": "50000 100000"}, "3:cpu,cpuacct:/docker/0123abcd\n", 1),
        ({"cpu": "-1 100000"}, "2:cpuset:/\n1:cpu:/\n", 0),
        ({}, "", 0),
        ({}, "garbage\n", 0),
    ],
)  # fmt: skip
def test_cgroup_quota_of_this_process_and_its_ancestors(tmp_path, quotas, proc, cpus):
    _cgroup_tree(tmp_path, quotas)
    assert _core.cpus_from_cgroup(str(tmp_path), proc) == cpus
