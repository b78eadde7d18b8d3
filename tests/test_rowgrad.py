"""RowGrad and the C++ coalesce / merge kernels against NumPy."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import RowGrad, _core
from hypothesis import given, settings
from hypothesis import strategies as st


def dense_grad(ids, g, V, padding_idx=None):
    out = np.zeros((V, g.shape[-1]), dtype=g.dtype)
    np.add.at(out, ids, g)
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
def test_coalesce_matches_add_at(dtype, idx_dtype):
    rng = np.random.default_rng(0)
    V, D = 50, 7
    ids = rng.integers(0, V, size=(13, 9)).astype(idx_dtype)
    g = rng.standard_normal((13, 9, D)).astype(dtype)
    rows, values = _core.rowgrad_coalesce(ids, g, V, -1)
    assert rows.dtype == np.int64 and values.dtype == dtype
    np.testing.assert_array_equal(rows, np.unique(ids))
    ref = dense_grad(ids, g, V)
    # Segments are added in index order, as np.add.at: bitwise equal.
    np.testing.assert_array_equal(values, ref[rows])


def test_coalesce_padding_and_empty():
    ids = np.array([3, 0, 3, 0, 1])
    g = np.arange(15, dtype=np.float32).reshape(5, 3)
    rows, values = _core.rowgrad_coalesce(ids, g, 4, 0)
    np.testing.assert_array_equal(rows, [1, 3])
    np.testing.assert_array_equal(values, [g[4], g[0] + g[2]])
    rows, values = _core.rowgrad_coalesce(
        np.zeros((0,), np.int64), np.zeros((0, 3), np.float32), 4
    )
    assert rows.shape == (0,) and values.shape == (0, 3)


def test_coalesce_many_threads_large_V():
    rng = np.random.default_rng(1)
    V, D = 3_000_000, 4  # 22 bits: three radix passes
    ids = rng.integers(0, V, size=20_000)
    ids[:100] = 7  # a long segment
    g = rng.standard_normal((20_000, D))
    embtable.set_num_threads(2)
    rows, values = _core.rowgrad_coalesce(ids, g, V, -1)
    uniq, inv = np.unique(ids, return_inverse=True)
    ref = np.zeros((uniq.size, D))
    np.add.at(ref, inv, g)
    np.testing.assert_array_equal(rows, uniq)
    np.testing.assert_array_equal(values, ref)


def test_coalesce_bad_index():
    with pytest.raises(IndexError, match="index 9 at position"):
        _core.rowgrad_coalesce(np.array([1, 9]), np.zeros((2, 2), np.float32), 5, -1)


@settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.integers(0, 30), max_size=20),
    b=st.lists(st.integers(0, 30), max_size=20),
)
def test_merge_is_sum(a, b):
    rng = np.random.default_rng(len(a) * 31 + len(b))
    V, D = 31, 3
    ga = rng.standard_normal((len(a), D))
    gb = rng.standard_normal((len(b), D))
    ra = RowGrad(*_core.rowgrad_coalesce(np.array(a, np.int64), ga, V))
    rb = RowGrad(*_core.rowgrad_coalesce(np.array(b, np.int64), gb, V))
    m = ra.merge(rb)
    np.testing.assert_allclose(
        m.to_dense(V), ra.to_dense(V) + rb.to_dense(V), rtol=1e-12
    )
    np.testing.assert_array_equal(
        m.indices, np.union1d(ra.indices, rb.indices).astype(np.int64)
    )
    assert (ra + rb).indices.tolist() == m.indices.tolist()


def test_rowgrad_validation_and_repr():
    with pytest.raises(ValueError, match="sorted"):
        RowGrad([3, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        RowGrad([1, 3], np.zeros((3, 2)))
    with pytest.raises(TypeError):
        RowGrad([1], np.zeros((1, 2), np.int32))
    g = RowGrad([1, 3], np.ones((2, 2), np.float32))
    assert "RowGrad(rows=2, width=2" in repr(g)
    assert len(g) == 2 and g.width == 2
    with pytest.raises(IndexError):
        g.to_dense(3)
    with pytest.raises(TypeError):
        g.merge(RowGrad([1], np.ones((1, 2), np.float64)))


@pytest.mark.parametrize(
    "ids", [[1.5, 4.9], [1.0, 4.0], np.array([False, True]), np.array([1, 2], object)]
)
def test_rowgrad_indices_must_be_integers(ids):
    # As in the functional core: no silent truncation of float or bool ids.
    with pytest.raises(
        TypeError, match="^RowGrad indices must be an array of integers"
    ):
        RowGrad(ids, np.ones((2, 3), np.float32))


def test_rowgrad_accepts_any_integer_dtype_and_empty():
    for dtype in (np.int8, np.uint16, np.int32, np.uint64):
        g = RowGrad(np.array([1, 4], dtype), np.ones((2, 3), np.float32))
        assert g.indices.dtype == np.int64 and g.indices.tolist() == [1, 4]
    assert RowGrad([], np.ones((0, 3))).indices.dtype == np.int64
    idx = np.array([0, 2], np.int64)
    assert RowGrad(idx, np.ones((2, 3))).indices is idx  # int64 is not copied


def test_rowgrad_uint64_beyond_int64_is_named_as_given():
    ids = np.array([1, 2**63 + 1, 2**64 - 1], np.uint64)
    with pytest.raises(
        ValueError,
        match=r"^RowGrad indices must be < 2\*\*63, got 9223372036854775809$",
    ):
        RowGrad(ids, np.ones((3, 2), np.float32))


def test_rowgrad_byteswapped_values_are_a_value_error():
    with pytest.raises(
        ValueError, match=r"non-native byte order \(>f4\).*ascontiguous"
    ):
        RowGrad([1, 2], np.ones((2, 3), ">f4"))
    with pytest.raises(TypeError, match="float32 or float64, got >f2"):
        RowGrad([1, 2], np.ones((2, 3), ">f2"))


def test_rowgrad_add_and_sum():
    a = RowGrad([1], np.ones((1, 3), np.float32))
    b = RowGrad([1, 2], np.full((2, 3), 2.0, np.float32))
    total = sum([a, b])
    assert isinstance(total, RowGrad)
    np.testing.assert_array_equal(total.to_dense(4), a.to_dense(4) + b.to_dense(4))
    single = sum([a])
    assert single is not a and single.indices is not a.indices
    np.testing.assert_array_equal(single.to_dense(4), a.to_dense(4))
    assert a.__add__(0) is NotImplemented and a.__radd__(1) is NotImplemented
    for other in (0, 1, np.zeros((4, 3), np.float32), "x"):
        with pytest.raises(TypeError):
            a + other  # noqa: B018
    for other in (1, True, 0.0):
        with pytest.raises(TypeError):
            other + a  # noqa: B018
    with pytest.raises(TypeError, match="can only merge a RowGrad, got int"):
        a.merge(0)  # type: ignore[arg-type]


@pytest.mark.parametrize("padding_idx", [-1, 2])
def test_coalesce_matches_scalar_ref(padding_idx):
    rng = np.random.default_rng(9)
    ids = rng.integers(0, 20, size=(30, 3)).astype(np.int32)
    g = rng.standard_normal((30, 3, 5)).astype(np.float32)
    rows, values = _core.rowgrad_coalesce(ids, g, 20, padding_idx)
    rrows, rvalues = _core.rowgrad_coalesce_ref(ids, g, 20, padding_idx)
    np.testing.assert_array_equal(rows, rrows)
    np.testing.assert_array_equal(values, rvalues)


# (norm_type, max_norm): the -inf norm (min |x|) and p = -1 are small, 0 counts.
@pytest.mark.parametrize(
    ("p", "max_norm"),
    [
        (1.0, 1.0),
        (2.0, 1.0),
        (2.5, 1.0),
        (np.inf, 1.0),
        (-np.inf, 0.05),
        (0.0, 10.0),
        (0.5, 1.0),
        (-1.0, 0.01),
    ],
)
def test_renorm_matches_scalar_ref_and_numpy_norm(p, max_norm):
    rng = np.random.default_rng(10)
    t = rng.standard_normal((3000, 16))
    t[::5, ::3] = 0  # zeros count for p = 0 and make the p = -1 norm 0
    ids = rng.integers(0, 3000, size=4000)
    a, b = t.copy(), t.copy()
    embtable.set_num_threads(2)
    _core.embedding_renorm(a, ids, max_norm, p)
    _core.embedding_renorm_ref(b, ids, max_norm, p)
    np.testing.assert_array_equal(a, b)
    expected = t.copy()
    for r in np.unique(ids):
        with np.errstate(divide="ignore"):  # |0| ** -1
            n = np.linalg.norm(t[r], ord=p)
        if n > max_norm:
            expected[r] = t[r] * (max_norm / (n + 1e-7))
    np.testing.assert_allclose(a, expected, rtol=1e-12, atol=0)
    assert not np.array_equal(a, t)


@pytest.mark.parametrize(
    ("V", "n", "dist"),
    [
        (7, 5, "uniform"),  # fewer ids than radix buckets: the comparison sort
        (1_000, 300_000, "uniform"),  # one pass, chunks over two threads
        (5_000_000, 200_000, "uniform"),  # several passes
        (5_000_000, 100_000, "narrow"),  # ids in a narrow window of a big table
        (100_000, 200_000, "zipf"),  # hot rows: long segments
        (100_000, 50_000, "same"),  # one id: every pass skipped
    ],
)
@pytest.mark.parametrize("padding_idx", [-1, 3])
def test_coalesce_sort_paths_match_scalar_ref(V, n, dist, padding_idx):
    rng = np.random.default_rng(n)
    if dist == "uniform":
        ids = rng.integers(0, V, n)
    elif dist == "narrow":
        ids = rng.integers(V // 2, V // 2 + 3_000, n)
    elif dist == "zipf":
        ids = np.minimum(rng.zipf(1.2, n) - 1, V - 1)
    else:
        ids = np.full(n, 3 if padding_idx < 0 else 4)
    ids[::97] = 3  # some padding ids when padding_idx == 3
    g = rng.standard_normal((n, 2)).astype(np.float32)
    ref_rows, ref_values = _core.rowgrad_coalesce_ref(ids, g, V, padding_idx)
    for threads in (1, 2):
        embtable.set_num_threads(threads)
        rows, values = _core.rowgrad_coalesce(ids.astype(np.int32), g, V, padding_idx)
        np.testing.assert_array_equal(rows, ref_rows)
        # The same additions in the same order: the same bits.
        assert values.tobytes() == ref_values.tobytes()


def test_coalesce_ids_beyond_packed_range():
    # Ids whose range and positions need more than 64 bits together take the
    # pair-sort fallback: the same result.
    V = 1 << 62
    ids = np.array([V - 1, 5, V - 1, 0, 5, 1 << 40], dtype=np.int64)
    g = np.arange(12, dtype=np.float64).reshape(6, 2)
    rows, values = _core.rowgrad_coalesce(ids, g, V, -1)
    np.testing.assert_array_equal(rows, [0, 5, 1 << 40, V - 1])
    np.testing.assert_array_equal(
        values, [[6, 7], [2 + 8, 3 + 9], [10, 11], [0 + 4, 1 + 5]]
    )


@pytest.mark.parametrize("bits", [1, 8, 12])
def test_coalesce_any_radix_digit_width(bits):
    # The digit width comes from the machine (tuning radix_bits, from L1); every
    # width gives the same rows and bits (more or fewer passes).
    rng = np.random.default_rng(bits)
    V, n = 3_000_000, 50_000
    ids = rng.integers(0, V, n)
    ids[:1000] = 17
    g = rng.standard_normal((n, 3)).astype(np.float32)
    ref_rows, ref_values = _core.rowgrad_coalesce_ref(ids, g, V, -1)
    before = embtable.show_config(mode="dicts")["tuning"]
    try:
        _core.set_tuned("radix_bits", bits, "test")
        shown = embtable.show_config(mode="dicts")["tuning"]["radix_bits"]
        assert shown == {"value": bits, "source": "test"}
        for threads in (1, 2):
            embtable.set_num_threads(threads)
            rows, values = _core.rowgrad_coalesce(ids, g, V, -1)
            np.testing.assert_array_equal(rows, ref_rows)
            assert values.tobytes() == ref_values.tobytes()
    finally:
        _core.reset_tuning()  # then the calibrated values the session had
        for name, item in before.items():
            if item["source"] not in ("derived", "sysfs", "sysconf", "fallback"):
                _core.set_tuned(name, item["value"], item["source"])
        assert embtable.show_config(mode="dicts")["tuning"] == before
