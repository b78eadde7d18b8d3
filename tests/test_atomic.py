"""Atomic writes (embtable._atomic) and the files the demo and the bench write."""

from __future__ import annotations

import json
import os
import stat

import embtable
import numpy as np
import pytest
from embtable import _atomic, _bench, _demo
from embtable._bench import Case, Result


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.bin"
    _atomic.atomic_write_bytes(path, b"old contents")
    with _atomic.atomic_write(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old contents"  # not visible before the end
        (tmp_name,) = [n for n in _names(tmp_path) if n != "f.bin"]
        assert tmp_name.startswith(".f.bin.") and tmp_name.endswith(".tmp")
    assert path.read_bytes() == b"new"
    assert _names(tmp_path) == ["f.bin"]


def test_text_mode_is_utf8(tmp_path):
    path = tmp_path / "words.txt"
    _atomic.atomic_write_text(path, "naïve\ncafé\n")
    assert path.read_bytes() == "naïve\ncafé\n".encode()
    with _atomic.atomic_write(path, "w", encoding="latin-1") as f:
        f.write("é")
    assert path.read_bytes() == b"\xe9"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_error_keeps_old_file_and_removes_temp(tmp_path, exc):
    path = tmp_path / "f.bin"
    _atomic.atomic_write_bytes(path, b"old")
    with pytest.raises(type(exc)):
        with _atomic.atomic_write(path) as f:
            f.write(b"half of the new")
            raise exc
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["f.bin"]
    with pytest.raises(type(exc)):
        with _atomic.atomic_write(tmp_path / "new.bin") as f:
            raise exc
    assert _names(tmp_path) == ["f.bin"]


def test_permissions_default_and_kept(tmp_path):
    fresh = tmp_path / "fresh"
    _atomic.atomic_write_bytes(fresh, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept"
    kept.write_bytes(b"x")
    kept.chmod(0o640)
    _atomic.atomic_write_bytes(kept, b"y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_bytes() == b"y"


def test_symlink_is_kept(tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    Embedding = embtable.Embedding
    layer = Embedding(3, 2, seed=0)
    layer.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    np.testing.assert_array_equal(Embedding.load(real).embeddings, layer.embeddings)


def test_bad_mode_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with _atomic.atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(FileNotFoundError):
        _atomic.atomic_write_bytes(tmp_path / "no" / "x", b"")
    assert _names(tmp_path) == []


def test_demo_writes_table_and_vocabulary(tmp_path):
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    path = _demo.save_table(table, ["a", "b", "c"], tmp_path / "t")
    assert _names(tmp_path) == ["t.npz", "t.vocab.txt"]
    assert (tmp_path / "t.vocab.txt").read_text(encoding="utf-8") == "a\nb\nc\n"
    np.testing.assert_array_equal(embtable.Embedding.load(path).embeddings, table)


def _fake_grid(*args, **kwargs) -> list[Result]:
    c = Case(V=10_000, D=64, N=4096, dist="uniform", threads=1)
    return [
        Result(op, method, c, ms, 1.0)
        for op, method, ms in (
            ("copy", "np.copyto", 1.0),
            ("gather", "embtable", 1.0),
            ("gather", "np.take(out=)", 3.0),
            ("scatter_add", "embtable", 1.0),
            ("scatter_add", "np.add.at", 9.0),
        )
    ]


def test_bench_json_is_written_atomically(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_bench, "run_grid", _fake_grid)
    out = tmp_path / "r.json"
    out.write_text("previous")
    assert _bench.main(["--quick", "--no-peers", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["results"]) == 5 and data["results"][1]["method"] == "embtable"
    assert _names(tmp_path) == ["r.json"]
    assert "results saved to" in capsys.readouterr().out


def test_bench_plot_is_written_atomically(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(_bench, "run_grid", _fake_grid)
    out = tmp_path / "p.png"
    assert _bench.main(["--quick", "--no-peers", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _names(tmp_path) == ["p.png"]
    capsys.readouterr()


def test_unwritable_names_what_would_fail(tmp_path):
    assert _atomic.unwritable(tmp_path / "x.json") is None
    assert _atomic.unwritable(tmp_path) == f"{tmp_path} is a directory"
    missing = tmp_path / "no" / "deeper" / "x.json"
    assert _atomic.unwritable(missing) == f"no such directory: {missing.parent}"
    assert (
        _atomic.unwritable(missing, make_parents=True) is None
    )  # the writer makes them
    (tmp_path / "f").write_text("")
    assert _atomic.unwritable(tmp_path / "f" / "x.json", make_parents=True) == (
        f"{tmp_path / 'f'} is not a directory"
    )
    assert not (tmp_path / "no").exists()  # nothing made, nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
