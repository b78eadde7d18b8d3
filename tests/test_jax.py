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


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_gradient_with_zero_bags_is_zero(backend, mode):
    table = rng_table(5, 3, np.float32)
    layouts = [
        (jnp.zeros((0,), jnp.int32), jnp.zeros((0,), jnp.int32)),
        (jnp.zeros((0, 2), jnp.int32), None),
    ]
    for ids, offsets in layouts:

        def loss(t, ids=ids, offsets=offsets):
            return ej.embedding_bag(t, ids, offsets, mode=mode).sum()

        for grad in (jax.grad(loss), jax.jit(jax.grad(loss))):
            g = grad(table)
            assert g.shape == (5, 3)
            assert not np.asarray(g).any()


# Calls whose output has no elements: XLA drops a pure call with only empty
# outputs, so these go through a side-effecting call with the same checks.
EMPTY_OUTPUT_ERRORS = {
    "gather, D = 0": (0, lambda t: ej.gather(t, jnp.array([10])), r"index 10 at"),
    "gather, D = 0, -1": (
        0,
        lambda t: ej.gather(t, jnp.array([[0], [-1]])),
        r"index -1 at position \(1, 0\)",
    ),
    "bag, D = 0": (
        0,
        lambda t: ej.embedding_bag(t, jnp.array([[1, 10]]), mode="sum"),
        r"index 10 at position \(0, 1\) is out of bounds for a table with 5 rows",
    ),
    "bag, zero bags": (
        2,
        lambda t: ej.embedding_bag(t, jnp.array([1, 2]), jnp.zeros(0, jnp.int32)),
        r"offsets is empty \(zero bags\) but indices has 2 entries",
    ),
    "bag, D = 0, bad offsets": (
        0,
        lambda t: ej.embedding_bag(t, jnp.array([1, 2]), jnp.array([3]), mode="max"),
        r"offsets\[0\] = 3 but the first bag must start at 0",
    ),
}


@pytest.mark.parametrize("case", list(EMPTY_OUTPUT_ERRORS))
def test_empty_output_still_checks_inputs(backend, case):
    D, call, match = EMPTY_OUTPUT_ERRORS[case]
    table = jnp.ones((5, D), jnp.float32)
    for f in (call, jax.jit(call), jax.jit(jax.grad(lambda t: call(t).sum()))):
        with pytest.raises(jax.errors.JaxRuntimeError, match=match):
            jax.block_until_ready(f(table))


def test_empty_output_checks_under_vmap(backend):
    t0 = jnp.zeros((5, 0), jnp.float32)
    ids = jnp.array([[0, 1], [2, 7]])
    for f in (jax.vmap(ej.gather, (None, 0)), jax.jit(jax.vmap(ej.gather, (None, 0)))):
        with pytest.raises(jax.errors.JaxRuntimeError, match="index 7 at"):
            jax.block_until_ready(f(t0, ids))
    ok = jax.jit(jax.vmap(ej.gather, (None, 0)))(t0, ids % 5)
    assert ok.shape == (2, 2, 0)


def test_empty_outputs_without_errors(backend):
    t0 = jnp.zeros((5, 0), jnp.float32)
    t = rng_table(5, 2, np.float32)
    assert jax.jit(ej.gather)(t0, jnp.array([4, 0])).shape == (2, 0)
    assert ej.gather(t, jnp.zeros((3, 0), jnp.int32)).shape == (3, 0, 2)
    for mode in ("sum", "mean", "max"):
        out = ej.embedding_bag(t0, jnp.array([[1, 4]]), mode=mode)
        assert out.shape == (1, 0)
        out = jax.jit(lambda t, i, o, m=mode: ej.embedding_bag(t, i, o, mode=m))(
            t, jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.int32)
        )
        assert out.shape == (0, 2)


def test_bad_ids_raise_jax_runtime_error_eagerly(backend):
    # The kernels check the ids inside the XLA program, eagerly too.
    table = rng_table(5, 2, np.float32)
    with pytest.raises(
        jax.errors.JaxRuntimeError,
        match=r"index 7 at position \(1,\) is out of bounds for a table with 5 rows",
    ):
        jax.block_until_ready(ej.gather(table, jnp.array([0, 7])))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"index 9 at position"):
        jax.block_until_ready(ej.embedding_bag(table, jnp.array([[0, 9]])))


def test_ids_are_not_wrapped_to_32_bits(backend):
    table = rng_table(5, 2, np.float32)
    # Without x64 JAX integers have 32 bits: concrete ids are checked before.
    with pytest.raises(
        IndexError, match=r"^index 3000000000 at position \(0,\) is out of bounds"
    ):
        ej.gather(table, np.array([3_000_000_000], np.uint32))
    with pytest.raises(IndexError, match=r"^index 4294967297 at position \(1,\)"):
        ej.gather(table, np.array([1, 2**32 + 1]))  # int64: would become id 1
    with pytest.raises(IndexError, match=r"^index 7 at position \(0, 0\)"):
        ej.embedding_bag(table, np.array([[7, -(2**40)]]))  # the first bad id
    with pytest.raises(
        ValueError, match=r"offsets value 8589934592 at position \(1,\)"
    ):
        ej.embedding_bag(table, jnp.array([0, 1]), np.array([0, 2**33]))
    with pytest.raises(IndexError, match=r"^index 3000000000 at"):
        ej.gather(table, jnp.array([3_000_000_000], jnp.uint32))
    with jax.enable_x64(True):
        # uint32 ids become int64: the kernel names the id as given.
        for f in (ej.gather, jax.jit(ej.gather)):
            with pytest.raises(
                jax.errors.JaxRuntimeError, match=r"index 3000000000 at"
            ):
                jax.block_until_ready(
                    f(table, jnp.array([1, 3_000_000_000], jnp.uint32))
                )
            got = f(table, jnp.array([4, 0], jnp.uint32))
            np.testing.assert_array_equal(got, np.asarray(table)[[4, 0]])
        big = np.array([2**64 - 1], np.uint64)
        with pytest.raises(IndexError, match=rf"^index {2**64 - 1} at position \(0,\)"):
            ej.gather(table, big)
