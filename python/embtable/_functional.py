"""The functional core: gather and scatter_add over NumPy arrays (no copies of tables)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._arrays import as_array, written
from ._indices import as_indices, table_rows
from ._prefetch import _maybe_prefetch
from ._quant import QuantizedTable, _gather

__all__ = ["gather", "scatter_add"]

# The common call (ndarrays that own their memory, native int32/int64 ids) goes
# straight to the core: the general path's conversions cost about 1 us a call,
# a fifth of a 4,096-id gather from a cached table. Anything else (views, which
# may map a file; other dtypes; DLPack arrays; QuantizedTable) takes that path.
_I32, _I64 = np.dtype(np.int32), np.dtype(np.int64)
_nd = np.ndarray


def _plain(table: Any, indices: Any) -> bool:
    return (
        type(table) is _nd
        and table.base is None
        and type(indices) is _nd
        and (indices.dtype is _I64 or indices.dtype is _I32)
        and indices.flags.c_contiguous
    )


def _table(table: Any, name: str = "table", *, quantized: bool = True) -> np.ndarray:
    """``table`` as an ndarray read in place (a DLPack array becomes a view).

    Anything else (a list, a NumPy scalar) is a ``TypeError``: a table is never
    copied into a new array, and the core's own signature error would name its
    private arguments.
    """
    arr = as_array(table, name)
    if not isinstance(arr, np.ndarray):
        alternatives = "a CPU array with __dlpack__" + (
            ", or a QuantizedTable" if quantized else ""
        )
        raise TypeError(
            f"{name} must be a numpy.ndarray (or {alternatives}), "
            f"got {type(table).__name__}"
        )
    return arr


def gather(
    table: np.ndarray, indices: Any, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Row gather: the same result as ``np.take(table, indices, axis=0)``.

    Returns an array of shape ``indices.shape + (D,)``; with ``out`` the rows are
    written there and ``out`` itself is returned. Negative or ``>= V`` indices raise
    ``IndexError`` naming the first one in C order; nothing is written then. An
    ``out`` that shares memory with ``table`` or ``indices`` is a ``ValueError``
    (``np.take`` would buffer it). ``table`` must be an array (a list or a scalar
    is a ``TypeError``): a table is never copied.
    Multithreaded, GIL released, exact and independent of the thread count.
    A :class:`embtable.QuantizedTable` gives float32 rows, exactly
    ``table.dequantize()[indices]`` (rows are dequantized in the kernel).
    Arrays may also be CPU torch tensors or JAX arrays (read in place through
    DLPack); the result is an ndarray (or ``out`` itself). A torch ``out`` is
    written in place and its version counter bumped, as torch's in-place ops do;
    one that requires grad is a ``RuntimeError`` unless grad mode is off
    (``torch.no_grad()``); a JAX ``out``, immutable, is a ``ValueError``.

    Examples
    --------
    >>> import numpy as np, embtable
    >>> table = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> embtable.gather(table, [[2, 0], [1, 1]])
    array([[[4., 5.],
            [0., 1.]],
    <BLANKLINE>
           [[2., 3.],
            [2., 3.]]], dtype=float32)
    """
    if _plain(table, indices) and (out is None or type(out) is _nd):
        return _core.gather(table, indices, out=out)
    if isinstance(table, QuantizedTable):
        idx = as_array(indices, "indices")
        if out is None or isinstance(out, np.ndarray):
            return _gather(table, idx, out)
        _gather(table, idx, as_array(out, "out", writable=True))
        written(out)
        return out
    table = _table(table)
    idx = as_indices(as_array(indices, "indices"), table_rows(table))
    _maybe_prefetch(table, idx)
    if out is None or isinstance(out, np.ndarray):
        return _core.gather(table, idx, out=out)
    _core.gather(table, idx, out=as_array(out, "out", writable=True))
    written(out)
    return out


def scatter_add(
    target: np.ndarray, indices: Any, updates: Any, *, deterministic: bool = False
) -> np.ndarray:
    """Row scatter-add in place: the same result as ``np.add.at(target, indices, updates)``.

    ``updates.shape`` must equal ``indices.shape + (D,)`` exactly. Returns ``target``.
    ``deterministic=True`` is bitwise identical to ``np.add.at`` for any thread count
    (one exception: a NaN update added to a target element that is already NaN
    gives NaN, but its sign and payload may differ from NumPy's);
    the default runs the same row-owner kernel unless skewed (hot) ids would leave
    one owner with too large a share, and then splits the ids between threads under
    striped row locks (summation order may vary between runs).
    Every index is validated before the first write. ``updates`` or ``indices``
    that share an element with ``target`` are a ``ValueError`` (``np.add.at``
    would read them as it writes); views of one buffer that only interleave
    (``np.shares_memory`` is False) are fine. ``target`` may be a CPU
    torch tensor (updated in place, its version counter bumped; one that requires
    grad is a ``RuntimeError`` unless grad mode is off); a JAX array, immutable,
    is a ``ValueError``.

    Examples
    --------
    >>> import numpy as np, embtable
    >>> grad = np.zeros((3, 2), np.float32)
    >>> embtable.scatter_add(grad, [2, 0, 2], np.ones((3, 2), np.float32))
    array([[1., 1.],
           [0., 0.],
           [2., 2.]], dtype=float32)
    """
    if _plain(target, indices) and type(updates) is _nd:
        _core.scatter_add(target, indices, updates, deterministic=bool(deterministic))
        return target
    if isinstance(target, QuantizedTable):
        raise TypeError(
            "scatter_add cannot update a QuantizedTable (its rows are packed "
            "codes); update a float table and quantize it again"
        )
    given = target
    target = as_array(target, "target", writable=True)
    updates = as_array(updates, "updates")
    idx = as_indices(as_array(indices, "indices"), table_rows(target))
    if not isinstance(updates, np.ndarray):
        updates = np.asarray(updates, dtype=getattr(target, "dtype", None))
    _maybe_prefetch(target, idx)
    _core.scatter_add(target, idx, updates, deterministic=bool(deterministic))
    written(given)
    return given
