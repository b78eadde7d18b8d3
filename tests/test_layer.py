"""embtable.Embedding against NumPy (one_hot @ W, np.add.at) and torch.nn.Embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from embtable import Embedding, RowGrad, constraints, initializers, regularizers


def one_hot(ids, V):
    return np.eye(V)[np.asarray(ids).reshape(-1)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 4), (2, 3, 2)])
def test_forward_is_one_hot_matmul(dtype, shape):
    rng = np.random.default_rng(0)
    V, D = 11, 5
    layer = Embedding(V, D, dtype=dtype, seed=1)
    ids = rng.integers(0, V, size=shape)
    y = layer(ids)
    assert y.shape == ids.shape + (D,) and y.dtype == np.dtype(dtype)
    ref = (one_hot(ids, V) @ layer.embeddings.astype(np.float64)).reshape(
        ids.shape + (D,)
    )
    np.testing.assert_array_equal(y, ref.astype(dtype))
    np.testing.assert_array_equal(layer.forward(ids), y)


def test_embeddings_owned_contiguous():
    layer = Embedding(6, 3)
    t = layer.embeddings
    assert isinstance(t, np.ndarray) and t.flags.c_contiguous and t.flags.owndata
    assert t.shape == (6, 3) and t.dtype == np.float32
    assert np.all(np.abs(t) <= 0.05)
    assert layer.count_params() == 18
    assert layer.compute_output_shape((None, 4)) == (None, 4, 3)


def test_float_ids():
    layer = Embedding(10, 2, seed=0)
    np.testing.assert_array_equal(layer(np.array([1.0, 3.0])), layer.embeddings[[1, 3]])
    np.testing.assert_array_equal(layer([[2.0]]), layer.embeddings[[[2]]])
    with pytest.raises(TypeError, match="whole"):
        layer(np.array([1.5]))
    with pytest.raises(TypeError):
        layer(np.array([np.nan]))
    with pytest.raises(IndexError, match="index 10 at position"):
        layer(np.array([1.0, 10.0]))
    assert layer([]).shape == (0, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_backward(dtype):
    rng = np.random.default_rng(2)
    V, D = 9, 4
    layer = Embedding(V, D, dtype=dtype)
    ids = rng.integers(0, V, size=(5, 6))
    layer(ids)
    g = rng.standard_normal((5, 6, D)).astype(dtype)
    grad = layer.backward(g)
    assert grad is layer.grad and grad.shape == (V, D)
    ref = np.zeros((V, D), dtype)
    np.add.at(ref, ids, g)
    np.testing.assert_array_equal(grad, ref)
    oh = one_hot(ids, V)
    np.testing.assert_allclose(grad, oh.T @ g.reshape(-1, D), rtol=1e-5, atol=1e-5)
    # A second backward accumulates into the same array.
    again = layer.backward(g)
    assert again is grad
    np.add.at(ref, ids, g)
    np.testing.assert_array_equal(grad, ref)


def test_dense_grad_buffer_reused():
    layer = Embedding(5, 2)
    layer([1, 2])
    first = layer.backward(np.ones((2, 2)))
    layer.zero_grad()
    assert layer.grad is None
    layer([3])
    second = layer.backward(np.ones((1, 2)))
    assert second is first  # the (V, D) buffer is reused, zeroed
    np.testing.assert_array_equal(second, np.eye(5)[3][:, None] * np.ones((1, 2)))


@pytest.mark.parametrize("padding_idx", [None, 0, 3])
def test_sparse_backward_equals_dense(padding_idx):
    rng = np.random.default_rng(3)
    V, D = 12, 3
    dense = Embedding(V, D, seed=4, padding_idx=padding_idx)
    sparse = Embedding(V, D, seed=4, padding_idx=padding_idx, sparse=True)
    np.testing.assert_array_equal(dense.embeddings, sparse.embeddings)
    for _ in range(2):  # two backwards: the RowGrad merges
        ids = rng.integers(0, V, size=(4, 5))
        g = rng.standard_normal((4, 5, D)).astype(np.float32)
        dense(ids)
        sparse(ids)
        gd = dense.backward(g)
        gs = sparse.backward(g)
    assert isinstance(gs, RowGrad) and gs is sparse.grad
    assert gs.indices.dtype == np.int64
    assert np.all(np.diff(gs.indices) > 0)
    nz = np.flatnonzero(np.any(gd != 0, axis=1))
    assert set(nz) <= set(gs.indices.tolist())
    np.testing.assert_allclose(gs.to_dense(V), gd, rtol=1e-6, atol=1e-6)
    if padding_idx is not None:
        assert padding_idx not in gs.indices
        assert np.all(gd[padding_idx] == 0)


def test_backward_errors():
    layer = Embedding(5, 2)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((1, 2)))
    layer([[1, 2]])
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(1, 2, 2\)"):
        layer.backward(np.ones((2, 2)))


def test_padding_idx_init_and_weights():
    layer = Embedding(5, 3, padding_idx=2, seed=0)
    assert np.all(layer.embeddings[2] == 0) and np.any(layer.embeddings[1] != 0)
    w = np.arange(15, dtype=np.float32).reshape(5, 3)
    layer = Embedding(5, 3, padding_idx=2, weights=[w])
    np.testing.assert_array_equal(layer.embeddings, w)
    assert layer.embeddings is not w
    layer2 = Embedding(5, 3, weights=w)
    np.testing.assert_array_equal(layer2.embeddings, w)


def renorm_ref(table, ids, max_norm, p):
    for r in np.unique(ids):
        n = np.linalg.norm(table[r].astype(np.float64), ord=p)
        if n > max_norm:
            table[r] = (table[r] * (max_norm / (n + 1e-7))).astype(table.dtype)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, np.inf])
def test_max_norm_numpy(p):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    layer = Embedding(8, 4, weights=w, max_norm=1.0, norm_type=p)
    ids = np.array([[1, 2, 1], [6, 6, 0]])
    y = layer(ids)
    ref = w.copy()
    renorm_ref(ref, ids, 1.0, p)
    np.testing.assert_allclose(layer.embeddings, ref, rtol=1e-6)
    np.testing.assert_array_equal(y, layer.embeddings[ids])
    untouched = [3, 4, 5, 7]
    np.testing.assert_array_equal(layer.embeddings[untouched], w[untouched])


def test_max_norm_bad_id_leaves_table():
    w = np.full((4, 2), 10.0, np.float32)
    layer = Embedding(4, 2, weights=w, max_norm=1.0)
    with pytest.raises(IndexError, match="index 4 at position \\(1,\\)"):
        layer([0, 4])
    np.testing.assert_array_equal(layer.embeddings, w)
    with pytest.raises(IndexError):
        layer([-1])
    np.testing.assert_array_equal(layer.embeddings, w)


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    V, D = 20, 6
    w = (rng.standard_normal((V, D)) * 2).astype(np.float32)
    ids = rng.integers(0, V, size=(4, 7))
    ids[0, :3] = 3
    g = rng.standard_normal((4, 7, D)).astype(np.float32)
    for sparse in (False, True):
        t = torch.nn.Embedding.from_pretrained(
            torch.tensor(w), freeze=False, padding_idx=3, max_norm=1.5, sparse=sparse
        )
        layer = Embedding(V, D, weights=w, padding_idx=3, max_norm=1.5, sparse=sparse)
        yt = t(torch.tensor(ids))
        y = layer(ids)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            layer.embeddings, t.weight.detach().numpy(), rtol=1e-6, atol=1e-7
        )
        yt.backward(torch.tensor(g))
        grad = layer.backward(g)
        tg = t.weight.grad.to_dense().numpy() if sparse else t.weight.grad.numpy()
        dense = grad.to_dense(V) if sparse else grad
        np.testing.assert_allclose(dense, tg, rtol=1e-5, atol=1e-6)


def test_mask():
    layer = Embedding(5, 2, mask_zero=True)
    np.testing.assert_array_equal(
        layer.compute_mask([[0, 1], [2, 0]]), [[False, True], [True, False]]
    )
    assert Embedding(5, 2).compute_mask([0, 1]) is None
    # As Keras, the mask does not stop gradient reaching row 0.
    layer([0, 0])
    assert np.all(layer.backward(np.ones((2, 2)))[0] == 2)


def test_losses():
    w = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    layer = Embedding(
        4, 3, weights=w, embeddings_regularizer="l2", activity_regularizer="l1"
    )
    ids = np.array([[1, 2], [3, 3], [0, 1]])
    y = layer(ids)
    l_table, l_act = layer.losses
    assert isinstance(l_table, float) and isinstance(l_act, float)
    assert l_table == pytest.approx(0.01 * float(np.sum(w.astype(np.float64) ** 2)))
    assert l_act == pytest.approx(0.01 * float(np.abs(y).sum()) / 3)
    layer(2)  # 0-d ids: batch size 1
    assert layer.losses[1] == pytest.approx(0.01 * float(np.abs(w[2]).sum()))
    assert Embedding(4, 3).losses == []
    r = regularizers.get("l1_l2")
    assert (r.l1, r.l2) == (0.01, 0.01)


@pytest.mark.parametrize("name", ["l1", "l2", "l1_l2"])
def test_table_penalty_takes_no_table_sized_scratch(name):
    # The embeddings regularizer runs over the whole table at every call: in
    # slices, never as a (V, D) float64 temporary (twice a float32 table).
    import tracemalloc

    rng = np.random.default_rng(3)
    V, D = 65_536, 128  # 32 MiB
    w = rng.standard_normal((V, D), dtype=np.float32)
    layer = Embedding(V, D, weights=w, embeddings_regularizer=name)
    ids = rng.integers(0, V, 16)
    tracemalloc.start()
    try:
        layer(ids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < w.nbytes // 4, peak
    w64 = w.astype(np.float64)
    r = layer.embeddings_regularizer
    expected = r.l1 * np.abs(w64).sum() + r.l2 * np.square(w64).sum()
    assert layer.losses[0] == pytest.approx(expected, rel=1e-12)
    assert regularizers.L1L2(l1=0.5)(np.array([-2.0])) == 1.0


@pytest.mark.parametrize(
    "name",
    [
        "uniform",
        "random_uniform",
        "normal",
        "random_normal",
        "truncated_normal",
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "he_normal",
        "lecun_uniform",
        "lecun_normal",
        "zeros",
        "ones",
        "constant",
        "orthogonal",
        "GlorotUniform",
    ],
)
def test_initializers_seeded(name):
    a = Embedding(30, 8, embeddings_initializer=name, seed=7)
    b = Embedding(30, 8, embeddings_initializer=name, seed=7)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.embeddings.dtype == np.float32 and a.embeddings.flags.c_contiguous


def test_initializer_statistics():
    t = initializers.get("uniform", seed=0)((200, 100), "float64")
    assert t.min() >= -0.05 and t.max() < 0.05 and abs(t.mean()) < 0.002
    t = initializers.get("normal", seed=0)((200, 100), "float64")
    assert abs(t.std() - 0.05) < 0.002
    t = initializers.TruncatedNormal(stddev=1.0, seed=0)((200, 100))
    assert np.abs(t).max() <= 2.0
    t = initializers.GlorotUniform(seed=0)((200, 100))
    assert np.abs(t).max() <= np.sqrt(6 / 300)
    assert np.all(initializers.get("ones")((2, 2)) == 1)
    q = initializers.Orthogonal(seed=0)((8, 5), "float64")
    np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-12)
    c = Embedding(3, 2, embeddings_initializer=lambda shape, dtype: np.full(shape, 7.0))
    assert np.all(c.embeddings == 7)
    unseeded = [Embedding(5, 4).embeddings for _ in range(2)]
    assert not np.array_equal(*unseeded)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_dim=0, output_dim=2),
        dict(input_dim=3, output_dim=-1),
        dict(input_dim=2.5, output_dim=2),
        dict(input_dim=3, output_dim=2, padding_idx=3),
        dict(input_dim=3, output_dim=2, padding_idx=-1),
        dict(input_dim=3, output_dim=2, max_norm=0),
        dict(input_dim=3, output_dim=2, norm_type=0),
        dict(input_dim=3, output_dim=2, dtype="float16"),
        dict(input_dim=3, output_dim=2, dtype="int32"),
        dict(input_dim=3, output_dim=2, weights=np.zeros((2, 2))),
        dict(input_dim=3, output_dim=2, embeddings_initializer="nope"),
        dict(input_dim=3, output_dim=2, embeddings_regularizer="l3"),
        dict(input_dim=3, output_dim=2, embeddings_constraint="big"),
    ],
)
def test_bad_constructor_args(kwargs):
    with pytest.raises(ValueError):
        Embedding(**kwargs)


def custom_init(shape, dtype=None):
    return np.full(shape, 0.25, dtype=dtype)


def test_config_round_trip():
    layer = Embedding(
        7,
        3,
        embeddings_initializer=initializers.RandomNormal(stddev=0.1, seed=3),
        embeddings_regularizer="l1_l2",
        activity_regularizer=regularizers.L2(0.5),
        embeddings_constraint=constraints.MaxNorm(3.0, axis=1),
        mask_zero=True,
        input_length=4,
        dtype="float64",
        seed=9,
        name="emb",
        trainable=False,
        padding_idx=1,
        max_norm=2.0,
        norm_type=1.0,
        sparse=True,
    )
    cfg = layer.get_config()
    text = json.dumps(cfg)
    for key in (
        "input_dim",
        "output_dim",
        "embeddings_initializer",
        "embeddings_regularizer",
        "activity_regularizer",
        "embeddings_constraint",
        "mask_zero",
        "input_length",
        "name",
        "trainable",
        "dtype",
    ):
        assert key in cfg
    assert cfg["embeddings_initializer"] == {
        "class_name": "RandomNormal",
        "config": {"mean": 0.0, "stddev": 0.1, "seed": 3},
    }
    assert cfg["embeddings_constraint"]["class_name"] == "MaxNorm"
    clone = Embedding.from_config(json.loads(text))
    assert clone.get_config() == cfg
    np.testing.assert_array_equal(
        clone.embeddings, layer.embeddings
    )  # seeded initializer
    assert clone.activity_regularizer == regularizers.L2(0.5)
    # Another callable by qualified name, rebuilt through custom_objects.
    custom = Embedding(4, 2, embeddings_initializer=custom_init)
    cfg = custom.get_config()
    assert cfg["embeddings_initializer"].endswith("custom_init")
    json.dumps(cfg)
    with pytest.raises(ValueError):
        Embedding.from_config(cfg)
    rebuilt = Embedding.from_config(cfg, custom_objects={"custom_init": custom_init})
    assert np.all(rebuilt.embeddings == 0.25)


@pytest.mark.parametrize("as_path", [False, True])
@pytest.mark.parametrize("suffix", ["", ".npz"])
def test_save_load(tmp_path, as_path, suffix):
    layer = Embedding(6, 3, seed=2, padding_idx=0, sparse=True, name="words")
    layer.embeddings[1] = 9
    target = tmp_path / f"emb{suffix}"
    written = layer.save(target if as_path else str(target))
    assert Path(written) == tmp_path / "emb.npz" and Path(written).exists()
    with np.load(written, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["embeddings"], layer.embeddings)
        json.loads(str(data["config"]))
    for p in (target, str(target), tmp_path / "emb.npz"):
        back = Embedding.load(p)
        np.testing.assert_array_equal(back.embeddings, layer.embeddings)
        assert back.get_config() == layer.get_config()


def test_save_other_suffix(tmp_path):
    layer = Embedding(3, 2)
    written = layer.save(tmp_path / "model.bin")
    assert written.name == "model.bin.npz"
    np.testing.assert_array_equal(
        Embedding.load(tmp_path / "model.bin").embeddings, layer.embeddings
    )


def test_weights_api():
    layer = Embedding(4, 2)
    w = layer.get_weights()
    assert len(w) == 1 and w[0] is not layer.embeddings
    table = layer.embeddings
    layer.set_weights([np.ones((4, 2))])
    assert layer.embeddings is table and np.all(table == 1)
    with pytest.raises(ValueError, match="shape"):
        layer.set_weights([np.ones((3, 2))])


def test_bad_ids():
    layer = Embedding(5, 2)
    with pytest.raises(IndexError, match="index 5 at position \\(0, 1\\)"):
        layer([[0, 5]])
    with pytest.raises(TypeError):
        layer(np.array(["a"]))
    np.testing.assert_array_equal(
        layer(np.array([1, 2], dtype=np.uint8)), layer.embeddings[[1, 2]]
    )


def test_sparse_never_allocates_dense_grad():
    layer = Embedding(1000, 4, sparse=True)
    layer([[1, 2], [2, 999]])
    g = layer.backward(np.ones((2, 2, 4)))
    assert layer._grad_buffer is None
    assert g.values.shape == (3, 4)
    layer.zero_grad()
    assert layer.grad is None


def test_serialize_round_trips():
    for init in (
        initializers.RandomUniform(-1, 1, seed=2),
        initializers.GlorotNormal(seed=1),
        initializers.Constant(3.0),
        initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=0),
    ):
        cfg = initializers.serialize(init)
        json.dumps(cfg)
        back = initializers.deserialize(cfg)
        assert back == init
        np.testing.assert_array_equal(back((4, 3)), init((4, 3)))
    for reg in (
        regularizers.L1(0.2),
        regularizers.L2(0.3),
        regularizers.L1L2(0.1, 0.2),
    ):
        assert regularizers.deserialize(regularizers.serialize(reg)) == reg
    for con in (
        constraints.MaxNorm(3, axis=1),
        constraints.UnitNorm(),
        constraints.NonNeg(),
        constraints.MinMaxNorm(0.1, 2.0, 0.5),
    ):
        assert constraints.deserialize(constraints.serialize(con)) == con
    assert initializers.get("glorot_uniform", seed=3).seed == 3
    with pytest.raises(ValueError):
        initializers.deserialize({"class_name": "Nope", "config": {}})


def test_optimizer_config_round_trip():
    from embtable import optimizers

    for opt in (
        optimizers.SGD(0.1, 0.9, True),
        optimizers.Adagrad(0.2, 0.3, 1e-5),
        optimizers.RMSprop(0.01, 0.8, 0.1, 1e-6, True),
        optimizers.Adam(0.1, 0.8, 0.9, 1e-4),
    ):
        cfg = opt.get_config()
        json.dumps(cfg)
        back = optimizers.get(cfg)
        assert type(back) is type(opt) and back.get_config() == cfg
        assert repr(back).startswith(type(opt).__name__)


def test_repr_and_name():
    layer = Embedding(3, 2, padding_idx=0, name="tok")
    assert "Embedding(3, 2" in repr(layer) and "padding_idx=0" in repr(layer)
    assert Embedding(3, 2).name.startswith("embedding")
    assert layer.dtype == "float32" and layer.input_dim == 3 and layer.output_dim == 2


def test_from_keras3_config():
    # What keras.layers.Embedding(100, 8, embeddings_regularizer="l2").get_config()
    # looks like in Keras 3.
    cfg = {
        "name": "embedding",
        "trainable": True,
        "dtype": {
            "module": "keras",
            "class_name": "DTypePolicy",
            "config": {"name": "float32"},
            "registered_name": None,
        },
        "input_dim": 100,
        "output_dim": 8,
        "embeddings_initializer": {
            "module": "keras.initializers",
            "class_name": "RandomUniform",
            "config": {"seed": None, "minval": -0.05, "maxval": 0.05},
            "registered_name": None,
        },
        "embeddings_regularizer": {
            "module": "keras.regularizers",
            "class_name": "L2",
            "config": {"l2": 0.01},
            "registered_name": None,
        },
        "activity_regularizer": None,
        "embeddings_constraint": None,
        "mask_zero": False,
        "lora_rank": None,
    }
    layer = Embedding.from_config(cfg)
    assert layer.embeddings.shape == (100, 8) and layer.dtype == "float32"
    assert layer.embeddings_regularizer == regularizers.L2(0.01)
    with pytest.raises(TypeError):
        Embedding.from_config({**cfg, "lora_rank": 4})


def test_input_length_output_shape_as_keras2():
    # Keras 2: input_length fills the unknown sizes after the batch dimension, and a
    # known size or a rank that disagrees is a ValueError.
    layer = Embedding(100, 8, input_length=10)
    assert layer.compute_output_shape((None, None)) == (None, 10, 8)
    assert layer.compute_output_shape((32, 10)) == (32, 10, 8)
    assert layer.compute_output_shape([None, 10]) == (None, 10, 8)
    for shape in [(None, 7), (None,), (None, 10, 3), ()]:
        with pytest.raises(ValueError, match="input_length is 10"):
            layer.compute_output_shape(shape)
    layer = Embedding(100, 8, input_length=[None, 5])
    assert layer.compute_output_shape((4, 3, None)) == (4, 3, 5, 8)
    with pytest.raises(ValueError, match=r"input_length is \[None, 5\]"):
        layer.compute_output_shape((4, 3, 6))
    assert Embedding(100, 8).compute_output_shape((None, 7, 2)) == (None, 7, 2, 8)


def _keras2_config(**changes):
    # What tf.keras 2.x Embedding(100, 8, input_length=10).get_config() returns, with
    # ``changes`` (a value of ``...`` removes the key).
    cfg = {
        "name": "embedding",
        "trainable": True,
        "batch_input_shape": [None, 10],
        "dtype": "float32",
        "input_dim": 100,
        "output_dim": 8,
        "embeddings_initializer": {
            "class_name": "RandomUniform",
            "config": {"minval": -0.05, "maxval": 0.05, "seed": None},
        },
        "embeddings_regularizer": None,
        "activity_regularizer": None,
        "embeddings_constraint": None,
        "mask_zero": False,
        "input_length": 10,
    }
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if v is not ...}


def test_from_keras2_config():
    layer = Embedding.from_config(_keras2_config())
    assert layer.embeddings.shape == (100, 8) and layer.input_length == 10
    assert layer.compute_output_shape((None, None)) == (None, 10, 8)
    assert "batch_input_shape" not in layer.get_config()
    # Keras 2 without input_length writes batch_input_shape [None, None].
    cfg = _keras2_config(batch_input_shape=[None, None], input_length=None)
    assert Embedding.from_config(cfg).input_length is None
    # batch_input_shape alone gives input_length; a batch size is not kept.
    for shape, length in [
        ([None, 10], 10),
        ([32, 10], 10),
        ([None, None], None),
        ([None], None),
        ([None, 4, 5], [4, 5]),
        ([None, None, 5], [None, 5]),
        ([None, [4, 5]], [4, 5]),  # Keras 2 nests a list input_length so
        (None, None),
        ([], None),
    ]:
        cfg = _keras2_config(batch_input_shape=shape, input_length=...)
        assert Embedding.from_config(cfg).input_length == length, shape
    # An input_length and a batch_input_shape that agree: input_length is kept.
    cfg = _keras2_config(batch_input_shape=[None, None], input_length=10)
    assert Embedding.from_config(cfg).input_length == 10
    cfg = _keras2_config(batch_input_shape=[None, [None, 5]], input_length=[4, None])
    assert Embedding.from_config(cfg).input_length == [4, None]
    for shape, length in [
        ([None, 7], 10),
        ([None, 10, 3], 10),
        ([None], 10),
        ([None, 4, 5], [4, 6]),
    ]:
        cfg = _keras2_config(batch_input_shape=shape, input_length=length)
        with pytest.raises(ValueError, match="disagrees with input_length"):
            Embedding.from_config(cfg)
    for shape in (10, "x"):
        with pytest.raises(ValueError, match="batch_input_shape must be a list"):
            Embedding.from_config(_keras2_config(batch_input_shape=shape))


@pytest.mark.parametrize("sparse", [False, True])
def test_empty_and_scalar_ids(sparse):
    from embtable import optimizers

    layer = Embedding(4, 3, sparse=sparse, seed=0)
    w = layer.embeddings.copy()
    out = layer(np.zeros((2, 0), np.int32))
    assert out.shape == (2, 0, 3)
    grad = layer.backward(np.zeros((2, 0, 3)))
    if sparse:
        assert len(grad) == 0 and grad.values.shape == (0, 3)
    else:
        assert not grad.any()
    optimizers.Adam().step(layer)
    if sparse:
        np.testing.assert_array_equal(layer.embeddings, w)  # an empty RowGrad: no step
    layer.zero_grad()
    out = layer(np.int64(2))
    np.testing.assert_array_equal(out, layer.embeddings[2])
    grad = layer.backward(np.ones(3))
    dense = grad.to_dense(4) if sparse else grad
    np.testing.assert_array_equal(dense, np.outer(np.arange(4) == 2, np.ones(3)))


def test_single_row_table_and_int32_ids():
    layer = Embedding(1, 1, dtype="float64", sparse=True)
    ids = np.zeros((3, 2), np.int32)
    layer(ids)
    g = layer.backward(np.ones((3, 2, 1)))
    assert g.indices.tolist() == [0] and g.values.tolist() == [[6.0]]


@pytest.mark.parametrize(
    "init", ["uniform", "normal", "truncated_normal", "glorot_uniform", "zeros"]
)
def test_construction_does_not_copy_the_initial_table(init):
    # embtable's own initializers return a new array: the layer adopts it (peak
    # memory one table, not two); the values are the initializer's.
    import tracemalloc

    V, D = 65_536, 128  # 32 MiB
    tracemalloc.start()
    try:
        layer = Embedding(V, D, embeddings_initializer=init, seed=7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nbytes = layer.embeddings.nbytes
    assert peak < nbytes + nbytes // 2, peak
    expected = initializers.get(init, 7)((V, D), "float32")
    np.testing.assert_array_equal(layer.embeddings, expected)
    assert layer.embeddings.flags.c_contiguous and layer.embeddings.flags.writeable


def test_custom_initializer_output_is_copied():
    # A callable of one's own may return an array it keeps: the layer copies it.
    held = np.ones((4, 3), np.float32)
    layer = Embedding(4, 3, embeddings_initializer=lambda shape, dtype: held)
    assert not np.shares_memory(layer.embeddings, held)
    layer.embeddings[0] = 5
    assert held[0, 0] == 1


@pytest.mark.parametrize(
    "class_name, config",
    [
        ("GlorotNormal", {"seed": None, "input_axes": None, "output_axes": None}),
        ("HeUniform", {"seed": 3, "input_axes": None, "output_axes": None}),
        (
            "VarianceScaling",
            {
                "seed": None,
                "scale": 2.0,
                "mode": "fan_out",
                "distribution": "uniform",
                "input_axes": None,
                "output_axes": None,
            },
        ),
    ],
)
def test_from_keras315_variance_scaling_config(class_name, config):
    # Keras 3.15 writes input_axes / output_axes into every VarianceScaling family
    # initializer's config (None unless set).
    cfg = {
        "name": "embedding",
        "input_dim": 40,
        "output_dim": 6,
        "embeddings_initializer": {
            "module": "keras.initializers",
            "class_name": class_name,
            "config": config,
            "registered_name": None,
        },
    }
    layer = Embedding.from_config(cfg)
    assert type(layer.embeddings_initializer).__name__ == class_name
    assert layer.embeddings.shape == (40, 6)


def test_variance_scaling_input_output_axes():
    # As Keras 3.15: with both given, fan_in and fan_out are the products of the
    # sizes along those axes; with one missing, the default fans.
    shape = (300, 40)
    swapped = initializers.HeUniform(seed=0, input_axes=[1], output_axes=[0])
    assert np.abs(swapped(shape)).max() > np.sqrt(6 / 300)  # fan_in = 40
    assert np.abs(swapped(shape)).max() <= np.sqrt(6 / 40)
    both = initializers.VarianceScaling(
        1.0, "fan_in", "uniform", seed=0, input_axes=[0, 1], output_axes=[1]
    )
    assert np.abs(both(shape)).max() <= np.sqrt(3 / 12000)
    one = initializers.HeUniform(seed=0, input_axes=[1])
    np.testing.assert_array_equal(one(shape), initializers.HeUniform(seed=0)(shape))
    cfg = swapped.get_config()
    assert cfg == {"seed": 0, "input_axes": [1], "output_axes": [0]}
    assert initializers.deserialize(initializers.serialize(swapped)) == swapped
    # Unset axes stay out of the config (older Keras has no such arguments).
    assert initializers.GlorotUniform().get_config() == {"seed": None}
    with pytest.raises(ValueError, match="input_axes"):
        initializers.GlorotUniform(input_axes="ab", output_axes=[0])


@pytest.mark.parametrize("shape", [(5, 5), (7, 3), (2, 6)])
def test_identity_initializer_as_keras(shape):
    # keras.initializers.Identity(gain): gain * eye(V, D); by name "identity".
    layer = Embedding(*shape, embeddings_initializer="identity", dtype="float64")
    np.testing.assert_array_equal(layer.embeddings, np.eye(*shape))
    init = initializers.Identity(gain=2.5)
    np.testing.assert_array_equal(init(shape, "float32"), 2.5 * np.eye(*shape))
    assert init(shape).dtype == np.float32
    for class_name in ("Identity", "IdentityInitializer"):
        cfg = {
            "input_dim": shape[0],
            "output_dim": shape[1],
            "embeddings_initializer": {
                "module": "keras.initializers",
                "class_name": class_name,
                "config": {"gain": 2.5},
                "registered_name": None,
            },
        }
        layer = Embedding.from_config(cfg)
        np.testing.assert_array_equal(layer.embeddings, 2.5 * np.eye(*shape))
        assert layer.get_config()["embeddings_initializer"] == {
            "class_name": "Identity",
            "config": {"gain": 2.5},
        }
    with pytest.raises(ValueError, match="2-D"):
        init((3,))


def test_from_keras3_config_seed_generator():
    # keras.initializers.RandomNormal(seed=keras.random.SeedGenerator(3)) in a
    # Keras 3 layer config: the seed is the generator's serialized form.
    def cfg(seed):
        return {
            "input_dim": 20,
            "output_dim": 4,
            "embeddings_initializer": {
                "module": "keras.initializers",
                "class_name": "RandomNormal",
                "config": {"seed": seed, "mean": 0.0, "stddev": 0.05},
                "registered_name": None,
            },
        }

    generator = {
        "module": "keras.random",
        "class_name": "SeedGenerator",
        "config": {"seed": 3, "name": "seed_generator"},
        "registered_name": None,
    }
    layer = Embedding.from_config(cfg(generator))
    assert layer.embeddings_initializer == initializers.RandomNormal(seed=3)
    np.testing.assert_array_equal(
        layer.embeddings, Embedding.from_config(cfg(3)).embeddings
    )
    with pytest.raises(ValueError, match="seed"):
        Embedding.from_config(cfg({"class_name": "Other", "config": {}}))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_from_keras3_config_mixed_precision_policy(policy):
    # keras.layers.Embedding(10, 4, dtype="mixed_float16").get_config(): Keras keeps
    # the table in float32 (the policy's variable dtype).
    dtype = {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": policy},
        "registered_name": None,
    }
    for entry in (dtype, policy):
        layer = Embedding.from_config(
            {"input_dim": 10, "output_dim": 4, "dtype": entry}
        )
        assert layer.dtype == "float32" and layer.embeddings.dtype == np.float32
    with pytest.raises(ValueError, match="float16"):
        Embedding.from_config({"input_dim": 10, "output_dim": 4, "dtype": "float16"})
