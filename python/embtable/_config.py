"""Threads and build information."""

from __future__ import annotations

import hashlib
import json
import operator
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

from . import _core

__all__ = ["get_num_threads", "set_num_threads", "show_config"]


def set_num_threads(n: int) -> None:
    """Set the number of threads the core uses.

    ``1 <= n <= limit``, else ``ValueError`` naming the limit: 4 threads per
    online CPU, at least 64 (``show_config(mode="dicts")["threads"]["max"]``).
    The pool is built at once; if the system refuses some threads (a container's
    pids limit, ``RLIMIT_NPROC``), the pool keeps those it got, a
    ``RuntimeWarning`` says so and :func:`get_num_threads` reports the real count.
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(
            f"number of threads must be an int, got {type(n).__name__}"
        ) from None
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    limit = int(_core.max_threads())
    if n > limit:
        raise ValueError(
            f"number of threads must be <= {limit} (4 per online CPU, at least 64), "
            f"got {n}"
        )
    _core.set_num_threads(n)
    _core.ensure_threads()
    _warn_shortfall(stacklevel=3)


def get_num_threads() -> int:
    """The number of threads the core uses (after a failed thread creation, the
    threads it really has)."""
    _warn_shortfall(stacklevel=3)
    return int(_core.get_num_threads())


def _warn_shortfall(stacklevel: int) -> None:
    shortfall = _core.take_thread_shortfall()
    if shortfall is not None:
        requested, obtained, error = shortfall
        warnings.warn(
            f"embtable asked for {requested} threads but the system created only "
            f"{obtained} ({error}); running with {obtained}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def show_config(mode: Literal["stdout", "dicts"] = "stdout") -> dict[str, Any] | None:
    """Print (``mode="stdout"``) or return (``mode="dicts"``) the build configuration.

    Top-level keys: ``version``, ``build`` (compiler, build type, flags),
    ``simd`` (compiled / detected / selected levels), ``threads``, ``tuning``
    (every machine-dependent size and time of the core as ``{"value", "source"}``;
    the source says where it came from: ``sysfs``, ``sysconf``, ``affinity``,
    ``cgroup``, ``derived``, ``measured``, ``cache`` or ``fallback``),
    ``vectors_io`` (``load_vectors``' read sizes, derived from the thread count
    and the L2 cache) and ``out_of_core`` (the read-ahead for np.memmap tables,
    see ``embtable.prefetch``).
    """
    from . import _prefetch

    cfg = _core.config()
    cfg["vectors_io"] = _core.vectors_config()  # load_vectors' block sizes (derived)
    cfg["out_of_core"] = _prefetch.config()
    if mode == "dicts":
        return cfg
    if mode != "stdout":
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    print(json.dumps(cfg, indent=2))
    return None


def _env_warning(name: str, value: str, expected: str, instead: str) -> None:
    """The warning for an environment variable with a value embtable can't use."""
    warnings.warn(
        f"{name}={value!r} is not {expected}; using {instead}",
        RuntimeWarning,
        stacklevel=3,
    )


def _threads_from_env() -> None:
    value = os.environ.get("EMBTABLE_NUM_THREADS")
    if value is None or value.strip() == "":
        return
    limit = int(_core.max_threads())
    expected = f"an integer in [1, {limit}]"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if 1 <= n <= limit:
        set_num_threads(n)
        return
    if n > limit:
        expected += " (the limit: 4 threads per online CPU, at least 64)"
    _env_warning(
        "EMBTABLE_NUM_THREADS",
        value,
        expected,
        f"the default, {int(_core.get_num_threads())} threads",
    )


_SIMD_LEVELS = ("baseline", "avx2", "avx512")


def _simd_from_env() -> None:
    """Warn when ``EMBTABLE_SIMD`` (read by the core) names no level, or one that this
    build or CPU can't run: the core then uses the best level it has."""
    value = os.environ.get("EMBTABLE_SIMD")
    if value is None or value == "":
        return
    simd = _core.config()["simd"]
    selected = simd["selected"]
    if value not in _SIMD_LEVELS:
        _env_warning(
            "EMBTABLE_SIMD",
            value,
            "'baseline', 'avx2' or 'avx512'",
            f"the best level of this CPU, {selected!r}",
        )
    elif value != selected:
        _env_warning(
            "EMBTABLE_SIMD",
            value,
            f"a level this build and CPU run (compiled: {', '.join(simd['compiled'])}; "
            f"CPU: up to {simd['detected']})",
            f"{selected!r}",
        )


# --- tuning: a short calibration, cached per machine ---------------------------

# The measured values the calibration sets (everything else is read from the
# machine and derived in the core).
_MEASURED = ("handoff_ns", "wake_ns", "copy_bytes_per_us", "owner_scan_bytes")
_CACHE_FORMAT = 2
# A hand-off is a few cache-line transfers (well under 20 us on any machine) and a
# wake-up a scheduler round trip (well under 1 ms): slower readings mean other
# processes held the cores. The other measurements only need to be sizes an int64
# holds with room to spare.
_PLAUSIBLE_BELOW = {
    "handoff_ns": 20_000,
    "wake_ns": 1_000_000,
    "copy_bytes_per_us": 1 << 40,
    "owner_scan_bytes": 1 << 40,
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _tuning_cache_path() -> Path:
    cfg = _core.config()
    key = json.dumps(
        [
            _CACHE_FORMAT,
            _cpu_model(),
            os.cpu_count(),
            cfg["version"],
            cfg["build"],
            cfg["simd"]["selected"],
            cfg["threads"]["default"],
        ],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(root) / "embtable" / f"tuning-{digest}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def retune(*, save: bool = True) -> dict[str, int]:
    """Measure the pool's hand-off and wake-up latency, the copy rate and the
    owners' scan of an id (what makes scatter_add's owners pay) now.

    Applies them (the grain and the spin derive from them) and, with ``save``,
    rewrites the per-machine cache. Takes a few milliseconds; run it on a quiet
    machine for the best values. Returns the measurements.
    """
    measured = {k: int(v) for k, v in _core.calibrate().items()}
    # Readings of a busy machine (_PLAUSIBLE_BELOW): keep the derived values then.
    if not (
        0 < measured["handoff_ns"] < _PLAUSIBLE_BELOW["handoff_ns"]
        and 0 < measured["wake_ns"] < _PLAUSIBLE_BELOW["wake_ns"]
    ):
        measured["handoff_ns"] = measured["wake_ns"] = 0
        measured["owner_scan_bytes"] = 0  # timed on the same busy cores
    for name in _MEASURED:
        if measured.get(name, 0) > 0:
            _core.set_tuned(name, measured[name], "measured")
    complete = all(measured.get(k, 0) > 0 for k in _MEASURED)
    if save and (complete or int(_core.default_num_threads()) == 1):
        try:
            _write_atomic(
                _tuning_cache_path(),
                json.dumps({"format": _CACHE_FORMAT, "measured": measured}),
            )
        except OSError:
            pass  # a read-only home: measure again next time
    return measured


def _tune_at_import() -> None:
    """Apply the cached calibration, or measure once and cache it.

    ``EMBTABLE_TUNE=0`` skips both (sizes then come from the caches alone); ``1`` or
    unset runs them; any other value warns and runs them.
    """
    env = os.environ.get("EMBTABLE_TUNE", "")
    if env.strip() == "0":
        return
    if env.strip() not in ("", "1"):
        _env_warning("EMBTABLE_TUNE", env, "0 or 1", "1 (calibrate)")
    try:
        path = _tuning_cache_path()
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") == _CACHE_FORMAT:
            measured = data["measured"]
            values = {name: measured.get(name, 0) for name in _MEASURED}
            # Another machine's file, or a damaged one (JSON allows 1e999 and NaN):
            # only integers a calibration here could have saved are applied.
            if all(
                type(v) is int and v < _PLAUSIBLE_BELOW[name]
                for name, v in values.items()
            ):
                for name, value in values.items():
                    if value > 0:
                        _core.set_tuned(name, value, "cache")
                return
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    retune(save=True)
