"""DLPack inputs: CPU torch tensors and JAX arrays in place of ndarrays, never copied.

``as_array`` is the one converter the functional core uses on every array argument.
An ndarray (or anything without ``__dlpack__``: lists, scalars) is returned as is,
so the NumPy path costs one ``isinstance``. A DLPack producer on the CPU becomes an
ndarray view of the same memory (``np.from_dlpack``). Arrays the call writes into
(``target``, ``out``) must be writable: JAX arrays are immutable, so they are refused
there with a ``ValueError`` before anything is written, and so is a torch tensor that
requires grad while grad mode is on (``RuntimeError``: autograd cannot record the
write). After a write, ``written`` bumps a torch tensor's version counter, as torch's
own in-place ops do. torch is never imported here: a tensor is recognised through the
``torch`` module its owner already imported.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

_DL_CPU = 1  # DLDeviceType kDLCPU
_DL_CPU_PINNED = 3  # kDLCUDAHost: host memory, readable from the CPU


def _is_jax(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] in ("jax", "jaxlib")


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    return torch is not None and isinstance(x, torch.Tensor)


def _jax_devices(x: Any) -> int:
    """How many devices the JAX array ``x`` is spread over (1 when unknown)."""
    try:
        return len(x.sharding.device_set)
    except Exception:  # a tracer, or an object that only looks like a jax.Array
        return 1


def as_array(x: Any, name: str, *, writable: bool = False) -> Any:
    """``x`` as an ndarray view when it offers ``__dlpack__``; anything else unchanged.

    Raises ``TypeError`` for an array on another device or a torch tensor with the
    negative bit set, ``ValueError`` for a JAX array sharded over several devices or,
    when a writable array is needed, an immutable one (a JAX array), and
    ``RuntimeError`` for a writable torch tensor that requires grad in grad mode.
    Everything is checked before the caller writes. A caller that writes into a torch
    tensor calls ``written`` afterwards.
    """
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return x
    device = getattr(x, "__dlpack_device__", None)
    if device is not None:
        try:
            kind = int(device()[0])
        except (BufferError, RuntimeError, ValueError, TypeError):
            kind = -1  # a device DLPack cannot even name (e.g. torch's "meta")
            if _is_jax(x) and (n := _jax_devices(x)) > 1:
                # jax exports only unsharded arrays (BufferError), wherever they are.
                raise ValueError(
                    f"{name} is a JAX array sharded across {n} devices; embtable "
                    "reads arrays on one CPU device: gather it there first, e.g. "
                    f"jax.device_put({name}, jax.devices('cpu')[0])"
                ) from None
        if kind not in (_DL_CPU, _DL_CPU_PINNED):
            where = getattr(x, "device", f"DLPack device type {kind}")
            raise TypeError(
                f"{name} is on device {where}; embtable runs on the CPU: move it "
                "there first (e.g. tensor.cpu())"
            )
    if writable and _is_jax(x):
        raise ValueError(
            f"{name} is a JAX array, which is immutable: embtable writes {name} in "
            "place, so pass a NumPy array or a torch tensor (or use embtable.jax)"
        )
    if _torch_tensor(x):
        x = _torch_view(x, name, writable)
    try:
        arr = np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError) as exc:
        raise TypeError(
            f"{name} ({type(x).__name__}) cannot be read through DLPack: {exc}"
        ) from None
    if writable and not arr.flags.writeable:
        raise ValueError(
            f"{name} ({type(x).__name__}) is read-only; embtable writes it in place"
        )
    return arr


def _torch_view(x: Any, name: str, writable: bool) -> Any:
    """The tensor to export: checked for what DLPack would lose, detached."""
    if x.is_neg():
        # Like the conjugate bit (torch refuses to export that one): the memory holds
        # the values negated, and DLPack would share it without the sign.
        fix = (
            f"embtable writes {name} in place, so pass a tensor without it"
            if writable
            else f"pass {name}.resolve_neg() (a copy)"
        )
        raise TypeError(
            f"{name} is a torch tensor with the negative bit set (a lazy negation, "
            f"e.g. from .conj().imag), which DLPack cannot express: {fix}"
        )
    if not x.requires_grad:
        return x
    if writable:
        import torch  # already imported: x is a tensor

        if torch.is_grad_enabled():
            raise RuntimeError(
                f"{name} requires grad and embtable would write it in place, which "
                "autograd cannot record (torch: a leaf Variable that requires grad "
                "is being used in an in-place operation); pass a tensor that does "
                "not require grad, or write under torch.no_grad()"
            )
    # torch refuses to export a tensor that requires grad; detach() is a view.
    return x.detach()


def written(x: Any) -> None:
    """After writing into ``x`` in place: bump a torch tensor's version counter.

    Autograd then refuses a backward that saved ``x`` before the write, as it does
    after torch's own in-place ops (the write would make its gradient wrong).
    """
    if _torch_tensor(x):
        import torch

        torch.autograd.graph.increment_version(x)
