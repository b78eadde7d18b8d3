"""Optimizers against Keras 3's formulas in NumPy, and torch's SparseAdam / Adam."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import Embedding, RowGrad, constraints, optimizers


class KerasRef:
    """Keras 3 update_step, in the variable's dtype, state for all rows (dense)."""

    def __init__(self, kind, shape, dtype, **hp):
        self.kind, self.hp, self.t = kind, hp, 0
        z = lambda: np.zeros(shape, dtype)  # noqa: E731
        self.s1, self.s2, self.s3 = z(), z(), z()
        if kind == "adagrad":
            self.s1[...] = hp.get("initial_accumulator_value", 0.1)
        self.dt = np.dtype(dtype).type

    def step(self, w, g, rows=None):
        """Update w in place; rows: only these rows (lazy), g is then (U, D)."""
        sel = slice(None) if rows is None else rows
        W, S1, S2, S3 = w[sel], self.s1[sel], self.s2[sel], self.s3[sel]
        dt, hp = self.dt, self.hp
        lr = dt(hp["learning_rate"])
        self.t += 1
        if self.kind == "sgd":
            mom = dt(hp.get("momentum", 0.0))
            if mom == 0:
                W = W - g * lr
            else:
                S1 = S1 * mom - g * lr
                W = W + (S1 * mom - g * lr if hp.get("nesterov") else S1)
        elif self.kind == "adagrad":
            S1 = S1 + g * g
            W = W - (lr * g) / np.sqrt(S1 + dt(hp["epsilon"]))
        elif self.kind == "rmsprop":
            rho = dt(hp["rho"])
            S1 = rho * S1 + dt(1 - hp["rho"]) * (g * g)
            if hp["centered"]:
                S3 = rho * S3 + dt(1 - hp["rho"]) * g
                den = S1 - S3 * S3 + dt(hp["epsilon"])
            else:
                den = S1 + dt(hp["epsilon"])
            inc = (lr * g) / np.sqrt(den)
            if hp["momentum"] > 0:
                S2 = dt(hp["momentum"]) * S2 + inc
                W = W - S2
            else:
                W = W - inc
        else:
            t = dt(self.t)
            b1p = np.power(dt(hp["beta_1"]), t)
            b2p = np.power(dt(hp["beta_2"]), t)
            alpha = lr * np.sqrt(dt(1) - b2p) / (dt(1) - b1p)
            S1 = S1 + (g - S1) * dt(1 - hp["beta_1"])
            S2 = S2 + (g * g - S2) * dt(1 - hp["beta_2"])
            W = W - (S1 * alpha) / (np.sqrt(S2) + dt(hp["epsilon"]))
        w[sel], self.s1[sel], self.s2[sel], self.s3[sel] = W, S1, S2, S3


CASES = [
    ("sgd", optimizers.SGD, dict(learning_rate=0.1)),
    ("sgd", optimizers.SGD, dict(learning_rate=0.1, momentum=0.9)),
    ("sgd", optimizers.SGD, dict(learning_rate=0.1, momentum=0.5, nesterov=True)),
    (
        "adagrad",
        optimizers.Adagrad,
        dict(learning_rate=0.05, initial_accumulator_value=0.1, epsilon=1e-7),
    ),
    (
        "rmsprop",
        optimizers.RMSprop,
        dict(learning_rate=0.01, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False),
    ),
    (
        "rmsprop",
        optimizers.RMSprop,
        dict(learning_rate=0.01, rho=0.8, momentum=0.7, epsilon=1e-7, centered=True),
    ),
    (
        "adam",
        optimizers.Adam,
        dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
    ),
    (
        "adam",
        optimizers.Adam,
        dict(learning_rate=0.003, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind,cls,hp", CASES)
def test_dense_matches_keras(kind, cls, hp, dtype):
    rng = np.random.default_rng(0)
    V, D = 13, 5
    layer = Embedding(V, D, dtype=dtype, seed=0)
    ref_w = layer.embeddings.copy()
    ref = KerasRef(kind, (V, D), dtype, **hp)
    opt = cls(**hp)
    for _ in range(4):
        ids = rng.integers(0, V, size=(6, 2))
        layer(ids)
        g = rng.standard_normal((6, 2, D)).astype(dtype)
        grad = layer.backward(g)
        ref.step(ref_w, grad.copy())
        opt.step(layer)
        assert layer.grad is grad  # left for the caller
        layer.zero_grad()
        tol = 2e-6 if dtype == "float32" else 1e-13
        np.testing.assert_allclose(layer.embeddings, ref_w, rtol=tol, atol=tol)
    assert opt.iterations(layer) == 4


@pytest.mark.parametrize("kind,cls,hp", CASES)
def test_lazy_updates_only_touched_rows(kind, cls, hp):
    rng = np.random.default_rng(1)
    V, D = 40, 4
    layer = Embedding(V, D, seed=0, sparse=True)
    ref_w = layer.embeddings.copy()
    ref = KerasRef(kind, (V, D), "float32", **hp)
    opt = cls(**hp)
    for step in range(3):
        ids = rng.integers(0, 20, size=(8,))  # rows >= 20 never touched
        before = layer.embeddings.copy()
        state_before = {
            k: v.copy() for k, v in opt.state(layer).items() if k != "iterations"
        }
        layer(ids)
        grad = layer.backward(rng.standard_normal((8, D)).astype(np.float32))
        assert isinstance(grad, RowGrad)
        ref.step(ref_w, grad.values.copy(), rows=grad.indices)
        opt.step(layer)
        layer.zero_grad()
        np.testing.assert_allclose(layer.embeddings, ref_w, rtol=2e-6, atol=2e-7)
        untouched = np.setdiff1d(np.arange(V), grad.indices)
        # Untouched rows and their state: bit-for-bit unchanged.
        assert layer.embeddings[untouched].tobytes() == before[untouched].tobytes()
        for k, v in opt.state(layer).items():
            if k != "iterations" and step > 0:
                assert v[untouched].tobytes() == state_before[k][untouched].tobytes()


def test_sparse_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    V, D = 30, 6
    w = rng.standard_normal((V, D)).astype(np.float32)
    layer = Embedding(V, D, weights=w, sparse=True)
    t = torch.nn.Embedding.from_pretrained(torch.tensor(w), freeze=False, sparse=True)
    opt = optimizers.Adam(learning_rate=0.01, epsilon=1e-8)
    topt = torch.optim.SparseAdam(t.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        ids = rng.integers(0, 15, size=(4, 3))
        g = rng.standard_normal((4, 3, D)).astype(np.float32)
        layer(ids)
        layer.backward(g)
        opt.step(layer)
        layer.zero_grad()
        topt.zero_grad()
        t(torch.tensor(ids)).backward(torch.tensor(g))
        topt.step()
        np.testing.assert_allclose(
            layer.embeddings, t.weight.detach().numpy(), rtol=1e-5, atol=1e-6
        )


def test_dense_adam_matches_torch_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    V, D = 10, 3
    w = rng.standard_normal((V, D)).astype(np.float32)
    layer = Embedding(V, D, weights=w)
    t = torch.nn.Embedding.from_pretrained(torch.tensor(w), freeze=False)
    opt = optimizers.Adam(learning_rate=0.02, epsilon=1e-8)
    topt = torch.optim.Adam(t.parameters(), lr=0.02, eps=1e-8)
    for _ in range(4):
        ids = rng.integers(0, V, size=(7,))
        g = rng.standard_normal((7, D)).astype(np.float32)
        layer(ids)
        layer.backward(g)
        opt.step(layer)
        layer.zero_grad()
        topt.zero_grad()
        t(torch.tensor(ids)).backward(torch.tensor(g))
        topt.step()
    np.testing.assert_allclose(
        layer.embeddings, t.weight.detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_noops_and_state_per_layer():
    a = Embedding(5, 2, seed=0)
    b = Embedding(5, 2, seed=0, sparse=True)
    opt = optimizers.Adam()
    w = a.embeddings.copy()
    opt.step(a)  # grad None
    assert np.array_equal(a.embeddings, w) and opt.iterations(a) == 0
    b._grad = RowGrad(np.zeros(0, np.int64), np.zeros((0, 2), np.float32))
    opt.step(b)  # empty RowGrad
    assert opt.iterations(b) == 0
    frozen = Embedding(5, 2, seed=0, trainable=False)
    frozen([1])
    frozen.backward(np.ones((1, 2)))
    opt.step(frozen)
    np.testing.assert_array_equal(frozen.embeddings, w)
    a([1])
    a.backward(np.ones((1, 2)))
    opt.step(a)
    opt.step(a)
    b([1])
    b.backward(np.ones((1, 2)))
    opt.step(b)
    assert opt.iterations(a) == 2 and opt.iterations(b) == 1


def test_get_by_name():
    for name, cls in [
        ("sgd", optimizers.SGD),
        ("adagrad", optimizers.Adagrad),
        ("rmsprop", optimizers.RMSprop),
        ("adam", optimizers.Adam),
        ("Adam", optimizers.Adam),
        ("RMSprop", optimizers.RMSprop),
        ("SGD", optimizers.SGD),
    ]:
        assert type(optimizers.get(name)) is cls
    for bad in ("adamw", "", None, 3):
        with pytest.raises(ValueError):
            optimizers.get(bad)
    o = optimizers.get("adam")
    assert (o.learning_rate, o.beta_1, o.beta_2, o.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    o = optimizers.get("rmsprop")
    assert (o.learning_rate, o.rho, o.momentum, o.epsilon, o.centered) == (
        0.001,
        0.9,
        0.0,
        1e-7,
        False,
    )
    o = optimizers.get("adagrad")
    assert (o.learning_rate, o.initial_accumulator_value, o.epsilon) == (
        0.001,
        0.1,
        1e-7,
    )
    assert optimizers.get("sgd").learning_rate == 0.01
    assert optimizers.get(o) is o
    with pytest.raises(ValueError):
        optimizers.SGD(momentum=1.5)


def test_constraint_after_dense_step_whole_table():
    w = np.full((4, 2), 0.5, np.float32)
    layer = Embedding(
        4, 2, weights=w, embeddings_constraint="max_norm"
    )  # axis=0: columns
    layer([0])
    layer.backward(np.array([[-10.0, -10.0]]))
    optimizers.SGD(learning_rate=1.0).step(layer)
    norms = np.linalg.norm(layer.embeddings, axis=0)
    np.testing.assert_allclose(norms, 2.0, rtol=1e-5)


def test_rowwise_constraint_after_lazy_step_touches_only_rows():
    w = np.full((5, 2), -1.0, np.float32)
    layer = Embedding(5, 2, weights=w, sparse=True, embeddings_constraint="non_neg")
    layer([1, 3])
    layer.backward(np.full((2, 2), -0.5))
    optimizers.SGD(learning_rate=1.0).step(layer)
    np.testing.assert_array_equal(layer.embeddings[[1, 3]], 0)
    np.testing.assert_array_equal(
        layer.embeddings[[0, 2, 4]], -1
    )  # untouched rows keep values
    c = constraints.UnitNorm(axis=1)
    layer = Embedding(
        5, 2, weights=np.full((5, 2), 3.0), sparse=True, embeddings_constraint=c
    )
    layer([2])
    layer.backward(np.ones((1, 2)))
    optimizers.SGD().step(layer)
    np.testing.assert_allclose(np.linalg.norm(layer.embeddings[2]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(layer.embeddings[[0, 1, 3, 4]], 3.0)
    # axis=0 acts across rows: the whole table after a lazy step too.
    layer = Embedding(
        5,
        2,
        weights=np.full((5, 2), 3.0),
        sparse=True,
        embeddings_constraint=constraints.UnitNorm(),
    )
    layer([2])
    layer.backward(np.zeros((1, 2)))
    optimizers.SGD().step(layer)
    np.testing.assert_allclose(np.linalg.norm(layer.embeddings, axis=0), 1.0, rtol=1e-6)


def test_keras_constraint_formulas():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 3))
    n0 = np.sqrt(np.sum(w**2, axis=0, keepdims=True))
    np.testing.assert_allclose(
        constraints.MaxNorm(1.0)(w), w * np.clip(n0, 0, 1) / (1e-7 + n0)
    )
    np.testing.assert_allclose(constraints.UnitNorm()(w), w / (1e-7 + n0))
    np.testing.assert_allclose(constraints.NonNeg()(w), np.where(w >= 0, w, 0))
    mm = constraints.MinMaxNorm(0.5, 1.5, rate=0.5)(w)
    desired = 0.5 * np.clip(n0, 0.5, 1.5) + 0.5 * n0
    np.testing.assert_allclose(mm, w * desired / (1e-7 + n0))
    for name, cls in [
        ("max_norm", constraints.MaxNorm),
        ("unit_norm", constraints.UnitNorm),
        ("non_neg", constraints.NonNeg),
        ("min_max_norm", constraints.MinMaxNorm),
    ]:
        assert type(constraints.get(name)) is cls
    assert constraints.get("max_norm").axis == 0


def test_lazy_step_validates_rows():
    layer = Embedding(5, 2, sparse=True)
    layer._grad = RowGrad(np.array([1, 7]), np.ones((2, 2), np.float32))
    w = layer.embeddings.copy()
    with pytest.raises(IndexError):
        optimizers.Adam().step(layer)
    np.testing.assert_array_equal(layer.embeddings, w)


def test_threads_do_not_change_result():
    rng = np.random.default_rng(5)
    V, D = 3000, 64
    ids = rng.integers(0, V, size=5000)
    g = rng.standard_normal((5000, D)).astype(np.float32)
    results = []
    for n in (1, 2):
        embtable.set_num_threads(n)
        for sparse in (False, True):
            layer = Embedding(V, D, seed=0, sparse=sparse)
            opt = optimizers.Adam()
            layer(ids)
            layer.backward(g)
            opt.step(layer)
            results.append(layer.embeddings)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize(
    "constraint",
    [
        "max_norm",
        "unit_norm",
        "non_neg",
        constraints.MinMaxNorm(0.5, 1.5, rate=0.5),
        constraints.MaxNorm(1.0, axis=1),
    ],
    ids=["max_norm", "unit_norm", "non_neg", "min_max_norm", "max_norm_rows"],
)
@pytest.mark.parametrize("sparse", [False, True])
def test_constraint_on_whole_table_takes_no_table_sized_scratch(constraint, sparse):
    # A step applies the constraint to the whole table (a dense step; an across-row
    # one after a lazy step too) in place, slice by slice: bit for bit the
    # constraint's value on the whole table, with no (V, D) temporary per step.
    import tracemalloc

    rng = np.random.default_rng(5)
    V, D = 65_536, 128  # 32 MiB
    w = rng.standard_normal((V, D), dtype=np.float32)
    ids = rng.integers(0, V, 64)
    layer = Embedding(V, D, weights=w, sparse=sparse, embeddings_constraint=constraint)
    plain = Embedding(V, D, weights=w, sparse=sparse)
    for lay in (layer, plain):
        lay(ids)
        lay.backward(np.ones((64, D), np.float32))
    optimizers.SGD(0.5).step(plain)
    c = layer.embeddings_constraint
    if sparse and c.rowwise:
        rows = np.unique(ids)
        expected = plain.embeddings.copy()
        expected[rows] = c(expected[rows])
    else:
        expected = c(plain.embeddings)
    opt = optimizers.SGD(0.5)
    tracemalloc.start()
    try:
        opt.step(layer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(layer.embeddings, expected)
    assert peak < layer.embeddings.nbytes // 4, peak


@pytest.mark.parametrize("D", [1, 2, 3, 17])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_to_table_equals_the_constraint_bitwise(D, dtype):
    # Over many slices of rows, every built-in constraint (both axes) gives
    # exactly table[...] = constraint(table).
    rng = np.random.default_rng(D)
    V = 3 * (constraints._BLOCK_BYTES // (D * np.dtype(dtype).itemsize)) + 5
    w = (rng.standard_normal((V, D)) * 3).astype(dtype)
    for c in [
        constraints.MaxNorm(1.0),
        constraints.UnitNorm(),
        constraints.MinMaxNorm(0.5, 1.5, rate=0.5),
        constraints.MaxNorm(2.0, axis=1),
        constraints.UnitNorm(axis=-1),
        constraints.NonNeg(),
    ]:
        got = w.copy()
        constraints.apply_to_table(c, got)
        np.testing.assert_array_equal(got, c(w))


def test_get_keras3_optimizer_config():
    # keras.optimizers.serialize(keras.optimizers.Adam(beta_1=0.8)) in Keras 3.15;
    # its learning_rate is the float32 variable's value.
    keras_only = {
        "weight_decay": None,
        "clipnorm": None,
        "global_clipnorm": None,
        "clipvalue": None,
        "use_ema": False,
        "ema_momentum": 0.99,
        "ema_overwrite_frequency": None,
        "loss_scale_factor": None,
        "gradient_accumulation_steps": None,
    }
    cfg = {
        "module": "keras.optimizers",
        "class_name": "Adam",
        "config": {
            "name": "adam_1",
            "learning_rate": 0.0010000000474974513,
            **keras_only,
            "beta_1": 0.8,
            "beta_2": 0.999,
            "epsilon": 1e-07,
            "amsgrad": False,
        },
        "registered_name": None,
    }
    o = optimizers.get(cfg)
    assert type(o) is optimizers.Adam
    assert (o.learning_rate, o.beta_1, o.beta_2, o.epsilon) == (
        0.0010000000474974513,
        0.8,
        0.999,
        1e-7,
    )
    # Its get_config() form (the name picks the class).
    sgd = {"name": "sgd", "learning_rate": 0.1, **keras_only, "momentum": 0.5}
    sgd["nesterov"] = True
    assert (
        optimizers.get(sgd).get_config()
        == optimizers.SGD(0.1, 0.5, nesterov=True).get_config()
    )
    rms = {
        **cfg,
        "class_name": "RMSprop",
        "config": {"learning_rate": 0.01, "rho": 0.8},
    }
    assert (
        optimizers.get(rms).get_config() == optimizers.RMSprop(0.01, 0.8).get_config()
    )
    # What embtable does not do is refused, not ignored.
    for key, value in [
        ("weight_decay", 0.004),
        ("clipnorm", 1.0),
        ("use_ema", True),
        ("amsgrad", True),
        ("gradient_accumulation_steps", 2),
    ]:
        bad = {**cfg, "config": {**cfg["config"], key: value}}
        with pytest.raises(ValueError, match=key):
            optimizers.get(bad)
    with pytest.raises(ValueError):
        optimizers.get({**cfg, "class_name": "AdamW"})


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", {}),
        ("SGD", dict(learning_rate=0.03, momentum=0.9)),
        ("SGD", dict(momentum=0.5, nesterov=True)),
        ("Adagrad", {}),
        (
            "Adagrad",
            dict(learning_rate=0.05, initial_accumulator_value=0.0, epsilon=1e-3),
        ),
        ("RMSprop", {}),
        ("RMSprop", dict(rho=0.8, momentum=0.7, centered=True, epsilon=1e-4)),
        ("Adam", {}),
        ("Adam", dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-4)),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 vs Keras' __array__
def test_dense_steps_bitwise_equal_real_keras(name, kwargs):
    # The oracle is Keras 3 itself (float32; its learning rate is a float32 variable).
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    t0 = rng.standard_normal((37, 19)).astype(np.float32)
    layer = Embedding(37, 19, weights=t0)
    opt = getattr(optimizers, name)(**kwargs)
    var = keras.Variable(t0.copy(), dtype="float32")
    kopt = getattr(keras.optimizers, name)(**kwargs)
    for _ in range(5):
        g = (rng.standard_normal(t0.shape) * 3).astype(np.float32)
        layer.zero_grad()
        layer._accumulate_grad(g)
        opt.step(layer)
        kopt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    np.testing.assert_array_equal(layer.embeddings, np.asarray(var.numpy()))
