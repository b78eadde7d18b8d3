"""Pretrained word vectors: word2vec text / binary and GloVe files.

The parsing and formatting run in the C++ core (``cpp/src/vectors.cpp``); this
module only normalises the arguments and writes files atomically.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core
from ._atomic import atomic_write

__all__ = ["load_vectors", "save_vectors"]


def _path(path: Any) -> tuple[bytes, str]:
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"path must be a str, bytes or os.PathLike, got {type(path).__name__}"
        ) from None
    return os.fsencode(p), os.fsdecode(p)


def load_vectors(
    path: str | os.PathLike[str],
    *,
    binary: bool | None = None,
    limit: int | None = None,
    dtype: Any = "float32",
) -> tuple[list[str], np.ndarray]:
    """Read word vectors from a word2vec (text or binary) or GloVe file.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its format: word2vec text (a ``"V D"`` header line, then one
        ``word x_1 ... x_D`` line per vector), the word2vec C binary format (the
        same header, then ``word`` + space + ``D`` little-endian float32 per
        vector), or GloVe text (the lines without a header). A first line of
        exactly two integers is a header.
    binary : bool, optional
        ``None`` (default) detects text or binary (see Notes); ``True`` reads the
        binary format, ``False`` text (with a header or not).
    limit : int, optional
        Keep only the first ``limit`` vectors: reading stops there, and the rest
        of the file is neither read nor checked. A file that ends before
        ``limit`` vectors is checked as without a limit.
    dtype : {"float32", "float64"}
        The table's dtype.

    Returns
    -------
    words : list of str
        ``V`` words, in file order.
    table : numpy.ndarray
        ``(V, D)`` C-contiguous: row ``i`` is the vector of ``words[i]``.

    Raises
    ------
    ValueError
        A malformed file, naming the file and the line (text; 1-based, the header
        is line 1) or the vector (binary; 1-based): a row with the wrong number of
        values, a header that disagrees with the rows, a bad number, a duplicate
        word, a word that is not UTF-8, a truncated binary vector.
    OSError
        The file cannot be opened or read (``FileNotFoundError``, ...).

    Notes
    -----
    Detection (``binary=None``): a file without a header is GloVe text. With a
    header, the first 64 KiB after it (more when ``D`` is large) are parsed both
    ways, over the records the header announces: the file is text when they
    parse as text rows of ``D`` values, else binary when they parse as binary
    records (word, space, ``4 * D`` bytes); when neither fits (a malformed
    file) it is binary if the bytes after a row's word hold a NUL byte or
    invalid UTF-8, else text, so the error comes from the right reader. A file
    valid both ways is text: only a few rows whose values part takes exactly
    ``4 * D`` bytes can be (``"1 2\\na 12 34567\\n"``); pass ``binary=True`` to
    read such a file as binary.

    The result equals gensim's ``KeyedVectors.load_word2vec_format(path,
    binary=..., limit=..., datatype=...)`` bit for bit (``no_header=True`` for
    GloVe): each text value is parsed as a double and rounded to the dtype, as
    ``numpy.float32(str)`` does.

    Examples
    --------
    >>> words, table = embtable.load_vectors("glove.6B.50d.txt")  # doctest: +SKIP
    """
    raw, display = _path(path)
    if binary is None:
        mode = -1
    elif isinstance(binary, (bool, np.bool_)):
        mode = int(bool(binary))
    else:
        raise TypeError(f"binary must be True, False or None, got {binary!r}")
    if limit is None:
        n = -1
    else:
        if isinstance(limit, (bool, np.bool_)):
            raise TypeError(f"limit must be an int or None, got {limit!r}")
        try:
            n = operator.index(limit)
        except TypeError:
            raise TypeError(
                f"limit must be an int or None, got {type(limit).__name__}"
            ) from None
        if n < 0:
            raise ValueError(f"limit must be >= 0, got {n}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    words, table = _core.load_vectors(raw, display, mode, n, dt.name)
    return words, table


def save_vectors(
    path: str | os.PathLike[str],
    words: Sequence[str],
    table: Any,
    *,
    binary: bool = False,
) -> None:
    """Write word vectors in the word2vec format (text or C binary).

    Parameters
    ----------
    path : str or os.PathLike
        The file, written atomically (a temporary file in the same folder, fsynced,
        then renamed over ``path``).
    words : sequence of str
        ``V`` distinct non-empty words, none containing a space or a newline or
        ending with ASCII whitespace (the reader strips it from the end of a row).
    table : array_like
        ``(V, D)`` real numbers. Text keeps float32 and float64 values exactly
        (each value in its shortest form that reads back to the same number, also
        through gensim's double-then-float32 parse); other real dtypes are
        written as float32 (float16) or float64 (integers). Binary stores float32,
        as the format does (float64 values are rounded).
    binary : bool
        ``False``: ``"V D"`` then ``word x_1 ... x_D`` lines. ``True``: the C tool's
        binary format (``word`` + space + D little-endian float32 + ``"\\n"``).

    Raises
    ------
    ValueError
        ``len(words) != V``, a duplicate word, an empty word, a word with a space
        or a newline or ending with whitespace (in both formats and for every
        ``D``), or a table that is not 2-D; nothing is written.
    TypeError
        A word that is not a str, or a table that is not real numbers.

    Examples
    --------
    >>> embtable.save_vectors("vectors.txt", ["a", "b"], np.eye(2))  # doctest: +SKIP
    """
    _, display = _path(path)
    if not isinstance(binary, (bool, np.bool_)):
        raise TypeError(f"binary must be True or False, got {binary!r}")
    t = np.asarray(table)
    if t.ndim != 2:
        raise ValueError(f"table must be 2-D (V, D), got shape {t.shape}")
    if t.dtype.kind == "f" and t.dtype.itemsize <= 4:
        t = np.ascontiguousarray(t, dtype=np.float32)
    elif t.dtype.kind in "fiu" and t.dtype.itemsize <= 8:
        t = np.ascontiguousarray(t, dtype=np.float64)
    else:
        raise TypeError(f"table must hold real numbers, got dtype {t.dtype}")
    if isinstance(words, (str, bytes)):
        raise TypeError("words must be a sequence of str, not a single string")
    words = list(words)
    if len(words) != t.shape[0]:
        raise ValueError(
            f"{len(words)} words for a table of {t.shape[0]} rows (shape {t.shape})"
        )
    encoded = []
    for i, w in enumerate(words):
        if not isinstance(w, str):
            raise TypeError(f"words[{i}] must be a str, got {type(w).__name__}")
        try:
            encoded.append(w.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(
                f"words[{i}] = {w!r} cannot be encoded as UTF-8: {e}"
            ) from None
    if len(set(words)) != len(words):
        first: dict[str, int] = {}
        for i, w in enumerate(words):
            if w in first:
                raise ValueError(
                    f"words[{i}] = {w!r} is a duplicate of words[{first[w]}]"
                )
            first[w] = i
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = b"".join(encoded)
    bad = _core.vectors_check_words(blob, offsets)
    if bad is not None:
        i, why = bad
        raise ValueError(f"words[{i}] = {words[i]!r} {why}")
    with atomic_write(path) as f:
        f.flush()
        _core.save_vectors(f.fileno(), display, blob, offsets, t, bool(binary))
