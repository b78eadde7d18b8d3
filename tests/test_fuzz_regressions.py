"""Replays the kept fuzz inputs (tests/fuzz_corpus/<target>/*) through the fuzz
harness and its NumPy oracle, without a fuzzer: a fixed crash stays fixed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_harness as harness  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
CASES = sorted(
    p for p in CORPUS.glob("*/*") if p.is_file() and p.parent.name in harness.TARGETS
)


def test_corpus_is_not_empty():
    assert len(CASES) >= len(harness.TARGETS)


@pytest.mark.parametrize(
    "path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES]
)
def test_replay(path: Path):
    target = path.parent.name
    if not harness.available(target):
        pytest.skip(f"the installed embtable lacks what target {target!r} tests")
    harness.run(target, path.read_bytes())
