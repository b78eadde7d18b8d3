"""The fused optimizers, RowGrad building, bags and sgns give the same bits at every
SIMD level.

Each compiled level the CPU runs is forced with ``_core.set_simd_level`` and its
result compared byte for byte with the baseline level's on the same inputs, at 1
and 2 threads, on row sizes that hit the vector bodies and their remainders.
"""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import _core
from simd_levels import LEVELS

FLOATS = [np.float32, np.float64]


def at_every_level(fn):
    """{level: fn()} for every runnable level, at 1 and 2 threads (both must agree)."""
    saved_level = _core.get_simd_level()
    saved_threads = embtable.get_num_threads()
    out = {}
    try:
        for level in LEVELS:
            _core.set_simd_level(level)
            runs = []
            for threads in (1, 2):
                embtable.set_num_threads(threads)
                runs.append(fn())
            for a, b in zip(runs[0], runs[1], strict=True):
                assert a.tobytes() == b.tobytes(), f"{level}: 1 vs 2 threads"
            out[level] = runs[0]
    finally:
        _core.set_simd_level(saved_level)
        embtable.set_num_threads(saved_threads)
    return out


def assert_same_bits(results: dict) -> None:
    base = results["baseline"]
    for level, res in results.items():
        for k, (a, b) in enumerate(zip(base, res, strict=True)):
            assert a.dtype == b.dtype and a.shape == b.shape
            if a.tobytes() != b.tobytes():
                bad = np.flatnonzero(a.ravel() != b.ravel())
                raise AssertionError(
                    f"{level} differs from baseline in output {k} at {bad[:5]}"
                )


# (kind, hyper-parameters, states used): every loop of optim_step.
VARIANTS = [
    ("sgd", dict(), 0),
    ("sgd", dict(momentum=0.9), 1),
    ("sgd", dict(momentum=0.5, nesterov=True), 1),
    ("adagrad", dict(epsilon=1e-7), 1),
    ("rmsprop", dict(rho=0.9, epsilon=1e-7), 1),
    ("rmsprop", dict(rho=0.8, momentum=0.7, epsilon=1e-7), 2),
    ("rmsprop", dict(rho=0.8, centered=True, epsilon=1e-3), 3),
    ("rmsprop", dict(rho=0.8, momentum=0.7, centered=True, epsilon=1e-3), 3),
    ("adam", dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=3), 2),
    ("adam", dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3, step=1), 2),
]


def _numpy_step(kind, hp, w, g, s, dt):
    """The formulas of optim.hpp in NumPy, in the table's dtype (rows already taken)."""
    lr = dt(0.01)
    mom = dt(hp.get("momentum", 0.0))
    eps = dt(hp.get("epsilon", 1e-7))
    if kind == "sgd":
        if hp.get("momentum", 0.0) == 0:
            return w - g * lr, s
        m = s[0] * mom - g * lr
        return w + (m * mom - g * lr if hp.get("nesterov") else m), [m]
    if kind == "adagrad":
        a = s[0] + g * g
        return w - (lr * g) / np.sqrt(a + eps), [a]
    if kind == "rmsprop":
        rho, omr = dt(hp["rho"]), dt(1.0 - hp["rho"])
        v = rho * s[0] + omr * (g * g)
        new = [v, None, None]
        if hp.get("centered"):
            mg = rho * s[2] + omr * g
            new[2] = mg
            den = v - mg * mg + eps
        else:
            den = v + eps
        inc = (lr * g) / np.sqrt(den)
        if hp.get("momentum", 0.0) > 0:
            m = mom * s[1] + inc
            new[1] = m
            return w - m, new
        return w - inc, new
    t = dt(hp["step"])
    b1p, b2p = np.power(dt(hp["beta_1"]), t), np.power(dt(hp["beta_2"]), t)
    alpha = lr * np.sqrt(dt(1) - b2p) / (dt(1) - b1p)
    m = s[0] + (g - s[0]) * dt(1.0 - hp["beta_1"])
    v = s[1] + (g * g - s[1]) * dt(1.0 - hp["beta_2"])
    return w - (m * alpha) / (np.sqrt(v) + eps), [m, v]


@pytest.mark.parametrize("lazy", [False, True], ids=["dense", "lazy"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("D", [1, 3, 16, 17, 64, 100])
@pytest.mark.parametrize(("kind", "hp", "n_states"), VARIANTS)
def test_optimizer_bits_at_every_level(kind, hp, n_states, D, dtype, lazy) -> None:
    rng = np.random.default_rng(D * 7 + n_states)
    V = 3_000
    table = rng.standard_normal((V, D)).astype(dtype)
    # States as after a few steps: positive accumulators, signed momenta.
    states = [np.abs(rng.standard_normal((V, D))).astype(dtype) for _ in range(2)]
    states.append((0.1 * rng.standard_normal((V, D))).astype(dtype))
    states[0] += 1  # centered RMSprop: v - mg * mg stays positive
    states[1][:, ::2] *= -1 if kind == "sgd" else 1
    if lazy:
        rows = np.unique(rng.integers(0, V, V // 2)).astype(np.int64)
        grad = rng.standard_normal((rows.size, D)).astype(dtype)
    else:
        rows = None
        grad = rng.standard_normal((V, D)).astype(dtype)
    used = {
        0: [],
        1: [0],
        2: [0, 1],
        3: [0, 1, 2] if hp.get("momentum", 0.0) > 0 else [0, 2],
    }[n_states]

    def run():
        w = table.copy()
        st = [states[k].copy() if k in used else None for k in range(3)]
        _core.optim_step(kind, w, rows, grad, st, learning_rate=0.01, **hp)
        return [w] + [s for s in st if s is not None]

    results = at_every_level(run)
    assert_same_bits(results)
    # And the formulas themselves, in NumPy (the same operations in the same order).
    sel = slice(None) if rows is None else rows
    s_in = [states[k][sel] if k in used else None for k in range(3)]
    w_ref, s_ref = _numpy_step(kind, hp, table[sel], grad, s_in, np.dtype(dtype).type)
    got = results["baseline"]
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got[0][sel], w_ref, rtol=tol, atol=tol)
    refs = [s for s in s_ref if s is not None]
    for a, b in zip(got[1:], refs, strict=True):
        np.testing.assert_allclose(a[sel], b, rtol=tol, atol=tol)
    if rows is not None:
        untouched = np.setdiff1d(np.arange(V), rows)
        assert got[0][untouched].tobytes() == table[untouched].tobytes()
