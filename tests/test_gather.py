"""gather == np.take(table, indices, axis=0) (exact), for every dtype and shape."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from conftest import FLOATS, INDEX_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_matches_take_every_dtype(rng, dtype, index_dtype):
    table = rng.standard_normal((100, 7)).astype(dtype)
    ids = rng.integers(0, 100, size=(4, 5)).astype(index_dtype)
    out = embtable.gather(table, ids)
    assert out.dtype == dtype
    assert out.shape == (4, 5, 7)
    np.testing.assert_array_equal(out, np.take(table, ids, axis=0))


@pytest.mark.parametrize(
    "shape", [(), (0,), (3,), (2, 0), (0, 3), (2, 3, 4), (1, 1, 1, 1, 5)]
)
def test_index_shapes(rng, shape):
    table = rng.standard_normal((9, 4)).astype(np.float32)
    ids = rng.integers(0, 9, size=shape)
    out = embtable.gather(table, ids)
    assert out.shape == shape + (4,)
    np.testing.assert_array_equal(out, np.take(table, ids, axis=0))


def test_python_scalars_and_lists(rng):
    table = rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(embtable.gather(table, 2), table[2])
    np.testing.assert_array_equal(embtable.gather(table, [4, 0, 4]), table[[4, 0, 4]])
    np.testing.assert_array_equal(embtable.gather(table, [[1], [2]]), table[[[1], [2]]])
    empty = embtable.gather(table, [])
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("V,D", [(0, 3), (5, 0), (0, 0)])
def test_empty_tables(V, D):
    table = np.zeros((V, D), np.float32)
    if V == 0:
        out = embtable.gather(table, np.zeros((0,), np.int64))
        assert out.shape == (0, D)
        with pytest.raises(IndexError):
            embtable.gather(table, [0])
    else:
        out = embtable.gather(table, [1, 4])
        assert out.shape == (2, 0)


def test_non_contiguous_indices_are_read_correctly(rng):
    table = rng.standard_normal((50, 6)).astype(np.float64)
    ids = rng.integers(0, 50, size=(10, 8))[:, ::3]
    assert not ids.flags.c_contiguous
    np.testing.assert_array_equal(
        embtable.gather(table, ids), np.take(table, ids, axis=0)
    )
    ids_f = np.asfortranarray(rng.integers(0, 50, size=(6, 7)))
    np.testing.assert_array_equal(
        embtable.gather(table, ids_f), np.take(table, ids_f, axis=0)
    )


def test_byteswapped_indices_are_converted(rng):
    table = rng.standard_normal((50, 6)).astype(np.float32)
    ids = rng.integers(0, 50, size=20).astype(">i8")
    np.testing.assert_array_equal(
        embtable.gather(table, ids), np.take(table, ids, axis=0)
    )


def test_out_is_returned_and_written(rng):
    table = rng.standard_normal((30, 5)).astype(np.float32)
    ids = rng.integers(0, 30, size=(3, 4))
    out = np.empty((3, 4, 5), np.float32)
    res = embtable.gather(table, ids, out=out)
    assert res is out
    np.testing.assert_array_equal(out, np.take(table, ids, axis=0))


def test_large_table_one_and_two_threads(rng):
    """The issue's size: 1M x 64 float32, 262,144 ids, with 1 and 2 threads."""
    V, D, N = 1_000_000, 64, 262_144
    table = rng.standard_normal((V, D), dtype=np.float32)
    ids = rng.integers(0, V, size=N)
    expected = np.take(table, ids, axis=0)
    out = np.empty_like(expected)
    for threads in (1, 2):
        embtable.set_num_threads(threads)
        out.fill(np.nan)
        embtable.gather(table, ids, out=out)
        np.testing.assert_array_equal(out, expected)


@settings(max_examples=150, deadline=None)
@given(
    V=st.integers(1, 60),
    D=st.integers(0, 40),
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from(FLOATS),
    index_dtype=st.sampled_from([np.int32, np.int64, np.uint16, np.int8]),
    threads=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_take(V, D, shape, dtype, index_dtype, threads, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((V, D)).astype(dtype)
    hi = min(V, np.iinfo(index_dtype).max + 1)
    ids = rng.integers(0, hi, size=shape).astype(index_dtype)
    embtable.set_num_threads(threads)
    np.testing.assert_array_equal(
        embtable.gather(table, ids), np.take(table, ids, axis=0)
    )
