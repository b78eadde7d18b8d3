"""The functional core reads CPU torch tensors and JAX arrays in place (DLPack)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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


def _write_calls(torch):
    """Each functional-core call that writes into a torch tensor, by argument."""
    table = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    q = embtable.quantize(table.numpy(), "int8")
    return {
        "scatter_add target": (
            (4, 3),
            lambda t: embtable.scatter_add(t, [0, 2], torch.ones(2, 3)),
        ),
        "gather out": ((2, 3), lambda t: embtable.gather(table, [1, 3], out=t)),
        "quantized gather out": ((2, 3), lambda t: embtable.gather(q, [1, 3], out=t)),
        "embedding_bag out": (
            (1, 3),
            lambda t: embtable.embedding_bag(table, [[1, 3]], mode="sum", out=t),
        ),
        "quantized embedding_bag out": (
            (1, 3),
            lambda t: embtable.embedding_bag(q, [[1, 3]], mode="sum", out=t),
        ),
        "embedding_bag_forward out": (
            (1, 3),
            lambda t: _bag.embedding_bag_forward(table, [[1, 3]], mode="max", out=t),
        ),
        "embedding_bag_backward target": (
            (4, 3),
            lambda t: _bag.embedding_bag_backward(
                torch.ones(1, 3), [[1, 3]], target=t, mode="sum"
            ),
        ),
        "embedding_bags out": (
            (1, 6),
            lambda t: embtable.embedding_bags([table, q], [[[1, 3]], [[0, 2]]], out=t),
        ),
    }


WRITES = [
    "scatter_add target",
    "gather out",
    "quantized gather out",
    "embedding_bag out",
    "quantized embedding_bag out",
    "embedding_bag_forward out",
    "embedding_bag_backward target",
    "embedding_bags out",
]


@pytest.mark.parametrize("case", WRITES)
def test_torch_write_target_requiring_grad_is_refused(case):
    torch = pytest.importorskip("torch")
    shape, call = _write_calls(torch)[case]
    name = case.split()[-1]
    leaf = torch.zeros(shape, requires_grad=True)
    nonleaf = torch.zeros(shape, requires_grad=True) * 1.0
    for t in (leaf, nonleaf, leaf[:1]):
        with pytest.raises(
            RuntimeError, match=rf"^{name} requires grad and embtable would write it"
        ):
            call(t)
        assert not t.detach().any()
    # Under torch.no_grad(), as torch's own in-place ops: written, version bumped.
    with torch.no_grad():
        version = leaf._version
        call(leaf)
    assert leaf.detach().any()
    assert leaf._version > version


@pytest.mark.parametrize("case", WRITES)
def test_torch_write_bumps_the_version_counter(case):
    torch = pytest.importorskip("torch")
    shape, call = _write_calls(torch)[case]
    w = torch.ones(shape, requires_grad=True)
    t = torch.zeros(shape)
    loss = (w * t).sum()  # saves t for the gradient of w
    result = call(t)
    assert result is t or isinstance(result, tuple) and result[0] is t
    assert t.any()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_failed_write_leaves_the_torch_version_alone():
    torch = pytest.importorskip("torch")
    target = torch.zeros(4, 3)
    with pytest.raises(IndexError, match="index 9 at position"):
        embtable.scatter_add(target, [0, 9], torch.ones(2, 3))
    assert target._version == 0 and not target.any()


def test_torch_negative_bit_is_refused():
    torch = pytest.importorskip("torch")
    table = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    neg = torch._neg_view(table)  # logically -table, same memory
    with pytest.raises(TypeError, match=r"table .* negative bit .*table\.resolve_neg"):
        embtable.gather(neg, [1])
    with pytest.raises(TypeError, match=r"indices .* negative bit"):
        embtable.gather(table, torch._neg_view(torch.tensor([-1, -2])))
    with pytest.raises(TypeError, match=r"updates .* negative bit"):
        embtable.scatter_add(torch.zeros(4, 3), [0], torch._neg_view(torch.ones(1, 3)))
    target = torch._neg_view(torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"target .* negative bit .* in place"):
        embtable.scatter_add(target, [0], torch.ones(1, 3))
    assert not target.any()
    # A public way to get one: the imaginary part of a conjugate view.
    psw = torch.complex(torch.zeros(2), torch.tensor([2.0, 3.0])).conj().imag
    with pytest.raises(TypeError, match=r"per_sample_weights .* negative bit"):
        embtable.embedding_bag(
            table,
            torch.tensor([1, 2]),
            torch.tensor([0]),
            mode="sum",
            per_sample_weights=psw,
        )
    # resolved, they are read with their sign
    np.testing.assert_array_equal(
        embtable.gather(neg.resolve_neg(), [1]), -table.numpy()[[1]]
    )


def test_quantized_out_takes_torch_tensors_and_refuses_jax_arrays():
    torch = pytest.importorskip("torch")
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    q = embtable.quantize(table, "int8")
    out = torch.empty(2, 3)
    ptr = out.data_ptr()
    assert embtable.gather(q, [1, 3], out=out) is out
    assert out.data_ptr() == ptr
    np.testing.assert_array_equal(out.numpy(), q.dequantize()[[1, 3]])
    bag = torch.empty(1, 3)
    assert embtable.embedding_bag(q, [[1, 3]], mode="sum", out=bag) is bag
    np.testing.assert_array_equal(
        bag.numpy(), embtable.embedding_bag(q, [[1, 3]], mode="sum")
    )
    with pytest.raises(ValueError, match="out has shape"):
        embtable.gather(q, [1, 3], out=torch.empty(3, 3))
    jnp = pytest.importorskip("jax.numpy")
    frozen = jnp.zeros((2, 3), jnp.float32)
    with pytest.raises(ValueError, match="out is a JAX array, which is immutable"):
        embtable.gather(q, [1, 3], out=frozen)
    with pytest.raises(ValueError, match="out is a JAX array, which is immutable"):
        embtable.embedding_bag(q, [[1, 3]], mode="sum", out=frozen[:1])


def test_sharded_jax_array_is_named_as_sharded():
    pytest.importorskip("jax")
    # The device count is fixed when JAX starts: a fresh interpreter.
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, pytest, embtable
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        assert len(jax.devices()) == 2
        mesh = Mesh(np.array(jax.devices()), ("x",))
        table = jnp.arange(24.0, dtype=jnp.float32).reshape(8, 3)
        sharded = jax.device_put(table, NamedSharding(mesh, P("x", None)))
        match = (
            r"^table is a JAX array sharded across 2 devices; .*"
            r"jax.device_put\\(table, jax.devices\\('cpu'\\)\\[0\\]\\)$"
        )
        with pytest.raises(ValueError, match=match):
            embtable.gather(sharded, [7, 0])
        one = jax.device_put(sharded, jax.devices("cpu")[0])
        np.testing.assert_array_equal(embtable.gather(one, [7, 0]), np.asarray(table)[[7, 0]])
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
