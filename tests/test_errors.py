"""Every row of API.md's Errors table: the right type and message, and nothing written."""

from __future__ import annotations

import re

import embtable
import numpy as np
import pytest


@pytest.fixture
def table(rng):
    return rng.standard_normal((5, 4)).astype(np.float32)


def _unchanged(fn, arr, exc, match=None):
    """Call fn, expect exc, and check `arr` is bit-for-bit unchanged."""
    before = arr.tobytes()
    with pytest.raises(exc, match=match):
        fn()
    assert arr.tobytes() == before


# --- out-of-bounds indices -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint32, np.uint64])
def test_first_bad_index_named_with_position(table, dtype):
    ids = np.array([[0, 1], [2, 3], [4, 0], [1, 10]], dtype=dtype)
    ids[3, 0] = 9  # two bad ones: (3, 0) comes first in C order
    out = np.full((4, 2, 4), 7.0, np.float32)
    msg = "index 9 at position (3, 0) is out of bounds for a table with 5 rows"
    _unchanged(
        lambda: embtable.gather(table, ids, out=out), out, IndexError, re.escape(msg)
    )
    target = table.copy()
    upd = np.ones((4, 2, 4), np.float32)
    for det in (True, False):
        _unchanged(
            lambda det=det: embtable.scatter_add(target, ids, upd, deterministic=det),
            target,
            IndexError,
            re.escape(msg),
        )


def test_negative_index_is_an_error(table):
    target = table.copy()
    msg = "index -1 at position (2,) is out of bounds for a table with 5 rows"
    _unchanged(
        lambda: embtable.scatter_add(target, [0, 1, -1], np.ones((3, 4), np.float32)),
        target,
        IndexError,
        re.escape(msg),
    )
    with pytest.raises(IndexError, match=re.escape(msg)):
        embtable.gather(table, np.array([0, 1, -1], np.int32))


def test_zero_d_index_position(table):
    with pytest.raises(IndexError, match=re.escape("index 5 at position () is out of")):
        embtable.gather(table, 5)


def test_uint64_above_int64_max_is_named_as_given(table):
    big = 2**64 - 1
    ids = np.array([1, big, 3], dtype=np.uint64)
    target = table.copy()
    msg = f"index {big} at position (1,) is out of bounds for a table with 5 rows"
    with pytest.raises(IndexError, match=re.escape(msg)):
        embtable.gather(table, ids)
    _unchanged(
        lambda: embtable.scatter_add(target, ids, np.ones((3, 4), np.float32)),
        target,
        IndexError,
        re.escape(msg),
    )


def test_bad_index_found_in_a_large_array(rng):
    """The parallel validation pass still reports the smallest bad position."""
    table = np.zeros((100, 8), np.float32)
    ids = rng.integers(0, 100, size=1_000_000)
    ids[[700_001, 300_007, 999_999]] = [100, -5, 1000]
    embtable.set_num_threads(4)
    target = table.copy()
    msg = "index -5 at position (300007,) is out of bounds for a table with 100 rows"
    _unchanged(
        lambda: embtable.scatter_add(target, ids, np.ones((ids.size, 8), np.float32)),
        target,
        IndexError,
        re.escape(msg),
    )


# --- index dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [
        np.array([1.0, 2.0]),
        np.array([], dtype=np.float64),
        np.array([True, False]),
        np.array([1 + 0j]),
        np.array([1, 2], dtype=object),
        [1.5],
        np.array(["1"]),
    ],
)
def test_non_integer_indices_type_error(table, ids):
    out = np.zeros((len(ids), 4), np.float32)
    _unchanged(lambda: embtable.gather(table, ids, out=out), out, TypeError, "integer")
    target = table.copy()
    _unchanged(
        lambda: embtable.scatter_add(target, ids, np.zeros((len(ids), 4), np.float32)),
        target,
        TypeError,
        "integer",
    )


# --- float dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [np.float16, np.int32, np.int64, np.bool_, object, np.complex64, np.longdouble],
)
def test_unsupported_table_dtype(dtype):
    table = np.zeros((3, 2), dtype=dtype)
    with pytest.raises(TypeError, match="float32 and float64"):
        embtable.gather(table, [0])
    with pytest.raises(TypeError, match="float32 and float64"):
        embtable.scatter_add(table, [0], np.zeros((1, 2), np.float32))


def test_unsupported_updates_and_out_dtype(table):
    target = table.copy()
    _unchanged(
        lambda: embtable.scatter_add(target, [0], np.zeros((1, 4), np.int64)),
        target,
        TypeError,
        "int64",
    )
    out = np.zeros((1, 4), np.float16)
    _unchanged(lambda: embtable.gather(table, [0], out=out), out, TypeError, "float16")


def test_mixed_float_dtypes(table):
    target = table.copy()
    _unchanged(
        lambda: embtable.scatter_add(target, [0], np.zeros((1, 4), np.float64)),
        target,
        TypeError,
        "float64.*float32",
    )
    out = np.zeros((1, 4), np.float64)
    _unchanged(
        lambda: embtable.gather(table, [0], out=out), out, TypeError, "float64.*float32"
    )


# --- shapes --------------------------------------------------------------------------------


def test_table_not_2d():
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        embtable.gather(np.zeros(3, np.float32), [0])
    with pytest.raises(ValueError, match=re.escape("(2, 2, 2)")):
        embtable.scatter_add(
            np.zeros((2, 2, 2), np.float32), [0], np.zeros((1, 2), np.float32)
        )


def test_updates_shape_must_match_exactly(table):
    target = table.copy()
    for bad in [(3, 4), (2, 1), (4,), (1, 2, 4)]:
        _unchanged(
            lambda bad=bad: embtable.scatter_add(
                target, [0, 1], np.zeros(bad, np.float32)
            ),
            target,
            ValueError,
            re.escape(str(bad)) + ".*" + re.escape("(2, 4)"),
        )


def test_out_shape(table):
    out = np.zeros((2, 3), np.float32)
    _unchanged(
        lambda: embtable.gather(table, [0, 1], out=out),
        out,
        ValueError,
        re.escape("(2, 3)") + ".*" + re.escape("(2, 4)"),
    )


# --- in-place buffers ------------------------------------------------------------------------


def test_readonly_target_and_out(table):
    target = table.copy()
    target.flags.writeable = False
    _unchanged(
        lambda: embtable.scatter_add(target, [0], np.ones((1, 4), np.float32)),
        target,
        ValueError,
        "read-only",
    )
    out = np.zeros((1, 4), np.float32)
    out.flags.writeable = False
    _unchanged(
        lambda: embtable.gather(table, [0], out=out), out, ValueError, "read-only"
    )


def test_non_contiguous_target_and_out(table):
    big = np.zeros((5, 8), np.float32)
    target = big[:, ::2]
    _unchanged(
        lambda: embtable.scatter_add(target, [0], np.ones((1, 4), np.float32)),
        big,
        ValueError,
        "C-contiguous",
    )
    out_big = np.zeros((2, 8), np.float32)
    _unchanged(
        lambda: embtable.gather(table, [0, 1], out=out_big[:, ::2]),
        out_big,
        ValueError,
        "C-contiguous",
    )


def test_non_contiguous_table_says_how_to_fix():
    table = np.zeros((4, 6), np.float32)[:, ::2]
    with pytest.raises(
        ValueError, match=re.escape("np.ascontiguousarray(x, dtype=np.float32)")
    ):
        embtable.gather(table, [0])
    with pytest.raises(ValueError, match="C-contiguous"):
        embtable.gather(np.asfortranarray(np.zeros((4, 3), np.float32)), [0])


def test_byteswapped_floats_say_how_to_fix(table):
    fix = re.escape("np.ascontiguousarray(x, dtype=np.float32)")
    swapped = table.astype(">f4")
    with pytest.raises(ValueError, match=fix):
        embtable.gather(swapped, [0])
    with pytest.raises(ValueError, match=fix):
        embtable.scatter_add(swapped, [0], np.ones((1, 4), ">f4"))
    target = table.copy()
    _unchanged(
        lambda: embtable.scatter_add(target, [0], np.ones((1, 4), ">f4")),
        target,
        ValueError,
        fix,
    )


def test_target_must_be_an_ndarray():
    msg = r"^target must be a numpy\.ndarray \(it is written in place\), got "
    with pytest.raises(TypeError, match=msg + "list$"):
        embtable.scatter_add([[0.0, 0.0]], [0], np.ones((1, 2)))
    with pytest.raises(TypeError, match=msg + "float64$"):
        embtable.scatter_add(np.float64(0), [0], np.ones((1, 2)))
    with pytest.raises(TypeError, match="ndarray"):
        embtable.gather(np.zeros((2, 2)), [0], out=[[0.0, 0.0]])


@pytest.mark.parametrize(
    "table", [[[1.0, 2.0]], np.float32(1), None], ids=["list", "scalar", "None"]
)
def test_table_must_be_an_array(table):
    # Not pybind's "incompatible function arguments" listing _core's signature,
    # and never a silent copy of the table into a new array.
    msg = re.escape(
        "table must be a numpy.ndarray (or a CPU array with __dlpack__, or a "
        f"QuantizedTable), got {type(table).__name__}"
    )
    out = np.full((1, 2), 7.0, np.float32)
    with pytest.raises(TypeError, match=f"^{msg}$"):
        embtable.gather(table, [0])
    with pytest.raises(TypeError, match=f"^{msg}$"):
        embtable.gather(table, np.array([0]), out=out)
    np.testing.assert_array_equal(out, 7.0)


# --- overlap -----------------------------------------------------------------------------------


def test_out_overlapping_table():
    table = np.zeros((6, 4), np.float32)
    before = table.tobytes()
    with pytest.raises(ValueError, match="overlaps"):
        embtable.gather(table, [0, 1], out=table[2:4])
    assert table.tobytes() == before


def test_updates_overlapping_target(rng):
    target = rng.standard_normal((6, 4)).astype(np.float32)
    _unchanged(
        lambda: embtable.scatter_add(target, [0, 1], target[4:6]),
        target,
        ValueError,
        "overlaps",
    )
    _unchanged(
        lambda: embtable.scatter_add(target, [0, 1], target[::3]),
        target,
        ValueError,
        "overlaps",
    )


def test_interleaved_views_that_share_no_element_are_not_an_overlap():
    # The byte ranges interleave (rows 0 and 2 around row 1) but no element is
    # shared (np.shares_memory is False): as np.add.at / np.take, not an error.
    buf = np.zeros((4, 8), np.float32)
    buf[0], buf[2] = 1, 2
    target, updates = buf[1:2], buf[::2][:2]
    assert not np.shares_memory(target, updates)
    want = target.copy()
    np.add.at(want, [0, 0], updates)
    for det in (True, False):
        target[...] = 0
        assert (
            embtable.scatter_add(target, [0, 0], updates, deterministic=det) is target
        )
        np.testing.assert_array_equal(target, want)
    np.testing.assert_array_equal(buf[[0, 2, 3]], [[1] * 8, [2] * 8, [0] * 8])
    # the same buffer with elements shared is still refused, nothing written
    before = buf.tobytes()
    with pytest.raises(ValueError, match="updates overlaps target in memory"):
        embtable.scatter_add(buf[1:3], [0, 0], buf[::2][:2])
    assert buf.tobytes() == before


def test_overlap_numpy_cannot_decide_is_refused(monkeypatch):
    # np.shares_memory's TooHardError (its work bound hit) counts as an overlap.
    buf = np.zeros((4, 8), np.float32)
    target, updates = buf[1:2], buf[::2][:2]
    calls = []

    def too_hard(a, b, max_work=None):
        calls.append(max_work)
        raise np.exceptions.TooHardError("Exceeded max_work")

    monkeypatch.setattr(np, "shares_memory", too_hard)
    with pytest.raises(ValueError, match="updates overlaps target in memory"):
        embtable.scatter_add(target, [0, 0], updates)
    assert calls and calls[0] > 0  # bounded work, never the unbounded default
    assert not buf.any()
    # disjoint byte ranges never ask NumPy
    calls.clear()
    embtable.scatter_add(buf[3:4], [0, 0], updates)
    assert calls == []


def test_strided_views_of_one_buffer_overlap_exactly_when_numpy_says_so(rng):
    # The refusal follows np.shares_memory, not the arrays' byte ranges.
    for start, step, t0, rows in [
        (0, 2, 1, 1),  # even rows around an odd row: disjoint
        (0, 3, 1, 2),  # rows 0, 3, 6 around rows 1-2: disjoint
        (0, 3, 2, 2),  # rows 0, 3, 6 around rows 2-3: row 3 shared
        (1, 2, 2, 1),  # odd rows around row 2: disjoint
        (1, 2, 3, 1),  # odd rows around row 3: shared
    ]:
        buf = rng.standard_normal((8, 4)).astype(np.float32)
        updates = buf[start::step][:3]
        target = buf[t0 : t0 + rows]
        ids = rng.integers(0, rows, 3)
        if np.shares_memory(target, updates):
            before = buf.tobytes()
            with pytest.raises(ValueError, match="updates overlaps target in memory"):
                embtable.scatter_add(target, ids, updates)
            assert buf.tobytes() == before
        else:
            want = buf.copy()
            np.add.at(want[t0 : t0 + rows], ids, updates.copy())
            embtable.scatter_add(target, ids, updates, deterministic=True)
            np.testing.assert_array_equal(buf, want)


def test_indices_overlapping_out():
    buf = np.zeros(16, np.int64)
    out = buf[8:].view(np.float64).reshape(2, 4)
    ids = buf[:2]
    table = np.zeros((3, 4))
    with pytest.raises(ValueError, match="overlaps"):
        embtable.gather(table, buf[6:8], out=buf[4:12].view(np.float64).reshape(2, 4))
    embtable.gather(table, ids, out=out)  # disjoint halves of one buffer are fine


# --- threads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1])
def test_set_num_threads_rejects_non_positive(n):
    with pytest.raises(ValueError, match=">= 1"):
        embtable.set_num_threads(n)


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError):
        embtable.set_num_threads(2.5)
