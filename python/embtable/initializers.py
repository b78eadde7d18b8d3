"""Table initializers, by Keras name or as objects (``embtable.initializers.get``).

Each initializer is a callable ``f(shape, dtype=None) -> ndarray``; any such
callable works as a layer's ``embeddings_initializer``. A seeded initializer
gives the same values at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._configurable import Configurable
from ._configurable import deserialize as _deserialize
from ._configurable import serialize as _serialize

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "deserialize",
    "get",
    "serialize",
]


def _dtype(dtype: Any) -> np.dtype:
    dt = np.dtype("float32" if dtype is None else dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"initializers make float32 or float64 tables, got dtype {dt}")
    return dt


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


class Initializer(Configurable):
    """Base class: ``__call__(shape, dtype=None)``, ``get_config()``."""

    seed: int | None = None

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        raise NotImplementedError

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def _with_seed(self, seed: int) -> Initializer:
        if "seed" not in self.get_config():
            return self
        return type(self).from_config({**self.get_config(), "seed": seed})


class Zeros(Initializer):
    """All zeros."""

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.zeros(_shape(shape), dtype=_dtype(dtype))


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.ones(_shape(shape), dtype=_dtype(dtype))


class Constant(Initializer):
    """Every entry ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.full(_shape(shape), self.value, dtype=_dtype(dtype))

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class RandomUniform(Initializer):
    """U(minval, maxval); Keras defaults U(-0.05, 0.05)."""

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
    ):
        self.minval, self.maxval, self.seed = float(minval), float(maxval), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt = _dtype(dtype)
        out = self._rng().random(_shape(shape), dtype=dt)
        out *= dt.type(self.maxval - self.minval)
        out += dt.type(self.minval)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    """N(mean, stddev**2); Keras default stddev 0.05."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None
    ):
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt = _dtype(dtype)
        out = self._rng().standard_normal(_shape(shape), dtype=dt)
        out *= dt.type(self.stddev)
        out += dt.type(self.mean)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _truncated_standard_normal(
    rng: np.random.Generator, shape: tuple[int, ...], dt: np.dtype
) -> np.ndarray:
    # Redraw values outside [-2, 2] (two standard deviations, as Keras).
    out = rng.standard_normal(shape, dtype=dt)
    flat = out.reshape(-1)
    bad = np.flatnonzero(np.abs(flat) > 2)
    while bad.size:
        flat[bad] = rng.standard_normal(bad.size, dtype=dt)
        bad = bad[np.abs(flat[bad]) > 2]
    return out


class TruncatedNormal(Initializer):
    """N(mean, stddev**2) redrawn outside two standard deviations."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None
    ):
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt = _dtype(dtype)
        out = _truncated_standard_normal(self._rng(), _shape(shape), dt)
        out *= dt.type(self.stddev)
        out += dt.type(self.mean)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    # As Keras: a (V, D) table has fan_in = V, fan_out = D.
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(Initializer):
    """Keras' VarianceScaling: variance ``scale / fan`` (fan_in, fan_out or fan_avg)."""

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}"
            )
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "distribution must be 'truncated_normal', 'untruncated_normal' "
                "or 'uniform', "
                f"got {distribution!r}"
            )
        self.scale, self.mode, self.distribution, self.seed = (
            float(scale),
            mode,
            distribution,
            seed,
        )

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        fan_in, fan_out = _fans(shp)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[
            self.mode
        ]
        scale = self.scale / max(1.0, fan)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            # 0.8796...: the stddev of a standard normal truncated to [-2, 2].
            out = _truncated_standard_normal(rng, shp, dt)
            out *= dt.type(math.sqrt(scale) / 0.87962566103423978)
        elif self.distribution == "untruncated_normal":
            out = rng.standard_normal(shp, dtype=dt)
            out *= dt.type(math.sqrt(scale))
        else:
            limit = math.sqrt(3.0 * scale)
            out = rng.random(shp, dtype=dt)
            out *= dt.type(2 * limit)
            out -= dt.type(limit)
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


class _Preset(VarianceScaling):
    _args: tuple[float, str, str] = (1.0, "fan_in", "truncated_normal")

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(*self._args, seed=seed)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


class GlorotUniform(_Preset):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""

    _args = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out))."""

    _args = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    """U(-l, l), l = sqrt(6 / fan_in)."""

    _args = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    """Truncated normal with stddev sqrt(2 / fan_in)."""

    _args = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """U(-l, l), l = sqrt(3 / fan_in)."""

    _args = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """Truncated normal with stddev sqrt(1 / fan_in)."""

    _args = (1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain`` (QR of a normal matrix, as Keras)."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain, self.seed = float(gain), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        if len(shp) < 2:
            raise ValueError(f"Orthogonal needs a shape of rank >= 2, got {shp}")
        rows = int(np.prod(shp[:-1]))
        cols = shp[-1]
        a = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return np.ascontiguousarray((self.gain * q).reshape(shp), dtype=dt)

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain, "seed": self.seed}


_CLASSES: dict[str, type[Initializer]] = {
    c.__name__: c
    for c in (
        Zeros,
        Ones,
        Constant,
        RandomUniform,
        RandomNormal,
        TruncatedNormal,
        VarianceScaling,
        GlorotUniform,
        GlorotNormal,
        HeUniform,
        HeNormal,
        LecunUniform,
        LecunNormal,
        Orthogonal,
    )
}
_NAMES: dict[str, Callable[[], Initializer]] = {
    "uniform": RandomUniform,
    "random_uniform": RandomUniform,
    "normal": RandomNormal,
    "random_normal": RandomNormal,
    "truncated_normal": TruncatedNormal,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
    "zeros": Zeros,
    "zero": Zeros,
    "ones": Ones,
    "one": Ones,
    "constant": Constant,
    "orthogonal": Orthogonal,
    "variance_scaling": VarianceScaling,
}


def serialize(initializer: Initializer) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` as Keras."""
    return _serialize(initializer)


def deserialize(config: dict[str, Any]) -> Initializer:
    return _deserialize(config, _CLASSES, "initializer")


def get(identifier: Any, seed: int | None = None) -> Callable[..., np.ndarray]:
    """An initializer from a Keras name, a serialized dict, an object or a callable.

    ``seed`` seeds a named initializer (and an unseeded embtable object).
    """
    if identifier is None:
        identifier = "uniform"
    if isinstance(identifier, str):
        key = identifier if identifier in _CLASSES else identifier.lower()
        if key in _CLASSES:
            init: Initializer = _CLASSES[key]()
        elif key in _NAMES:
            init = _NAMES[key]()
        else:
            raise ValueError(
                f"unknown initializer {identifier!r}; use one of {sorted(_NAMES)} "
                "or a callable "
                "f(shape, dtype)"
            )
        return init._with_seed(seed) if seed is not None else init
    if isinstance(identifier, dict):
        return get(deserialize(identifier), seed)
    if isinstance(identifier, Initializer):
        if seed is not None and identifier.seed is None:
            return identifier._with_seed(seed)
        return identifier
    if callable(identifier):
        return identifier
    raise ValueError(f"cannot interpret {identifier!r} as an initializer")
