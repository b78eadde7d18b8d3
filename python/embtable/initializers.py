"""Table initializers, by Keras name or as objects (``embtable.initializers.get``).

Each initializer is a callable ``f(shape, dtype=None) -> ndarray``; any such
callable works as a layer's ``embeddings_initializer``. A seeded initializer
gives the same values at every call.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
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
    "Identity",
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
    # How ``__call__`` draws, for making a table's rows apart (embtable.distributed):
    # "fill" (no randomness), "uniform" (one rng.random), "normal" (one
    # rng.standard_normal), "truncated_normal" (_truncated_standard_normal), each then
    # passed through ``_finish``; None: only the whole table at once.
    _draw: str | None = None

    def _finish(self, out: np.ndarray, shape: tuple[int, ...], dt: np.dtype) -> None:
        """The elementwise step after the draw, in place (``shape``: the whole
        table's, for the fans)."""

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

    _draw = "fill"

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.zeros(_shape(shape), dtype=_dtype(dtype))


class Ones(Initializer):
    """All ones."""

    _draw = "fill"

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.ones(_shape(shape), dtype=_dtype(dtype))


class Constant(Initializer):
    """Every entry ``value``."""

    _draw = "fill"

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.full(_shape(shape), self.value, dtype=_dtype(dtype))

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class RandomUniform(Initializer):
    """U(minval, maxval); Keras defaults U(-0.05, 0.05)."""

    _draw = "uniform"

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
    ):
        self.minval, self.maxval, self.seed = float(minval), float(maxval), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        out = self._rng().random(shp, dtype=dt)
        self._finish(out, shp, dt)
        return out

    def _finish(self, out: np.ndarray, shape: tuple[int, ...], dt: np.dtype) -> None:
        out *= dt.type(self.maxval - self.minval)
        out += dt.type(self.minval)

    def get_config(self) -> dict[str, Any]:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    """N(mean, stddev**2); Keras default stddev 0.05."""

    _draw = "normal"

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None
    ):
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        out = self._rng().standard_normal(shp, dtype=dt)
        self._finish(out, shp, dt)
        return out

    def _finish(self, out: np.ndarray, shape: tuple[int, ...], dt: np.dtype) -> None:
        out *= dt.type(self.stddev)
        out += dt.type(self.mean)

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _truncated_standard_normal(
    rng: np.random.Generator, shape: tuple[int, ...], dt: np.dtype
) -> np.ndarray:
    # Redraw values outside [-2, 2] (two standard deviations, as Keras).
    out = rng.standard_normal(shape, dtype=dt)
    flat = out.reshape(-1)
    bad = _outside(flat)
    while bad.size:
        bad = _redraw(flat, bad, rng.standard_normal(bad.size, dtype=dt))
    return out


# Values per slice when looking for a truncated normal's redraws: the scratch
# memory of the search, never a temporary the size of the table.
_SLICE = 1 << 18


def _outside(flat: np.ndarray) -> np.ndarray:
    """Positions of the values a truncated normal redraws (|x| > 2), ascending."""
    if flat.size <= _SLICE:
        return np.flatnonzero(np.abs(flat) > 2)
    return np.concatenate(
        [
            np.flatnonzero(np.abs(flat[lo : lo + _SLICE]) > 2) + lo
            for lo in range(0, flat.size, _SLICE)
        ]
    )


def _redraw(flat: np.ndarray, bad: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One round of redrawing: ``values`` into the positions ``bad``; those still
    outside. A block of the table can run its own rounds with its share of each
    round's values: the draws stay in the order of the whole table's positions."""
    flat[bad] = values
    return bad[np.abs(flat[bad]) > 2]


class TruncatedNormal(Initializer):
    """N(mean, stddev**2) redrawn outside two standard deviations."""

    _draw = "truncated_normal"

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None
    ):
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        out = _truncated_standard_normal(self._rng(), shp, dt)
        self._finish(out, shp, dt)
        return out

    def _finish(self, out: np.ndarray, shape: tuple[int, ...], dt: np.dtype) -> None:
        out *= dt.type(self.stddev)
        out += dt.type(self.mean)

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _fans(
    shape: tuple[int, ...],
    input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> tuple[float, float]:
    # As Keras: a (V, D) table has fan_in = V, fan_out = D. Keras 3.15's input_axes
    # and output_axes (both given) name the axes whose sizes multiply into each fan.
    if input_axes is not None and output_axes is not None:
        fan_in = math.prod(shape[a] for a in input_axes)
        fan_out = math.prod(shape[a] for a in output_axes)
        return float(fan_in), float(fan_out)
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(Initializer):
    """Keras' VarianceScaling: variance ``scale / fan`` (fan_in, fan_out or fan_avg).

    A ``(V, D)`` table has ``fan_in = V`` and ``fan_out = D``. As Keras 3.15,
    ``input_axes`` and ``output_axes`` (both given) name the axes whose sizes
    multiply into ``fan_in`` and ``fan_out`` instead.
    """

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
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
        self.input_axes = _axes("input_axes", input_axes)
        self.output_axes = _axes("output_axes", output_axes)

    @property
    def _draw(self) -> str:  # type: ignore[override]
        return {"untruncated_normal": "normal"}.get(
            self.distribution, self.distribution
        )

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            out = _truncated_standard_normal(rng, shp, dt)
        elif self.distribution == "untruncated_normal":
            out = rng.standard_normal(shp, dtype=dt)
        else:
            out = rng.random(shp, dtype=dt)
        self._finish(out, shp, dt)
        return out

    def _finish(self, out: np.ndarray, shape: tuple[int, ...], dt: np.dtype) -> None:
        fan_in, fan_out = _fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[
            self.mode
        ]
        scale = self.scale / max(1.0, fan)
        if self.distribution == "truncated_normal":
            # 0.8796...: the stddev of a standard normal truncated to [-2, 2].
            out *= dt.type(math.sqrt(scale) / 0.87962566103423978)
        elif self.distribution == "untruncated_normal":
            out *= dt.type(math.sqrt(scale))
        else:
            limit = math.sqrt(3.0 * scale)
            out *= dt.type(2 * limit)
            out -= dt.type(limit)

    def _axes_config(self) -> dict[str, Any]:
        # Only when set: Keras before 3.15 has no such arguments.
        out: dict[str, Any] = {}
        if self.input_axes is not None:
            out["input_axes"] = list(self.input_axes)
        if self.output_axes is not None:
            out["output_axes"] = list(self.output_axes)
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
            **self._axes_config(),
        }


def _axes(name: str, axes: Any) -> tuple[int, ...] | None:
    """Keras 3.15's ``input_axes`` / ``output_axes``: None or a list of ints."""
    if axes is None:
        return None
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        return (int(axes),)
    try:
        return tuple(operator.index(a) for a in axes)
    except TypeError:
        raise ValueError(
            f"{name} must be None or a list of ints, got {axes!r}"
        ) from None


class _Preset(VarianceScaling):
    _args: tuple[float, str, str] = (1.0, "fan_in", "truncated_normal")

    def __init__(
        self,
        seed: int | None = None,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            *self._args, seed=seed, input_axes=input_axes, output_axes=output_axes
        )

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, **self._axes_config()}


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


class Identity(Initializer):
    """``gain`` times the (rectangular) identity matrix, as Keras' ``Identity``:
    row ``i < min(V, D)`` is ``gain * e_i``, the others are zero."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        dt, shp = _dtype(dtype), _shape(shape)
        if len(shp) != 2:
            raise ValueError(f"Identity needs a 2-D shape, got {shp}")
        out = np.eye(*shp, dtype=dt)
        out *= dt.type(self.gain)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}


def _split_kind(init: Any) -> str | None:
    """How rows of ``init((V, D), dtype)`` can be made apart (``Initializer._draw``);
    None for Orthogonal, Identity, other callables and subclasses defined elsewhere (they may
    draw otherwise)."""
    if not isinstance(init, Initializer) or type(init).__module__ != __name__:
        return None
    return init._draw


def _seeded(init: Initializer) -> Initializer:
    """``init`` with a fixed seed (a fresh one when unseeded), so that every block of
    one table comes from one stream."""
    if init.seed is not None or "seed" not in init.get_config():
        return init
    return init._with_seed(int(np.random.SeedSequence().entropy))  # type: ignore[arg-type]


def _local_rows(
    init: Initializer, shape: tuple[int, int], dt: np.dtype, start: int, stop: int
) -> np.ndarray:
    """Rows ``[start, stop)`` of ``init(shape, dt)``, bit for bit, made without the
    other rows; for ``_draw`` "fill" and "uniform" only.

    ``Generator.random`` makes each float64 from one 64-bit output of the PCG64 bit
    generator and each float32 from one 32-bit half of an output (the low half
    first; the high half is kept for the next float32). So entry ``e`` of the table
    comes from output ``e`` (float64) or ``e // 2`` (float32), and
    ``bit_generator.advance(n)`` (which also drops a kept half) skips to it:
    V = 5, D = 3, float32, rows [3, 5) -> entries 9..14 -> advance(4), draw 7, drop 1.
    """
    n, D = stop - start, shape[1]
    if init._draw == "fill":
        return init((n, D), dt)
    if init._draw != "uniform":
        raise ValueError(f"{init!r} draws its rows in sequence, not apart")
    rng = init._rng()
    per = 2 if dt == np.float32 else 1
    first = start * D
    rng.bit_generator.advance(first // per)  # type: ignore[attr-defined]
    skip = first % per
    out = rng.random(skip + n * D, dtype=dt)[skip:].reshape(n, D)
    init._finish(out, shape, dt)
    return out


def _normal_blocks(
    init: Initializer, shape: tuple[int, int], dt: np.dtype, bounds: Sequence[int]
) -> Iterator[np.ndarray]:
    """Rows ``[bounds[k], bounds[k + 1])`` of ``init(shape, dt)`` for each k in turn,
    bit for bit, for ``_draw`` "normal": one generator draws the blocks in order
    (its state, a kept 32-bit half included, carries over from one call to the
    next, so the draws are those of one call for the whole table)."""
    rng = init._rng()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        out = rng.standard_normal((int(hi) - int(lo), shape[1]), dtype=dt)
        init._finish(out, shape, dt)
        yield out
        del out  # before the next block is drawn: one block at a time


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
        Identity,
    )
}
# Keras' older class names, still read by Keras 3.
_CLASSES["IdentityInitializer"] = Identity
_CLASSES["OrthogonalInitializer"] = Orthogonal
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
    "identity": Identity,
    "variance_scaling": VarianceScaling,
}


def serialize(initializer: Initializer) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` as Keras."""
    return _serialize(initializer)


def deserialize(config: dict[str, Any]) -> Initializer:
    """The initializer of ``{"class_name": ..., "config": ...}`` (Keras' form too).

    Keras writes an initializer seeded with a ``keras.random.SeedGenerator`` as
    ``"seed": {"class_name": "SeedGenerator", "config": {"seed": 3, ...}}``; that
    reads as ``seed=3``.
    """
    inner = config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("seed"), dict):
        seed = inner["seed"]
        if seed.get("class_name") != "SeedGenerator":
            raise ValueError(f"cannot read seed {seed!r}: an int or None is needed")
        config = {**config, "config": {**inner, "seed": _seed_generator_seed(seed)}}
    return _deserialize(config, _CLASSES, "initializer")


def _seed_generator_seed(entry: dict[str, Any]) -> int | None:
    seed = (entry.get("config") or {}).get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
    ):
        raise ValueError(f"cannot read the SeedGenerator seed {seed!r}")
    return None if seed is None else int(seed)


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
