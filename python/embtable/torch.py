"""embtable inside PyTorch: drop-in ``Embedding`` / ``EmbeddingBag`` and functional forms.

The modules subclass ``torch.nn.Embedding`` / ``torch.nn.EmbeddingBag``, so their
constructors, ``from_pretrained``, ``weight`` Parameter, ``state_dict`` and ``repr``
are torch's own; only ``forward`` changes: it runs embtable's C++ kernels on the
tensors' memory (NumPy views through ``Tensor.numpy()``, never a copy of ``weight``)
inside ``torch.autograd.Function``s. Dense gradients are dense tensors; with
``sparse=True`` the gradient is a coalesced ``torch.sparse_coo_tensor`` made from
embtable's row gradient (sorted unique rows, their summed values).

CPU float32 / float64 weights only: a tensor on another device is a ``TypeError``,
a non-contiguous weight a ``ValueError``. Under ``torch.compile`` the dense forms
are ``torch.library`` custom ops (``torch.ops.embtable.*``: one graph, also with
``fullgraph=True``, bitwise the eager results); ``sparse=True`` runs eagerly there
(a graph break).

A backward with ``create_graph=True`` builds its gradients from torch's
differentiable ops (higher-order gradients are right); under ``torch.func``
transforms (``grad``, ``vmap``) the functions call ``torch.nn.functional``'s.

Needs the optional ``torch`` (``pip install embtable[torch]``); ``import embtable``
never imports it.
"""

from __future__ import annotations

import operator
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.weak import WeakIdKeyDictionary

from . import _core
from ._indices import as_indices

__all__ = ["Embedding", "EmbeddingBag", "SparseAdam", "embedding", "embedding_bag"]

_FLOATS = (torch.float32, torch.float64)
_INTS = (torch.int32, torch.int64)
_MODES = ("sum", "mean", "max")


# --- views and checks ---------------------------------------------------------------


def _on_cpu(t: torch.Tensor, name: str) -> None:
    if t.device.type != "cpu":
        raise TypeError(
            f"{name} is on device {t.device}; embtable.torch runs on the CPU "
            f"(move it with {name}.cpu(), or use torch.nn on that device)"
        )


def _check_weight_meta(weight: Any) -> None:
    """What can be checked without the data (also while torch.compile traces)."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    _on_cpu(weight, "weight")
    if weight.layout != torch.strided:
        raise TypeError(f"weight must be a dense (strided) tensor, got {weight.layout}")
    if weight.dtype not in _FLOATS:
        raise TypeError(
            f"weight has dtype {weight.dtype}; embtable.torch supports torch.float32 "
            "and torch.float64"
        )
    if weight.dim() != 2:
        raise ValueError(
            f"weight must be 2-D (num_embeddings, embedding_dim), got shape "
            f"{tuple(weight.shape)}"
        )
    if not weight.is_contiguous():
        raise ValueError(
            "weight is not contiguous; embtable reads and writes it in place and "
            "never copies it: pass weight.contiguous() (a new tensor) instead"
        )


def _check_weight(weight: Any) -> np.ndarray:
    """The weight's own memory as a writable ndarray view."""
    _check_weight_meta(weight)
    return weight.detach().numpy()


def _check_ids_meta(input: Any, name: str) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    _on_cpu(input, name)
    if input.dtype not in _INTS:
        raise TypeError(
            f"{name} must be an integer tensor (torch.int64 or torch.int32), got "
            f"{input.dtype}"
        )


def _check_ids(input: Any, V: int | None, name: str) -> np.ndarray:
    """Ids as a native int32/int64 C-contiguous ndarray (a view when they are)."""
    _check_ids_meta(input, name)
    return as_indices(input.detach().numpy(), V, name=name)


def _check_float_meta(t: torch.Tensor, name: str, dtype: torch.dtype) -> None:
    _on_cpu(t, name)
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but weight has dtype {dtype}")


def _float_view(t: torch.Tensor, name: str, dtype: torch.dtype) -> np.ndarray:
    _check_float_meta(t, name, dtype)
    return t.detach().contiguous().numpy()


def _grad_view(grad: torch.Tensor) -> np.ndarray:
    # Incoming gradients may be expanded (e.g. from .sum()): one copy then.
    return grad.detach().contiguous().numpy()


def _padding(padding_idx: Any, V: int) -> int | None:
    """torch's rule: a negative padding_idx counts from the end."""
    if padding_idx is None:
        return None
    p = operator.index(padding_idx)
    if not -V <= p < V:
        raise ValueError(
            f"padding_idx {p} is out of range for a weight with {V} rows "
            f"(must be within [-{V}, {V}))"
        )
    return p + V if p < 0 else p


def _renorm(
    weight: torch.Tensor, w: np.ndarray, ids: np.ndarray, max_norm: Any, norm_type: Any
) -> None:
    """torch.embedding_renorm_: the looked-up rows are rescaled in place."""
    _core.embedding_renorm(w, ids, float(max_norm), float(norm_type))
    # An in-place change torch's autograd must see (saved tensors check versions).
    torch.autograd.graph.increment_version(weight)


def _id_counts(ids: np.ndarray) -> np.ndarray:
    """For each position, how often its id occurs in ``ids`` (scale_grad_by_freq)."""
    flat = ids.reshape(-1)
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return counts[inverse].reshape(ids.shape)


def _row_counts(ids: np.ndarray, V: int, pad: int, dtype: np.dtype) -> np.ndarray:
    """Occurrences of each row of ``rowgrad_coalesce(ids, ...)``, in its row order."""
    ones = np.ones((*ids.shape, 1), dtype=dtype)
    return _core.rowgrad_coalesce(ids, ones, V, pad)[1]


# The values' storage of the last sparse gradient made for each weight, for
# _keep_coalesced. A weak reference to the storage, not its address: a gradient that
# never reaches .grad (torch.autograd.grad) is freed, and another tensor may get the
# same address. Not a weakref to the values tensor: that Python object dies while
# the sparse gradient keeps its storage. Not a Parameter attribute: those are pickled
# and copied with the Parameter.
_GRAD_VALUES: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _sparse_grad(
    weight: torch.Tensor | None, rows: np.ndarray, values: np.ndarray, V: int, D: int
) -> torch.Tensor:
    """A coalesced COO gradient: rows come sorted and unique from the core."""
    vals = torch.from_numpy(values)
    if weight is not None:
        _GRAD_VALUES[weight] = StorageWeakRef(vals.untyped_storage())
    return torch.sparse_coo_tensor(
        torch.from_numpy(rows).unsqueeze(0),
        vals,
        (V, D),
        is_coalesced=True,
        check_invariants=False,
    )


# The last dense gradient made for each weight (an ndarray, dropped with the weight).
_DENSE_GRADS: WeakIdKeyDictionary = WeakIdKeyDictionary()
_DENSE_GRADS_LOCK = threading.Lock()


def _dense_grad(
    weight: torch.Tensor | None, V: int, D: int, dtype: torch.dtype
) -> torch.Tensor:
    """A zeroed ``(V, D)`` gradient for ``weight`` (None: a new one, not kept).

    ``optimizer.zero_grad()`` frees each step's gradient, so ``torch.zeros`` would
    map, fault and clear fresh pages every step: 75 ms for 1M x 64 float32 here,
    most of a training step. Instead the last gradient made for this weight is
    kept and, once nothing else holds it (the ``.grad`` it became was dropped),
    cleared in place and reused (about 10 ms). While it is still held (a kept
    ``.grad``, ``zero_grad(set_to_none=False)``, a saved reference) a new one is
    made: no gradient a user can see is ever written again. A new one comes from
    ``np.zeros``, whose pages the kernel clears when they are first touched (a
    whole 2 MiB page at a time where NumPy asked for transparent huge pages, as it
    does for arrays of 4 MiB and more).
    """
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    with _DENSE_GRADS_LOCK:
        buf = _DENSE_GRADS.get(weight) if weight is not None else None
        # References when free: the dictionary's, `buf` and getrefcount's argument.
        if (
            buf is not None
            and buf.shape == (V, D)
            and buf.dtype == np_dtype
            and sys.getrefcount(buf) == 3
        ):
            grad = torch.from_numpy(buf)
            grad.zero_()
            return grad
        buf = np.zeros((V, D), dtype=np_dtype)
        if weight is not None:
            _DENSE_GRADS[weight] = buf
        return torch.from_numpy(buf)


def _keep_coalesced(param: torch.Tensor) -> None:
    """Post-accumulate hook: AccumulateGrad adopts a fresh sparse gradient by
    rebuilding it without its coalesced flag (and every optimizer would then sort
    it again). When ``param.grad`` is exactly the gradient we made (its values in
    the storage we made, still alive), it is coalesced: say so. A sum with other
    gradients is left alone."""
    grad = param.grad
    ours = _GRAD_VALUES.pop(param, None)
    if (
        ours is not None
        and not ours.expired()
        and grad is not None
        and grad.is_sparse
        and not grad.is_coalesced()
        and StorageWeakRef(grad._values().untyped_storage()) == ours
    ):
        grad._coalesced_(True)


def _has_coalesce_hook(weight: torch.Tensor) -> bool:
    """Whether ``_keep_coalesced`` is registered on ``weight`` now.

    Asked of the hooks themselves, not remembered in an attribute: pickling or
    ``torch.save`` keeps a Parameter's attributes but drops its hooks (a deep copy
    keeps both).
    """
    hooks = getattr(weight, "_post_accumulate_grad_hooks", None)
    if not hooks:
        return False
    return any(h is _keep_coalesced for h in hooks.values())


def _watch_sparse_grad(ctx: Any, weight: torch.Tensor, sparse: bool) -> None:
    ctx.weight_ref = weakref.ref(weight)
    if sparse and weight.requires_grad and weight.is_leaf:
        if not _has_coalesce_hook(weight):
            weight.register_post_accumulate_grad_hook(_keep_coalesced)


# --- Embedding ----------------------------------------------------------------------


class _EmbeddingFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        weight: torch.Tensor,
        input: torch.Tensor,
        ids: np.ndarray,
        padding_idx: int | None,
        scale_grad_by_freq: bool,
        sparse: bool,
    ) -> torch.Tensor:
        w = weight.detach().numpy()
        out = torch.empty((*ids.shape, w.shape[1]), dtype=weight.dtype)
        _core.gather(w, ids, out=out.numpy())
        ctx.save_for_backward(input)  # torch's version check if input changes in place
        _watch_sparse_grad(ctx, weight, sparse)
        ctx.ids = ids
        ctx.shape = tuple(w.shape)
        ctx.padding_idx = padding_idx
        ctx.scale_grad_by_freq = scale_grad_by_freq
        ctx.sparse = sparse
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        ctx.saved_tensors  # noqa: B018 (raises if input was modified in place)
        V, D = ctx.shape
        args = (ctx.ids, V, D, ctx.padding_idx, ctx.scale_grad_by_freq, ctx.sparse)
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            grad = _embedding_weight_grad_by_torch(grad_output, *args)
        else:
            grad = _embedding_weight_grad(ctx.weight_ref(), grad_output, *args)
        return grad, None, None, None, None, None


def _embedding_weight_grad(
    weight: torch.Tensor | None,
    grad_output: torch.Tensor,
    ids: np.ndarray,
    V: int,
    D: int,
    padding_idx: int | None,
    scale_grad_by_freq: bool,
    sparse: bool,
) -> torch.Tensor:
    """The gradient of ``weight[ids]`` with respect to the ``(V, D)`` weight."""
    pad = -1 if padding_idx is None else padding_idx
    g = _grad_view(grad_output).reshape(*ids.shape, D)
    if sparse or scale_grad_by_freq:
        rows, values = _core.rowgrad_coalesce(ids, g, V, pad)
        if scale_grad_by_freq:
            values /= _row_counts(ids, V, pad, values.dtype)
        if sparse:
            return _sparse_grad(weight, rows, values, V, D)
        grad = _dense_grad(weight, V, D, grad_output.dtype)
        grad[torch.from_numpy(rows)] = torch.from_numpy(values)
        return grad
    grad = _dense_grad(weight, V, D, grad_output.dtype)
    _core.scatter_add(grad.numpy(), ids, g, deterministic=True)
    if padding_idx is not None:
        grad[padding_idx] = 0
    return grad


# --- gradients as torch ops (backward under create_graph=True) ------------------------
#
# With create_graph=True the backward runs in grad mode and its result must carry a
# grad_fn (gradient penalties, gradgradcheck). The kernels above write NumPy memory
# that autograd cannot see, so there the gradient is built from torch's own
# differentiable ops instead: index_select and a multiply per position, then
# index_add into the rows. The integer bookkeeping (rows, bags, counts) is NumPy;
# it carries no gradient.


def _rows_sum_by_torch(
    rows: np.ndarray, values: torch.Tensor, V: int, D: int, sparse: bool
) -> torch.Tensor:
    """``values[k]`` added into row ``rows[k]`` of a ``(V, D)`` gradient.

    ``sparse``: a coalesced COO tensor over the sorted unique rows, like the
    kernels' (rows = [4, 1, 4] -> indices [1, 4], values [v1, v0 + v2]).
    """
    if sparse:
        unique, inverse = np.unique(rows, return_inverse=True)
        summed = values.new_zeros((unique.shape[0], D)).index_add(
            0, torch.from_numpy(inverse.reshape(-1)), values
        )
        return torch.sparse_coo_tensor(
            torch.from_numpy(unique).unsqueeze(0),
            summed,
            (V, D),
            is_coalesced=True,
            check_invariants=False,
        )
    return values.new_zeros((V, D)).index_add(0, torch.from_numpy(rows), values)


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(np.float32 if dtype == torch.float32 else np.float64)


def _embedding_weight_grad_by_torch(
    grad_output: torch.Tensor,
    ids: np.ndarray,
    V: int,
    D: int,
    padding_idx: int | None,
    scale_grad_by_freq: bool,
    sparse: bool,
) -> torch.Tensor:
    """``_embedding_weight_grad`` from differentiable torch ops."""
    flat = ids.reshape(-1).astype(np.int64, copy=False)
    pos = (
        np.arange(flat.shape[0])
        if padding_idx is None
        else np.flatnonzero(flat != padding_idx)
    )
    values = grad_output.reshape(-1, D).index_select(0, torch.from_numpy(pos))
    if scale_grad_by_freq:
        scale = (1.0 / _id_counts(flat)[pos]).astype(_np_dtype(grad_output.dtype))
        values = values * torch.from_numpy(scale).unsqueeze(1)
    return _rows_sum_by_torch(flat[pos], values, V, D, sparse)


def _bag_weight_grad_by_torch(
    grad_output: torch.Tensor,
    psw: torch.Tensor | None,
    ids: np.ndarray,
    offsets: np.ndarray | None,
    V: int,
    D: int,
    *,
    mode: str,
    padding_idx: int | None,
    include_last_offset: bool,
    scale_grad_by_freq: bool,
    argmax: np.ndarray | None,
    sparse: bool,
) -> torch.Tensor:
    """``_bag_weight_grad`` from differentiable torch ops (also in ``psw``)."""
    if mode == "max":
        # Each (bag, column) sends its gradient to the row that won it (-1: none).
        assert argmax is not None
        bags, cols = np.nonzero(argmax >= 0)
        rows = argmax[bags, cols].astype(np.int64)
        values = grad_output[torch.from_numpy(bags), torch.from_numpy(cols)]
        if not sparse:
            dense = grad_output.new_zeros(V * D)
            return dense.index_add(0, torch.from_numpy(rows * D + cols), values).view(
                V, D
            )
        unique, inverse = np.unique(rows, return_inverse=True)
        summed = grad_output.new_zeros(unique.shape[0] * D).index_add(
            0, torch.from_numpy(inverse.reshape(-1) * D + cols), values
        )
        return torch.sparse_coo_tensor(
            torch.from_numpy(unique).unsqueeze(0),
            summed.view(-1, D),
            (V, D),
            is_coalesced=True,
            check_invariants=False,
        )
    flat = ids.reshape(-1).astype(np.int64, copy=False)
    bag = _bag_of_positions(ids, offsets, include_last_offset)
    pos = (
        np.arange(flat.shape[0])
        if padding_idx is None
        else np.flatnonzero(flat != padding_idx)
    )
    scale = np.ones(pos.shape[0])
    if scale_grad_by_freq:
        scale /= _id_counts(flat)[pos]
    if mode == "mean":
        lengths = _bag_lengths(ids, offsets, include_last_offset, padding_idx)
        scale /= np.maximum(lengths.reshape(-1)[pos], 1)
    scale_t = torch.from_numpy(scale.astype(_np_dtype(grad_output.dtype)))
    if psw is not None:
        scale_t = scale_t * psw.reshape(-1)[torch.from_numpy(pos)]
    values = grad_output.index_select(0, torch.from_numpy(bag[pos]))
    return _rows_sum_by_torch(flat[pos], values * scale_t.unsqueeze(1), V, D, sparse)


def _bag_psw_grad_by_torch(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    ids: np.ndarray,
    offsets: np.ndarray | None,
    padding_idx: int | None,
    include_last_offset: bool,
) -> torch.Tensor:
    """``_bag_psw_grad`` from differentiable torch ops (also in ``weight``):
    each position's gradient is its bag's output gradient dotted with its row."""
    flat = torch.from_numpy(ids.reshape(-1).astype(np.int64, copy=False))
    bag = torch.from_numpy(_bag_of_positions(ids, offsets, include_last_offset))
    grad = (grad_output.index_select(0, bag) * weight.index_select(0, flat)).sum(1)
    if padding_idx is not None:
        grad = grad * (flat != padding_idx).to(grad.dtype)
    return grad.reshape(ids.shape)


# --- torch.func ---------------------------------------------------------------------


def _functorch_wrapped(*tensors: Any) -> bool:
    """Whether a ``torch.func`` transform (grad, vmap, jacrev, ...) wrapped any of
    these: such a tensor has no memory of its own for the kernels to read.

    False while Dynamo traces: it cannot trace this check, and would fail on it in
    a frame of the eager path that it looks at after a graph break.
    """
    if torch.compiler.is_compiling():
        return False
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(isinstance(t, torch.Tensor) and wrapped(t) for t in tensors)


def embedding(
    input: torch.Tensor,
    weight: torch.Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> torch.Tensor:
    """``torch.nn.functional.embedding`` on embtable's kernels (CPU, autograd-aware).

    Returns ``weight[input]`` (shape ``input.shape + (D,)``). ``max_norm`` first
    rescales the looked-up rows of ``weight`` in place to norm at most ``max_norm``
    (``norm_type``-norm), as torch does. The gradient with respect to ``weight``
    skips ``padding_idx``, divides each id's share by its count in ``input`` with
    ``scale_grad_by_freq``, and is a coalesced sparse COO tensor with ``sparse``.

    Parameters
    ----------
    input : torch.Tensor
        Integer ids (int64 or int32), any shape, in ``[0, num_embeddings)``.
    weight : torch.Tensor
        The ``(num_embeddings, embedding_dim)`` float32 / float64 CPU table,
        contiguous (read in place, never copied).

    Returns
    -------
    torch.Tensor
        ``input.shape + (embedding_dim,)``, ``weight.dtype``.

    Under ``torch.compile`` a dense layer is one custom op
    (``torch.ops.embtable.embedding``, its backward
    ``torch.ops.embtable.embedding_backward``): the graph does not break, also with
    ``fullgraph=True``. ``sparse=True`` runs eagerly there (a graph break): torch
    cannot trace a sparse gradient through a custom op.
    """
    if torch.compiler.is_compiling() and not sparse:
        return _embedding_traced(
            input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq
        )
    eager = (
        _outside_compile(_embedding_eager)
        if torch.compiler.is_compiling()
        else _embedding_eager
    )
    return eager(
        input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse
    )


_NOT_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _outside_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compiler.disable(fn)``, made on first use under ``torch.compile``.

    Decorating at import would import ``torch._dynamo`` (about a second) for every
    user of this module; under compile it is loaded already. Calls outside compile
    run ``fn`` itself.
    """
    disabled = _NOT_COMPILED.get(fn)
    if disabled is None:
        disabled = _NOT_COMPILED[fn] = torch.compiler.disable(fn)
    return disabled


def _embedding_eager(
    input: torch.Tensor,
    weight: torch.Tensor,
    padding_idx: Any,
    max_norm: Any,
    norm_type: Any,
    scale_grad_by_freq: bool,
    sparse: bool,
) -> torch.Tensor:
    if _functorch_wrapped(input, weight):
        # Under torch.func the inputs have no storage: torch's own kernels run.
        _check_weight_meta(weight)
        _check_ids_meta(input, "input")
        _padding(padding_idx, weight.shape[0])
        return torch.nn.functional.embedding(
            input,
            weight,
            padding_idx,
            max_norm,
            norm_type,
            bool(scale_grad_by_freq),
            bool(sparse),
        )
    w = _check_weight(weight)
    V = int(w.shape[0])
    pad = _padding(padding_idx, V)
    ids = _check_ids(input, V, "input")
    if max_norm is not None:
        _renorm(weight, w, ids, max_norm, norm_type)
    out: torch.Tensor = _EmbeddingFunction.apply(
        weight, input, ids, pad, bool(scale_grad_by_freq), bool(sparse)
    )
    return out


def _embedding_traced(
    input: torch.Tensor,
    weight: torch.Tensor,
    padding_idx: Any,
    max_norm: Any,
    norm_type: Any,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    """What torch.compile traces: checks on metadata, then the custom ops."""
    _check_weight_meta(weight)
    _check_ids_meta(input, "input")
    pad = _padding(padding_idx, weight.shape[0])
    if max_norm is not None:
        with torch.no_grad():
            torch.ops.embtable.embedding_renorm_(
                weight, input, float(max_norm), float(norm_type)
            )
    out: torch.Tensor = torch.ops.embtable.embedding(
        weight, input, -1 if pad is None else pad, bool(scale_grad_by_freq)
    )
    return out


# --- EmbeddingBag -------------------------------------------------------------------


def _bag_lengths(
    ids: np.ndarray, offsets: np.ndarray | None, include_last: bool, pad: int | None
) -> np.ndarray:
    """Ids per bag that count in the mean (padding excluded), one per position."""
    keep = np.ones(ids.shape, dtype=bool) if pad is None else ids != pad
    if ids.ndim == 2:
        n = keep.sum(axis=1, keepdims=True)
        return np.broadcast_to(n, ids.shape)
    assert offsets is not None
    bag = _bag_of_positions(ids, offsets, include_last)
    num_bags = offsets.shape[0] - (1 if include_last else 0)
    counts = np.bincount(bag[keep], minlength=num_bags)
    return counts[bag]


def _bag_of_positions(
    ids: np.ndarray, offsets: np.ndarray | None, include_last: bool
) -> np.ndarray:
    """The bag of each position of ``ids``, flattened (int64).

    offsets = [0, 2, 2] over 5 ids -> [0, 0, 2, 2, 2] (bag 1 is empty).
    """
    if ids.ndim == 2:
        return np.repeat(np.arange(ids.shape[0], dtype=np.int64), ids.shape[1])
    assert offsets is not None
    bounds = offsets if include_last else np.append(offsets, ids.shape[0])
    return np.repeat(np.arange(bounds.shape[0] - 1, dtype=np.int64), np.diff(bounds))


class _EmbeddingBagFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        weight: torch.Tensor,
        per_sample_weights: torch.Tensor | None,
        input: torch.Tensor,
        offsets: torch.Tensor | None,
        ids: np.ndarray,
        offs: np.ndarray | None,
        psw: np.ndarray | None,
        mode: str,
        padding_idx: int | None,
        include_last_offset: bool,
        scale_grad_by_freq: bool,
        sparse: bool,
    ) -> torch.Tensor:
        # ids, offs and psw are views of input, offsets and per_sample_weights (or
        # copies): the tensors are saved so that autograd's version check raises if
        # one is changed in place before backward. weight is read by backward only
        # for the per_sample_weights gradient (as torch); saving it otherwise would
        # fail that check after a later max_norm renorm or any in-place edit.
        w = weight.detach().numpy()
        out, argmax = _core.embedding_bag(
            w,
            ids,
            offs,
            mode=mode,
            per_sample_weights=psw,
            padding_idx=padding_idx,
            include_last_offset=include_last_offset,
            return_argmax=True,
        )
        psw_needs_grad = ctx.needs_input_grad[1]
        ctx.save_for_backward(
            input, offsets, per_sample_weights, weight if psw_needs_grad else None
        )
        _watch_sparse_grad(ctx, weight, sparse)
        ctx.ids, ctx.offsets, ctx.argmax, ctx.psw = ids, offs, argmax, psw
        ctx.shape = tuple(w.shape)
        ctx.mode, ctx.padding_idx = mode, padding_idx
        ctx.include_last_offset = include_last_offset
        ctx.scale_grad_by_freq, ctx.sparse = scale_grad_by_freq, sparse
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        # Unpacking runs the version check of everything saved.
        _, _, per_sample_weights, weight = ctx.saved_tensors
        V, D = ctx.shape
        by_torch = torch.is_grad_enabled()  # create_graph=True
        grad_weight = grad_psw = None
        if ctx.needs_input_grad[0]:
            args: dict[str, Any] = dict(
                mode=ctx.mode,
                padding_idx=ctx.padding_idx,
                include_last_offset=ctx.include_last_offset,
                scale_grad_by_freq=ctx.scale_grad_by_freq,
                argmax=ctx.argmax,
                sparse=ctx.sparse,
            )
            if by_torch:
                grad_weight = _bag_weight_grad_by_torch(
                    grad_output, per_sample_weights, ctx.ids, ctx.offsets, V, D, **args
                )
            else:
                grad_weight = _bag_weight_grad(
                    ctx.weight_ref(),
                    grad_output,
                    ctx.ids,
                    ctx.offsets,
                    V,
                    D,
                    psw=ctx.psw,
                    **args,
                )
        if ctx.needs_input_grad[1]:
            psw_grad = _bag_psw_grad_by_torch if by_torch else _bag_psw_grad
            grad_psw = psw_grad(
                grad_output,
                weight,
                ctx.ids,
                ctx.offsets,
                ctx.padding_idx,
                ctx.include_last_offset,
            )
        return (grad_weight, grad_psw) + (None,) * 10


def _bag_weight_grad(
    weight: torch.Tensor | None,
    grad_output: torch.Tensor,
    ids: np.ndarray,
    offsets: np.ndarray | None,
    V: int,
    D: int,
    *,
    mode: str,
    psw: np.ndarray | None,
    padding_idx: int | None,
    include_last_offset: bool,
    scale_grad_by_freq: bool,
    argmax: np.ndarray | None,
    sparse: bool,
) -> torch.Tensor:
    """The gradient of ``embedding_bag`` with respect to the ``(V, D)`` weight."""
    g = _grad_view(grad_output)
    if scale_grad_by_freq and mode != "max":
        # Each id's share divided by its count in the batch: as sum-mode
        # weights (mean's 1 / bag length folded in).
        scale = 1.0 / _id_counts(ids)
        if mode == "mean":
            scale = scale / np.maximum(
                _bag_lengths(ids, offsets, include_last_offset, padding_idx), 1
            )
        if psw is not None:
            scale = scale * psw
        psw, mode = np.ascontiguousarray(scale, dtype=g.dtype), "sum"
    args: dict[str, Any] = dict(
        mode=mode,
        per_sample_weights=psw,
        padding_idx=padding_idx,
        include_last_offset=include_last_offset,
        argmax=argmax,
    )
    if sparse:
        rows, values = _core.embedding_bag_backward_sparse(
            g, ids, offsets, num_embeddings=V, **args
        )
        return _sparse_grad(weight, rows, values, V, D)
    grad = _dense_grad(weight, V, D, grad_output.dtype)
    _core.embedding_bag_backward(g, ids, offsets, target=grad.numpy(), **args)
    return grad


def _bag_psw_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    ids: np.ndarray,
    offsets: np.ndarray | None,
    padding_idx: int | None,
    include_last_offset: bool,
) -> torch.Tensor:
    """The gradient of ``embedding_bag`` with respect to ``per_sample_weights``."""
    return torch.from_numpy(
        _core.embedding_bag_per_sample_weights_backward(
            _grad_view(grad_output),
            weight.detach().numpy(),
            ids,
            offsets,
            padding_idx=padding_idx,
            include_last_offset=include_last_offset,
        )
    )


def embedding_bag(
    input: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor | None = None,
    max_norm: float | None = None,
    norm_type: float = 2,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.embedding_bag`` on embtable's kernels (CPU, autograd-aware).

    Bags are the rows of 2-D ``input`` ``(B, L)`` (``offsets`` None) or the runs of
    1-D ``input`` starting at ``offsets``; ``mode`` ``"sum"``, ``"mean"`` or
    ``"max"`` pools each bag; ``per_sample_weights`` (``"sum"`` only) scale each id;
    ``padding_idx`` ids are skipped (not counted in the mean); an empty bag gives
    zeros. ``max_norm`` renorms the looked-up rows of ``weight`` in place first.
    Gradients flow to ``weight`` (dense, or a coalesced sparse COO tensor with
    ``sparse=True``, which embtable also allows in ``"max"`` mode) and to
    ``per_sample_weights``.

    Returns
    -------
    torch.Tensor
        ``(B, embedding_dim)``, ``weight.dtype``.

    Under ``torch.compile`` a dense layer is one custom op
    (``torch.ops.embtable.embedding_bag``, its backward
    ``torch.ops.embtable.embedding_bag_backward`` and
    ``torch.ops.embtable.embedding_bag_psw_backward``): the graph does not break,
    also with ``fullgraph=True``. ``sparse=True`` runs eagerly there (a graph
    break): torch cannot trace a sparse gradient through a custom op.
    """
    if torch.compiler.is_compiling() and not sparse:
        return _embedding_bag_traced(
            input,
            weight,
            offsets,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            mode,
            per_sample_weights,
            include_last_offset,
            padding_idx,
        )
    eager = (
        _outside_compile(_embedding_bag_eager)
        if torch.compiler.is_compiling()
        else _embedding_bag_eager
    )
    return eager(
        input,
        weight,
        offsets,
        max_norm,
        norm_type,
        scale_grad_by_freq,
        mode,
        sparse,
        per_sample_weights,
        include_last_offset,
        padding_idx,
    )


def _check_mode(mode: Any) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode has to be one of 'sum', 'mean' or 'max', got {mode!r}")


def _check_bag_args(
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    mode: str,
) -> None:
    """torch's checks of the bag layout (shapes only: also while tracing)."""
    if input.dim() == 2 and offsets is not None:
        raise ValueError(
            "if input is 2-D (B, L), offsets must be None (each row is one bag); got "
            f"offsets of shape {tuple(offsets.shape)}"
        )
    if input.dim() not in (1, 2):
        raise ValueError(
            f"input has to be 1-D or 2-D, but got a tensor of shape {tuple(input.shape)}"
        )
    if input.dim() == 1 and offsets is None:
        raise ValueError("offsets has to be a 1-D tensor when input is 1-D")
    if per_sample_weights is not None:
        if not isinstance(per_sample_weights, torch.Tensor):
            raise TypeError("per_sample_weights must be a torch.Tensor or None")
        if tuple(per_sample_weights.shape) != tuple(input.shape):
            raise ValueError(
                f"per_sample_weights has shape {tuple(per_sample_weights.shape)} but "
                f"input has shape {tuple(input.shape)}; they must match"
            )
        if mode != "sum":
            raise ValueError(
                f"per_sample_weights are only supported with mode='sum', got mode={mode!r}"
            )


def _check_offsets(offsets: torch.Tensor | None) -> np.ndarray | None:
    offs = None if offsets is None else _check_ids(offsets, None, "offsets")
    if offs is not None and offs.dtype != np.int64:
        offs = offs.astype(np.int64)
    return offs


def _embedding_bag_eager(
    input: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor | None,
    max_norm: Any,
    norm_type: Any,
    scale_grad_by_freq: bool,
    mode: str,
    sparse: bool,
    per_sample_weights: torch.Tensor | None,
    include_last_offset: bool,
    padding_idx: Any,
) -> torch.Tensor:
    if _functorch_wrapped(input, weight, offsets, per_sample_weights):
        # Under torch.func the inputs have no storage: torch's own kernels run.
        _check_weight_meta(weight)
        _check_mode(mode)
        _padding(padding_idx, weight.shape[0])
        _check_ids_meta(input, "input")
        _check_bag_args(input, offsets, per_sample_weights, mode)
        return torch.nn.functional.embedding_bag(
            input,
            weight,
            offsets,
            max_norm,
            norm_type,
            bool(scale_grad_by_freq),
            mode,
            bool(sparse),
            per_sample_weights,
            bool(include_last_offset),
            padding_idx,
        )
    w = _check_weight(weight)
    V = int(w.shape[0])
    _check_mode(mode)
    pad = _padding(padding_idx, V)
    ids = _check_ids(input, V, "input")
    _check_bag_args(input, offsets, per_sample_weights, mode)
    offs = _check_offsets(offsets)
    psw = (
        None
        if per_sample_weights is None
        else _float_view(per_sample_weights, "per_sample_weights", weight.dtype)
    )
    if max_norm is not None:
        # Every check first (offsets and shapes by the kernel itself, on a 0-column
        # table): a bad call raises before the renorm writes to weight.
        _core.embedding_bag(
            np.empty((V, 0), dtype=w.dtype),
            ids,
            offs,
            mode=mode,
            per_sample_weights=psw,
            padding_idx=pad,
            include_last_offset=bool(include_last_offset),
        )
        _renorm(weight, w, ids, max_norm, norm_type)
    out: torch.Tensor = _EmbeddingBagFunction.apply(
        weight,
        per_sample_weights,
        input,
        offsets,
        ids,
        offs,
        psw,
        mode,
        pad,
        bool(include_last_offset),
        bool(scale_grad_by_freq),
        bool(sparse),
    )
    return out


def _embedding_bag_traced(
    input: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor | None,
    max_norm: Any,
    norm_type: Any,
    scale_grad_by_freq: bool,
    mode: str,
    per_sample_weights: torch.Tensor | None,
    include_last_offset: bool,
    padding_idx: Any,
) -> torch.Tensor:
    """What torch.compile traces: checks on metadata, then the custom ops."""
    _check_weight_meta(weight)
    _check_mode(mode)
    pad = _padding(padding_idx, weight.shape[0])
    _check_ids_meta(input, "input")
    _check_bag_args(input, offsets, per_sample_weights, mode)
    if offsets is not None:
        _check_ids_meta(offsets, "offsets")
    if per_sample_weights is not None:
        _check_float_meta(per_sample_weights, "per_sample_weights", weight.dtype)
    if max_norm is not None:
        with torch.no_grad():
            # Given the offsets, the op checks them before it writes (the rest was
            # checked above, on metadata).
            torch.ops.embtable.embedding_renorm_(
                weight,
                input,
                float(max_norm),
                float(norm_type),
                offsets,
                bool(include_last_offset),
            )
    out, _ = torch.ops.embtable.embedding_bag(
        weight,
        input,
        offsets,
        per_sample_weights,
        mode,
        -1 if pad is None else pad,
        bool(include_last_offset),
        bool(scale_grad_by_freq),
    )
    return out  # type: ignore[no-any-return]


# --- torch.compile: the dense forms as custom ops ------------------------------------
#
# torch.compile traces through `embedding` / `embedding_bag` into these ops (the
# eager calls above do not use them: autograd.Function costs less per call and keeps
# the gradient buffer for reuse). Each op runs the same checks and kernels as the
# eager path on its tensors' memory; its fake implementation gives the output's
# shape and dtype; register_autograd wires the backward op. Padding is -1 for none.


def _pad_or_none(padding_idx: int) -> int | None:
    return None if padding_idx < 0 else padding_idx


@torch.library.custom_op(
    "embtable::embedding_renorm_",
    mutates_args=("weight",),
    schema="(Tensor(a!) weight, Tensor input, float max_norm, float norm_type, "
    "Tensor? offsets=None, bool include_last_offset=False) -> ()",
)
def _renorm_op(
    weight: torch.Tensor,
    input: torch.Tensor,
    max_norm: float,
    norm_type: float,
    offsets: torch.Tensor | None = None,
    include_last_offset: bool = False,
) -> None:
    """The renorm of a lookup, or of a bag's ids whose ``offsets`` are checked
    first (by the bag kernel on a 0-column table): a bad bag leaves weight as is."""
    w = _check_weight(weight)
    V = int(w.shape[0])
    ids = _check_ids(input, V, "input")
    if offsets is not None:
        _core.embedding_bag(
            np.empty((V, 0), dtype=w.dtype),
            ids,
            _check_offsets(offsets),
            mode="sum",
            include_last_offset=include_last_offset,
        )
    _core.embedding_renorm(w, ids, max_norm, norm_type)


@_renorm_op.register_fake
def _(
    weight: torch.Tensor,
    input: torch.Tensor,
    max_norm: float,
    norm_type: float,
    offsets: torch.Tensor | None = None,
    include_last_offset: bool = False,
) -> None:
    return None


@torch.library.custom_op(
    "embtable::embedding",
    mutates_args=(),
    schema="(Tensor weight, Tensor input, int padding_idx, bool scale_grad_by_freq) "
    "-> Tensor",
)
def _embedding_op(
    weight: torch.Tensor,
    input: torch.Tensor,
    padding_idx: int,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    w = _check_weight(weight)
    ids = _check_ids(input, int(w.shape[0]), "input")
    out = torch.empty((*ids.shape, w.shape[1]), dtype=weight.dtype)
    _core.gather(w, ids, out=out.numpy())
    return out


@_embedding_op.register_fake
def _(
    weight: torch.Tensor,
    input: torch.Tensor,
    padding_idx: int,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    return weight.new_empty((*input.shape, weight.shape[1]))


@torch.library.custom_op(
    "embtable::embedding_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor input, SymInt num_weights, int padding_idx, "
    "bool scale_grad_by_freq) -> Tensor",
)
def _embedding_backward_op(
    grad: torch.Tensor,
    input: torch.Tensor,
    num_weights: int,
    padding_idx: int,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    ids = _check_ids(input, num_weights, "input")
    D = int(grad.shape[-1])
    return _embedding_weight_grad(
        None,
        grad,
        ids,
        num_weights,
        D,
        _pad_or_none(padding_idx),
        scale_grad_by_freq,
        sparse=False,
    )


@_embedding_backward_op.register_fake
def _(
    grad: torch.Tensor,
    input: torch.Tensor,
    num_weights: int,
    padding_idx: int,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    return grad.new_empty((num_weights, grad.shape[-1]))


def _embedding_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    weight, input, padding_idx, scale_grad_by_freq = inputs
    ctx.save_for_backward(input)
    ctx.num_weights = weight.shape[0]
    ctx.padding_idx, ctx.scale_grad_by_freq = padding_idx, scale_grad_by_freq


def _embedding_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    (input,) = ctx.saved_tensors
    grad_weight = torch.ops.embtable.embedding_backward(
        grad, input, ctx.num_weights, ctx.padding_idx, ctx.scale_grad_by_freq
    )
    return grad_weight, None, None, None


torch.library.register_autograd(
    "embtable::embedding", _embedding_backward, setup_context=_embedding_setup
)


def _bag_op_args(
    weight_rows: int,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    ids = _check_ids(input, weight_rows, "input")
    psw = (
        None
        if per_sample_weights is None
        else _float_view(per_sample_weights, "per_sample_weights", dtype)
    )
    return ids, _check_offsets(offsets), psw


@torch.library.custom_op(
    "embtable::embedding_bag",
    mutates_args=(),
    schema="(Tensor weight, Tensor input, Tensor? offsets, Tensor? per_sample_weights, "
    "str mode, int padding_idx, bool include_last_offset, bool scale_grad_by_freq) "
    "-> (Tensor, Tensor)",
)
def _embedding_bag_op(
    weight: torch.Tensor,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    mode: str,
    padding_idx: int,
    include_last_offset: bool,
    scale_grad_by_freq: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    w = _check_weight(weight)
    ids, offs, psw = _bag_op_args(
        int(w.shape[0]), input, offsets, per_sample_weights, weight.dtype
    )
    out, argmax = _core.embedding_bag(
        w,
        ids,
        offs,
        mode=mode,
        per_sample_weights=psw,
        padding_idx=_pad_or_none(padding_idx),
        include_last_offset=include_last_offset,
        return_argmax=True,
    )
    if argmax is None:
        return torch.from_numpy(out), torch.empty(0, dtype=torch.int64)
    return torch.from_numpy(out), torch.from_numpy(argmax)


def _bag_count(
    input: torch.Tensor, offsets: torch.Tensor | None, include_last_offset: bool
) -> Any:
    if input.dim() == 2 or offsets is None:
        return input.shape[0]
    return offsets.shape[0] - (1 if include_last_offset else 0)


@_embedding_bag_op.register_fake
def _(
    weight: torch.Tensor,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    mode: str,
    padding_idx: int,
    include_last_offset: bool,
    scale_grad_by_freq: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    B = _bag_count(input, offsets, include_last_offset)
    D = weight.shape[1]
    argmax = input.new_empty((B, D) if mode == "max" else (0,), dtype=torch.int64)
    return weight.new_empty((B, D)), argmax


@torch.library.custom_op(
    "embtable::embedding_bag_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor input, Tensor? offsets, Tensor? per_sample_weights, "
    "Tensor argmax, SymInt num_weights, str mode, int padding_idx, "
    "bool include_last_offset, bool scale_grad_by_freq) -> Tensor",
)
def _embedding_bag_backward_op(
    grad: torch.Tensor,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    argmax: torch.Tensor,
    num_weights: int,
    mode: str,
    padding_idx: int,
    include_last_offset: bool,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    ids, offs, psw = _bag_op_args(
        num_weights, input, offsets, per_sample_weights, grad.dtype
    )
    return _bag_weight_grad(
        None,
        grad,
        ids,
        offs,
        num_weights,
        int(grad.shape[-1]),
        mode=mode,
        psw=psw,
        padding_idx=_pad_or_none(padding_idx),
        include_last_offset=include_last_offset,
        scale_grad_by_freq=scale_grad_by_freq,
        argmax=argmax.numpy() if mode == "max" else None,
        sparse=False,
    )


@_embedding_bag_backward_op.register_fake
def _(
    grad: torch.Tensor,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    argmax: torch.Tensor,
    num_weights: int,
    mode: str,
    padding_idx: int,
    include_last_offset: bool,
    scale_grad_by_freq: bool,
) -> torch.Tensor:
    return grad.new_empty((num_weights, grad.shape[-1]))


@torch.library.custom_op(
    "embtable::embedding_bag_psw_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor weight, Tensor input, Tensor? offsets, "
    "int padding_idx, bool include_last_offset) -> Tensor",
)
def _embedding_bag_psw_backward_op(
    grad: torch.Tensor,
    weight: torch.Tensor,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    padding_idx: int,
    include_last_offset: bool,
) -> torch.Tensor:
    _check_weight_meta(weight)
    ids = _check_ids(input, int(weight.shape[0]), "input")
    return _bag_psw_grad(
        grad,
        weight,
        ids,
        _check_offsets(offsets),
        _pad_or_none(padding_idx),
        include_last_offset,
    )


@_embedding_bag_psw_backward_op.register_fake
def _(
    grad: torch.Tensor,
    weight: torch.Tensor,
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    padding_idx: int,
    include_last_offset: bool,
) -> torch.Tensor:
    return grad.new_empty(input.shape)


def _embedding_bag_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    weight, input, offsets, psw, mode, padding_idx, include_last, scale = inputs
    # weight only for the per_sample_weights gradient (see _EmbeddingBagFunction).
    saved_weight = weight if ctx.needs_input_grad[3] else None
    ctx.save_for_backward(saved_weight, input, offsets, psw, output[1])
    ctx.num_weights = weight.shape[0]
    ctx.mode, ctx.padding_idx = mode, padding_idx
    ctx.include_last_offset, ctx.scale_grad_by_freq = include_last, scale


def _embedding_bag_backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple[Any, ...]:
    weight, input, offsets, psw, argmax = ctx.saved_tensors
    grad_weight = grad_psw = None
    if ctx.needs_input_grad[0]:
        grad_weight = torch.ops.embtable.embedding_bag_backward(
            grad,
            input,
            offsets,
            psw,
            argmax,
            ctx.num_weights,
            ctx.mode,
            ctx.padding_idx,
            ctx.include_last_offset,
            ctx.scale_grad_by_freq,
        )
    if ctx.needs_input_grad[3]:
        grad_psw = torch.ops.embtable.embedding_bag_psw_backward(
            grad, weight, input, offsets, ctx.padding_idx, ctx.include_last_offset
        )
    return grad_weight, None, None, grad_psw, None, None, None, None


torch.library.register_autograd(
    "embtable::embedding_bag",
    _embedding_bag_backward,
    setup_context=_embedding_bag_setup,
)


# --- modules ------------------------------------------------------------------------


class Embedding(torch.nn.Embedding):
    """``torch.nn.Embedding`` whose forward and backward run embtable's kernels.

    Same constructor, ``from_pretrained``, ``weight`` and results as
    ``torch.nn.Embedding`` (CPU, float32 / float64); see ``embtable.torch.embedding``.

    >>> import torch, embtable.torch
    >>> emb = embtable.torch.Embedding(10, 3, sparse=True)
    >>> emb(torch.tensor([[1, 2], [2, 9]])).sum().backward()
    >>> emb.weight.grad.is_coalesced(), emb.weight.grad.coalesce().indices().tolist()
    (True, [[1, 2, 9]])
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return embedding(
            input,
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )


class EmbeddingBag(torch.nn.EmbeddingBag):
    """``torch.nn.EmbeddingBag`` whose forward and backward run embtable's kernels.

    Same constructor, ``from_pretrained``, ``weight``, ``forward(input, offsets=None,
    per_sample_weights=None)`` and results as ``torch.nn.EmbeddingBag`` (CPU,
    float32 / float64); see ``embtable.torch.embedding_bag``.
    """

    def forward(
        self,
        input: torch.Tensor,
        offsets: torch.Tensor | None = None,
        per_sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return embedding_bag(
            input,
            self.weight,
            offsets,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.mode,
            self.sparse,
            per_sample_weights,
            self.include_last_offset,
            self.padding_idx,
        )


# --- SparseAdam ---------------------------------------------------------------------


class SparseAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` whose update runs embtable's fused lazy Adam kernel.

    Same constructor, defaults, errors, ``state_dict`` (``step``, ``exp_avg``,
    ``exp_avg_sq``: it loads into ``torch.optim.SparseAdam`` and back) and update
    as torch's: for each row in the coalesced sparse gradient,
    ``m += (g - m)(1 - b1)``, ``v += (g*g - v)(1 - b2)``,
    ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``; other rows and
    their moments are untouched. torch runs this as a dozen sparse tensor ops
    (masks, copies, three sparse additions); embtable does it in one pass over the
    touched rows, in place, multithreaded. Results equal torch's up to rounding
    (the bias correction is evaluated in the table's dtype).

    The kernel takes 2-D CPU float32 / float64 parameters whose moments are
    C-contiguous (embedding tables) and gradients of whole rows (``sparse_dim() ==
    1``); any other parameter is updated by torch's own ``sparse_adam``. Every
    gradient is checked before any parameter changes: a dense one raises with
    nothing updated.
    """

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every parameter is checked before any is updated: a failed step changes no
        # parameter and no state (torch checks one group at a time, and makes and
        # counts the state of the parameters it met before the bad one).
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not p.grad.is_sparse:
                    raise RuntimeError(
                        "SparseAdam does not support dense gradients, please consider "
                        "Adam instead"
                    )
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """One parameter's step; its state is stored only once the update succeeded."""
        state = self.state.get(p)
        if state:
            m, v = state["exp_avg"], state["exp_avg_sq"]
            step = state["step"] + 1
        else:
            m = torch.zeros_like(p, memory_format=torch.preserve_format)
            v = torch.zeros_like(p, memory_format=torch.preserve_format)
            step = 1
        beta1, beta2 = group["betas"]
        maximize = group.get("maximize", False)
        lr = float(group["lr"])
        grad = p.grad
        assert grad is not None
        if _fused_adam_ok(p, m, v):
            grad = grad.coalesce()
            values = grad._values()
            if values.numel():
                if maximize:
                    values = -values
                _core.optim_step(
                    "adam",
                    p.detach().numpy(),
                    grad._indices()[0].contiguous().numpy(),
                    values.contiguous().numpy(),
                    [m.numpy(), v.numpy(), None],
                    learning_rate=lr,
                    epsilon=group["eps"],
                    beta_1=beta1,
                    beta_2=beta2,
                    step=int(step),
                )
        else:
            torch.optim._functional.sparse_adam(
                [p],
                [grad],
                [m],
                [v],
                [step],
                eps=group["eps"],
                beta1=beta1,
                beta2=beta2,
                lr=lr,
                maximize=maximize,
            )
        if state:
            state["step"] = step
        else:
            self.state[p] = {"step": step, "exp_avg": m, "exp_avg_sq": v}


def _fused_adam_ok(p: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> bool:
    return (
        p.device.type == "cpu"
        and p.dim() == 2
        and p.dtype in _FLOATS
        and p.is_contiguous()
        and p.grad is not None
        and p.grad.dtype == p.dtype
        and p.grad.sparse_dim() == 1  # rows; a fully sparse (2-D) COO goes to torch
        and all(
            s.dtype == p.dtype and s.is_contiguous() and s.shape == p.shape
            for s in (m, v)
        )
    )
