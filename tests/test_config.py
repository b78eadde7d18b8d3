"""show_config and the package surface."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import embtable
import numpy as np
import pytest


def test_show_config_dicts():
    cfg = embtable.show_config(mode="dicts")
    assert set(cfg) >= {"version", "build", "simd", "threads"}
    assert cfg["version"] == embtable.__version__
    assert cfg["build"]["compiler"]
    simd = cfg["simd"]
    assert "baseline" in simd["compiled"]
    assert simd["selected"] in simd["compiled"]
    assert simd["detected"] in simd["compiled"]
    assert cfg["threads"]["num_threads"] == embtable.get_num_threads()
    json.dumps(cfg)


def test_show_config_prints(capsys):
    assert embtable.show_config() is None
    printed = capsys.readouterr().out
    assert embtable.__version__ in printed and "simd" in printed


def test_all_names_exist():
    for name in embtable.__all__:
        assert hasattr(embtable, name), name


_SOURCES = {"sysfs", "sysconf", "affinity", "cgroup", "derived", "measured", "cache"}
_SOURCES |= {"fallback", "env"}


def test_show_config_lists_every_tuned_value_with_its_source():
    tuning = embtable.show_config(mode="dicts")["tuning"]
    names = {
        "cpus", "line_bytes", "l1d_bytes", "l2_bytes", "llc_bytes", "stream_bytes",
        "parallel_bytes", "prefetch_bytes", "bag_prefetch_bytes", "block_bytes", "spin_ns", "handoff_ns",
        "wake_ns", "copy_bytes_per_us", "owner_scan_bytes", "radix_bits",
    }  # fmt: skip
    assert set(tuning) == names
    for name, v in tuning.items():
        assert isinstance(v["value"], int) and v["value"] >= 0, name
        assert v["source"] in _SOURCES, (name, v)
    assert 0 < tuning["l1d_bytes"]["value"] <= tuning["l2_bytes"]["value"]
    assert tuning["l2_bytes"]["value"] <= tuning["llc_bytes"]["value"]
    if tuning["stream_bytes"]["source"] == "derived":
        # Streaming stores only for outputs that cannot stay in the last level.
        assert tuning["stream_bytes"]["value"] == tuning["llc_bytes"]["value"]
    assert tuning["parallel_bytes"]["value"] > 0 and tuning["spin_ns"]["value"] > 0
    assert tuning["cpus"]["value"] == embtable._core.default_num_threads()
    if tuning["radix_bits"]["source"] == "derived":
        # Radix counters (8 bytes per bucket) in at most a quarter of L1.
        bits = tuning["radix_bits"]["value"]
        assert 8 <= bits <= 12
        assert (8 << bits) <= max(tuning["l1d_bytes"]["value"] // 4, 8 << 8)


@pytest.fixture
def restore_tuning():
    yield
    embtable._core.reset_tuning()
    embtable._config._tune_at_import()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_the_tuned_sizes(restore_tuning, rng, threads):
    before = embtable.get_num_threads()
    embtable.set_num_threads(threads)
    try:
        table = rng.standard_normal((3000, 64)).astype(np.float32)
        ids = rng.integers(0, 3000, size=20_000)
        updates = rng.standard_normal((20_000, 64)).astype(np.float32)
        expected = table.copy()
        np.add.at(expected, ids, updates)
        offsets = np.arange(0, 20_000, 40)
        bag_sums = np.add.reduceat(table[ids].astype(np.float64), offsets)
        q = embtable.quantize(table, "int8")
        q_bags = np.add.reduceat(q.dequantize()[ids].astype(np.float64), offsets)
        for name, value in [
            ("stream_bytes", 0),  # every output streamed
            ("stream_bytes", 1 << 40),  # none
            ("parallel_bytes", 1),  # one row per task
            ("prefetch_bytes", 0),  # prefetch off
            ("prefetch_bytes", 1 << 20),
            ("bag_prefetch_bytes", 0),
            ("bag_prefetch_bytes", 1 << 20),
            ("spin_ns", 0),  # workers park at once
            ("owner_scan_bytes", 0),  # scatter_add's owners take every call
            ("owner_scan_bytes", 1 << 20),  # none: inline
        ]:
            embtable._core.set_tuned(name, value, "test")
            tuning = embtable.show_config(mode="dicts")["tuning"]
            assert tuning[name] == {"value": value, "source": "test"}
            np.testing.assert_array_equal(embtable.gather(table, ids), table[ids])
            target = table.copy()
            embtable.scatter_add(target, ids, updates, deterministic=True)
            np.testing.assert_array_equal(target, expected)
            bags = embtable.embedding_bag(table, ids, offsets, mode="sum")
            np.testing.assert_allclose(bags, bag_sums, rtol=1e-4, atol=1e-4)
            qbags = embtable.embedding_bag(q, ids, offsets, mode="sum")
            np.testing.assert_allclose(qbags, q_bags, rtol=1e-4, atol=1e-4)
    finally:
        embtable.set_num_threads(before)


def test_bag_prefetch_follows_prefetch_unless_set(restore_tuning):
    def value(name):
        return embtable.show_config(mode="dicts")["tuning"][name]

    embtable._core.set_tuned("prefetch_bytes", 5000, "test")
    assert value("bag_prefetch_bytes") == {"value": 10_000, "source": "derived"}
    embtable._core.set_tuned("prefetch_bytes", 0, "test")  # prefetch off: bags too
    assert value("bag_prefetch_bytes")["value"] == 0
    embtable._core.set_tuned("bag_prefetch_bytes", 777, "test")
    assert value("bag_prefetch_bytes") == {"value": 777, "source": "test"}


def test_set_tuned_rejects_unknown_names_and_negative_values(restore_tuning):
    with pytest.raises(ValueError, match="unknown tuning value 'bogus'"):
        embtable._core.set_tuned("bogus", 1, "test")
    with pytest.raises(ValueError, match=">= 0"):
        embtable._core.set_tuned("spin_ns", -1, "test")


def test_derived_values_follow_the_measurements(restore_tuning):
    core = embtable._core
    core.set_tuned("handoff_ns", 1000, "test")
    core.set_tuned("copy_bytes_per_us", 20_000, "test")
    core.set_tuned("wake_ns", 10_000, "test")
    t = embtable.show_config(mode="dicts")["tuning"]
    l1, l2 = t["l1d_bytes"]["value"], t["l2_bytes"]["value"]
    # 8 hand-offs' worth of copying, within [L1, L2]
    assert t["parallel_bytes"]["value"] == min(max(8 * 1000 * 20_000 // 1000, l1), l2)
    assert t["spin_ns"]["value"] == 128 * 10_000
    if t["owner_scan_bytes"]["source"] == "derived":  # unmeasured: two 8-byte accesses
        assert t["owner_scan_bytes"]["value"] == 16
    core.set_tuned("parallel_bytes", 12345, "test")  # explicit wins over derived
    assert embtable.show_config(mode="dicts")["tuning"]["parallel_bytes"] == {
        "value": 12345,
        "source": "test",
    }


@pytest.mark.parametrize(
    "handoff_ns,copy_bytes_per_us", [(2**31, 2**30), (2**40, 2**40), (2**62, 2**62)]
)
def test_derived_grain_saturates_for_huge_measurements(
    restore_tuning, handoff_ns, copy_bytes_per_us
):
    # 8 h c overflows an int64 here: the grain is still the top of its range.
    core = embtable._core
    core.set_tuned("handoff_ns", handoff_ns, "test")
    core.set_tuned("copy_bytes_per_us", copy_bytes_per_us, "test")
    t = embtable.show_config(mode="dicts")["tuning"]
    assert t["parallel_bytes"]["value"] == t["l2_bytes"]["value"]


_FAKE_L3 = r"""
set -e
for level in /sys/devices/system/cpu/cpu*/cache/index*/level; do
  if [ "$(cat "$level")" = 3 ]; then
    mount --bind "$FAKE_SIZE" "$(dirname "$level")/size"
  fi
done
exec "$PYTHON" -c "$CODE"
"""


def _unshare_works() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    return r.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare -m")
@pytest.mark.parametrize("l3", ["1K", "0K"])
def test_a_last_level_cache_smaller_than_l2_is_not_believed(tmp_path, l3):
    # A VM's or a container's sysfs may report any L3 size; simulated in a
    # private mount namespace. Streaming stores for every output above 1 KiB
    # (stream_bytes = llc_bytes) would follow from believing it.
    levels = glob.glob("/sys/devices/system/cpu/cpu*/cache/index*/level")
    if not any(Path(f).read_text().strip() == "3" for f in levels):
        pytest.skip("no L3 in sysfs to replace")
    (tmp_path / "size").write_text(l3 + "\n")
    code = (
        "import embtable, json; "
        "print(json.dumps(embtable.show_config(mode='dicts')['tuning']))"
    )
    env = dict(os.environ, FAKE_SIZE=str(tmp_path / "size"), PYTHON=sys.executable)
    env.update(CODE=code, EMBTABLE_TUNE="0")
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", _FAKE_L3], env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["l2_bytes"]["value"] >= t["l1d_bytes"]["value"] > 0
    assert t["llc_bytes"]["value"] >= t["l2_bytes"]["value"], t["llc_bytes"]
    assert t["stream_bytes"]["value"] == t["llc_bytes"]["value"]


def _run(code: str, **env: str) -> str:
    full = dict(os.environ, **env)
    r = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_tuning_cache_is_read_and_tune_0_skips_it(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "EMBTABLE_TUNE": "0"}
    path = _run(
        "from embtable import _config; print(_config._tuning_cache_path())", **env
    )
    path = path.strip()
    assert path.startswith(str(tmp_path / "embtable"))
    show = (
        "import embtable, json; "
        "print(json.dumps(embtable.show_config(mode='dicts')['tuning']))"
    )
    tuned = json.loads(_run(show, **env))
    assert tuned["handoff_ns"]["source"] == "fallback"  # EMBTABLE_TUNE=0: none read
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(
            {
                "format": embtable._config._CACHE_FORMAT,
                "measured": {
                    "handoff_ns": 777,
                    "wake_ns": 12_345,
                    "copy_bytes_per_us": 9999,
                    "owner_scan_bytes": 41,
                },
            },
            f,
        )
    tuned = json.loads(_run(show, XDG_CACHE_HOME=str(tmp_path), EMBTABLE_TUNE="1"))
    assert tuned["handoff_ns"] == {"value": 777, "source": "cache"}
    assert tuned["wake_ns"] == {"value": 12_345, "source": "cache"}
    assert tuned["owner_scan_bytes"] == {"value": 41, "source": "cache"}
    assert tuned["spin_ns"]["source"] == "derived"
    tuned = json.loads(_run(show, **env))
    assert tuned["handoff_ns"]["source"] == "fallback"
    # A corrupt cache is measured again, never an error.
    with open(path, "w") as f:
        f.write("{not json")
    _run(show, XDG_CACHE_HOME=str(tmp_path), EMBTABLE_TUNE="1")


@pytest.mark.parametrize(
    "measured",
    [
        '{"handoff_ns": Infinity}',  # JSON's 1e999: int() raised OverflowError
        '{"handoff_ns": NaN}',
        '{"handoff_ns": 500, "wake_ns": 1.5e300}',
        # Another machine's (or a busy one's) readings: never what retune() saves.
        '{"handoff_ns": 1000000000000, "wake_ns": 1000000000000, '
        '"copy_bytes_per_us": 1000000000000}',
        '{"handoff_ns": 500, "owner_scan_bytes": 1180591620717411303424}',
        '{"handoff_ns": true, "wake_ns": 5000}',
    ],
)
def test_a_damaged_or_foreign_tuning_cache_is_measured_again(tmp_path, measured):
    env = {"XDG_CACHE_HOME": str(tmp_path), "EMBTABLE_TUNE": "0"}
    path = _run(
        "from embtable import _config; print(_config._tuning_cache_path())", **env
    ).strip()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(
            f'{{"format": {embtable._config._CACHE_FORMAT}, "measured": {measured}}}'
        )
    show = (
        "import embtable, json; "
        "print(json.dumps(embtable.show_config(mode='dicts')['tuning']))"
    )
    tuned = json.loads(_run(show, XDG_CACHE_HOME=str(tmp_path), EMBTABLE_TUNE="1"))
    for name in ("handoff_ns", "wake_ns", "copy_bytes_per_us", "owner_scan_bytes"):
        assert tuned[name]["source"] != "cache", (name, tuned[name])
    assert 0 < tuned["parallel_bytes"]["value"] <= tuned["l2_bytes"]["value"]


def test_calibrate_measures_the_owners_scan(restore_tuning):
    # calibrate() times the owners' and the inline scatter_add of the same ids;
    # the scan of an id is worth at least a byte and at most 64 of the 64-byte
    # rows it was measured on (clamped), and 0 only when nothing was measured:
    # one thread, a pool too busy to time, or the calibration's 60 ms deadline
    # spent before the owners' probe.
    t0 = time.perf_counter()
    m = embtable._core.calibrate()
    took = time.perf_counter() - t0
    assert set(m) == {"handoff_ns", "wake_ns", "copy_bytes_per_us", "owner_scan_bytes"}
    assert m["copy_bytes_per_us"] > 0
    if embtable.get_num_threads() < 2 or m["handoff_ns"] == 0:
        return  # one thread, or a machine too busy to time the pool
    if m["owner_scan_bytes"] == 0:
        assert took >= 0.06, "owners' probe skipped before the deadline"
    else:
        assert 1 <= m["owner_scan_bytes"] <= 64 * 64


_ENV_SHOW = """
import embtable
cfg = embtable.show_config(mode="dicts")
print(cfg["out_of_core"]["prefetch"], cfg["simd"]["selected"], cfg["simd"]["detected"],
      embtable.get_num_threads(), embtable._core.default_num_threads())
"""


def _import_with(tmp_path, **env: str):
    """Import embtable in a child with `env`; its (stdout fields, stderr)."""
    full = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    for name in ("EMBTABLE_PREFETCH", "EMBTABLE_SIMD", "EMBTABLE_NUM_THREADS"):
        full.pop(name, None)
    full.setdefault("EMBTABLE_TUNE", "0")
    full.update(env)
    r = subprocess.run(
        [sys.executable, "-W", "always", "-c", _ENV_SHOW],
        env=full, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.split(), r.stderr


@pytest.mark.parametrize(
    "name,value,instead",
    [
        ("EMBTABLE_PREFETCH", "bogus", "using 'threads'"),
        ("EMBTABLE_SIMD", "bogus", "using the best level of this CPU"),
        ("EMBTABLE_SIMD", "AVX2", "using the best level of this CPU"),
        ("EMBTABLE_TUNE", "bogus", "using 1 (calibrate)"),
        ("EMBTABLE_TUNE", "off", "using 1 (calibrate)"),
        ("EMBTABLE_NUM_THREADS", "0", "using the default"),
        ("EMBTABLE_NUM_THREADS", "-1", "using the default"),
        ("EMBTABLE_NUM_THREADS", "abc", "using the default"),
        ("EMBTABLE_NUM_THREADS", "1.5", "using the default"),
    ],
)
def test_bad_environment_values_warn_and_fall_back(tmp_path, name, value, instead):
    out, err = _import_with(tmp_path, **{name: value})
    prefetch, selected, detected, threads, default = out
    warning = [line for line in err.splitlines() if "RuntimeWarning" in line]
    assert len(warning) == 1, err
    assert f"{name}={value!r} is not " in warning[0] and instead in warning[0]
    assert "()" not in warning[0]  # a reason, when there is one, is not empty
    assert prefetch == "threads" and selected == detected and threads == default


@pytest.mark.parametrize(
    "env",
    [
        {"EMBTABLE_PREFETCH": " WillNeed "},
        {"EMBTABLE_PREFETCH": ""},
        {"EMBTABLE_SIMD": "baseline"},
        {"EMBTABLE_TUNE": "0"},
        {"EMBTABLE_NUM_THREADS": " 3 "},
    ],
)
def test_good_environment_values_do_not_warn(tmp_path, env):
    out, err = _import_with(tmp_path, **env)
    assert "Warning" not in err, err
    if "EMBTABLE_PREFETCH" in env:
        assert out[0] == (env["EMBTABLE_PREFETCH"].strip().lower() or "threads")
    if "EMBTABLE_SIMD" in env:
        assert out[1] == "baseline"
    if "EMBTABLE_NUM_THREADS" in env:
        assert out[3] == "3"


def test_env_simd_level_the_cpu_lacks_warns(tmp_path):
    # Levels above the detected one are not compiled or not run by this CPU.
    simd = embtable.show_config(mode="dicts")["simd"]
    detected = simd["detected"]
    levels = ["baseline", "avx2", "avx512"]
    # (The test build that emulates avx512 through SIMDe runs it on any AVX2 CPU.)
    above = [
        lv
        for lv in levels[levels.index(detected) + 1 :]
        if lv not in simd.get("emulated", [])
    ]
    if not above:
        pytest.skip("this build and CPU run every SIMD level")
    out, err = _import_with(tmp_path, EMBTABLE_SIMD=above[-1])
    assert out[1] == detected
    assert f"EMBTABLE_SIMD={above[-1]!r} is not a level this build and CPU run" in err
    assert f"using {detected!r}" in err


def test_bad_jax_backend_warns(tmp_path):
    pytest.importorskip("jax")
    code = "import embtable.jax as j; print(j.BACKEND, j._HAVE_FFI)"
    env = dict(os.environ, EMBTABLE_JAX_BACKEND="bogus", EMBTABLE_TUNE="0")
    r = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    backend, have_ffi = r.stdout.split()
    assert backend == ("ffi" if have_ffi == "True" else "callback")
    assert "EMBTABLE_JAX_BACKEND='bogus' is not 'ffi' or 'callback'" in r.stderr
    assert f"using {backend!r}" in r.stderr
