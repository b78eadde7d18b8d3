"""Layer checkpoints: the ``.npz`` that ``save`` writes and ``load`` reads.

The file is a plain NumPy ``.npz`` (an uncompressed zip of ``.npy`` members),
readable with ``np.load(path, allow_pickle=False)``. Members (docs/checkpoints.md):

==============================  =====================================================
``embeddings``                  the ``(V, D)`` table (always the first member)
``config``                      the layer's ``get_config()`` as a JSON str
``format``                      ``"embtable.<class name>"``, e.g. ``"embtable.Embedding"``
``format_version``              int64, ``FORMAT_VERSION`` (absent in version 0 files)
``optimizer.class``             the optimizer's class name (only with ``optimizer=``)
``optimizer.config``            its ``get_config()`` as a JSON str
``optimizer.state.iterations``  int64, its step count for this layer
``optimizer.state.<slot>``      one ``(V, D)`` array per slot, e.g. ``momentum``
==============================  =====================================================

Writing streams each array into its zip member in slices of at most ``COPY_BYTES``,
each copied into a private buffer that is CRC-32'd and written from there (a memmap
table is never copied into memory whole), through ``_atomic.atomic_write``. Reading
checks everything (format, version, class, hyperparameters, shapes, dtypes, the zip's
CRC-32 of every member) before anything outside the new layer changes; a bad file
raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._atomic import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "check_layer",
    "load_layer",
    "open_checkpoint",
    "save_layer",
]

# Version 0: embtable 0.1.0's files (embeddings, config, format; no optimizer).
# Version 1: adds format_version and the optimizer.* members.
FORMAT_VERSION = 1

# Read slice: large enough that the per-call cost (a Python call, a CRC-32 update, a
# read system call) is negligible next to moving the bytes, small enough to bound
# the temporary memory. NumPy's own .npy writer uses the same 16 MiB.
CHUNK_BYTES = 16 * 1024 * 1024

# Write slice: the size of each of the writer's two private buffers (the only memory a
# save adds). Each slice of an array is copied into one, CRC-32'd there and written
# from there, so that the CRC describes exactly the bytes written even when another
# thread changes the array meanwhile. 1 MiB keeps the per-slice cost (a thread
# hand-off, a write system call) small next to moving the bytes.
COPY_BYTES = 1024 * 1024

_FORMAT_PREFIX = "embtable."
_STATE_PREFIX = "optimizer.state."


class CheckpointError(ValueError):
    """A checkpoint file that can't be used (a ``ValueError`` naming the file)."""


# As np.savez: the name's ending, not pathlib's suffix (".npz" alone has none).
def _path_for_save(path: str | os.PathLike[str]) -> Path:
    p = Path(os.fspath(path))
    if not p.name.endswith(".npz"):
        p = p.with_name(p.name + ".npz")
    return p


def _path_for_load(path: str | os.PathLike[str]) -> Path:
    p = Path(os.fspath(path))
    if not p.exists() and not p.name.endswith(".npz"):
        p = p.with_name(p.name + ".npz")
    return p


# -- writing -------------------------------------------------------------------------
def _npy_pieces(arr: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """The ``.npy`` (format 1.0) bytes of ``arr``: their total size, and the pieces to
    write in order, as flat uint8 arrays (the header, then a view of the array's own
    memory: nothing is copied here)."""
    fmt = np.lib.format
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # never a table (always C order); tiny arrays
    header_io = io.BytesIO()
    fmt.write_array_header_1_0(header_io, fmt.header_data_from_array_1_0(arr))
    header = header_io.getvalue()
    pieces = [np.frombuffer(header, dtype=np.uint8)]
    if arr.nbytes:
        pieces.append(arr.reshape(-1).view(np.uint8))
    return len(header) + arr.nbytes, pieces


_ZIP64 = 0xFFFFFFFF  # a 32-bit size or offset field whose value is in the zip64 extra
_ZIP_VERSION = 45  # 4.5: zip64
_ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0: the member is encrypted


class _ZipWriter:
    """An uncompressed zip64 archive of ``.npy`` members (what ``np.savez`` writes),
    streamed from the arrays' memory.

    The data goes through two private buffers of ``COPY_BYTES``: a second thread
    copies the next slice of the array into one and updates the CRC-32 over that
    copy while this thread writes the other (the copy, the CRC and the write all
    release the GIL), so a large save costs about the time of the writes alone. The
    CRC is computed over the very bytes written, never over the array a second time:
    another thread changing the array during the save (a training step) can't make
    them disagree. The CRC is then patched into the member's local header (the file
    is seekable). Layout per member: local header (sizes in its zip64 extra), data;
    then the central directory, the zip64 end record, its locator and the end
    record.
    """

    def __init__(self, fp: IO[bytes], crc_pool: ThreadPoolExecutor) -> None:
        self._fp = fp
        self._pool = crc_pool
        self._buffers = (bytearray(COPY_BYTES), bytearray(COPY_BYTES))
        self._entries: list[tuple[bytes, int, int, int, int]] = []
        t = time.localtime()
        self._time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
        self._date = (max(t.tm_year, 1980) - 1980) << 9 | (t.tm_mon << 5) | t.tm_mday

    def add(self, name: str, arr: np.ndarray) -> None:
        size, pieces = _npy_pieces(arr)
        fname = name.encode("utf-8")
        flags = 0 if fname.isascii() else 0x800  # bit 11: the name is UTF-8
        fp = self._fp
        offset = fp.tell()
        fp.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                _ZIP_VERSION,
                flags,
                0,  # stored
                self._time,
                self._date,
                0,  # CRC-32, patched below
                _ZIP64,
                _ZIP64,
                len(fname),
                20,
            )
            + fname
            + struct.pack("<HHQQ", 0x0001, 16, size, size)
        )
        crc = self._write_data(pieces)
        end = fp.tell()
        fp.seek(offset + 14)
        fp.write(struct.pack("<I", crc))
        fp.seek(end)
        self._entries.append((fname, flags, offset, size, crc))

    def _write_data(self, pieces: list[np.ndarray]) -> int:
        """Write ``pieces`` (flat uint8 arrays) in order; the CRC-32 of what was written.

        The worker copies slice ``i + 1`` into one buffer and CRCs it while this thread
        writes slice ``i`` from the other; slice ``i + 2`` reuses the buffer of slice
        ``i`` only after its write returned.
        """
        n = COPY_BYTES
        slices = [p[i : i + n] for p in pieces for i in range(0, p.size, n)]
        crc = 0

        def fill(src: np.ndarray, buf: bytearray) -> memoryview:
            nonlocal crc
            np.copyto(np.frombuffer(buf, dtype=np.uint8, count=src.size), src)
            dst = memoryview(buf)[: src.size]
            crc = zlib.crc32(dst, crc)  # one worker: the updates run in order
            return dst

        if not slices:
            return crc
        pending = self._pool.submit(fill, slices[0], self._buffers[0])
        for i in range(len(slices)):
            ready = pending.result()
            if i + 1 < len(slices):
                nxt = self._buffers[(i + 1) % 2]
                pending = self._pool.submit(fill, slices[i + 1], nxt)
            self._fp.write(ready)
        return crc

    def close(self) -> None:
        fp = self._fp
        cd_start = fp.tell()
        for fname, flags, offset, size, crc in self._entries:
            fp.write(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    (3 << 8) | _ZIP_VERSION,  # made by: Unix
                    _ZIP_VERSION,
                    flags,
                    0,
                    self._time,
                    self._date,
                    crc,
                    _ZIP64,
                    _ZIP64,
                    len(fname),
                    28,
                    0,  # comment
                    0,  # disk
                    0,  # internal attributes
                    (stat.S_IFREG | 0o644) << 16,
                    _ZIP64,
                )
                + fname
                + struct.pack("<HHQQQ", 0x0001, 24, size, size, offset)
            )
        cd_end = fp.tell()
        n = len(self._entries)
        fp.write(
            struct.pack(
                "<IQHHIIQQQQ",
                0x06064B50,
                44,
                (3 << 8) | _ZIP_VERSION,
                _ZIP_VERSION,
                0,
                0,
                n,
                n,
                cd_end - cd_start,
                cd_start,
            )
        )
        fp.write(struct.pack("<IIQI", 0x07064B50, 0, cd_end, 1))
        fp.write(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                min(n, 0xFFFF),
                min(n, 0xFFFF),
                min(cd_end - cd_start, _ZIP64),
                min(cd_start, _ZIP64),
                0,
            )
        )


def _write_npz(fp: IO[bytes], members: list[tuple[str, np.ndarray]]) -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="embtable-crc") as pool:
        zw = _ZipWriter(fp, pool)
        for name, arr in members:
            zw.add(name + ".npy", arr)
        zw.close()


def _json_str(value: Any) -> np.ndarray:
    return np.array(json.dumps(value))


def save_layer(layer: Any, path: str | os.PathLike[str], optimizer: Any = None) -> Path:
    """``layer.save(path, optimizer)``: see ``TableLayer.save``."""
    from .optimizers import Optimizer

    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(
            "optimizer must be an embtable.optimizers.Optimizer or None, got "
            f"{type(optimizer).__name__}"
        )
    p = _path_for_save(path)
    # Everything that can fail on the layer's side runs before the file is opened.
    members: list[tuple[str, np.ndarray]] = [
        ("embeddings", layer.embeddings),
        ("config", _json_str(layer.get_config())),
        ("format", np.array(_FORMAT_PREFIX + type(layer).__name__)),
        ("format_version", np.array(FORMAT_VERSION, dtype=np.int64)),
    ]
    if optimizer is not None:
        state = optimizer.state(layer)
        members += [
            ("optimizer.class", np.array(type(optimizer).__name__)),
            ("optimizer.config", _json_str(optimizer.get_config())),
            (
                _STATE_PREFIX + "iterations",
                np.array(int(state["iterations"]), dtype=np.int64),
            ),
        ]
        members += [
            (_STATE_PREFIX + name, arr)
            for name, arr in state.items()
            if name != "iterations"
        ]
    with atomic_write(p) as f:
        _write_npz(f, members)
    return p


# -- reading -------------------------------------------------------------------------
class _Reader:
    """The members of an open checkpoint, each read and checked on demand."""

    def __init__(self, zf: zipfile.ZipFile, path: Path) -> None:
        self.zf = zf
        self.path = path
        self.infos = {
            info.filename[: -len(".npy")]: info
            for info in zf.infolist()
            if info.filename.endswith(".npy")
        }

    def bad(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}")

    def has(self, key: str) -> bool:
        return key in self.infos

    def _open(self, key: str) -> tuple[IO[bytes], tuple[int, ...], np.dtype]:
        info = self.infos.get(key)
        if info is None:
            raise self.bad(f"has no {key!r} entry (a damaged or foreign file)")
        if info.flag_bits & _ZIP_ENCRYPTED:  # else zipfile raises RuntimeError
            raise self.bad(
                f"entry {key!r} is marked as encrypted (embtable never encrypts: "
                "a damaged or foreign file)"
            )
        fp = self.zf.open(info)
        try:
            fmt = np.lib.format
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fp)
            else:
                raise self.bad(f"entry {key!r} is a .npy of version {version}")
            if dtype.hasobject:
                raise self.bad(f"entry {key!r} holds Python objects")
            if fortran and len(shape) > 1:
                raise self.bad(f"entry {key!r} is in Fortran order")
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if fp.tell() + size != info.file_size:
                raise self.bad(
                    f"entry {key!r} should hold {size} bytes of data for shape "
                    f"{shape} and dtype {dtype}, but the member has "
                    f"{info.file_size - fp.tell()}"
                )
        except BaseException:
            fp.close()
            raise
        return fp, shape, dtype

    def _read_data(self, key: str, fp: IO[bytes], out: np.ndarray, dtype: Any) -> None:
        """Fill ``out`` from ``fp`` (data of ``dtype``), slice by slice; check the end."""
        flat = out.reshape(-1)
        if dtype == out.dtype:
            buf = memoryview(flat.view(np.uint8))  # type: ignore[arg-type]
            pos, n = 0, len(buf)
            while pos < n:
                got = fp.readinto(buf[pos : pos + CHUNK_BYTES])  # type: ignore[attr-defined]
                if not got:
                    raise self.bad(f"entry {key!r} is truncated")
                pos += got
        else:  # same kind, other byte order: convert slice by slice
            step = max(1, CHUNK_BYTES // np.dtype(dtype).itemsize)
            for start in range(0, flat.size, step):
                part = np.empty(min(step, flat.size - start), dtype=dtype)
                want = part.nbytes
                got = fp.readinto(part.view(np.uint8))  # type: ignore[attr-defined]
                if got != want:
                    raise self.bad(f"entry {key!r} is truncated")
                flat[start : start + part.size] = part
        if fp.read(1):  # also makes zipfile check the member's CRC-32
            raise self.bad(f"entry {key!r} has data past its end")

    def array(
        self,
        key: str,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The array ``key``, checked against ``shape`` and ``dtype`` when given
        (byte order aside); into ``out`` when given."""
        fp, file_shape, file_dtype = self._open(key)
        with fp:
            if shape is not None and tuple(file_shape) != tuple(shape):
                raise self.bad(
                    f"entry {key!r} has shape {tuple(file_shape)}, expected "
                    f"{tuple(shape)}"
                )
            if dtype is not None and file_dtype.newbyteorder("=") != dtype:
                raise self.bad(
                    f"entry {key!r} has dtype {file_dtype}, expected {np.dtype(dtype)}"
                )
            if out is None:
                out = np.empty(file_shape, dtype=file_dtype.newbyteorder("="))
            self._read_data(key, fp, out, file_dtype)
        return out

    def rows(
        self,
        key: str,
        shape: tuple[int, int],
        dtype: np.dtype,
        start: int,
        stop: int,
        out: np.ndarray,
    ) -> None:
        """Rows ``[start, stop)`` of the ``(V, D)`` array ``key`` (checked against
        ``shape`` and ``dtype``) into ``out``, holding at most ``CHUNK_BYTES`` of the
        others at a time. The whole member is still read, so that its CRC-32 is
        checked as ``array`` checks it."""
        if (start, stop) == (0, shape[0]):
            self.array(key, shape, dtype, out=out)
            return
        fp, file_shape, file_dtype = self._open(key)
        with fp:
            if tuple(file_shape) != tuple(shape):
                raise self.bad(
                    f"entry {key!r} has shape {tuple(file_shape)}, expected "
                    f"{tuple(shape)}"
                )
            if file_dtype.newbyteorder("=") != dtype:
                raise self.bad(
                    f"entry {key!r} has dtype {file_dtype}, expected {np.dtype(dtype)}"
                )
            V, D = shape
            step = max(1, CHUNK_BYTES // max(1, D * file_dtype.itemsize))
            for lo in range(0, V, step):
                hi = min(V, lo + step)
                part = np.empty((hi - lo, D), dtype=file_dtype)
                want = part.nbytes
                got = fp.readinto(part.reshape(-1).view(np.uint8))  # type: ignore[attr-defined]
                if got != want:
                    raise self.bad(f"entry {key!r} is truncated")
                a, b = max(lo, start), min(hi, stop)
                if a < b:
                    out[a - start : b - start] = part[a - lo : b - lo]
            if fp.read(1):  # also makes zipfile check the member's CRC-32
                raise self.bad(f"entry {key!r} has data past its end")

    def text(self, key: str) -> str:
        fp, shape, dtype = self._open(key)
        fp.close()
        if shape != () or dtype.kind != "U":
            raise self.bad(
                f"entry {key!r} should be a str, got {dtype} of shape {shape}"
            )
        return str(self.array(key)[()])

    def json(self, key: str) -> dict[str, Any]:
        try:
            value = json.loads(self.text(key))
        except json.JSONDecodeError as e:
            raise self.bad(f"entry {key!r} is not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise self.bad(f"entry {key!r} should be a JSON object")
        return value

    def integer(self, key: str) -> int:
        arr = self.array(key)
        if arr.shape != () or arr.dtype.kind not in "iu":
            raise self.bad(f"entry {key!r} should be an integer")
        return int(arr[()])


# What a damaged file makes zipfile, NumPy or the parsers raise (never a bug of ours
# in disguise: these are wrapped with the file's name and what was read).
_DAMAGE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    KeyError,
    ValueError,
    OSError,
    struct.error,
    zlib.error,
    UnicodeDecodeError,
    NotImplementedError,
    OverflowError,
)


def _diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = sorted(set(saved) | set(current))
    parts = [
        f"{k}={current.get(k, '<missing>')!r} (saved {saved.get(k, '<missing>')!r})"
        for k in keys
        if saved.get(k, "<missing>") != current.get(k, "<missing>")
    ]
    return ", ".join(parts)


def load_layer(
    cls: Any,
    path: str | os.PathLike[str],
    optimizer: Any = None,
    custom_objects: Mapping[str, Any] | None = None,
) -> Any:
    """``cls.load(path, optimizer)``: see ``TableLayer.load``."""
    from .optimizers import Optimizer

    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(
            "optimizer must be an embtable.optimizers.Optimizer or None, got "
            f"{type(optimizer).__name__}"
        )
    with open_checkpoint(path) as r:
        return _load(cls, r, optimizer, custom_objects)


def _is_zipfile(f: IO[bytes]) -> bool:
    """``zipfile.is_zipfile(f)``, which raises (rather than answer) on some damaged
    end records, e.g. a zip64 locator naming another disk: those are zip files."""
    try:
        return zipfile.is_zipfile(f)
    except _DAMAGE:
        return True


@contextlib.contextmanager
def open_checkpoint(path: str | os.PathLike[str]) -> Iterator[_Reader]:
    """The members of the checkpoint at ``path`` (``.npz`` added if missing), for the
    ``with`` block; what a damaged or foreign file makes zipfile or NumPy raise there
    becomes a ``CheckpointError`` naming the file."""
    p = _path_for_load(path)
    with open(p, "rb") as f:  # a missing file: FileNotFoundError, as np.load
        try:
            with zipfile.ZipFile(f) as zf:
                yield _Reader(zf, p)
        except CheckpointError:
            raise
        except zipfile.BadZipFile as e:
            if not _is_zipfile(f):
                f.seek(0)
                if f.read(4) == b"PK\x03\x04":
                    what = "truncated (the zip directory at its end is missing)"
                else:
                    what = "not an .npz file (not a zip archive)"
                raise CheckpointError(f"{p}: {what}") from e
            raise CheckpointError(f"{p}: damaged: {e}") from e
        except _DAMAGE as e:
            raise CheckpointError(
                f"{p}: damaged or truncated ({type(e).__name__}: {e})"
            ) from e


def _layer_from_config(
    cls: Any, config: dict[str, Any], custom_objects: Mapping[str, Any] | None
) -> Any:
    """``cls.from_config(config)``, without drawing a random table that the file's
    table replaces anyway (a 2 GiB uniform table takes seconds): the layer is built
    with zeros, then given its configured initializer."""
    from . import initializers, layers

    entry = config.get("embeddings_initializer")
    if entry is None:
        return cls.from_config(config, custom_objects)
    layer = cls.from_config(
        {**config, "embeddings_initializer": "zeros"}, custom_objects
    )
    layer.embeddings_initializer = initializers.get(
        layers._deserialize_callable(entry, initializers, custom_objects), layer.seed
    )
    return layer


def _load(
    cls: Any,
    r: _Reader,
    optimizer: Any,
    custom_objects: Mapping[str, Any] | None,
) -> Any:
    config, opt_state = check_layer(r, cls.__name__, optimizer)
    try:
        layer = _layer_from_config(cls, config, custom_objects)
    except (TypeError, ValueError) as e:
        raise r.bad(
            f"its config does not make a layer of class {cls.__name__}: {e}"
        ) from e
    table = layer.embeddings
    r.array("embeddings", table.shape, table.dtype, out=table)
    if opt_state is not None:
        for _, name in optimizer._slot_layout():
            opt_state[name] = r.array(_STATE_PREFIX + name, table.shape, table.dtype)
        # Everything was read and checked: only now does the optimizer change.
        optimizer._set_state(layer, opt_state, copy=False)
    return layer


def check_layer(
    r: _Reader, cls_name: str, optimizer: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Check a layer checkpoint's small members (format, version, layer class and,
    with ``optimizer``, its class, hyperparameters, step count and slot names)
    without reading the arrays. Returns the layer's config and, with ``optimizer``,
    ``{"iterations": n}``; a ``CheckpointError`` naming the file otherwise."""
    if not r.has("format"):
        held = ", ".join(repr(k) for k in sorted(r.infos)) or "nothing"
        raise r.bad(
            f"not an embtable checkpoint: it has no 'format' entry (it holds {held})"
        )
    fmt = r.text("format")
    if not fmt.startswith(_FORMAT_PREFIX):
        raise r.bad(f"not an embtable checkpoint: its format is {fmt!r}")
    version = r.integer("format_version") if r.has("format_version") else 0
    if version > FORMAT_VERSION:
        raise r.bad(
            f"written by a newer embtable (checkpoint format version {version}; "
            f"this embtable reads versions 0 to {FORMAT_VERSION}): upgrade embtable"
        )
    if version < 0:
        raise r.bad(f"has an invalid format_version {version}")
    saved_cls = fmt[len(_FORMAT_PREFIX) :]
    if saved_cls != cls_name:
        raise r.bad(
            f"holds a layer of class {saved_cls}, not {cls_name}: use {saved_cls}.load"
        )
    config = r.json("config")

    opt_state: dict[str, Any] | None = None
    if optimizer is not None:
        if not r.has("optimizer.config"):
            raise r.bad(
                "holds no optimizer state (it was saved without optimizer=); "
                "load it without an optimizer to start a fresh one"
            )
        opt_cls = r.text("optimizer.class")
        if opt_cls != type(optimizer).__name__:
            raise r.bad(
                f"holds the state of an optimizer of class {opt_cls}, not "
                f"{type(optimizer).__name__}"
            )
        saved_cfg = r.json("optimizer.config")
        current = json.loads(json.dumps(optimizer.get_config()))
        if saved_cfg != current:
            raise r.bad(
                f"was saved with other {opt_cls} hyperparameters: "
                f"{_diff(saved_cfg, current)}"
            )
        iterations = r.integer(_STATE_PREFIX + "iterations")
        if iterations < 0:
            raise r.bad(f"has a negative optimizer step count {iterations}")
        expected = optimizer._slot_layout()
        present = {
            k[len(_STATE_PREFIX) :] for k in r.infos if k.startswith(_STATE_PREFIX)
        }
        present.discard("iterations")
        missing = [name for _, name in expected if name not in present]
        if missing:
            raise r.bad(f"has no optimizer slot {missing[0]!r}")
        extra = sorted(present - {name for _, name in expected})
        if extra:
            raise r.bad(
                f"has optimizer slot {extra[0]!r}, which {opt_cls} with these "
                "hyperparameters does not keep"
            )
        opt_state = {"iterations": iterations}
    return config, opt_state
