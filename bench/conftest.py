"""Shared inputs of the pytest-benchmark suite (run: python -m pytest bench).

Not part of the default test run (pyproject's testpaths is ["tests"]).
"""

from __future__ import annotations

import numpy as np
import pytest

CASES = [
    # (V, D, N)
    (10_000, 16, 4_096),
    (10_000, 64, 262_144),
    (1_000_000, 16, 262_144),
    (1_000_000, 64, 262_144),
]


def case_id(case: tuple[int, int, int]) -> str:
    V, D, N = case
    return f"V{V}-D{D}-N{N}"


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def inputs(request: pytest.FixtureRequest):
    V, D, N = request.param
    rng = np.random.default_rng(0)
    table = rng.random((V, D), dtype=np.float32)
    ids = rng.integers(0, V, N, dtype=np.int64)
    updates = rng.random((N, D), dtype=np.float32)
    out = np.empty((N, D), np.float32)
    return case_id(request.param), table, ids, updates, out
