"""DLPack inputs: CPU torch tensors and JAX arrays in place of ndarrays, never copied.

``as_array`` is the one converter the functional core uses on every array argument.
An ndarray (or anything without ``__dlpack__``: lists, scalars) is returned as is,
so the NumPy path costs one ``isinstance``. A DLPack producer on the CPU becomes an
ndarray view of the same memory (``np.from_dlpack``). Arrays the call writes into
(``target``, ``out``) must be writable: JAX arrays are immutable, so they are refused
there with a ``ValueError`` before anything is written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_DL_CPU = 1  # DLDeviceType kDLCPU
_DL_CPU_PINNED = 3  # kDLCUDAHost: host memory, readable from the CPU


def _is_jax(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] in ("jax", "jaxlib")


def as_array(x: Any, name: str, *, writable: bool = False) -> Any:
    """``x`` as an ndarray view when it offers ``__dlpack__``; anything else unchanged.

    Raises ``TypeError`` for an array on another device and ``ValueError`` when a
    writable array is needed and ``x`` is immutable (a JAX array).
    """
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return x
    device = getattr(x, "__dlpack_device__", None)
    if device is not None:
        try:
            kind = int(device()[0])
        except (BufferError, RuntimeError, ValueError, TypeError):
            kind = -1  # a device DLPack cannot even name (e.g. torch's "meta")
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
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
        # torch refuses to export a tensor that requires grad; detach() is a view.
        x = x.detach()
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
