"""RowGrad: the gradient of a sparse layer, as the rows it touches."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core

__all__ = ["RowGrad"]


class RowGrad:
    """A row-sparse gradient of a ``(V, D)`` table.

    ``indices``: the touched rows, unique, ascending, ``int64`` of shape ``(U,)``.
    ``values``: their summed gradients, shape ``(U, D)``, the table's dtype.
    Row ``indices[k]`` of the dense gradient is ``values[k]``; every other row is 0.

    >>> g = RowGrad(np.array([1, 4]), np.ones((2, 3), np.float32))
    >>> g.to_dense(5)[4]
    array([1., 1., 1.], dtype=float32)
    """

    __slots__ = ("indices", "values")

    def __init__(self, indices: Any, values: Any) -> None:
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        vals = np.asarray(values)
        if vals.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"RowGrad values must be float32 or float64, got {vals.dtype}"
            )
        vals = np.ascontiguousarray(vals)
        if idx.ndim != 1 or vals.ndim != 2 or vals.shape[0] != idx.shape[0]:
            raise ValueError(
                f"RowGrad needs indices of shape (U,) and values of shape (U, D), got "
                f"indices {idx.shape} and values {vals.shape}"
            )
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise ValueError("RowGrad indices must be unique and sorted ascending")
        if idx.size and idx[0] < 0:
            raise ValueError(f"RowGrad indices must be >= 0, got {int(idx[0])}")
        self.indices: np.ndarray = idx
        self.values: np.ndarray = vals

    @classmethod
    def _trusted(cls, indices: np.ndarray, values: np.ndarray) -> RowGrad:
        # From the core: already sorted, unique, int64, C-contiguous.
        obj = cls.__new__(cls)
        obj.indices = indices
        obj.values = values
        return obj

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def width(self) -> int:
        """D, the number of columns."""
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def merge(self, other: RowGrad) -> RowGrad:
        """The sum of two row gradients (a new RowGrad; the union of their rows)."""
        if not isinstance(other, RowGrad):
            raise TypeError(f"can only merge a RowGrad, got {type(other).__name__}")
        if other.values.dtype != self.values.dtype:
            raise TypeError(
                "cannot merge RowGrads of dtypes "
                f"{self.values.dtype} and {other.values.dtype}"
            )
        rows, values = _core.rowgrad_merge(
            self.indices, self.values, other.indices, other.values
        )
        return RowGrad._trusted(rows, values)

    __add__ = merge

    def to_dense(self, V: int) -> np.ndarray:
        """The dense ``(V, D)`` gradient (allocates V * D: for tests, small tables)."""
        if len(self) and int(self.indices[-1]) >= V:
            raise IndexError(
                f"RowGrad row {int(self.indices[-1])} is out of bounds for a table "
                f"with {V} rows"
            )
        out = np.zeros((V, self.width), dtype=self.values.dtype)
        out[self.indices] = self.values
        return out

    def __repr__(self) -> str:
        return (
            f"RowGrad(rows={len(self)}, width={self.width}, dtype={self.values.dtype}, "
            f"indices={np.array2string(self.indices, threshold=8)})"
        )
