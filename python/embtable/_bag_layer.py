"""EmbeddingBag: the pooled table layer over ``embedding_bag``."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _bag
from ._rowgrad import RowGrad
from .layers import TableLayer

__all__ = ["EmbeddingBag"]

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
