"""scatter_add == np.add.at: bitwise when deterministic, exact on integer values otherwise."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from conftest import FLOATS, INDEX_DTYPES
from hypothesis import given, settings
from hypothesis import strategies as st


def _reference(target, ids, updates):
    expected = target.copy()
    np.add.at(expected, ids, updates)
    return expected


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("deterministic", [True, False])
def test_matches_add_at_every_dtype(rng, dtype, index_dtype, deterministic):
    target = rng.standard_normal((40, 6)).astype(dtype)
    ids = rng.integers(0, 40, size=(5, 7)).astype(index_dtype)
    updates = rng.integers(-8, 8, size=(5, 7, 6)).astype(dtype)
    expected = _reference(target, ids, updates)
    res = embtable.scatter_add(target, ids, updates, deterministic=deterministic)
    assert res is target
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_deterministic_is_bitwise_add_at(rng, threads):
    """Random floats with many duplicates: the summation order must be np.add.at's."""
    V, D, N = 500, 33, 100_000
    target = rng.standard_normal((V, D)).astype(np.float32)
    ids = (rng.zipf(1.3, size=N) % V).astype(np.int64)
    updates = rng.standard_normal((N, D)).astype(np.float32) * 1e3
    expected = _reference(target, ids, updates)
    embtable.set_num_threads(threads)
    embtable.scatter_add(target, ids, updates, deterministic=True)
    assert target.tobytes() == expected.tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", FLOATS)
def test_atomic_exact_on_integer_values(rng, threads, dtype):
    V, D, N = 300, 17, 120_000
    target = rng.integers(-5, 5, size=(V, D)).astype(dtype)
    ids = np.concatenate(
        [np.zeros(N // 5, np.int64), rng.integers(0, V, size=N - N // 5)]
    )
    rng.shuffle(ids)
    updates = rng.integers(-4, 5, size=(N, D)).astype(dtype)
    expected = _reference(target, ids, updates)
    embtable.set_num_threads(threads)
    embtable.scatter_add(target, ids, updates)
    np.testing.assert_array_equal(target, expected)


def test_atomic_close_on_random_floats(rng):
    V, D, N = 1000, 64, 200_000
    target = np.zeros((V, D), np.float32)
    ids = rng.integers(0, V, size=N)
    updates = rng.standard_normal((N, D)).astype(np.float32)
    expected = _reference(target.astype(np.float64), ids, updates.astype(np.float64))
    embtable.scatter_add(target, ids, updates)
    np.testing.assert_allclose(target, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(), (0,), (4,), (3, 0), (2, 3, 2)])
def test_index_shapes(rng, shape):
    target = rng.standard_normal((6, 3)).astype(np.float64)
    ids = rng.integers(0, 6, size=shape)
    updates = rng.standard_normal(shape + (3,))
    expected = _reference(target, ids, updates)
    embtable.scatter_add(target, ids, updates, deterministic=True)
    assert target.tobytes() == expected.tobytes()


@pytest.mark.parametrize("V,D", [(0, 3), (4, 0), (0, 0)])
def test_empty_tables(V, D):
    target = np.zeros((V, D), np.float32)
    embtable.scatter_add(target, np.zeros(0, np.int64), np.zeros((0, D), np.float32))
    if V:
        embtable.scatter_add(target, [1, 3], np.zeros((2, D), np.float32))


def test_non_contiguous_updates_are_read_correctly(rng):
    target = np.zeros((10, 4), np.float32)
    ids = rng.integers(0, 10, size=12)
    big = rng.standard_normal((12, 8)).astype(np.float32)
    updates = big[:, ::2]
    assert not updates.flags.c_contiguous
    expected = _reference(target, ids, updates)
    embtable.scatter_add(target, ids, updates, deterministic=True)
    assert target.tobytes() == expected.tobytes()


def test_list_updates(rng):
    target = np.zeros((3, 2), np.float64)
    embtable.scatter_add(target, [0, 0, 2], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(target, [[4, 6], [0, 0], [5, 6]])


def test_large_table_one_and_two_threads(rng):
    """The issue's size: 1M x 64 float32, 262,144 ids, both modes, 1 and 2 threads."""
    V, D, N = 1_000_000, 64, 262_144
    ids = rng.integers(0, V, size=N)
    updates = rng.integers(-3, 4, size=(N, D)).astype(np.float32)
    expected = np.zeros((V, D), np.float32)
    np.add.at(expected, ids, updates)
    target = np.empty((V, D), np.float32)
    for threads in (1, 2):
        embtable.set_num_threads(threads)
        for deterministic in (True, False):
            target.fill(0)
            embtable.scatter_add(target, ids, updates, deterministic=deterministic)
            np.testing.assert_array_equal(target, expected)


@settings(max_examples=150, deadline=None)
@given(
    V=st.integers(1, 50),
    D=st.integers(0, 40),
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from(FLOATS),
    index_dtype=st.sampled_from([np.int32, np.int64, np.uint8, np.int16]),
    threads=st.integers(1, 4),
    deterministic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_add_at(
    V, D, shape, dtype, index_dtype, threads, deterministic, seed
):
    rng = np.random.default_rng(seed)
    hi = min(V, np.iinfo(index_dtype).max + 1)
    ids = rng.integers(0, hi, size=shape).astype(index_dtype)
    target = rng.standard_normal((V, D)).astype(dtype)
    if deterministic:
        updates = rng.standard_normal(shape + (D,)).astype(dtype)
    else:
        updates = rng.integers(-9, 9, size=shape + (D,)).astype(dtype)
        target = np.round(target)
    expected = _reference(target, ids, updates)
    embtable.set_num_threads(threads)
    embtable.scatter_add(target, ids, updates, deterministic=deterministic)
    assert target.tobytes() == expected.tobytes()
