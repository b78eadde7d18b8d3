"""embedding_bags: many tables in one call.

Oracle: the concatenation of the per-table ``embedding_bag`` calls (bitwise), and
the core's scalar ``_ref`` path, at every SIMD level and thread count.
"""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import _core
from simd_levels import LEVELS

FORMATS = ["int8", "int4", "float16", "bfloat16"]
MODES = ["sum", "mean", "max"]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(
        np.uint32 if a.dtype == np.float32 else np.uint64
    )


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> str:
    _core.set_simd_level(request.param)  # conftest restores it
    return request.param


def make_tables(rng, T, B, dtype=np.float32, quantized=True):
    tables, ids, offs, ws = [], [], [], []
    for t in range(T):
        V = int(rng.integers(1, 300))
        D = int(rng.integers(0, 80)) if t else int(rng.integers(1, 80))
        f = rng.standard_normal((V, D)).astype(dtype)
        if quantized and t % 2 == 1:
            tables.append(embtable.quantize(f, FORMATS[(t // 2) % 4]))
        else:
            tables.append(f)
        n = int(rng.integers(0, 30 * B)) if B else 0  # zero bags: no ids
        ids.append(rng.integers(0, V, n).astype(np.int32 if t % 3 == 0 else np.int64))
        o = np.sort(rng.integers(0, n + 1, B))
        if B:
            o[0] = 0
        offs.append(o)
        ws.append(rng.standard_normal(n).astype(np.float32 if quantized else dtype))
    return tables, ids, offs, ws


def concat(tables, ids, offs, **kw):
    per = []
    for t in range(len(tables)):
        k = dict(kw)
        if isinstance(k.get("per_sample_weights"), list):
            k["per_sample_weights"] = k["per_sample_weights"][t]
        if isinstance(k.get("padding_idx"), list):
            k["padding_idx"] = k["padding_idx"][t]
        per.append(embtable.embedding_bag(tables[t], ids[t], offs[t], **k))
    return np.concatenate(per, axis=1)


@pytest.mark.parametrize("mode", MODES)
def test_equals_concatenation_of_per_table_calls(rng, mode, level):
    for B in (0, 1, 37, 300):
        tables, ids, offs, _ = make_tables(rng, 7, B)
        got = embtable.embedding_bags(tables, ids, offs, mode=mode)
        want = concat(tables, ids, offs, mode=mode)
        assert got.shape == (B, sum(t.shape[1] for t in tables))
        np.testing.assert_array_equal(bits(got), bits(want))
        pads = [int(t.shape[0]) // 2 for t in tables]
        got = embtable.embedding_bags(tables, ids, offs, mode=mode, padding_idx=pads)
        np.testing.assert_array_equal(
            bits(got), bits(concat(tables, ids, offs, mode=mode, padding_idx=pads))
        )
        packed = [
            t._packed() if isinstance(t, embtable.QuantizedTable) else t for t in tables
        ]
        ref = _core.embedding_bags(
            packed,
            ids,
            [o.astype(np.int64) for o in offs],
            mode=mode,
            per_sample_weights=[None] * 7,
            padding_idx=pads,
            reference=True,
        )
        np.testing.assert_array_equal(bits(got), bits(ref))


def test_weights_scalar_padding_and_last_offset(rng, level):
    tables, ids, offs, ws = make_tables(rng, 5, 50)
    got = embtable.embedding_bags(
        tables, ids, offs, per_sample_weights=ws, padding_idx=0
    )
    want = concat(tables, ids, offs, mode="sum", per_sample_weights=ws, padding_idx=0)
    np.testing.assert_array_equal(bits(got), bits(want))
    last = [np.append(o, len(i)) for o, i in zip(offs, ids, strict=True)]
    got = embtable.embedding_bags(
        tables, ids, last, mode="mean", include_last_offset=True
    )
    want = concat(tables, ids, last, mode="mean", include_last_offset=True)
    np.testing.assert_array_equal(bits(got), bits(want))
    ws_some = [w if t % 2 else None for t, w in enumerate(ws)]
    got = embtable.embedding_bags(tables, ids, offs, per_sample_weights=ws_some)
    want = concat(tables, ids, offs, mode="sum", per_sample_weights=ws_some)
    np.testing.assert_array_equal(bits(got), bits(want))


def test_float64_tables_and_fixed_bags(rng):
    tables = [rng.standard_normal((V, D)) for V, D in [(10, 3), (4, 8), (100, 1)]]
    ids = [rng.integers(0, t.shape[0], (20, 4)) for t in tables]
    for mode in MODES:
        got = embtable.embedding_bags(tables, ids, mode=mode)
        assert got.dtype == np.float64 and got.shape == (20, 12)
        np.testing.assert_array_equal(got, concat(tables, ids, [None] * 3, mode=mode))
    lists = embtable.embedding_bags(
        tables, [i.tolist() for i in ids], [None, None, None]
    )
    np.testing.assert_array_equal(lists, concat(tables, ids, [None] * 3, mode="sum"))


def test_threads_and_out(rng):
    tables, ids, offs, _ = make_tables(rng, 26, 400)
    want = concat(tables, ids, offs, mode="sum")
    out = np.empty_like(want)
    assert embtable.embedding_bags(tables, ids, offs, out=out) is out
    np.testing.assert_array_equal(bits(out), bits(want))
    for n in (1, 2, 3, 5):
        embtable.set_num_threads(n)
        np.testing.assert_array_equal(
            bits(embtable.embedding_bags(tables, ids, offs)), bits(want)
        )


def test_errors_name_the_table(rng):
    tables = [
        np.zeros((5, 2), np.float32),
        embtable.quantize(np.ones((7, 4), np.float32), "int8"),
        np.zeros((5, 3), np.float32),
    ]
    ids = [np.array([0, 1]), np.array([1, 2, 3]), np.array([0, 1, 2, 3, 9])]
    offs = [np.array([0, 1]), np.array([0, 2]), np.array([0, 2])]
    out = np.full((2, 9), 7.0, np.float32)
    with pytest.raises(
        IndexError,
        match=r"^tables\[2\]: index 9 at position \(4,\) is out of bounds for a table "
        r"with 5 rows$",
    ):
        embtable.embedding_bags(tables, ids, offs, out=out)
    assert (out == 7).all()
    with pytest.raises(IndexError, match=r"^tables\[0\]: index -1"):
        embtable.embedding_bags(tables, [[-1, 0], ids[1], ids[2]], offs, out=out)
    with pytest.raises(ValueError, match=r"^tables\[1\]: .*offsets"):
        embtable.embedding_bags(tables, ids, [offs[0], [1, 2], offs[2]], out=out)
    with pytest.raises(
        ValueError, match=r"^tables\[2\]: has 3 bags but tables\[0\] has 2"
    ):
        embtable.embedding_bags(tables, ids, [offs[0], offs[1], [0, 1, 2]])
    with pytest.raises(ValueError, match=r"^tables\[1\]: padding_idx 7"):
        embtable.embedding_bags(tables, ids, offs, padding_idx=[0, 7, 0])
    with pytest.raises(ValueError, match=r"^tables\[0\]: padding_idx 6"):
        embtable.embedding_bags(
            tables, ids, offs, padding_idx=6
        )  # a scalar applies to every table
    for p in (2**63, np.uint64(2**63), -(2**63) - 1):  # beyond int64: no cast error
        msg = rf"padding_idx {int(p)} is out of bounds for a table with \d rows;"
        with pytest.raises(ValueError, match=r"^tables\[1\]: " + msg):
            embtable.embedding_bags(tables, ids, offs, padding_idx=[0, p, 0], out=out)
        with pytest.raises(ValueError, match=r"^tables\[0\]: " + msg):
            embtable.embedding_bags(tables, ids, offs, padding_idx=p, out=out)
    assert (out == 7).all()
    with pytest.raises(TypeError, match=r"^tables\[1\]: gives float64"):
        embtable.embedding_bags([tables[0], np.zeros((5, 2))], ids[:2], offs[:2])
    with pytest.raises(TypeError, match=r"^tables\[0\]: .*float32"):
        embtable.embedding_bags([np.zeros((5, 2), np.int32)], ids[:1], offs[:1])
    with pytest.raises(TypeError, match=r"^tables\[1\]"):
        embtable.embedding_bags([tables[0], [[1.0]]], ids[:2], offs[:2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^tables\[1\]"):
        embtable.embedding_bags(tables, [ids[0], ids[1].astype(float), ids[2]], offs)
    with pytest.raises(ValueError, match=r"^tables\[0\]: per_sample_weights"):
        embtable.embedding_bags(
            tables,
            ids,
            offs,
            mode="max",
            per_sample_weights=[np.ones(2, np.float32), None, None],
        )
    with pytest.raises(TypeError, match=r"^tables\[1\]"):
        embtable.embedding_bags(
            tables, ids, offs, per_sample_weights=[None, np.ones(3), None]
        )
    with pytest.raises(ValueError, match="3 tables"):
        embtable.embedding_bags(tables, ids[:2], offs)
    with pytest.raises(ValueError, match="3 tables"):
        embtable.embedding_bags(tables, ids, offs, padding_idx=[0, 1])
    with pytest.raises(ValueError, match="at least one"):
        embtable.embedding_bags([], [], [])
    with pytest.raises(TypeError, match="sequence"):
        embtable.embedding_bags(tables[0], ids, offs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        embtable.embedding_bags(tables, ids, offs, mode="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        embtable.embedding_bags(tables, ids, offs, out=np.zeros((2, 8), np.float32))
    with pytest.raises(TypeError):
        embtable.embedding_bags(
            tables, ids[:2] + [ids[2][:4]], offs, out=np.zeros((2, 9))
        )


@pytest.mark.parametrize("mode", [None, 3, b"sum"])
def test_mode_not_a_str_is_named(rng, mode):
    tables, ids, offs, _ = make_tables(rng, 3, 4)
    out = np.full((4, sum(t.shape[1] for t in tables)), 7.0, np.float32)
    with pytest.raises(
        ValueError, match=rf"^mode must be 'sum', 'mean' or 'max', got {mode!r}$"
    ):
        embtable.embedding_bags(tables, ids, offs, mode=mode, out=out)  # type: ignore[arg-type]
    assert (out == 7).all()


def test_arrays_of_per_table_entries(rng):
    # An array of shape (T, ...) is the sequence of its T rows.
    tables = [rng.standard_normal((V, 3)).astype(np.float32) for V in (5, 9, 2)]
    ids = rng.integers(0, 2, (3, 4, 6))
    ws = rng.standard_normal((3, 4, 6)).astype(np.float32)
    got = embtable.embedding_bags(tables, ids, per_sample_weights=ws)
    want = embtable.embedding_bags(tables, list(ids), per_sample_weights=list(ws))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        got,
        concat(tables, list(ids), [None] * 3, mode="sum", per_sample_weights=list(ws)),
    )
    flat = ids.reshape(3, -1)
    offs = np.tile(np.array([0, 6, 12, 18]), (3, 1))
    for mode in MODES:
        np.testing.assert_array_equal(
            embtable.embedding_bags(tables, flat, offs, mode=mode),
            concat(tables, list(flat), list(offs), mode=mode),
        )
    with pytest.raises(ValueError, match="indices has 2 entries for 3 tables"):
        embtable.embedding_bags(tables, ids[:2])
    with pytest.raises(TypeError, match="indices must be a sequence .* 0-d array"):
        embtable.embedding_bags(tables, np.array(0))
