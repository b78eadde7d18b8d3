"""embtable.distributed on a local Ray cluster (loopback, 4 logical CPUs): sharded
layers equal the single-process layers bit for bit, checkpoints restore onto another
number of shards, and a dead or stuck shard gives a clear error, never a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import embtable  # noqa: E402
from embtable import distributed as dist  # noqa: E402

OPTIMIZERS = [
    {"name": "sgd", "learning_rate": 0.1},
    {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    {"name": "adagrad", "learning_rate": 0.1},
    {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5, "centered": True},
    {"name": "adam", "learning_rate": 0.01},
]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def _train(single, opt, sharded, rng, steps, V, D, shape=(6, 3)):
    """The same random steps on a single-process layer and a sharded one."""
    for _ in range(steps):
        ids = rng.integers(0, V, size=shape)
        ids[0, 0] = ids[-1, -1]  # repeats
        g = rng.standard_normal(shape + (D,)).astype(single.embeddings.dtype)
        y1 = single(ids)
        y2 = sharded(ids)
        np.testing.assert_array_equal(y2, y1)
        single.backward(g)
        sharded.backward(g)
        opt.step(single)
        sharded.step()
        single.zero_grad()
        sharded.zero_grad()


@pytest.mark.parametrize("k", range(len(OPTIMIZERS)))
def test_sharded_embedding_trains_bitwise_as_one_process(k):
    cfg = OPTIMIZERS[k]
    rng = np.random.default_rng(k)
    V, D, S = int(rng.integers(20, 90)), int(rng.integers(1, 20)), 2 + k % 3
    dtype = np.float64 if k == 1 else np.float32
    pad = int(rng.integers(0, V)) if k == 2 else None
    single = embtable.Embedding(V, D, sparse=True, seed=k, dtype=dtype, padding_idx=pad)
    opt = embtable.optimizers.get(dict(cfg))
    with dist.ShardedEmbedding(
        V, D, S, optimizer=dict(cfg), seed=k, dtype=dtype, padding_idx=pad
    ) as sharded:
        np.testing.assert_array_equal(sharded.get_weights()[0], single.embeddings)
        _train(single, opt, sharded, rng, 4, V, D)
        # Gradient accumulated over two calls before one step.
        for _ in range(2):
            ids = rng.integers(0, V, size=(5,))
            g = rng.standard_normal((5, D)).astype(dtype)
            single(ids)
            sharded(ids)
            single.backward(g)
            sharded.backward(g)
        opt.step(single)
        sharded.step()
        assert sharded.iterations == opt.iterations(single)
        np.testing.assert_array_equal(sharded.get_weights()[0], single.embeddings)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_sharded_bag_trains_bitwise_as_one_process(mode):
    rng = np.random.default_rng(len(mode))
    V, D = 70, 9
    single = embtable.EmbeddingBag(V, D, mode=mode, sparse=True, seed=3, padding_idx=5)
    opt = embtable.optimizers.Adam(0.01)
    with dist.ShardedEmbeddingBag(
        V, D, 3, mode=mode, optimizer=opt.get_config(), seed=3, padding_idx=5
    ) as sharded:
        for step in range(3):
            ids = rng.integers(0, V, size=(12,))
            ids[3] = 5
            offsets = np.array([0, 4, 4, 9])  # bags of 4, 0, 5, 3
            w = None
            if mode == "sum" and step == 1:
                w = rng.standard_normal(12).astype(np.float32)
            y1 = single(ids, offsets, per_sample_weights=w)
            y2 = sharded(ids, offsets, per_sample_weights=w)
            np.testing.assert_array_equal(y2, y1)
            g = rng.standard_normal(y1.shape).astype(np.float32)
            single.backward(g)
            sharded.backward(g)
            opt.step(single)
            sharded.step()
            single.zero_grad()
            sharded.zero_grad()
        ids2 = rng.integers(0, V, size=(4, 3))  # 2-D ids: bags of 3
        np.testing.assert_array_equal(sharded(ids2), single(ids2))
        np.testing.assert_array_equal(sharded.get_weights()[0], single.embeddings)


def test_sharded_bag_per_sample_weights_grad_and_reused_inputs():
    # backward sets per_sample_weights_grad as EmbeddingBag does, and reads the
    # offsets and weights of its forward even when the caller reuses its arrays.
    V, D = 20, 3
    rng = np.random.default_rng(4)
    single = embtable.EmbeddingBag(V, D, mode="sum", sparse=True, seed=0, padding_idx=7)
    opt = embtable.optimizers.SGD(0.5)
    with dist.ShardedEmbeddingBag(
        V, D, 3, mode="sum", optimizer=opt.get_config(), seed=0, padding_idx=7
    ) as sharded:
        ids = np.array([1, 7, 12, 19, 7, 5, 1])
        offsets = np.array([0, 2, 5])
        w = rng.standard_normal(7).astype(np.float32)
        g = rng.standard_normal((3, D)).astype(np.float32)
        for layer in (single, sharded):
            layer(ids, offsets, per_sample_weights=w)
        offsets[1] = 4  # the caller reuses its arrays before backward
        w[:] = 100
        for layer in (single, sharded):
            layer.backward(g)
        np.testing.assert_array_equal(
            sharded.per_sample_weights_grad, single.per_sample_weights_grad
        )
        opt.step(single)
        sharded.step()
        np.testing.assert_array_equal(sharded.get_weights()[0], single.embeddings)
        single(ids, offsets)
        sharded(ids, offsets)
        single.backward(g)
        sharded.backward(g)
        assert sharded.per_sample_weights_grad is None
        assert single.per_sample_weights_grad is None


def test_checkpoint_restores_onto_another_number_of_shards(tmp_path):
    rng = np.random.default_rng(7)
    V, D = 53, 6
    single = embtable.Embedding(V, D, sparse=True, seed=1)
    opt = embtable.optimizers.Adam(0.02)
    a = dist.ShardedEmbedding(V, D, 3, optimizer=opt.get_config(), seed=1)
    _train(single, opt, a, rng, 3, V, D)
    a.save(tmp_path / "ck")
    first = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    _train(single, opt, a, rng, 1, V, D)
    a.save(tmp_path / "ck")  # the second save replaces the first
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert files == sorted(["manifest.json"] + [s["file"] for s in manifest["shards"]])
    assert not {s["file"] for s in first["shards"]} & set(files)
    want = a.get_weights()[0]
    a.shutdown()
    for S in (2, 4):
        b = dist.ShardedEmbedding.load(tmp_path / "ck", num_shards=S)
        assert b.num_shards == S and b.iterations == 4
        np.testing.assert_array_equal(b.get_weights()[0], want)
        if S == 4:
            _train(single, opt, b, rng, 2, V, D)
            np.testing.assert_array_equal(b.get_weights()[0], single.embeddings)
        b.shutdown()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a checkpoint"):
        dist.ShardedEmbedding.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="ShardedEmbedding"):
        dist.ShardedEmbeddingBag.load(tmp_path / "ck")


def test_a_killed_shard_is_named_and_training_resumes_from_the_checkpoint(tmp_path):
    rng = np.random.default_rng(11)
    V, D = 40, 4
    single = embtable.Embedding(V, D, sparse=True, seed=2)
    opt = embtable.optimizers.Adagrad(0.1)
    a = dist.ShardedEmbedding(V, D, 3, optimizer=opt.get_config(), seed=2, timeout=30)
    _train(single, opt, a, rng, 2, V, D)
    a.save(tmp_path / "ck")
    os.kill(a.pids[1], signal.SIGKILL)
    ids = np.arange(V)  # touches every shard
    with pytest.raises(
        dist.ShardError, match=r"shard 1 \(of 3, rows \[13, 26\)\) died"
    ) as e:
        a(ids)
    assert e.value.shard == 1
    # A lookup changes nothing; a step would be partial: it fails, and so does
    # every later call until the table is restored.
    a._saved = {"ids": ids}
    with pytest.raises(dist.ShardError, match="shard 1"):
        a.backward(np.ones((V, D), np.float32))
    with pytest.raises(dist.ShardError, match="restore it from the last checkpoint"):
        a(np.array([0]))
    a.shutdown()
    b = dist.ShardedEmbedding.load(tmp_path / "ck", num_shards=2, timeout=30)
    _train(single, opt, b, rng, 2, V, D)
    np.testing.assert_array_equal(b.get_weights()[0], single.embeddings)
    b.shutdown()


def test_a_stuck_shard_times_out_instead_of_hanging():
    a = dist.ShardedEmbedding(20, 3, 2, timeout=2.0)
    os.kill(a.pids[0], signal.SIGSTOP)
    try:
        with pytest.raises(
            dist.ShardError, match=r"shard 0 \(of 2\) did not answer"
        ) as e:
            a(np.array([1, 15]))
        assert e.value.shard == 0
    finally:
        os.kill(a.pids[0], signal.SIGKILL)
        a.shutdown()


def test_a_table_after_ray_shutdown_raises_shard_error():
    # In a process of its own: this module's Ray instance stays up.
    code = """
import numpy as np, ray
from embtable import distributed as dist
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
a = dist.ShardedEmbedding(12, 2, 2, seed=0)
ray.shutdown()
for call in (lambda: a(np.array([1, 7])), a.get_weights):
    try:
        call()
        raise SystemExit("no error")
    except dist.ShardError as e:
        assert "Ray was shut down" in str(e), e
assert not ray.is_initialized()  # no new Ray instance behind the caller's back
a.shutdown()
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_bad_input_raises_before_any_remote_change():
    with dist.ShardedEmbedding(10, 2, 2, seed=0) as a:
        before = a.get_weights()[0]
        with pytest.raises(IndexError, match="index 10 at position \\(1,\\)"):
            a(np.array([3, 10]))
        a(np.array([1, 2]))
        with pytest.raises(ValueError, match="shape"):
            a.backward(np.ones((3, 2), np.float32))
        a.step()  # no gradient: nothing happens
        assert a.iterations == 0
        np.testing.assert_array_equal(a.get_weights()[0], before)
    with pytest.raises(ValueError, match="num_shards"):
        dist.ShardedEmbedding(3, 2, 4)
    for pad in (10, -1, 1.0, True):
        with pytest.raises(ValueError) as want:
            embtable.Embedding(10, 2, padding_idx=pad)
        with pytest.raises(ValueError) as got:
            dist.ShardedEmbedding(10, 2, 2, padding_idx=pad)
        assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match="mode"):
        dist.ShardedEmbeddingBag(3, 2, 2, mode="median")


def _outcome(f, *args):
    try:
        return ("ok", f(*args).tolist())
    except Exception as e:  # noqa: BLE001 (the type and message are compared)
        return (type(e).__name__, str(e))


def test_ids_and_grad_output_are_checked_as_in_one_process():
    # Whole float ids are accepted (Keras feeds float ids), other floats, bad dtypes
    # and out-of-range ids raise the single-process layer's errors; a grad_output
    # of a non-numeric dtype is a TypeError, not a silent cast.
    V, D = 10, 2
    single = embtable.Embedding(V, D, sparse=True, seed=0)
    single_bag = embtable.EmbeddingBag(V, D, mode="sum", sparse=True, seed=0)
    ids_cases = [
        np.array([1.0, 8.0]),
        [3.0, 9.0],
        np.array([12.0, 1.0]),
        np.array([1.5]),
        np.array([np.nan]),
        np.array([-1, 2]),
        np.array([2**63 + 5, 1], np.uint64),
        np.array([True, False]),
    ]
    with (
        dist.ShardedEmbedding(V, D, 2, seed=0) as a,
        dist.ShardedEmbeddingBag(V, D, 2, mode="sum", seed=0) as bag,
    ):
        for ids in ids_cases:
            assert _outcome(a, ids) == _outcome(single, ids), ids
            assert _outcome(bag, ids, [0]) == _outcome(single_bag, ids, [0]), ids
        before = a.get_weights()[0]
        single(np.array([1, 8]))
        a(np.array([1, 8]))
        for g in (
            np.ones((2, D), np.complex64),
            np.ones((2, D), bool),
            np.full((2, D), "1"),
            np.ones((2, D), object),
        ):
            want = _outcome(single.backward, g)
            assert want[0] == "TypeError"
            assert _outcome(a.backward, g) == want
        a.step()
        np.testing.assert_array_equal(a.get_weights()[0], before)


def test_a_shut_down_table_says_so_and_writes_nothing(tmp_path):
    a = dist.ShardedEmbedding(10, 2, 2, seed=0)
    a.shutdown()
    for call in (lambda: a(np.array([1])), a.get_weights, a.zero_grad):
        with pytest.raises(dist.ShardError, match=r"was shut down \(shutdown\(\)\)"):
            call()
    with pytest.raises(dist.ShardError, match="shut down"):
        a.save(tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    a.shutdown()  # twice: nothing happens


def test_import_embtable_does_not_import_ray():
    code = "import embtable, sys; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the initial table, made by the shards ------------------------------------------
# Every initializer whose rows the shards make without the driver building the table:
# alone ("fill", "uniform") or from the driver's stream, block by block ("normal",
# "truncated_normal").
SHARD_MADE = [
    "uniform",
    {"class_name": "RandomUniform", "config": {"minval": -1.5, "maxval": 0.25}},
    "glorot_uniform",
    "he_uniform",
    "lecun_uniform",
    {
        "class_name": "VarianceScaling",
        "config": {"mode": "fan_out", "distribution": "uniform"},
    },
    "zeros",
    "ones",
    {"class_name": "Constant", "config": {"value": 0.75}},
    "normal",
    {"class_name": "VarianceScaling", "config": {"distribution": "untruncated_normal"}},
    "truncated_normal",
    "glorot_normal",
    "he_normal",
    "lecun_normal",
]


def _no_driver_table(*args, **kwargs):
    raise AssertionError("the driver built the whole table")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", range(len(SHARD_MADE)))
def test_shards_make_the_single_process_initial_rows(k, dtype, monkeypatch):
    init = SHARD_MADE[k]
    rng = np.random.default_rng(100 + k)
    V = 2 * int(rng.integers(10, 60)) + 1  # odd: blocks of unequal, odd sizes
    D = int(rng.integers(1, 9))
    S = 2 + (k + (dtype is np.float64)) % 3
    pad = int(rng.integers(0, V)) if k % 2 else None
    kw = dict(embeddings_initializer=init, seed=k, dtype=dtype, padding_idx=pad)
    single = embtable.Embedding(V, D, **kw)
    # The driver never builds the table (Embedding is how it would).
    monkeypatch.setattr(dist, "Embedding", _no_driver_table)
    with dist.ShardedEmbedding(V, D, S, **kw) as sharded:
        got = sharded.get_weights()[0]
    assert got.dtype == single.embeddings.dtype
    np.testing.assert_array_equal(got, single.embeddings)


def test_truncated_normal_redraws_span_the_shards():
    # Enough entries that every shard has values to redraw, over several rounds.
    V, D = 301, 40
    init = embtable.initializers.get("truncated_normal", 5)
    raw = np.random.default_rng(5).standard_normal((V, D), dtype=np.float32)
    assert np.abs(raw).max() > 2
    single = embtable.Embedding(V, D, embeddings_initializer=init, seed=5)
    with dist.ShardedEmbedding(V, D, 4, embeddings_initializer=init, seed=5) as s:
        np.testing.assert_array_equal(s.get_weights()[0], single.embeddings)
    assert np.abs(single.embeddings).max() <= 2 * 0.05


def test_orthogonal_and_callables_are_built_by_the_driver(monkeypatch):
    def ramp(shape, dtype=None):
        return np.arange(np.prod(shape), dtype=dtype).reshape(shape)

    for init in ("orthogonal", ramp):
        single = embtable.Embedding(9, 4, embeddings_initializer=init, seed=1)
        with dist.ShardedEmbedding(9, 4, 2, embeddings_initializer=init, seed=1) as s:
            np.testing.assert_array_equal(s.get_weights()[0], single.embeddings)
    monkeypatch.setattr(dist, "Embedding", _no_driver_table)
    with pytest.raises(AssertionError, match="the driver built"):
        dist.ShardedEmbedding(9, 4, 2, embeddings_initializer="orthogonal", seed=1)


def test_user_weights_are_sliced_and_keep_their_padding_row():
    w = np.random.default_rng(0).standard_normal((11, 3))
    single = embtable.Embedding(11, 3, weights=w, dtype="float64", padding_idx=4)
    with dist.ShardedEmbedding(
        11, 3, 3, weights=w, dtype="float64", padding_idx=4
    ) as s:
        np.testing.assert_array_equal(s.get_weights()[0], single.embeddings)
        np.testing.assert_array_equal(s.get_weights()[0], w)


# -- checkpoints: one layer checkpoint per shard ------------------------------------
def _slot_names(opt):
    return [name for _, name in opt._slot_layout()]


@pytest.mark.parametrize(
    ("k", "before", "after"), [(3, 3, 2), (1, 2, 4), (4, 4, 3), (2, 3, 1)]
)
def test_save_then_load_onto_other_shard_counts_trains_bitwise(
    k, before, after, tmp_path
):
    cfg = OPTIMIZERS[k]
    rng = np.random.default_rng(200 + k)
    V, D = 2 * int(rng.integers(15, 40)) + 1, int(rng.integers(2, 7))
    dtype = np.float64 if k % 2 else np.float32
    kw = dict(embeddings_initializer="glorot_normal", seed=k, dtype=dtype)
    single = embtable.Embedding(V, D, sparse=True, **kw)
    opt = embtable.optimizers.get(dict(cfg))
    with dist.ShardedEmbedding(V, D, before, optimizer=dict(cfg), **kw) as a:
        _train(single, opt, a, rng, 3, V, D)
        a.save(tmp_path / "ck")
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    # Each shard file alone is a layer checkpoint of its rows and optimizer state.
    assert [s["start"] for s in manifest["shards"]] == list(
        dist._bounds(V, before)[:-1]
    )
    for s in manifest["shards"]:
        lo, hi = s["start"], s["stop"]
        opt1 = embtable.optimizers.get(dict(cfg))
        part = embtable.Embedding.load(tmp_path / "ck" / s["file"], optimizer=opt1)
        assert part.embeddings.shape == (hi - lo, D)
        np.testing.assert_array_equal(part.embeddings, single.embeddings[lo:hi])
        assert opt1.iterations(part) == opt.iterations(single) == 3
        for name in _slot_names(opt):
            np.testing.assert_array_equal(
                opt1.state(part)[name], opt.state(single)[name][lo:hi]
            )
    with dist.ShardedEmbedding.load(tmp_path / "ck", num_shards=after) as b:
        assert b.num_shards == after and b.iterations == 3
        np.testing.assert_array_equal(b.get_weights()[0], single.embeddings)
        _train(single, opt, b, rng, 3, V, D)
        np.testing.assert_array_equal(b.get_weights()[0], single.embeddings)


def _member_data_end(path, member):
    """The offset just past the data of a stored zip member."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = path.read_bytes()
    at = info.header_offset
    name_len = int.from_bytes(raw[at + 26 : at + 28], "little")
    extra_len = int.from_bytes(raw[at + 28 : at + 30], "little")
    return at + 30 + name_len + extra_len + info.file_size


def test_bad_shard_files_raise_value_error_naming_the_file(tmp_path):
    cfg = {"name": "adam", "learning_rate": 0.01}
    rng = np.random.default_rng(3)
    V, D = 31, 4
    single = embtable.Embedding(V, D, sparse=True, seed=3)
    opt = embtable.optimizers.get(dict(cfg))
    with dist.ShardedEmbedding(V, D, 2, optimizer=dict(cfg), seed=3) as a:
        _train(single, opt, a, rng, 1, V, D)
        a.save(tmp_path / "old")
        _train(single, opt, a, rng, 1, V, D)
        a.save(tmp_path / "ck")
    good = tmp_path / "ck"
    m = json.loads((good / "manifest.json").read_text())
    names = [s["file"] for s in m["shards"]]
    old = json.loads((tmp_path / "old" / "manifest.json").read_text())

    def broken(how):
        d = tmp_path / how
        d.mkdir()
        for n in names + ["manifest.json"]:
            (d / n).write_bytes((good / n).read_bytes())
        return d, d / names[1]

    cases = []
    d, f = broken("corrupt")  # one byte of the table's data: only the CRC tells
    raw = bytearray(f.read_bytes())
    raw[_member_data_end(f, "embeddings.npy") - 1] ^= 0x40
    f.write_bytes(bytes(raw))
    cases.append((d, f, "CRC|damaged"))
    d, f = broken("truncated")
    f.write_bytes(f.read_bytes()[:-100])
    cases.append((d, f, "truncated|damaged"))
    d, f = broken("missing")
    f.unlink()
    cases.append((d, f, "missing"))
    d, f = broken("foreign")
    with open(f, "wb") as fh:
        np.savez(fh, embeddings=np.zeros((V - 15, D), np.float32))
    cases.append((d, f, "not an embtable checkpoint"))
    d, f = broken("stale")  # the file of an older checkpoint under the new name
    f.write_bytes((tmp_path / "old" / old["shards"][1]["file"]).read_bytes())
    cases.append((d, f, "optimizer step 1 but the manifest at step 2"))
    d, f = broken("other_table")
    embtable.Embedding(V - 15, D + 1, seed=0).save(
        f, optimizer=embtable.optimizers.get(dict(cfg))
    )
    cases.append((d, f, r"holds a \(16, 5\) float32 table"))
    for d, f, what in cases:
        for S in (2, 3):
            with pytest.raises(ValueError, match=what) as e:
                dist.ShardedEmbedding.load(d, num_shards=S)
            assert str(f) in str(e.value)
    # Another optimizer than the files': the manifest and files disagree.
    d = tmp_path / "other_optimizer"
    d.mkdir()
    for n in names:
        (d / n).write_bytes((good / n).read_bytes())
    m2 = dict(m, optimizer={"name": "adam", "learning_rate": 0.5})
    (d / "manifest.json").write_text(json.dumps(m2))
    with pytest.raises(ValueError, match="other Adam hyperparameters") as e:
        dist.ShardedEmbedding.load(d)
    assert names[0] in str(e.value)
    # A manifest whose layer config is missing or has unknown keys: ValueError.
    for name, config in (("no_config", None), ("extra_config", {"foo": 1})):
        d = tmp_path / name
        d.mkdir()
        for n in names:
            (d / n).write_bytes((good / n).read_bytes())
        m3 = dict(m)
        if config is None:
            del m3["config"]
        else:
            m3["config"] = config
        (d / "manifest.json").write_text(json.dumps(m3))
        with pytest.raises(ValueError, match="damaged manifest") as e:
            dist.ShardedEmbedding.load(d)
        assert "manifest.json" in str(e.value)
    # A shard file named by a path (here the older checkpoint's, through ".."): load
    # reads only plain names in the checkpoint's folder.
    d = tmp_path / "outside"
    d.mkdir()
    for n in names:
        (d / n).write_bytes((good / n).read_bytes())
    m4 = json.loads(json.dumps(m))
    m4["shards"][1]["file"] = "../old/" + old["shards"][1]["file"]
    (d / "manifest.json").write_text(json.dumps(m4))
    assert (d / m4["shards"][1]["file"]).is_file()  # it exists, outside the folder
    with pytest.raises(ValueError, match="not a file name in the checkpoint folder"):
        dist.ShardedEmbedding.load(d)
    # The good checkpoint still loads.
    with dist.ShardedEmbedding.load(good, num_shards=3) as b:
        np.testing.assert_array_equal(b.get_weights()[0], single.embeddings)
