"""RowGrad: the gradient of a sparse layer, as the rows it touches."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._indices import as_indices

__all__ = ["RowGrad"]

_INT64_MAX = np.iinfo(np.int64).max


class RowGrad:
    """A row-sparse gradient of a ``(V, D)`` table.

    ``indices``: the touched rows, unique, ascending, ``int64`` of shape ``(U,)``.
    ``values``: their summed gradients, shape ``(U, D)``, the table's dtype.
    Row ``indices[k]`` of the dense gradient is ``values[k]``; every other row is 0.

    The constructor takes indices of any integer dtype (float, bool or object
    indices are a ``TypeError``, as in the functional core) and float32 or float64
    values in native byte order (byte-swapped values are a ``ValueError``).
    ``a + b`` is ``a.merge(b)``, and ``sum(grads)`` works (``0 + g`` is a copy of
    ``g``).

    >>> g = RowGrad(np.array([1, 4]), np.ones((2, 3), np.float32))
    >>> g.to_dense(5)[4]
    array([1., 1., 1.], dtype=float32)
    """

    __slots__ = ("indices", "values")

    def __init__(self, indices: Any, values: Any) -> None:
        # Integer ids only, as in the functional core: float, bool or object
        # indices raise TypeError instead of being truncated.
        given = np.asarray(indices)
        if given.dtype == np.uint64 and given.size:
            # Values above 2**63 - 1 would wrap in int64: name the first as given.
            flat = given.reshape(-1)
            big = np.flatnonzero(flat > _INT64_MAX)
            if big.size:
                raise ValueError(
                    f"RowGrad indices must be < 2**63, got {int(flat[big[0]])}"
                )
        idx = np.ascontiguousarray(
            as_indices(indices, None, name="RowGrad indices"), dtype=np.int64
        )
        vals = np.asarray(values)
        if vals.dtype.kind != "f" or vals.dtype.itemsize not in (4, 8):
            raise TypeError(
                f"RowGrad values must be float32 or float64, got {vals.dtype}"
            )
        if not vals.dtype.isnative:
            raise ValueError(
                f"RowGrad values have non-native byte order ({vals.dtype}); convert "
                "them with np.ascontiguousarray(x, dtype=np.float32)"
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

    def __add__(self, other: object) -> RowGrad:
        """``a + b`` is ``a.merge(b)``; another type gives ``NotImplemented``."""
        if not isinstance(other, RowGrad):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: object) -> RowGrad:
        """``0 + g`` is a copy of ``g``, so ``sum(grads)`` (which starts at 0) works."""
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return RowGrad._trusted(self.indices.copy(), self.values.copy())
        return NotImplemented

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
