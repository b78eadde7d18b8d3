"""Every compiled SIMD level the CPU runs gives NumPy's answer.

The hot loops are compiled per instruction set and have fast paths per row size
(64, 128, 256, 512 and 1024 bytes) and a generic path: each level is forced with
``_core.set_simd_level`` and checked on those row sizes and on odd ones.
"""

from __future__ import annotations

import os
import subprocess
import sys

import embtable
import numpy as np
import pytest
from embtable import _core
from simd_levels import LEVELS

# Fast-path row sizes for float32 (D * 4 bytes) and float64 (D * 8), plus odd D.
DS = [1, 3, 8, 15, 16, 17, 32, 63, 64, 65, 128, 255, 256, 257]
FLOATS = [np.float32, np.float64]
INDEX = [np.int32, np.int64]


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> str:
    saved = _core.get_simd_level()
    _core.set_simd_level(request.param)
    assert _core.get_simd_level() == request.param
    yield request.param
    _core.set_simd_level(saved)


def _inputs(rng: np.random.Generator, V: int, D: int, n: int, dtype, itype):
    table = rng.standard_normal((V, D)).astype(dtype)
    ids = rng.integers(0, V, n).astype(itype)
    updates = rng.standard_normal((n, D)).astype(dtype)
    return table, ids, updates


def test_baseline_is_always_runnable() -> None:
    assert "baseline" in LEVELS
    assert embtable.show_config(mode="dicts")["simd"]["selected"] in LEVELS


@pytest.mark.parametrize("D", DS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_gather_matches_numpy(level: str, D: int, dtype) -> None:
    rng = np.random.default_rng(D)
    for itype, V, n in ((np.int32, 37, 1_000), (np.int64, 5_000, 3_000)):
        table, ids, _ = _inputs(rng, V, D, n, dtype, itype)
        expected = np.take(table, ids, axis=0)
        for threads in (1, 2):
            embtable.set_num_threads(threads)
            got = embtable.gather(table, ids)
            np.testing.assert_array_equal(got, expected)
            out = np.full_like(expected, np.nan)
            assert embtable.gather(table, ids, out=out) is out
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("D", DS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("deterministic", [True, False])
def test_scatter_add_matches_numpy(
    level: str, D: int, dtype, deterministic: bool
) -> None:
    rng = np.random.default_rng(1_000 + D)
    for itype, V, n in ((np.int32, 29, 2_000), (np.int64, 3_000, 6_000)):
        target, ids, updates = _inputs(rng, V, D, n, dtype, itype)
        expected = target.copy()
        np.add.at(expected, ids, updates)
        for threads in (1, 2):
            embtable.set_num_threads(threads)
            got = target.copy()
            assert (
                embtable.scatter_add(got, ids, updates, deterministic=deterministic)
                is got
            )
            if deterministic:
                np.testing.assert_array_equal(got, expected)
            else:
                rtol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 10)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("itype", INDEX)
def test_scatter_add_hot_rows(level: str, dtype, itype) -> None:
    # A Zipf-like id stream: a few rows take most updates, in runs and scattered.
    rng = np.random.default_rng(7)
    V, D, n = 1_000, 64, 40_000
    ids = np.minimum(rng.zipf(1.3, n) - 1, V - 1).astype(itype)
    ids[:500] = 3  # a run of equal ids
    target = rng.standard_normal((V, D)).astype(dtype)
    updates = rng.standard_normal((n, D)).astype(dtype)
    expected = target.copy()
    np.add.at(expected, ids, updates)
    embtable.set_num_threads(2)
    got = target.copy()
    embtable.scatter_add(got, ids, updates, deterministic=True)
    np.testing.assert_array_equal(got, expected)
    got = target.copy()
    embtable.scatter_add(got, ids, updates)
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 10)


@pytest.mark.parametrize("D", [16, 17, 64])
def test_unaligned_rows(level: str, D: int) -> None:
    # Views at odd float offsets: rows need not be aligned to anything.
    rng = np.random.default_rng(3)
    V, n = 500, 4_000
    buf = rng.standard_normal(V * D + 1).astype(np.float32)
    table = buf[1:].reshape(V, D)
    ids = rng.integers(0, V, n)
    obuf = np.zeros(n * D + 3, np.float32)
    out = obuf[3:].reshape(n, D)
    embtable.gather(table, ids, out=out)
    np.testing.assert_array_equal(out, table[ids])
    tbuf = np.zeros(V * D + 1, np.float32)
    target = tbuf[1:].reshape(V, D)
    expected = target.copy()
    np.add.at(expected, ids, out)
    embtable.scatter_add(target, ids, out, deterministic=True)
    np.testing.assert_array_equal(target, expected)


def test_set_unknown_level_raises() -> None:
    with pytest.raises(ValueError, match="avx2"):
        _core.set_simd_level("sse9")


def _simd_config_with(level: str, *python_flags: str) -> dict:
    """``show_config()["simd"]`` of a new process started with EMBTABLE_SIMD=level."""
    import json

    code = (
        "import embtable, json; "
        "print(json.dumps(embtable.show_config(mode='dicts')['simd']))"
    )
    proc = subprocess.run(
        [sys.executable, *python_flags, "-c", code],
        env=dict(os.environ, EMBTABLE_SIMD=level),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def test_env_forces_baseline() -> None:
    simd = _simd_config_with("baseline")
    assert simd["selected"] == "baseline"
    assert simd["detected"] in simd["compiled"]


def test_emulated_avx512_build_runs_a_forced_avx512() -> None:
    # Only the test build with cmake -DEMBTABLE_EMULATE_AVX512=ON reports
    # "emulated": its avx512 units run through SIMDe on any AVX2 CPU when forced,
    # while "detected" stays the CPU's own level.
    simd = embtable.show_config(mode="dicts")["simd"]
    if "emulated" not in simd:
        pytest.skip("not the emulated-AVX-512 build")
    assert simd["emulated"] == ["avx512"]
    assert "avx512" in LEVELS
    forced = _simd_config_with("avx512", "-W", "error")
    assert forced["selected"] == "avx512"
    assert forced["detected"] == simd["detected"]


@pytest.mark.parametrize(
    ("dtype", "D"),
    [
        (np.float32, 16),
        (np.float32, 64),
        (np.float32, 256),
        (np.float64, 8),
        (np.float64, 32),
        (np.float32, 17),
    ],
)
@pytest.mark.parametrize("offset", [0, 1])
def test_gather_large_output_streaming(level: str, dtype, D: int, offset: int) -> None:
    # Outputs of 4 MiB and more take the streaming-store path (aligned rows
    # only; `offset` misaligns `out` to force the fallback).
    rng = np.random.default_rng(D)
    V = 3_000
    n = (5 << 20) // (D * np.dtype(dtype).itemsize)
    table = rng.standard_normal((V, D)).astype(dtype)
    ids = rng.integers(0, V, n)
    buf = np.zeros(n * D + offset, dtype)
    out = buf[offset:].reshape(n, D)
    for threads in (1, 2):
        embtable.set_num_threads(threads)
        out[...] = 0
        embtable.gather(table, ids, out=out)
        np.testing.assert_array_equal(out, table[ids])


@pytest.mark.parametrize("itype", INDEX)
def test_validation_finds_the_first_bad_index(level: str, itype) -> None:
    # The vectorised scan: extreme values, both ends, and blocks past the first.
    info = np.iinfo(itype)
    V = 7
    table = np.zeros((V, 2), np.float32)
    for n in (1, 5, 1_000, 3_000, 200_000):
        for pos in {0, n // 2, n - 1}:
            for bad in (-1, V, info.min, info.max):
                ids = np.full(n, V - 1, itype)
                ids[pos] = bad
                if pos + 1 < n:
                    ids[-1] = -1  # a later bad index must not be the one named
                with pytest.raises(
                    IndexError, match=rf"index {bad} at position \({pos},\)"
                ):
                    embtable.gather(table, ids)
    ids = np.arange(V, dtype=itype).repeat(1_000)
    np.testing.assert_array_equal(embtable.gather(table, ids), table[ids])
