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

from . import _bag, _core, optimizers
from ._rowgrad import RowGrad
from .layers import Embedding, _float_dtype, _positive_int

__all__ = ["ShardError", "ShardedEmbedding", "ShardedEmbeddingBag"]

_FORMAT = "embtable.sharded"
_MANIFEST = "manifest.json"


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


def _atomic_savez(path: str, **arrays: Any) -> None:
    """np.savez to a temporary file in the same folder, fsync, os.replace."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


class _Shard:
    """One block of rows and its optimizer state (runs in a Ray actor).

    It holds a sparse single-process ``Embedding`` over its rows, so its gradient
    merging and optimizer step are the single-process code itself.
    """

    def __init__(
        self,
        index: int,
        start: int,
        stop: int,
        D: int,
        dtype: str,
        optimizer: dict[str, Any],
        rows: np.ndarray | None,
        sources: list[dict[str, Any]] | None,
        iterations: int,
    ) -> None:
        self.index, self.start, self.stop = index, start, stop
        self.opt = optimizers.get(optimizer)
        slots: dict[str, np.ndarray] = {}
        if sources is not None:
            rows, slots = self._read_block(sources, D, dtype)
        self.layer = Embedding(
            stop - start,
            D,
            weights=rows,
            dtype=dtype,
            sparse=True,
            name=f"shard{index}",
        )
        state = self.opt.state(self.layer)  # creates the slots
        for name, arr in slots.items():
            if name not in state:
                raise ValueError(f"checkpoint has slot {name!r}; {self.opt!r} has not")
            state[name][...] = arr
        self.opt._state(self.layer).iterations = iterations

    def _read_block(
        self, sources: list[dict[str, Any]], D: int, dtype: str
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows [start, stop) and their slots from the old shards' files."""
        n = self.stop - self.start
        table = np.empty((n, D), dtype=dtype)
        slots: dict[str, np.ndarray] = {}
        for src in sources:
            lo = max(self.start, src["start"])
            hi = min(self.stop, src["stop"])
            if lo >= hi:
                continue
            with np.load(src["path"], allow_pickle=False) as f:
                a, b = lo - src["start"], hi - src["start"]
                table[lo - self.start : hi - self.start] = f["embeddings"][a:b]
                for key in f.files:
                    if key.startswith("slot_"):
                        arr = slots.setdefault(key[5:], np.empty((n, D), dtype=dtype))
                        arr[lo - self.start : hi - self.start] = f[key][a:b]
        return table, slots

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
        state = self.opt.state(self.layer)
        arrays = {f"slot_{k}": v for k, v in state.items() if isinstance(v, np.ndarray)}
        _atomic_savez(
            path,
            embeddings=self.layer.embeddings,
            iterations=np.array(int(state["iterations"]), np.int64),
            start=np.array(self.start, np.int64),
            stop=np.array(self.stop, np.int64),
            format=np.array(_FORMAT + ".shard"),
            **arrays,
        )
        return path


_RemoteShard = ray.remote(_Shard)


class _ShardedTable:
    """The shared part of the sharded layers: shards, routing, gradients, files."""

    _KIND: ClassVar[str] = ""

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
        remote = _RemoteShard
        opt_cfg = self.optimizer.get_config()
        if _restore is None:
            # The initial table exactly as the single-process layer makes it.
            ref = Embedding(
                V,
                D,
                embeddings_initializer=embeddings_initializer,
                weights=weights,
                dtype=self._dtype,
                seed=seed,
                padding_idx=padding_idx,
            )
            self.padding_idx = ref.padding_idx
            table = ref.embeddings
            del ref
        self._shards: list[Any] = []
        for k in range(S):
            lo, hi = int(self.bounds[k]), int(self.bounds[k + 1])
            args: tuple[Any, ...]
            if _restore is None:
                args = (k, lo, hi, D, self._dtype.name, opt_cfg, table[lo:hi], None, 0)
            else:
                self.iterations = int(_restore["iterations"])
                args = (
                    k, lo, hi, D, self._dtype.name, opt_cfg, None,
                    _restore["sources"], self.iterations,
                )  # fmt: skip
            self._shards.append(remote.options(**opts).remote(*args))
        pids = self._call(
            "ready", [() for _ in range(S)], mutates=False, timeout=start_timeout
        )
        self.pids = [int(p[1]) for p in pids]

    # -- remote calls --------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def _check_usable(self) -> None:
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
        for k, a in enumerate(args):
            if a is not None:
                refs[k] = getattr(self._shards[k], method).remote(*a)
        out: list[Any] = [None] * len(args)
        limit = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + limit
        pending = dict(refs)
        failure: ShardError | None = None
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
    def _prepare_ids(self, indices: Any) -> np.ndarray:
        from ._indices import as_indices

        ids = as_indices(indices, self.V, "ids")
        if ids.size:
            flat = ids.reshape(-1)
            bad = np.flatnonzero((flat < 0) | (flat >= self.V))
            if bad.size:
                pos = int(bad[0])
                raise IndexError(
                    _core.index_error_message(
                        str(int(flat[pos])), list(ids.shape), pos, self.V
                    )
                )
        return ids

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

        Each file is written atomically, under a fresh name, and the manifest that
        names them is replaced atomically after all of them: a crash at any moment
        leaves the previous checkpoint or the new one. Files of older checkpoints are
        removed afterwards. Returns the folder.
        """
        folder = Path(os.fspath(path))
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
            "version": 1,
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
        _atomic_write_text(str(folder / _MANIFEST), json.dumps(manifest, indent=1))
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
        covered = 0
        for s in manifest["shards"]:
            if s["start"] != covered or not (folder / s["file"]).is_file():
                raise ValueError(
                    f"{mpath}: shard file {s['file']} is missing or out of order"
                )
            covered = s["stop"]
        if covered != manifest["input_dim"]:
            raise ValueError(
                f"{mpath}: the shards cover {covered} of {manifest['input_dim']} rows"
            )
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
        training continues as if it had not stopped. Each new shard reads its rows
        from the files that hold them."""
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
        self._broken = "shutdown() was called"

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
        layer's (built once by the caller, then sent to the shards).
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
        want = ids.shape + (self.D,)
        g = np.asarray(grad_output)
        if g.shape != want:
            raise ValueError(
                f"grad_output has shape {g.shape} but the output had shape {want}"
            )
        g = np.ascontiguousarray(g, dtype=self._dtype)
        pad = -1 if self.padding_idx is None else self.padding_idx
        rows, values = _core.rowgrad_coalesce(ids, g, self.V, pad)
        self._push_grad(rows, values)


class ShardedEmbeddingBag(_ShardedTable):
    """``embtable.EmbeddingBag(sparse=True)`` with its table split by rows over Ray
    actors (see ``ShardedEmbedding`` for the arguments; ``mode`` as EmbeddingBag).

    The distinct rows of a call are fetched from their shards, then pooled by
    ``embedding_bag`` on the caller's side in index order: the same output and
    gradients as the single-process layer.
    """

    _KIND = "ShardedEmbeddingBag"

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
        self._saved = dict(uniq=uniq, inv=inv, offsets=offs, kw=kw, argmax=argmax)
        self._saved["shape"] = out.shape
        return out

    __call__ = forward

    def backward(self, grad_output: Any) -> None:
        """Send each shard its rows of this call's gradient; ``step()`` applies them."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        s = self._saved
        g = np.asarray(grad_output)
        if g.shape != s["shape"]:
            raise ValueError(
                f"grad_output has shape {g.shape} but the output had shape {s['shape']}"
            )
        g = np.ascontiguousarray(g, dtype=self._dtype)
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
