"""Index normalisation: the only place the Python layer touches index arrays.

Native int32 / int64 C-contiguous arrays pass through untouched (read in place by
the core); other integer dtypes are converted once; anything else is a TypeError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core

_NATIVE = (np.dtype(np.int32), np.dtype(np.int64))


def as_indices(indices: Any, V: int | None, name: str = "indices") -> np.ndarray:
    """Return `indices` as a native int32/int64 C-contiguous array.

    `V` (the table's row count) is only used to name an out-of-range uint64 value
    as given, before the conversion to int64 would wrap it.
    """
    if type(indices) is np.ndarray:
        arr = indices
        if arr.dtype in _NATIVE and arr.dtype.isnative and arr.flags.c_contiguous:
            return arr
    else:
        arr = np.asarray(indices)
        if (
            arr.size == 0
            and arr.dtype == np.float64
            and not isinstance(indices, np.ndarray)
        ):
            # `[]` is an empty index array (np.asarray gives it float64).
            arr = np.zeros(arr.shape, dtype=np.int64)
    kind = arr.dtype.kind
    if kind not in "iu":
        raise TypeError(
            f"{name} must be an array of integers, got dtype {arr.dtype}"
            + (
                " (cast with .astype(np.int64) if the values are whole)"
                if kind == "f"
                else ""
            )
        )
    if kind == "u" and arr.dtype.itemsize == 8 and V is not None and arr.size:
        # Values above 2**63 - 1 would wrap in int64: name them as given.
        bad = np.flatnonzero(arr.reshape(-1) >= V)
        if bad.size:
            flat = int(bad[0])
            value = int(arr.reshape(-1)[flat])
            raise IndexError(
                _core.index_error_message(str(value), list(arr.shape), flat, V)
            )
    if arr.dtype in _NATIVE and arr.dtype.isnative:
        # (np.ascontiguousarray would turn a 0-d array into 1-d.)
        return arr if arr.flags.c_contiguous else arr.copy(order="C")
    # int8/int16/uint8/uint16 fit int32; int32-and-wider others need int64.
    return arr.astype(np.int32 if arr.dtype.itemsize <= 2 else np.int64, order="C")


def table_rows(table: Any) -> int | None:
    """The row count V of a 2-D array-like, or None (the core reports the error)."""
    shape = getattr(table, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[0])
    return None
