"""Quantized tables: 8-/4-bit FBGEMM row-wise codes, float16, bfloat16.

The integer formats are FBGEMM's fused row-wise formats, byte for byte what
``torch.ops.quantized.embedding_bag_byte_prepack`` / ``embedding_bag_4bit_prepack``
make, so a table packed by either library is served by the other. Lookups
dequantize rows inside the C++ kernels; a float32 copy of the table is never made.
"""

from __future__ import annotations

import operator
from typing import Any, Literal

import numpy as np

from . import _core
from ._indices import as_indices
from ._prefetch import _maybe_prefetch

__all__ = ["QuantizedTable", "quantize"]

QDtype = Literal["int8", "int4", "float16", "bfloat16"]
_DTYPES = ("int8", "int4", "float16", "bfloat16")


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str) and dtype in _DTYPES:
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name in ("int8", "float16"):  # np.int8 / np.float16 name the formats too
        return name
    raise ValueError(
        f"unknown quantized dtype {dtype!r}; expected 'int8', 'int4', 'float16' "
        "or 'bfloat16'"
    )


class QuantizedTable:
    """A ``(V, D)`` embedding table stored as packed rows.

    Make one with :func:`embtable.quantize` or wrap packed rows with
    :meth:`from_packed`. ``gather``, ``embedding_bag`` and ``embedding_bags``
    accept it wherever they accept a float table and return float32, computed
    from the dequantized values ``scale * code + bias`` (float32 arithmetic, no
    fused multiply-add), so ``gather(q, ids)`` is exactly ``q.dequantize()[ids]``.

    Attributes
    ----------
    data : numpy.ndarray
        The packed rows: ``(V, row_bytes)`` uint8 for ``"int8"`` / ``"int4"``,
        ``(V, D)`` float16 for ``"float16"``, ``(V, D)`` uint16 bfloat16 bits for
        ``"bfloat16"``.
    dtype : str
        ``"int8"``, ``"int4"``, ``"float16"`` or ``"bfloat16"``.
    shape : tuple of int
        ``(V, D)``, the shape of the float table it stands for.
    nbytes : int
        Bytes of ``data``.
    """

    __slots__ = ("_data", "_dtype", "_shape")

    def __init__(self, data: np.ndarray, dtype: str, dim: int) -> None:
        # Private: use quantize() or from_packed(), which check `data`.
        self._data = data
        self._dtype = dtype
        self._shape = (int(data.shape[0]), int(dim))

    @classmethod
    def from_packed(cls, data: np.ndarray, dtype: QDtype, dim: int) -> QuantizedTable:
        """Wrap packed rows (an ``np.memmap`` too) without copying them.

        Parameters
        ----------
        data : numpy.ndarray
            C-contiguous packed rows in the layout of ``dtype`` (see the class
            attributes); read-only arrays are fine.
        dtype : {"int8", "int4", "float16", "bfloat16"}
        dim : int
            ``D``, the number of columns of the table.

        Raises
        ------
        ValueError
            Unknown ``dtype``, a shape that does not match ``dim``, or
            non-C-contiguous ``data``.
        TypeError
            ``data`` of the wrong dtype.
        """
        name = _dtype_name(dtype)
        if not isinstance(data, np.ndarray):
            raise TypeError(
                f"data must be a numpy.ndarray of packed rows, got {type(data).__name__}"
            )
        dim = operator.index(dim)
        _core.check_packed(data, name, dim)
        return cls(data, name, dim)

    @property
    def data(self) -> np.ndarray:
        return self._data

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"QuantizedTable(shape={self._shape}, dtype={self._dtype!r})"

    def dequantize(self) -> np.ndarray:
        """The ``(V, D)`` float32 table: ``scale * code + bias`` per value for the
        integer formats, the exact float32 value for float16 / bfloat16."""
        return _core.dequantize(self._data, self._dtype, self._shape[1])  # type: ignore[no-any-return]

    def _packed(self) -> tuple[np.ndarray, str, int]:
        return (self._data, self._dtype, self._shape[1])


def quantize(table: np.ndarray, dtype: QDtype) -> QuantizedTable:
    """Pack a float table into a :class:`QuantizedTable`.

    Parameters
    ----------
    table : numpy.ndarray
        ``(V, D)`` float32 or float64, C-contiguous (float64 is rounded to
        float32 first).
    dtype : {"int8", "int4", "float16", "bfloat16"}
        ``"int8"``: FBGEMM's 8-bit fused row-wise format (``D`` codes, then a
        float32 scale and bias per row), byte for byte
        ``torch.ops.quantized.embedding_bag_byte_prepack``. ``"int4"``: the 4-bit
        format (``ceil(D / 2)`` bytes of nibbles, then a float16 scale and bias),
        byte for byte ``embedding_bag_4bit_prepack``; an odd ``D`` (which torch
        refuses) leaves the last byte's high nibble 0. ``"float16"`` /
        ``"bfloat16"``: each value rounded to nearest, ties to even.

    Returns
    -------
    QuantizedTable

    Raises
    ------
    ValueError
        Unknown ``dtype``, a table that is not 2-D or not C-contiguous.
    TypeError
        A table that is not float32 / float64.

    Examples
    --------
    >>> import numpy as np, embtable
    >>> table = np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    >>> q = embtable.quantize(table, "int8")
    >>> q.data.shape, q.dequantize()[0, 3]
    ((1, 12), np.float32(3.0))
    """
    name = _dtype_name(dtype)
    if not isinstance(table, np.ndarray):
        table = np.asarray(table, dtype=np.float32)
    packed = _core.quantize(table, name)
    return QuantizedTable(packed, name, int(table.shape[1]))


def _gather(table: QuantizedTable, indices: Any, out: np.ndarray | None) -> np.ndarray:
    idx = as_indices(indices, len(table))
    _maybe_prefetch(table.data, idx)
    return _core.qgather(*table._packed(), idx, out=out)  # type: ignore[no-any-return]


def _weights32(per_sample_weights: Any) -> Any:
    if per_sample_weights is None or isinstance(per_sample_weights, np.ndarray):
        return per_sample_weights
    return np.asarray(per_sample_weights, dtype=np.float32)
