"""gather against its NumPy baseline, one benchmark group per case.

python -m pytest bench/test_bench_gather.py --benchmark-group-by=group
"""

from __future__ import annotations

import embtable
import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")


def test_embtable_gather(benchmark, inputs):
    case, table, ids, _, out = inputs
    benchmark.group = f"gather {case}"
    res = benchmark(embtable.gather, table, ids, out=out)
    np.testing.assert_array_equal(res[:100], table[ids[:100]])


def test_numpy_take(benchmark, inputs):
    case, table, ids, _, out = inputs
    benchmark.group = f"gather {case}"
    benchmark(np.take, table, ids, axis=0, out=out)


def test_numpy_fancy_indexing(benchmark, inputs):
    case, table, ids, _, _ = inputs
    benchmark.group = f"gather {case}"
    benchmark(table.__getitem__, ids)


def test_copy_limit(benchmark, inputs):
    case, _, _, updates, out = inputs
    benchmark.group = f"gather {case}"
    benchmark(np.copyto, out, updates)
