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


class _NormConstraint(Constraint):
    axis: int

    @property
    def rowwise(self) -> bool:  # type: ignore[override]
        return self.axis in (1, -1)

    def _norms(self, w: np.ndarray) -> np.ndarray:
        return np.sqrt(np.sum(np.square(w), axis=self.axis, keepdims=True))


class MaxNorm(_NormConstraint):
    """``w * clip(norm, 0, max_value) / (eps + norm)``."""

    def __init__(self, max_value: float = 2.0, axis: int = 0) -> None:
        self.max_value, self.axis = float(max_value), int(axis)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        norms = self._norms(w)
        desired = np.clip(norms, 0, self.max_value)
        return (w * (desired / (_EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "axis": self.axis}


class UnitNorm(_NormConstraint):
    """``w / (eps + norm)``."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = int(axis)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return (w / (_EPSILON + self._norms(w))).astype(w.dtype, copy=False)

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
        norms = self._norms(w)
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
