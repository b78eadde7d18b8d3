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
    with pytest.raises(ValueError, match="mode"):
        dist.ShardedEmbeddingBag(3, 2, 2, mode="median")


def test_import_embtable_does_not_import_ray():
    code = "import embtable, sys; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
