"""Zero copy: tables are read and written in place, `out` is returned as is."""

from __future__ import annotations

import embtable
import numpy as np


def test_gather_out_is_out(rng):
    table = rng.standard_normal((20, 8)).astype(np.float32)
    out = np.empty((5, 8), np.float32)
    res = embtable.gather(table, [1, 2, 3, 4, 5], out=out)
    assert res is out
    assert np.shares_memory(res, out)


def test_scatter_add_returns_target_itself(rng):
    target = np.zeros((10, 3), np.float64)
    res = embtable.scatter_add(target, [1, 1], np.ones((2, 3)))
    assert res is target
    np.testing.assert_array_equal(target[1], [2, 2, 2])


def test_readonly_table_is_fine_for_gather(rng):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    table.flags.writeable = False
    np.testing.assert_array_equal(embtable.gather(table, [3, 9]), table[[3, 9]])


def test_memmap_table_read_and_updated_in_place(tmp_path, rng):
    path = tmp_path / "table.f32"
    V, D = 1000, 16
    init = rng.standard_normal((V, D)).astype(np.float32)
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(V, D))
    mm[:] = init
    mm.flush()
    ids = rng.integers(0, V, size=300)
    updates = rng.integers(-3, 4, size=(300, D)).astype(np.float32)
    np.testing.assert_array_equal(embtable.gather(mm, ids), init[ids])
    res = embtable.scatter_add(mm, ids, updates, deterministic=True)
    assert res is mm
    mm.flush()
    del mm, res
    expected = init.copy()
    np.add.at(expected, ids, updates)
    reopened = np.memmap(path, dtype=np.float32, mode="r", shape=(V, D))
    np.testing.assert_array_equal(reopened, expected)
    # A read-only memmap is a valid table to gather from.
    np.testing.assert_array_equal(embtable.gather(reopened, ids[:5]), expected[ids[:5]])


def test_atomic_scatter_into_memmap(tmp_path, rng):
    path = tmp_path / "t.f64"
    mm = np.memmap(path, dtype=np.float64, mode="w+", shape=(50, 3))
    ids = rng.integers(0, 50, size=5000)
    embtable.scatter_add(mm, ids, np.ones((5000, 3)))
    mm.flush()
    counts = np.bincount(ids, minlength=50).astype(np.float64)
    reopened = np.memmap(path, dtype=np.float64, mode="r", shape=(50, 3))
    np.testing.assert_array_equal(reopened, np.repeat(counts[:, None], 3, axis=1))


def test_int32_and_int64_indices_are_not_copied(rng, monkeypatch):
    """Native int32/int64 C-contiguous indices reach the core as the same object."""
    from embtable import _core, _functional

    seen = []
    real = _core.gather

    def spy(table, indices, *, out=None):
        seen.append(indices)
        return real(table, indices, out=out)

    monkeypatch.setattr(_functional._core, "gather", spy)
    table = np.zeros((10, 2), np.float32)
    for dtype in (np.int32, np.int64):
        ids = np.array([1, 2], dtype)
        embtable.gather(table, ids)
        assert seen[-1] is ids
