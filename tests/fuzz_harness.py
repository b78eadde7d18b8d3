"""Fuzz targets for every public embtable function, each checked against a NumPy oracle.

A target is ``run(data: bytes) -> None``: it decodes the bytes into arguments
(dtypes, shapes, index values, thread count, contiguity, ``out``), calls
embtable, and raises ``AssertionError`` when the result differs from the
oracle, or when an input the oracle rejects is accepted (or vice versa, or with
another error type), or when a failed call changed ``target`` / ``out``.

The decoder is plain Python (no atheris), so ``tests/test_fuzz_regressions.py``
replays the kept crash inputs in ``tests/fuzz_corpus/<target>/`` through the
same code without a fuzzer.

Targets: ``gather``, ``scatter_add`` (both modes), ``embedding_bag`` (offsets,
2-D bags, per_sample_weights, padding_idx, include_last_offset) and the layers
``Embedding`` / ``EmbeddingBag`` forward + backward. A target whose function the
installed package lacks is skipped (returns at once): see ``available()``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import embtable
import numpy as np

__all__ = ["TARGETS", "Reader", "available", "np_embedding_bag", "run"]

_FLOATS = (np.float32, np.float64)
_INDEX_DTYPES = (
    np.int32,
    np.int64,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.uint32,
    np.uint64,
)
# Row lengths: small ones, and long ones whose few rows already exceed the
# parallel grain (64 KiB of rows), so the thread pool runs under the fuzzer too.
_DIMS = (0, 1, 2, 3, 4, 5, 8, 17, 64, 130)
# Values that stress index checks: int32 / int64 / uint64 edges.
_EDGE_VALUES = (-1, -(2**31), 2**31 - 1, 2**31, 2**32, 2**63 - 1, -(2**63), 2**64 - 1)


class Reader:
    """Reads small integers from fuzzer bytes; past the end it reads zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        """n bytes, zero-padded past the end."""
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk + bytes(n - len(chunk))

    def pick(self, options: Any) -> Any:
        return options[self.byte() % len(options)]

    def below(self, n: int) -> int:
        return self.byte() % n if n > 0 else 0

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def int64(self) -> int:
        v = int.from_bytes(bytes(self.byte() for _ in range(8)), "little", signed=True)
        return v


# ----------------------------------------------------------------------------- oracles
def np_embedding_bag(
    table: np.ndarray,
    indices: np.ndarray,
    offsets: np.ndarray | None,
    mode: str,
    weights: np.ndarray | None,
    padding_idx: int | None,
    include_last_offset: bool,
) -> np.ndarray:
    """torch.nn.functional.embedding_bag in NumPy, summing in index order in the table dtype."""
    D = table.shape[1]
    if indices.ndim == 2:
        B, L = indices.shape
        flat = indices.reshape(-1)
        w = None if weights is None else weights.reshape(-1)
        starts = [b * L for b in range(B + 1)]
    else:
        flat = indices
        w = weights
        offs = [int(o) for o in offsets]  # type: ignore[union-attr]
        starts = offs if include_last_offset else offs + [len(flat)]
        B = len(starts) - 1
    out = np.zeros((max(B, 0), D), dtype=table.dtype)
    for b in range(B):
        acc = np.zeros(D, dtype=table.dtype)
        count = 0
        first = True
        for i in range(starts[b], starts[b + 1]):
            r = int(flat[i])
            if padding_idx is not None and r == padding_idx:
                continue
            row = table[r]
            if mode == "max":
                acc = row.copy() if first else np.maximum(acc, row)
            elif w is not None:
                acc = acc + (row * w[i]).astype(table.dtype)
            else:
                acc = acc + row
            first = False
            count += 1
        if mode == "mean" and count:
            acc = acc / table.dtype.type(count)
        out[b] = acc
    return out


def _ref_indices(idx: Any) -> np.ndarray:
    """The index array the contract says embtable sees: np.asarray, and `[]` is empty ints."""
    arr = np.asarray(idx)
    if not isinstance(idx, np.ndarray) and arr.size == 0 and arr.dtype == np.float64:
        arr = arr.astype(np.int64)
    return arr


def _bad_index(idx: np.ndarray, V: int) -> bool:
    if idx.dtype.kind not in "iu":
        # np.asarray of a list mixing uint64 values above 2**63 with others gives
        # float64 (NumPy's rule): embtable raises TypeError, checked by the callers.
        return True
    flat = idx.reshape(-1)
    return bool(flat.size) and bool(np.any((flat < 0) | (flat >= V)))


# ----------------------------------------------------------------------------- inputs
def _values(r: Reader, V: int, n: int) -> np.ndarray:
    """n index values as uint64 bit patterns: mostly (95%) in [0, V), some just
    outside (V..V+3, -1..-4), rarely extreme (int32 / int64 / uint64 edges).
    Vectorised: the decoder is not what is under test, and the fuzzer's speed is."""
    c = np.frombuffer(r.take(n), dtype=np.uint8).astype(np.int64)
    vals = np.where(
        c < 244, c % max(V, 1), np.where(c < 248, V + (c & 3), -1 - (c & 3))
    )
    out = vals.astype(np.uint64)  # negatives wrap: two's complement bit patterns
    edge = np.flatnonzero(c >= 252)
    if edge.size:
        out[edge] = np.array(
            [_EDGE_VALUES[(int(c[i]) + int(i)) & 7] % 2**64 for i in edge],
            dtype=np.uint64,
        )
    return out


def _int64_values(r: Reader, V: int, shape: tuple[int, ...]) -> np.ndarray:
    """_values wrapped into int64, as an array of `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    return _values(r, V, n).astype(np.int64).reshape(shape)


def _index_array(r: Reader, V: int, shape: tuple[int, ...]) -> Any:
    """An index array of a fuzzed integer dtype (or a list); values that don't fit wrap."""
    n = int(np.prod(shape, dtype=np.int64))
    bits = _values(r, V, n)
    dtype = r.pick(_INDEX_DTYPES)
    arr = bits.astype(dtype).reshape(shape)  # C-style truncation: wraps modulo 2**bits
    kind = r.below(8)
    if kind == 0:
        return arr.tolist() if arr.ndim else int(arr)
    if kind == 1 and arr.ndim:
        # A non-contiguous view with the same values.
        wide = np.repeat(arr, 2, axis=-1)
        return wide[..., ::2]
    if kind == 2:
        return arr.astype(arr.dtype.newbyteorder())  # byte-swapped integers: converted
    return arr


def _shape(r: Reader, max_dims: int = 3) -> tuple[int, ...]:
    ndim = r.below(max_dims + 1)
    shape = tuple(r.below(5) for _ in range(ndim))
    if (
        r.below(16) == 0 and ndim
    ):  # sometimes ~80-600 indices: the pool runs for long rows
        rest = int(np.prod(shape[1:], dtype=np.int64)) or 1
        shape = (shape[0] + 80 * (1 + r.below(8)) // rest,) + shape[1:]
    return shape


def _float(r: Reader, dtype: Any, shape: tuple[int, ...], integer: bool) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    base = np.arange(n, dtype=np.float64).reshape(shape)
    seed = r.byte()
    vals = (base * (seed % 7 + 1) + seed) % 23 - 11
    if not integer:
        vals = vals * 0.37 + 0.011 * seed
    return vals.astype(dtype)


def _threads(r: Reader) -> None:
    embtable.set_num_threads(1 + r.below(4))


def _same_error(
    expected: type[BaseException] | tuple[type[BaseException], ...],
    call: Callable[[], Any],
) -> None:
    """`call` must raise one of `expected` (and nothing else)."""
    names = "/".join(
        e.__name__ for e in (expected if isinstance(expected, tuple) else (expected,))
    )
    try:
        call()
    except expected:
        return
    except Exception as e:  # noqa: BLE001 - any other type is the finding
        raise AssertionError(f"expected {names}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {names}, no error raised")


# ----------------------------------------------------------------------------- targets
def fuzz_gather(data: bytes) -> None:
    r = Reader(data)
    _threads(r)
    dtype = r.pick(_FLOATS)
    V, D = r.below(9), r.pick(_DIMS)
    table = _float(r, dtype, (V, D), integer=False)
    if r.below(4) == 0:
        table.flags.writeable = False
    shape = _shape(r)
    idx = _index_array(r, V, shape)
    ref_idx = _ref_indices(idx)
    with_out = r.flag()
    out = np.full(ref_idx.shape + (D,), -7, dtype=dtype) if with_out else None
    before = None if out is None else out.copy()
    if _bad_index(ref_idx, V):
        err = IndexError if ref_idx.dtype.kind in "iu" else TypeError
        _same_error(err, lambda: embtable.gather(table, idx, out=out))
        if out is not None:
            assert np.array_equal(out, before), "out changed by a failed gather"
        return
    got = embtable.gather(table, idx, out=out)
    if out is not None:
        assert got is out, "gather(out=...) did not return out"
    want = np.take(table, ref_idx.astype(np.int64), axis=0)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape)
    assert np.array_equal(got, want), "gather differs from np.take"


def _scatter(data: bytes, deterministic: bool) -> None:
    r = Reader(data)
    _threads(r)
    dtype = r.pick(_FLOATS)
    V, D = r.below(9), r.pick(_DIMS)
    target = _float(r, dtype, (V, D), integer=True)
    shape = _shape(r)
    idx = _index_array(r, V, shape)
    ref_idx = _ref_indices(idx)
    integer = not deterministic or r.flag()
    updates = _float(r, dtype, ref_idx.shape + (D,), integer=integer)
    # (updates.shape follows np.asarray(indices).shape, as the contract says)
    if r.below(4) == 0 and updates.ndim:
        updates = np.repeat(updates, 2, axis=-1)[
            ..., ::2
        ]  # non-contiguous: copied once
    before = target.copy()
    if _bad_index(ref_idx, V):
        _same_error(
            IndexError if ref_idx.dtype.kind in "iu" else TypeError,
            lambda: embtable.scatter_add(
                target, idx, updates, deterministic=deterministic
            ),
        )
        assert np.array_equal(target, before), "target changed by a failed scatter_add"
        return
    got = embtable.scatter_add(target, idx, updates, deterministic=deterministic)
    assert got is target, "scatter_add did not return target"
    want = before.copy()
    np.add.at(want, ref_idx.astype(np.int64), updates)
    # deterministic=True is bitwise np.add.at; the atomic mode is exact here
    # because every update is a small integer (any summation order is exact).
    assert np.array_equal(target, want), "scatter_add differs from np.add.at"


def fuzz_scatter_add(data: bytes) -> None:
    _scatter(data, deterministic=False)


def fuzz_scatter_add_deterministic(data: bytes) -> None:
    _scatter(data, deterministic=True)


def _bag_args(r: Reader, V: int) -> dict[str, Any]:
    """Bag layout, mode, weights and padding; may be invalid (ValueError expected)."""
    two_d = r.below(3) == 0
    if two_d:
        shape: tuple[int, ...] = (r.below(5), r.below(5))
        if r.below(16) == 0:
            shape = (shape[0] + 60, shape[1])
        offsets = None
        include_last = False
    else:
        shape = (r.below(12) + (100 * r.below(4) if r.below(8) == 0 else 0),)
        n = shape[0]
        B = r.below(6)
        cuts = sorted(r.below(n + 1) for _ in range(B))
        include_last = r.below(4) == 0
        offs = ([0] + cuts[1:] if cuts else []) + ([n] if include_last else [])
        if include_last and len(offs) == 1:
            offs = [0, n]
        corrupt = r.below(12)
        if corrupt == 0 and offs:
            offs[r.below(len(offs))] += r.pick((-2, -1, 1, n + 1))  # invalid offsets
        elif corrupt == 1:
            offs = offs[::-1]
        # Built as int64, then cast: a corrupted negative offset wraps in uint8.
        offsets = np.array(offs, dtype=np.int64).astype(
            r.pick((np.int64, np.int32, np.uint8))
        )
    mode = r.pick(("sum", "mean", "max", "sum", "mean", "max", "sum", "bogus"))
    # weights outside "sum" are an error: rarely, so most calls reach the kernels
    weighted = r.below(3) == 0 and (mode == "sum" or r.below(6) == 0)
    padding_idx = None
    if r.below(3) == 0:
        padding_idx = r.below(V + 2) - (1 if r.flag() else 0)
    return {
        "shape": shape,
        "offsets": offsets,
        "include_last_offset": include_last,
        "mode": mode,
        "weighted": weighted,
        "padding_idx": padding_idx,
    }


def _bag_errors(
    a: dict[str, Any], idx: np.ndarray, V: int
) -> tuple[type[BaseException], ...]:
    """The errors embtable may raise for these arguments (the contract fixes no order
    between several problems); empty for a valid call."""
    errors: list[type[BaseException]] = []
    if a["mode"] not in ("sum", "mean", "max"):
        errors.append(ValueError)
    offs = a["offsets"]
    if idx.ndim == 1:
        n = idx.shape[0]
        o = [int(x) for x in offs]
        if len(o) == 0:
            if n or a["include_last_offset"]:
                errors.append(ValueError)
        elif (
            o[0] != 0 or any(b < x for x, b in zip(o, o[1:], strict=False)) or o[-1] > n
        ):
            errors.append(ValueError)
        elif a["include_last_offset"] and o[-1] != n:
            errors.append(ValueError)
    if a["weighted"] and a["mode"] != "sum":
        errors.append(ValueError)
    p = a["padding_idx"]
    if p is not None and not 0 <= p < V:
        errors.append(ValueError)
    if _bad_index(idx, V):
        errors.append(IndexError)
    return tuple(errors)


def fuzz_embedding_bag(data: bytes) -> None:
    if not hasattr(embtable, "embedding_bag"):
        return
    r = Reader(data)
    _threads(r)
    dtype = r.pick(_FLOATS)
    V, D = r.below(9), r.pick(_DIMS)
    table = _float(r, dtype, (V, D), integer=False)
    a = _bag_args(r, V)
    idx = _int64_values(r, V, a["shape"]).astype(r.pick((np.int64, np.int32)))
    weights = _float(r, dtype, idx.shape, integer=False) if a["weighted"] else None
    B = (
        idx.shape[0]
        if idx.ndim == 2
        else max(len(a["offsets"]) - int(a["include_last_offset"]), 0)
    )
    out = np.full((B, D), -3, dtype=dtype) if r.flag() else None
    before = None if out is None else out.copy()

    def call() -> np.ndarray:
        return embtable.embedding_bag(
            table,
            idx,
            a["offsets"],
            mode=a["mode"],
            per_sample_weights=weights,
            padding_idx=a["padding_idx"],
            include_last_offset=a["include_last_offset"],
            out=out,
        )

    expected = _bag_errors(a, idx, V)
    if expected:
        _same_error(expected, call)
        if out is not None:
            assert np.array_equal(out, before), "out changed by a failed embedding_bag"
        return
    got = call()
    want = np_embedding_bag(
        table,
        idx,
        a["offsets"],
        a["mode"],
        weights,
        a["padding_idx"],
        a["include_last_offset"],
    )
    if out is not None:
        assert got is out
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg="embedding_bag")


def fuzz_layer(data: bytes) -> None:
    """Embedding forward + backward (dense or sparse grad) and EmbeddingBag forward + backward."""
    if not hasattr(embtable, "Embedding"):
        return
    r = Reader(data)
    _threads(r)
    V, D = 1 + r.below(8), 1 + r.below(6)
    dtype = r.pick(("float32", "float64"))
    sparse = r.flag()
    padding_idx = r.below(V) if r.below(3) == 0 else None
    layer = embtable.Embedding(
        V, D, dtype=dtype, seed=r.byte(), sparse=sparse, padding_idx=padding_idx
    )
    table = layer.embeddings.copy()
    shape = _shape(r, max_dims=2)
    idx = _int64_values(r, V, shape)
    if _bad_index(idx, V):
        _same_error(IndexError, lambda: layer(idx))
        assert np.array_equal(layer.embeddings, table), (
            "table changed by a failed forward"
        )
        return
    y = layer(idx)
    assert np.array_equal(y, np.take(table, idx, axis=0)), "Embedding forward"
    g = _float(r, table.dtype, y.shape, integer=True)
    grad = layer.backward(g)
    want = np.zeros_like(table)
    np.add.at(want, idx, g)
    if padding_idx is not None:
        want[padding_idx] = 0
    if sparse:
        dense = np.zeros_like(table)
        rows = np.asarray(grad.indices)
        assert np.all(np.diff(rows) > 0), "RowGrad rows not sorted unique"
        dense[rows] = grad.values
        assert np.array_equal(dense, want), "sparse Embedding backward"
    else:
        assert np.array_equal(grad, want), "Embedding backward"

    if not hasattr(embtable, "EmbeddingBag"):
        return
    mode = r.pick(("sum", "mean", "max"))
    bag = embtable.EmbeddingBag(V, D, mode=mode, dtype=dtype, seed=r.byte())
    B, L = r.below(4), r.below(4)
    bidx = _int64_values(r, V, (B, L))
    if _bad_index(bidx, V):
        _same_error(IndexError, lambda: bag(bidx))
        return
    y = bag(bidx)
    want_y = np_embedding_bag(bag.embeddings, bidx, None, mode, None, None, False)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(
        y, want_y, rtol=rtol, atol=rtol, err_msg="EmbeddingBag forward"
    )
    gy = _float(r, bag.embeddings.dtype, y.shape, integer=True)
    gb = np.asarray(bag.backward(gy))
    assert gb.shape == bag.embeddings.shape
    if mode == "sum":
        want = np.zeros_like(bag.embeddings)
        np.add.at(want, bidx, np.repeat(gy[:, None, :], L, axis=1))
        assert np.array_equal(gb, want), "EmbeddingBag sum backward"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "gather": fuzz_gather,
    "scatter_add": fuzz_scatter_add,
    "scatter_add_deterministic": fuzz_scatter_add_deterministic,
    "embedding_bag": fuzz_embedding_bag,
    "layer": fuzz_layer,
}


def available(target: str) -> bool:
    """Whether the installed embtable has the function(s) the target exercises."""
    need = {"embedding_bag": "embedding_bag", "layer": "Embedding"}.get(target)
    return need is None or hasattr(embtable, need)


def run(target: str, data: bytes) -> None:
    """Run one input through a target (the entry point of fuzzers and the regression test)."""
    try:
        TARGETS[target](data)
    finally:
        embtable.set_num_threads(_DEFAULT_THREADS)


_DEFAULT_THREADS = operator.index(embtable.get_num_threads())
