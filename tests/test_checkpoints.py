"""Checkpoints: save/load with optimizer state, bitwise resume, atomic saves under
SIGKILL, bad files (each error names the file), opt.set_state."""

from __future__ import annotations

import concurrent.futures
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from embtable import Embedding, EmbeddingBag, _checkpoint, initializers, optimizers

V, D = 40, 6

OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "sgd-momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
    "sgd-nesterov": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: optimizers.Adagrad(0.1),
    "rmsprop": lambda: optimizers.RMSprop(0.01),
    "rmsprop-centered": lambda: optimizers.RMSprop(0.01, centered=True),
    "rmsprop-momentum": lambda: optimizers.RMSprop(0.01, momentum=0.5),
    "rmsprop-centered-momentum": lambda: optimizers.RMSprop(
        0.01, momentum=0.5, centered=True
    ),
    "adam": lambda: optimizers.Adam(0.01),
}

LAYERS = {
    "embedding": lambda sparse, dtype: Embedding(
        V, D, seed=3, sparse=sparse, padding_idx=1, dtype=dtype
    ),
    "bag-sum": lambda sparse, dtype: EmbeddingBag(
        V, D, mode="sum", seed=3, sparse=sparse, dtype=dtype
    ),
    "bag-max": lambda sparse, dtype: EmbeddingBag(
        V, D, mode="max", seed=3, sparse=sparse, max_norm=1.0, dtype=dtype
    ),
}


def _train_step(layer, opt, step: int) -> None:
    """One forward / backward / step, its ids and gradient fixed by ``step``."""
    r = np.random.default_rng(1000 + step)
    if isinstance(layer, EmbeddingBag):
        ids = r.integers(0, V, size=(5, 4))
        y = layer(ids)
    else:
        ids = r.integers(0, V // 2, size=(3, 7))  # rows >= V/2 never touched
        y = layer(ids)
    layer.backward(r.standard_normal(y.shape).astype(y.dtype))
    opt.step(layer)
    layer.zero_grad()


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] if k == "iterations" else _bits(a[k]) == _bits(b[k]) for k in a
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_resume_is_bitwise(tmp_path, opt_name, kind, sparse, dtype):
    # 8 steps without stopping.
    straight = LAYERS[kind](sparse, dtype)
    opt = OPTIMIZERS[opt_name]()
    for s in range(8):
        _train_step(straight, opt, s)

    # 3 steps, save, load into a new layer and a new optimizer, 5 more steps.
    first = LAYERS[kind](sparse, dtype)
    opt1 = OPTIMIZERS[opt_name]()
    for s in range(3):
        _train_step(first, opt1, s)
    path = first.save(tmp_path / "ck", optimizer=opt1)
    del first, opt1
    opt2 = OPTIMIZERS[opt_name]()
    resumed = type(straight).load(path, optimizer=opt2)
    assert type(resumed) is type(straight)
    assert opt2.iterations(resumed) == 3
    for s in range(3, 8):
        _train_step(resumed, opt2, s)

    assert resumed.embeddings.dtype == np.dtype(dtype)
    assert _bits(resumed.embeddings) == _bits(straight.embeddings)
    assert _same_state(opt2.state(resumed), opt.state(straight))
    assert opt2.iterations(resumed) == 8


def test_resume_without_the_state_differs(tmp_path):
    # The resume test has teeth: Adam restarted from zero moments and step 0 drifts.
    a = Embedding(V, D, seed=3)
    opt = optimizers.Adam(0.01)
    for s in range(3):
        _train_step(a, opt, s)
    path = a.save(tmp_path / "ck", optimizer=opt)
    with_state, fresh = optimizers.Adam(0.01), optimizers.Adam(0.01)
    b = Embedding.load(path, optimizer=with_state)
    c = Embedding.load(path)
    for s in range(3, 5):
        _train_step(a, opt, s)
        _train_step(b, with_state, s)
        _train_step(c, fresh, s)
    assert _bits(b.embeddings) == _bits(a.embeddings)
    assert _bits(c.embeddings) != _bits(a.embeddings)


def test_file_holds_the_state_and_reads_without_pickle(tmp_path):
    layer = Embedding(V, D, seed=0)
    opt = optimizers.RMSprop(0.01, momentum=0.5, centered=True)
    _train_step(layer, opt, 0)
    path = layer.save(str(tmp_path / "ck"), optimizer=opt)
    assert isinstance(path, Path) and path == tmp_path / "ck.npz"
    with np.load(path, allow_pickle=False) as data:
        assert data.files[0] == "embeddings"
        np.testing.assert_array_equal(data["embeddings"], layer.embeddings)
        assert str(data["format"]) == "embtable.Embedding"
        assert int(data["format_version"]) == _checkpoint.FORMAT_VERSION
        assert json.loads(str(data["config"])) == layer.get_config()
        assert str(data["optimizer.class"]) == "RMSprop"
        cfg = json.loads(str(data["optimizer.config"]))
        assert optimizers.get(cfg).get_config() == opt.get_config()
        assert int(data["optimizer.state.iterations"]) == 1
        for name in ("velocity", "momentum", "average_gradient"):
            np.testing.assert_array_equal(
                data["optimizer.state." + name], opt.state(layer)[name]
            )


def test_plain_sgd_saves_only_its_step_count(tmp_path):
    layer = EmbeddingBag(V, D, seed=0)
    opt = optimizers.SGD(0.5)
    _train_step(layer, opt, 0)
    path = layer.save(tmp_path / "bag", opt)
    with np.load(path, allow_pickle=False) as data:
        state_keys = [k for k in data.files if k.startswith("optimizer.state.")]
    assert state_keys == ["optimizer.state.iterations"]
    opt2 = optimizers.SGD(0.5)
    back = EmbeddingBag.load(path, opt2)
    assert opt2.state(back) == {"iterations": 1}


def test_load_into_an_optimizer_that_trains_other_layers(tmp_path):
    other = Embedding(V, D, seed=9)
    opt = optimizers.Adam(0.01)
    _train_step(other, opt, 7)
    before = {k: np.copy(v) for k, v in opt.state(other).items()}
    saved = Embedding(V, D, seed=1)
    opt_saved = optimizers.Adam(0.01)
    for s in range(2):
        _train_step(saved, opt_saved, s)
    back = Embedding.load(saved.save(tmp_path / "x", opt_saved), opt)
    assert _same_state(opt.state(other), before)
    assert _same_state(opt.state(back), opt_saved.state(saved))
    assert opt.state(back)["momentum"] is not opt_saved.state(saved)["momentum"]


# -- suffix and path rules ---------------------------------------------------------
@pytest.mark.parametrize("as_str", [False, True])
def test_suffix_rules(tmp_path, as_str):
    conv = str if as_str else (lambda p: p)
    layer = Embedding(4, 3, seed=0)
    opt = optimizers.Adagrad()
    assert layer.save(conv(tmp_path / "a"), opt) == tmp_path / "a.npz"
    assert layer.save(conv(tmp_path / "b.npz"), opt) == tmp_path / "b.npz"
    assert layer.save(conv(tmp_path / "c.bin"), opt) == tmp_path / "c.bin.npz"
    for name in ("a", "a.npz", "b", "b.npz", "c.bin", "c.bin.npz"):
        back = Embedding.load(conv(tmp_path / name), optimizers.Adagrad())
        np.testing.assert_array_equal(back.embeddings, layer.embeddings)
    # A file that exists as given is read as given (no suffix added).
    os.replace(tmp_path / "a.npz", tmp_path / "plain")
    assert Embedding.load(conv(tmp_path / "plain")).input_dim == 4
    with pytest.raises(FileNotFoundError):
        Embedding.load(conv(tmp_path / "missing"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.npz",
        "c.bin.npz",
        "plain",
    ]


def test_suffix_as_np_savez_for_a_name_that_is_only_the_suffix(tmp_path):
    # np.savez keeps a name ending in ".npz", ".npz" itself included (pathlib sees
    # no suffix in it); a save there must not become ".npz.npz".
    layer = Embedding(4, 3, seed=0)
    np.savez(tmp_path / ".npz", x=np.zeros(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".npz"]
    assert layer.save(tmp_path / ".npz") == tmp_path / ".npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".npz"]
    np.testing.assert_array_equal(
        Embedding.load(tmp_path / ".npz").embeddings, layer.embeddings
    )


def test_bad_optimizer_argument(tmp_path):
    layer = Embedding(4, 3)
    with pytest.raises(TypeError, match="Optimizer"):
        layer.save(tmp_path / "x", optimizer="adam")
    assert not list(tmp_path.iterdir())
    path = layer.save(tmp_path / "x")
    with pytest.raises(TypeError, match="Optimizer"):
        Embedding.load(path, optimizer="adam")


# -- atomic saves --------------------------------------------------------------------
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    layer = Embedding(V, D, seed=0)
    opt = optimizers.Adam(0.01)
    path = layer.save(tmp_path / "ck", opt)
    old = path.read_bytes()
    layer.embeddings += 1
    _train_step(layer, opt, 0)
    calls = []
    real = _checkpoint._npy_pieces

    def failing(arr):
        calls.append(1)
        if len(calls) == 3:  # after the table and the config were written
            raise exc
        return real(arr)

    monkeypatch.setattr(_checkpoint, "_npy_pieces", failing)
    with pytest.raises(type(exc)):
        layer.save(path, opt)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary left
    monkeypatch.undo()
    assert layer.save(path, opt) == path
    np.testing.assert_array_equal(Embedding.load(path).embeddings, layer.embeddings)


_KILL_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import embtable
    from embtable import optimizers

    path, k = sys.argv[1], int(sys.argv[2])
    layer = embtable.Embedding(2048, 256, name="big")  # 2 MiB; 6 MiB with Adam
    opt = optimizers.Adam(0.01)
    m = np.empty_like(layer.embeddings)
    v = np.empty_like(layer.embeddings)
    while True:
        layer.embeddings.fill(k)
        m.fill(k)
        v.fill(-k)
        opt.set_state(layer, {"iterations": k, "momentum": m, "velocity": v})
        layer.save(path, optimizer=opt)
        print(k, flush=True)
        k += 1
    """
)


def _read_lines(proc: subprocess.Popen, first_only: bool) -> list[int]:
    assert proc.stdout is not None
    if first_only:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the saving child printed nothing in 60 s"
        return [int(proc.stdout.readline())]
    return [int(line) for line in proc.stdout.read().split()]


def test_sigkill_during_saves_leaves_one_whole_version(tmp_path):
    path = tmp_path / "ck.npz"
    r = np.random.default_rng(7)
    for round_ in range(5):
        start = 1000 * (round_ + 1)
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, str(path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            done = _read_lines(proc, first_only=True)
            time.sleep(float(r.uniform(0.0, 0.3)))  # a random moment
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done += _read_lines(proc, first_only=False)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        opt = optimizers.Adam(0.01)
        layer = Embedding.load(path, optimizer=opt)
        k = int(layer.embeddings[0, 0])
        # The last save it reported, or the next one (done, killed before printing).
        assert k in (done[-1], done[-1] + 1)
        assert np.all(layer.embeddings == k)
        state = opt.state(layer)
        assert state["iterations"] == k
        assert np.all(state["momentum"] == k) and np.all(state["velocity"] == -k)
        leftovers = [p.name for p in tmp_path.iterdir() if p != path]
        assert all(n.startswith(".ck.npz.") and n.endswith(".tmp") for n in leftovers)


def test_save_streams_a_memmap_table(tmp_path):
    # A memmap table is written slice by slice, never copied into memory whole.
    V_big, D_big = 16_384, 512  # 32 MiB
    table = np.lib.format.open_memmap(
        tmp_path / "table.npy", mode="w+", dtype=np.float32, shape=(V_big, D_big)
    )
    table[::997] = 1.5
    layer = Embedding(4, D_big)
    layer.embeddings = table
    opt = optimizers.SGD(0.1)
    tracemalloc.start()
    try:
        path = layer.save(tmp_path / "big", opt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < table.nbytes // 8, peak
    with np.load(path, mmap_mode=None, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["embeddings"], table)


def test_many_slices_round_trip(tmp_path, monkeypatch):
    # A table written and read in many slices (CHUNK_BYTES made small) comes back whole.
    layer = Embedding(1000, 7, seed=0, dtype="float64")
    opt = optimizers.Adam()
    _train_step(layer, opt, 0)
    monkeypatch.setattr(_checkpoint, "CHUNK_BYTES", 100)
    path = layer.save(tmp_path / "c", opt)
    opt2 = optimizers.Adam()
    back = Embedding.load(path, opt2)
    assert _bits(back.embeddings) == _bits(layer.embeddings)
    assert _same_state(opt2.state(back), opt.state(layer))


class _InlinePool:
    """A ``ThreadPoolExecutor`` stand-in that runs each task when it is submitted,
    so that the order of the writer's reads of the source is fixed."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        f = concurrent.futures.Future()
        f.set_result(fn(*args))
        return f


class _ChangingFile:
    """A file whose every ``write`` first adds 1 to ``arrays``: another thread
    training between the writer's reading of a slice and its write."""

    def __init__(self, fp, arrays):
        self._fp, self._arrays, self.writes = fp, arrays, 0

    def write(self, data):
        for a in self._arrays:
            a += 1
        self.writes += 1
        return self._fp.write(data)

    def tell(self):
        return self._fp.tell()

    def seek(self, *args):
        return self._fp.seek(*args)


def test_save_while_the_arrays_change_writes_a_loadable_file(tmp_path, monkeypatch):
    # The CRC-32 of each member must describe the bytes written even when the arrays
    # change between the CRC's read and the write's: the file loads, holding a mix of
    # older and newer rows (as np.savez would), never a "Bad CRC-32".
    layer = Embedding(V, D, seed=0)
    opt = optimizers.SGD(0.1, momentum=0.9)
    _train_step(layer, opt, 0)
    layer.embeddings[...] = 0
    momentum = opt.state(layer)["momentum"]
    momentum[...] = 0
    files = []
    real = _checkpoint._write_npz

    def changing(fp, members):
        files.append(_ChangingFile(fp, [layer.embeddings, momentum]))
        return real(files[-1], members)

    monkeypatch.setattr(_checkpoint, "ThreadPoolExecutor", _InlinePool)
    monkeypatch.setattr(_checkpoint, "_write_npz", changing)
    monkeypatch.setattr(_checkpoint, "COPY_BYTES", 64)  # many slices per array
    path = layer.save(tmp_path / "ck", opt)
    assert files[0].writes > 2 * (V * D * 4 // 64)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
    monkeypatch.undo()
    opt2 = optimizers.SGD(0.1, momentum=0.9)
    back = Embedding.load(path, opt2)
    for saved in (back.embeddings, opt2.state(back)["momentum"]):
        versions = np.unique(saved)
        assert len(versions) > 1  # rows from before and after changes, each whole
        assert np.array_equal(versions, np.round(versions)) and versions.min() >= 0
    assert np.all(np.diff(back.embeddings.reshape(-1)) >= 0)  # in the order written


def test_saves_concurrent_with_training_all_load(tmp_path, monkeypatch):
    # What a user may do: save while another thread trains. Each file loads (its
    # rows may mix steps: a consistent snapshot needs the training paused).
    monkeypatch.setattr(_checkpoint, "COPY_BYTES", 4096)
    layer = Embedding(2000, 16, seed=0, sparse=True)
    opt = optimizers.Adam(0.01)
    stop = threading.Event()
    steps = []

    def train():
        r = np.random.default_rng(0)
        while not stop.is_set():
            ids = r.integers(0, 2000, size=64)
            layer.zero_grad()
            y = layer(ids)
            layer.backward(np.ones_like(y))
            opt.step(layer)
            steps.append(1)

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        paths = []
        for i in range(8):
            while len(steps) <= i and trainer.is_alive():  # a step between saves
                time.sleep(0.001)
            paths.append(layer.save(tmp_path / f"ck{i}", optimizer=opt))
    finally:
        stop.set()
        trainer.join()
    for p in paths:
        back = Embedding.load(p, optimizer=optimizers.Adam(0.01))
        assert back.embeddings.shape == (2000, 16)


# -- bad files -----------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    layer = Embedding(V, D, seed=0)
    opt = optimizers.Adam(0.01)
    for s in range(2):
        _train_step(layer, opt, s)
    return layer, opt, layer.save(tmp_path / "good", opt)


def _rewrite(src: Path, dst: Path, drop=(), replace=None) -> Path:
    """Copy the .npz ``src`` to ``dst`` without the members ``drop`` and with the
    arrays in ``replace`` (name -> array)."""
    replace = replace or {}
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k not in drop}
    arrays.update(replace)
    np.savez(dst, **arrays)
    return dst


class _Watch:
    """An optimizer holding another layer's state; ``unchanged()`` checks it."""

    def __init__(self, opt_cls=optimizers.Adam, learning_rate=0.01, **kw):
        self.opt = opt_cls(learning_rate, **kw)
        self.layer = Embedding(V, D, seed=5)
        _train_step(self.layer, self.opt, 3)
        self.before = {k: np.copy(v) for k, v in self.opt.state(self.layer).items()}
        self.n = len(self.opt._states)

    def unchanged(self) -> bool:
        return len(self.opt._states) == self.n and _same_state(
            self.opt.state(self.layer), self.before
        )


def _expect_bad(path: Path, match: str, cls=Embedding, **kw) -> None:
    with pytest.raises(ValueError, match=match) as info:
        cls.load(path, **kw)
    assert str(path) in str(info.value)
    assert type(info.value) in (ValueError, _checkpoint.CheckpointError)


@pytest.mark.parametrize("cut", [0, 3, 30, 0.25, 0.5, 0.9, -22, -1])
def test_truncated(saved, tmp_path, cut):
    _, _, good = saved
    data = good.read_bytes()
    n = cut if isinstance(cut, int) and cut >= 0 else int(len(data) * cut)
    if isinstance(cut, int) and cut < 0:
        n = len(data) + cut
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[:n])
    w = _Watch()
    _expect_bad(bad, "truncated|damaged|not an .npz", optimizer=w.opt)
    assert w.unchanged()


def test_corrupt_table_bytes_fail_the_crc(saved, tmp_path):
    layer, _, good = saved
    data = bytearray(good.read_bytes())
    pos = data.find(layer.embeddings[5].tobytes())
    assert pos > 0
    data[pos + 3] ^= 0x10
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    w = _Watch()
    _expect_bad(bad, "CRC", optimizer=w.opt)
    assert w.unchanged()


def test_random_byte_flips_never_escape_raw_or_load_wrong_data(saved, tmp_path):
    # Each flipped byte either lands in an unchecked field (timestamps, ...) and the
    # checkpoint loads exactly, or the load raises ValueError naming the file.
    layer, opt, good = saved
    data = good.read_bytes()
    r = np.random.default_rng(0)
    bad = tmp_path / "flip.npz"
    errors = 0
    for pos in r.choice(len(data), size=150, replace=False):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(r.integers(8))
        bad.write_bytes(bytes(flipped))
        opt2 = optimizers.Adam(0.01)
        try:
            back = Embedding.load(bad, optimizer=opt2)
        except ValueError as e:
            assert str(bad) in str(e)
            errors += 1
            continue
        assert _bits(back.embeddings) == _bits(layer.embeddings), pos
        assert back.get_config() == layer.get_config(), pos
        assert _same_state(opt2.state(back), opt.state(layer)), pos
    assert errors > 100  # nearly every byte is data, covered by a CRC or a check


def test_every_bit_flip_in_the_zip_directory_is_caught(tmp_path):
    # Every single-bit flip in the central directory and the end records of a small
    # checkpoint either loads it bitwise or raises ValueError naming the file: never
    # zipfile's RuntimeError ("encrypted, password required") or a BadZipFile (a
    # zip64 locator naming another disk).
    layer = Embedding(4, 2, seed=0)
    data = layer.save(tmp_path / "good").read_bytes()
    start = data.find(b"PK\x01\x02")
    assert 0 < start and len(data) - start < 1000
    bad = tmp_path / "flip.npz"
    bad.write_bytes(data)
    outcomes = {"raised": 0, "loaded": 0}
    with open(bad, "r+b", buffering=0) as f:  # one byte rewritten in place: fast
        for pos in range(start, len(data)):
            for bit in range(8):
                f.seek(pos)
                f.write(bytes([data[pos] ^ (1 << bit)]))
                try:
                    back = Embedding.load(bad)
                except ValueError as e:
                    assert str(bad) in str(e), (pos, bit, e)
                    outcomes["raised"] += 1
                    continue
                assert _bits(back.embeddings) == _bits(layer.embeddings), (pos, bit)
                assert back.get_config() == layer.get_config(), (pos, bit)
                outcomes["loaded"] += 1
            f.seek(pos)
            f.write(data[pos : pos + 1])
    assert outcomes["raised"] and outcomes["loaded"]  # e.g. a timestamp: unchecked


def test_directory_flips_the_audit_found(tmp_path):
    layer = Embedding(4, 2, seed=0)
    data = layer.save(tmp_path / "good").read_bytes()
    cases = {
        "encrypted": (
            data.find(b"PK\x01\x02") + 8,
            "'embeddings' is marked as encrypted",
        ),
        "disk": (data.rfind(b"PK\x06\x07") + 4, "damaged: zipfiles that span multiple"),
    }
    for name, (pos, match) in cases.items():
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(flipped)
        _expect_bad(bad, match)


def test_foreign_files(saved, tmp_path):
    layer, _, good = saved
    npy = tmp_path / "table.npz"
    np.save(npy, layer.embeddings)
    os.replace(tmp_path / "table.npz.npy", npy)
    _expect_bad(npy, "not an .npz")
    text = tmp_path / "notes.npz"
    text.write_text("hello\n")
    _expect_bad(text, "not an .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _expect_bad(empty, "not an .npz")
    other = tmp_path / "other.npz"
    np.savez(other, embeddings=layer.embeddings, weights=np.ones(3))
    _expect_bad(other, "not an embtable checkpoint.*'embeddings', 'weights'")
    fmt = _rewrite(good, tmp_path / "fmt.npz", replace={"format": np.array("keras")})
    _expect_bad(fmt, "not an embtable checkpoint: its format is 'keras'")
    zf = tmp_path / "plainzip.npz"
    with zipfile.ZipFile(zf, "w") as z:
        z.writestr("readme.txt", "hi")
    _expect_bad(zf, "not an embtable checkpoint.*holds nothing")
    pickled = _rewrite(
        good, tmp_path / "pickled.npz", replace={"config": np.array([{}], dtype=object)}
    )
    _expect_bad(pickled, "'config' holds Python objects")
    _expect_bad(
        good, "holds a layer of class Embedding, not EmbeddingBag", EmbeddingBag
    )


def test_damaged_entries(saved, tmp_path):
    _, _, good = saved
    cases = {
        "noconfig": (["config"], {}, "no 'config' entry"),
        "notable": (["embeddings"], {}, "no 'embeddings' entry"),
        "badjson": ([], {"config": np.array("{nope")}, "'config' is not valid JSON"),
        "listjson": ([], {"config": np.array("[1]")}, "'config' should be a JSON"),
        "cfgnum": ([], {"config": np.array(3.0)}, "'config' should be a str"),
        "badcfg": (
            [],
            {"config": np.array(json.dumps({"input_dim": V, "output_dim": D, "x": 1}))},
            "config does not make a layer of class Embedding",
        ),
        "shape": (
            [],
            {"embeddings": np.zeros((V, D + 1), np.float32)},
            r"'embeddings' has shape \(40, 7\), expected \(40, 6\)",
        ),
        "dtype": (
            [],
            {"embeddings": np.zeros((V, D), np.float64)},
            "'embeddings' has dtype float64, expected float32",
        ),
        "version": ([], {"format_version": np.array("1")}, "should be an integer"),
    }
    for name, (drop, replace, match) in cases.items():
        path = _rewrite(good, tmp_path / f"{name}.npz", drop=drop, replace=replace)
        w = _Watch()
        _expect_bad(path, match, optimizer=w.opt)
        assert w.unchanged(), name


def test_newer_format_version(saved, tmp_path):
    _, _, good = saved
    newer = _checkpoint.FORMAT_VERSION + 1
    path = _rewrite(
        good, tmp_path / "new.npz", replace={"format_version": np.array(newer)}
    )
    _expect_bad(path, f"newer embtable .*format version {newer}.*upgrade")
    w = _Watch()
    _expect_bad(path, "newer", optimizer=w.opt)
    assert w.unchanged()


def test_version_0_files_still_load(tmp_path):
    # What embtable 0.1.0 wrote: no format_version, no optimizer state.
    layer = Embedding(V, D, seed=4, padding_idx=2)
    path = tmp_path / "old.npz"
    np.savez(
        path,
        embeddings=layer.embeddings,
        config=np.array(json.dumps(layer.get_config())),
        format=np.array("embtable.Embedding"),
    )
    back = Embedding.load(path)
    assert _bits(back.embeddings) == _bits(layer.embeddings)
    w = _Watch()
    _expect_bad(path, "holds no optimizer state", optimizer=w.opt)
    assert w.unchanged()


def test_optimizer_mismatches_leave_it_unchanged(saved, tmp_path):
    layer, _, good = saved
    plain = layer.save(tmp_path / "plain")
    w = _Watch()
    _expect_bad(plain, "holds no optimizer state", optimizer=w.opt)
    assert w.unchanged()
    w = _Watch(optimizers.SGD, learning_rate=0.01, momentum=0.9)
    _expect_bad(good, "state of an optimizer of class Adam, not SGD", optimizer=w.opt)
    assert w.unchanged()
    w = _Watch(optimizers.Adam, learning_rate=0.02)
    _expect_bad(
        good,
        r"other Adam hyperparameters: learning_rate=0.02 \(saved 0.01\)",
        optimizer=w.opt,
    )
    assert w.unchanged()
    w = _Watch(optimizers.Adam, learning_rate=0.01, beta_2=0.99)
    _expect_bad(good, r"beta_2=0.99 \(saved 0.999\)", optimizer=w.opt)
    assert w.unchanged()
    # Without an optimizer, the table loads and the saved state is ignored.
    np.testing.assert_array_equal(Embedding.load(good).embeddings, layer.embeddings)


def test_bad_optimizer_entries(saved, tmp_path):
    _, _, good = saved
    slot = "optimizer.state.velocity"
    cases = {
        "noslot": ([slot], {}, "has no optimizer slot 'velocity'"),
        "extra": (
            [],
            {"optimizer.state.accumulator": np.zeros((V, D), np.float32)},
            "slot 'accumulator', which Adam",
        ),
        "slotshape": (
            [],
            {slot: np.zeros((V, 2), np.float32)},
            rf"'{slot}' has shape \(40, 2\), expected \(40, 6\)",
        ),
        "slotdtype": (
            [],
            {slot: np.zeros((V, D), np.float16)},
            f"'{slot}' has dtype float16, expected float32",
        ),
        "noiter": (["optimizer.state.iterations"], {}, "no 'optimizer.state.iterat"),
        "negiter": (
            [],
            {"optimizer.state.iterations": np.array(-3)},
            "negative optimizer step count",
        ),
        "noclass": (["optimizer.class"], {}, "no 'optimizer.class' entry"),
    }
    for name, (drop, replace, match) in cases.items():
        path = _rewrite(good, tmp_path / f"{name}.npz", drop=drop, replace=replace)
        w = _Watch()
        _expect_bad(path, match, optimizer=w.opt)
        assert w.unchanged(), name
        Embedding.load(path)  # the table alone still loads


def test_byte_swapped_arrays_load(saved, tmp_path):
    layer, opt, good = saved
    swapped = {
        k: np.asarray(v).astype(np.asarray(v).dtype.newbyteorder(">"))
        for k, v in opt.state(layer).items()
        if k != "iterations"
    }
    path = _rewrite(
        good,
        tmp_path / "be.npz",
        replace={
            "embeddings": layer.embeddings.astype(">f4"),
            **{"optimizer.state." + k: v for k, v in swapped.items()},
        },
    )
    opt2 = optimizers.Adam(0.01)
    back = Embedding.load(path, opt2)
    assert back.embeddings.dtype == np.float32 and back.embeddings.dtype.isnative
    assert _bits(back.embeddings) == _bits(layer.embeddings)
    assert _same_state(opt2.state(back), opt.state(layer))


# -- set_state -----------------------------------------------------------------------
def test_set_state_round_trip_copies():
    layer = Embedding(V, D, seed=0, sparse=True)
    opt = optimizers.RMSprop(0.01, momentum=0.5, centered=True)
    for s in range(3):
        _train_step(layer, opt, s)
    state = {
        k: (np.copy(v) if k != "iterations" else v) for k, v in opt.state(layer).items()
    }
    twin = Embedding(V, D, seed=0, sparse=True)
    opt2 = optimizers.RMSprop(0.01, momentum=0.5, centered=True)
    opt2.set_state(twin, state)
    assert _same_state(opt2.state(twin), state)
    state["velocity"][...] = 7  # copied in: later changes to the source don't leak
    assert not np.any(opt2.state(twin)["velocity"] == 7)
    # Into an existing state: the arrays state() returned are updated in place.
    held = opt2.state(twin)["momentum"]
    new = {
        k: (np.full_like(v, 0.5) if k != "iterations" else 11) for k, v in state.items()
    }
    opt2.set_state(twin, new)
    assert np.all(held == 0.5) and opt2.iterations(twin) == 11
    # The state of a layer set from itself is a no-op; np.int64 / 0-d iterations work.
    opt2.set_state(twin, {**opt2.state(twin), "iterations": np.array(12)})
    assert opt2.iterations(twin) == 12 and np.all(held == 0.5)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.pop("velocity"), "missing slot 'velocity'"),
        (lambda s: s.pop("iterations"), "no 'iterations'"),
        (lambda s: s.update(iterations=-1), "int >= 0"),
        (lambda s: s.update(iterations=2.5), "int >= 0"),
        (lambda s: s.update(iterations=True), "int >= 0"),
        (
            lambda s: s.update(momentum=np.zeros((V, D + 1), np.float32)),
            r"slot 'momentum' has shape \(40, 7\)",
        ),
        (
            lambda s: s.update(velocity=np.zeros((V, D), np.float64)),
            "slot 'velocity' has dtype float64",
        ),
        (
            lambda s: s.update(accumulator=np.zeros((V, D), np.float32)),
            "slot 'accumulator'.* does not keep",
        ),
    ],
)
def test_set_state_errors_change_nothing(change, match):
    layer = Embedding(V, D, seed=0)
    opt = optimizers.Adam(0.01)
    _train_step(layer, opt, 0)
    before = {k: np.copy(v) for k, v in opt.state(layer).items()}
    state = {
        k: np.full_like(v, 3.0) if k != "iterations" else 9 for k, v in before.items()
    }
    change(state)
    with pytest.raises(ValueError, match=match):
        opt.set_state(layer, state)
    assert _same_state(opt.state(layer), before)
    fresh = Embedding(V, D)
    with pytest.raises(ValueError, match=match):
        opt.set_state(fresh, state)
    assert opt.iterations(fresh) == 0 and len(opt._states) == 1


def test_set_state_needs_a_mapping():
    layer = Embedding(V, D)
    with pytest.raises(TypeError, match="dict"):
        optimizers.SGD().set_state(layer, [("iterations", 1)])


def test_set_state_then_step_matches():
    # Training continues from a set state exactly as from the original.
    a = Embedding(V, D, seed=2)
    opt_a = optimizers.Adagrad(0.1)
    for s in range(2):
        _train_step(a, opt_a, s)
    b = Embedding(V, D, weights=a.embeddings)
    opt_b = optimizers.Adagrad(0.1)
    opt_b.set_state(b, opt_a.state(a))
    for s in range(2, 4):
        _train_step(a, opt_a, s)
        _train_step(b, opt_b, s)
    assert _bits(a.embeddings) == _bits(b.embeddings)


def _quarter(shape, dtype):
    return np.full(shape, 0.25, dtype)


def test_load_keeps_the_initializer(tmp_path):
    inits = ["glorot_uniform", initializers.RandomNormal(stddev=0.3, seed=4), "zeros"]
    for init in inits:
        layer = Embedding(V, D, embeddings_initializer=init, seed=5)
        back = Embedding.load(layer.save(tmp_path / "i"))
        assert back.get_config() == layer.get_config()
        assert _bits(back.embeddings) == _bits(layer.embeddings)
        draw = back.embeddings_initializer((3, 2), "float32")
        assert _bits(draw) == _bits(layer.embeddings_initializer((3, 2), "float32"))
    layer = Embedding(V, D, embeddings_initializer=_quarter)
    path = layer.save(tmp_path / "custom")
    back = Embedding.load(path, custom_objects={"_quarter": _quarter})
    assert back.embeddings_initializer is _quarter
    assert back.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="unknown initializer") as info:
        Embedding.load(path)
    assert str(path) in str(info.value)


def test_standard_zip_tools_read_the_file(saved):
    layer, _, good = saved
    with zipfile.ZipFile(good) as zf:
        assert zf.testzip() is None  # every member's CRC-32
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_STORED] * 9
    unzip = shutil.which("unzip")
    if unzip is not None:
        proc = subprocess.run([unzip, "-t", str(good)], capture_output=True, text=True)
        assert proc.returncode == 0 and "No errors detected" in proc.stdout


@pytest.mark.bigtable
@pytest.mark.skipif(
    os.environ.get("EMBTABLE_BIGTABLE") != "1",
    reason="set EMBTABLE_BIGTABLE=1 (writes a 4 GiB checkpoint)",
)
def test_checkpoint_past_4_gib(tmp_path):
    # A memmap table of 4 GiB + 4 KiB (sparse: only the touched rows are written) is
    # saved; its members past offset 2**32 use the zip64 fields. Checked without
    # reading the 4 GiB into memory: zipfile's CRC pass, a memmap of the saved table,
    # and the members that follow it read by the checkpoint reader.
    D_big = 64
    V_big = 2**24 + 16
    table = np.memmap(tmp_path / "t.f32", np.float32, "w+", shape=(V_big, D_big))
    rows = np.array([0, 1, 2**24 - 1, 2**24, V_big - 1])
    table[rows] = np.arange(len(rows), dtype=np.float32)[:, None] + 1
    layer = Embedding(1, D_big, name="big")
    layer.embeddings = table
    path = layer.save(tmp_path / "big")
    del table
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        info = zf.getinfo("embeddings.npy")
        assert info.file_size > 2**32
        assert zf.getinfo("config.npy").header_offset > 2**32
        r = _checkpoint._Reader(zf, path)
        assert r.text("format") == "embtable.Embedding"
        assert r.json("config")["input_dim"] == V_big
        assert r.integer("format_version") == _checkpoint.FORMAT_VERSION
        with zf.open(info) as fp:
            np.lib.format.read_magic(fp)
            np.lib.format.read_array_header_1_0(fp)
            header = fp.tell()
    local = info.header_offset + 30 + len(info.filename) + 20
    saved_table = np.memmap(
        path, np.float32, "r", offset=local + header, shape=(V_big, D_big)
    )
    expected = np.arange(len(rows), dtype=np.float32)[:, None] + 1
    np.testing.assert_array_equal(saved_table[rows], np.repeat(expected, D_big, 1))
    assert not saved_table[12_345_678].any()
