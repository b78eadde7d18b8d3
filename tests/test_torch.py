"""embtable.torch against torch.nn itself: forward, gradients, optimizers, gradcheck."""

from __future__ import annotations

import copy as copy_module
import io
import pickle
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


@pytest.mark.parametrize(
    "norm_type", [0.0, float("-inf"), float("inf"), 1.0, 2.0, 0.5, -1.0, 3.0]
)
@pytest.mark.parametrize("module", ["Embedding", "EmbeddingBag"])
def test_max_norm_every_norm_type(module, norm_type):
    """torch.embedding_renorm_ takes torch.norm's p: 0 counts non-zeros, -inf is
    min |x|, a negative p is (sum |x|^p)^(1/p) (0 for a row with a zero)."""
    max_norm = {0.0: 2.0, float("-inf"): 0.3, -1.0: 0.1}.get(norm_type, 1.0)
    kw = dict(max_norm=max_norm, norm_type=norm_type)
    if module == "EmbeddingBag":
        kw["mode"] = "sum"
    ours, ref = pair(
        getattr(et, module), getattr(torch.nn, module), 12, 5, dtype=torch.float64, **kw
    )
    with torch.no_grad():
        for m in (ours, ref):
            m.weight[::3, ::2] = 0  # zeros: fewer non-zeros, a zero p = -1 norm
    before = ours.weight.detach().clone()
    ids = torch.tensor([[1, 3, 3], [7, 1, 11]])
    out, expected = ours(ids), ref(ids)
    close(ours.weight.detach(), ref.weight.detach(), torch.float64)
    close(out, expected, torch.float64)
    looked_up = torch.tensor([1, 3, 7, 11])
    assert not torch.equal(ours.weight[looked_up], before[looked_up])  # renormed


def test_embedding_bag_from_pretrained():
    w = torch.randn(5, 2, dtype=torch.float64)
    ours = et.EmbeddingBag.from_pretrained(w, mode="max", padding_idx=0)
    ref = torch.nn.EmbeddingBag.from_pretrained(w, mode="max", padding_idx=0)
    assert type(ours) is et.EmbeddingBag and ours.mode == "max"
    ids = torch.tensor([[0, 1, 4], [0, 0, 0]])
    torch.testing.assert_close(ours(ids), ref(ids))


# --- what backward reads: saved, version-checked -------------------------------------


def bag_call(mod, ids, offsets, psw, **kw):
    torch.manual_seed(0)
    bag = mod.EmbeddingBag(10, 2, mode="sum", **kw)
    return bag, bag(ids, offsets, per_sample_weights=psw)


@pytest.mark.parametrize("changed", ["input", "offsets", "per_sample_weights"])
@pytest.mark.parametrize("psw_grad", [False, True])
def test_bag_inputs_changed_in_place_before_backward_raise_as_in_torch(
    changed, psw_grad
):
    # A refilled input buffer would silently change the gradient: torch raises.
    for mod in (torch.nn, et):
        ids = torch.tensor([1, 2, 3, 4])
        offsets = torch.tensor([0, 2])
        psw = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=psw_grad)
        bag, out = bag_call(mod, ids, offsets, psw)
        with torch.no_grad():
            {"input": ids, "offsets": offsets, "per_sample_weights": psw}[changed][
                1
            ] = 0
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out[0].sum().backward()


def test_embedding_input_changed_in_place_before_backward_raises():
    for mod in (torch.nn, et):
        ids = torch.tensor([1, 2, 1])
        out = mod.Embedding(5, 3)(ids)
        ids[0] = 4
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_weight_changed_after_forward_as_in_torch(mode):
    """weight is saved only for the per_sample_weights gradient, as torch does: a
    second max_norm call (renorming the table in place) before one backward works."""
    ours, ref = pair(
        et.EmbeddingBag, torch.nn.EmbeddingBag, 10, 3, dtype=torch.float64, mode=mode
    )
    for m in (ours, ref):
        m.max_norm = 0.5
        o1 = m(torch.tensor([[0, 1]]))
        o2 = m(torch.tensor([[2, 3], [1, 5]]))  # renorms rows 2, 3, 5 in place
        with torch.no_grad():
            m.weight[9] = 7.0  # any in-place edit
        (o1.sum() + (o2 * torch.arange(6.0).reshape(2, 3)).sum()).backward()
    close(ours.weight.grad, ref.weight.grad, torch.float64)
    close(ours.weight.detach(), ref.weight.detach(), torch.float64)


def test_bag_weight_changed_before_per_sample_weights_grad_raises_as_in_torch():
    for mod in (torch.nn, et):
        psw = torch.tensor([[1.0, 2.0]], requires_grad=True)
        bag, out = bag_call(mod, torch.tensor([[1, 2]]), None, psw)
        with torch.no_grad():
            bag.weight[5] = 1.0
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


BAD_BAG_CALLS = {
    "first offset not 0": (dict(offsets=torch.tensor([1])), ValueError),
    "offsets decrease": (dict(offsets=torch.tensor([0, 2, 1])), ValueError),
    "offset past the end": (dict(offsets=torch.tensor([0, 4])), ValueError),
    "last offset is not len": (
        dict(offsets=torch.tensor([0, 1]), include_last_offset=True),
        ValueError,
    ),
    "psw dtype": (
        dict(per_sample_weights=torch.ones(3, dtype=torch.float64)),
        TypeError,
    ),
    "psw shape": (dict(per_sample_weights=torch.ones(2)), ValueError),
    "psw with mean": (dict(per_sample_weights=torch.ones(3), mode="mean"), ValueError),
    "mode": (dict(mode="median"), ValueError),
    "padding_idx": (dict(padding_idx=9), ValueError),
    "id out of range": (dict(input=torch.tensor([0, 1, 5])), IndexError),
    "float ids": (dict(input=torch.tensor([0.0, 1.0, 2.0])), TypeError),
    "2-D ids with offsets": (dict(input=torch.tensor([[0, 1, 2]])), ValueError),
}


@pytest.mark.parametrize("case", list(BAD_BAG_CALLS))
def test_bad_bag_call_with_max_norm_leaves_weight_unchanged(case):
    """Every argument is checked before the max_norm renorm writes to weight."""
    kw, error = BAD_BAG_CALLS[case]
    args = dict(input=torch.tensor([0, 1, 2]), offsets=torch.tensor([0, 1]), mode="sum")
    args.update(kw)
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) * 10
    before = w.clone()
    with pytest.raises(error):
        et.embedding_bag(weight=w, max_norm=1.0, **args)
    assert torch.equal(w, before)
    # The same call without the mistake renorms.
    et.embedding_bag(torch.tensor([0, 1, 2]), w, torch.tensor([0, 1]), max_norm=1.0)
    assert not torch.equal(w, before)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        (dict(input=torch.tensor([0, 5])), IndexError),
        (dict(padding_idx=7), ValueError),
        (dict(input=torch.tensor([0.0])), TypeError),
    ],
)
def test_bad_embedding_call_with_max_norm_leaves_weight_unchanged(kw, error):
    args = {"input": torch.tensor([0, 1]), **kw}
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) * 10
    before = w.clone()
    with pytest.raises(error):
        et.embedding(weight=w, max_norm=1.0, **args)
    assert torch.equal(w, before)


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


def test_sparse_adam_fully_sparse_grad_takes_torch_s_update():
    # A 2-D parameter with a sparse_dim() == 2 gradient (element-wise COO, not rows).
    grad = torch.sparse_coo_tensor(
        torch.tensor([[0, 1, 4, 1], [0, 2, 1, 2]]),
        torch.tensor([1.0, 2.0, 3.0, 0.5]),
        (6, 3),
        check_invariants=True,
    )
    params = []
    for cls in (et.SparseAdam, torch.optim.SparseAdam):
        p = torch.nn.Parameter(
            torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        )
        opt = cls([p], lr=0.1)
        for _ in range(2):
            p.grad = grad.clone()
            opt.step()
        params.append((p, opt.state[p]))
    (p, s), (q, t) = params
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)
    assert s["step"] == t["step"] == 2
    torch.testing.assert_close(s["exp_avg"], t["exp_avg"], rtol=0, atol=0)


def test_sparse_adam_checks_every_gradient_before_updating_any():
    """A dense gradient anywhere: RuntimeError, and no parameter or state changed
    (torch would already have made and counted the state of earlier parameters)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.nn.Parameter(torch.randn(4, 2, generator=gen))
    b = torch.nn.Parameter(torch.randn(4, 2, generator=gen))
    c = torch.nn.Parameter(torch.randn(4, 2, generator=gen))
    opt = et.SparseAdam([{"params": [a, b]}, {"params": [c]}], lr=0.1)
    row = torch.sparse_coo_tensor(
        torch.tensor([[1]]), torch.ones(1, 2), (4, 2), check_invariants=True
    )
    a.grad, b.grad, c.grad = row.clone(), row.clone(), row.clone()
    opt.step()  # every parameter has state now
    before = [x.detach().clone() for x in (a, b, c)]
    states = [
        {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[x].items()}
        for x in (a, b, c)
    ]
    for dense in (b, c):  # later in the group, in a later group
        a.grad, b.grad, c.grad = row.clone(), row.clone(), row.clone()
        dense.grad = torch.ones(4, 2)
        with pytest.raises(RuntimeError, match="dense gradients"):
            opt.step()
        for x, x0, s0 in zip((a, b, c), before, states, strict=True):
            assert torch.equal(x.detach(), x0)
            assert opt.state[x]["step"] == s0["step"] == 1
            assert torch.equal(opt.state[x]["exp_avg"], s0["exp_avg"])
    # A first step that fails makes no state.
    fresh = et.SparseAdam([a, b], lr=0.1)
    a.grad, b.grad = row.clone(), torch.ones(4, 2)
    with pytest.raises(RuntimeError, match="dense gradients"):
        fresh.step()
    assert len(fresh.state) == 0 and torch.equal(a.detach(), before[0])


def test_sparse_adam_failed_fused_update_changes_no_state():
    p = torch.nn.Parameter(torch.zeros(4, 2))
    opt = et.SparseAdam([p], lr=0.1)
    # A row past the end (torch's invariant checks are off by default).
    p.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 9]]), torch.ones(2, 2), (4, 2), check_invariants=False
    )
    with pytest.raises(IndexError):
        opt.step()
    assert len(opt.state) == 0 and not p.detach().any()


# --- the coalesced flag of sparse gradients -------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "torch.save", "deepcopy"])
@pytest.mark.parametrize("module", ["Embedding", "EmbeddingBag"])
def test_sparse_grad_stays_coalesced_after_the_module_is_copied(module, how):
    layer = getattr(et, module)(6, 3, sparse=True)
    ids = torch.tensor([[1, 2, 1]])
    layer(ids).sum().backward()  # the hook is registered
    if how == "pickle":
        copy_ = pickle.loads(pickle.dumps(layer))
    elif how == "deepcopy":
        copy_ = copy_module.deepcopy(layer)
    else:
        buf = io.BytesIO()
        torch.save(layer, buf)
        buf.seek(0)
        copy_ = torch.load(buf, weights_only=False)
    for m in (layer, copy_):
        m.zero_grad()
        m(ids).sum().backward()
        assert m.weight.grad.is_coalesced()
        hooks = m.weight._post_accumulate_grad_hooks.values()
        assert sum(h is et._keep_coalesced for h in hooks) == 1


def test_a_gradient_that_never_reached_grad_leaves_no_stale_reference():
    """torch.autograd.grad frees our sparse gradient: nothing about it is kept that a
    later gradient at the same address could be mistaken for."""
    emb = et.Embedding(10, 4, sparse=True)
    (g,) = torch.autograd.grad(emb(torch.tensor([1, 2])).sum(), emb.weight)
    ref = et._GRAD_VALUES[emb.weight]
    assert not ref.expired()
    del g
    assert ref.expired()
    # A later uncoalesced gradient made by torch stays uncoalesced.
    torch.nn.functional.embedding(
        torch.tensor([3, 3]), emb.weight, sparse=True
    ).sum().backward()
    assert not emb.weight.grad.is_coalesced()
    assert emb.weight.grad._indices().tolist() == [[3, 3]]


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


# --- double backward (create_graph=True) ----------------------------------------------


@pytest.mark.parametrize(
    ("padding_idx", "scale_grad_by_freq"), [(None, False), (2, False), (None, True)]
)
def test_gradgradcheck_embedding(padding_idx, scale_grad_by_freq):
    gen = torch.Generator().manual_seed(12)
    w = torch.randn(9, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    ids = torch.randint(0, 9, (4, 5), generator=gen)
    ids[0, :2] = 2

    def f(w):
        return et.embedding(
            ids, w, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq
        )

    assert torch.autograd.gradgradcheck(f, (w,))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("layout", ["offsets", "last", "2d"])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_gradgradcheck_embedding_bag(mode, layout, scale_grad_by_freq):
    gen = torch.Generator().manual_seed(13)
    w = torch.randn(12, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    ids, offsets, last = bag_inputs(layout, 12, gen)
    kw = dict(
        mode=mode,
        padding_idx=4,
        include_last_offset=last,
        scale_grad_by_freq=scale_grad_by_freq,
    )
    assert torch.autograd.gradgradcheck(
        lambda w: et.embedding_bag(ids, w, offsets, **kw), (w,)
    )
    if mode == "sum":
        psw = torch.rand(
            ids.shape, dtype=torch.float64, generator=gen, requires_grad=True
        )
        assert torch.autograd.gradgradcheck(
            lambda w, p: et.embedding_bag(ids, w, offsets, per_sample_weights=p, **kw),
            (w, psw),
        )


def penalized_step(weight, lin, forward, sparse):
    """A gradient penalty: loss + ||dloss/dweight||^2, backpropagated."""
    loss = lin(forward(weight)).pow(2).sum()
    (gw,) = torch.autograd.grad(loss, weight, create_graph=True)
    assert gw.grad_fn is not None
    assert gw.layout == (torch.sparse_coo if sparse else torch.strided)
    penalty = (gw.to_dense() if sparse else gw).pow(2).sum()
    (loss + penalty).backward()
    return gw.detach()


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("module", ["Embedding", "sum", "mean", "max", "psw"])
def test_gradient_penalty_as_with_torch(module, sparse):
    """torch.nn.EmbeddingBag has no double backward (2.13: "the derivative for
    '_embedding_bag_backward' is not implemented"); the oracle pools the rows of
    torch.nn.functional.embedding with sum / mean / max over each bag instead."""
    gen = torch.Generator().manual_seed(15)
    w0 = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    ids = torch.tensor([[0, 1, 1], [4, 7, 1]])
    psw0 = torch.linspace(0.5, 2.0, 6, dtype=torch.float64).reshape(2, 3)
    mode = "sum" if module == "psw" else module
    F = torch.nn.functional

    def ours(w, p):
        if module == "Embedding":
            return et.embedding(ids, w, sparse=sparse)
        return et.embedding_bag(ids, w, mode=mode, per_sample_weights=p, sparse=sparse)

    def theirs(w, p):
        rows = F.embedding(ids, w, sparse=sparse and module != "max")
        if module == "Embedding":
            return rows
        if p is not None:
            rows = rows * p.unsqueeze(-1)
        if mode == "max":
            return rows.max(1).values
        return rows.sum(1) if mode == "sum" else rows.mean(1)

    results = []
    for fn in (ours, theirs):
        torch.manual_seed(1)
        lin = torch.nn.Linear(3, 2, dtype=torch.float64)
        w = w0.clone().requires_grad_()
        p = psw0.clone().requires_grad_() if module == "psw" else None
        is_sparse = sparse and (fn is ours or module != "max")
        gw = penalized_step(w, lin, lambda w, fn=fn, p=p: fn(w, p), is_sparse)
        if is_sparse and fn is ours:
            assert gw.is_coalesced()
        results.append((gw, w.grad, lin.weight.grad, lin.bias.grad, p))
    (gw, *rest, p), (rgw, *rrest, rp) = results
    close(gw, rgw, torch.float64)
    for got, want in zip(rest, rrest, strict=True):
        close(got, want, torch.float64)
    if p is not None:
        close(p.grad, rp.grad, torch.float64)


# --- torch.func -----------------------------------------------------------------------


def func_loss(module, x, *rest):
    def loss(params, x, *rest):
        return torch.func.functional_call(module, params, (x, *rest)).pow(2).sum()

    return loss


# torch's own warning: its EmbeddingBag backward has no batching rule.
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("module", ["Embedding", "sum", "mean", "max"])
def test_torch_func_grad_and_per_sample_grads(module):
    """Under torch.func transforms torch's own kernels run: same results as torch.nn."""
    if module == "Embedding":
        args = (et.Embedding, torch.nn.Embedding, 6, 3)
        kw = dict(padding_idx=1)
    else:
        args = (et.EmbeddingBag, torch.nn.EmbeddingBag, 6, 3)
        kw = dict(mode=module, padding_idx=1)
    ours, ref = pair(*args, dtype=torch.float64, **kw)
    ids = torch.tensor([[0, 2, 2], [1, 3, 5]])
    results = []
    for m in (ours, ref):
        params = {k: v.detach() for k, v in m.named_parameters()}
        loss = func_loss(m, ids)
        g = torch.func.grad(loss)(params, ids)["weight"]
        per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(
            params, ids.unsqueeze(1)
        )["weight"]
        results.append((g, per_sample))
    for got, want in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, want)
    assert results[0][1].shape == (2, 6, 3)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_torch_func_functional_forms_with_per_sample_weights():
    gen = torch.Generator().manual_seed(14)
    w = torch.randn(7, 4, dtype=torch.float64, generator=gen)
    ids = torch.tensor([0, 3, 3, 6, 1])
    offsets = torch.tensor([0, 2])
    psw = torch.rand(5, dtype=torch.float64, generator=gen)
    for fn in (et.embedding_bag, torch.nn.functional.embedding_bag):

        def loss(w, p, fn=fn):
            out = fn(ids, w, offsets, mode="sum", per_sample_weights=p)
            return out.pow(2).sum()

        got = torch.func.grad(loss, argnums=(0, 1))(w, psw)
        jac = torch.func.jacrev(lambda w, fn=fn: fn(ids, w, offsets, mode="sum"))(w)
        if fn is et.embedding_bag:
            ours = (got, jac)
        else:
            theirs = (got, jac)
    torch.testing.assert_close(ours[0][0], theirs[0][0])
    torch.testing.assert_close(ours[0][1], theirs[0][1])
    torch.testing.assert_close(ours[1], theirs[1])
    g = torch.func.grad(lambda w: et.embedding(ids, w, max_norm=None).sum())(w)
    torch.testing.assert_close(
        g, torch.func.grad(lambda w: torch.nn.functional.embedding(ids, w).sum())(w)
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
