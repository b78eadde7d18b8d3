"""scatter_add against np.add.at, one benchmark group per case.

python -m pytest bench/test_bench_scatter_add.py --benchmark-group-by=group
"""

from __future__ import annotations

import embtable
import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")


@pytest.mark.parametrize(
    "deterministic", [False, True], ids=["atomic", "deterministic"]
)
def test_embtable_scatter_add(benchmark, inputs, deterministic):
    case, table, ids, updates, _ = inputs
    target = np.zeros_like(table)
    benchmark.group = f"scatter_add {case}"
    benchmark(embtable.scatter_add, target, ids, updates, deterministic=deterministic)


def test_numpy_add_at(benchmark, inputs):
    case, table, ids, updates, _ = inputs
    target = np.zeros_like(table)
    benchmark.group = f"scatter_add {case}"
    benchmark.pedantic(np.add.at, (target, ids, updates), rounds=3, iterations=1)


def test_copy_limit(benchmark, inputs):
    case, _, _, updates, out = inputs
    benchmark.group = f"scatter_add {case}"
    benchmark(np.copyto, out, updates)
