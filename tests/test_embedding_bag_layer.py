"""embtable.EmbeddingBag: the pooled layer, its gradients and optimizer steps."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import EmbeddingBag, RowGrad, optimizers

MODES = ["sum", "mean", "max"]


def ragged(rng, V, n_bags, max_len):
    sizes = rng.integers(0, max_len + 1, size=n_bags)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    ids = rng.integers(0, V, size=int(sizes.sum()))
    return ids, offsets


def test_constructor_and_defaults():
    bag = EmbeddingBag(50, 8, seed=1)
    assert bag.mode == "mean" and bag.embeddings.shape == (50, 8)
    assert bag.embeddings.dtype == np.float32 and bag.embeddings.flags.c_contiguous
    assert bag.num_embeddings == 50 and bag.embedding_dim == 8
    assert np.all(np.abs(bag.embeddings) <= 0.05)  # Keras "uniform"
    np.testing.assert_array_equal(
        EmbeddingBag(50, 8, seed=1).embeddings, bag.embeddings
    )
    assert bag.grad is None
    with pytest.raises(ValueError, match="mode must be"):
        EmbeddingBag(5, 2, mode="median")
    with pytest.raises(ValueError):
        EmbeddingBag(0, 2)
    with pytest.raises(ValueError, match="padding_idx"):
        EmbeddingBag(5, 2, padding_idx=5)
    # padding row zeroed from the initializer, not from weights=
    assert np.all(
        EmbeddingBag(5, 2, padding_idx=3, embeddings_initializer="ones").embeddings[3]
        == 0
    )
    w = np.ones((5, 2))
    np.testing.assert_array_equal(
        EmbeddingBag(5, 2, padding_idx=3, weights=w).embeddings, w
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_against_torch_module(dtype, mode, sparse, padding_idx):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    V, D = 30, 12
    table = rng.standard_normal((V, D)).astype(dtype)
    ids, offsets = ragged(rng, V, 40, 6)
    w = rng.standard_normal(ids.shape).astype(dtype) if mode == "sum" else None
    bag = EmbeddingBag(
        V,
        D,
        mode=mode,
        padding_idx=padding_idx,
        sparse=sparse,
        weights=table,
        dtype=dtype,
    )
    tb = torch.nn.EmbeddingBag.from_pretrained(
        torch.tensor(table),
        freeze=False,
        mode=mode,
        padding_idx=padding_idx,
        sparse=sparse and mode != "max",
    )  # torch: no sparse max
    t_w = None if w is None else torch.tensor(w, requires_grad=True)
    y = bag(ids, offsets, w)
    ty = tb(torch.from_numpy(ids), torch.from_numpy(offsets), per_sample_weights=t_w)
    tol = (
        dict(rtol=1e-5, atol=1e-5)
        if dtype == "float32"
        else dict(rtol=1e-12, atol=1e-12)
    )
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    grad = rng.standard_normal(y.shape).astype(dtype)
    g = bag.backward(grad)
    ty.backward(torch.from_numpy(grad))
    t_grad = tb.weight.grad.to_dense().numpy()
    if sparse:
        assert isinstance(g, RowGrad) and g is bag.grad
        np.testing.assert_allclose(g.to_dense(V), t_grad, **tol)
        if padding_idx is not None:
            assert padding_idx not in g.indices
    else:
        assert isinstance(g, np.ndarray) and g.shape == (V, D)
        np.testing.assert_allclose(g, t_grad, **tol)
    if w is not None:
        np.testing.assert_allclose(bag.per_sample_weights_grad, t_w.grad.numpy(), **tol)
    else:
        assert bag.per_sample_weights_grad is None


def test_max_rowgrad_lists_the_winners():
    table = np.array([[0, 9], [5, 0], [1, 1], [7, 7]], dtype=np.float32)
    bag = EmbeddingBag(4, 2, mode="max", sparse=True, weights=table)
    y = bag(np.array([[0, 1, 2], [2, 2, 2]]))
    np.testing.assert_array_equal(y, [[5, 9], [1, 1]])
    g = bag.backward(np.array([[1, 2], [3, 4]], dtype=np.float32))
    np.testing.assert_array_equal(
        g.indices, [0, 1, 2]
    )  # row 3 never looked up, row 0 won col 1
    np.testing.assert_array_equal(g.values, [[0, 2], [1, 0], [3, 4]])


def test_grad_accumulates_and_zero_grad():
    rng = np.random.default_rng(4)
    for sparse in (False, True):
        bag = EmbeddingBag(20, 4, mode="sum", sparse=sparse, seed=0)
        y = bag([[1, 2], [2, 3]])
        g1 = bag.backward(np.ones_like(y))
        if not sparse:
            first = g1.copy()
        y = bag([[2, 5]])
        g2 = bag.backward(2 * np.ones_like(y))
        dense = g2.to_dense(20) if sparse else g2
        np.testing.assert_array_equal(dense[2], 4 * np.ones(4))
        np.testing.assert_array_equal(dense[5], 2 * np.ones(4))
        np.testing.assert_array_equal(dense[1], np.ones(4))
        if not sparse:
            assert g2 is g1  # the same (V, D) buffer, accumulated
            np.testing.assert_array_equal(first[2], 2 * np.ones(4))
        bag.zero_grad()
        assert bag.grad is None
    del rng


@pytest.mark.parametrize("mode", MODES)
def test_sgd_step_matches_torch_and_sparse_equals_dense(mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    V, D = 40, 6
    table = rng.standard_normal((V, D)).astype(np.float32)
    ids, offsets = ragged(rng, V, 25, 5)
    grad = rng.standard_normal((25, D)).astype(np.float32)
    results = []
    for sparse in (False, True):
        bag = EmbeddingBag(V, D, mode=mode, sparse=sparse, weights=table, padding_idx=7)
        opt = optimizers.SGD(learning_rate=0.1)
        bag(ids, offsets)
        bag.backward(grad)
        opt.step(bag)
        results.append(bag.embeddings.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
    tb = torch.nn.EmbeddingBag.from_pretrained(
        torch.tensor(table), freeze=False, mode=mode, padding_idx=7
    )
    topt = torch.optim.SGD(tb.parameters(), lr=0.1)
    tb(torch.from_numpy(ids), torch.from_numpy(offsets)).backward(
        torch.from_numpy(grad)
    )
    topt.step()
    np.testing.assert_allclose(
        results[0], tb.weight.detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_adam_sparse_step_touches_only_the_bag_rows():
    rng = np.random.default_rng(6)
    bag = EmbeddingBag(100, 8, mode="mean", sparse=True, seed=2)
    before = bag.embeddings.copy()
    ids, offsets = np.array([3, 9, 9, 42]), np.array([0, 1])
    opt = optimizers.get("adam")
    for _ in range(3):
        y = bag(ids, offsets)
        bag.backward(rng.standard_normal(y.shape).astype(np.float32))
        opt.step(bag)
        bag.zero_grad()
    changed = np.flatnonzero(np.any(bag.embeddings != before, axis=1))
    np.testing.assert_array_equal(changed, [3, 9, 42])


def test_training_reduces_a_loss():
    # Fit pooled bags to targets with Adagrad: the loss must fall.
    rng = np.random.default_rng(7)
    V, D, B = 50, 4, 64
    ids = rng.integers(0, V, size=(B, 5))
    target = rng.standard_normal((B, D)).astype(np.float32)
    bag = EmbeddingBag(V, D, mode="sum", seed=3)
    opt = optimizers.Adagrad(learning_rate=0.5)
    losses = []
    for _ in range(30):
        y = bag(ids)
        diff = y - target
        losses.append(float(np.mean(diff**2)))
        bag.backward(2 * diff / diff.size)
        opt.step(bag)
        bag.zero_grad()
    assert losses[-1] < 0.5 * losses[0]


def test_max_norm_renorms_looked_up_rows_before_pooling():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    table = (3 * rng.standard_normal((20, 5))).astype(np.float32)
    ids, offsets = np.array([1, 2, 2, 7, 19]), np.array([0, 3])
    bag = EmbeddingBag(20, 5, mode="sum", max_norm=1.0, weights=table)
    tb = torch.nn.EmbeddingBag.from_pretrained(
        torch.tensor(table), freeze=False, mode="sum", max_norm=1.0
    )
    y = bag(ids, offsets)
    ty = tb(torch.from_numpy(ids), torch.from_numpy(offsets))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        bag.embeddings, tb.weight.detach().numpy(), rtol=1e-5, atol=1e-6
    )
    untouched = np.setdiff1d(np.arange(20), ids)
    np.testing.assert_array_equal(bag.embeddings[untouched], table[untouched])


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b(np.array([1, 2, 25]), np.array([0, 1])),  # id out of range
        lambda b: b(np.array([1, 2, 3]), np.array([0, 4])),  # offset past the end
        lambda b: b(np.array([1, 2, 3]), np.array([1, 2])),  # offsets[0] != 0
        lambda b: b(np.array([1, 2, 3]), np.array([0, 2, 1])),  # decreasing
        lambda b: b(np.array([1, 2, 3])),  # 1-D without offsets
        lambda b: b(
            np.array([1, 2, 3]), np.array([0]), np.ones(2)
        ),  # weights of the wrong shape
    ],
)
def test_bad_calls_leave_the_table_untouched(call):
    rng = np.random.default_rng(9)
    table = (3 * rng.standard_normal((20, 5))).astype(np.float32)
    bag = EmbeddingBag(20, 5, mode="sum", max_norm=1.0, weights=table)
    with pytest.raises((IndexError, ValueError)):
        call(bag)
    np.testing.assert_array_equal(bag.embeddings, table)


def test_errors_of_backward():
    bag = EmbeddingBag(10, 3)
    with pytest.raises(RuntimeError, match="forward"):
        bag.backward(np.ones((1, 3)))
    bag([[1, 2]])
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 3\)"):
        bag.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        bag([[1, 2]], per_sample_weights=[[1.0, 1.0]])


def test_float_ids_and_config_roundtrip(tmp_path):
    bag = EmbeddingBag(
        10, 3, mode="max", padding_idx=2, seed=5, include_last_offset=True
    )
    y = bag(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 3]))
    assert y.shape == (2, 3)
    with pytest.raises(TypeError):
        bag(np.array([1.5, 2.0]), np.array([0]))
    cfg = bag.get_config()
    assert (
        cfg["mode"] == "max"
        and cfg["num_embeddings"] == 10
        and cfg["include_last_offset"]
    )
    clone = EmbeddingBag.from_config(cfg)
    np.testing.assert_array_equal(clone.embeddings, bag.embeddings)  # same seed
    assert clone.mode == "max" and clone.padding_idx == 2
    path = bag.save(tmp_path / "bag")
    loaded = EmbeddingBag.load(path)
    assert isinstance(loaded, EmbeddingBag)
    np.testing.assert_array_equal(loaded.embeddings, bag.embeddings)
    assert bag.compute_output_shape((7, 4)) == (7, 3)
    assert "EmbeddingBag" in embtable.__all__
