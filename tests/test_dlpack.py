"""The functional core reads CPU torch tensors and JAX arrays in place (DLPack)."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import _bag


def test_ndarray_path_unchanged():
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = np.empty((2, 2), np.float32)
    assert embtable.gather(table, [2, 0], out=out) is out
    np.testing.assert_array_equal(out, table[[2, 0]])


def test_torch_tensors_in_place():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(10, 4, generator=gen, requires_grad=True)
    ids = torch.randint(0, 10, (3, 5), generator=gen)
    np.testing.assert_array_equal(
        embtable.gather(table, ids), table.detach().numpy()[ids.numpy()]
    )
    out = torch.empty(3, 5, 4)
    assert embtable.gather(table, ids, out=out) is out
    torch.testing.assert_close(out, table.detach()[ids], rtol=0, atol=0)
    target = torch.zeros(10, 4, dtype=torch.float64)
    ptr = target.data_ptr()
    updates = torch.randn(3, 5, 4, dtype=torch.float64, generator=gen)
    assert embtable.scatter_add(target, ids, updates, deterministic=True) is target
    assert target.data_ptr() == ptr
    expected = np.zeros((10, 4))
    np.add.at(expected, ids.numpy(), updates.numpy())
    np.testing.assert_array_equal(target.numpy(), expected)
    offsets = torch.tensor([0, 4, 4, 9])
    flat = ids.reshape(-1)
    psw = torch.rand(15, generator=gen)
    got = embtable.embedding_bag(
        table, flat, offsets, mode="sum", per_sample_weights=psw
    )
    ref = torch.nn.functional.embedding_bag(
        flat, table.detach(), offsets, mode="sum", per_sample_weights=psw
    )
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6)
    bag_out = torch.empty(4, 4)
    assert embtable.embedding_bag(table, flat, offsets, out=bag_out) is bag_out
    grad = torch.zeros(10, 4)
    gout = torch.ones(4, 4)
    assert (
        _bag.embedding_bag_backward(gout, flat, offsets, target=grad, mode="sum")
        is grad
    )
    np.testing.assert_array_equal(
        grad.sum(1).numpy(), 4 * np.bincount(flat.numpy(), minlength=10)
    )
    with pytest.raises(TypeError, match="meta"):
        embtable.gather(torch.empty(3, 2, device="meta"), [0])


def test_embedding_bags_torch_tensors_in_place(monkeypatch):
    # embedding_bags takes what embedding_bag takes, and copies none of it.
    torch = pytest.importorskip("torch")
    from embtable import _core

    gen = torch.Generator().manual_seed(1)
    tables = [torch.randn(10, 4, generator=gen, requires_grad=True), torch.randn(6, 3)]
    quant = embtable.quantize(np.arange(10.0, dtype=np.float32).reshape(5, 2), "int8")
    ids = [torch.randint(0, 10, (9,), generator=gen), torch.randint(0, 6, (9,))]
    ids.append(torch.randint(0, 5, (9,), generator=gen))
    offsets = [torch.tensor([0, 2, 2, 7])] * 3
    psw = [torch.rand(9, generator=gen), None, torch.rand(9, generator=gen)]
    seen = {}
    real = _core.embedding_bags

    def spy(packed, idx, offs, **kw):
        seen.update(packed=packed, idx=idx, kw=kw)
        return real(packed, idx, offs, **kw)

    monkeypatch.setattr(_core, "embedding_bags", spy)
    out = torch.empty(4, 9)
    ptr = out.data_ptr()
    got = embtable.embedding_bags(
        [*tables, quant], ids, offsets, per_sample_weights=psw, out=out
    )
    assert got is out and out.data_ptr() == ptr
    for t in range(2):
        assert np.shares_memory(seen["packed"][t], tables[t].detach().numpy())
    for t in range(3):
        assert np.shares_memory(seen["idx"][t], ids[t].numpy())
    w = seen["kw"]["per_sample_weights"]
    assert np.shares_memory(w[0], psw[0].numpy()) and w[1] is None
    assert np.shares_memory(w[2], psw[2].numpy())
    want = np.concatenate(
        [
            embtable.embedding_bag(
                tab, i.numpy(), o.numpy(), mode="sum", per_sample_weights=p
            )
            for tab, i, o, p in zip(
                [t.detach().numpy() for t in tables] + [quant],
                ids,
                offsets,
                [None if p is None else p.numpy() for p in psw],
                strict=True,
            )
        ],
        axis=1,
    )
    np.testing.assert_array_equal(out.numpy(), want)
    ref = torch.nn.functional.embedding_bag(
        ids[0], tables[0].detach(), offsets[0], mode="sum", per_sample_weights=psw[0]
    )
    np.testing.assert_allclose(out[:, :4].numpy(), ref.numpy(), rtol=1e-6)
    # A tensor of shape (T, B, L) is a sequence of per-table ids.
    stacked = torch.randint(0, 6, (2, 3, 5), generator=gen)
    np.testing.assert_array_equal(
        embtable.embedding_bags(tables, stacked, mode="max"),
        np.concatenate(
            [
                embtable.embedding_bag(t.detach().numpy(), i.numpy(), mode="max")
                for t, i in zip(tables, stacked, strict=True)
            ],
            axis=1,
        ),
    )
    with pytest.raises(TypeError, match=r"^tables\[1\]: table is on device meta"):
        embtable.embedding_bags([tables[1], torch.empty(3, 2, device="meta")], ids[:2])


def test_jax_arrays_read_only():
    jnp = pytest.importorskip("jax.numpy")
    table = jnp.arange(12.0, dtype=jnp.float32).reshape(4, 3)
    ids = jnp.array([[3, 0], [1, 1]])
    np.testing.assert_array_equal(
        embtable.gather(table, ids), np.asarray(table)[np.asarray(ids)]
    )
    np.testing.assert_array_equal(
        embtable.embedding_bag(table, ids, mode="max"),
        np.asarray(table)[np.asarray(ids)].max(1),
    )
    target = np.zeros((4, 3), np.float32)
    embtable.scatter_add(target, ids, jnp.ones((2, 2, 3), jnp.float32))
    np.testing.assert_array_equal(target[:, 0], [1, 2, 0, 1])
    frozen = jnp.zeros((4, 3), jnp.float32)
    with pytest.raises(ValueError, match="immutable"):
        embtable.scatter_add(frozen, [0], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="immutable"):
        embtable.gather(np.ones((4, 3), np.float32), [0], out=frozen[:1])
    assert not np.asarray(frozen).any()
    np.testing.assert_array_equal(
        embtable.embedding_bags([table, table], [ids, ids], mode="max"),
        np.tile(np.asarray(table)[np.asarray(ids)].max(1), 2),
    )
    with pytest.raises(ValueError, match="immutable"):
        embtable.embedding_bags([table], [ids], out=jnp.zeros((2, 3), jnp.float32))
