"""Bags: pooled lookups (``embedding_bag``) and their gradients.

``embedding_bag`` is public. The backward functions are the building blocks of
``EmbeddingBag.backward``; they are importable from ``embtable._bag`` for users
who write their own layers.
"""

from __future__ import annotations

import operator
from typing import Any, Literal

import numpy as np

from . import _core
from ._arrays import as_array, written
from ._functional import _table
from ._indices import as_indices, table_rows
from ._prefetch import _maybe_prefetch
from ._quant import QuantizedTable, _weights32

__all__ = [
    "embedding_bag",
    "embedding_bag_backward",
    "embedding_bag_backward_sparse",
    "embedding_bag_forward",
    "embedding_bag_per_sample_weights_backward",
]

Mode = Literal["sum", "mean", "max"]

_INT64_MAX = np.iinfo(np.int64).max


def _offsets(offsets: Any) -> np.ndarray | None:
    """Offsets as a C-contiguous int64 array (they are few: one per bag)."""
    if offsets is None:
        return None
    offsets = as_array(offsets, "offsets")
    if isinstance(offsets, np.ndarray) and offsets.dtype == np.uint64 and offsets.size:
        # Values above 2**63 - 1 would wrap in int64: name them as given.
        flat = offsets.reshape(-1)
        big = np.flatnonzero(flat > np.iinfo(np.int64).max)
        if big.size:
            k = int(big[0])
            raise ValueError(
                f"offsets[{k}] = {int(flat[k])} is past the end of indices; every "
                "offset must be <= len(indices)"
            )
    arr = as_indices(offsets, None, name="offsets")
    if arr.dtype != np.int64:
        arr = arr.astype(np.int64)
    return arr


def _mode(mode: Any) -> str:
    """``mode`` checked before the call (the core takes a str; None gave pybind's error)."""
    if not isinstance(mode, str) or mode not in ("sum", "mean", "max"):
        raise ValueError(f"mode must be 'sum', 'mean' or 'max', got {mode!r}")
    return mode


def _out(out: Any) -> Any:
    return None if out is None else as_array(out, "out", writable=True)


def _result(result: np.ndarray, out: Any) -> Any:
    """What a call with ``out`` returns: ``out`` itself, written into (see _out)."""
    if out is None:
        return result
    written(out)
    return out


def _padding(padding_idx: Any) -> int | None:
    if padding_idx is None:
        return None
    try:
        return operator.index(padding_idx)
    except TypeError:
        raise TypeError(
            f"padding_idx must be an int or None, got {type(padding_idx).__name__}"
        ) from None


def _weights(per_sample_weights: Any, dtype: Any) -> np.ndarray | None:
    per_sample_weights = as_array(per_sample_weights, "per_sample_weights")
    if per_sample_weights is None or isinstance(per_sample_weights, np.ndarray):
        return per_sample_weights
    return np.asarray(per_sample_weights, dtype=dtype)


def embedding_bag(
    table: np.ndarray,
    indices: Any,
    offsets: Any = None,
    *,
    mode: Mode = "mean",
    per_sample_weights: Any = None,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pooled lookup: the same result as ``torch.nn.functional.embedding_bag``.

    Bags are the rows of 2-D ``indices`` ``(B, L)`` (``offsets`` must be None), or
    the runs of 1-D ``indices`` that start at ``offsets`` (``offsets[0] == 0``,
    non-decreasing, each ``<= len(indices)``; with ``include_last_offset=True`` the
    last offset is ``len(indices)`` and closes the last bag). ``mode`` is
    ``"sum"``, ``"mean"`` or ``"max"`` (anything else, None included, is a
    ``ValueError``). Ids equal to ``padding_idx`` are skipped
    and do not count in the mean; a bag with no ids gives zeros.
    ``per_sample_weights`` (shaped like ``indices``) scale each id, ``"sum"`` only.

    Returns ``(B, D)``; with ``out`` the result is written there and ``out`` is
    returned. Every bad offset (``ValueError``) and index (``IndexError``) is
    reported before anything is written. Sums run in index order in the table's
    dtype, one thread per bag, so the result is independent of the thread count.

    ``table`` may be a :class:`embtable.QuantizedTable`: rows are dequantized in
    the kernel and the float32 result equals ``embedding_bag(table.dequantize(),
    ...)`` bit for bit.

    >>> import numpy as np, embtable
    >>> table = np.arange(8, dtype=np.float32).reshape(4, 2)
    >>> embtable.embedding_bag(table, [0, 1, 3], [0, 2], mode="sum")
    array([[2., 4.],
           [6., 7.]], dtype=float32)
    """
    if isinstance(table, QuantizedTable):
        idx = as_indices(as_array(indices, "indices"), len(table))
        _maybe_prefetch(table.data, idx)
        result = _core.qembedding_bag(
            *table._packed(),
            idx,
            _offsets(offsets),
            mode=_mode(mode),
            per_sample_weights=_weights32(per_sample_weights),
            padding_idx=_padding(padding_idx),
            include_last_offset=bool(include_last_offset),
            out=_out(out),
        )
        return _result(result, out)
    table = _table(table)
    idx = as_indices(as_array(indices, "indices"), table_rows(table))
    _maybe_prefetch(table, idx)
    result = _core.embedding_bag(
        table,
        idx,
        _offsets(offsets),
        mode=_mode(mode),
        per_sample_weights=_weights(per_sample_weights, getattr(table, "dtype", None)),
        padding_idx=_padding(padding_idx),
        include_last_offset=bool(include_last_offset),
        out=_out(out),
    )
    return _result(result, out)


def embedding_bag_forward(
    table: np.ndarray,
    indices: Any,
    offsets: Any = None,
    *,
    mode: Mode = "mean",
    per_sample_weights: Any = None,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``embedding_bag`` that also returns the max mode's winners.

    Returns ``(out, argmax)``: ``argmax`` is the ``(B, D)`` int64 array of the
    row that won each bag's column in ``mode="max"`` (``-1`` for a bag with no
    ids), ``None`` in the other modes. ``embedding_bag_backward`` needs it.
    """
    table = _table(table, quantized=False)
    idx = as_indices(as_array(indices, "indices"), table_rows(table))
    _maybe_prefetch(table, idx)
    result, argmax = _core.embedding_bag(
        table,
        idx,
        _offsets(offsets),
        mode=_mode(mode),
        per_sample_weights=_weights(per_sample_weights, getattr(table, "dtype", None)),
        padding_idx=_padding(padding_idx),
        include_last_offset=bool(include_last_offset),
        out=_out(out),
        return_argmax=True,
    )
    return _result(result, out), argmax


def embedding_bag_backward(
    grad_output: np.ndarray,
    indices: Any,
    offsets: Any = None,
    *,
    target: np.ndarray,
    mode: Mode = "mean",
    per_sample_weights: Any = None,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
    argmax: np.ndarray | None = None,
    deterministic: bool = True,
) -> np.ndarray:
    """Add the gradient of ``embedding_bag`` with respect to the table into ``target``.

    ``grad_output`` is ``(B, D)``, ``target`` the ``(V, D)`` gradient buffer
    (accumulated into, in place; returned). ``"sum"`` and ``"mean"`` send each
    bag's gradient to every id of the bag (times its weight, or divided by the
    bag's count); ``"max"`` sends each column to the row that won it (``argmax``
    from ``embedding_bag_forward``). ``padding_idx`` never receives gradient.
    ``deterministic=True`` is bitwise identical for every thread count;
    ``False`` lets threads share rows under atomic row locks (faster on skewed
    ids, summation order may vary).
    """
    given = target
    target = as_array(target, "target", writable=True)
    idx = as_indices(as_array(indices, "indices"), table_rows(target))
    _core.embedding_bag_backward(
        np.asarray(as_array(grad_output, "grad_output")),
        idx,
        _offsets(offsets),
        mode=_mode(mode),
        per_sample_weights=_weights(per_sample_weights, getattr(target, "dtype", None)),
        padding_idx=_padding(padding_idx),
        include_last_offset=bool(include_last_offset),
        argmax=as_array(argmax, "argmax"),
        target=target,
        deterministic=bool(deterministic),
    )
    written(given)
    return given


def embedding_bag_backward_sparse(
    grad_output: np.ndarray,
    indices: Any,
    offsets: Any = None,
    *,
    num_embeddings: int,
    mode: Mode = "mean",
    per_sample_weights: Any = None,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
    argmax: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The table gradient of ``embedding_bag`` as ``(rows, values)``.

    ``rows`` are the sorted unique int64 rows that receive gradient (never
    ``padding_idx``; in ``"max"`` mode the rows that won), ``values`` their summed
    gradients ``(U, D)``, bit for bit the rows of the dense backward. Memory is
    proportional to the number of ids, never to ``num_embeddings``.
    """
    try:
        V = operator.index(num_embeddings)
    except TypeError:
        raise TypeError(
            f"num_embeddings must be an int, got {type(num_embeddings).__name__}"
        ) from None
    if V > _INT64_MAX:
        raise ValueError(f"num_embeddings must be < 2**63, got {V}")
    grad = np.asarray(as_array(grad_output, "grad_output"))
    idx = as_indices(as_array(indices, "indices"), V)
    return _core.embedding_bag_backward_sparse(  # type: ignore[no-any-return]
        grad,
        idx,
        _offsets(offsets),
        num_embeddings=V,
        mode=_mode(mode),
        per_sample_weights=_weights(per_sample_weights, grad.dtype),
        padding_idx=_padding(padding_idx),
        include_last_offset=bool(include_last_offset),
        argmax=as_array(argmax, "argmax"),
    )


def embedding_bag_per_sample_weights_backward(
    grad_output: np.ndarray,
    table: np.ndarray,
    indices: Any,
    offsets: Any = None,
    *,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
) -> np.ndarray:
    """Gradient of ``embedding_bag(mode="sum")`` with respect to ``per_sample_weights``.

    ``grad[i] = dot(grad_output[bag(i)], table[indices[i]])`` (0 for
    ``padding_idx``), shaped like ``indices``.
    """
    table = _table(table, quantized=False)
    idx = as_indices(as_array(indices, "indices"), table_rows(table))
    _maybe_prefetch(table, idx)
    return _core.embedding_bag_per_sample_weights_backward(  # type: ignore[no-any-return]
        np.asarray(as_array(grad_output, "grad_output")),
        table,
        idx,
        _offsets(offsets),
        padding_idx=_padding(padding_idx),
        include_last_offset=bool(include_last_offset),
    )
