"""Weight constraints (Keras' ``MaxNorm``, ``UnitNorm``, ``NonNeg``, ``MinMaxNorm``).

A constraint maps the table to its projected value; layers apply it after each
optimizer step. ``axis=0`` (the Keras default) normalises each column across all
rows; ``axis=1`` (or ``-1``) each row, which a lazy (RowGrad) step applies to the
touched rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._configurable import Configurable
from ._configurable import deserialize as _deserialize
from ._configurable import serialize as _serialize

__all__ = [
    "Constraint",
    "MaxNorm",
    "MinMaxNorm",
    "NonNeg",
    "UnitNorm",
    "apply_to_table",
    "deserialize",
    "get",
    "serialize",
]

_EPSILON = 1e-7  # keras.backend.epsilon()


class Constraint(Configurable):
    """Base class: ``__call__(w) -> w'``, ``get_config()``.

    ``rowwise`` is True when it acts on each row independently.
    """

    rowwise: bool = False

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return w


# Bytes of rows per slice when a constraint is applied to a whole table in place
# (``apply_to_table``): the scratch memory it takes, never proportional to V * D.
_BLOCK_BYTES = 1024 * 1024


def _row_blocks(w: np.ndarray) -> range:
    """Start rows of the slices of ``w`` (2-D) of at most ``_BLOCK_BYTES``."""
    step = max(1, _BLOCK_BYTES // max(1, w.shape[1] * w.itemsize))
    return range(0, w.shape[0], step)


class _NormConstraint(Constraint):
    axis: int

    @property
    def rowwise(self) -> bool:  # type: ignore[override]
        return self.axis in (1, -1)

    def _norms(self, w: np.ndarray) -> np.ndarray:
        return np.sqrt(np.sum(np.square(w), axis=self.axis, keepdims=True))

    def _column_norms(self, w: np.ndarray) -> np.ndarray:
        """``_norms(w)`` for ``axis=0`` of a 2-D ``w``, bit for bit, with scratch
        memory of one slice of rows: the sum over axis 0 adds the rows in order,
        so each slice continues from the running sum (its first row)."""
        acc: np.ndarray | None = None
        blocks = _row_blocks(w)
        for lo in blocks:
            sq = np.square(w[lo : lo + blocks.step])
            if acc is not None:
                sq[:1] += acc  # acc + row 0 == row 0 + acc: the same bits, no copy
            acc = np.sum(sq, axis=0, keepdims=True)
        if acc is None:
            return self._norms(w)
        return np.sqrt(acc)

    def _scaled(self, w: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """What ``__call__`` returns, given ``norms = _norms(w)``."""
        raise NotImplementedError


class MaxNorm(_NormConstraint):
    """``w * clip(norm, 0, max_value) / (eps + norm)``."""

    def __init__(self, max_value: float = 2.0, axis: int = 0) -> None:
        self.max_value, self.axis = float(max_value), int(axis)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return self._scaled(w, self._norms(w))

    def _scaled(self, w: np.ndarray, norms: np.ndarray) -> np.ndarray:
        desired = np.clip(norms, 0, self.max_value)
        return (w * (desired / (_EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "axis": self.axis}


class UnitNorm(_NormConstraint):
    """``w / (eps + norm)``."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = int(axis)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return self._scaled(w, self._norms(w))

    def _scaled(self, w: np.ndarray, norms: np.ndarray) -> np.ndarray:
        return (w / (_EPSILON + norms)).astype(w.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


class MinMaxNorm(_NormConstraint):
    """``w * (rate * clip(norm, min, max) + (1 - rate) * norm) / (eps + norm)``."""

    def __init__(
        self,
        min_value: float = 0.0,
        max_value: float = 1.0,
        rate: float = 1.0,
        axis: int = 0,
    ) -> None:
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.rate, self.axis = float(rate), int(axis)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return self._scaled(w, self._norms(w))

    def _scaled(self, w: np.ndarray, norms: np.ndarray) -> np.ndarray:
        desired = (
            self.rate * np.clip(norms, self.min_value, self.max_value)
            + (1 - self.rate) * norms
        )
        return (w * (desired / (_EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": self.axis,
        }


class NonNeg(Constraint):
    """Negative entries become 0."""

    rowwise = True

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return w * (w >= 0).astype(w.dtype)


def apply_to_table(
    constraint: Callable[[np.ndarray], np.ndarray], w: np.ndarray
) -> None:
    """``w[...] = constraint(w)`` for a (V, D) table, in place, with the same result.

    A ``rowwise`` constraint is applied slice of rows by slice of rows, and this
    module's norm constraints with ``axis=0`` in two passes over such slices (the
    column norms, then the scaling), so the scratch memory is one slice, never a
    (V, D) temporary. Other callables (and a norm constraint with ``axis=0`` on a
    one-column table) get the whole table.
    """
    if w.ndim != 2 or w.size == 0:
        w[...] = constraint(w)
        return
    if getattr(constraint, "rowwise", False):
        blocks = _row_blocks(w)
        for lo in blocks:
            part = w[lo : lo + blocks.step]
            part[...] = constraint(part)
        return
    own_call = type(constraint).__call__ in (
        MaxNorm.__call__,
        UnitNorm.__call__,
        MinMaxNorm.__call__,
    )
    # (With D = 1 NumPy sums the column pairwise, not row by row: slices could not
    # give the same bits, so such a table gets the whole-table call.)
    if (
        own_call
        and isinstance(constraint, _NormConstraint)
        and constraint.axis in (0, -2)
        and w.shape[1] > 1
    ):
        norms = constraint._column_norms(w)
        blocks = _row_blocks(w)
        for lo in blocks:
            part = w[lo : lo + blocks.step]
            part[...] = constraint._scaled(part, norms)
        return
    w[...] = constraint(w)


_CLASSES: dict[str, type[Constraint]] = {
    "MaxNorm": MaxNorm,
    "UnitNorm": UnitNorm,
    "NonNeg": NonNeg,
    "MinMaxNorm": MinMaxNorm,
}
_NAMES = {
    "max_norm": MaxNorm,
    "maxnorm": MaxNorm,
    "unit_norm": UnitNorm,
    "unitnorm": UnitNorm,
    "non_neg": NonNeg,
    "nonneg": NonNeg,
    "min_max_norm": MinMaxNorm,
    "minmaxnorm": MinMaxNorm,
}


def serialize(constraint: Constraint) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` as Keras."""
    return _serialize(constraint)


def deserialize(config: dict[str, Any]) -> Constraint:
    return _deserialize(config, _CLASSES, "constraint")


def get(identifier: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """A constraint from a name, a serialized dict, an object, a callable or None."""
    if identifier is None:
        return None
    if isinstance(identifier, str):
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
        if identifier.lower() in _NAMES:
            return _NAMES[identifier.lower()]()
        raise ValueError(
            f"unknown constraint {identifier!r}; use 'max_norm', 'unit_norm', "
            "'non_neg', "
            "'min_max_norm' or an object"
        )
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(f"cannot interpret {identifier!r} as a constraint")
