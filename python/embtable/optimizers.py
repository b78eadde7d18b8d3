"""Optimizers for embtable layers, with Keras 3's update formulas, run in C++.

``opt.step(layer)`` applies ``layer.grad`` to ``layer.embeddings`` in place and
then the layer's constraint. A dense gradient updates every row; a ``RowGrad``
updates only its rows and their optimizer state (lazy updates, as PyTorch's
``SparseAdam`` and TF's ``LazyAdam``), fused in one pass without a dense gradient.
State (Adam's step count included) is kept per layer.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _core
from ._prefetch import _maybe_prefetch
from ._rowgrad import RowGrad

__all__ = ["SGD", "Adagrad", "Adam", "Optimizer", "RMSprop", "get"]


def _lr(value: Any) -> float:
    v = float(value)
    if not v >= 0:
        raise ValueError(f"learning_rate must be a float >= 0, got {value!r}")
    return v


class _LayerState:
    __slots__ = ("iterations", "slots")

    def __init__(self, slots: list[np.ndarray | None]) -> None:
        self.iterations = 0
        self.slots = slots


class Optimizer:
    """Base class. Subclasses set ``_kind`` and describe their state slots."""

    _kind: str = ""

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = _lr(learning_rate)
        # id(layer) -> (weakref to the layer, its state); entries die with the layer.
        self._states: dict[int, tuple[weakref.ref, _LayerState]] = {}

    # -- state -----------------------------------------------------------------
    def _slot_specs(self) -> list[float | None]:
        """Per slot (3 of them): its initial value, or None when unused."""
        raise NotImplementedError

    def _existing_state(self, layer: Any) -> _LayerState | None:
        """The layer's state if it has one that fits its table, else None."""
        entry = self._states.get(id(layer))
        table = layer.embeddings
        if entry is not None and entry[0]() is layer:
            if all(s is None or s.shape == table.shape for s in entry[1].slots):
                return entry[1]
        return None

    def _state(self, layer: Any) -> _LayerState:
        st = self._existing_state(layer)
        if st is not None:
            return st
        table = layer.embeddings
        slots: list[np.ndarray | None] = []
        for init in self._slot_specs():
            if init is None:
                slots.append(None)
            elif init == 0.0:
                slots.append(np.zeros(table.shape, dtype=table.dtype))
            else:
                slots.append(np.full(table.shape, init, dtype=table.dtype))
        return self._register(layer, _LayerState(slots))

    def _register(self, layer: Any, st: _LayerState) -> _LayerState:
        key = id(layer)
        states = self._states

        def forget(_ref: weakref.ref, key: int = key) -> None:
            states.pop(key, None)

        self._states[key] = (weakref.ref(layer, forget), st)
        return st

    def _slot_layout(self) -> list[tuple[int, str]]:
        """(position, name) of the slots this optimizer keeps, in order."""
        return [
            (i, name)
            for i, (init, name) in enumerate(
                zip(self._slot_specs(), self._slot_names(), strict=True)
            )
            if init is not None
        ]

    def iterations(self, layer: Any) -> int:
        """The number of steps applied to ``layer`` (0 before the first)."""
        entry = self._states.get(id(layer))
        return 0 if entry is None or entry[0]() is not layer else entry[1].iterations

    def state(self, layer: Any) -> dict[str, Any]:
        """The layer's state: ``iterations`` and the named slot arrays (views)."""
        st = self._state(layer)
        out: dict[str, Any] = {"iterations": st.iterations}
        for name, arr in zip(self._slot_names(), st.slots, strict=True):
            if arr is not None:
                out[name] = arr
        return out

    def set_state(self, layer: Any, state: Mapping[str, Any]) -> None:
        """Restore the layer's state: the inverse of ``state(layer)``.

        Parameters
        ----------
        layer : Embedding, EmbeddingBag or another TableLayer
            The layer whose state to set (its table fixes the slots' shape and
            dtype).
        state : mapping
            ``"iterations"`` (an int >= 0) and one array per slot this optimizer
            keeps, by name (``state(layer).keys()``), each of the table's shape and
            dtype. The arrays are copied in.

        Raises
        ------
        ValueError
            A missing or unknown slot, a wrong shape or dtype (naming the slot), or
            a bad ``iterations``. Everything is checked first: on error the
            optimizer is unchanged.
        """
        self._set_state(layer, state, copy=True)

    def _set_state(self, layer: Any, state: Mapping[str, Any], *, copy: bool) -> None:
        """``set_state``; ``copy=False`` adopts the arrays (C-contiguous, writeable,
        the table's dtype: the caller guarantees it)."""
        name = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a dict like {name}.state(layer), "
                f"got {type(state).__name__}"
            )
        layout = self._slot_layout()
        slot_names = [n for _, n in layout]
        table = layer.embeddings
        if "iterations" not in state:
            raise ValueError(f"state has no 'iterations' (the step count of {name})")
        it = state["iterations"]
        try:
            if isinstance(it, (bool, np.bool_)):
                raise TypeError
            iterations = operator.index(it)
        except TypeError:
            raise ValueError(
                f"state['iterations'] must be an int >= 0, got {it!r}"
            ) from None
        if iterations < 0:
            raise ValueError(f"state['iterations'] must be an int >= 0, got {it!r}")
        unknown = [k for k in state if k != "iterations" and k not in slot_names]
        if unknown:
            keeps = ", ".join(repr(n) for n in slot_names) or "no slots"
            raise ValueError(
                f"state has slot {unknown[0]!r}, which {self!r} does not keep "
                f"(it keeps {keeps})"
            )
        arrays: dict[str, np.ndarray] = {}
        for slot in slot_names:
            if slot not in state:
                raise ValueError(f"state is missing slot {slot!r} of {name}")
            arr = state[slot]
            if not isinstance(arr, np.ndarray):
                arr = np.asarray(arr)
            if arr.shape != table.shape:
                raise ValueError(
                    f"slot {slot!r} has shape {arr.shape} but the layer's table has "
                    f"shape {table.shape}"
                )
            if arr.dtype != table.dtype:
                raise ValueError(
                    f"slot {slot!r} has dtype {arr.dtype} but the layer's table has "
                    f"dtype {table.dtype}"
                )
            arrays[slot] = arr
        # Checked: now change.
        st = self._existing_state(layer) if copy else None
        if st is not None:
            for i, slot in layout:
                target = st.slots[i]
                assert target is not None
                np.copyto(target, arrays[slot])
        else:
            slots: list[np.ndarray | None] = [None] * len(self._slot_specs())
            for i, slot in layout:
                slots[i] = np.array(arrays[slot], order="C") if copy else arrays[slot]
            st = self._register(layer, _LayerState(slots))
        st.iterations = iterations

    def _slot_names(self) -> tuple[str, str, str]:
        return ("state1", "state2", "state3")

    def _params(self) -> dict[str, Any]:
        return {}

    # -- step ------------------------------------------------------------------
    def step(self, layer: Any) -> None:
        """Apply ``layer.grad`` to ``layer.embeddings`` in place, then the constraint.

        Does nothing when the layer is not trainable, its ``grad`` is None or a
        RowGrad with no rows. ``layer.grad`` is left for ``layer.zero_grad()``.
        """
        if not getattr(layer, "trainable", True):
            return
        grad = layer.grad
        if grad is None:
            return
        if isinstance(grad, RowGrad):
            if len(grad) == 0:
                return
            rows: np.ndarray | None = grad.indices
            values = grad.values
        else:
            rows, values = None, grad
        st = self._state(layer)
        if rows is not None:
            # Out-of-core tables and slots (np.memmap): read the touched rows ahead.
            for arr in (layer.embeddings, *st.slots):
                if arr is not None:
                    _maybe_prefetch(arr, rows)
        st.iterations += 1
        try:
            _core.optim_step(
                self._kind,
                layer.embeddings,
                rows,
                values,
                st.slots,
                learning_rate=self.learning_rate,
                step=st.iterations,
                **self._params(),
            )
        except BaseException:
            st.iterations -= 1
            raise
        apply = getattr(layer, "_apply_constraint", None)
        if apply is not None:
            apply(rows)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": type(self).__name__.lower(),
            "learning_rate": self.learning_rate,
            **self._params(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        """The optimizer of ``get_config()``; a Keras 3 optimizer's config works too.

        Keras' keys for what embtable does not do (``weight_decay``, ``clipnorm``,
        ``global_clipnorm``, ``clipvalue``, ``use_ema``, ``loss_scale_factor``,
        ``gradient_accumulation_steps``, Adam's ``amsgrad``) are dropped when unset
        and raise ValueError when set.
        """
        cfg = dict(config)
        cfg.pop("name", None)
        for key, unset in _KERAS_ONLY_KEYS.items():
            if key not in cfg:
                continue
            value = cfg.pop(key)
            if unset is not None and value not in unset:
                raise ValueError(
                    f"{cls.__name__}: {key}={value!r} is a Keras option embtable's "
                    "optimizers do not support"
                )
        return cls(**cfg)

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items() if k != "name"
        )
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``w -= lr * g``; with momentum ``m = momentum * m - lr * g; w += m``
    (nesterov: ``w += momentum * m - lr * g``)."""

    _kind = "sgd"

    def __init__(
        self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False
    ) -> None:
        super().__init__(learning_rate)
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum}")
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def _slot_specs(self) -> list[float | None]:
        return [0.0 if self.momentum != 0.0 else None, None, None]

    def _slot_names(self) -> tuple[str, str, str]:
        return ("momentum", "", "")

    def _params(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """``a += g**2; w -= lr * g / sqrt(a + epsilon)``."""

    _kind = "adagrad"

    def __init__(
        self,
        learning_rate: float = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
    ) -> None:
        super().__init__(learning_rate)
        self.initial_accumulator_value = float(initial_accumulator_value)
        if self.initial_accumulator_value < 0:
            raise ValueError("initial_accumulator_value must be >= 0")
        self.epsilon = float(epsilon)

    def _slot_specs(self) -> list[float | None]:
        return [self.initial_accumulator_value, None, None]

    def _slot_names(self) -> tuple[str, str, str]:
        return ("accumulator", "", "")

    def _params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "initial_accumulator_value": self.initial_accumulator_value,
        }


class RMSprop(Optimizer):
    """``v = rho * v + (1 - rho) * g**2``; ``w -= lr * g / sqrt(v + epsilon)``
    (centered: ``v - mg**2 + epsilon``; momentum: ``m = momentum * m + inc``)."""

    _kind = "rmsprop"

    def __init__(
        self,
        learning_rate: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
    ) -> None:
        super().__init__(learning_rate)
        self.rho = float(rho)
        self.momentum = float(momentum)
        if self.momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {self.momentum}")
        self.epsilon = float(epsilon)
        self.centered = bool(centered)

    def _slot_specs(self) -> list[float | None]:
        return [0.0, 0.0 if self.momentum > 0 else None, 0.0 if self.centered else None]

    def _slot_names(self) -> tuple[str, str, str]:
        return ("velocity", "momentum", "average_gradient")

    def _params(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }


class Adam(Optimizer):
    """``m += (g - m) * (1 - beta_1); v += (g**2 - v) * (1 - beta_2)``;
    ``w -= alpha * m / (sqrt(v) + epsilon)``,
    ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``."""

    _kind = "adam"

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        super().__init__(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        for nm, b in (("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{nm} must be in [0, 1), got {b}")
        self.epsilon = float(epsilon)

    def _slot_specs(self) -> list[float | None]:
        return [0.0, 0.0, None]

    def _slot_names(self) -> tuple[str, str, str]:
        return ("momentum", "velocity", "")

    def _params(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


# Keras 3 optimizer config keys without a counterpart here, with their unset values
# (None: any value, meaningful only with another key that is checked).
_KERAS_ONLY_KEYS: dict[str, tuple[Any, ...] | None] = {
    "weight_decay": (None, 0, 0.0),
    "clipnorm": (None,),
    "global_clipnorm": (None,),
    "clipvalue": (None,),
    "use_ema": (False,),
    "ema_momentum": None,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": (None,),
    "gradient_accumulation_steps": (None,),
    "amsgrad": (False,),
}

_BY_NAME: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def get(identifier: Any) -> Optimizer:
    """An optimizer from a name, a config dict, or an Optimizer (returned as is).

    Names: ``"sgd"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"`` or the class names;
    anything else raises ValueError. A dict is ``get_config()``'s (its ``"name"``
    picks the class) or Keras' serialized form
    ``{"class_name": "Adam", "config": {...}}`` (``keras.optimizers.serialize``).
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _BY_NAME.get(str(identifier["class_name"]).lower())
        if cls is None:
            raise ValueError(f"unknown optimizer config {identifier!r}")
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, dict):
        cls = _BY_NAME.get(str(identifier.get("name", "")).lower())
        if cls is None:
            raise ValueError(f"unknown optimizer config {identifier!r}")
        return cls.from_config(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is not None:
            return cls()
    raise ValueError(
        f"unknown optimizer {identifier!r}; use one of 'sgd', 'adagrad', "
        "'rmsprop', 'adam'"
    )
