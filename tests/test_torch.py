"""embtable.torch against torch.nn itself: forward, gradients, optimizers, gradcheck."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
et = pytest.importorskip("embtable.torch")

DTYPES = [torch.float32, torch.float64]


def tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}


def close(a, b, dtype, **kw):
    a = a.to_dense() if a.layout != torch.strided else a
    b = b.to_dense() if b.layout != torch.strided else b
    torch.testing.assert_close(a, b, **{**tol(dtype), **kw})


def pair(cls_ours, cls_ref, *args, dtype, seed=0, **kw):
    torch.manual_seed(seed)
    ref = cls_ref(*args, dtype=dtype, **kw)
    ours = cls_ours(*args, dtype=dtype, **kw)
    with torch.no_grad():
        ours.weight.copy_(ref.weight)
    return ours, ref


# --- Embedding ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
@pytest.mark.parametrize("shape", [(), (7,), (4, 6), (2, 3, 5), (0, 3)])
def test_embedding_forward_and_grad(
    dtype, padding_idx, sparse, scale_grad_by_freq, shape
):
    V, D = 13, 5
    kw = dict(padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)
    ours, ref = pair(
        et.Embedding, torch.nn.Embedding, V, D, dtype=dtype, sparse=sparse, **kw
    )
    # torch refuses sparse + scale_grad_by_freq, and its sparse backward fails on 0-d
    # ids: its dense gradient is the oracle there.
    ref.sparse = sparse and not scale_grad_by_freq and shape != ()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, shape, generator=gen)
    if ids.numel():
        ids.view(-1)[0] = V - 1  # the padding row (-1) appears
    out, expected = ours(ids), ref(ids)
    assert type(ours) is et.Embedding and isinstance(ours, torch.nn.Embedding)
    assert out.dtype == dtype and out.shape == expected.shape == (*shape, D)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    g = torch.randn(out.shape, dtype=dtype, generator=gen)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    grad = ours.weight.grad
    assert grad.layout == (torch.sparse_coo if sparse else torch.strided)
    if sparse:
        assert grad.is_coalesced()
        rows = grad.indices()[0]
        assert torch.all(rows[1:] > rows[:-1])
        if padding_idx is not None:
            assert (padding_idx % V) not in rows.tolist()
    close(grad, ref.weight.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf")])
def test_embedding_max_norm(dtype, norm_type):
    ours, ref = pair(
        et.Embedding,
        torch.nn.Embedding,
        20,
        6,
        dtype=dtype,
        max_norm=0.7,
        norm_type=norm_type,
    )
    ids = torch.tensor([[1, 3, 3], [7, 1, 19]])
    ptr = ours.weight.data_ptr()
    out, expected = ours(ids), ref(ids)
    assert ours.weight.data_ptr() == ptr  # renormed in place
    close(ours.weight.detach(), ref.weight.detach(), dtype)
    # The output is exactly the renormed rows.
    torch.testing.assert_close(out, ours.weight.detach()[ids], rtol=0, atol=0)
    close(out, expected, dtype)
    out.sum().backward()
    expected.sum().backward()
    close(ours.weight.grad, ref.weight.grad, dtype)


def test_embedding_from_pretrained_and_state_dict():
    w = torch.randn(6, 3)
    ours = et.Embedding.from_pretrained(w, freeze=False, padding_idx=2)
    ref = torch.nn.Embedding.from_pretrained(w, freeze=False, padding_idx=2)
    assert type(ours) is et.Embedding
    assert ours.padding_idx == ref.padding_idx == 2
    assert ours.weight.requires_grad
    torch.testing.assert_close(ours.weight, ref.weight)
    frozen = et.Embedding.from_pretrained(w)
    assert not frozen.weight.requires_grad
    torch.testing.assert_close(frozen(torch.tensor([5, 0])), w[[5, 0]])
    # state dicts are interchangeable with torch.nn.Embedding.
    other = torch.nn.Embedding(6, 3)
    other.load_state_dict(ours.state_dict())
    torch.testing.assert_close(other.weight, ours.weight)
    assert repr(ours).startswith("Embedding(6, 3, padding_idx=2")


# --- EmbeddingBag -------------------------------------------------------------------


def bag_inputs(layout, V, gen):
    if layout == "2d":
        return torch.randint(0, V, (5, 4), generator=gen), None, False
    ids = torch.randint(0, V, (19,), generator=gen)
    offsets = torch.tensor([0, 4, 4, 9, 15])  # an empty bag too
    if layout == "last":
        return ids, torch.cat([offsets, torch.tensor([19])]), True
    return ids, offsets, False


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("layout", ["offsets", "last", "2d"])
@pytest.mark.parametrize("padding_idx", [None, 3])
@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_bag_forward_and_grad(dtype, mode, layout, padding_idx, sparse):
    V, D = 11, 6
    gen = torch.Generator().manual_seed(2)
    ids, offsets, last = bag_inputs(layout, V, gen)
    ids.view(-1)[:3] = 3  # padding ids, and a bag that is all padding in 2-D
    kw = dict(mode=mode, padding_idx=padding_idx, include_last_offset=last)
    ours, ref = pair(et.EmbeddingBag, torch.nn.EmbeddingBag, V, D, dtype=dtype, **kw)
    ours.sparse = sparse
    ref.sparse = sparse and mode != "max"  # torch refuses sparse max bags
    out, expected = ours(ids, offsets), ref(ids, offsets)
    assert out.shape == expected.shape and out.dtype == dtype
    close(out, expected, dtype)
    g = torch.randn(out.shape, dtype=dtype, generator=gen)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    grad = ours.weight.grad
    assert grad.layout == (torch.sparse_coo if sparse else torch.strided)
    if sparse:
        assert grad.is_coalesced()
    close(grad, ref.weight.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["offsets", "2d"])
@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_bag_per_sample_weights(dtype, layout, sparse):
    V, D = 9, 4
    gen = torch.Generator().manual_seed(3)
    ids, offsets, _ = bag_inputs(layout, V, gen)
    ours, ref = pair(
        et.EmbeddingBag,
        torch.nn.EmbeddingBag,
        V,
        D,
        dtype=dtype,
        mode="sum",
        sparse=sparse,
        padding_idx=2,
    )
    w1 = torch.rand(ids.shape, dtype=dtype, generator=gen, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_()
    out, expected = ours(ids, offsets, w1), ref(ids, offsets, w2)
    close(out, expected, dtype)
    g = torch.randn(out.shape, dtype=dtype, generator=gen)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    close(ours.weight.grad, ref.weight.grad, dtype)
    close(w1.grad, w2.grad, dtype)


def bag_by_embedding(ids, offsets, weight, mode, padding_idx):
    """A sum / mean bag built from torch's embedding (scale_grad_by_freq) + index_add."""
    rows = torch.nn.functional.embedding(
        ids, weight, padding_idx=padding_idx, scale_grad_by_freq=True
    )
    keep = (ids != padding_idx).to(weight.dtype) if padding_idx is not None else None
    if keep is not None:
        rows = rows * keep[:, None]
    bag = torch.bucketize(torch.arange(len(ids)), offsets, right=True) - 1
    out = torch.zeros(len(offsets), weight.shape[1], dtype=weight.dtype)
    out = out.index_add(0, bag, rows)
    if mode == "mean":
        n = torch.zeros(len(offsets), dtype=weight.dtype).index_add(
            0,
            bag,
            keep if keep is not None else torch.ones(len(ids), dtype=weight.dtype),
        )
        out = out / n.clamp(min=1)[:, None]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding_bag_scale_grad_by_freq(dtype, mode, sparse, padding_idx):
    """Each id's gradient divided by its count in the batch, as torch documents it.

    The oracle is torch's Embedding(scale_grad_by_freq=True) pooled by index_add:
    torch.nn.EmbeddingBag's CPU backward divides by another id's count (2.13:
    ids [0, 0, 1, 2, 2, 2, 3] give id 1 the factor 1/2 and id 3 the factor 1/3).
    """
    V, D = 7, 3
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 4, (16,), generator=gen)  # many repeats
    offsets = torch.tensor([0, 5, 5, 11])
    bag = et.EmbeddingBag(
        V,
        D,
        mode=mode,
        scale_grad_by_freq=True,
        sparse=sparse,
        padding_idx=padding_idx,
        dtype=dtype,
    )
    w = bag.weight.detach().clone().requires_grad_()
    out = bag(ids, offsets)
    expected = bag_by_embedding(ids, offsets, w, mode, padding_idx)
    close(out, expected, dtype)
    g = torch.randn(out.shape, dtype=dtype, generator=gen)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    close(bag.weight.grad, w.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["sum", "max"])
def test_embedding_bag_max_norm(dtype, mode):
    ours, ref = pair(
        et.EmbeddingBag,
        torch.nn.EmbeddingBag,
        15,
        4,
        dtype=dtype,
        mode=mode,
        max_norm=0.5,
    )
    ids = torch.tensor([[0, 3, 3], [14, 0, 7]])
    out, expected = ours(ids), ref(ids)
    close(ours.weight.detach(), ref.weight.detach(), dtype)
    close(out, expected, dtype)


def test_embedding_bag_from_pretrained():
    w = torch.randn(5, 2, dtype=torch.float64)
    ours = et.EmbeddingBag.from_pretrained(w, mode="max", padding_idx=0)
    ref = torch.nn.EmbeddingBag.from_pretrained(w, mode="max", padding_idx=0)
    assert type(ours) is et.EmbeddingBag and ours.mode == "max"
    ids = torch.tensor([[0, 1, 4], [0, 0, 0]])
    torch.testing.assert_close(ours(ids), ref(ids))


# --- zero copy ----------------------------------------------------------------------


def test_kernels_run_on_the_tensors_memory(monkeypatch):
    """The core receives weight / grad buffers at the tensors' own addresses."""
    core = et._core
    seen: dict[str, list[int]] = {}

    def spy(name):
        real = getattr(core, name)

        def wrapper(*args, **kwargs):
            for i, a in enumerate(args):
                if isinstance(a, np.ndarray):
                    seen.setdefault(f"{name}:{i}", []).append(a.ctypes.data)
            for k, a in kwargs.items():
                if isinstance(a, np.ndarray):
                    seen.setdefault(f"{name}:{k}", []).append(a.ctypes.data)
            return real(*args, **kwargs)

        monkeypatch.setattr(core, name, wrapper)

    for name in ("gather", "scatter_add", "embedding_bag", "embedding_bag_backward"):
        spy(name)
    emb = et.Embedding(50, 8)
    ids = torch.randint(0, 50, (6, 3))
    out = emb(ids)
    out.sum().backward()
    assert seen["gather:0"] == [emb.weight.data_ptr()]
    assert seen["gather:1"] == [ids.data_ptr()]
    assert seen["gather:out"] == [out.data_ptr()]
    assert seen["scatter_add:0"] == [emb.weight.grad.data_ptr()]

    bag = et.EmbeddingBag(50, 8, mode="sum")
    ids1 = torch.randint(0, 50, (20,))
    offsets = torch.tensor([0, 7, 12])
    out = bag(ids1, offsets)
    out.sum().backward()
    assert seen["embedding_bag:0"] == [bag.weight.data_ptr()]
    assert seen["embedding_bag:1"] == [ids1.data_ptr()]
    assert seen["embedding_bag:2"] == [offsets.data_ptr()]
    assert seen["embedding_bag_backward:target"] == [bag.weight.grad.data_ptr()]


# --- optimizers ---------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # in Adagrad
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "opt, sparse",
    [
        ("SGD", False),
        ("SGD", True),
        ("SparseAdam", True),
        ("Adagrad", True),
        ("Adagrad", False),
        ("Adam", False),
    ],
)
@pytest.mark.parametrize("module", ["Embedding", "EmbeddingBag"])
def test_optimizers_step_as_with_torch(dtype, opt, sparse, module):
    V, D = 40, 6
    kw = {"sparse": sparse}
    if module == "EmbeddingBag":
        kw["mode"] = "mean"
    ours, ref = pair(
        getattr(et, module), getattr(torch.nn, module), V, D, dtype=dtype, **kw
    )
    make = getattr(torch.optim, opt)
    lr = {"SGD": 0.5, "SparseAdam": 0.05, "Adagrad": 0.3, "Adam": 0.05}[opt]
    o1, o2 = make(ours.parameters(), lr=lr), make(ref.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        ids = torch.randint(0, V, (8, 3), generator=gen)
        target = torch.randn(8, 3, D, dtype=dtype, generator=gen)
        if module == "EmbeddingBag":
            target = target[:, 0]
        for m, o in ((ours, o1), (ref, o2)):
            o.zero_grad()
            ((m(ids) - target) ** 2).sum().backward()
            o.step()
        close(ours.weight.detach(), ref.weight.detach(), dtype)


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("module", ["Embedding", "EmbeddingBag"])
def test_dense_gradient_memory_is_reused_only_when_nothing_holds_it(
    module, set_to_none
):
    # Dense gradients are kept per weight and reused once their .grad is dropped;
    # a gradient still held anywhere is never written again.
    V, D = 50, 4
    ours, ref = pair(
        getattr(et, module), getattr(torch.nn, module), V, D, dtype=torch.float32
    )
    gen = torch.Generator().manual_seed(9)
    ptrs, kept = [], []
    for step in range(5):
        ids = torch.randint(0, V, (6, 3), generator=gen)
        for m in (ours, ref):
            m.zero_grad(set_to_none=set_to_none)
            m(ids).pow(2).sum().backward()
        close(ours.weight.grad, ref.weight.grad, torch.float32)
        ptrs.append(ours.weight.grad.data_ptr())
        if step == 2:  # a user keeps this step's gradient
            kept.append((ours.weight.grad, ours.weight.grad.clone()))
            ours.weight.grad = None
    for held, copy in kept:
        assert torch.equal(held, copy)  # later steps did not write into it
    if set_to_none:
        assert ptrs[0] == ptrs[1] == ptrs[2]  # freed each step: the same memory
        assert ptrs[3] != ptrs[2]  # step 2's is still held: new memory
        assert ptrs[4] == ptrs[3]
    else:
        # .grad stays and accumulates each step's (temporary) gradient.
        assert len(set(ptrs[:3])) == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("module", ["Embedding", "EmbeddingBag"])
def test_sparse_adam_steps_as_torch_sparse_adam(dtype, maximize, module, monkeypatch):
    fused = []
    real = et._core.optim_step
    monkeypatch.setattr(
        et._core,
        "optim_step",
        lambda kind, *a, **k: (fused.append(kind), real(kind, *a, **k)),
    )
    V, D = 60, 5
    ours, ref = pair(
        getattr(et, module), getattr(torch.nn, module), V, D, dtype=dtype, sparse=True
    )
    kw = {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "maximize": maximize}
    o1, o2 = (
        et.SparseAdam(ours.parameters(), **kw),
        torch.optim.SparseAdam(ref.parameters(), **kw),
    )
    assert isinstance(o1, torch.optim.SparseAdam)
    gen = torch.Generator().manual_seed(11)
    for _ in range(6):
        ids = torch.randint(
            0, V // 3, (7, 4), generator=gen
        )  # rows repeat across steps
        for m, o in ((ours, o1), (ref, o2)):
            o.zero_grad()
            m(ids).pow(2).sum().backward()
            o.step()
        close(ours.weight.detach(), ref.weight.detach(), dtype)
    assert fused == ["adam"] * 6  # the embtable kernel ran every step
    s1, s2 = o1.state[ours.weight], o2.state[ref.weight]
    assert s1["step"] == s2["step"] == 6
    close(s1["exp_avg"], s2["exp_avg"], dtype)
    close(s1["exp_avg_sq"], s2["exp_avg_sq"], dtype)
    untouched = torch.ones(V, dtype=torch.bool)
    untouched[: V // 3] = False
    assert not s1["exp_avg"][untouched].any()  # lazy: other rows keep zero moments


def test_sparse_adam_state_dict_is_torch_s_and_resumes():
    V, D = 30, 4
    ours, ref = pair(
        et.Embedding, torch.nn.Embedding, V, D, dtype=torch.float64, sparse=True
    )
    o1 = et.SparseAdam(ours.parameters(), lr=0.1)
    o2 = torch.optim.SparseAdam(ref.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, V, (9,), generator=gen) for _ in range(5)]

    def run(m, o, ids):
        o.zero_grad()
        m(ids).sum().backward()
        o.step()

    for ids in batches[:3]:
        run(ours, o1, ids)
        run(ref, o2, ids)
    # Swap the optimizers' states: each continues from the other's.
    sd1, sd2 = o1.state_dict(), o2.state_dict()
    o1.load_state_dict(sd2)
    o2.load_state_dict(sd1)
    for ids in batches[3:]:
        run(ours, o1, ids)
        run(ref, o2, ids)
    close(ours.weight.detach(), ref.weight.detach(), torch.float64)


def test_sparse_adam_other_params_use_torch_s_update_and_dense_grads_raise():
    p = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))  # 1-D: torch's path
    q = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 4, 4]]),
        torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64),
        (10,),
        check_invariants=True,
    )
    o1, o2 = et.SparseAdam([p], lr=0.1), torch.optim.SparseAdam([q], lr=0.1)
    for _ in range(3):
        p.grad, q.grad = grad.clone(), grad.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)
    assert p[4] != 0 and p[0] == 0
    p.grad = torch.ones(10, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="dense gradients"):
        o1.step()


# --- gradcheck ----------------------------------------------------------------------


def test_gradcheck_embedding():
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(9, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    ids = torch.randint(0, 9, (4, 5), generator=gen)
    assert torch.autograd.gradcheck(lambda w: et.embedding(ids, w), (w,))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("layout", ["offsets", "2d"])
def test_gradcheck_embedding_bag(mode, layout):
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(12, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    ids, offsets, _ = bag_inputs(layout, 12, gen)
    assert torch.autograd.gradcheck(
        lambda w: et.embedding_bag(ids, w, offsets, mode=mode, padding_idx=4), (w,)
    )
    if mode == "sum":
        psw = torch.rand(
            ids.shape, dtype=torch.float64, generator=gen, requires_grad=True
        )
        assert torch.autograd.gradcheck(
            lambda w, p: et.embedding_bag(
                ids, w, offsets, mode="sum", per_sample_weights=p
            ),
            (w, psw),
        )


# --- errors -------------------------------------------------------------------------


def test_other_device_is_a_type_error():
    w = torch.empty(4, 3, device="meta")
    with pytest.raises(TypeError, match="meta"):
        et.embedding(torch.tensor([0]), w)
    with pytest.raises(TypeError, match="meta"):
        et.embedding(torch.tensor([0], device="meta"), torch.zeros(4, 3))
    bag = et.EmbeddingBag(4, 3, device="meta")
    with pytest.raises(TypeError, match="meta"):
        bag(torch.tensor([[0, 1]]))


def test_bad_weights_and_ids():
    w = torch.randn(3, 3)
    with pytest.raises(ValueError, match="contiguous"):
        et.embedding(torch.tensor([0]), w.t())
    with pytest.raises(ValueError, match="contiguous"):
        et.embedding_bag(torch.tensor([[0]]), torch.randn(4, 6)[:, ::2])
    with pytest.raises(TypeError, match="float32"):
        et.embedding(torch.tensor([0]), torch.zeros(4, 3, dtype=torch.float16))
    with pytest.raises(TypeError, match="integer"):
        et.embedding(torch.tensor([0.0]), w)
    with pytest.raises(IndexError, match="out of bounds"):
        et.embedding(torch.tensor([3]), w)
    before = w.clone()
    with pytest.raises(IndexError):
        et.embedding(torch.tensor([0, 5]), w, max_norm=0.1)
    assert torch.equal(w, before)  # validated before the renorm
    with pytest.raises(ValueError, match="per_sample_weights"):
        et.embedding_bag(
            torch.tensor([[0, 1]]), w, mode="mean", per_sample_weights=torch.ones(1, 2)
        )
    with pytest.raises(ValueError, match="offsets"):
        et.embedding_bag(torch.tensor([0, 1]), w)
    with pytest.raises(ValueError, match="mode"):
        et.embedding_bag(torch.tensor([[0, 1]]), w, mode="median")


# Dynamo's own warnings when it resumes after the graph break (torch.jit use; a
# look at .grad of our output, a non-leaf) are not ours to fix.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_torch_compile_runs_and_matches():
    torch._dynamo.reset()

    class Net(torch.nn.Module):
        def __init__(self, bag):
            super().__init__()
            self.bag = bag
            self.lin = torch.nn.Linear(8, 2)

        def forward(self, ids, offsets):
            return torch.tanh(self.lin(self.bag(ids, offsets))).sum()

    torch.manual_seed(8)
    ours = Net(et.EmbeddingBag(30, 8, mode="sum", sparse=True))
    ref = Net(torch.nn.EmbeddingBag(30, 8, mode="sum", sparse=True))
    ref.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours)
    ids = torch.randint(0, 30, (25,))
    offsets = torch.tensor([0, 5, 11, 20])
    loss, expected = compiled(ids, offsets), ref(ids, offsets)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    close(ours.bag.weight.grad, ref.bag.weight.grad, torch.float32)
    close(ours.lin.weight.grad, ref.lin.weight.grad, torch.float32)


def test_import_embtable_does_not_import_torch():
    code = "import sys, embtable; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
