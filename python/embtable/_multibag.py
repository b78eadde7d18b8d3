"""Many tables in one call: ``embedding_bags`` (FBGEMM's table-batched bag)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core
from ._arrays import as_array
from ._bag import Mode, _mode, _offsets, _out, _padding, _result, _weights
from ._indices import as_indices
from ._prefetch import _maybe_prefetch
from ._quant import QuantizedTable, _weights32

__all__ = ["embedding_bags"]


def _per_table(value: Any, T: int, name: str) -> list[Any]:
    """One entry per table: a sequence, or an array whose first axis is the table
    (an ndarray, or a DLPack array such as a torch tensor: its rows are views)."""
    if value is None:
        return [None] * T
    value = as_array(value, name)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            raise TypeError(
                f"{name} must be a sequence with one entry per table or None, got a "
                "0-d array"
            )
    elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence with one entry per table or None")
    items = list(value)
    if len(items) != T:
        raise ValueError(f"{name} has {len(items)} entries for {T} tables")
    return items


def embedding_bags(
    tables: Sequence[np.ndarray | QuantizedTable],
    indices: Sequence[Any] | np.ndarray,
    offsets: Sequence[Any] | np.ndarray | None = None,
    *,
    mode: Mode = "sum",
    per_sample_weights: Sequence[Any] | np.ndarray | None = None,
    padding_idx: int | Sequence[int | None] | None = None,
    include_last_offset: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pooled lookups in ``T`` tables at once (FBGEMM's table-batched bag).

    Exactly ``np.concatenate([embedding_bag(tables[t], indices[t], offsets[t],
    ...) for t in range(T)], axis=1)``, computed in one parallel pass over
    (table, bags) work items in C++.

    Parameters
    ----------
    tables : sequence of numpy.ndarray or QuantizedTable
        Float tables and quantized tables may be mixed when they give one
        output dtype (quantized tables give float32), else ``TypeError``. As in
        :func:`embtable.embedding_bag`, a CPU array with ``__dlpack__`` (a torch
        tensor, a JAX array) may stand for an ndarray here and in every array
        argument below; it is read (``out``: written) in place, never copied.
    indices, offsets : sequences with one entry per table
        Each pair describes the same number ``B`` of bags, with the rules of
        :func:`embtable.embedding_bag` (2-D indices and ``offsets=None``, or 1-D
        indices and offsets). ``offsets=None`` means None for every table. An
        array of shape ``(T, ...)`` is the sequence of its ``T`` rows.
    mode : {"sum", "mean", "max"}
        Default ``"sum"``, as FBGEMM's op; anything else is a ``ValueError``.
    per_sample_weights : sequence, optional
        One array (or None) per table, shaped like its indices; ``"sum"`` only.
    padding_idx : int or sequence, optional
        A scalar applies to every table; a sequence gives one per table.
    include_last_offset : bool
    out : numpy.ndarray, optional
        ``(B, sum(D_t))`` of the output dtype; written and returned (the object
        given, also when it is a torch tensor).

    Returns
    -------
    numpy.ndarray
        ``(B, sum(D_t))``.

    Raises
    ------
    IndexError, ValueError, TypeError
        As :func:`embtable.embedding_bag`, the message starting with the table:
        ``tables[2]: index 9 at position (4,) is out of bounds for a table with
        5 rows``. Nothing is written on error.

    Examples
    --------
    >>> import numpy as np, embtable
    >>> a = np.ones((4, 2), np.float32); b = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> embtable.embedding_bags([a, b], [[[0, 1]], [[2, 2]]])
    array([[ 2.,  2.,  8., 10.]], dtype=float32)
    """
    if isinstance(tables, (np.ndarray, QuantizedTable)) or not isinstance(
        tables, Sequence
    ):
        raise TypeError("tables must be a sequence of tables (a list or tuple)")
    T = len(tables)
    if T == 0:
        raise ValueError("embedding_bags needs at least one table")
    mode_name = _mode(mode)
    idx_list = _per_table(indices, T, "indices")
    off_list = _per_table(offsets, T, "offsets")
    w_list = _per_table(per_sample_weights, T, "per_sample_weights")
    if padding_idx is None or isinstance(padding_idx, (int, np.integer)):
        pad_list: list[Any] = [padding_idx] * T
    else:
        pad_list = _per_table(padding_idx, T, "padding_idx")
    packed: list[Any] = []
    idx_out: list[np.ndarray] = []
    off_out: list[np.ndarray | None] = []
    w_out: list[Any] = []
    pads: list[int | None] = []
    for t, table in enumerate(tables):
        try:
            # The conversions of embedding_bag: DLPack arrays (torch tensors, JAX
            # arrays) are read in place, never copied.
            if isinstance(table, QuantizedTable):
                packed.append(table._packed())
                V: int | None = len(table)
                w_out.append(_weights32(as_array(w_list[t], "per_sample_weights")))
            else:
                table = as_array(table, "table")
                if not isinstance(table, np.ndarray):
                    raise TypeError(
                        "must be a numpy.ndarray, a QuantizedTable or an array with "
                        "__dlpack__ (a torch tensor, a JAX array), got "
                        + type(table).__name__
                    )
                packed.append(table)
                V = int(table.shape[0]) if table.ndim == 2 else None
                w_out.append(_weights(w_list[t], table.dtype))
            idx_out.append(as_indices(as_array(idx_list[t], "indices"), V))
            off_out.append(_offsets(off_list[t]))
            pads.append(_padding(pad_list[t]))
        except (TypeError, ValueError, IndexError) as e:
            raise type(e)(f"tables[{t}]: {e}") from None
    for entry, idx in zip(packed, idx_out, strict=True):
        # Read ahead the rows of file-backed tables, as embedding_bag does (a
        # quantized table's entry is (data, dtype, D)).
        _maybe_prefetch(entry[0] if isinstance(entry, tuple) else entry, idx)
    result = _core.embedding_bags(
        packed,
        idx_out,
        off_out,
        mode=mode_name,
        per_sample_weights=w_out,
        padding_idx=pads,
        include_last_offset=bool(include_last_offset),
        out=_out(out),
    )
    return _result(result, out)
