"""The bench CLI's plumbing (no timing here: the report is built from fixed numbers)."""

from __future__ import annotations

import subprocess
import sys

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


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--repeats", "0"], ["--bogus"]])
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
