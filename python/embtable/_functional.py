"""The functional core: gather and scatter_add over NumPy arrays (no copies of tables)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._indices import as_indices, table_rows

__all__ = ["gather", "scatter_add"]


def gather(
    table: np.ndarray, indices: Any, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Row gather: the same result as ``np.take(table, indices, axis=0)``.

    Returns an array of shape ``indices.shape + (D,)``; with ``out`` the rows are
    written there and ``out`` itself is returned. Negative or ``>= V`` indices raise
    ``IndexError`` naming the first one in C order; nothing is written then.
    Multithreaded, GIL released, exact and independent of the thread count.

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
    idx = as_indices(indices, table_rows(table))
    return _core.gather(table, idx, out=out)


def scatter_add(
    target: np.ndarray, indices: Any, updates: Any, *, deterministic: bool = False
) -> np.ndarray:
    """Row scatter-add in place: the same result as ``np.add.at(target, indices, updates)``.

    ``updates.shape`` must equal ``indices.shape + (D,)`` exactly. Returns ``target``.
    ``deterministic=True`` is bitwise identical to ``np.add.at`` for any thread count;
    the default uses row-atomic updates across threads (summation order may vary).
    Every index is validated before the first write.

    Examples
    --------
    >>> import numpy as np, embtable
    >>> grad = np.zeros((3, 2), np.float32)
    >>> embtable.scatter_add(grad, [2, 0, 2], np.ones((3, 2), np.float32))
    array([[1., 1.],
           [0., 0.],
           [2., 2.]], dtype=float32)
    """
    idx = as_indices(indices, table_rows(target))
    if not isinstance(updates, np.ndarray):
        updates = np.asarray(updates, dtype=getattr(target, "dtype", None))
    return _core.scatter_add(target, idx, updates, deterministic=bool(deterministic))
