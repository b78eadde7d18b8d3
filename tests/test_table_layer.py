"""TableLayer: a toy subclass built on it; hypothesis properties of Embedding."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from embtable import Embedding, RowGrad, optimizers
from embtable.layers import TableLayer
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


class SumBag(TableLayer):
    """A minimal pooled layer: out[b] = sum of its L rows (2-D ids)."""

    _DIM_KEYS = ("num_embeddings", "embedding_dim")
    _DEFAULT_NAME = "sum_bag"

    def __init__(self, num_embeddings: int, embedding_dim: int, **kwargs: Any) -> None:
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self._ids: np.ndarray | None = None

    def forward(self, indices: Any) -> np.ndarray:
        ids = self._prepare_ids(indices)
        self._renorm(ids)
        self._ids = ids
        return self.embeddings[ids].sum(axis=1)

    def backward(self, grad_output: Any) -> Any:
        assert self._ids is not None
        g = self._check_grad_output(grad_output, (self._ids.shape[0], self.output_dim))
        rows = np.broadcast_to(g[:, None, :], self._ids.shape + (self.output_dim,))
        self._accumulate_rows(self._ids, np.ascontiguousarray(rows))
        return self.grad


@pytest.mark.parametrize("sparse", [False, True])
def test_subclass_contract(sparse, tmp_path):
    layer = SumBag(10, 3, sparse=sparse, padding_idx=0, seed=1, max_norm=5.0)
    ids = np.array([[1, 2, 0], [2, 2, 9]])
    out = layer(ids)
    np.testing.assert_allclose(out, layer.embeddings[ids].sum(axis=1), rtol=1e-6)
    grad = layer.backward(np.ones((2, 3)))
    dense = grad.to_dense(10) if sparse else grad
    expected = np.zeros((10, 3), np.float32)
    np.add.at(expected, ids, np.ones((2, 3, 3), np.float32))
    expected[0] = 0
    np.testing.assert_array_equal(dense, expected)
    if sparse:
        assert isinstance(grad, RowGrad) and grad.indices.tolist() == [1, 2, 9]
        # A ready RowGrad merges in, the padding row is dropped.
        layer._accumulate_grad(RowGrad([0, 1], np.ones((2, 3), np.float32)))
        assert layer.grad.indices.tolist() == [1, 2, 9]
        np.testing.assert_array_equal(layer.grad.values[0], expected[1] + 1)
    before = layer.embeddings.copy()
    optimizers.SGD(learning_rate=1.0).step(layer)
    np.testing.assert_allclose(
        layer.embeddings, before - dense_after(layer, 10), rtol=1e-6
    )
    cfg = layer.get_config()
    assert cfg["num_embeddings"] == 10 and cfg["embedding_dim"] == 3
    clone = SumBag.from_config(json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg
    path = layer.save(tmp_path / "bag")
    back = SumBag.load(path)
    np.testing.assert_array_equal(back.embeddings, layer.embeddings)
    assert layer.name.startswith("sum_bag")


def dense_after(layer: TableLayer, V: int) -> np.ndarray:
    g = layer.grad
    return g.to_dense(V) if isinstance(g, RowGrad) else g


@settings(max_examples=30, deadline=None)
@given(
    ids=hnp.arrays(
        np.int64,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        elements=st.integers(0, 8),
    ),
    sparse=st.booleans(),
    padding=st.sampled_from([None, 0, 4]),
)
def test_embedding_property(ids, sparse, padding):
    V, D = 9, 3
    layer = Embedding(V, D, seed=0, sparse=sparse, padding_idx=padding)
    out = layer(ids)
    np.testing.assert_array_equal(out, np.take(layer.embeddings, ids, axis=0))
    g = np.random.default_rng(ids.size).standard_normal(out.shape).astype(np.float32)
    grad = layer.backward(g)
    ref = np.zeros((V, D), np.float32)
    np.add.at(ref, ids, g)
    if padding is not None:
        ref[padding] = 0
    dense = grad.to_dense(V) if sparse else grad
    np.testing.assert_allclose(dense, ref, rtol=1e-6, atol=1e-6)
    if sparse:
        present = set(np.unique(ids).tolist()) - {padding}
        assert grad.indices.tolist() == sorted(present)


def test_load_and_from_config_are_typed_as_the_class_they_are_called_on(tmp_path):
    # A typed user writes `layer = Embedding.load(path)` and uses `layer.input_dim`:
    # mypy must see an Embedding (not the base TableLayer), and an EmbeddingBag for
    # EmbeddingBag.load, without a cast.
    api = pytest.importorskip("mypy.api")
    src = tmp_path / "user.py"
    src.write_text(
        "from embtable import Embedding, EmbeddingBag\n"
        "from embtable.layers import TableLayer\n"
        "reveal_type(Embedding.load('e.npz'))\n"
        "reveal_type(Embedding.from_config({}))\n"
        "reveal_type(EmbeddingBag.load('b.npz'))\n"
        "reveal_type(EmbeddingBag.from_config({}))\n"
        "reveal_type(TableLayer.from_config({}))\n"
    )
    out, err, status = api.run(
        ["--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(src)]
    )
    revealed = [
        line.split('Revealed type is "')[1].rstrip('"')
        for line in out.splitlines()
        if "Revealed type is" in line
    ]
    assert revealed == [
        "embtable.layers.Embedding",
        "embtable.layers.Embedding",
        "embtable.layers.EmbeddingBag",
        "embtable.layers.EmbeddingBag",
        "embtable.layers.TableLayer",
    ], out + err
