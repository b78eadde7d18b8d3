"""Quantized tables: quantize / QuantizedTable / gather / embedding_bag.

Oracles: a NumPy transcription of FBGEMM's row-wise formulas (always), torch's
prepack and quantized bag ops (byte for byte / within float rounding, where torch
is installed), the float ops on ``dequantize()`` (bitwise) and the core's scalar
``_ref`` twins (bitwise), at every SIMD level.
"""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import _core
from simd_levels import LEVELS

FORMATS = ["int8", "int4", "float16", "bfloat16"]
MODES = ["sum", "mean", "max"]


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> str:
    _core.set_simd_level(request.param)  # conftest restores it
    return request.param


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# --------------------------------------------------------------------------- oracles


def np_int8(t: np.ndarray) -> np.ndarray:
    """FBGEMM's 8-bit fused row-wise format for finite rows, in NumPy float32."""
    f = np.float32
    lo = t.min(axis=1, keepdims=True)
    hi = t.max(axis=1, keepdims=True)
    rng = (hi - lo).astype(f)
    scale = (rng / f(255)).astype(f)
    inv = (f(255) / (rng + f(1e-8))).astype(f)
    q = ((t - lo) * inv).astype(f)
    codes = np.clip(np.rint(q), 0, 255).astype(np.uint8)
    sb = np.concatenate([scale, lo], axis=1).astype(f).view(np.uint8)
    return np.concatenate([codes, sb], axis=1)


def np_int4(t: np.ndarray) -> np.ndarray:
    """FBGEMM's 4-bit fused row-wise format (float16 scale and bias), finite rows."""
    f = np.float32
    V, D = t.shape
    lo16 = t.min(axis=1, keepdims=True).astype(np.float16)
    lo = lo16.astype(f)
    hi = t.max(axis=1, keepdims=True)
    rng = (hi - lo).astype(f)
    s = np.where(rng == 0, f(1), rng / f(15)).astype(f)
    s = s.astype(np.float16).astype(f)
    s = np.where(s == 0, f(1), s).astype(f)
    with np.errstate(divide="ignore"):
        inv = (f(1) / s).astype(f)
    bad = np.isinf(inv)
    s = np.where(bad, f(1), s)
    inv = np.where(bad, f(1), inv)
    codes = np.clip(np.rint(((t - lo) * inv).astype(f)), 0, 15).astype(np.uint8)
    if D % 2:
        codes = np.concatenate([codes, np.zeros((V, 1), np.uint8)], axis=1)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    sb = np.concatenate([s.astype(np.float16), lo16], axis=1).view(np.uint8)
    return np.concatenate([packed, sb], axis=1)


def np_bfloat16(t: np.ndarray) -> np.ndarray:
    u = t.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(t)
    r[nan] = ((u[nan] >> 16) & 0x8000).astype(np.uint16) | 0x7FC0
    return r


def np_dequantize(data: np.ndarray, fmt: str, D: int) -> np.ndarray:
    f = np.float32
    if fmt == "int8":
        codes = data[:, :D].astype(f)
        sb = np.ascontiguousarray(data[:, D : D + 8]).view(f)
        return (sb[:, :1] * codes + sb[:, 1:2]).astype(f)
    if fmt == "int4":
        nb = (D + 1) // 2
        b = data[:, :nb]
        codes = np.stack([b & 15, b >> 4], axis=2).reshape(len(data), -1)[:, :D]
        sb = np.ascontiguousarray(data[:, nb : nb + 4]).view(np.float16).astype(f)
        return (sb[:, :1] * codes.astype(f) + sb[:, 1:2]).astype(f)
    if fmt == "float16":
        return data.astype(f)
    return (data.astype(np.uint32) << 16).view(f)


def edge_tables(rng: np.random.Generator, D: int) -> list[np.ndarray]:
    """Rows that stress the rounding: ties, constants, zeros, huge and tiny ranges."""
    V = 12
    ties8 = np.zeros((1, D), np.float32)
    ties8[0, :2] = [0.0, 255.0] if D >= 2 else [0.0]
    ties8[0, 2:] = (np.arange(D - 2) % 254) + 0.5 if D > 2 else ties8[0, 2:]
    ties4 = np.zeros((1, D), np.float32)
    ties4[0, :2] = [0.0, 15.0] if D >= 2 else [0.0]
    ties4[0, 2:] = (np.arange(D - 2) % 14) + 0.5 if D > 2 else ties4[0, 2:]
    return [
        rng.standard_normal((V, D)).astype(np.float32),
        np.zeros((V, D), np.float32),
        np.full((V, D), 3.25, np.float32),
        np.full((V, D), -7e-9, np.float32),
        (rng.standard_normal((V, D)) * 1e30).astype(np.float32),
        (rng.uniform(-1, 1, (V, D)) * 3e38).astype(np.float32),
        (rng.standard_normal((V, D)) * 1e-30).astype(np.float32),
        (1000.3 + rng.standard_normal((V, D)) * 1e-3).astype(np.float32),
        rng.integers(-8, 8, (V, D)).astype(np.float32),
        ties8,
        ties4,
    ]


# --------------------------------------------------------------------------- quantize


@pytest.mark.parametrize("D", [1, 2, 7, 8, 9, 31, 32, 33, 64, 100])
def test_int8_matches_numpy_formula(rng, D):
    for t in edge_tables(rng, D):
        with np.errstate(over="ignore", invalid="ignore"):
            want = np_int8(t)
            finite_range = np.all(np.isfinite(t.max(1) - t.min(1)))
        if not finite_range:
            continue  # an infinite range: FBGEMM's own NaN path (see the torch test)
        got = embtable.quantize(t, "int8").data
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("D", [1, 2, 3, 7, 8, 31, 32, 33, 64, 101])
def test_int4_matches_numpy_formula(rng, D):
    for t in edge_tables(rng, D):
        if np.abs(t).max() > 6e4:
            continue  # a float16 bias overflows: FBGEMM's own path (see the torch test)
        with np.errstate(over="ignore", invalid="ignore"):
            want = np_int4(t)
        got = embtable.quantize(t, "int4").data
        np.testing.assert_array_equal(got, want)


def test_ties_round_to_even():
    t = np.array([[0.0, 255.0, 0.5, 1.5, 2.5, 3.5, 254.5, 100.5]], np.float32)
    codes = embtable.quantize(t, "int8").data[0, :8]
    np.testing.assert_array_equal(codes, [0, 255, 0, 2, 2, 4, 254, 100])
    t4 = np.array([[0.0, 15.0, 0.5, 1.5, 2.5, 13.5]], np.float32)
    packed = embtable.quantize(t4, "int4").data[0, :3]
    codes4 = np.stack([packed & 15, packed >> 4], 1).ravel()
    np.testing.assert_array_equal(codes4, [0, 15, 0, 2, 2, 14])


def _torch_prepack(torch, t: np.ndarray, fmt: str) -> np.ndarray:
    op = (
        torch.ops.quantized.embedding_bag_byte_prepack
        if fmt == "int8"
        else torch.ops.quantized.embedding_bag_4bit_prepack
    )
    return op(torch.from_numpy(np.ascontiguousarray(t))).numpy()


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_bytes_equal_torch_prepack_random(rng, fmt):
    torch = pytest.importorskip("torch")
    for _ in range(40):
        V = int(rng.integers(1, 40))
        D = int(rng.integers(1, 80)) * 2  # torch's 4-bit op needs an even D
        t = (rng.standard_normal((V, D)) * 10 ** rng.uniform(-20, 20, (V, 1))).astype(
            np.float32
        )
        np.testing.assert_array_equal(
            embtable.quantize(t, fmt).data, _torch_prepack(torch, t, fmt)
        )


@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("D", [2, 6, 8, 16, 30, 32, 34, 40, 64, 66, 98])
def test_bytes_equal_torch_prepack_edges(rng, fmt, D):
    torch = pytest.importorskip("torch")
    for t in edge_tables(rng, D):
        np.testing.assert_array_equal(
            embtable.quantize(t, fmt).data, _torch_prepack(torch, t, fmt)
        )


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_bytes_equal_torch_prepack_nan_inf_signed_zero(rng, fmt):
    """FBGEMM's x86 min/max and conversions, NaN, infinities and -0.0 included."""
    torch = pytest.importorskip("torch")
    for trial in range(200):
        V = int(rng.integers(1, 12))
        D = int(rng.integers(1, 50)) * 2
        t = rng.standard_normal((V, D)).astype(np.float32)
        m = rng.random((V, D))
        t[m < 0.05] = np.nan
        t[(m > 0.05) & (m < 0.08)] = np.inf
        t[(m > 0.08) & (m < 0.1)] = -np.inf
        t[(m > 0.1) & (m < 0.2)] = -0.0
        t[(m > 0.2) & (m < 0.3)] = 0.0
        if trial % 4 == 0:
            t = np.where(rng.random((V, D)) < 0.5, 0.0, -0.0).astype(np.float32)
        np.testing.assert_array_equal(
            embtable.quantize(t, fmt).data, _torch_prepack(torch, t, fmt)
        )


def test_float16_and_bfloat16_round_to_nearest_even(rng):
    x = np.concatenate(
        [
            rng.standard_normal(5000) * 10.0 ** rng.uniform(-9, 6, 5000),
            [
                65504,
                65519.99,
                65520,
                1e6,
                2.0**-24,
                2.0**-25,
                1.5 * 2.0**-25,
                -(2.0**-25),
            ],
            [0.0, -0.0, np.inf, -np.inf, 1e-45, 3.0000002, 1.00390625, 1.01171875],
        ]
    ).astype(np.float32)
    x = np.resize(x, (len(x) // 8, 8))
    with np.errstate(over="ignore"):
        want16 = x.astype(np.float16)
    q16 = embtable.quantize(x, "float16")
    assert q16.data.dtype == np.float16
    np.testing.assert_array_equal(q16.data.view(np.uint16), want16.view(np.uint16))
    qb = embtable.quantize(x, "bfloat16")
    assert qb.data.dtype == np.uint16
    np.testing.assert_array_equal(qb.data, np_bfloat16(x))
    # NaN stays NaN (bfloat16: the canonical quiet NaN with the sign kept).
    nan = np.array([[np.nan, -np.nan]], np.float32)
    assert np.isnan(embtable.quantize(nan, "float16").dequantize()).all()
    np.testing.assert_array_equal(
        embtable.quantize(nan, "bfloat16").data, np_bfloat16(nan)
    )


def test_bfloat16_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((50, 33)) * 10.0 ** rng.uniform(-30, 30, (50, 1))).astype(
        np.float32
    )
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy()
    np.testing.assert_array_equal(
        embtable.quantize(x, "bfloat16").data, want.view(np.uint16)
    )


def test_float16_dequantize_every_half():
    h = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(-1, 16)
    q = embtable.QuantizedTable.from_packed(h, "float16", 16)
    got = q.dequantize()
    want = h.astype(np.float32)
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(bits(got)[ok], bits(want)[ok])
    assert np.isnan(got[~ok]).all()


def test_float64_table_rounds_to_float32_first(rng):
    t = rng.standard_normal((20, 9))
    for fmt in FORMATS:
        np.testing.assert_array_equal(
            embtable.quantize(t, fmt).data,
            embtable.quantize(t.astype(np.float32), fmt).data,
        )


def test_quantize_reference_twin(rng):
    t = rng.standard_normal((300, 37)).astype(np.float32)
    for fmt in FORMATS:
        np.testing.assert_array_equal(
            _core.quantize(t, fmt), _core.quantize(t, fmt, reference=True)
        )


# --------------------------------------------------------------------------- QuantizedTable


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("D", [0, 1, 5, 64, 65])
def test_attributes_and_dequantize(rng, fmt, D):
    t = rng.standard_normal((13, D)).astype(np.float32)
    q = embtable.quantize(t, fmt)
    assert isinstance(q, embtable.QuantizedTable)
    assert q.dtype == fmt
    assert q.shape == (13, D)
    assert len(q) == 13
    assert q.nbytes == q.data.nbytes
    row_bytes = {"int8": D + 8, "int4": (D + 1) // 2 + 4}.get(fmt, D)
    assert q.data.shape == (13, row_bytes)
    assert q.data.flags.c_contiguous
    deq = q.dequantize()
    assert deq.dtype == np.float32 and deq.shape == (13, D)
    np.testing.assert_array_equal(bits(deq), bits(np_dequantize(q.data, fmt, D)))
    if D:
        tol = {"int8": 0.01, "int4": 0.2, "float16": 1e-3, "bfloat16": 1e-2}[fmt]
        assert np.abs(deq - t).max() <= tol * np.abs(t).max()
    assert "QuantizedTable" in repr(q)


def test_int4_odd_dim_pads_high_nibble(rng):
    t = rng.standard_normal((40, 7)).astype(np.float32) + 5
    q = embtable.quantize(t, "int4")
    assert q.data.shape == (40, 4 + 4)
    assert (q.data[:, 3] >> 4 == 0).all()
    # The even-D prefix of the same rows packs the same nibbles where the codes match.
    np.testing.assert_array_equal(
        bits(q.dequantize()), bits(np_dequantize(q.data, "int4", 7))
    )


def test_from_packed_wraps_without_copy(rng, tmp_path):
    t = rng.standard_normal((50, 16)).astype(np.float32)
    packed = embtable.quantize(t, "int8").data
    q = embtable.QuantizedTable.from_packed(packed, "int8", 16)
    assert q.data is packed
    path = tmp_path / "table.bin"
    packed.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=packed.shape)
    qm = embtable.QuantizedTable.from_packed(mm, "int8", 16)
    assert qm.data is mm
    ids = rng.integers(0, 50, 30)
    np.testing.assert_array_equal(embtable.gather(qm, ids), embtable.gather(q, ids))
    np.testing.assert_array_equal(
        embtable.embedding_bag(qm, ids.reshape(6, 5)),
        embtable.embedding_bag(q, ids.reshape(6, 5)),
    )
    ro = packed.copy()
    ro.flags.writeable = False
    embtable.QuantizedTable.from_packed(ro, "int8", 16).dequantize()


def test_from_packed_torch_table(rng):
    torch = pytest.importorskip("torch")
    t = rng.standard_normal((30, 12)).astype(np.float32)
    for fmt, op in (
        ("int8", torch.ops.quantized.embedding_bag_byte_prepack),
        ("int4", torch.ops.quantized.embedding_bag_4bit_prepack),
    ):
        data = op(torch.from_numpy(t)).numpy()
        q = embtable.QuantizedTable.from_packed(data, fmt, 12)
        unpack = (
            torch.ops.quantized.embedding_bag_byte_unpack
            if fmt == "int8"
            else torch.ops.quantized.embedding_bag_4bit_unpack
        )
        want = unpack(torch.from_numpy(data)).numpy()
        np.testing.assert_allclose(q.dequantize(), want, rtol=1e-6, atol=1e-6)


def test_from_packed_errors(rng):
    t = rng.standard_normal((5, 8)).astype(np.float32)
    packed = embtable.quantize(t, "int8").data
    with pytest.raises(ValueError, match="unknown quantized dtype"):
        embtable.QuantizedTable.from_packed(packed, "int2", 8)
    with pytest.raises(ValueError, match="shape"):
        embtable.QuantizedTable.from_packed(packed, "int8", 9)
    with pytest.raises(ValueError, match="shape"):
        embtable.QuantizedTable.from_packed(packed, "int4", 8)
    with pytest.raises(TypeError, match="dtype"):
        embtable.QuantizedTable.from_packed(packed.view(np.int8), "int8", 8)
    with pytest.raises(TypeError, match="dtype"):
        embtable.QuantizedTable.from_packed(packed, "float16", 8)
    with pytest.raises(ValueError, match="C-contiguous"):
        embtable.QuantizedTable.from_packed(
            np.zeros((5, 32), np.uint8)[:, ::2], "int8", 8
        )
    with pytest.raises(ValueError, match="2-D"):
        embtable.QuantizedTable.from_packed(packed.ravel(), "int8", 8)
    with pytest.raises(TypeError):
        embtable.QuantizedTable.from_packed(packed.tolist(), "int8", 8)  # type: ignore[arg-type]


def test_quantize_errors():
    with pytest.raises(ValueError, match="unknown quantized dtype"):
        embtable.quantize(np.zeros((2, 2), np.float32), "int16")
    with pytest.raises(ValueError, match="unknown quantized dtype"):
        embtable.quantize(np.zeros((2, 2), np.float32), "float32")
    with pytest.raises(TypeError, match="float32"):
        embtable.quantize(np.zeros((2, 2), np.int32), "int8")
    with pytest.raises(ValueError, match="2-D"):
        embtable.quantize(np.zeros(4, np.float32), "int8")
    with pytest.raises(ValueError, match="C-contiguous"):
        embtable.quantize(np.zeros((4, 4), np.float32)[:, ::2], "int8")


def test_scatter_add_target_is_type_error():
    q = embtable.quantize(np.ones((3, 4), np.float32), "int8")
    before = q.data.copy()
    with pytest.raises(TypeError, match="QuantizedTable"):
        embtable.scatter_add(q, [0], np.ones((1, 4), np.float32))  # type: ignore[arg-type]
    np.testing.assert_array_equal(q.data, before)


# --------------------------------------------------------------------------- gather


@pytest.mark.parametrize("fmt", FORMATS)
def test_gather_is_dequantize_then_take(rng, fmt, level):
    for D in (1, 3, 16, 63, 64, 65, 130):
        t = rng.standard_normal((70, D)).astype(np.float32)
        q = embtable.quantize(t, fmt)
        deq = q.dequantize()
        for shape in [(), (0,), (9,), (4, 5), (2, 0, 3)]:
            ids = rng.integers(0, 70, shape)
            for idt in (np.int32, np.int64, np.uint16):
                got = embtable.gather(q, ids.astype(idt))
                assert got.shape == shape + (D,) and got.dtype == np.float32
                np.testing.assert_array_equal(bits(got), bits(deq[ids]))
        ids = rng.integers(0, 70, 100).astype(np.int64)
        ref = _core.qgather(q.data, fmt, D, ids, reference=True)
        np.testing.assert_array_equal(bits(embtable.gather(q, ids)), bits(ref))


def test_gather_out_and_threads(rng):
    q = embtable.quantize(rng.standard_normal((1000, 48)).astype(np.float32), "int4")
    ids = rng.integers(0, 1000, (300, 7))
    out = np.empty((300, 7, 48), np.float32)
    assert embtable.gather(q, ids, out=out) is out
    want = q.dequantize()[ids]
    np.testing.assert_array_equal(out, want)
    for n in (1, 2, 3):
        embtable.set_num_threads(n)
        np.testing.assert_array_equal(embtable.gather(q, ids), want)


def test_gather_errors(rng):
    q = embtable.quantize(rng.standard_normal((5, 4)).astype(np.float32), "int8")
    out = np.full((2, 3, 4), 7.0, np.float32)
    with pytest.raises(
        IndexError,
        match=r"index 9 at position \(1, 0\) is out of bounds for a table with 5 rows",
    ):
        embtable.gather(q, [[0, 1, 2], [9, 1, 2]], out=out)
    assert (out == 7).all()
    with pytest.raises(IndexError):
        embtable.gather(q, [-1])
    with pytest.raises(TypeError):
        embtable.gather(q, [1.5])
    with pytest.raises(TypeError, match="dtype"):
        embtable.gather(q, [[0, 1, 2], [3, 1, 2]], out=out.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        embtable.gather(q, [[0, 1, 2]], out=out)
    ro = np.zeros((1, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        embtable.gather(q, [0], out=ro)


# --------------------------------------------------------------------------- embedding_bag


def _bag_inputs(rng, V, n, B):
    idx = rng.integers(0, V, n)
    offs = np.sort(rng.integers(0, n + 1, B))
    offs[0] = 0
    return idx, offs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", MODES)
def test_bag_equals_float_bag_on_dequantized(rng, fmt, mode, level):
    for D in (1, 5, 64, 65, 129):
        t = rng.standard_normal((60, D)).astype(np.float32)
        q = embtable.quantize(t, fmt)
        deq = q.dequantize()
        idx, offs = _bag_inputs(rng, 60, 250, 40)
        for pad in (None, 3):
            for last in (False, True):
                o = np.append(offs, len(idx)) if last else offs
                kw = dict(mode=mode, padding_idx=pad, include_last_offset=last)
                got = embtable.embedding_bag(q, idx, o, **kw)
                want = embtable.embedding_bag(deq, idx, o, **kw)
                assert got.dtype == np.float32 and got.shape == want.shape
                np.testing.assert_array_equal(bits(got), bits(want))
                ref = _core.qembedding_bag(q.data, fmt, D, idx, o, reference=True, **kw)
                np.testing.assert_array_equal(bits(got), bits(ref))
        fixed = idx[:240].reshape(40, 6).astype(np.int32)
        np.testing.assert_array_equal(
            bits(embtable.embedding_bag(q, fixed, mode=mode)),
            bits(embtable.embedding_bag(deq, fixed, mode=mode)),
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_bag_weighted_sum(rng, fmt, level):
    for D in (33, 64, 130):  # a partial block, one full block, full blocks + a tail
        q = embtable.quantize(rng.standard_normal((80, D)).astype(np.float32), fmt)
        idx, offs = _bag_inputs(rng, 80, 300, 50)
        w = rng.standard_normal(300).astype(np.float32)
        got = embtable.embedding_bag(q, idx, offs, mode="sum", per_sample_weights=w)
        want = embtable.embedding_bag(
            q.dequantize(), idx, offs, mode="sum", per_sample_weights=w
        )
        np.testing.assert_array_equal(bits(got), bits(want))
    lst = embtable.embedding_bag(
        q, idx, offs, mode="sum", per_sample_weights=w.tolist()
    )
    np.testing.assert_array_equal(bits(lst), bits(want))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", MODES)
def test_bag_on_edge_rows_equals_float_bag_on_dequantized(rng, fmt, mode, level):
    # Zeros, constants, huge and tiny ranges and ties, in full 64-column blocks.
    for t in edge_tables(rng, 64):
        t = np.concatenate([t, -t, t[:, ::-1]])
        q = embtable.quantize(t, fmt)
        idx, offs = _bag_inputs(rng, len(t), 120, 20)
        got = embtable.embedding_bag(q, idx, offs, mode=mode)
        want = embtable.embedding_bag(q.dequantize(), idx, offs, mode=mode)
        np.testing.assert_array_equal(bits(got), bits(want))


def _misaligned_packed(packed: np.ndarray, shift: int) -> np.ndarray:
    """A copy of ``packed`` whose first byte sits ``shift`` bytes past a 64-byte line."""
    buf = np.zeros(packed.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + shift
    dst = buf[start : start + packed.nbytes]
    dst[:] = packed.reshape(-1).view(np.uint8)
    return dst.view(packed.dtype).reshape(packed.shape)


@pytest.mark.skipif("avx512" not in LEVELS, reason="this CPU and build run no avx512")
@pytest.mark.parametrize("fmt", FORMATS)
def test_avx512_quantized_kernels_give_the_baseline_bits(rng, fmt):
    # The AVX-512-only blocks of qbag_kernels_impl.hpp (int8 / int4 / float16
    # decode with _mm512_* intrinsics): on AVX-512 hardware, or through SIMDe in
    # the emulated build (cmake -DEMBTABLE_EMULATE_AVX512=ON, docs/testing.md).
    # Rows off a cache line, tails of 1..63 columns, odd int4 D, every mode,
    # padding, empty bags, weights, int32 and int64 ids, at 1 and 2 threads.
    saved = embtable.get_num_threads()
    for D in (1, 7, 15, 16, 17, 31, 33, 48, 63, 64, 65, 80, 127, 128, 129, 191, 257):
        t = rng.standard_normal((37, D)).astype(np.float32)
        packed = embtable.quantize(t, fmt).data
        shift = int(rng.integers(0, 32)) * (2 if fmt in ("float16", "bfloat16") else 1)
        q = embtable.QuantizedTable.from_packed(
            _misaligned_packed(packed, shift), fmt, D
        )
        idx, offs = _bag_inputs(rng, 37, 200, 30)
        offs[1] = 0  # an empty bag
        w = rng.standard_normal(200).astype(np.float32)
        results = {}
        for lv in ("baseline", "avx512"):
            _core.set_simd_level(lv)  # conftest restores it
            embtable.set_num_threads(1 + D % 2)
            outs = [q.dequantize(), embtable.gather(q, idx.astype(np.int32))]
            for mode in MODES:
                for pad in (None, 5):
                    outs.append(
                        embtable.embedding_bag(q, idx, offs, mode=mode, padding_idx=pad)
                    )
            outs.append(
                embtable.embedding_bag(
                    q, idx.astype(np.int32), offs, mode="sum", per_sample_weights=w
                )
            )
            results[lv] = outs
        embtable.set_num_threads(saved)
        for k, (a, b) in enumerate(
            zip(results["baseline"], results["avx512"], strict=True)
        ):
            assert a.shape == b.shape
            np.testing.assert_array_equal(bits(a), bits(b), err_msg=f"D={D} output {k}")


def test_bag_empty_bags_padding_and_max(rng):
    t = np.array([[-1.0, 2.0], [3.0, -4.0], [0.5, 0.5]], np.float32)
    for fmt in FORMATS:
        q = embtable.quantize(t, fmt)
        deq = q.dequantize()
        idx = [0, 1, 2, 2, 1]
        offs = [0, 0, 2, 2, 4]  # bags: [], [0, 1], [], [2, 2], [1]
        for mode in MODES:
            got = embtable.embedding_bag(q, idx, offs, mode=mode, padding_idx=2)
            assert (got[[0, 2, 3]] == 0).all()  # empty, empty, only padding
            np.testing.assert_array_equal(
                got, embtable.embedding_bag(deq, idx, offs, mode=mode, padding_idx=2)
            )
        mx = embtable.embedding_bag(q, idx, offs, mode="max")
        np.testing.assert_array_equal(mx[1], np.maximum(deq[0], deq[1]))
        mean = embtable.embedding_bag(q, idx, offs, mode="mean", padding_idx=0)
        np.testing.assert_array_equal(mean[1], deq[1])  # padding not counted
        assert embtable.embedding_bag(q, np.zeros((0,), np.int64), []).shape == (0, 2)
        assert (embtable.embedding_bag(q, np.zeros((3, 0), np.int64)) == 0).all()


def test_bag_out_threads_and_nothing_written_on_error(rng):
    q = embtable.quantize(rng.standard_normal((500, 40)).astype(np.float32), "int8")
    idx, offs = _bag_inputs(rng, 500, 5000, 300)
    want = embtable.embedding_bag(q.dequantize(), idx, offs, mode="mean")
    out = np.empty((300, 40), np.float32)
    assert embtable.embedding_bag(q, idx, offs, mode="mean", out=out) is out
    np.testing.assert_array_equal(out, want)
    for n in (1, 2, 3):
        embtable.set_num_threads(n)
        np.testing.assert_array_equal(
            embtable.embedding_bag(q, idx, offs, mode="mean"), want
        )
    bad = idx.copy()
    bad[1234] = 500
    out[:] = 7
    with pytest.raises(IndexError, match=r"index 500 at position \(1234,\)"):
        embtable.embedding_bag(q, bad, offs, out=out)
    assert (out == 7).all()


def test_bag_errors(rng):
    q = embtable.quantize(rng.standard_normal((5, 4)).astype(np.float32), "int4")
    idx = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="offsets"):
        embtable.embedding_bag(q, idx, [1, 2])
    with pytest.raises(ValueError, match="offsets"):
        embtable.embedding_bag(q, idx, [0, 3, 2])
    with pytest.raises(ValueError, match="offsets"):
        embtable.embedding_bag(q, idx, [0, 5])
    with pytest.raises(ValueError):
        embtable.embedding_bag(q, idx)  # 1-D without offsets
    with pytest.raises(ValueError):
        embtable.embedding_bag(q, idx.reshape(2, 2), [0])
    with pytest.raises(ValueError):
        embtable.embedding_bag(q, idx, [0, 2], include_last_offset=True)
    with pytest.raises(ValueError, match="mode"):
        embtable.embedding_bag(q, idx, [0], mode="median")  # type: ignore[arg-type]
    out = np.full((1, q.shape[1]), 7.0, np.float32)
    with pytest.raises(
        ValueError, match=r"^mode must be 'sum', 'mean' or 'max', got None$"
    ):
        embtable.embedding_bag(q, idx, [0], mode=None, out=out)  # type: ignore[arg-type]
    assert (out == 7).all()
    with pytest.raises(ValueError, match="per_sample_weights"):
        embtable.embedding_bag(
            q, idx, [0], mode="mean", per_sample_weights=np.ones(4, np.float32)
        )
    with pytest.raises(TypeError):
        embtable.embedding_bag(q, idx, [0], mode="sum", per_sample_weights=np.ones(4))
    with pytest.raises(TypeError):
        embtable.embedding_bag(
            q, idx, [0], mode="sum", per_sample_weights=np.ones(4, np.int32)
        )
    with pytest.raises(ValueError, match="shape"):
        embtable.embedding_bag(
            q, idx, [0], mode="sum", per_sample_weights=np.ones(3, np.float32)
        )
    with pytest.raises(ValueError, match="padding_idx"):
        embtable.embedding_bag(q, idx, [0], padding_idx=5)
    with pytest.raises(TypeError):
        embtable.embedding_bag(q, idx.astype(float), [0])
    with pytest.raises(TypeError):
        embtable.embedding_bag(q, idx, [0], out=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shape"):
        embtable.embedding_bag(q, idx, [0], out=np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_bag_against_torch_quantized_ops(rng, fmt):
    torch = pytest.importorskip("torch")
    op = (
        torch.ops.quantized.embedding_bag_byte_rowwise_offsets
        if fmt == "int8"
        else torch.ops.quantized.embedding_bag_4bit_rowwise_offsets
    )
    for D in (8, 16, 64, 130):
        t = rng.standard_normal((200, D)).astype(np.float32)
        q = embtable.quantize(t, fmt)
        idx, offs = _bag_inputs(rng, 200, 1000, 64)
        w = rng.standard_normal(1000).astype(np.float32)
        data = torch.from_numpy(q.data)
        ti, to = torch.from_numpy(idx), torch.from_numpy(offs)
        for weights in (None, w):
            tw = None if weights is None else torch.from_numpy(weights)
            want = op(data, ti, to, False, 0, False, tw, None, False).numpy()
            got = embtable.embedding_bag(
                q, idx, offs, mode="sum", per_sample_weights=weights
            )
            # torch fuses scale and bias into FMAs: equal up to float rounding.
            scale = np.abs(q.dequantize()).max() * 50
            np.testing.assert_allclose(got, want, rtol=0, atol=scale * 2e-6)
        last = np.append(offs, len(idx))
        want = op(
            data, ti, torch.from_numpy(last), False, 0, False, None, None, True
        ).numpy()
        got = embtable.embedding_bag(q, idx, last, mode="sum", include_last_offset=True)
        np.testing.assert_allclose(
            got, want, rtol=0, atol=np.abs(want).max() * 2e-6 + 1e-6
        )
