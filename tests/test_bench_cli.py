"""The bench CLI's plumbing (no timing here: the report is built from fixed numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from embtable import _bench
from embtable._bench import Case, Result


def _results() -> list[Result]:
    c = Case(V=10_000, D=64, N=262_144, dist="uniform", threads=2)
    nbytes = c.N * c.D * 4

    def r(op: str, method: str, ms: float) -> Result:
        return Result(op, method, c, ms, nbytes / (ms * 1e-3) / 1e9)

    return [
        r("copy", "parallel copy", 4.0),
        r("copy", "np.copyto", 8.0),
        r("gather", "embtable", 2.0),
        r("gather", "embtable sorted ids", 1.9),
        r("gather", "np.take(out=)", 20.0),
        r("gather", "fancy", 10.0),
        r("gather", "numba", 3.0),
        r("scatter_add", "embtable", 5.0),
        r("scatter_add", "embtable det", 6.0),
        r("scatter_add", "np.add.at", 200.0),
        r("scatter_add", "numba", 4.0),
    ]


def test_tables_show_ratios_and_goals() -> None:
    text = _bench.format_tables(_results())
    assert "| 10000 | 64 | 262144 | uniform | 2 | 2.000 |" in text
    assert "| 10.00 | 5.00 | 1.50 |" in text  # np.take, fancy, numba ratios
    assert "| 5.000 | 6.000 | 1.20 |" in text  # atomic, det, det/atomic
    assert "| 40.00 | 0.80 |" in text  # np.add.at and numba ratios
    assert "gather vs np.take(out=): worst 10.00 (goal >= 4) met" in text
    assert "scatter_add vs fastest peer: worst 0.80 (goal >= 1) MISSED" in text


def test_zipf_ids_are_in_range() -> None:
    import numpy as np

    ids = _bench.make_ids(1_000, 50_000, "zipf", np.random.default_rng(0))
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 1_000
    # Hot rows: the most frequent id takes far more than a uniform share.
    assert np.bincount(ids).max() > 20 * 50_000 / 1_000


@pytest.mark.parametrize(
    "argv", [["--threads", "0"], ["--repeats", "0"], ["--bogus"], ["--peer-spin", "x"]]
)
def test_bad_arguments_exit_before_timing(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _bench.main(argv)
    assert exc.value.code == 2


def test_module_entry_point() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "embtable", "--help"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "bench" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "embtable", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown command" in bad.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "embtable", "bench", "--help"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "--quick" in helped.stdout


def test_geomeans_and_behind_list() -> None:
    text = _bench.format_tables(_results())
    assert "### geometric means" in text
    # numba 3.0 ms vs embtable 2.0 for gather; 4.0 vs 5.0 for scatter_add.
    assert "| gather | 262,144 | 2 | 1 | 10.00x | 1.50x | - | 1.50x |" in text
    assert "| scatter_add | 262,144 | 2 | 1 | 40.00x | 0.80x | - | 0.80x |" in text
    assert "cases where embtable is behind (ratio < 1.0x): 1" in text
    assert (
        "| scatter_add | 10000 | 64 | 262144 | uniform | 2 | numba | 0.80x | - |"
        in text
    )


def test_behind_list_shows_the_alternated_retiming() -> None:
    results = _results()
    mine = next(r for r in results if (r.op, r.method) == ("scatter_add", "embtable"))
    mine.extra["alternated"] = {"numba": (4.0, 5.0)}  # embtable 4.0 ms, numba 5.0
    text = _bench.format_tables(results)
    assert (
        "| scatter_add | 10000 | 64 | 262144 | uniform | 2 | numba | 0.80x | 1.25x |"
        in text
    )


def test_time_rotated_times_every_method() -> None:
    calls = {"a": 0, "b": 0, "c": 0}

    def bump(k: str):  # type: ignore[no-untyped-def]
        return lambda: calls.__setitem__(k, calls[k] + 1)

    out = _bench.time_rotated({k: bump(k) for k in calls}, rounds=3, sample_s=1e-5)
    assert set(out) == set(calls)
    assert all(v >= 0 for v in out.values())
    assert all(n >= 2 + 3 for n in calls.values())  # warm-up, probe, 3 rounds


def test_time_alternated_reverses_the_order_every_other_round() -> None:
    seq: list[str] = []
    fns = [lambda k=k: seq.append(k) for k in "abc"]
    out = _bench.time_alternated(*fns, rounds=4, sample_s=0.0)
    assert len(out) == 3 and all(v >= 0 for v in out)
    # warm-up a b c, probe a, then one call per batch
    assert "".join(seq) == "abc" + "a" + "abc" + "cba" + "abc" + "cba"


def _det_case(det_ms: float, again_ms: float, rotated_det_ms: float) -> str:
    c = Case(V=1_000, D=16, N=4_096, dist="zipf", threads=2)
    det = Result("scatter_add", "embtable det", c, rotated_det_ms, 1.0)
    det.extra["paired"] = (1.0, det_ms, again_ms)  # default, det, default again
    default = Result("scatter_add", "embtable", c, 1.0, 1.0)
    cases = {c: {("scatter_add", "embtable"): default,
                 ("scatter_add", "embtable det"): det}}  # fmt: skip
    return _bench.det_goal(cases)


def test_det_goal_compares_det_time_over_default_time() -> None:
    # deterministic=True twice as slow as the default: met (the old check
    # divided the other way round and reported the best cell as the worst).
    text = _det_case(2.0, 1.0, 2.0)
    assert "worst 2.00 (goal >= 1) met;" in text
    assert "in the shuffled rounds worst 2.00" in text
    # the default slower beyond the A/A noise: missed
    text = _det_case(0.5, 1.02, 0.9)
    assert "worst 0.50 (goal >= 1) MISSED" in text
    assert "(default 1000.0 us, det 500.0 us)" in text
    assert "default / default worst 0.98" in text
    assert "over all 1 cells geometric mean 0.50" in text
    assert "in the shuffled rounds worst 0.90" in text
    # slower by less than the default differs from itself: noise
    assert "met within the timing noise" in _det_case(0.97, 1.05, 1.0)
    assert "MISSED" in _det_case(0.94, 1.05, 1.0)


def test_loop_table_format() -> None:
    rows = [
        _bench.LoopRow(64, 4096, "embtable", 50.0, 45.0),
        _bench.LoopRow(64, 4096, "torch", 110.0, 83.0),
    ]
    text = _bench.format_loop(rows)
    assert "| 64 | 4,096 | embtable | 50.0 | 45.0 | 1.11 | 1.00x | - | - |" in text
    assert "| 64 | 4,096 | torch | 110.0 | 83.0 | 1.33 | 2.20x | - | - |" in text
    rows[0].pause_us = 49.5
    text = _bench.format_loop(rows)
    assert "| embtable | 50.0 | 45.0 | 1.11 | 1.00x | 49.5 | 1.10 |" in text
    assert "D=64 N=4,096: idle pause / back-to-back 1.10 (no goal" in text
    assert "D=64 N=4,096: loop / back-to-back 1.11 (goal <= 1.10) MISSED" in text


def test_loop_runs_a_tiny_case() -> None:
    rows = _bench.run_loop(
        ((8, 64),),
        V=1_000,
        threads=2,
        rounds=1,
        steps=2,
        work_ms=0.0,
        peers=_bench._Peers(use_torch=False, use_numba=False),
        progress=False,
    )
    assert [r.method for r in rows] == ["embtable", "embtable det"]
    assert all(r.D == 8 and r.N == 64 and r.loop_us > 0 and r.b2b_us > 0 for r in rows)
    assert all(r.pause_us == 0 for r in rows)  # no work, so no pause either


def _tiny_grid(progress: bool) -> list[Result]:
    return _bench.run_grid(
        [64],
        [4],
        [16],
        ["uniform"],
        [1],
        repeats=1,
        peers=_bench._Peers(use_torch=False, use_numba=False),
        with_sorted=False,
        progress=progress,
    )


def test_grid_progress_off_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert _tiny_grid(progress=False)
    assert capsys.readouterr().err == ""


def test_grid_progress_to_a_log_is_one_line_per_case(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _tiny_grid(progress=True)  # pytest's captured stderr is not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert (
        lines[0].startswith("[  0/1]") and "V=64 D=4 N=16 uniform threads=1" in lines[0]
    )
    assert lines[-1].startswith("[  1/1]") and lines[-1].endswith("done")


def test_loop_times_the_idle_pause() -> None:
    rows = _bench.run_loop(
        ((8, 64),),
        V=1_000,
        threads=1,
        rounds=2,
        steps=2,
        work_ms=0.05,
        peers=_bench._Peers(use_torch=False, use_numba=False),
        progress=False,
    )
    assert all(r.pause_us > 0 for r in rows)


def test_loop_with_peers_when_installed() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("numba")
    rows = _bench.run_loop(
        ((8, 64),), V=1_000, rounds=1, steps=1, work_ms=0.0, progress=False
    )
    assert {r.method for r in rows} == {"embtable", "embtable det", "torch", "numba"}


def test_bad_work_ms_exits_before_timing() -> None:
    with pytest.raises(SystemExit) as exc:
        _bench.main(["--loop", "--work-ms", "-1"])
    assert exc.value.code == 2


def test_loop_cli_plumbing(capsys: pytest.CaptureFixture[str]) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "embtable", "bench", "--help"],
        capture_output=True,
        text=True,
    ).stdout
    assert "--loop" in help_text and "--work-ms" in help_text


def test_peer_spin_short_sets_the_openmp_variables_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("KMP_BLOCKTIME", "7")  # the user's own value wins
    text = _bench.set_peer_spin("short")
    assert _bench.os.environ["GOMP_SPINCOUNT"] == _bench.PEER_SPIN["GOMP_SPINCOUNT"]
    assert _bench.os.environ["KMP_BLOCKTIME"] == "7"
    assert "short" in text and "KMP_BLOCKTIME=7" in text


def test_peer_spin_default_leaves_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("KMP_BLOCKTIME", raising=False)
    text = _bench.set_peer_spin("default")
    assert "GOMP_SPINCOUNT" not in _bench.os.environ
    assert "runtime default" in text
    with pytest.raises(ValueError, match="short"):
        _bench.set_peer_spin("sometimes")


def _no_timing(*args: object, **kwargs: object) -> None:
    raise AssertionError("timing ran before the argument error")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--json", "{tmp}/missing/r.json"], "no such directory"),
        (["--loop", "--json", "{tmp}/missing/r.json"], "no such directory"),
        (["--json", "{tmp}"], "is a directory"),
        (["--threads", "1", "100000"], "--threads must be >= 1 and <= "),
        (["--loop", "--threads", "100000"], "--threads must be >= 1 and <= "),
        (["--loop", "--work-ms", "nan"], "--work-ms must be a finite number >= 0"),
        (["--loop", "--work-ms", "inf"], "--work-ms must be a finite number >= 0"),
    ],
)
def test_argument_errors_come_before_timing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(_bench, "run_grid", _no_timing)
    monkeypatch.setattr(_bench, "run_loop", _no_timing)
    with pytest.raises(SystemExit) as exc:
        _bench.main(["--no-peers", *(a.format(tmp=tmp_path) for a in argv)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_threads_above_the_limit_is_a_usage_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "embtable", "bench", "--loop", "--threads", "100000"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--threads must be >= 1 and <= " in r.stderr


def test_loop_json_is_written_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [_bench.LoopRow(8, 64, "embtable", 5.0, 4.0)]
    monkeypatch.setattr(_bench, "run_loop", lambda *a, **k: rows)
    path = tmp_path / "r.json"
    path.write_text('{"old": "results"}')
    real_dump = json.dump

    def interrupted(obj: object, f: Any, **kwargs: Any) -> None:
        f.write('{"machine": "parti')
        raise KeyboardInterrupt

    argv = ["--loop", "--no-peers", "--repeats", "1", "--json", str(path)]
    monkeypatch.setattr(_bench.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _bench.main(argv)
    assert path.read_text() == '{"old": "results"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    monkeypatch.setattr(_bench.json, "dump", real_dump)
    assert _bench.main(argv) == 0
    assert json.loads(path.read_text())["loop"][0]["loop_us"] == 5.0
