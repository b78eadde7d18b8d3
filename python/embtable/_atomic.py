"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

Every file embtable writes goes through this module (layer checkpoints, the demo's
table and vocabulary, the bench's JSON and plot). To write a new kind of file::

    from ._atomic import atomic_write, atomic_write_bytes, atomic_write_text

    with atomic_write(path) as f:  # binary file object; mode="w" for UTF-8 text
        np.savez(f, table=table)  # or f.write(...), fig.savefig(f, format="png")
    atomic_write_text(path, "one\\ntwo\\n")  # whole text at once (UTF-8)
    atomic_write_bytes(path, data)  # whole bytes at once

How: the data goes to a new file ``.<name>.<random>.tmp`` in the target's own folder
(the same filesystem, so the rename is atomic). Leaving the ``with`` block normally
flushes it, ``fsync``s it, renames it over the target with ``os.replace`` and
``fsync``s the folder, so both the data and the rename survive a power cut. Leaving
it with an exception (``KeyboardInterrupt`` too) removes the temporary file; the
target is untouched. A process killed outright (``SIGKILL``, out of memory) leaves
the target intact and a stray ``.<name>.*.tmp`` beside it, which is safe to delete.

The new file gets the permissions ``open()`` would give it (``0o666`` minus the
umask); an existing target keeps its permission bits. A symlink as the target is
kept: the file it points to is replaced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "unwritable"]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders can't be opened)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:  # e.g. Windows: directories can't be opened; NTFS journals renames
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new file beside ``target``, opened for writing, with open()'s default mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp  # the kernel applies the umask
        except FileExistsError:  # pragma: no cover (48 random bits)
            continue


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it is replaced in one step at the end.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (re)write. Its folder must exist.
    mode : {"wb", "w"}
        Binary (default) or text.
    encoding, newline
        For text mode, as ``open()``; the encoding defaults to UTF-8.

    Yields
    ------
    file object
        Write to it inside the ``with`` block. Do not close it.

    Notes
    -----
    On normal exit: flush, ``fsync``, ``os.replace`` over ``path``, ``fsync`` of the
    folder. On an exception: the temporary file is removed, ``path`` is untouched,
    and the exception propagates.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target = Path(os.fspath(path))
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    try:
        keep_mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        keep_mode = None
    fd, tmp = _create_temp(target)
    try:
        if keep_mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, keep_mode)
        if mode == "w":
            f: IO[Any] = os.fdopen(
                fd, "w", encoding=encoding or "utf-8", newline=newline
            )
        else:
            f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` (any bytes-like object) to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(
    path: str | os.PathLike[str],
    text: str,
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8 unless ``encoding`` says)."""
    with atomic_write(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)


def unwritable(
    path: str | os.PathLike[str], *, make_parents: bool = False
) -> str | None:
    """Why ``atomic_write(path)`` would fail, or None; for checking a path before
    long work. Its folder (with ``make_parents``, the nearest one that exists, as
    the writer creates the rest) must take a new file: tried, since permissions
    alone do not tell (root, a read-only filesystem)."""
    target = Path(path)
    if target.is_dir():
        return f"{target} is a directory"
    folder = target.parent
    while make_parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return (
            f"{folder} is not a directory"
            if folder.exists()
            else f"no such directory: {folder}"
        )
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"cannot create a file in {folder} ({e.strerror or e})"
    return None
