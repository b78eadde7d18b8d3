"""embtable.torch under torch.compile: the dense forms are custom ops (no graph break).

The compiled result must equal the eager one bit for bit (the same kernels run), and
torch.nn's where torch is right (torch 2.13's CPU EmbeddingBag scales by frequency
wrongly: tests/test_torch.py explains; there eager embtable is the oracle).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
et = pytest.importorskip("embtable.torch")

from torch.library import opcheck  # noqa: E402

# torch's own compile path warns about its deprecated torch.jit internals.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Each test compiles its own functions; no cache or recompile limit carries over.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("padding_idx", "scale", "max_norm", "dtype"),
    [
        (None, False, None, torch.float32),
        (2, False, None, torch.float64),
        (-1, True, None, torch.float32),
        (None, False, 1.0, torch.float64),
        (3, True, 0.5, torch.float32),
    ],
)
def test_compiled_embedding_is_one_graph_and_matches(
    padding_idx, scale, max_norm, dtype
):
    torch.manual_seed(0)
    w0 = torch.randn(40, 6, dtype=dtype)
    ids = torch.randint(0, 40, (5, 7))
    ids[0, :3] = 3

    def f(w, ids):
        return et.embedding(
            ids, w, padding_idx=padding_idx, scale_grad_by_freq=scale, max_norm=max_norm
        )

    compiled = torch.compile(f, fullgraph=True)  # fullgraph: a graph break would raise
    results = []
    for fn in (compiled, f, torch.nn.functional.embedding):
        w = w0.clone().requires_grad_()
        if fn is torch.nn.functional.embedding:
            out = fn(ids, w, padding_idx, max_norm, 2.0, scale)
        else:
            out = fn(w, ids)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape))
        results.append((out.detach(), w.detach(), w.grad))
    (c_out, c_w, c_g), (e_out, e_w, e_g), (t_out, t_w, t_g) = results
    exact(c_out, e_out)
    exact(c_w, e_w)  # max_norm renormed the same rows in place
    exact(c_g, e_g)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(c_out, t_out, **tol)
    torch.testing.assert_close(c_w, t_w, **tol)
    torch.testing.assert_close(c_g, t_g, **tol)


BAG_CASES = [
    # mode, per_sample_weights, padding_idx, scale_grad_by_freq, include_last, 2-D
    ("sum", False, None, False, False, False),
    ("sum", True, 3, False, True, False),
    ("sum", True, None, True, False, False),
    ("mean", False, 3, False, False, False),
    ("mean", False, None, True, True, False),
    ("mean", False, 1, False, False, True),
    ("max", False, None, False, False, False),
    ("max", False, 3, False, True, True),
]


@pytest.mark.parametrize(("mode", "psw", "pad", "scale", "incl", "two_d"), BAG_CASES)
def test_compiled_embedding_bag_is_one_graph_and_matches(
    mode, psw, pad, scale, incl, two_d
):
    torch.manual_seed(1)
    dtype = torch.float64
    w0 = torch.randn(40, 6, dtype=dtype)
    if two_d:
        ids, offsets = torch.randint(0, 40, (6, 5)), None
    else:
        ids = torch.randint(0, 40, (30,))
        offsets = torch.tensor([0, 4, 4, 13, 30] if incl else [0, 4, 4, 13])
    ids.view(-1)[::7] = 3
    p0 = torch.rand(ids.shape, dtype=dtype) if psw else None

    def f(w, ids, offsets, p):
        return et.embedding_bag(
            ids,
            w,
            offsets,
            mode=mode,
            per_sample_weights=p,
            padding_idx=pad,
            scale_grad_by_freq=scale,
            include_last_offset=incl,
        )

    def ref(w, ids, offsets, p):
        return torch.nn.functional.embedding_bag(
            ids,
            w,
            offsets,
            mode=mode,
            per_sample_weights=p,
            padding_idx=pad,
            include_last_offset=incl,
        )

    compiled = torch.compile(f, fullgraph=True)
    fns = (compiled, f) if scale else (compiled, f, ref)
    results = []
    for fn in fns:
        w = w0.clone().requires_grad_()
        p = None if p0 is None else p0.clone().requires_grad_()
        out = fn(w, ids, offsets, p)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape))
        results.append((out.detach(), w.grad, None if p is None else p.grad))
    for got, want in zip(results[0], results[1], strict=True):
        if want is not None:
            exact(got, want)
    if not scale:
        for got, want in zip(results[0], results[2], strict=True):
            if want is not None:
                torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dynamic", [False, True])
def test_compiled_module_trains_like_torch(dynamic):
    torch.manual_seed(2)
    ours = et.EmbeddingBag(100, 8, mode="sum")
    ref = torch.nn.EmbeddingBag(100, 8, mode="sum")
    ref.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours, fullgraph=True, dynamic=dynamic)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(4):
        ids = torch.randint(0, 100, (10 + 3 * step,))  # a new length each step
        offsets = torch.tensor([0, 2, 5])
        for model, opt in ((compiled, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            model(ids, offsets).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)


def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) shapes, autograd registration and AOT dispatch, by torch."""
    torch.manual_seed(3)
    w = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    ids2 = torch.randint(0, 20, (4, 3))
    ids1 = torch.randint(0, 20, (11,))
    offsets = torch.tensor([0, 3, 3, 7])
    last = torch.tensor([0, 3, 3, 7, 11])  # include_last_offset: closes the last bag
    psw = torch.rand(11, dtype=torch.float64, requires_grad=True)
    ops = torch.ops.embtable
    cases = [
        (ops.embedding.default, (w, ids2, -1, False)),
        (ops.embedding.default, (w, ids2, 2, True)),
        (ops.embedding_bag.default, (w, ids1, offsets, psw, "sum", -1, False, False)),
        (ops.embedding_bag.default, (w, ids1, last, None, "mean", 4, True, True)),
        (ops.embedding_bag.default, (w, ids1, offsets, None, "max", -1, False, False)),
        (ops.embedding_bag.default, (w, ids2, None, None, "mean", 1, False, False)),
        (ops.embedding_renorm_.default, (torch.randn(20, 5), ids2, 1.0, 2.0)),
        (
            ops.embedding_renorm_.default,
            (torch.randn(20, 5), ids1, 1.0, 0.0, last, True),
        ),
    ]
    for op, args in cases:
        report = opcheck(op, args)
        assert set(report.values()) == {"SUCCESS"}, (op, report)


def test_compiled_errors_are_eager_errors():
    # Without fullgraph, a mistake raises what eager raises; with it, torch reports
    # the same exception as an "Observed exception" (its rule for any Python raise).
    f = torch.compile(lambda w, i: et.embedding(i, w))
    with pytest.raises(TypeError, match="float16"):
        f(torch.randn(5, 3, dtype=torch.float16), torch.tensor([1]))
    with pytest.raises(TypeError, match="integer tensor"):
        f(torch.randn(5, 3), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="not contiguous"):
        f(torch.randn(3, 5).t(), torch.tensor([1]))
    g = torch.compile(lambda w, i, o: et.embedding_bag(i, w, o, mode="median"))
    with pytest.raises(ValueError, match="mode"):
        g(torch.randn(5, 3), torch.tensor([1]), torch.tensor([0]))
    # An id out of range is found at run time, inside the op: IndexError, weight intact.
    h = torch.compile(lambda w, i: et.embedding(i, w, max_norm=1.0), fullgraph=True)
    w = torch.randn(5, 3) * 10
    before = w.clone()
    with pytest.raises(IndexError, match="index 7"):
        h(w, torch.tensor([1, 7]))
    exact(w, before)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        (dict(offsets=torch.tensor([1, 2])), ValueError),  # offsets[0] != 0
        (dict(offsets=torch.tensor([0, 3, 2])), ValueError),  # decreasing
        (dict(offsets=torch.tensor([0, 2]), include_last_offset=True), ValueError),
        (dict(per_sample_weights=torch.ones(4, dtype=torch.float64)), TypeError),
        (dict(input=torch.tensor([0, 1, 9, 3])), IndexError),
    ],
)
def test_compiled_bad_bag_with_max_norm_leaves_weight_unchanged(kw, error):
    """Every argument is checked before the renorm writes, as in eager."""
    args = {"input": torch.tensor([0, 1, 2, 3]), "offsets": torch.tensor([0, 2])}
    args.update(kw)

    def f(w, input, offsets, per_sample_weights=None, include_last_offset=False):
        return et.embedding_bag(
            input,
            w,
            offsets,
            max_norm=1.0,
            mode="sum",
            per_sample_weights=per_sample_weights,
            include_last_offset=include_last_offset,
        )

    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) * 10
    before = w.clone()
    with pytest.raises(error):
        torch.compile(f)(w, **args)
    exact(w, before)


def test_torch_export_keeps_the_custom_op():
    """torch.export (serving) captures the layer as one embtable op, results unchanged."""
    torch.manual_seed(4)
    layer = et.EmbeddingBag(50, 4, mode="mean", padding_idx=7)
    ids = torch.randint(0, 50, (12,))
    offsets = torch.tensor([0, 5, 9])
    exported = torch.export.export(layer, (ids, offsets))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert torch.ops.embtable.embedding_bag.default in targets, targets
    exact(exported.module()(ids, offsets), layer(ids, offsets))


# After the graph break, dynamo reads .grad of the eager output while it wraps it
# (torch's own warning, silent outside pytest's warnings-as-errors).
@pytest.mark.filterwarnings(
    "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"
)
@pytest.mark.parametrize("bag", [False, True])
def test_compiled_sparse_layer_runs_eagerly_and_matches(bag):
    """sparse=True under torch.compile: a graph break, then the eager kernels; the
    output and the sparse gradient are the eager ones, bit for bit."""
    torch.manual_seed(5)
    V, D = 30, 4
    ids = torch.randint(0, V, (11,))
    offsets = torch.tensor([0, 4, 4, 9])
    results = []
    for compile_it in (True, False):
        torch.manual_seed(6)
        layer = (
            et.EmbeddingBag(V, D, mode="sum", sparse=True)
            if bag
            else et.Embedding(V, D, sparse=True)
        )

        def step(ids, layer=layer):
            out = layer(ids, offsets) if bag else layer(ids)
            return (out * torch.arange(out.numel()).reshape(out.shape)).sum(), out

        fn = torch.compile(step) if compile_it else step
        loss, out = fn(ids)
        loss.backward()
        g = layer.weight.grad
        assert g.is_sparse
        results.append((out.detach(), g.coalesce().to_dense()))
    exact(results[0][0], results[1][0])
    exact(results[0][1], results[1][1])


def test_import_does_not_load_dynamo():
    """`import embtable.torch` costs what `import torch` does: torch._dynamo (about a
    second) loads only when something compiles."""
    import subprocess
    import sys

    code = (
        "import sys, torch; loaded = 'torch._dynamo' in sys.modules; "
        "import embtable.torch; print(loaded, 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    before, after = out.stdout.split()
    assert after == before, out.stderr
