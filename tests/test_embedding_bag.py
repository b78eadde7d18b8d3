"""embedding_bag: forward, backward (dense and sparse), per_sample_weights gradient.

Oracles: a plain NumPy reference below (always), the core's scalar ``_ref`` twins
(bitwise), and ``torch.nn.functional.embedding_bag`` where torch is installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import embtable
import numpy as np
import pytest
from embtable import _bag, _core
from hypothesis import given, settings
from hypothesis import strategies as st

MODES = ["sum", "mean", "max"]
DTYPES = [np.float32, np.float64]


# --------------------------------------------------------------------------- reference


def bag_bounds(n: int, indices_ndim: int, shape0: int, L: int, offsets, last: bool):
    """(begin, end) of every bag, as the contract defines them."""
    if indices_ndim == 2:
        return [(b * L, (b + 1) * L) for b in range(shape0)]
    offs = list(np.asarray(offsets, dtype=np.int64))
    if last:
        return [(offs[b], offs[b + 1]) for b in range(len(offs) - 1)]
    ends = offs[1:] + [n] if offs else []
    return list(zip(offs, ends, strict=True))


def np_forward(
    table,
    indices,
    offsets=None,
    mode="mean",
    weights=None,
    padding_idx=None,
    last=False,
):
    """Returns (out, argmax) computed with Python loops over bags."""
    idx = np.asarray(indices)
    flat = idx.reshape(-1)
    w = None if weights is None else np.asarray(weights).reshape(-1)
    L = idx.shape[1] if idx.ndim == 2 else 0
    bounds = bag_bounds(flat.size, idx.ndim, idx.shape[0], L, offsets, last)
    D = table.shape[1]
    out = np.zeros((len(bounds), D), dtype=table.dtype)
    argmax = np.full((len(bounds), D), -1, dtype=np.int64)
    for b, (s, e) in enumerate(bounds):
        pos = [i for i in range(s, e) if flat[i] != padding_idx]
        if not pos:
            continue
        rows = table[flat[pos]]
        if mode == "max":
            k = np.argmax(rows, axis=0)  # first maximum, as `>` in bag order
            out[b] = rows[k, np.arange(D)]
            argmax[b] = flat[pos][k]
        elif mode == "sum":
            acc = np.zeros(D, dtype=table.dtype)
            for j, i in enumerate(pos):
                acc += rows[j] * (w[i] if w is not None else 1)
            out[b] = acc
        else:
            acc = np.zeros(D, dtype=table.dtype)
            for j in range(len(pos)):
                acc += rows[j]
            out[b] = acc / table.dtype.type(len(pos))
    return out, argmax


def np_backward(
    grad,
    V,
    indices,
    offsets=None,
    mode="mean",
    weights=None,
    padding_idx=None,
    last=False,
    argmax=None,
):
    idx = np.asarray(indices)
    flat = idx.reshape(-1)
    w = None if weights is None else np.asarray(weights).reshape(-1)
    L = idx.shape[1] if idx.ndim == 2 else 0
    bounds = bag_bounds(flat.size, idx.ndim, idx.shape[0], L, offsets, last)
    D = grad.shape[1]
    target = np.zeros((V, D), dtype=grad.dtype)
    for b, (s, e) in enumerate(bounds):
        if mode == "max":
            for d in range(D):
                if argmax[b, d] >= 0:
                    target[argmax[b, d], d] += grad[b, d]
            continue
        pos = [i for i in range(s, e) if flat[i] != padding_idx]
        for i in pos:
            if w is not None:
                target[flat[i]] += w[i] * grad[b]
            elif mode == "mean":
                target[flat[i]] += (
                    grad.dtype.type(1) / grad.dtype.type(len(pos)) * grad[b]
                )
            else:
                target[flat[i]] += grad[b]
    return target


def np_weights_grad(grad, table, indices, offsets=None, padding_idx=None, last=False):
    idx = np.asarray(indices)
    flat = idx.reshape(-1)
    L = idx.shape[1] if idx.ndim == 2 else 0
    bounds = bag_bounds(flat.size, idx.ndim, idx.shape[0], L, offsets, last)
    g = np.zeros(flat.size, dtype=table.dtype)
    for b, (s, e) in enumerate(bounds):
        for i in range(s, e):
            if flat[i] != padding_idx:
                g[i] = np.dot(grad[b], table[flat[i]])
    return g.reshape(idx.shape)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=[1, 2, 3, 4], ids=lambda n: f"threads{n}")
def threads(request) -> Iterator[int]:
    before = embtable.get_num_threads()
    embtable.set_num_threads(request.param)
    yield request.param
    embtable.set_num_threads(before)


def make_case(
    rng,
    V,
    D,
    dtype,
    *,
    ragged,
    n_bags,
    max_len,
    empty_bags=True,
    last=False,
    index_dtype=np.int64,
):
    table = rng.standard_normal((V, D)).astype(dtype)
    if ragged:
        sizes = rng.integers(0 if empty_bags else 1, max_len + 1, size=n_bags)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n = int(offsets[-1])
        if not last:
            offsets = offsets[:-1]
        indices = rng.integers(0, V, size=n).astype(index_dtype)
    else:
        offsets = None
        indices = rng.integers(0, V, size=(n_bags, max_len)).astype(index_dtype)
    return table, indices, offsets


def tol(dtype):
    return (
        dict(rtol=1e-5, atol=1e-5)
        if dtype == np.float32
        else dict(rtol=1e-12, atol=1e-12)
    )


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ragged", [False, True], ids=["fixed", "ragged"])
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_forward_matches_numpy(dtype, mode, ragged, padding_idx, threads):
    rng = np.random.default_rng(7)
    table, indices, offsets = make_case(
        rng, 40, 70, dtype, ragged=ragged, n_bags=300, max_len=9
    )
    got = embtable.embedding_bag(
        table, indices, offsets, mode=mode, padding_idx=padding_idx
    )
    want, _ = np_forward(table, indices, offsets, mode, padding_idx=padding_idx)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **tol(dtype))
    ref = _core.embedding_bag(
        table, indices, offsets, mode=mode, padding_idx=padding_idx, reference=True
    )
    np.testing.assert_array_equal(got, ref)  # fast path == scalar twin, bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [1, 5, 64, 130])
def test_weighted_sum_and_simd_levels_bitwise(dtype, D):
    rng = np.random.default_rng(D)
    table, indices, offsets = make_case(
        rng, 30, D, dtype, ragged=True, n_bags=50, max_len=7
    )
    w = rng.standard_normal(indices.shape).astype(dtype)
    ref = _core.embedding_bag(
        table,
        indices,
        offsets,
        mode="sum",
        per_sample_weights=w,
        padding_idx=2,
        reference=True,
    )
    want, _ = np_forward(table, indices, offsets, "sum", w, padding_idx=2)
    np.testing.assert_allclose(ref, want, **tol(dtype))
    before = _core.get_simd_level()
    try:
        for level in embtable.show_config(mode="dicts")["simd"]["compiled"]:
            try:
                _core.set_simd_level(level)
            except ValueError:
                continue  # this CPU lacks it
            for mode in MODES:
                ww = w if mode == "sum" else None
                got, arg = _bag.embedding_bag_forward(
                    table,
                    indices,
                    offsets,
                    mode=mode,
                    per_sample_weights=ww,
                    padding_idx=2,
                )
                r, ra = _core.embedding_bag(
                    table,
                    indices,
                    offsets,
                    mode=mode,
                    per_sample_weights=ww,
                    padding_idx=2,
                    return_argmax=True,
                    reference=True,
                )
                np.testing.assert_array_equal(got, r, err_msg=f"{level} {mode}")
                if mode == "max":
                    np.testing.assert_array_equal(arg, ra)
    finally:
        _core.set_simd_level(before)


def test_max_ties_pick_first_in_bag_order_and_argmax():
    table = np.array([[1, 5], [1, 5], [0, 7], [2, -1]], dtype=np.float32)
    out, arg = _bag.embedding_bag_forward(
        table, [[0, 1, 2], [1, 0, 2], [3, 3, 3]], mode="max"
    )
    np.testing.assert_array_equal(out, [[1, 7], [1, 7], [2, -1]])
    np.testing.assert_array_equal(arg, [[0, 2], [1, 2], [3, 3]])


def test_max_nan_first_stays_as_torch():
    table = np.array([[1.0, np.nan], [2.0, 1.0]])
    a = embtable.embedding_bag(table, [[0, 1]], mode="max")
    b = embtable.embedding_bag(table, [[1, 0]], mode="max")
    np.testing.assert_array_equal(a, [[2.0, np.nan]])
    np.testing.assert_array_equal(b, [[2.0, 1.0]])


@pytest.mark.parametrize("mode", MODES)
def test_empty_bags_and_all_padding_give_zeros(mode):
    table = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    # offsets = [0, 0, 2, 2, 3] -> bags of 0, 2, 0, 1, 1 ids
    out, arg = _bag.embedding_bag_forward(
        table, [1, 2, 0, 0], [0, 0, 2, 2, 3], mode=mode, padding_idx=0
    )
    assert out.shape == (5, 3)
    for b in (0, 2, 3, 4):  # empty, empty, only padding, only padding
        np.testing.assert_array_equal(out[b], 0)
    if mode == "max":
        np.testing.assert_array_equal(arg[[0, 2, 3, 4]], -1)
    else:
        assert arg is None
    expected = {
        "sum": table[1] + table[2],
        "mean": (table[1] + table[2]) / 2,
        "max": np.maximum(table[1], table[2]),
    }[mode]
    np.testing.assert_allclose(out[1], expected)


@pytest.mark.parametrize("mode", MODES)
def test_zero_length_bags_zero_bags_and_D0(mode):
    table = np.ones((5, 4), dtype=np.float32)
    np.testing.assert_array_equal(
        embtable.embedding_bag(table, np.zeros((3, 0), np.int64), mode=mode),
        np.zeros((3, 4)),
    )
    assert embtable.embedding_bag(table, [], [], mode=mode).shape == (0, 4)
    assert embtable.embedding_bag(
        table, np.zeros((0, 5), np.int32), mode=mode
    ).shape == (0, 4)
    assert embtable.embedding_bag(np.ones((5, 0)), [[1, 2]], mode=mode).shape == (1, 0)
    np.testing.assert_array_equal(
        embtable.embedding_bag(np.empty((0, 2)), [], [0, 0], mode=mode),
        np.zeros((2, 2)),
    )


def test_include_last_offset():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((10, 4))
    idx = [1, 2, 3, 4, 5]
    a = embtable.embedding_bag(
        table, idx, [0, 2, 2, 5], mode="sum", include_last_offset=True
    )
    b = embtable.embedding_bag(table, idx, [0, 2, 2], mode="sum")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 4)
    # Ignored for 2-D indices, as in PyTorch.
    c = embtable.embedding_bag(
        table, [[1, 2], [3, 4]], mode="sum", include_last_offset=True
    )
    assert c.shape == (2, 4)


def test_out_is_written_and_returned_and_defaults():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((20, 8)).astype(np.float32)
    out = np.full((3, 8), 9.0, dtype=np.float32)
    res = embtable.embedding_bag(table, [[1, 2], [3, 4], [5, 5]], out=out)
    assert res is out
    np.testing.assert_allclose(
        out[0], (table[1] + table[2]) / 2, rtol=1e-6
    )  # default: mean


@pytest.mark.parametrize(
    "idx_dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64],
)
def test_index_and_offset_dtypes(idx_dtype):
    table = np.arange(12, dtype=np.float64).reshape(6, 2)
    got = embtable.embedding_bag(
        table,
        np.array([1, 2, 5], dtype=idx_dtype),
        np.array([0, 1], dtype=idx_dtype),
        mode="sum",
    )
    np.testing.assert_array_equal(got, [table[1], table[2] + table[5]])


def test_readonly_and_noncontiguous_inputs():
    rng = np.random.default_rng(3)
    table = rng.standard_normal((30, 6)).astype(np.float32)
    table.flags.writeable = False
    idx = rng.integers(0, 30, size=(8, 10))[:, ::2]  # non-contiguous indices
    w = rng.standard_normal((8, 10)).astype(np.float32)[:, ::2]
    got = embtable.embedding_bag(table, idx, mode="sum", per_sample_weights=w)
    want, _ = np_forward(
        table, np.ascontiguousarray(idx), None, "sum", np.ascontiguousarray(w)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_forward_is_thread_count_independent():
    rng = np.random.default_rng(4)
    table, indices, offsets = make_case(
        rng, 500, 48, np.float32, ragged=True, n_bags=2000, max_len=12
    )
    before = embtable.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3, 4):
            embtable.set_num_threads(n)
            results.append(
                [
                    embtable.embedding_bag(
                        table, indices, offsets, mode=m, padding_idx=0
                    )
                    for m in MODES
                ]
            )
    finally:
        embtable.set_num_threads(before)
    for r in results[1:]:
        for a, b in zip(results[0], r, strict=True):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ragged", [False, True], ids=["fixed", "ragged"])
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_backward_dense_and_sparse(dtype, mode, ragged, padding_idx, threads):
    rng = np.random.default_rng(11)
    V = 60
    table, indices, offsets = make_case(
        rng, V, 40, dtype, ragged=ragged, n_bags=400, max_len=8
    )
    w = rng.standard_normal(indices.shape).astype(dtype) if mode == "sum" else None
    out, argmax = _bag.embedding_bag_forward(
        table,
        indices,
        offsets,
        mode=mode,
        per_sample_weights=w,
        padding_idx=padding_idx,
    )
    grad = rng.standard_normal(out.shape).astype(dtype)
    want = np_backward(grad, V, indices, offsets, mode, w, padding_idx, argmax=argmax)
    kw = dict(mode=mode, per_sample_weights=w, padding_idx=padding_idx, argmax=argmax)
    det = _bag.embedding_bag_backward(
        grad, indices, offsets, target=np.zeros_like(table), **kw
    )
    np.testing.assert_allclose(det, want, **tol(dtype))
    ref = _core.embedding_bag_backward(
        grad, indices, offsets, target=np.zeros_like(table), reference=True, **kw
    )
    np.testing.assert_array_equal(
        det, ref
    )  # deterministic == index-order oracle, bitwise
    atomic = _bag.embedding_bag_backward(
        grad, indices, offsets, target=np.zeros_like(table), deterministic=False, **kw
    )
    np.testing.assert_allclose(atomic, want, **tol(dtype))
    rows, values = _bag.embedding_bag_backward_sparse(
        grad, indices, offsets, num_embeddings=V, **kw
    )
    assert rows.dtype == np.int64 and values.dtype == dtype
    assert np.all(np.diff(rows) > 0)
    if padding_idx is not None:
        assert padding_idx not in rows
    np.testing.assert_array_equal(values, det[rows])  # bitwise the dense rows
    untouched = np.setdiff1d(np.arange(V), rows)
    np.testing.assert_array_equal(det[untouched], 0)
    if mode == "max":
        np.testing.assert_array_equal(rows, np.unique(argmax[argmax >= 0]))


def test_backward_accumulates_and_validates_first():
    table = np.ones((5, 2), dtype=np.float32)
    target = np.full((5, 2), 1.0, dtype=np.float32)
    _bag.embedding_bag_backward(
        np.ones((2, 2), np.float32), [[0, 1], [1, 4]], target=target, mode="sum"
    )
    np.testing.assert_array_equal(target, [[2, 2], [3, 3], [1, 1], [1, 1], [2, 2]])
    before = target.copy()
    with pytest.raises(IndexError, match=r"index 5 at position \(1, 1\)"):
        _bag.embedding_bag_backward(
            np.ones((2, 2), np.float32), [[0, 1], [1, 5]], target=target, mode="sum"
        )
    with pytest.raises(ValueError, match="argmax"):
        _bag.embedding_bag_backward(
            np.ones((2, 2), np.float32), [[0, 1], [1, 4]], target=target, mode="max"
        )
    with pytest.raises(ValueError, match="argmax entry 9"):
        _bag.embedding_bag_backward(
            np.ones((2, 2), np.float32),
            [[0, 1], [1, 4]],
            target=target,
            mode="max",
            argmax=np.array([[0, 9], [1, 1]]),
        )
    with pytest.raises(ValueError, match=r"grad_out has shape \(3, 2\)"):
        _bag.embedding_bag_backward(
            np.ones((3, 2), np.float32), [[0, 1], [1, 4]], target=target, mode="sum"
        )
    np.testing.assert_array_equal(target, before)
    del table


def test_backward_deterministic_bitwise_across_threads():
    rng = np.random.default_rng(5)
    V = 300
    # Skewed ids: many bags share hot rows.
    table = rng.standard_normal((V, 32)).astype(np.float32)
    indices = (rng.zipf(1.3, size=(3000, 10)) % V).astype(np.int64)
    grad = rng.standard_normal((3000, 32)).astype(np.float32)
    before = embtable.get_num_threads()
    try:
        for mode in MODES:
            _, argmax = _bag.embedding_bag_forward(
                table, indices, mode=mode, padding_idx=1
            )
            res = []
            for n in (1, 2, 3, 4):
                embtable.set_num_threads(n)
                res.append(
                    _bag.embedding_bag_backward(
                        grad,
                        indices,
                        target=np.zeros_like(table),
                        mode=mode,
                        padding_idx=1,
                        argmax=argmax,
                    )
                )
            for r in res[1:]:
                np.testing.assert_array_equal(res[0], r)
    finally:
        embtable.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_sample_weights_grad(dtype, threads):
    rng = np.random.default_rng(6)
    table, indices, offsets = make_case(
        rng, 50, 33, dtype, ragged=True, n_bags=300, max_len=9
    )
    grad = rng.standard_normal((300, 33)).astype(dtype)
    got = _bag.embedding_bag_per_sample_weights_backward(
        grad, table, indices, offsets, padding_idx=4
    )
    want = np_weights_grad(grad, table, indices, offsets, padding_idx=4)
    np.testing.assert_allclose(got, want, **tol(dtype))
    ref = _core.embedding_bag_per_sample_weights_backward(
        grad, table, indices, offsets, padding_idx=4, reference=True
    )
    np.testing.assert_array_equal(got, ref)
    assert np.all(got[indices == 4] == 0)


# --------------------------------------------------------------------------- errors


def bad_offsets_cases():
    # (indices, offsets, include_last_offset, message)
    return [
        ([1, 2, 3], [1, 2], False, r"offsets\[0\] = 1 .*must be 0"),
        (
            [1, 2, 3],
            [0, 2, 1],
            False,
            r"offsets\[2\] = 1 is less than offsets\[1\] = 2.*non-decreasing",
        ),
        (
            [1, 2, 3],
            [0, 4],
            False,
            r"offsets\[1\] = 4 is past the end of indices \(length 3\)",
        ),
        ([1, 2, 3], [0, -1], False, r"offsets\[1\] = -1 is less than offsets\[0\]"),
        ([1, 2, 3], [0, 1, 2], True, r"len\(indices\) = 3, got offsets\[2\] = 2"),
        ([1, 2, 3], [0, 1, 4], True, r"offsets\[2\] = 4 is past the end"),
        ([1, 2, 3], [], False, r"offsets is empty \(zero bags\) but indices has 3"),
        ([], [], True, r"include_last_offset=True needs at least one offset"),
        ([1, 2, 3], [0, 2**40], False, r"offsets\[1\] = 1099511627776 is past the end"),
        ([1, 2, 3], [-(2**62)], False, r"offsets\[0\] = -4611686018427387904"),
    ]


@pytest.mark.parametrize("case", bad_offsets_cases(), ids=lambda c: c[3][:30])
@pytest.mark.parametrize("mode", MODES)
def test_bad_offsets_raise_valueerror_before_any_write(case, mode):
    indices, offsets, last, msg = case
    table = np.ones((5, 3), dtype=np.float32)
    out = np.full((max(len(offsets) - last, 0), 3), 7.0, dtype=np.float32)
    with pytest.raises(ValueError, match=msg):
        embtable.embedding_bag(
            table, indices, offsets, mode=mode, include_last_offset=last, out=out
        )
    np.testing.assert_array_equal(out, 7.0)
    target = np.full((5, 3), 2.0, dtype=np.float32)
    grad = np.ones((max(len(offsets) - last, 0), 3), dtype=np.float32)
    with pytest.raises(ValueError, match=msg):
        _bag.embedding_bag_backward(
            grad,
            indices,
            offsets,
            target=target,
            mode=mode,
            include_last_offset=last,
            argmax=np.zeros(grad.shape, np.int64),
        )
    np.testing.assert_array_equal(target, 2.0)
    with pytest.raises(ValueError, match=msg):
        _bag.embedding_bag_backward_sparse(
            grad,
            indices,
            offsets,
            num_embeddings=5,
            mode=mode,
            include_last_offset=last,
            argmax=np.zeros(grad.shape, np.int64),
        )


def test_huge_uint64_offset_is_named_as_given():
    with pytest.raises(
        ValueError, match=r"offsets\[1\] = 18446744073709551615 is past"
    ):
        embtable.embedding_bag(
            np.ones((5, 3)), [0, 1, 2], np.array([0, 2**64 - 1], dtype=np.uint64)
        )


def test_first_bad_offset_is_named_whatever_the_rule():
    table = np.ones((5, 3))
    with pytest.raises(ValueError, match=r"offsets\[2\] = 9 is past the end"):
        embtable.embedding_bag(table, [0, 1, 2], [0, 1, 9, 2, 1])


@pytest.mark.parametrize("p", [2**63, -(2**63) - 1, 2**70, np.uint64(2**63)], ids=repr)
def test_padding_idx_beyond_int64_is_out_of_bounds(p):
    # Not pybind's "Unable to cast" RuntimeError: the same ValueError as 5 or -1.
    msg = re.escape(
        f"padding_idx {int(p)} is out of bounds for a table with 5 rows; "
        "it must be in [0, V)"
    )
    table = np.ones((5, 3), np.float32)
    out = np.full((1, 3), 7.0, np.float32)
    with pytest.raises(ValueError, match=msg):
        embtable.embedding_bag(table, [0, 1], [0], padding_idx=p, out=out)
    with pytest.raises(ValueError, match=msg):
        _bag.embedding_bag_forward(table, [[0, 1]], padding_idx=p, out=out)
    with pytest.raises(ValueError, match=msg):
        embtable.embedding_bag(
            embtable.quantize(table, "int8"), [[0, 1]], padding_idx=p, out=out
        )
    np.testing.assert_array_equal(out, 7.0)
    grad = np.ones((1, 3), np.float32)
    target = np.full((5, 3), 2.0, np.float32)
    for det in (True, False):
        with pytest.raises(ValueError, match=msg):
            _bag.embedding_bag_backward(
                grad, [[0, 1]], target=target, padding_idx=p, deterministic=det
            )
    np.testing.assert_array_equal(target, 2.0)
    with pytest.raises(ValueError, match=msg):
        _bag.embedding_bag_backward_sparse(
            grad, [[0, 1]], num_embeddings=5, padding_idx=p
        )
    with pytest.raises(ValueError, match=msg):
        _bag.embedding_bag_per_sample_weights_backward(
            grad, table, [[0, 1]], padding_idx=p
        )


def test_num_embeddings_beyond_int64():
    with pytest.raises(ValueError, match=r"num_embeddings must be < 2\*\*63, got"):
        _bag.embedding_bag_backward_sparse(
            np.ones((1, 3), np.float32), [[0, 1]], num_embeddings=2**63
        )
    with pytest.raises(TypeError, match="^num_embeddings must be an int, got float$"):
        _bag.embedding_bag_backward_sparse(
            np.ones((1, 3), np.float32), [[0, 1]], num_embeddings=5.0
        )
    with pytest.raises(ValueError, match=r"num_embeddings must be >= 0"):
        _bag.embedding_bag_backward_sparse(
            np.ones((1, 3), np.float32), [[0, 1]], num_embeddings=-1
        )


@pytest.mark.parametrize(
    "table", [[[1.0, 2.0]], np.float32(1), None], ids=["list", "scalar", "None"]
)
def test_table_must_be_an_array(table):
    # Not pybind's "incompatible function arguments" listing _core's signature,
    # and never a silent copy of the table into a new array.
    got = type(table).__name__
    quantized = re.escape(
        "table must be a numpy.ndarray (or a CPU array with __dlpack__, or a "
        f"QuantizedTable), got {got}"
    )
    float_only = re.escape(
        f"table must be a numpy.ndarray (or a CPU array with __dlpack__), got {got}"
    )
    out = np.full((1, 2), 7.0, np.float32)
    with pytest.raises(TypeError, match=f"^{quantized}$"):
        embtable.embedding_bag(table, [0], [0], out=out)
    with pytest.raises(TypeError, match=f"^{float_only}$"):
        _bag.embedding_bag_forward(table, [[0]], out=out)
    with pytest.raises(TypeError, match=f"^{float_only}$"):
        _bag.embedding_bag_per_sample_weights_backward(out, table, [[0]])
    np.testing.assert_array_equal(out, 7.0)


def test_shape_rules():
    table = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="offsets must be None when indices is 2-D"):
        embtable.embedding_bag(table, [[1, 2]], [0])
    with pytest.raises(ValueError, match="need offsets"):
        embtable.embedding_bag(table, [1, 2])
    with pytest.raises(ValueError, match="must be 2-D .* or 1-D with offsets"):
        embtable.embedding_bag(table, 3, [0])
    with pytest.raises(ValueError, match="must be 2-D .* or 1-D with offsets"):
        embtable.embedding_bag(table, np.zeros((2, 2, 2), np.int64))
    with pytest.raises(ValueError, match="offsets must be 1-D"):
        embtable.embedding_bag(table, [1, 2], [[0]])
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        embtable.embedding_bag(
            table, [[1, 2]], mode="mean", per_sample_weights=[[1.0, 2.0]]
        )
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        embtable.embedding_bag(
            table, [[1, 2]], mode="max", per_sample_weights=np.ones((1, 2), np.float32)
        )
    with pytest.raises(
        ValueError, match=r"per_sample_weights has shape \(2,\) but indices"
    ):
        embtable.embedding_bag(
            table, [[1, 2]], mode="sum", per_sample_weights=np.ones(2, np.float32)
        )
    with pytest.raises(ValueError, match=r"per_sample_weights has shape \(1, 3\)"):
        embtable.embedding_bag(
            table,
            [1, 2],
            [0],
            mode="sum",
            per_sample_weights=np.ones((1, 3), np.float32),
        )
    with pytest.raises(ValueError, match="mode must be 'sum', 'mean' or 'max'"):
        embtable.embedding_bag(table, [[1, 2]], mode="median")
    out = np.full((1, 3), 7.0, np.float32)
    for mode in (None, 1):  # not pybind's "incompatible function arguments"
        with pytest.raises(
            ValueError, match=rf"^mode must be 'sum', 'mean' or 'max', got {mode}$"
        ):
            embtable.embedding_bag(table, [[1, 2]], mode=mode, out=out)  # type: ignore[arg-type]
    assert (out == 7).all()
    for p in (-1, 5):
        with pytest.raises(ValueError, match=f"padding_idx {p} is out of bounds"):
            embtable.embedding_bag(table, [[1, 2]], padding_idx=p)
    with pytest.raises(
        ValueError, match=r"out has shape \(2, 3\) but \(num_bags, D\) is \(1, 3\)"
    ):
        embtable.embedding_bag(table, [[1, 2]], out=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((1, 3), np.float32)
        ro.flags.writeable = False
        embtable.embedding_bag(table, [[1, 2]], out=ro)


def test_type_rules():
    table = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="offsets must be an array of integers"):
        embtable.embedding_bag(table, [1, 2], [0.0])
    with pytest.raises(TypeError, match="indices must be an array of integers"):
        embtable.embedding_bag(table, [[1.5]])
    with pytest.raises(TypeError, match="per_sample_weights has dtype int64"):
        embtable.embedding_bag(
            table, [[1, 2]], mode="sum", per_sample_weights=np.ones((1, 2), np.int64)
        )
    with pytest.raises(
        TypeError, match="per_sample_weights has dtype float64 but table"
    ):
        embtable.embedding_bag(
            table, [[1, 2]], mode="sum", per_sample_weights=np.ones((1, 2))
        )
    with pytest.raises(TypeError, match="table has dtype int64"):
        embtable.embedding_bag(np.ones((5, 3), np.int64), [[1, 2]])
    with pytest.raises(TypeError, match="out has dtype float64 but table"):
        embtable.embedding_bag(table, [[1, 2]], out=np.zeros((1, 3)))
    with pytest.raises(TypeError, match="padding_idx must be an int"):
        embtable.embedding_bag(table, [[1, 2]], padding_idx=1.5)


def test_index_errors_name_position_and_leave_out_untouched():
    table = np.ones((5, 3), dtype=np.float32)
    out = np.full((2, 3), 4.0, dtype=np.float32)
    with pytest.raises(
        IndexError, match=r"index 5 at position \(1, 0\) is out of bounds"
    ):
        embtable.embedding_bag(table, [[1, 2], [5, -1]], out=out)
    with pytest.raises(IndexError, match=r"index -1 at position \(3,\)"):
        embtable.embedding_bag(table, [1, 2, 0, -1], [0, 2], out=out)
    np.testing.assert_array_equal(out, 4.0)


# --------------------------------------------------------------------------- torch


torch_cases = [
    (mode, ragged, pad, weighted, last)
    for mode in MODES
    for ragged in (False, True)
    for pad in (None, 2)
    for weighted in (False, True)
    for last in (False, True)
    if not (weighted and mode != "sum") and not (last and not ragged)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", torch_cases, ids=str)
def test_against_torch(case, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    mode, ragged, pad, weighted, last = case
    rng = np.random.default_rng(hash(case) % 2**32)
    V, D = 25, 19
    table, indices, offsets = make_case(
        rng, V, D, dtype, ragged=ragged, n_bags=60, max_len=7, last=last
    )
    w = rng.standard_normal(indices.shape).astype(dtype) if weighted else None
    out, argmax = _bag.embedding_bag_forward(
        table,
        indices,
        offsets,
        mode=mode,
        per_sample_weights=w,
        padding_idx=pad,
        include_last_offset=last,
    )
    t_table = torch.tensor(table, requires_grad=True)
    t_w = torch.tensor(w, requires_grad=True) if weighted else None
    t_out = F.embedding_bag(
        torch.from_numpy(indices),
        t_table,
        None if offsets is None else torch.from_numpy(offsets),
        mode=mode,
        per_sample_weights=t_w,
        padding_idx=pad,
        include_last_offset=last,
    )
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype))
    grad = rng.standard_normal(out.shape).astype(dtype)
    t_out.backward(torch.from_numpy(grad))
    kw = dict(
        mode=mode,
        per_sample_weights=w,
        padding_idx=pad,
        include_last_offset=last,
        argmax=argmax,
    )
    dense = _bag.embedding_bag_backward(
        grad, indices, offsets, target=np.zeros_like(table), **kw
    )
    np.testing.assert_allclose(dense, t_table.grad.numpy(), **tol(dtype))
    rows, values = _bag.embedding_bag_backward_sparse(
        grad, indices, offsets, num_embeddings=V, **kw
    )
    t_dense = t_table.grad.numpy()
    np.testing.assert_allclose(values, t_dense[rows], **tol(dtype))
    if weighted:
        gw = _bag.embedding_bag_per_sample_weights_backward(
            grad, table, indices, offsets, padding_idx=pad, include_last_offset=last
        )
        np.testing.assert_allclose(gw, t_w.grad.numpy(), **tol(dtype))


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    V=st.integers(1, 12),
    D=st.integers(0, 9),
    sizes=st.lists(st.integers(0, 6), max_size=12),
    mode=st.sampled_from(MODES),
    pad=st.one_of(st.none(), st.integers(0, 11)),
    seed=st.integers(0, 2**32 - 1),
    last=st.booleans(),
)
def test_property_ragged(V, D, sizes, mode, pad, seed, last):
    if pad is not None and pad >= V:
        pad = None
    if last and not sizes:
        sizes = [0]
    rng = np.random.default_rng(seed)
    table = rng.integers(-3, 4, size=(V, D)).astype(np.float64)  # small ints: many ties
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    if not last:
        offsets = offsets[:-1]
    indices = rng.integers(0, V, size=n)
    out, argmax = _bag.embedding_bag_forward(
        table, indices, offsets, mode=mode, padding_idx=pad, include_last_offset=last
    )
    want, want_arg = np_forward(
        table, indices, offsets, mode, padding_idx=pad, last=last
    )
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    if mode == "max":
        np.testing.assert_array_equal(argmax, want_arg)
    grad = rng.standard_normal(out.shape)
    got = _bag.embedding_bag_backward(
        grad,
        indices,
        offsets,
        target=np.zeros_like(table),
        mode=mode,
        padding_idx=pad,
        include_last_offset=last,
        argmax=argmax,
    )
    np.testing.assert_allclose(
        got,
        np_backward(grad, V, indices, offsets, mode, None, pad, last, argmax),
        rtol=1e-12,
        atol=1e-12,
    )


def test_sparse_backward_edge_cases():
    rows, values = _bag.embedding_bag_backward_sparse(
        np.ones((1, 3), np.float32),
        [[0, 0]],
        num_embeddings=5,
        mode="sum",
        padding_idx=0,
    )
    assert rows.shape == (0,) and values.shape == (0, 3) and values.dtype == np.float32
    rows, values = _bag.embedding_bag_backward_sparse(
        np.ones((0, 3)),
        np.zeros((0, 2), np.int64),
        num_embeddings=5,
        mode="max",
        argmax=np.zeros((0, 3), np.int64),
    )
    assert rows.shape == (0,) and values.shape == (0, 3) and values.dtype == np.float64
    rows, values = _bag.embedding_bag_backward_sparse(
        np.ones((1, 0), np.float32), [[1, 2, 1]], num_embeddings=5, mode="mean"
    )
    np.testing.assert_array_equal(rows, [1, 2])
    assert values.shape == (2, 0)
    # -0.0 survives exactly as in the dense backward (0 + -0.0 == +0.0 there too)
    grad = np.array([[-0.0, 1.0]], np.float32)
    rows, values = _bag.embedding_bag_backward_sparse(
        grad, [[3]], num_embeddings=5, mode="sum"
    )
    dense = _bag.embedding_bag_backward(
        grad, [[3]], target=np.zeros((5, 2), np.float32), mode="sum"
    )
    assert values.tobytes() == dense[rows].tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_full_blocks_ties_and_nan_match_the_oracle_at_every_simd_level(dtype):
    # D = 128: two full 64-column blocks (the vector path); small ints: many ties.
    rng = np.random.default_rng(12)
    table = rng.integers(-2, 3, size=(50, 128)).astype(dtype)
    table[3, 5] = table[7, 70] = np.nan
    ids = rng.integers(0, 50, size=(300, 9))
    ref, ref_arg = _core.embedding_bag(
        table, ids, mode="max", padding_idx=4, return_argmax=True, reference=True
    )
    before = _core.get_simd_level()
    try:
        for level in embtable.show_config(mode="dicts")["simd"]["compiled"]:
            try:
                _core.set_simd_level(level)
            except ValueError:
                continue
            out, arg = _bag.embedding_bag_forward(table, ids, mode="max", padding_idx=4)
            assert out.tobytes() == ref.tobytes(), level
            np.testing.assert_array_equal(arg, ref_arg)
    finally:
        _core.set_simd_level(before)
    clean = table.copy()
    clean[3, 5] = clean[7, 70] = 0  # NumPy's argmax treats NaN as the maximum
    want, want_arg = np_forward(clean, ids, mode="max", padding_idx=4)
    got, got_arg = _bag.embedding_bag_forward(clean, ids, mode="max", padding_idx=4)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_arg, want_arg)
