"""embtable inside JAX: ``gather`` and ``embedding_bag`` under jit, vmap and grad (CPU).

Both are ``jax.custom_vjp`` functions whose forward and backward run embtable's C++
kernels inside the XLA program. Two backends, chosen once at import (``BACKEND``):

- ``"ffi"`` (used when the optional extension ``embtable._jax_ffi`` was built, i.e.
  jax was importable when embtable was compiled): XLA FFI custom calls
  (``jax.ffi.ffi_call``) that read and write XLA's own buffers, no copies.
- ``"callback"``: ``jax.pure_callback`` into the NumPy API. Always available, but
  JAX copies every operand for a host callback (the whole table, each call), so
  it is several times slower than ``jnp.take`` on large tables.

The backward of ``gather`` is embtable's scatter-add, the backward of
``embedding_bag`` its bag backward, each into a fresh zero ``(V, D)`` gradient (JAX
cotangents are dense). docs/torch_jax.md has the measurements behind the choice.
Set ``EMBTABLE_JAX_BACKEND=callback`` to force the fallback.

Under ``jax.vmap`` a batched ``ids`` with an unbatched table is one kernel call over
all the ids; other batchings loop over the batch.

Bad ids and offsets are found by the kernels inside the XLA program, eagerly as under
``jax.jit``: they raise ``jax.errors.JaxRuntimeError`` whose message ends with the
NumPy core's (``OUT_OF_RANGE: index 7 at position (1,) is out of bounds for a table
with 5 rows``), at the call or, as JAX dispatches asynchronously, when the result is
first used. A call whose output has no elements (``D = 0``, no ids, no bags) checks
its inputs all the same. Concrete ids that 32-bit JAX integers would wrap (without
``jax_enable_x64``: int64 ids beyond the int32 range, uint32 ids >= 2**31) are
checked before the conversion: ``IndexError`` naming the id as given. (``jnp.take`` instead returns NaN rows for
out-of-range ids.)

Needs the optional ``jax`` (``pip install embtable[jax]``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from . import _core
from ._config import _env_warning
from ._indices import as_indices

__all__ = ["BACKEND", "embedding_bag", "gather"]

_MODES = ("sum", "mean", "max")


def _register_ffi() -> bool:
    try:
        from . import _jax_ffi  # type: ignore[attr-defined]
    except ImportError:
        return False
    for name, capsule in _jax_ffi.handlers().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return True


_HAVE_FFI = _register_ffi()


def _backend_from_env() -> str:
    value = os.environ.get("EMBTABLE_JAX_BACKEND", "")
    if value == "callback":
        return "callback"
    best = "ffi" if _HAVE_FFI else "callback"
    if value not in ("", "ffi"):
        _env_warning("EMBTABLE_JAX_BACKEND", value, "'ffi' or 'callback'", repr(best))
    elif value == "ffi" and not _HAVE_FFI:
        _env_warning(
            "EMBTABLE_JAX_BACKEND",
            value,
            "available (embtable was built without the FFI extension)",
            "'callback'",
        )
    return best


#: ``"ffi"`` (XLA FFI custom calls, zero-copy) or ``"callback"`` (jax.pure_callback).
BACKEND: str = _backend_from_env()


def _check_table(table: Any) -> None:
    if table.ndim != 2:
        raise ValueError(f"table must be 2-D (V, D), got shape {tuple(table.shape)}")
    if table.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(
            f"table has dtype {table.dtype}; embtable.jax supports float32 and float64"
        )


def _as_ids(ids: Any, name: str, V: int | None = None) -> jax.Array:
    """Integer ids as int32 / int64 (the kernels' index types), never wrapped.

    Without ``jax_enable_x64`` JAX integers have 32 bits. Concrete ids whose values
    the conversion could wrap (int64 NumPy ids then; uint32 >= 2**31; uint64 >=
    2**63) are checked first: ``IndexError`` naming the first id outside ``[0, V)``
    as given, as the NumPy core does. Traced ids cannot be checked: a traced uint32
    id >= 2**31 without x64 reaches the kernel as the negative int32 it wraps to.
    """
    x64 = jax.dtypes.canonicalize_dtype(np.int64) == np.int64
    if not isinstance(ids, jax.core.Tracer):
        arrays = (np.ndarray, jax.Array)
        dtype = np.dtype(
            ids.dtype if isinstance(ids, arrays) else np.asarray(ids).dtype
        )
        wide = dtype.itemsize == 8 or dtype.kind == "u"
        kind = np.dtype(np.int64 if x64 and wide else np.int32)
        if dtype.kind in "iu" and not np.can_cast(dtype, kind):
            # Only then are the values read (for a JAX array, a sync and a view).
            _check_fits(np.asarray(ids), kind, name, V)
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} must be an array of integers, got dtype {ids.dtype}")
    if ids.dtype not in (jnp.int32, jnp.int64):
        # uint32 needs int64 (when there is one); int8/int16/uint8/uint16 fit int32.
        wide = ids.dtype.itemsize == 8 or ids.dtype == jnp.uint32
        ids = ids.astype(jnp.int64 if x64 and wide else jnp.int32)
    return ids


def _check_fits(host: np.ndarray, kind: np.dtype, name: str, V: int | None) -> None:
    """Raise when a value of ``host`` does not fit ``kind`` (the conversion would wrap)."""
    flat = host.reshape(-1)
    info = np.iinfo(kind)
    fits = (flat >= info.min) & (flat <= info.max)
    if fits.all():
        return
    if V is not None:
        # What the kernel would say without the wrap: the first id outside [0, V).
        bad = np.flatnonzero((flat < 0) | (flat >= V))
        if bad.size:
            k = int(bad[0])
            raise IndexError(
                _core.index_error_message(str(int(flat[k])), list(host.shape), k, V)
            )
    k = int(np.flatnonzero(~fits)[0])
    position = tuple(int(i) for i in np.unravel_index(k, host.shape))
    raise ValueError(
        f"{name} value {int(flat[k])} at position {position} does not fit {kind.name}"
        + ("" if kind == np.int64 else "; int64 needs jax_enable_x64")
    )


def _batched(
    one: Callable[..., np.ndarray], ranks: tuple[int, ...], *arrays: np.ndarray
) -> np.ndarray:
    """Apply ``one`` to each batch element when vmap gave the arrays leading dims.

    ``ranks`` are the unbatched ranks; ``vmap_method="expand_dims"`` prepends the
    same number of batch dims to every array (size 1 where that array is unbatched).
    """
    k = arrays[0].ndim - ranks[0]
    if k == 0:
        return one(*arrays)
    batch = np.broadcast_shapes(*(a.shape[:k] for a in arrays))
    full = [np.broadcast_to(a, batch + a.shape[k:]) for a in arrays]
    results = [one(*(a[i] for a in full)) for i in np.ndindex(batch)]
    return np.stack(results).reshape(batch + results[0].shape)


def _empty(shapes: Any) -> bool:
    """True when no output has an element.

    XLA drops a side-effect-free call whose outputs are all empty, and with it the
    kernel's checks of the ids and offsets. Shapes are static, so such a call is
    made as a side-effecting one instead (same kernel, same checks and errors).
    """
    return all(math.prod(s.shape) == 0 for s in jax.tree.leaves(shapes))


def _ffi_call(name: str, shapes: Any, *args: Any, **attrs: Any) -> Any:
    return jax.ffi.ffi_call(
        name, shapes, vmap_method="expand_dims", has_side_effect=_empty(shapes)
    )(*args, **attrs)


def _host_call(f: Callable[..., Any], shapes: Any, *args: Any, vmap_method: str) -> Any:
    if _empty(shapes):
        # Unordered: free to move, never dropped. Under vmap it loops over the
        # batch, so f sees unbatched arguments.
        return io_callback(f, shapes, *args)
    return jax.pure_callback(f, shapes, *args, vmap_method=vmap_method)


# --- gather -------------------------------------------------------------------------


def _gather_host(r: int, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``r``: the rank of ids outside vmap (batch dims come first, see _batched)."""
    table, ids = np.asarray(table), np.asarray(ids)
    k = table.ndim - 2
    if k and all(s == 1 for s in table.shape[:k]):
        # vmap over ids only: one call over every id (out = ids.shape + (D,)).
        flat = table.reshape(table.shape[k:][0], table.shape[k:][1])
        out = _core.gather(flat, as_indices(ids, flat.shape[0]))
        batch = np.broadcast_shapes(table.shape[:k], ids.shape[:k])
        return np.broadcast_to(out, batch + out.shape[k:])

    def one(t: np.ndarray, i: np.ndarray) -> np.ndarray:
        return _core.gather(t, as_indices(i, t.shape[0]))

    return _batched(one, (2, r), table, ids)


def _scatter_host(V: int, r: int, ids: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The table gradient of gather: zeros((V, D)) scatter-added with ``grad``."""

    def one(i: np.ndarray, g: np.ndarray) -> np.ndarray:
        target = np.zeros((V, g.shape[-1]), dtype=g.dtype)
        return _core.scatter_add(target, as_indices(i, V), np.ascontiguousarray(g))

    return _batched(one, (r, r + 1), np.asarray(ids), np.asarray(grad))


def _gather_call(table: jax.Array, ids: jax.Array) -> jax.Array:
    shape = jax.ShapeDtypeStruct((*ids.shape, table.shape[1]), table.dtype)
    if BACKEND == "ffi":
        return _ffi_call("embtable_gather", shape, table, ids)  # type: ignore[no-any-return]
    return _host_call(  # type: ignore[no-any-return]
        functools.partial(_gather_host, ids.ndim),
        shape,
        table,
        ids,
        vmap_method="expand_dims",
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gather(V: int, table: jax.Array, ids: jax.Array) -> jax.Array:
    return _gather_call(table, ids)


def _gather_fwd(V: int, table: jax.Array, ids: jax.Array) -> tuple[jax.Array, Any]:
    return _gather_call(table, ids), ids


def _gather_bwd(V: int, ids: jax.Array, g: jax.Array) -> tuple[jax.Array, None]:
    shape = jax.ShapeDtypeStruct((V, g.shape[-1]), g.dtype)
    if BACKEND == "ffi":
        grad = _ffi_call(
            "embtable_scatter_add",
            shape,
            ids,
            g,
            ids_rank=np.int64(ids.ndim),
            deterministic=True,
        )
        return grad, None
    grad = _host_call(
        functools.partial(_scatter_host, V, ids.ndim),
        shape,
        ids,
        g,
        vmap_method="expand_dims",
    )
    return grad, None


_gather.defvjp(_gather_fwd, _gather_bwd)


def gather(table: jax.Array, ids: jax.Array) -> jax.Array:
    """``jnp.take(table, ids, axis=0)`` on embtable's kernels; jit-, vmap- and grad-able.

    Parameters
    ----------
    table : jax.Array
        ``(V, D)`` float32 or float64 (CPU).
    ids : jax.Array
        Integer ids of any shape, in ``[0, V)``.

    Returns
    -------
    jax.Array
        ``ids.shape + (D,)``. Its gradient with respect to ``table`` is embtable's
        scatter-add of the output gradient (ids get no gradient).

    Raises
    ------
    jax.errors.JaxRuntimeError
        An id outside ``[0, V)`` (also when the output is empty, ``D = 0``): the
        message ends with the NumPy core's ``IndexError`` message. Raised at the
        call or when the result is first used (JAX dispatches asynchronously).
    IndexError
        Concrete ids that 32-bit JAX integers would wrap (see the module notes).

    >>> import jax, jax.numpy as jnp, embtable.jax
    >>> table = jnp.arange(6.0).reshape(3, 2)
    >>> embtable.jax.gather(table, jnp.array([2, 0]))
    Array([[4., 5.],
           [0., 1.]], dtype=float32)
    """
    table = jnp.asarray(table)
    _check_table(table)
    V = int(table.shape[0])
    return _gather(V, table, _as_ids(ids, "ids", V))


# --- embedding_bag ------------------------------------------------------------------


def _argmax_dtype() -> Any:
    # int64 when jax_enable_x64 is on, else int32 (JAX has no int64 arrays then).
    return jax.dtypes.canonicalize_dtype(np.int64)


def _bag_host(
    mode: str, has_offsets: bool, table: Any, ids: Any, offsets: Any
) -> tuple[np.ndarray, np.ndarray]:
    table, ids = np.asarray(table), np.asarray(ids)
    V = table.shape[0]
    out, argmax = _core.embedding_bag(
        table,
        as_indices(ids, V),
        np.asarray(offsets, dtype=np.int64) if has_offsets else None,
        mode=mode,
        return_argmax=True,
    )
    if mode != "max":
        return out, np.zeros((0,), _argmax_dtype())
    return out, argmax.astype(_argmax_dtype())


def _bag_backward_host(
    mode: str, V: int, has_offsets: bool, g: Any, ids: Any, offsets: Any, argmax: Any
) -> np.ndarray:
    g = np.ascontiguousarray(g)
    target = np.zeros((V, g.shape[-1]), dtype=g.dtype)
    return _core.embedding_bag_backward(
        g,
        as_indices(np.asarray(ids), V),
        np.asarray(offsets, dtype=np.int64) if has_offsets else None,
        mode=mode,
        argmax=np.asarray(argmax, dtype=np.int64) if mode == "max" else None,
        target=target,
        deterministic=True,
    )


def _bag_call(
    mode: str, has_offsets: bool, table: jax.Array, ids: jax.Array, offsets: jax.Array
) -> tuple[jax.Array, jax.Array]:
    B = offsets.shape[0] if has_offsets else ids.shape[0]
    D = table.shape[1]
    shapes = (
        jax.ShapeDtypeStruct((B, D), table.dtype),
        jax.ShapeDtypeStruct((B, D) if mode == "max" else (0,), _argmax_dtype()),
    )
    if BACKEND == "ffi":
        out, argmax = _ffi_call(
            "embtable_bag",
            shapes,
            table,
            ids,
            offsets,
            mode=np.int64(_MODES.index(mode)),
            has_offsets=has_offsets,
        )
        return out, argmax
    out, argmax = _host_call(
        functools.partial(_bag_host, mode, has_offsets),
        shapes,
        table,
        ids,
        offsets,
        vmap_method="sequential",
    )
    return out, argmax


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _bag(
    mode: str, V: int, has_offsets: bool, table: jax.Array, ids: jax.Array, offsets: Any
) -> jax.Array:
    return _bag_call(mode, has_offsets, table, ids, offsets)[0]


def _bag_fwd(
    mode: str, V: int, has_offsets: bool, table: jax.Array, ids: jax.Array, offsets: Any
) -> tuple[jax.Array, Any]:
    out, argmax = _bag_call(mode, has_offsets, table, ids, offsets)
    return out, (ids, offsets, argmax)


def _bag_bwd(
    mode: str, V: int, has_offsets: bool, res: Any, g: jax.Array
) -> tuple[jax.Array, None, None]:
    ids, offsets, argmax = res
    shape = jax.ShapeDtypeStruct((V, g.shape[-1]), g.dtype)
    if BACKEND == "ffi":
        grad = _ffi_call(
            "embtable_bag_backward",
            shape,
            g,
            ids,
            offsets,
            argmax,
            mode=np.int64(_MODES.index(mode)),
            has_offsets=has_offsets,
            deterministic=True,
        )
    else:
        grad = _host_call(
            functools.partial(_bag_backward_host, mode, V, has_offsets),
            shape,
            g,
            ids,
            offsets,
            argmax,
            vmap_method="sequential",
        )
    return grad, None, None


_bag.defvjp(_bag_fwd, _bag_bwd)


def embedding_bag(
    table: jax.Array,
    ids: jax.Array,
    offsets: jax.Array | None = None,
    *,
    mode: str = "mean",
) -> jax.Array:
    """Pooled lookup (``embtable.embedding_bag`` without options) for JAX.

    Bags are the rows of 2-D ``ids`` ``(B, L)`` (``offsets`` None) or the runs of
    1-D ``ids`` starting at ``offsets`` (``offsets[0] == 0``, non-decreasing, each
    ``<= len(ids)``). ``mode`` is ``"sum"``, ``"mean"`` or ``"max"``; an empty bag
    gives zeros. jit-, vmap- and grad-able; the gradient with respect to ``table``
    is embtable's bag backward (``"max"``: to the row that won each column).

    Parameters
    ----------
    table : jax.Array
        ``(V, D)`` float32 or float64 (CPU).
    ids : jax.Array
        Integer ids in ``[0, V)``, 1-D (with ``offsets``) or 2-D.
    offsets : jax.Array, optional
        1-D integer bag starts, for 1-D ``ids``.

    Returns
    -------
    jax.Array
        ``(B, D)``.

    Raises
    ------
    jax.errors.JaxRuntimeError
        An id outside ``[0, V)`` or bad offsets (also when the output is empty):
        the message ends with the NumPy core's ``IndexError`` / ``ValueError``
        message. Raised at the call or when the result is first used.
    IndexError
        Concrete ids that 32-bit JAX integers would wrap (see the module notes).

    >>> import jax.numpy as jnp, embtable.jax
    >>> table = jnp.arange(8.0).reshape(4, 2)
    >>> embtable.jax.embedding_bag(table, jnp.array([0, 1, 3]), jnp.array([0, 2]), mode="sum")
    Array([[2., 4.],
           [6., 7.]], dtype=float32)
    """
    table = jnp.asarray(table)
    _check_table(table)
    V = int(table.shape[0])
    ids = _as_ids(ids, "ids", V)
    if mode not in _MODES:
        raise ValueError(f"mode must be 'sum', 'mean' or 'max', got {mode!r}")
    if ids.ndim == 2:
        if offsets is not None:
            raise ValueError("with 2-D ids (B, L) offsets must be None")
        offs = jnp.zeros((0,), jnp.int32)
    elif ids.ndim == 1:
        if offsets is None:
            raise ValueError("1-D ids need 1-D offsets (the bag starts)")
        offs = _as_ids(offsets, "offsets")
        if offs.ndim != 1:
            raise ValueError(f"offsets must be 1-D, got shape {offs.shape}")
    else:
        raise ValueError(f"ids must be 1-D or 2-D, got shape {ids.shape}")
    return _bag(mode, V, offsets is not None, table, ids, offs)
