"""Shared fixtures: every test restores the thread count and SIMD level it changes."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import _core


@pytest.fixture(autouse=True)
def _restore_threads():
    n = embtable.get_num_threads()
    level = _core.get_simd_level()
    yield
    embtable.set_num_threads(n)
    _core.set_simd_level(level)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


FLOATS = [np.float32, np.float64]
INDEX_DTYPES = [
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
]
