"""Threads and build information."""

from __future__ import annotations

import json
import operator
import os
import warnings
from typing import Any, Literal

from . import _core

__all__ = ["get_num_threads", "set_num_threads", "show_config"]


def set_num_threads(n: int) -> None:
    """Set the number of threads the core uses (``n >= 1``, else ``ValueError``)."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(
            f"number of threads must be an int, got {type(n).__name__}"
        ) from None
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _core.set_num_threads(min(n, 1 << 16))


def get_num_threads() -> int:
    """The number of threads the core uses."""
    return int(_core.get_num_threads())


def show_config(mode: Literal["stdout", "dicts"] = "stdout") -> dict[str, Any] | None:
    """Print (``mode="stdout"``) or return (``mode="dicts"``) the build configuration.

    Top-level keys: ``version``, ``build`` (compiler, build type, flags),
    ``simd`` (compiled / detected / selected levels) and ``threads``; also
    ``out_of_core`` (the read-ahead for np.memmap tables, see ``embtable.prefetch``).
    """
    from . import _prefetch

    cfg = _core.config()
    cfg["out_of_core"] = _prefetch.config()
    if mode == "dicts":
        return cfg
    if mode != "stdout":
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    print(json.dumps(cfg, indent=2))
    return None


def _threads_from_env() -> None:
    value = os.environ.get("EMBTABLE_NUM_THREADS")
    if value is None or value.strip() == "":
        return
    try:
        n = int(value)
        if n < 1:
            raise ValueError
    except ValueError:
        warnings.warn(
            f"EMBTABLE_NUM_THREADS={value!r} is not an integer >= 1; ignored",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    set_num_threads(n)
