"""Out-of-core tables (np.memmap): read-ahead keeps results exact, reads the rows'
pages (deduplicated) and only those, and in-place updates dirty only touched pages."""

from __future__ import annotations

import os
import subprocess
import sys

import embtable
import numpy as np
import pytest
from embtable import _core, _prefetch

PAGE = _core.page_size()


def _write(path, table: np.ndarray, offset: int = 0) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * offset)
        f.write(np.ascontiguousarray(table).tobytes())
        f.flush()
        os.fsync(f.fileno())


def _evict(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cold_memmap(path, dtype, shape, mode="r", offset=0):
    _evict(path)
    t = np.memmap(path, dtype=dtype, mode=mode, shape=shape, offset=offset)
    if _core.resident_pages(t):
        pytest.skip(f"{path}: this filesystem keeps the file in memory (tmpfs?)")
    return t


def _pages_of(table: np.ndarray, ids: np.ndarray) -> set[int]:
    """The page numbers (from the aligned start of the mapping) that rows ids touch."""
    addr = table.__array_interface__["data"][0]
    lead = addr % PAGE
    row = table.shape[1] * table.itemsize
    pages: set[int] = set()
    for i in np.unique(ids):
        b = lead + int(i) * row
        pages.update(range(b // PAGE, (b + row - 1) // PAGE + 1))
    return pages


def _resident_set(table: np.ndarray) -> set[int]:
    """The pages of the table's mapping (numbered as in _pages_of) in the page cache."""
    lead = table.__array_interface__["data"][0] % PAGE
    raw = np.asarray(table).reshape(-1).view(np.uint8)
    n = raw.size
    return {
        p
        for p in range((n + lead + PAGE - 1) // PAGE)
        if _core.resident_pages(
            raw[max(0, p * PAGE - lead) : min(n, (p + 1) * PAGE - lead)]
        )
    }


def _dirty_kib(table: np.ndarray) -> int:
    """Dirty KiB of the mapping holding the table (/proc/self/smaps)."""
    addr = table.__array_interface__["data"][0]
    with open("/proc/self/smaps") as f:
        inside = False
        total = 0
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head in ("Shared_Dirty:", "Private_Dirty:"):
                total += int(line.split()[1])
    return total


@pytest.fixture(params=["threads", "willneed"])
def method(request, monkeypatch):
    monkeypatch.setattr(_prefetch, "_method", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [1, 100, 1024, 3000])
def test_gather_and_bag_on_a_cold_memmap_equal_numpy(tmp_path, method, dtype, D):
    rng = np.random.default_rng(D)
    V = int(rng.integers(50, 400))
    table = rng.standard_normal((V, D)).astype(dtype)
    offset = 24  # rows straddle page boundaries, the mapping starts mid-page
    path = tmp_path / "t.bin"
    _write(path, table, offset)
    for idt in (np.int32, np.int64):
        ids = rng.integers(0, V, size=(7, 5)).astype(idt)
        t = _cold_memmap(path, dtype, (V, D), offset=offset)
        np.testing.assert_array_equal(embtable.gather(t, ids), table[ids])
        del t
        t = _cold_memmap(path, dtype, (V, D), offset=offset)
        want = table[ids].sum(axis=1)
        got = embtable.embedding_bag(t, ids, mode="sum")
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 0)
        del t


def test_prefetch_reads_exactly_the_pages_of_the_rows(tmp_path, method):
    rng = np.random.default_rng(1)
    V, D = 4000, 100  # 400-byte rows, several per page, some across two
    table = rng.standard_normal((V, D)).astype(np.float32)
    path = tmp_path / "t.bin"
    _write(path, table)
    t = _cold_memmap(path, np.float32, (V, D))
    ids = rng.integers(0, V, 300)
    ids = np.concatenate([ids, ids[:50]])  # repeats: one read per page
    want = _pages_of(t, ids)
    stats = embtable.prefetch(t, ids)
    assert stats["pages"] == len(want)
    assert stats["cold"] == len(want)
    if method == "threads":
        # Every page read, and no other (MADV_RANDOM: no read-around).
        assert stats["issued"] == len(want)
        assert _resident_set(t) == want
    else:
        # Runs of adjacent pages: one madvise each.
        assert 0 < stats["issued"] <= len(want)
    again = embtable.prefetch(t, ids)
    if method == "threads":
        assert again == {"pages": len(want), "cold": 0, "issued": 0}
    np.testing.assert_array_equal(embtable.gather(t, ids), table[ids])
    assert want <= _resident_set(t)


def test_scatter_add_on_a_memmap_reads_and_dirties_only_touched_pages(tmp_path):
    rng = np.random.default_rng(2)
    V, D = 3000, 256  # 1 KiB rows: 4 per page
    table = rng.standard_normal((V, D)).astype(np.float32)
    path = tmp_path / "t.bin"
    _write(path, table)
    t = _cold_memmap(path, np.float32, (V, D), mode="r+")
    ids = rng.integers(0, V, size=(40,))
    upd = rng.standard_normal((40, D)).astype(np.float32)
    embtable.scatter_add(t, ids, upd, deterministic=True)
    pages = _pages_of(t, ids)
    assert _dirty_kib(t) * 1024 == len(pages) * PAGE
    if _prefetch._method == "threads":
        assert _resident_set(t) == pages  # untouched pages were not even read
    want = table.copy()
    np.add.at(want, ids, upd)
    t.flush()
    del t
    np.testing.assert_array_equal(np.fromfile(path, np.float32).reshape(V, D), want)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_lazy_optimizer_on_a_memmap_layer_dirties_only_touched_pages(
    tmp_path, opt_name
):
    rng = np.random.default_rng(3)
    V, D = 2048, 64  # 256-byte rows: 16 per page
    table = rng.standard_normal((V, D)).astype(np.float32)
    path = tmp_path / "t.bin"
    _write(path, table)
    ram = embtable.Embedding(V, D, weights=table, sparse=True)
    disk = embtable.Embedding(V, D, weights=table, sparse=True)
    disk.embeddings = _cold_memmap(path, np.float32, (V, D), mode="r+")
    opts = [embtable.optimizers.get(opt_name), embtable.optimizers.get(opt_name)]
    touched: set[int] = set()
    for _ in range(3):
        ids = rng.integers(0, V, size=(8, 3))
        g = rng.standard_normal((8, 3, D)).astype(np.float32)
        for layer, opt in zip((ram, disk), opts, strict=True):
            layer.zero_grad()
            layer(ids)
            layer.backward(g)
            opt.step(layer)
        touched |= _pages_of(disk.embeddings, ids)
    assert _dirty_kib(disk.embeddings) * 1024 == len(touched) * PAGE
    np.testing.assert_array_equal(np.asarray(disk.embeddings), ram.embeddings)


def test_prefetch_leaves_other_arrays_alone_and_checks_ids(tmp_path):
    table = np.ones((10, 4), np.float32)
    assert embtable.prefetch(table, [1, 2]) == {"pages": 0, "cold": 0, "issued": 0}
    path = tmp_path / "t.bin"
    _write(path, table)
    t = np.memmap(path, np.float32, "r", shape=(10, 4))
    with pytest.raises(IndexError, match="index 10 at position \\(1,\\)"):
        embtable.prefetch(t, [3, 10])
    with pytest.raises(ValueError, match="method"):
        embtable.prefetch(t, [3], method="bogus")
    with pytest.raises(IndexError, match="index 10"):
        embtable.gather(t, [3, 10])  # the read-ahead skips it, the kernel raises
    assert _core.mapped_file(t) == str(path)
    assert _core.mapped_file(table) == ""
    cfg = embtable.show_config(mode="dicts")["out_of_core"]
    assert cfg["prefetch"] in ("threads", "willneed", "off")


@pytest.fixture
def read_ahead_calls(monkeypatch):
    """The tables (their first bytes' addresses) and methods of each
    _core.prefetch_rows call, with the automatic read-ahead on ("threads")."""
    monkeypatch.setattr(_prefetch, "_method", "threads")
    calls: list[tuple[int, str]] = []
    real = _core.prefetch_rows

    def counting(table, ids, method, io_threads):
        calls.append((table.__array_interface__["data"][0], method))
        return real(table, ids, method, io_threads)

    monkeypatch.setattr(_core, "prefetch_rows", counting)
    return calls


def _memmaps(tmp_path):
    """A (256, 64) float32 table, its int8 quantized table, both in RAM and as
    file mappings (the quantized one through QuantizedTable.from_packed)."""
    rng = np.random.default_rng(7)
    table = rng.standard_normal((256, 64)).astype(np.float32)
    q = embtable.quantize(table, "int8")
    _write(tmp_path / "t.f32", table)
    _write(tmp_path / "t.q8", q.data)
    t = np.memmap(tmp_path / "t.f32", np.float32, "r", shape=table.shape)
    qm = embtable.QuantizedTable.from_packed(
        np.memmap(tmp_path / "t.q8", np.uint8, "r", shape=q.data.shape), "int8", 64
    )
    return table, q, t, qm


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_every_lookup_reads_ahead_a_file_backed_table(tmp_path, read_ahead_calls):
    table, q, t, qm = _memmaps(tmp_path)
    ids = np.array([[1, 5, 200], [7, 9, 255]])
    eq = np.testing.assert_array_equal
    cases = [
        (lambda: eq(embtable.gather(t, ids), table[ids]), [t]),
        (lambda: eq(embtable.gather(qm, ids), embtable.gather(q, ids)), [qm.data]),
        (
            lambda: eq(embtable.embedding_bag(qm, ids), embtable.embedding_bag(q, ids)),
            [qm.data],
        ),
        (
            lambda: eq(
                embtable.embedding_bags([t], [ids]),
                embtable.embedding_bags([table], [ids]),
            ),
            [t],
        ),
        (
            lambda: eq(
                embtable.embedding_bags([qm, table, t], [ids, ids, ids]),
                embtable.embedding_bags([q, table, table], [ids, ids, ids]),
            ),
            [qm.data, t],  # the table in RAM is left alone
        ),
    ]
    for run, mapped in cases:
        read_ahead_calls.clear()
        run()
        assert read_ahead_calls == [(_addr(m), "threads") for m in mapped]


def test_prefetch_reads_a_quantized_memmap(tmp_path, read_ahead_calls):
    _, q, _, qm = _memmaps(tmp_path)
    ids = np.array([1, 5, 200, 255])
    stats = embtable.prefetch(qm, ids)
    assert read_ahead_calls == [(_addr(qm.data), "threads")]
    assert stats["pages"] == len(_pages_of(qm.data, ids)) > 0
    assert embtable.prefetch(q, ids) == {"pages": 0, "cold": 0, "issued": 0}
    with pytest.raises(IndexError, match="index 256"):
        embtable.prefetch(qm, [256])


def test_prefetch_still_reads_when_the_automatic_read_ahead_is_off(
    tmp_path, read_ahead_calls, monkeypatch
):
    monkeypatch.setattr(_prefetch, "_method", "off")
    table, _, t, _ = _memmaps(tmp_path)
    ids = np.array([3, 100, 250])
    np.testing.assert_array_equal(embtable.gather(t, ids), table[ids])
    assert read_ahead_calls == []  # off: the lookups read nothing ahead
    stats = embtable.prefetch(t, ids)  # an explicit call: "threads"
    assert read_ahead_calls == [(_addr(t), "threads")]
    assert stats["pages"] == len(_pages_of(t, ids))
    embtable.prefetch(t, ids, method="willneed")
    assert read_ahead_calls[-1] == (_addr(t), "willneed")


def test_a_zero_width_view_does_not_turn_off_the_read_ahead(tmp_path):
    path = tmp_path / "t.bin"
    _write(path, np.ones((64, 1024), np.float32))
    t = np.memmap(path, np.float32, "r", shape=(64, 1024))
    assert embtable.gather(t[:, :0], [1]).shape == (1, 0)
    assert embtable.prefetch(t[:, :0], [1]) == {"pages": 0, "cold": 0, "issued": 0}
    stats = embtable.prefetch(t, [0, 63])
    assert stats["pages"] == len(_pages_of(t, np.array([0, 63]))) == 2


_ENV_OFF = """
import sys, numpy as np, embtable
t = np.memmap(sys.argv[1], np.float32, "r", shape=(10, 4))
print(embtable.show_config(mode="dicts")["out_of_core"]["prefetch"])
print(embtable.prefetch(t, [1, 9])["pages"])
"""


@pytest.mark.parametrize("value", ["off", "OFF"])
def test_env_prefetch_off_leaves_explicit_prefetch_working(tmp_path, value):
    path = tmp_path / "t.bin"
    _write(path, np.arange(40, dtype=np.float32).reshape(10, 4))
    r = subprocess.run(
        [sys.executable, "-W", "error", "-c", _ENV_OFF, str(path)],
        env=dict(os.environ, EMBTABLE_PREFETCH=value, EMBTABLE_TUNE="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["off", "1"]
