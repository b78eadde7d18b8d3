"""Trainable embedding layers over the C++ core.

``TableLayer`` is the shared base (the table, its initializer / regularizer /
constraint, gradients, weights, config and files); ``Embedding`` is the
Keras-compatible lookup layer on top of it, and ``EmbeddingBag`` the pooled layer
over ``embedding_bag`` (``torch.nn.EmbeddingBag``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from . import _bag, _checkpoint, _core, constraints, initializers, regularizers
from ._indices import as_indices
from ._prefetch import _maybe_prefetch
from ._rowgrad import RowGrad

__all__ = ["Embedding", "EmbeddingBag", "TableLayer"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# ``Embedding.load(...)`` / ``from_config(...)`` are typed as the class they are called on.
_Layer = TypeVar("_Layer", bound="TableLayer")
_name_counters: dict[str, itertools.count] = {}


# Keras config keys without a meaning here; dropped by from_config when unset.
_KERAS_ONLY_KEYS = (
    "lora_rank",
    "lora_alpha",
    "quantization_config",
    "batch_input_shape",
    "batch_shape",
    "input_shape",
    "autocast",
)
_UNSET: tuple[Any, ...] = (None, 0, False, [], ())  # a Keras-only key left unset


def _lengths(input_length: Any) -> list[Any]:
    """``input_length`` as a list of sizes after the batch dimension (Keras 2 takes an
    int, or a list for ids of 3 or more dimensions)."""
    if isinstance(input_length, (list, tuple)):
        return list(input_length)
    return [input_length]


def _agree(a: list[Any], b: list[Any]) -> bool:
    """Same rank, and equal sizes wherever both are known (``None``: unknown)."""
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b, strict=True)
    )


def _input_length_from_batch_shape(batch_input_shape: Any, input_length: Any) -> Any:
    """The ``input_length`` of a Keras 2 config that holds ``batch_input_shape``
    (``[batch, *lengths]``, e.g. ``[None, 10]`` for ``input_length=10`` and
    ``[None, None]`` without one): ``input_length`` itself when given (the two must
    agree, else ``ValueError``), else the lengths (``None`` when all unknown)."""
    if batch_input_shape in _UNSET:
        return input_length
    if not isinstance(batch_input_shape, (list, tuple)):
        raise ValueError(
            "batch_input_shape must be a list [batch_size, length, ...], got "
            f"{batch_input_shape!r}"
        )
    lengths = list(batch_input_shape[1:])
    if len(lengths) == 1 and isinstance(lengths[0], (list, tuple)):
        lengths = list(lengths[0])  # Keras 2 nests a list input_length: [None, [4, 5]]
    if input_length is None:
        if all(v is None for v in lengths):
            return None
        return lengths[0] if len(lengths) == 1 else lengths
    if not _agree(_lengths(input_length), lengths):
        raise ValueError(
            f"batch_input_shape {list(batch_input_shape)} disagrees with "
            f"input_length={input_length!r}"
        )
    return input_length


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if int(value) <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _float_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype("float32" if dtype is None else dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt.newbyteorder("=")


def _auto_name(prefix: str) -> str:
    n = next(_name_counters.setdefault(prefix, itertools.count()))
    return prefix if n == 0 else f"{prefix}_{n}"


def _serialize_callable(obj: Any, module: Any) -> Any:
    """Keras-style config entry: embtable objects as {class_name, config},
    other callables by qualified name."""
    if obj is None:
        return None
    base = {
        initializers: initializers.Initializer,
        regularizers: regularizers.Regularizer,
        constraints: constraints.Constraint,
    }[module]
    if isinstance(obj, base) and type(obj).__name__ in module._CLASSES:
        return module.serialize(obj)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{mod}.{qualname}" if mod else qualname


def _deserialize_callable(
    entry: Any, module: Any, custom_objects: Mapping[str, Any] | None
) -> Any:
    if entry is None:
        return None
    if isinstance(entry, dict):
        name = str(entry.get("class_name"))
        if custom_objects and name in custom_objects:
            target = custom_objects[name]
            cfg = entry.get("config") or {}
            return target.from_config(cfg) if hasattr(target, "from_config") else target
        return module.deserialize(entry)
    if isinstance(entry, str) and custom_objects:
        for key in (entry, entry.rsplit(".", 1)[-1]):
            if key in custom_objects:
                return custom_objects[key]
    return entry  # a name: the module's get() resolves it or raises ValueError


def _pretrained_table(embeddings: Any, padding_idx: Any) -> tuple[np.ndarray, Any]:
    """``from_pretrained``'s table (float32 or float64, as given; other real dtypes
    become float32) and ``padding_idx`` with a negative value counted from the end,
    as PyTorch does."""
    if hasattr(embeddings, "detach") and hasattr(embeddings, "numpy"):
        embeddings = embeddings.detach().cpu().numpy()  # a torch tensor / Parameter
    w = np.asarray(embeddings)
    if w.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D (num_embeddings, embedding_dim), got shape {w.shape}"
        )
    if w.dtype.kind not in "fiu":
        raise TypeError(f"embeddings must hold real numbers, got dtype {w.dtype}")
    dtype = w.dtype if w.dtype in _FLOATS else np.dtype(np.float32)
    V = int(w.shape[0])
    if padding_idx is not None and not isinstance(padding_idx, bool):
        if isinstance(padding_idx, (int, np.integer)) and -V <= padding_idx < 0:
            padding_idx = V + int(padding_idx)
    return w.astype(dtype.newbyteorder("="), copy=False), padding_idx


def _no_scale_grad_by_freq(scale_grad_by_freq: bool) -> None:
    if scale_grad_by_freq:
        raise ValueError(
            "scale_grad_by_freq=True is not supported by the NumPy layers "
            "(embtable.torch supports it)"
        )


def _fresh_table(init: Any, table: np.ndarray, dtype: np.dtype) -> bool:
    """Whether ``table``, just returned by ``init``, can become the layer's table
    without a copy: embtable's own initializers return a new array that nothing
    else holds; another callable may return one it keeps (then it is copied)."""
    return (
        isinstance(init, initializers.Initializer)
        and type(init).__module__ == initializers.__name__
        and type(table) is np.ndarray
        and table.dtype == dtype
        and table.flags.c_contiguous
        and table.flags.writeable
        and table.flags.owndata
    )


class TableLayer:
    """Base of embtable's table layers: one ``(V, D)`` table and its training plumbing.

    It owns ``embeddings`` (C-contiguous, created at construction, read and written
    in place by the core), ``dtype``, the initializer / regularizer / constraint,
    ``trainable``, ``sparse``, ``padding_idx``, ``max_norm`` / ``norm_type``,
    ``grad`` / ``zero_grad()``, ``get_weights`` / ``set_weights``, ``save`` /
    ``load`` and ``get_config`` / ``from_config``.

    A subclass (e.g. a pooled layer) does:

    - ``__init__``: call ``super().__init__(V, D, ...)`` with the shared arguments,
      then set its own; set ``_DIM_KEYS`` (the constructor's names of V and D,
      e.g. ``("num_embeddings", "embedding_dim")``) and ``_DEFAULT_NAME``; extend
      ``get_config()`` with its extra keys. ``from_config`` calls ``cls(**config)``,
      so the constructor must accept every key ``get_config()`` returns (or
      ``get_config()`` pops the ones it does not take).
    - ``forward(...)`` (``layer(...)`` calls it):
      ``ids = self._prepare_ids(indices)`` (integer or whole-float ids,
      validated against V: IndexError before any change), then
      ``self._renorm(ids)`` (max_norm, in place), then its lookup on
      ``self.embeddings``; remember what backward needs.
    - backward: compute the gradient of each looked-up id as ``rows`` of shape
      ``ids.shape + (D,)`` and call ``self._accumulate_rows(ids, rows)`` (dense:
      scatter-add into the reused ``(V, D)`` buffer; sparse: a coalesced
      ``RowGrad`` merged into ``grad``; the ``padding_idx`` row never gets any),
      or pass a ready ``RowGrad`` / dense array to ``self._accumulate_grad(g)``.
      Return ``self.grad``.
    - ``self._check_grad_output(grad_output, expected_shape)`` converts and checks
      an upstream gradient (ValueError naming both shapes).

    Optimizers read ``grad``, ``embeddings``, ``trainable`` and call
    ``_apply_constraint(rows)`` after a step.
    """

    # Constructor names of (V, D) in get_config / from_config.
    _DIM_KEYS: ClassVar[tuple[str, str]] = ("input_dim", "output_dim")
    _DEFAULT_NAME: ClassVar[str] = "table"

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        *,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        embeddings_constraint: Any = None,
        weights: Any = None,
        dtype: Any = "float32",
        seed: int | None = None,
        name: str | None = None,
        trainable: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        sparse: bool = False,
    ) -> None:
        V = _positive_int(self._DIM_KEYS[0], input_dim)
        D = _positive_int(self._DIM_KEYS[1], output_dim)
        self._dtype = _float_dtype(dtype)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
        ):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(
                padding_idx, (int, np.integer)
            ):
                raise ValueError(
                    f"padding_idx must be an int in [0, {V}), got {padding_idx!r}"
                )
            if not 0 <= int(padding_idx) < V:
                raise ValueError(
                    f"padding_idx must be in [0, {V}) (the table's rows), "
                    f"got {padding_idx}"
                )
            padding_idx = int(padding_idx)
        self.padding_idx: int | None = padding_idx
        if max_norm is not None:
            max_norm = float(max_norm)
            if not max_norm > 0:
                raise ValueError(
                    f"max_norm must be a positive float or None, got {max_norm}"
                )
        self.max_norm: float | None = max_norm
        norm_type = float(norm_type)
        if not norm_type > 0:
            raise ValueError(
                f"norm_type must be > 0 (2.0 for the Euclidean norm), got {norm_type}"
            )
        self.norm_type = norm_type
        self.sparse = bool(sparse)
        self.trainable = bool(trainable)
        self.name = name if name is not None else _auto_name(self._DEFAULT_NAME)
        self.embeddings_initializer = initializers.get(
            embeddings_initializer, self.seed
        )
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        if weights is not None:
            self.embeddings = self._table_from_weights(weights, V, D)
        else:
            table = self.embeddings_initializer((V, D), self._dtype)
            table = np.asarray(table)
            if table.shape != (V, D):
                raise ValueError(
                    f"embeddings_initializer returned shape {table.shape}, "
                    f"expected {(V, D)}"
                )
            if _fresh_table(self.embeddings_initializer, table, self._dtype):
                self.embeddings = table  # adopted: a second (V, D) copy is not made
            else:
                self.embeddings = np.array(
                    table, dtype=self._dtype, order="C", copy=True
                )
            if self.padding_idx is not None:
                self.embeddings[self.padding_idx] = 0
        self._grad: np.ndarray | RowGrad | None = None  # see grad / zero_grad
        self._grad_buffer: np.ndarray | None = None
        self._losses: list[float] = []

    def forward(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """Same as ``forward``."""
        return self.forward(*args, **kwargs)

    # -- table ---------------------------------------------------------------
    def _table_from_weights(self, weights: Any, V: int, D: int) -> np.ndarray:
        if isinstance(weights, (list, tuple)):
            if len(weights) != 1:
                raise ValueError(
                    f"weights must be one array or [array], got {len(weights)} arrays"
                )
            weights = weights[0]
        w = np.asarray(weights)
        if w.shape != (V, D):
            raise ValueError(
                f"weights have shape {w.shape} but the table has shape {(V, D)}"
            )
        if w.dtype.kind not in "fiu":
            raise ValueError(f"weights must be numeric, got dtype {w.dtype}")
        return np.array(w, dtype=self._dtype, order="C", copy=True)

    @property
    def input_dim(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def dtype(self) -> str:
        return self._dtype.name

    def count_params(self) -> int:
        """V * D."""
        return int(self.embeddings.size)

    def get_weights(self) -> list[np.ndarray]:
        """``[copy of the table]``."""
        return [self.embeddings.copy()]

    def set_weights(self, weights: Any) -> None:
        """Copy ``[table]`` into the table in place (same shape, else ValueError)."""
        if not isinstance(weights, (list, tuple)) or len(weights) != 1:
            raise ValueError("set_weights expects a list with one (V, D) array")
        w = np.asarray(weights[0])
        if w.shape != self.embeddings.shape:
            raise ValueError(
                f"weights have shape {w.shape} but the table has shape "
                f"{self.embeddings.shape}"
            )
        self.embeddings[...] = w

    @property
    def weights(self) -> list[np.ndarray]:
        """``[embeddings]`` (the table itself, not a copy)."""
        return [self.embeddings]

    # -- ids -----------------------------------------------------------------
    def _prepare_ids(self, indices: Any) -> np.ndarray:
        """Native int32/int64 ids, validated against V (IndexError before any change).

        Float ids with whole values are accepted (Keras models feed float ids);
        a fractional, inf or nan value raises TypeError.
        """
        V = self.input_dim
        arr = indices
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
            if arr.size == 0 and arr.dtype == np.float64:
                arr = np.zeros(arr.shape, dtype=np.int64)
        if arr.dtype.kind == "f":
            flat = arr.reshape(-1)
            whole = np.isfinite(flat) & (flat == np.floor(flat))
            if not bool(np.all(whole)):
                pos = int(np.flatnonzero(~whole)[0])
                where = np.unravel_index(pos, arr.shape) if arr.ndim else ()
                raise TypeError(
                    f"ids must be whole numbers, got {flat[pos]!r} at position "
                    f"{tuple(int(i) for i in where)}"
                    "; round them or pass an integer array"
                )
            bad = np.flatnonzero((flat < 0) | (flat >= V))
            if bad.size:
                pos = int(bad[0])
                raise IndexError(
                    _core.index_error_message(
                        str(int(flat[pos])), list(arr.shape), pos, V
                    )
                )
            arr = arr.astype(np.int64)
        ids = as_indices(arr, V, "ids")
        # Validate here too (gather would, but renorm and backward come first/later).
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= V:
                flat_ids = ids.reshape(-1)
                pos = int(np.flatnonzero((flat_ids < 0) | (flat_ids >= V))[0])
                raise IndexError(
                    _core.index_error_message(
                        str(int(flat_ids[pos])), list(ids.shape), pos, V
                    )
                )
        return ids

    def _renorm(self, ids: np.ndarray) -> None:
        """max_norm: rescale the looked-up rows in place (after ids were validated)."""
        if self.max_norm is not None and ids.size:
            _core.embedding_renorm(self.embeddings, ids, self.max_norm, self.norm_type)

    # -- gradients -----------------------------------------------------------
    @property
    def grad(self) -> np.ndarray | RowGrad | None:
        """The accumulated gradient: None, a (V, D) array or a RowGrad (sparse)."""
        return self._grad

    def zero_grad(self) -> None:
        """Drop the gradient (``grad`` becomes None). A dense layer keeps its (V, D)
        buffer and zeroes it at the next backward, so the array a previous
        ``backward`` returned is reused."""
        self._grad = None

    def _dense_grad(self) -> np.ndarray:
        if self._grad is None:
            buf = self._grad_buffer
            if buf is None:
                buf = np.zeros(self.embeddings.shape, dtype=self._dtype)
                self._grad_buffer = buf
            else:
                buf.fill(0)
            self._grad = buf
        assert isinstance(self._grad, np.ndarray)
        return self._grad

    def _check_grad_output(
        self, grad_output: Any, expected: tuple[int, ...]
    ) -> np.ndarray:
        g = np.asarray(grad_output)
        if g.shape != tuple(expected):
            raise ValueError(
                f"grad_output has shape {g.shape} but the output had shape "
                f"{tuple(expected)}"
            )
        if g.dtype != self._dtype:
            if g.dtype.kind not in "fiu":
                raise TypeError(
                    f"grad_output must be a float array, got dtype {g.dtype}"
                )
            g = g.astype(self._dtype)
        return np.ascontiguousarray(g)

    def _accumulate_rows(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Add ``rows`` (``ids.shape + (D,)``, one per id) into ``grad``."""
        if self.sparse:
            pad = -1 if self.padding_idx is None else self.padding_idx
            r, v = _core.rowgrad_coalesce(ids, rows, self.input_dim, pad)
            self._accumulate_grad(RowGrad._trusted(r, v))
            return
        g = self._dense_grad()
        _core.scatter_add(g, ids, rows, deterministic=True)
        if self.padding_idx is not None:
            g[self.padding_idx] = 0

    def _accumulate_grad(self, grad: RowGrad | np.ndarray) -> None:
        """Add a ready gradient (a RowGrad, or a dense (V, D) array) into ``grad``."""
        if self.sparse:
            if not isinstance(grad, RowGrad):
                raise TypeError("a sparse layer accumulates RowGrads")
            if grad.width != self.output_dim or grad.dtype != self._dtype:
                raise ValueError(
                    f"RowGrad of width {grad.width} / {grad.dtype} does not fit "
                    "a table of "
                    f"shape {self.embeddings.shape} / {self._dtype}"
                )
            if self.padding_idx is not None and len(grad):
                keep = grad.indices != self.padding_idx
                if not bool(np.all(keep)):
                    grad = RowGrad._trusted(grad.indices[keep], grad.values[keep])
            self._grad = grad if self._grad is None else self._grad.merge(grad)  # type: ignore[union-attr]
            return
        g = self._dense_grad()
        if isinstance(grad, RowGrad):
            g[grad.indices] += grad.values
        else:
            g += grad
        if self.padding_idx is not None:
            g[self.padding_idx] = 0

    # -- constraint ----------------------------------------------------------
    def _apply_constraint(self, rows: np.ndarray | None = None) -> None:
        """Apply the constraint after an optimizer step: to ``rows`` only when it acts
        row by row and the step was lazy, else to the whole table."""
        c = self.embeddings_constraint
        if c is None:
            return
        if rows is not None and getattr(c, "rowwise", False):
            if rows.size:
                self.embeddings[rows] = c(self.embeddings[rows])
            return
        constraints.apply_to_table(c, self.embeddings)

    # -- losses --------------------------------------------------------------
    @property
    def losses(self) -> list[float]:
        """The regularization terms (Python floats) of the last call."""
        return list(self._losses)

    def _table_losses(self) -> list[float]:
        if self.embeddings_regularizer is None:
            return []
        return [float(self.embeddings_regularizer(self.embeddings))]

    # -- config and files ----------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """A JSON-serializable dict with the Keras keys (plus the PyTorch ones)."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": self.dtype,
            self._DIM_KEYS[0]: self.input_dim,
            self._DIM_KEYS[1]: self.output_dim,
            "embeddings_initializer": _serialize_callable(
                self.embeddings_initializer, initializers
            ),
            "embeddings_regularizer": _serialize_callable(
                self.embeddings_regularizer, regularizers
            ),
            "embeddings_constraint": _serialize_callable(
                self.embeddings_constraint, constraints
            ),
            "seed": self.seed,
            "padding_idx": self.padding_idx,
            "max_norm": self.max_norm,
            "norm_type": self.norm_type,
            "sparse": self.sparse,
        }

    @classmethod
    def from_config(
        cls: type[_Layer],
        config: Mapping[str, Any],
        custom_objects: Mapping[str, Any] | None = None,
    ) -> _Layer:
        """Rebuild a layer from ``get_config()``; ``custom_objects`` maps the names of
        other callables (qualified or short) to the objects.

        A Keras 3 ``Embedding`` config works too: its dtype policy dict is read by
        name (a mixed-precision policy, ``"mixed_float16"`` or ``"mixed_bfloat16"``,
        by its variable dtype: a float32 table) and its unset LoRA / quantization /
        input-shape keys are ignored.
        """
        cfg = dict(config)
        dtype = cfg.get("dtype")
        if isinstance(dtype, dict):  # Keras 3 DTypePolicy
            dtype = (dtype.get("config") or {}).get("name", "float32")
            cfg["dtype"] = dtype
        if dtype in ("mixed_float16", "mixed_bfloat16"):
            # Keras keeps a mixed policy's variables (the table) in float32.
            cfg["dtype"] = "float32"
        for key in _KERAS_ONLY_KEYS:
            if key in cfg and cfg[key] in _UNSET:
                del cfg[key]
        for key, module in (
            ("embeddings_initializer", initializers),
            ("embeddings_regularizer", regularizers),
            ("activity_regularizer", regularizers),
            ("embeddings_constraint", constraints),
        ):
            if key in cfg:
                cfg[key] = _deserialize_callable(cfg[key], module, custom_objects)
        return cls(**cfg)

    def save(self, path: str | os.PathLike[str], optimizer: Any = None) -> Path:
        """Write the table and config (and ``optimizer``'s state) to an ``.npz``.

        Parameters
        ----------
        path : str or os.PathLike
            The file; ``.npz`` is appended when its suffix is another.
        optimizer : embtable.optimizers.Optimizer, optional
            Also save its class, hyperparameters and its state for this layer
            (``iterations`` and every slot), so that ``load(path, optimizer)``
            resumes training bitwise.

        Returns
        -------
        pathlib.Path
            The path written (with the ``.npz`` suffix).

        Notes
        -----
        The save is atomic: a temporary file in the same folder, fsynced, then
        renamed over ``path``; a crash at any moment leaves the previous file or the
        new one. The arrays are streamed to disk (a memmap table is not copied into
        memory). A save while another thread trains the layer writes a file that
        loads, but its rows may come from different steps: for a consistent
        snapshot, pause the training. Readable with
        ``np.load(path, allow_pickle=False)``; the members are listed in
        docs/checkpoints.md.
        """
        return _checkpoint.save_layer(self, path, optimizer)

    @classmethod
    def load(
        cls: type[_Layer],
        path: str | os.PathLike[str],
        optimizer: Any = None,
        custom_objects: Mapping[str, Any] | None = None,
    ) -> _Layer:
        """Read a layer written by ``save`` (``.npz`` added if ``path`` is missing).

        Parameters
        ----------
        path : str or os.PathLike
            The file.
        optimizer : embtable.optimizers.Optimizer, optional
            Of the class and hyperparameters the file was saved with: its state for
            the returned layer is restored, so training continues bitwise.
        custom_objects : mapping, optional
            As in ``from_config``.

        Raises
        ------
        ValueError
            A truncated, corrupt, foreign or newer-format file, one of another layer
            class, or (with ``optimizer``) one without optimizer state or saved with
            another optimizer class or other hyperparameters. The message names the
            file; the optimizer is unchanged.
        FileNotFoundError
            No file at ``path`` (nor at ``path`` + ``.npz``).
        """
        return _checkpoint.load_layer(cls, path, optimizer, custom_objects)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}"
            for k, v in (("padding_idx", self.padding_idx), ("max_norm", self.max_norm))
            if v is not None
        )
        return (
            f"{type(self).__name__}({self.input_dim}, {self.output_dim}, "
            f"dtype={self.dtype}, "
            f"sparse={self.sparse}{extra}, name={self.name!r})"
        )


class Embedding(TableLayer):
    """Keras-compatible embedding layer (Keras 2, Keras 3 and PyTorch arguments).

    ``layer(ids)`` looks up ``embeddings[ids]`` (shape ``ids.shape + (output_dim,)``)
    with the C++ gather; ``layer.backward(grad_output)`` accumulates the gradient
    into ``layer.grad`` (a (V, D) array, or an ``embtable.RowGrad`` when
    ``sparse=True``); an optimizer from ``embtable.optimizers`` applies it.

    >>> layer = Embedding(1000, 16, seed=0)
    >>> y = layer(np.array([[1, 2], [3, 4]]))
    >>> g = layer.backward(np.ones_like(y))
    """

    _DEFAULT_NAME = "embedding"

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        activity_regularizer: Any = None,
        embeddings_constraint: Any = None,
        mask_zero: bool = False,
        input_length: int | None = None,
        weights: Any = None,
        dtype: Any = "float32",
        seed: int | None = None,
        name: str | None = None,
        trainable: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        sparse: bool = False,
    ) -> None:
        super().__init__(
            input_dim,
            output_dim,
            embeddings_initializer=embeddings_initializer,
            embeddings_regularizer=embeddings_regularizer,
            embeddings_constraint=embeddings_constraint,
            weights=weights,
            dtype=dtype,
            seed=seed,
            name=name,
            trainable=trainable,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            sparse=sparse,
        )
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self.mask_zero = bool(mask_zero)
        if input_length is not None:
            if isinstance(input_length, (list, tuple)):
                input_length = [None if v is None else int(v) for v in input_length]
            else:
                input_length = int(input_length)
        self.input_length = input_length
        self._last_ids: np.ndarray | None = None

    def forward(self, indices: Any) -> np.ndarray:
        """The lookup ``embeddings[indices]``; remembers the ids for ``backward``."""
        ids = self._prepare_ids(indices)
        _maybe_prefetch(self.embeddings, ids)
        self._renorm(ids)
        out = _core.gather(self.embeddings, ids)
        self._last_ids = ids.copy() if ids is indices else ids
        losses = self._table_losses()
        if self.activity_regularizer is not None:
            batch = int(ids.shape[0]) if ids.ndim else 1
            losses.append(float(self.activity_regularizer(out)) / max(batch, 1))
        self._losses = losses
        return out

    def backward(self, grad_output: Any) -> np.ndarray | RowGrad:
        """Add this call's gradient into ``grad`` and return ``grad`` (the total)."""
        if self._last_ids is None:
            raise RuntimeError("backward() needs a forward call first")
        ids = self._last_ids
        g = self._check_grad_output(grad_output, ids.shape + (self.output_dim,))
        self._accumulate_rows(ids, g)
        return self._grad  # type: ignore[return-value]

    def compute_mask(self, indices: Any, mask: Any = None) -> np.ndarray | None:
        """``indices != 0`` when ``mask_zero``, else None."""
        if not self.mask_zero:
            return None
        return np.not_equal(np.asarray(indices), 0)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        """``input_shape + (output_dim,)``; with ``input_length``, as Keras 2: its
        sizes replace the unknown (``None``) ones after the batch dimension, and an
        input of another rank or a known size that differs raises ``ValueError``.

        >>> Embedding(100, 8, input_length=10).compute_output_shape((None, None))
        (None, 10, 8)
        """
        shape = tuple(input_shape)
        if self.input_length is None:
            return shape + (self.output_dim,)
        lengths = _lengths(self.input_length)
        if not shape or not _agree(lengths, list(shape[1:])):
            raise ValueError(
                f"input_length is {self.input_length!r}, but the input shape is {shape}"
            )
        known = tuple(
            s if n is None else n for n, s in zip(lengths, shape[1:], strict=True)
        )
        return (shape[0],) + known + (self.output_dim,)

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["activity_regularizer"] = _serialize_callable(
            self.activity_regularizer, regularizers
        )
        cfg["mask_zero"] = self.mask_zero
        cfg["input_length"] = self.input_length
        return cfg

    @classmethod
    def from_config(
        cls: type[_Layer],
        config: Mapping[str, Any],
        custom_objects: Mapping[str, Any] | None = None,
    ) -> _Layer:
        """Rebuild a layer from ``get_config()`` (see ``TableLayer.from_config``).

        A Keras 2 config works too: its ``batch_input_shape`` (``[None, 10]`` for
        ``input_length=10``) gives ``input_length`` when that key is missing or
        ``None``, and must agree with it otherwise (``ValueError``); its batch size
        is not kept.
        """
        cfg = dict(config)
        if "batch_input_shape" in cfg:
            cfg["input_length"] = _input_length_from_batch_shape(
                cfg.pop("batch_input_shape"), cfg.get("input_length")
            )
        return super().from_config(cfg, custom_objects)

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Any,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ) -> Embedding:
        """A layer holding a copy of ``embeddings`` (``torch.nn.Embedding.from_pretrained``).

        Parameters
        ----------
        embeddings : array_like
            ``(V, D)`` table, copied into the layer (float32 and float64 are kept,
            other real dtypes become float32; a torch tensor is accepted).
        freeze : bool
            ``True`` (default): ``trainable=False``, optimizers leave the table alone.
        padding_idx, max_norm, norm_type, sparse
            As the constructor; a negative ``padding_idx`` counts from the end. The
            ``padding_idx`` row keeps its pretrained values (it only gets no gradient).
        scale_grad_by_freq : bool
            Only ``False`` (PyTorch's positional order is kept).

        Examples
        --------
        >>> layer = Embedding.from_pretrained(np.eye(3, dtype=np.float32))
        >>> layer(np.array([2]))
        array([[0., 0., 1.]], dtype=float32)
        """
        _no_scale_grad_by_freq(scale_grad_by_freq)
        table, padding_idx = _pretrained_table(embeddings, padding_idx)
        return cls(
            table.shape[0],
            table.shape[1],
            weights=table,
            dtype=table.dtype,
            trainable=not freeze,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            sparse=sparse,
        )


_MODES = ("sum", "mean", "max")


class EmbeddingBag(TableLayer):
    """A table whose forward pools bags of ids (``torch.nn.EmbeddingBag``).

    ``layer(indices, offsets=None, per_sample_weights=None)`` returns
    ``embedding_bag(layer.embeddings, indices, offsets, mode=layer.mode, ...)``,
    shape ``(num_bags, embedding_dim)``. ``layer.backward(grad_output)`` adds the
    gradient with respect to ``embeddings`` into ``layer.grad`` (a
    ``(num_embeddings, embedding_dim)`` array, or an ``embtable.RowGrad`` when
    ``sparse=True``) and returns it; ``"max"`` sends each bag's gradient to the
    row that won each column. With ``per_sample_weights``, ``backward`` also sets
    ``layer.per_sample_weights_grad`` (shaped like ``indices``; not accumulated).

    As PyTorch: ``padding_idx`` ids are skipped (and never get gradient),
    ``max_norm`` renormalizes the looked-up rows in the table before pooling.
    Ids and offsets are validated before any change to the table.

    >>> bag = EmbeddingBag(1000, 16, mode="sum", seed=0)
    >>> y = bag(np.array([3, 1, 4, 1, 5]), offsets=np.array([0, 2]))
    >>> y.shape
    (2, 16)
    >>> g = bag.backward(np.ones_like(y))
    """

    _DIM_KEYS = ("num_embeddings", "embedding_dim")
    _DEFAULT_NAME = "embedding_bag"

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        mode: str = "mean",
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        sparse: bool = False,
        weights: Any = None,
        embeddings_initializer: Any = "uniform",
        dtype: Any = "float32",
        seed: int | None = None,
        name: str | None = None,
        trainable: bool = True,
        *,
        include_last_offset: bool = False,
        embeddings_regularizer: Any = None,
        embeddings_constraint: Any = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be 'sum', 'mean' or 'max', got {mode!r}")
        super().__init__(
            num_embeddings,
            embedding_dim,
            embeddings_initializer=embeddings_initializer,
            embeddings_regularizer=embeddings_regularizer,
            embeddings_constraint=embeddings_constraint,
            weights=weights,
            dtype=dtype,
            seed=seed,
            name=name,
            trainable=trainable,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            sparse=sparse,
        )
        self.mode: str = mode
        self.include_last_offset = bool(include_last_offset)
        self.per_sample_weights_grad: np.ndarray | None = None
        self._saved: dict[str, Any] | None = None

    @property
    def num_embeddings(self) -> int:
        return self.input_dim

    @property
    def embedding_dim(self) -> int:
        return self.output_dim

    def forward(
        self, indices: Any, offsets: Any = None, per_sample_weights: Any = None
    ) -> np.ndarray:
        """The pooled lookup; remembers what ``backward`` needs."""
        ids = self._prepare_ids(indices)
        offs = _bag._offsets(offsets)
        weights = per_sample_weights
        if weights is not None:
            weights = np.ascontiguousarray(weights, dtype=self._dtype)
        kw: dict[str, Any] = dict(
            mode=self.mode,
            per_sample_weights=weights,
            padding_idx=self.padding_idx,
            include_last_offset=self.include_last_offset,
        )
        if self.max_norm is not None and ids.size:
            # Check offsets and shapes on a 0-column view of the table first, so that
            # a bad call raises before the renorm changes the table.
            empty = np.empty((self.input_dim, 0), dtype=self._dtype)
            _bag.embedding_bag(empty, ids, offs, **kw)
            self._renorm(ids)
        out, argmax = _bag.embedding_bag_forward(self.embeddings, ids, offs, **kw)
        self._saved = dict(
            ids=ids.copy() if ids is indices else ids,
            offsets=offs.copy() if offs is not None and offs is offsets else offs,
            weights=weights.copy()
            if weights is not None and weights is per_sample_weights
            else weights,
            argmax=argmax,
            shape=out.shape,
        )
        self._losses = self._table_losses()
        return out

    def backward(self, grad_output: Any) -> np.ndarray | RowGrad:
        """Add this call's gradient into ``grad``; return ``grad`` (the total)."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        s = self._saved
        g = self._check_grad_output(grad_output, s["shape"])
        kw: dict[str, Any] = dict(
            mode=self.mode,
            per_sample_weights=s["weights"],
            padding_idx=self.padding_idx,
            include_last_offset=self.include_last_offset,
            argmax=s["argmax"],
        )
        if self.sparse:
            rows, values = _bag.embedding_bag_backward_sparse(
                g, s["ids"], s["offsets"], num_embeddings=self.input_dim, **kw
            )
            self._accumulate_grad(RowGrad._trusted(rows, values))
        else:
            _bag.embedding_bag_backward(
                g,
                s["ids"],
                s["offsets"],
                target=self._dense_grad(),
                deterministic=True,
                **kw,
            )
        if s["weights"] is not None:
            self.per_sample_weights_grad = (
                _bag.embedding_bag_per_sample_weights_backward(
                    g,
                    self.embeddings,
                    s["ids"],
                    s["offsets"],
                    padding_idx=self.padding_idx,
                    include_last_offset=self.include_last_offset,
                )
            )
        else:
            self.per_sample_weights_grad = None
        return self._grad  # type: ignore[return-value]

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        """``(B, embedding_dim)`` for 2-D ids ``(B, L)``."""
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ValueError(
                "the output shape follows from 2-D ids (B, L); 1-D ids need their "
                f"offsets, got input shape {shape}"
            )
        return (shape[0], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["mode"] = self.mode
        cfg["include_last_offset"] = self.include_last_offset
        return cfg

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Any,
        freeze: bool = True,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
    ) -> EmbeddingBag:
        """A bag layer holding a copy of ``embeddings``
        (``torch.nn.EmbeddingBag.from_pretrained``, same argument order).

        ``freeze=True`` (default) means ``trainable=False``; the table is copied
        (float32 and float64 kept, other real dtypes become float32); a negative
        ``padding_idx`` counts from the end and its row keeps its values;
        ``scale_grad_by_freq`` must be ``False``.

        Examples
        --------
        >>> bag = EmbeddingBag.from_pretrained(np.eye(3, dtype=np.float32), mode="sum")
        >>> bag(np.array([[0, 2]]))
        array([[1., 0., 1.]], dtype=float32)
        """
        _no_scale_grad_by_freq(scale_grad_by_freq)
        table, padding_idx = _pretrained_table(embeddings, padding_idx)
        return cls(
            table.shape[0],
            table.shape[1],
            mode=mode,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            sparse=sparse,
            weights=table,
            dtype=table.dtype,
            trainable=not freeze,
            include_last_offset=include_last_offset,
        )
