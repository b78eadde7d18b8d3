"""Leaks: 10,000 calls of each function on the success path and on every error
path leave the process RSS within 1 MiB and the inputs' reference counts unchanged."""

from __future__ import annotations

import gc
import os
import sys

import embtable
import numpy as np
import pytest

CALLS = 10_000
RSS_SLACK = 1 << 20  # bytes
SANITIZED = bool(embtable.show_config(mode="dicts")["build"].get("sanitize"))

rng = np.random.default_rng(0)
TABLE = rng.standard_normal((50, 8)).astype(np.float32)
IDX = rng.integers(0, 50, size=(6, 5))
IDX32 = IDX.astype(np.int32)
BAD = IDX.copy()
BAD[3, 2] = 50
UPD = np.ones(IDX.shape + (8,), dtype=np.float32)
UPD64 = UPD.astype(np.float64)
OFFS = np.array([0, 4, 4, 17], dtype=np.int64)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _target() -> np.ndarray:
    return np.zeros((50, 8), dtype=np.float32)


TGT = _target()
OUT = np.empty(IDX.shape + (8,), dtype=np.float32)
RO = _target()
RO.flags.writeable = False
NONCONTIG = np.zeros((50, 16), dtype=np.float32)[:, ::2]

# (name, call, expected exception or None, the input objects whose refcounts must not move)
CASES = [
    ("gather", lambda: embtable.gather(TABLE, IDX), None, (TABLE, IDX)),
    (
        "gather int32 out",
        lambda: embtable.gather(TABLE, IDX32, out=OUT),
        None,
        (TABLE, IDX32, OUT),
    ),
    ("gather list", lambda: embtable.gather(TABLE, [1, 2, 3]), None, (TABLE,)),
    ("gather bad index", lambda: embtable.gather(TABLE, BAD), IndexError, (TABLE, BAD)),
    (
        "gather float index",
        lambda: embtable.gather(TABLE, UPD),
        TypeError,
        (TABLE, UPD),
    ),
    ("gather int table", lambda: embtable.gather(IDX, IDX), TypeError, (IDX,)),
    (
        "gather bad out",
        lambda: embtable.gather(TABLE, IDX, out=TGT),
        ValueError,
        (TABLE, IDX, TGT),
    ),
    ("scatter_add", lambda: embtable.scatter_add(TGT, IDX, UPD), None, (TGT, IDX, UPD)),
    (
        "scatter_add det",
        lambda: embtable.scatter_add(TGT, IDX32, UPD, deterministic=True),
        None,
        (TGT, IDX32, UPD),
    ),
    (
        "scatter_add bad index",
        lambda: embtable.scatter_add(TGT, BAD, UPD),
        IndexError,
        (TGT, BAD, UPD),
    ),
    (
        "scatter_add dtype",
        lambda: embtable.scatter_add(TGT, IDX, UPD64),
        TypeError,
        (TGT, IDX, UPD64),
    ),
    (
        "scatter_add shape",
        lambda: embtable.scatter_add(TGT, IDX32, UPD[:2]),
        ValueError,
        (TGT, IDX32, UPD),
    ),
    (
        "scatter_add read-only",
        lambda: embtable.scatter_add(RO, IDX, UPD),
        ValueError,
        (RO, IDX, UPD),
    ),
    (
        "scatter_add non-contiguous",
        lambda: embtable.scatter_add(NONCONTIG, IDX, UPD),
        ValueError,
        (NONCONTIG, IDX, UPD),
    ),
]
if hasattr(embtable, "embedding_bag"):
    FLAT = IDX.reshape(-1)
    W = np.ones(FLAT.shape, dtype=np.float32)
    CASES += [
        (
            "embedding_bag",
            lambda: embtable.embedding_bag(
                TABLE, FLAT, OFFS, mode="sum", per_sample_weights=W
            ),
            None,
            (TABLE, FLAT, OFFS, W),
        ),
        (
            "embedding_bag 2-D max",
            lambda: embtable.embedding_bag(TABLE, IDX, mode="max", padding_idx=3),
            None,
            (TABLE, IDX),
        ),
        (
            "embedding_bag bad index",
            lambda: embtable.embedding_bag(TABLE, BAD),
            IndexError,
            (TABLE, BAD),
        ),
        (
            "embedding_bag bad offsets",
            lambda: embtable.embedding_bag(TABLE, FLAT, OFFS[::-1]),
            ValueError,
            (TABLE, FLAT, OFFS),
        ),
        (
            "embedding_bag weights+mean",
            lambda: embtable.embedding_bag(
                TABLE, FLAT, OFFS, mode="mean", per_sample_weights=W
            ),
            ValueError,
            (TABLE, FLAT, W),
        ),
    ]

if hasattr(embtable, "Embedding"):
    LAYER = embtable.Embedding(50, 8, seed=0)
    SPARSE = embtable.Embedding(50, 8, seed=0, sparse=True)
    GRAD = np.ones(IDX.shape + (8,), dtype=np.float32)

    def _layer_step(layer):
        layer(IDX)
        layer.backward(GRAD)
        layer.zero_grad()

    CASES += [
        ("Embedding forward+backward", lambda: _layer_step(LAYER), None, (IDX, GRAD)),
        (
            "Embedding sparse forward+backward",
            lambda: _layer_step(SPARSE),
            None,
            (IDX, GRAD),
        ),
        ("Embedding bad index", lambda: LAYER(BAD), IndexError, (BAD,)),
    ]


def _call_many(call, expected, n: int) -> None:
    if expected is None:
        for _ in range(n):
            call()
    else:
        for _ in range(n):
            try:
                call()
            except expected:
                pass
            else:
                raise AssertionError(f"expected {expected.__name__}")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_no_leak(case):
    _, call, expected, inputs = case
    _call_many(call, expected, 500)  # warm up: caches, the pool, NumPy's allocator
    gc.collect()
    refs = [sys.getrefcount(x) for x in inputs]
    rss = _rss()
    _call_many(call, expected, CALLS)
    gc.collect()
    growth = _rss() - rss
    assert [sys.getrefcount(x) for x in inputs] == refs, (
        "an input's reference count changed"
    )
    if not SANITIZED:  # ASan's quarantine holds freed memory on purpose
        assert growth < RSS_SLACK, f"RSS grew by {growth} bytes over {CALLS} calls"
