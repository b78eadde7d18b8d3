"""Out-of-core tables: read-ahead for tables that are file-backed mappings (np.memmap).

A gather from a table that is not in the page cache costs one synchronous page fault
per row, as many in flight as there are threads. Before the kernel runs, the pages of
the call's rows are deduplicated, the ones not in the page cache found (mincore) and
read all at once (C++ ``prefetch_rows``), so the device sees a deep queue. The kernel
that follows finds its rows in memory; its output is unchanged.

The method comes from ``EMBTABLE_PREFETCH`` (read at import): ``threads`` (default;
as many I/O threads as the device's request queue holds, each blocked in one page
fault), ``willneed`` (``madvise(MADV_WILLNEED)`` per run of pages) or ``off`` (no
automatic read-ahead; an explicit ``prefetch()`` call still reads, with ``threads``).
Another value warns and means ``threads``. ``show_config()`` reports it under
``"out_of_core"``.
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._config import _env_warning
from ._indices import as_indices, table_rows

if TYPE_CHECKING:
    from ._quant import QuantizedTable

__all__ = ["prefetch"]

_METHODS = ("threads", "willneed", "off")
# I/O threads when the device's queue depth can't be read from sysfs (a network or
# overlay filesystem): the deep queue at which fio's random reads saturate an SSD.
_FALLBACK_IO_THREADS = 64


def _method_from_env() -> str:
    value = os.environ.get("EMBTABLE_PREFETCH", "")
    method = value.strip().lower() or "threads"
    if method in _METHODS:
        return method
    _env_warning(
        "EMBTABLE_PREFETCH", value, "'threads', 'willneed' or 'off'", "'threads'"
    )
    return "threads"


_method = _method_from_env()


class _Mapping:
    """What we learned once about one file mapping."""

    __slots__ = ("io_threads", "path", "random")

    def __init__(self, path: str, io_threads: int) -> None:
        self.path = path
        self.io_threads = io_threads
        self.random = False  # MADV_RANDOM given (the first "threads" read-ahead)


# mmap object -> its _Mapping, or None when it is anonymous memory.
_mappings: weakref.WeakKeyDictionary[mmap.mmap, _Mapping | None] = (
    weakref.WeakKeyDictionary()
)


def device_queue_depth(path: str) -> int | None:
    """``nr_requests`` of the block device holding ``path`` (its request queue), or
    None when sysfs does not say (no such device: tmpfs, overlay, network)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for queue in (f"{base}/queue/nr_requests", f"{base}/../queue/nr_requests"):
        try:
            with open(queue) as f:
                return max(1, int(f.read().strip()))
        except (OSError, ValueError):
            continue
    return None


def _file_mmap(arr: Any) -> mmap.mmap | None:
    """The ``mmap.mmap`` at the root of an ndarray's base chain (np.memmap's), if any."""
    base = arr
    for _ in range(32):  # views of views; the chain is short in practice
        base = getattr(base, "base", None)
        if base is None:
            return None
        if isinstance(base, mmap.mmap):
            return base
    return None


def _mapping(arr: np.ndarray) -> _Mapping | None:
    m = _file_mmap(arr)
    if m is None or arr.size == 0:
        # An empty view has no byte to find the file by: nothing is learned (or
        # cached) about the mapping, and there is nothing to read.
        return None
    try:
        return _mappings[m]
    except KeyError:
        pass
    path = _core.mapped_file(arr)
    info = None
    if path:
        depth = device_queue_depth(path)
        info = _Mapping(path, depth if depth is not None else _FALLBACK_IO_THREADS)
    _mappings[m] = info
    return info


def _read_ahead(
    table: np.ndarray, ids: np.ndarray, method: str, info: _Mapping
) -> dict[str, int]:
    if method == "threads" and not info.random:
        # Each fault then reads its own page, not the 32 pages around it that a
        # random row never needs.
        m = _file_mmap(table)
        if m is not None:
            try:
                m.madvise(mmap.MADV_RANDOM)
            except (OSError, ValueError):
                pass
        info.random = True
    return _core.prefetch_rows(table, ids, method, info.io_threads)


def _maybe_prefetch(table: Any, ids: np.ndarray) -> None:
    """Read ahead ``table[ids]`` when ``table`` is a file mapping (ids are native
    int32/int64, C-contiguous; bad ids are left for the kernel to raise). Quantized
    tables pass their packed rows (``QuantizedTable.data``)."""
    if _method == "off" or not isinstance(table, np.ndarray) or ids.size == 0:
        return
    info = _mapping(table)
    if info is None or table.ndim != 2 or not table.flags.c_contiguous:
        return
    _read_ahead(table, ids, _method, info)


def prefetch(
    table: np.ndarray | QuantizedTable, indices: Any, *, method: str | None = None
) -> dict[str, int]:
    """Read the rows ``table[indices]`` of a file-backed table into the page cache.

    ``gather``, ``embedding_bag``, ``embedding_bags``, ``scatter_add`` and the
    optimizers do this by themselves before their kernel (unless
    ``EMBTABLE_PREFETCH=off``); call it directly to read the next batch's rows
    while the current one computes (it returns once the reads are queued for
    ``method="willneed"``, once they are done for ``"threads"``).

    Parameters
    ----------
    table : ndarray or QuantizedTable
        A ``(V, D)`` C-contiguous table; an ``np.memmap`` (or a view of one) is
        read ahead, any other array is left alone. A
        :class:`embtable.QuantizedTable` is read ahead when its packed rows
        (``data``) are a file mapping.
    indices : array_like of int
        Row ids, any shape; ids outside ``[0, V)`` raise ``IndexError``.
    method : {"threads", "willneed"}, optional
        Default: ``EMBTABLE_PREFETCH``, or ``"threads"`` when that is ``"off"``
        (which turns off only the automatic read-ahead of the other calls).

    Returns
    -------
    dict
        ``pages`` (distinct pages of the rows), ``cold`` (of those, not in the page
        cache before the call), ``issued`` (read requests made); all 0 for a table
        that is not a file mapping.
    """
    from ._quant import QuantizedTable  # (_quant imports this module)

    if isinstance(table, QuantizedTable):
        table = table.data
    ids = as_indices(indices, table_rows(table))
    V = int(table.shape[0])
    flat = ids.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= V))
    if bad.size:
        pos = int(bad[0])
        raise IndexError(
            _core.index_error_message(str(int(flat[pos])), list(ids.shape), pos, V)
        )
    if method is None:
        m = "threads" if _method == "off" else _method
    else:
        m = method
    if m not in ("threads", "willneed"):
        raise ValueError(f"method must be 'threads' or 'willneed', got {m!r}")
    info = _mapping(table)
    if info is None or ids.size == 0:
        return {"pages": 0, "cold": 0, "issued": 0}
    return dict(_read_ahead(table, ids, m, info))


def config() -> dict[str, Any]:
    """The read-ahead settings, for ``show_config()``."""
    return {
        "prefetch": _method,
        "io_threads": "nr_requests of the file's block device (sysfs), else "
        f"{_FALLBACK_IO_THREADS}",
        "env": "EMBTABLE_PREFETCH=threads|willneed|off",
    }
