"""Tables larger than one machine: an embedding table split by rows over Ray actors.

``ShardedEmbedding`` and ``ShardedEmbeddingBag`` keep a ``(V, D)`` table as
``num_shards`` blocks of consecutive rows, each in a Ray actor that holds its rows
and their optimizer state and runs embtable's kernels on them:

- a lookup sends each shard the distinct ids in its block, gets their rows back and
  assembles the output in order (a bag pools those rows on the caller's side with
  ``embedding_bag``, so its sums run in index order as in one process);
- ``backward`` builds the call's row gradient (an ``embtable.RowGrad``, exactly as the
  single-process sparse layer does) and sends each shard its rows of it;
- ``step()`` runs the optimizer lazily on every shard (only the touched rows and their
  state change), with the one global step count that Adam's bias correction needs.

The same ids, gradients and optimizer give the same table as ``embtable.Embedding``
(``sparse=True``) / ``embtable.EmbeddingBag``, bit for bit.

The initial table is never built whole in one process when the initializer allows it:
each shard makes its own rows (``uniform`` and the other uniform initializers, by
skipping its PCG64 stream ahead to its first entry; ``zeros`` / ``ones`` /
``constant``), or the driver draws the one random stream block by block and hands
each shard its block (``normal``, and the truncated normals, whose redraw rounds run
on the shards with the driver drawing each shard's share of each round), holding one
block at a time. ``orthogonal`` (a QR of the whole matrix) and initializers that are
not embtable's own are built whole by the driver (see ``ShardedEmbedding``).

``save(folder)`` writes each shard's rows and optimizer state as a layer checkpoint
(docs/checkpoints.md: ``embtable.Embedding.load(file, optimizer=...)`` reads one
alone), then ``manifest.json`` naming them; ``load(folder, num_shards=N)`` lets each
new shard read its rows from the files that hold them.

Every remote call has a timeout. A shard that dies or stops answering raises
``ShardError`` naming it; after an error in ``backward`` or ``step`` the table may be
partly updated, so every later call raises too until the table is restored from its
last checkpoint (``save`` / ``load``, onto any number of shards).

Needs the optional ``ray`` (``pip install "embtable[distributed]"``); ``import
embtable`` never imports it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from . import _bag, _checkpoint, _core, initializers, optimizers
from ._atomic import atomic_write_text
from ._checkpoint import CheckpointError
from ._rowgrad import RowGrad
from .layers import Embedding, TableLayer, _float_dtype, _positive_int

__all__ = ["ShardError", "ShardedEmbedding", "ShardedEmbeddingBag"]

_FORMAT = "embtable.sharded"
_MANIFEST = "manifest.json"
# Version 2: each shard file is a layer checkpoint of an Embedding (version 1, whose
# shard files were of their own kind, was never released).
_MANIFEST_VERSION = 2
_SHUT_DOWN = "shutdown() was called"


class ShardError(RuntimeError):
    """A shard died, failed or did not answer within the timeout.

    ``shard`` is its number (``None`` when the error concerns the whole table).
    """

    def __init__(self, message: str, shard: int | None = None) -> None:
        super().__init__(message)
        self.shard = shard


def _bounds(V: int, num_shards: int) -> np.ndarray:
    """Row blocks: shard k holds rows [bounds[k], bounds[k + 1]).

    V = 10, 3 shards -> [0, 3, 6, 10]
    """
    return np.array([k * V // num_shards for k in range(num_shards + 1)], np.int64)


def _check_shard_file(
    r: Any, optimizer: Any, shape: tuple[int, int], dtype: str, iterations: int
) -> None:
    """A shard's file is a checkpoint of an ``Embedding`` of ``shape`` and ``dtype``
    with ``optimizer``'s state at step ``iterations``, as the manifest says; else a
    ``CheckpointError`` naming it. Reads the small members only."""
    config, state = _checkpoint.check_layer(r, "Embedding", optimizer)
    got = (config.get("input_dim"), config.get("output_dim"), config.get("dtype"))
    if got != (shape[0], shape[1], dtype):
        raise r.bad(
            f"holds a ({got[0]}, {got[1]}) {got[2]} table; the manifest says "
            f"({shape[0]}, {shape[1]}) {dtype}"
        )
    assert state is not None
    if state["iterations"] != iterations:
        raise r.bad(
            f"is at optimizer step {state['iterations']} but the manifest at step "
            f"{iterations} (a file of another checkpoint?)"
        )


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
    ):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    return None if seed is None else int(seed)


def _check_padding_idx(padding_idx: Any, V: int) -> int | None:
    """As the single-process layer checks it (the same errors)."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise ValueError(f"padding_idx must be an int in [0, {V}), got {padding_idx!r}")
    if not 0 <= int(padding_idx) < V:
        raise ValueError(
            f"padding_idx must be in [0, {V}) (the table's rows), got {padding_idx}"
        )
    return int(padding_idx)


class _Shard:
    """One block of rows and its optimizer state (runs in a Ray actor).

    It holds a sparse single-process ``Embedding`` over its rows, so its gradient
    merging, optimizer step and checkpoint file are the single-process code itself.
    ``rows`` is the block itself, an initializer whose rows the shard makes alone
    (``initializers._local_rows``), or None (zeros, filled by ``restore``); ``fresh``:
    the rows come from an initializer, so the padding row is zeroed, as the
    single-process layer does (user weights keep theirs).
    """

    def __init__(
        self,
        index: int,
        start: int,
        stop: int,
        V: int,
        D: int,
        dtype: str,
        optimizer: dict[str, Any],
        rows: np.ndarray | initializers.Initializer | None,
        padding_idx: int | None,
        fresh: bool,
    ) -> None:
        self.index, self.start, self.stop = index, start, stop
        self.V, self.D, self.dt = V, D, np.dtype(dtype)
        self.opt = optimizers.get(optimizer)
        self.pad = None
        if padding_idx is not None and start <= padding_idx < stop:
            self.pad = padding_idx - start
        if isinstance(rows, initializers.Initializer):
            rows = initializers._local_rows(rows, (V, D), self.dt, start, stop)
        elif rows is None:
            rows = np.zeros((stop - start, D), dtype=self.dt)
        self.layer = Embedding(
            stop - start,
            D,
            weights=rows,
            embeddings_initializer="zeros",
            dtype=dtype,
            sparse=True,
            padding_idx=self.pad,
            name=f"shard{index}",
        )
        if fresh:
            self._zero_pad()
        self.opt.state(self.layer)  # creates the slots
        self._bad: np.ndarray | None = None

    def _zero_pad(self) -> None:
        if self.pad is not None:
            self.layer.embeddings[self.pad] = 0

    # -- a truncated normal initial table, round by round (see _ShardedTable) -------
    def trunc_start(self) -> int:
        """The raw standard normal block is in place: how many entries to redraw."""
        self._bad = initializers._outside(self.layer.embeddings.reshape(-1))
        return int(self._bad.size)

    def trunc_redraw(self, values: np.ndarray) -> int:
        assert self._bad is not None
        flat = self.layer.embeddings.reshape(-1)
        self._bad = initializers._redraw(flat, self._bad, values)
        return int(self._bad.size)

    def trunc_finish(self, init: initializers.Initializer) -> None:
        init._finish(self.layer.embeddings, (self.V, self.D), self.dt)
        self._zero_pad()
        self._bad = None

    # -- checkpoints --------------------------------------------------------------
    def restore(self, sources: list[dict[str, Any]], iterations: int) -> str | None:
        """Rows [start, stop) and their optimizer slots from the old shards' files
        (each a layer checkpoint, checked as ``Embedding.load`` checks it); reads only
        the files that hold them. None, or the message of a bad file."""
        table = self.layer.embeddings
        state = self.opt.state(self.layer)
        try:
            for src in sources:
                lo, hi = max(self.start, src["start"]), min(self.stop, src["stop"])
                if lo >= hi:
                    continue
                shape = (src["stop"] - src["start"], self.D)
                a, b = lo - src["start"], hi - src["start"]
                here = slice(lo - self.start, hi - self.start)
                with _checkpoint.open_checkpoint(src["path"]) as r:
                    _check_shard_file(r, self.opt, shape, self.dt.name, iterations)
                    r.rows("embeddings", shape, self.dt, a, b, table[here])
                    for _, name in self.opt._slot_layout():
                        key = _checkpoint._STATE_PREFIX + name
                        r.rows(key, shape, self.dt, a, b, state[name][here])
        except (CheckpointError, FileNotFoundError) as e:
            return str(e)
        self.opt._state(self.layer).iterations = iterations
        return None

    def ready(self) -> tuple[int, int]:
        return self.index, os.getpid()

    def gather(self, local_ids: np.ndarray) -> np.ndarray:
        return _core.gather(self.layer.embeddings, local_ids)

    def add_grad(self, local_rows: np.ndarray, values: np.ndarray) -> int:
        self.layer._accumulate_grad(RowGrad._trusted(local_rows, values))
        return len(self.layer.grad)  # type: ignore[arg-type]

    def step(self, iterations: int) -> int:
        """One optimizer step; ``iterations`` is the global count after it."""
        st = self.opt._state(self.layer)
        grad = self.layer.grad
        if grad is not None and len(grad):  # type: ignore[arg-type]
            st.iterations = iterations - 1
            self.opt.step(self.layer)
        st.iterations = iterations
        return iterations

    def zero_grad(self) -> None:
        self.layer.zero_grad()

    def rows(self) -> np.ndarray:
        return self.layer.embeddings

    def save(self, path: str) -> str:
        """Its rows and optimizer state as a layer checkpoint (atomic)."""
        return str(_checkpoint.save_layer(self.layer, path, self.opt))


_RemoteShard = ray.remote(_Shard)


class _ShardedTable:
    """The shared part of the sharded layers: shards, routing, gradients, files."""

    _KIND: ClassVar[str] = ""
    # The keys of _config() (the manifest's "config": the constructor's arguments).
    _CONFIG_KEYS: ClassVar[tuple[str, ...]] = ("padding_idx",)

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_shards: int = 2,
        *,
        optimizer: Any = "sgd",
        embeddings_initializer: Any = "uniform",
        weights: Any = None,
        dtype: Any = "float32",
        seed: int | None = None,
        padding_idx: int | None = None,
        timeout: float = 60.0,
        start_timeout: float = 300.0,
        actor_options: dict[str, Any] | None = None,
        _restore: dict[str, Any] | None = None,
    ) -> None:
        V = _positive_int("input_dim", input_dim)
        D = _positive_int("output_dim", output_dim)
        S = _positive_int("num_shards", num_shards)
        if S > V:
            raise ValueError(f"num_shards ({S}) must be <= input_dim ({V})")
        self._dtype = _float_dtype(dtype)
        self.timeout = float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.optimizer = optimizers.get(optimizer)
        self.V, self.D = V, D
        self.padding_idx = padding_idx
        self.bounds = _bounds(V, S)
        self.iterations = 0
        self._broken: str | None = None
        self._saved: dict[str, Any] | None = None
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        opts = {"max_restarts": 0, "max_task_retries": 0, "num_cpus": 1}
        opts.update(actor_options or {})
        opt_cfg = self.optimizer.get_config()
        dt = self._dtype
        pairs = [(int(self.bounds[k]), int(self.bounds[k + 1])) for k in range(S)]
        # What each shard starts from (see _Shard): its block, an initializer it
        # draws its rows from alone, or None; `fresh`: made by the initializer (the
        # shard zeroes the padding row, as the single-process layer does).
        blocks: Any
        fresh = False
        init: Any = None
        kind = None
        rng: Any = None
        if _restore is None and weights is None:
            init = initializers.get(embeddings_initializer, _check_seed(seed))
            kind = initializers._split_kind(init)
        if _restore is not None:
            self.padding_idx = _check_padding_idx(padding_idx, V)
            self.iterations = int(_restore["iterations"])
            blocks = (None for _ in pairs)
        elif kind is None:
            # User weights (the driver has them already), or an initializer whose
            # rows can't be made apart: the table exactly as the single-process
            # layer makes it, then sliced.
            ref = Embedding(
                V,
                D,
                embeddings_initializer=embeddings_initializer,
                weights=weights,
                dtype=dt,
                seed=seed,
                padding_idx=padding_idx,
            )
            self.padding_idx = ref.padding_idx
            table = ref.embeddings
            del ref
            blocks = (table[lo:hi] for lo, hi in pairs)
        else:
            self.padding_idx = _check_padding_idx(padding_idx, V)
            init = initializers._seeded(init)
            fresh = kind != "truncated_normal"
            if kind in ("fill", "uniform"):
                blocks = (init for _ in pairs)  # each shard makes its own rows
            elif kind == "normal":
                blocks = initializers._normal_blocks(
                    init, (V, D), dt, self.bounds.tolist()
                )
            else:  # the raw standard normal blocks, in order; redrawn below
                rng = init._rng()
                blocks = (
                    rng.standard_normal((hi - lo, D), dtype=dt) for lo, hi in pairs
                )
        self._shards: list[Any] = []
        try:
            for k, (lo, hi) in enumerate(pairs):
                # .remote() copies a block into Ray's object store at once, so the
                # driver holds one block at a time.
                self._shards.append(
                    _RemoteShard.options(**opts).remote(
                        k,
                        lo,
                        hi,
                        V,
                        D,
                        dt.name,
                        opt_cfg,
                        next(blocks),
                        self.padding_idx,
                        fresh,
                    )
                )
            pids = self._call("ready", [()] * S, mutates=False, timeout=start_timeout)
            self.pids = [int(p[1]) for p in pids]
            if kind == "truncated_normal":
                self._truncate(init, rng, start_timeout)
            if _restore is not None:
                args = [(_restore["sources"], self.iterations)] * S
                msgs = self._call("restore", args, mutates=False, timeout=start_timeout)
                bad = [m for m in msgs if m]
                if bad:
                    raise CheckpointError(bad[0])
        except BaseException:
            self.shutdown()
            raise

    def _truncate(self, init: Any, rng: np.random.Generator, timeout: float) -> None:
        """The redraw rounds of a truncated normal table, on the shards: the whole
        table's round draws one value per entry still outside, in the order of the
        entries, so shard k's share is the next ``counts[k]`` values of the stream
        (the driver holds one share at a time: each goes to the object store as it
        is drawn). Then the shards scale their rows and zero the padding row."""
        S = self.num_shards
        counts = self._call("trunc_start", [()] * S, mutates=False, timeout=timeout)
        while any(counts):
            args = [
                (ray.put(rng.standard_normal(c, dtype=self._dtype)),) if c else None
                for c in counts
            ]
            out = self._call("trunc_redraw", args, mutates=False, timeout=timeout)
            counts = [c or 0 for c in out]
        # The padding row is zeroed by the shard that holds it.
        self._call("trunc_finish", [(init,)] * S, mutates=False, timeout=timeout)

    # -- remote calls --------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def _check_usable(self) -> None:
        if self._broken is None and self._shards and not ray.is_initialized():
            # Checked before any call: submitting to a shard now would quietly
            # start a new, empty Ray instance and fail with a bare Exception.
            self._broken = (
                "Ray was shut down (ray.shutdown()), which stopped its shards"
            )
        if self._broken == _SHUT_DOWN:
            raise ShardError(
                "this table was shut down (shutdown()): its shards are gone; load "
                f"its last checkpoint with {type(self).__name__}.load(path)"
            )
        if self._broken is not None:
            raise ShardError(
                f"this table is unusable since {self._broken}; it may be partly "
                "updated: restore it from the last checkpoint with "
                f"{type(self).__name__}.load(path)"
            )

    def _call(
        self,
        method: str,
        args: Sequence[tuple[Any, ...] | None],
        *,
        mutates: bool,
        timeout: float | None = None,
    ) -> list[Any]:
        """``method(*args[k])`` on every shard k whose args are not None, in parallel;
        the results by shard (None where not called). Raises ShardError naming the
        first shard that failed or did not answer within ``timeout`` seconds."""
        self._check_usable()
        refs = {}
        failure: ShardError | None = None
        for k, a in enumerate(args):
            if a is not None:
                try:
                    refs[k] = getattr(self._shards[k], method).remote(*a)
                except Exception as e:  # Ray refused the call (not a RayError)
                    failure = ShardError(
                        f"shard {k} (of {self.num_shards}, rows [{self.bounds[k]}, "
                        f"{self.bounds[k + 1]})): Ray refused {method}(): "
                        f"{type(e).__name__}: {str(e).splitlines()[0]}",
                        k,
                    )
                    if mutates and refs:  # earlier shards may have the call
                        self._broken = str(failure)
                    raise failure from None
        out: list[Any] = [None] * len(args)
        limit = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + limit
        pending = dict(refs)
        while pending and failure is None:
            left = deadline - time.monotonic()
            ready, _ = ray.wait(
                list(pending.values()), num_returns=1, timeout=max(left, 0.0)
            )
            if not ready:
                late = sorted(pending)
                failure = ShardError(
                    f"shard {late[0]} (of {self.num_shards}) did not answer "
                    f"{method}() within {limit:g} s"
                    + (f"; shards {late} are late" if len(late) > 1 else ""),
                    late[0],
                )
                break
            for k, r in list(pending.items()):
                if r not in ready:
                    continue
                del pending[k]
                try:
                    out[k] = ray.get(r, timeout=max(deadline - time.monotonic(), 0.0))
                except (RayActorError, GetTimeoutError, RayError) as e:
                    what = (
                        "died" if isinstance(e, RayActorError) else "failed"
                    )  # process gone vs an exception in the shard
                    failure = ShardError(
                        f"shard {k} (of {self.num_shards}, rows "
                        f"[{self.bounds[k]}, {self.bounds[k + 1]})) {what} in "
                        f"{method}(): {type(e).__name__}: {str(e).splitlines()[0]}",
                        k,
                    )
                    break
        if failure is not None:
            if mutates:
                self._broken = str(failure)
            raise failure
        return out

    # -- routing -------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self.V

    @property
    def output_dim(self) -> int:
        return self.D

    def _prepare_ids(self, indices: Any) -> np.ndarray:
        """Native int32/int64 ids, validated exactly as the single-process layer does
        (whole float ids accepted; IndexError naming the id and its position;
        TypeError for others), before any remote call."""
        return TableLayer._prepare_ids(self, indices)  # type: ignore[arg-type]

    def _check_grad_output(self, grad_output: Any, expected: tuple[int, ...]) -> Any:
        """As the single-process layer: ValueError naming both shapes, TypeError for
        a non-numeric dtype, then a C-contiguous array of the table's dtype."""
        return TableLayer._check_grad_output(self, grad_output, expected)  # type: ignore[arg-type]

    def _fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(uniq, inv, rows)``: the distinct ids (sorted), each id's position in
        them (shaped like ids) and their rows, fetched from their shards."""
        uniq, inv = np.unique(ids.reshape(-1), return_inverse=True)
        inv = inv.reshape(ids.shape).astype(np.int64, copy=False)
        cut = np.searchsorted(uniq, self.bounds)
        args: list[tuple[Any, ...] | None] = [
            (uniq[cut[k] : cut[k + 1]] - self.bounds[k],)
            if cut[k + 1] > cut[k]
            else None
            for k in range(self.num_shards)
        ]
        parts = self._call("gather", args, mutates=False)
        rows = np.empty((uniq.size, self.D), dtype=self._dtype)
        for k, p in enumerate(parts):
            if p is not None:
                rows[cut[k] : cut[k + 1]] = p
        return uniq, inv, rows

    def _push_grad(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Send each shard its rows of a coalesced gradient (global sorted rows)."""
        if self.padding_idx is not None and rows.size:
            keep = rows != self.padding_idx
            rows, values = rows[keep], values[keep]
        cut = np.searchsorted(rows, self.bounds)
        args: list[tuple[Any, ...] | None] = [
            (rows[cut[k] : cut[k + 1]] - self.bounds[k], values[cut[k] : cut[k + 1]])
            if cut[k + 1] > cut[k]
            else None
            for k in range(self.num_shards)
        ]
        self._has_grad = self._has_grad or rows.size > 0
        self._call("add_grad", args, mutates=True)

    _has_grad = False

    # -- training ------------------------------------------------------------
    def step(self) -> None:
        """Apply the accumulated gradient on every shard (lazily: the touched rows
        and their state), as ``optimizer.step(layer)`` does in one process; a step
        with no gradient does nothing."""
        if not self._has_grad:
            self._check_usable()
            return
        self._call("step", [(self.iterations + 1,)] * self.num_shards, mutates=True)
        self.iterations += 1

    def zero_grad(self) -> None:
        """Drop the accumulated gradient on every shard."""
        self._call("zero_grad", [()] * self.num_shards, mutates=True)
        self._has_grad = False

    # -- weights and files ---------------------------------------------------
    @property
    def dtype(self) -> str:
        return self._dtype.name

    @property
    def shape(self) -> tuple[int, int]:
        return (self.V, self.D)

    def get_weights(self) -> list[np.ndarray]:
        """``[the whole table]``, assembled from the shards (a copy: for tests and
        small tables)."""
        parts = self._call("rows", [()] * self.num_shards, mutates=False)
        return [np.concatenate(parts, axis=0)]

    def _config(self) -> dict[str, Any]:
        return {"padding_idx": self.padding_idx}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint: a folder with one file per shard (written by the shard
        itself, so ``path`` must be reachable by every shard's machine) and
        ``manifest.json``, replaced last.

        Each shard file is a layer checkpoint (docs/checkpoints.md) of an
        ``Embedding`` of the shard's ``stop - start`` rows with the optimizer's state
        (slots and the global step count): ``embtable.Embedding.load(file,
        optimizer=...)`` reads it alone. The manifest names the files and their row
        bounds, and holds the table's shape, dtype, optimizer config, step count and
        the layer's kind and config.

        Each file is written atomically (a temporary file, fsync, ``os.replace``, the
        folder fsynced), under a fresh name, and the manifest that names them is
        replaced atomically after all of them: a crash at any moment leaves the
        previous checkpoint or the new one. Files of older checkpoints are removed
        afterwards. Returns the folder.
        """
        folder = Path(os.fspath(path))
        self._check_usable()  # before creating the folder
        folder.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        names = [
            f"shard-{k:05d}-of-{self.num_shards:05d}.{tag}.npz"
            for k in range(self.num_shards)
        ]
        self._call(
            "save",
            [(str(folder.resolve() / n),) for n in names],
            mutates=False,
        )
        manifest = {
            "format": _FORMAT,
            "kind": self._KIND,
            "version": _MANIFEST_VERSION,
            "shard_format": "embtable.Embedding",
            "shard_format_version": _checkpoint.FORMAT_VERSION,
            "input_dim": self.V,
            "output_dim": self.D,
            "dtype": self.dtype,
            "iterations": self.iterations,
            "optimizer": self.optimizer.get_config(),
            "config": self._config(),
            "shards": [
                {
                    "file": n,
                    "start": int(self.bounds[k]),
                    "stop": int(self.bounds[k + 1]),
                }
                for k, n in enumerate(names)
            ],
        }
        atomic_write_text(folder / _MANIFEST, json.dumps(manifest, indent=1))
        keep = set(names)
        for old in folder.glob("shard-*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return folder

    @classmethod
    def _read_manifest(cls, folder: Path) -> dict[str, Any]:
        mpath = folder / _MANIFEST
        try:
            manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise ValueError(f"{folder}: no {_MANIFEST}, not a checkpoint") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{mpath}: unreadable manifest ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise ValueError(f"{mpath}: not an embtable sharded checkpoint")
        if manifest.get("kind") != cls._KIND:
            raise ValueError(
                f"{mpath}: a checkpoint of a {manifest.get('kind')}, not of a {cls._KIND}"
            )
        if manifest.get("version") != _MANIFEST_VERSION:
            raise ValueError(
                f"{mpath}: manifest version {manifest.get('version')!r}; this embtable "
                f"reads version {_MANIFEST_VERSION}"
            )
        try:
            covered = 0
            for s in manifest["shards"]:
                if not covered == s["start"] < s["stop"]:
                    raise ValueError(
                        f"{mpath}: shard file {s['file']} holds rows "
                        f"[{s['start']}, {s['stop']}), expected rows from {covered}"
                    )
                name = s["file"]
                # save() writes plain names into the folder: anything else (a path,
                # "../x.npz") would make load read outside the checkpoint.
                plain = isinstance(name, str) and Path(name).name == name
                if not plain or name in ("", ".", ".."):
                    raise ValueError(
                        f"{mpath}: shard file {name!r} is not a file name in the "
                        "checkpoint folder"
                    )
                if not (folder / name).is_file():
                    raise ValueError(
                        f"{folder / s['file']}: missing (a shard file named by {mpath})"
                    )
                covered = s["stop"]
            if covered != manifest["input_dim"]:
                raise ValueError(
                    f"{mpath}: the shards cover {covered} of "
                    f"{manifest['input_dim']} rows"
                )
            optimizer = optimizers.get(manifest["optimizer"])
            D, dtype = manifest["output_dim"], manifest["dtype"]
            iterations = manifest["iterations"]
            config = manifest["config"]
            known = set(cls._CONFIG_KEYS)
            if not isinstance(config, dict) or not set(config) <= known:
                raise ValueError(
                    f"{mpath}: damaged manifest (config {config!r}; a "
                    f"{cls._KIND} takes {sorted(known)})"
                )
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"{mpath}: damaged manifest ({type(e).__name__}: {e})"
            ) from None
        # Every file's small members, before any shard starts (the shards check the
        # arrays as they read them).
        for s in manifest["shards"]:
            with _checkpoint.open_checkpoint(folder / s["file"]) as r:
                shape = (s["stop"] - s["start"], D)
                _check_shard_file(r, optimizer, shape, dtype, iterations)
        return manifest

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        num_shards: int | None = None,
        *,
        timeout: float = 60.0,
        start_timeout: float = 300.0,
        actor_options: dict[str, Any] | None = None,
    ) -> Any:
        """A table restored from ``save(path)`` onto ``num_shards`` new shards (by
        default as many as were saved): rows, optimizer state and step count, so
        training continues as if it had not stopped.

        Each new shard reads its rows and their optimizer slots from the old files
        that hold them (streaming each, so that the zip's CRC-32 of every member is
        checked, and keeping only its rows): no process ever holds the whole table.

        Raises
        ------
        ValueError
            A missing, truncated, corrupt or foreign shard file, one that does not
            match the manifest (shape, dtype, optimizer, step count), or a bad
            manifest; the message names the file. No shard is left running.
        """
        folder = Path(os.fspath(path)).resolve()
        m = cls._read_manifest(folder)
        sources = [
            {"path": str(folder / s["file"]), "start": s["start"], "stop": s["stop"]}
            for s in m["shards"]
        ]
        return cls(
            m["input_dim"],
            m["output_dim"],
            num_shards if num_shards is not None else len(m["shards"]),
            optimizer=m["optimizer"],
            dtype=m["dtype"],
            timeout=timeout,
            start_timeout=start_timeout,
            actor_options=actor_options,
            _restore={"iterations": m["iterations"], "sources": sources},
            **m["config"],
        )

    def shutdown(self) -> None:
        """Stop the shard actors (the table is gone unless saved)."""
        for a in self._shards:
            try:
                ray.kill(a)
            except RayError:
                pass
        self._shards = []
        if self._broken is None:  # keep the reason of an earlier failure
            self._broken = _SHUT_DOWN

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.V}, {self.D}, num_shards={self.num_shards}, "
            f"dtype={self.dtype}, optimizer={self.optimizer!r})"
        )


class ShardedEmbedding(_ShardedTable):
    """``embtable.Embedding(sparse=True)`` with its table split by rows over Ray actors.

    Parameters
    ----------
    input_dim, output_dim : int
        The table's shape ``(V, D)``.
    num_shards : int
        Number of shard actors (blocks of consecutive rows), ``<= input_dim``.
    optimizer : str, dict or embtable.optimizers.Optimizer
        Applied by ``step()`` on each shard to its rows (lazily).
    embeddings_initializer, weights, dtype, seed, padding_idx
        As ``embtable.Embedding``: the initial table is exactly the single-process
        layer's, bit for bit. No process builds it whole for embtable's uniform
        initializers (``uniform``, ``glorot_uniform``, ``he_uniform``,
        ``lecun_uniform``, ``VarianceScaling(distribution="uniform")``) and
        ``zeros`` / ``ones`` / ``constant``: each shard makes its own rows, skipping
        the seed's PCG64 stream ahead to its first entry. For the normals
        (``normal``, ``VarianceScaling(distribution="untruncated_normal")``) and the
        truncated normals (``truncated_normal``, ``glorot_normal``, ``he_normal``,
        ``lecun_normal``), whose draws take a variable number of random bits, the
        driver draws the one stream in order and hands each shard its block (and,
        for the truncated ones, each shard its share of every redraw round), so it
        holds one block at a time. ``orthogonal`` (a QR of the whole matrix), any
        other callable and ``weights=`` are built or given whole on the driver, then
        sliced: they must fit in its memory. Without ``seed`` a fresh one is drawn
        once, so the shards' rows still come from one stream.
    timeout : float
        Seconds every remote call may take before ``ShardError``.
    start_timeout : float
        Seconds the shards may take to start (a new process each; on a cluster
        without free CPUs they wait for one).
    actor_options : dict, optional
        Passed to Ray's ``.options()`` for each shard (default ``num_cpus=1``; e.g.
        ``{"scheduling_strategy": "SPREAD"}`` on a cluster).

    Uses the running Ray instance (``ray.init(address=...)`` first to join a cluster),
    or starts a local one.

    >>> layer = ShardedEmbedding(1000, 16, num_shards=2, optimizer="adam", seed=0)
    >>> y = layer([[1, 2], [999, 2]])
    >>> layer.backward(np.ones_like(y))
    >>> layer.step(); layer.zero_grad()
    """

    _KIND = "ShardedEmbedding"

    def forward(self, indices: Any) -> np.ndarray:
        """``table[indices]`` (shape ``indices.shape + (output_dim,)``); remembers the
        ids for ``backward``."""
        ids = self._prepare_ids(indices)
        _, inv, rows = self._fetch(ids)
        self._saved = {"ids": ids.copy()}
        return _core.gather(rows, inv)

    __call__ = forward

    def backward(self, grad_output: Any) -> None:
        """Send each shard its rows of this call's gradient (a RowGrad, summed per
        row as the single-process sparse layer does); ``step()`` applies them."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        ids = self._saved["ids"]
        g = self._check_grad_output(grad_output, ids.shape + (self.D,))
        pad = -1 if self.padding_idx is None else self.padding_idx
        rows, values = _core.rowgrad_coalesce(ids, g, self.V, pad)
        self._push_grad(rows, values)


class ShardedEmbeddingBag(_ShardedTable):
    """``embtable.EmbeddingBag(sparse=True)`` with its table split by rows over Ray
    actors (see ``ShardedEmbedding`` for the arguments; ``mode`` as EmbeddingBag).

    The distinct rows of a call are fetched from their shards, then pooled by
    ``embedding_bag`` on the caller's side in index order: the same output and
    gradients as the single-process layer, ``per_sample_weights_grad`` included
    (set by ``backward`` after a forward with ``per_sample_weights``).
    """

    _KIND = "ShardedEmbeddingBag"
    _CONFIG_KEYS = ("padding_idx", "mode", "include_last_offset")

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_shards: int = 2,
        *,
        mode: str = "mean",
        include_last_offset: bool = False,
        **kwargs: Any,
    ) -> None:
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"mode must be 'sum', 'mean' or 'max', got {mode!r}")
        self.mode = mode
        self.include_last_offset = bool(include_last_offset)
        # Set by backward after a forward with per_sample_weights (shaped like the
        # ids; from the rows that forward fetched), as EmbeddingBag's.
        self.per_sample_weights_grad: np.ndarray | None = None
        super().__init__(num_embeddings, embedding_dim, num_shards, **kwargs)

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "mode": self.mode,
            "include_last_offset": self.include_last_offset,
        }

    def forward(
        self, indices: Any, offsets: Any = None, per_sample_weights: Any = None
    ) -> np.ndarray:
        """The pooled lookup, as ``EmbeddingBag.forward``."""
        ids = self._prepare_ids(indices)
        offs = _bag._offsets(offsets)
        uniq, inv, rows = self._fetch(ids)
        pad = None
        if self.padding_idx is not None:
            at = int(np.searchsorted(uniq, self.padding_idx))
            if at < uniq.size and uniq[at] == self.padding_idx:
                pad = at
        weights = per_sample_weights
        if weights is not None:
            weights = np.ascontiguousarray(weights, dtype=self._dtype)
        kw: dict[str, Any] = dict(
            mode=self.mode,
            per_sample_weights=weights,
            padding_idx=pad,
            include_last_offset=self.include_last_offset,
        )
        out, argmax = _bag.embedding_bag_forward(rows, inv, offs, **kw)
        # Own copies of what backward reads: the caller may reuse its arrays.
        if offs is not None and offs is offsets:
            offs = offs.copy()
        if weights is not None and weights is per_sample_weights:
            kw["per_sample_weights"] = weights.copy()
        self._saved = dict(uniq=uniq, inv=inv, offsets=offs, kw=kw, argmax=argmax)
        self._saved["shape"] = out.shape
        # The fetched rows, for the gradient with respect to the weights.
        self._saved["rows"] = rows if weights is not None else None
        return out

    __call__ = forward

    def backward(self, grad_output: Any) -> None:
        """Send each shard its rows of this call's gradient; ``step()`` applies them."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        s = self._saved
        g = self._check_grad_output(grad_output, s["shape"])
        local, values = _bag.embedding_bag_backward_sparse(
            g,
            s["inv"],
            s["offsets"],
            num_embeddings=int(s["uniq"].size),
            argmax=s["argmax"],
            **s["kw"],
        )
        # uniq is sorted, so the global rows stay sorted and unique.
        self._push_grad(s["uniq"][local], values)
        if s["rows"] is not None:
            self.per_sample_weights_grad = (
                _bag.embedding_bag_per_sample_weights_backward(
                    g,
                    s["rows"],
                    s["inv"],
                    s["offsets"],
                    padding_idx=s["kw"]["padding_idx"],
                    include_last_offset=self.include_last_offset,
                )
            )
        else:
            self.per_sample_weights_grad = None
