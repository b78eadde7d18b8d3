"""Hypothesis properties of every public function against NumPy.

Each property runs EMBTABLE_HYPOTHESIS_EXAMPLES examples (default 2,000) over
float32/float64 tables, every integer index dtype (and lists), 0-d and empty
index shapes, V = 0 and D = 0, duplicates, long index arrays that engage the
thread pool, and internal thread counts 1-4.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import embtable
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_harness import np_embedding_bag  # noqa: E402

EXAMPLES = int(os.environ.get("EMBTABLE_HYPOTHESIS_EXAMPLES", "2000"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLOATS = [np.float32, np.float64]
INDEX_DTYPES = [
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
]
# Long rows make a few indices exceed the parallel grain, so the pool runs.
DIMS = [0, 1, 2, 3, 5, 8, 64, 130]


@st.composite
def index_case(draw, min_V: int = 0):
    """(V, D, dtype, indices, threads) with every index in [0, V)."""
    dtype = draw(st.sampled_from(FLOATS))
    D = draw(st.sampled_from(DIMS))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if shape and draw(st.integers(0, 5)) == 0:
        # ~150-600 indices in all: past the grain for long rows, so the pool runs
        rest = int(np.prod(shape[1:], dtype=np.int64)) or 1
        shape = (shape[0] + draw(st.integers(150, 600)) // rest,) + shape[1:]
    n = int(np.prod(shape, dtype=np.int64))
    V = draw(st.integers(min_V if n == 0 else max(min_V, 1), 9))
    seed = draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).integers(0, max(V, 1), size=shape)
    idx_dtype = draw(st.sampled_from(INDEX_DTYPES))
    indices: object = values.astype(idx_dtype)
    form = draw(st.integers(0, 5))
    if form == 0 and np.shape(values.tolist()) == values.shape:
        indices = (
            values.tolist()
        )  # Python ints (0-d: an int); not where a list loses 0-dims
    elif form == 1 and values.ndim:
        indices = np.repeat(values.astype(idx_dtype), 2, axis=-1)[
            ..., ::2
        ]  # not contiguous
    threads = draw(st.integers(1, 4))
    return V, D, dtype, indices, values.astype(np.int64), threads


def _table(
    rng: np.random.Generator, V: int, D: int, dtype, integer: bool = False
) -> np.ndarray:
    if integer:
        return rng.integers(-8, 8, size=(V, D)).astype(dtype)
    return rng.standard_normal((V, D)).astype(dtype)


@SETTINGS
@given(case=index_case(), with_out=st.booleans(), seed=st.integers(0, 2**16))
def test_gather_matches_take(case, with_out, seed):
    V, D, dtype, indices, ref, threads = case
    embtable.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    table = _table(rng, V, D, dtype)
    want = np.take(table, ref, axis=0)
    if with_out:
        out = np.empty(ref.shape + (D,), dtype=dtype)
        got = embtable.gather(table, indices, out=out)
        assert got is out
    else:
        got = embtable.gather(table, indices)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(
    case=index_case(),
    deterministic=st.booleans(),
    integer=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_scatter_add_matches_add_at(case, deterministic, integer, seed):
    V, D, dtype, indices, ref, threads = case
    embtable.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    target = _table(rng, V, D, dtype, integer=True)
    if integer:
        updates = rng.integers(-4, 5, size=ref.shape + (D,)).astype(dtype)
    else:
        updates = rng.standard_normal(ref.shape + (D,)).astype(dtype)
    want = target.copy()
    np.add.at(want, ref, updates)
    got = embtable.scatter_add(target, indices, updates, deterministic=deterministic)
    assert got is target
    if deterministic or integer:
        # deterministic: bitwise np.add.at; atomic mode: integer sums are exact in any order
        np.testing.assert_array_equal(target, want)
    else:
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(target, want, rtol=tol, atol=tol * 8)


@SETTINGS
@given(
    case=index_case(min_V=0),
    bad=st.sampled_from([-1, 0, 1, 2**31, -(2**31)]),
    where=st.integers(0, 2**16),
    op=st.sampled_from(["gather", "scatter", "scatter_det"]),
)
def test_bad_index_raises_and_writes_nothing(case, bad, where, op):
    V, D, dtype, _, ref, threads = case
    if ref.size == 0:
        ref = np.zeros((1,), dtype=np.int64)
    embtable.set_num_threads(threads)
    flat = ref.reshape(-1).copy()
    pos = where % flat.size
    value = -1 if bad == -1 else (V + bad if bad >= 0 else bad)
    flat[pos] = value
    idx = flat.reshape(ref.shape)
    first = int(np.flatnonzero((flat < 0) | (flat >= V))[0])
    coord = np.unravel_index(first, idx.shape) if idx.ndim else ()
    expected = (
        "("
        + ", ".join(str(int(c)) for c in coord)
        + ("," if len(coord) == 1 else "")
        + ")"
    )
    rng = np.random.default_rng(where)
    target = _table(rng, V, D, dtype)
    before = target.copy()
    message = re.escape(f"index {flat[first]} at position {expected} is out of bounds")
    with pytest.raises(IndexError, match=message):
        if op == "gather":
            out = np.full(idx.shape + (D,), 5, dtype=dtype)
            try:
                embtable.gather(target, idx, out=out)
            finally:
                assert np.all(out == 5)
        else:
            updates = np.ones(idx.shape + (D,), dtype=dtype)
            embtable.scatter_add(
                target, idx, updates, deterministic=op == "scatter_det"
            )
    np.testing.assert_array_equal(target, before)


needs_bag = pytest.mark.skipif(
    not hasattr(embtable, "embedding_bag"),
    reason="this build has no embtable.embedding_bag",
)


@st.composite
def bag_case(draw):
    dtype = draw(st.sampled_from(FLOATS))
    V = draw(st.integers(1, 9))
    D = draw(st.sampled_from(DIMS))
    mode = draw(st.sampled_from(["sum", "mean", "max"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        B = draw(st.integers(0, 5)) + (
            draw(st.integers(0, 300)) if draw(st.integers(0, 5)) == 0 else 0
        )
        L = draw(st.integers(0, 4))
        indices = rng.integers(0, V, size=(B, L))
        offsets = None
        include_last = False
    else:
        n = draw(st.integers(0, 12)) + (
            draw(st.integers(0, 400)) if draw(st.integers(0, 5)) == 0 else 0
        )
        indices = rng.integers(0, V, size=n)
        B = draw(st.integers(0 if n == 0 else 1, 6))
        cuts = sorted(rng.integers(0, n + 1, size=max(B - 1, 0)).tolist())
        include_last = draw(st.booleans()) and B > 0
        offs = ([0] + cuts if B else []) + ([n] if include_last else [])
        offsets = np.array(
            offs, dtype=draw(st.sampled_from([np.int64, np.int32, np.uint16]))
        )
    indices = indices.astype(draw(st.sampled_from(INDEX_DTYPES)))
    weights = None
    if mode == "sum" and draw(st.booleans()):
        weights = rng.standard_normal(indices.shape).astype(dtype)
    padding_idx = draw(st.none() | st.integers(0, V - 1))
    threads = draw(st.integers(1, 4))
    table = rng.standard_normal((V, D)).astype(dtype)
    return table, indices, offsets, mode, weights, padding_idx, include_last, threads


@needs_bag
@SETTINGS
@given(case=bag_case(), with_out=st.booleans())
def test_embedding_bag_matches_oracle(case, with_out):
    table, indices, offsets, mode, weights, padding_idx, include_last, threads = case
    embtable.set_num_threads(threads)
    want = np_embedding_bag(
        table,
        indices.astype(np.int64),
        offsets,
        mode,
        weights,
        padding_idx,
        include_last,
    )
    out = np.full(want.shape, 9, dtype=table.dtype) if with_out else None
    got = embtable.embedding_bag(
        table,
        indices,
        offsets,
        mode=mode,
        per_sample_weights=weights,
        padding_idx=padding_idx,
        include_last_offset=include_last,
        out=out,
    )
    if with_out:
        assert got is out
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = 1e-5 if table.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    if mode != "mean":  # sums in index order in the table's dtype: exact
        np.testing.assert_array_equal(got, want)


needs_layer = pytest.mark.skipif(
    not hasattr(embtable, "Embedding"), reason="this build has no embtable.Embedding"
)


@needs_layer
@SETTINGS
@given(case=index_case(min_V=1), sparse=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_forward_backward(case, sparse, seed):
    V, D, dtype, indices, ref, threads = case
    if D == 0:
        D = 1
    embtable.set_num_threads(threads)
    layer = embtable.Embedding(
        V, D, dtype=np.dtype(dtype).name, seed=seed, sparse=sparse
    )
    table = layer.embeddings.copy()
    y = layer(indices)
    np.testing.assert_array_equal(y, np.take(table, ref, axis=0))
    g = np.random.default_rng(seed).integers(-3, 4, size=y.shape).astype(dtype)
    grad = layer.backward(g)
    want = np.zeros_like(table)
    np.add.at(want, ref, g)
    if sparse:
        dense = np.zeros_like(table)
        dense[np.asarray(grad.indices)] = grad.values
        np.testing.assert_array_equal(dense, want)
    else:
        np.testing.assert_array_equal(grad, want)
