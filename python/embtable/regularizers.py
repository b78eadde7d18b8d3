"""Weight and activity regularizers (Keras' ``L1``, ``L2``, ``L1L2``).

A regularizer maps an array to a Python float penalty. By name: ``"l1"`` and
``"l2"`` are 0.01, ``"l1_l2"`` is 0.01 / 0.01 (Keras 2's defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._configurable import Configurable
from ._configurable import deserialize as _deserialize
from ._configurable import serialize as _serialize

__all__ = ["L1", "L1L2", "L2", "Regularizer", "deserialize", "get", "serialize"]


class Regularizer(Configurable):
    """Base class: ``__call__(x) -> float``, ``get_config()``, ``from_config()``."""

    def __call__(self, x: np.ndarray) -> float:
        raise NotImplementedError


# Elements per slice of a penalty's sum: its scratch memory (a float64 slice, 2 MiB)
# is bounded by this, never proportional to the table it is computed over.
_BLOCK = 1 << 18


def _sum_of(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """``sum(fn(x))`` in float64, computed over slices of at most about ``_BLOCK``
    elements (C-order slices of a contiguous ``x``, else slices along its first
    axis), so that a (V, D) table needs no (V, D) temporary."""
    if x.ndim == 0 or x.size <= _BLOCK:
        return float(np.sum(fn(x), dtype=np.float64))
    parts: Any
    if x.flags.c_contiguous:
        flat = x.reshape(-1)  # a view
        parts = (flat[lo : lo + _BLOCK] for lo in range(0, flat.size, _BLOCK))
    else:
        step = max(1, _BLOCK // (x.size // x.shape[0]))
        parts = (x[lo : lo + step] for lo in range(0, x.shape[0], step))
    total = 0.0
    for part in parts:
        total += float(np.sum(fn(part), dtype=np.float64))
    return total


def _square64(x: np.ndarray) -> np.ndarray:
    return np.square(x, dtype=np.float64)


def _nonneg(name: str, value: Any) -> float:
    v = float(value)
    if not v >= 0:
        raise ValueError(f"{name} must be a float >= 0, got {value!r}")
    return v


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _nonneg("l1", l1)
        self.l2 = _nonneg("l2", l2)

    def __call__(self, x: np.ndarray) -> float:
        x = np.asarray(x)
        total = 0.0
        if self.l1:
            total += self.l1 * _sum_of(x, np.abs)
        if self.l2:
            total += self.l2 * _sum_of(x, _square64)
        return total

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum(|x|)``."""

    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(x**2)``."""

    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


_CLASSES: dict[str, type[Regularizer]] = {"L1": L1, "L2": L2, "L1L2": L1L2}
_NAMES: dict[str, Callable[[], Regularizer]] = {
    "l1": L1,
    "l2": L2,
    "l1_l2": lambda: L1L2(l1=0.01, l2=0.01),
    "l1l2": lambda: L1L2(l1=0.01, l2=0.01),
}


def serialize(regularizer: Regularizer) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` as Keras."""
    return _serialize(regularizer)


def deserialize(config: dict[str, Any]) -> Regularizer:
    return _deserialize(config, _CLASSES, "regularizer")


def get(identifier: Any) -> Callable[[np.ndarray], float] | None:
    """A regularizer from a name (``"l1"``, ``"l2"``, ``"l1_l2"``), a dict,
    an object or None."""
    if identifier is None:
        return None
    if isinstance(identifier, str):
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
        if identifier.lower() in _NAMES:
            return _NAMES[identifier.lower()]()
        raise ValueError(
            f"unknown regularizer {identifier!r}; use 'l1', 'l2', 'l1_l2' or an object"
        )
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(f"cannot interpret {identifier!r} as a regularizer")
