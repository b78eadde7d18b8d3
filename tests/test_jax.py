"""embtable.jax against jnp.take, jax.grad of plain-JAX references and the NumPy core."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
ej = pytest.importorskip("embtable.jax")

import embtable  # noqa: E402

BACKENDS = ["ffi", "callback"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "ffi" and not ej._HAVE_FFI:
        pytest.skip("embtable._jax_ffi was not built (jax absent at build time)")
    monkeypatch.setattr(ej, "BACKEND", request.param)
    jax.clear_caches()  # traces made under the other backend
    yield request.param
    jax.clear_caches()


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    ctx = (
        jax.enable_x64(True) if request.param == "float64" else contextlib.nullcontext()
    )
    with ctx:
        yield np.dtype(request.param)


def take(t, i):
    return jnp.take(t, i, axis=0)


def rng_table(V, D, dtype, seed=0):
    return jnp.asarray(
        np.random.default_rng(seed).standard_normal((V, D)).astype(dtype)
    )


def assert_close(a, b, dtype):
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("shape", [(), (0,), (9,), (3, 5), (2, 0, 4)])
def test_gather_matches_take_with_grad(backend, dtype, shape):
    V, D = 17, 6
    table = rng_table(V, D, dtype)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, V, shape))
    expected = take(table, ids)
    for f in (ej.gather, jax.jit(ej.gather)):
        out = f(table, ids)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    w = jnp.asarray(np.random.default_rng(2).standard_normal((*shape, D)).astype(dtype))

    def loss(g):
        return lambda t: jnp.sum(g(t, ids) * w)

    got = jax.jit(jax.grad(loss(ej.gather)))(table)
    assert_close(got, jax.grad(loss(take))(table), dtype)
    assert_close(jax.grad(loss(ej.gather))(table), got, dtype)


def test_gather_vmap(backend):
    V, D = 11, 3
    table = rng_table(V, D, np.float32)
    tables = jnp.stack([table, 2 * table, -table])
    ids = jnp.asarray(np.random.default_rng(3).integers(0, V, (3, 4, 2)))
    # ids batched, table shared: one kernel call.
    got = jax.jit(jax.vmap(ej.gather, (None, 0)))(table, ids)
    np.testing.assert_array_equal(got, jax.vmap(take, (None, 0))(table, ids))
    # both batched; only the table batched.
    np.testing.assert_array_equal(
        jax.vmap(ej.gather)(tables, ids), jax.vmap(take)(tables, ids)
    )
    np.testing.assert_array_equal(
        jax.vmap(ej.gather, (0, None))(tables, ids[0]),
        jax.vmap(take, (0, None))(tables, ids[0]),
    )

    # per-example gradients, and the gradient of a vmapped lookup.
    def per(g):
        return jax.vmap(jax.grad(lambda t, i: jnp.sum(g(t, i) ** 2)), (None, 0))

    assert_close(per(ej.gather)(table, ids), per(take)(table, ids), np.float32)

    def total(g):
        return jax.grad(lambda t: jnp.sum(jax.vmap(g, (None, 0))(t, ids) ** 3))

    assert_close(total(ej.gather)(table), total(take)(table), np.float32)


def test_gather_index_types_and_errors(backend):
    table = rng_table(5, 2, np.float32)
    for dt in (np.uint8, np.int16, np.uint32, np.int64):
        ids = np.array([4, 0, 2], dtype=dt)
        np.testing.assert_array_equal(ej.gather(table, ids), take(table, ids))
    with pytest.raises(TypeError, match="integers"):
        ej.gather(table, jnp.array([0.0]))
    with pytest.raises(TypeError, match="float32"):
        ej.gather(jnp.zeros((3, 2), jnp.int32), jnp.array([0]))
    with pytest.raises(ValueError, match="2-D"):
        ej.gather(jnp.zeros((3,)), jnp.array([0]))
    # jnp.take fills NaN for a bad id; embtable refuses it (inside the XLA call).
    with pytest.raises(Exception, match="out of bounds"):
        jax.block_until_ready(jax.jit(ej.gather)(table, jnp.array([1, 5])))


def ref_bag(table, ids, offsets, mode):
    """A plain-JAX bag (segment ops), differentiable by jax.grad."""
    if offsets is None:
        rows = take(table, ids)
        if mode == "sum":
            return rows.sum(axis=1)
        if mode == "mean":
            return rows.mean(axis=1)
        return rows.max(axis=1)
    n, B = ids.shape[0], offsets.shape[0]
    seg = jnp.searchsorted(offsets, jnp.arange(n), side="right") - 1
    rows = take(table, ids)
    s = jax.ops.segment_sum(rows, seg, num_segments=B)
    cnt = jax.ops.segment_sum(jnp.ones(n, table.dtype), seg, num_segments=B)[:, None]
    if mode == "sum":
        return s
    if mode == "mean":
        return s / jnp.maximum(cnt, 1)
    m = jax.ops.segment_max(rows, seg, num_segments=B)
    return jnp.where(cnt > 0, m, 0)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("layout", ["offsets", "2d"])
def test_embedding_bag_matches_reference_with_grad(backend, dtype, mode, layout):
    V, D = 23, 5
    table = rng_table(V, D, dtype, seed=4)
    gen = np.random.default_rng(5)
    if layout == "2d":
        ids, offsets = jnp.asarray(gen.integers(0, V, (6, 4))), None
    else:
        ids = jnp.asarray(gen.integers(0, V, 17))
        offsets = jnp.asarray([0, 3, 3, 10, 16])  # an empty bag too
    expected = ref_bag(table, ids, offsets, mode)
    got = jax.jit(lambda t, i, o: ej.embedding_bag(t, i, o, mode=mode))(
        table, ids, offsets
    )
    assert got.shape == expected.shape and got.dtype == table.dtype
    assert_close(got, expected, dtype)
    # and the NumPy core itself
    assert_close(
        ej.embedding_bag(table, ids, offsets, mode=mode),
        embtable.embedding_bag(
            np.asarray(table),
            np.asarray(ids),
            None if offsets is None else np.asarray(offsets),
            mode=mode,
        ),
        dtype,
    )
    w = jnp.asarray(gen.standard_normal(expected.shape).astype(dtype))

    def loss(bag):
        return lambda t: jnp.sum(bag(t, ids, offsets, mode) * w)

    mine = jax.jit(jax.grad(loss(lambda t, i, o, m: ej.embedding_bag(t, i, o, mode=m))))
    assert_close(mine(table), jax.grad(loss(ref_bag))(table), dtype)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_embedding_bag_vmap(backend, mode):
    V, D = 13, 4
    table = rng_table(V, D, np.float32, seed=6)
    ids = jnp.asarray(np.random.default_rng(7).integers(0, V, (3, 5, 2)))

    def bag(t, i):
        return ej.embedding_bag(t, i, mode=mode)

    def ref(t, i):
        return ref_bag(t, i, None, mode)

    np.testing.assert_allclose(
        jax.vmap(bag, (None, 0))(table, ids),
        jax.vmap(ref, (None, 0))(table, ids),
        rtol=1e-6,
    )
    g1 = jax.grad(lambda t: jnp.sum(jax.vmap(bag, (None, 0))(t, ids) ** 2))(table)
    g2 = jax.grad(lambda t: jnp.sum(jax.vmap(ref, (None, 0))(t, ids) ** 2))(table)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6)


def test_embedding_bag_errors(backend):
    table = rng_table(5, 2, np.float32)
    with pytest.raises(ValueError, match="mode"):
        ej.embedding_bag(table, jnp.zeros((2, 2), jnp.int32), mode="median")
    with pytest.raises(ValueError, match="offsets"):
        ej.embedding_bag(table, jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="offsets must be None"):
        ej.embedding_bag(table, jnp.zeros((2, 2), jnp.int32), jnp.array([0]))
    with pytest.raises(Exception, match="offsets"):
        jax.block_until_ready(
            ej.embedding_bag(table, jnp.array([0, 1]), jnp.array([1]))
        )


def test_backend_is_reported():
    assert ej.BACKEND in ("ffi", "callback")
