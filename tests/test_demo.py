"""`python -m embtable demo` end to end on a tiny generated corpus."""

from __future__ import annotations

import os
import subprocess
import sys

import embtable
import numpy as np
import pytest
from embtable import _demo
from embtable.__main__ import main as cli_main


def tiny_corpus(path, n_lines=400, seed=0):
    # Two topics whose words co-occur only within their own lines.
    rng = np.random.default_rng(seed)
    topics = [
        ["alpha", "beta", "gamma", "delta", "epsilon"],
        ["red", "green", "blue", "cyan", "magenta"],
    ]
    lines = []
    for i in range(n_lines):
        words = rng.choice(topics[i % 2], size=8)
        lines.append(" ".join(words) + ". The end.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_build_corpus_and_tables():
    corpus = _demo.build_corpus(
        ["The list, a LIST; the file", "list file x"], min_count=2
    )
    assert corpus.words == ["list", "file", "the"]
    np.testing.assert_array_equal(corpus.ids, [2, 0, 0, 2, 1, 0, 1])
    np.testing.assert_array_equal(corpus.sentence, [0, 0, 0, 0, 0, 1, 1])
    table = _demo.noise_table(np.array([16, 1]), size=1000)
    share = np.mean(table == 0)
    assert share == pytest.approx(16**0.75 / (16**0.75 + 1), abs=0.01)
    keep = _demo.keep_probability(np.array([1000, 1]), 1e-3)
    assert keep[1] == 1.0 and 0 < keep[0] < 0.1


def test_demo_runs_and_loss_falls(tmp_path, capsys):
    corpus_file = tiny_corpus(tmp_path / "tiny.txt")
    out = tmp_path / "emb"
    rc = cli_main(
        [
            "demo",
            "--corpus",
            str(corpus_file),
            "--epochs",
            "4",
            "--dim",
            "16",
            "--min-count",
            "2",
            "--threads",
            "2",
            "--words",
            "alpha,red,nosuch",
            "--out",
            str(out),
            "--no-progress",
            "--sample",
            "0",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    losses = [
        float(x) for x in text.split("loss per epoch: ")[1].split("\n")[0].split(", ")
    ]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert "nearest to 'alpha'" in text and "'nosuch' is not in the vocabulary" in text
    saved = np.load(tmp_path / "emb.npz", allow_pickle=False)
    table = saved[saved.files[0]]
    words = (tmp_path / "emb.vocab.txt").read_text(encoding="utf-8").split()
    assert table.shape == (len(words), 16) and np.isfinite(table).all()


def test_training_learns_the_topics(tmp_path):
    corpus = _demo.build_corpus(
        _demo.read_text_corpus(tiny_corpus(tmp_path / "t.txt")), 2
    )
    res = _demo.train(corpus, dim=16, epochs=5, sample=0, seed=3)
    assert res.epoch_loss[-1] < res.epoch_loss[0]
    # Words of one topic are nearer each other than the other topic's words.
    near = [w for w, _ in _demo.nearest(res.in_table, corpus.words, "alpha", k=4)]
    assert set(near) == {"beta", "gamma", "delta", "epsilon"}


def test_cli_usage_and_unknown_command(capsys):
    assert cli_main([]) == 2
    assert "demo" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_python_dash_m_demo_help():
    proc = subprocess.run(
        [sys.executable, "-m", "embtable", "demo", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "--corpus" in proc.stdout


def test_threads_restored(tmp_path):
    before = embtable.get_num_threads()
    corpus_file = tiny_corpus(tmp_path / "tiny.txt", n_lines=20)
    _demo.main(
        [
            "--corpus",
            str(corpus_file),
            "--epochs",
            "1",
            "--dim",
            "4",
            "--min-count",
            "1",
            "--threads",
            "1",
            "--out",
            "",
            "--no-progress",
        ]
    )
    assert embtable.get_num_threads() == before


@pytest.mark.parametrize(
    "bad", [["--epochs", "0"], ["--negative", "-1"], ["--threads", "0"]]
)
def test_bad_options_exit_with_usage(bad, capsys):
    with pytest.raises(SystemExit) as e:
        _demo.main(bad)
    assert e.value.code == 2
    assert "must be >= " in capsys.readouterr().err


def test_save_table_round_trips_through_embedding_load(tmp_path):
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    path = _demo.save_table(table, ["a", "b", "c"], tmp_path / "t")
    assert path.name == "t.npz"
    layer = embtable.Embedding.load(path)
    np.testing.assert_array_equal(layer.embeddings, table)
    assert (tmp_path / "t.vocab.txt").read_text(encoding="utf-8").split() == [
        "a",
        "b",
        "c",
    ]


def test_stdlib_corpus_is_collected_in_a_child_process():
    import sys as _sys

    before = set(_sys.modules)
    docs = _demo.stdlib_docstrings()
    assert len(docs) > 1000
    corpus = _demo.build_corpus(docs, min_count=5)
    for word in ("list", "file", "thread", "tuple", "read", "write"):
        assert word in corpus.index
    assert len(corpus.ids) > 100_000
    assert "tkinter" not in set(_sys.modules) - before  # nothing imported here


def test_nearest_never_lists_the_word_itself():
    table = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for k in (1, 2, 3, 8):
        near = _demo.nearest(table, ["a", "b", "c"], "a", k=k)
        assert [w for w, _ in near] == [w for w, _ in near if w != "a"]
        assert len(near) == min(k, 2) and all(np.isfinite(s) for _, s in near)


def test_progress_without_tqdm_prints_the_last_line_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` fails
    corpus = _demo.build_corpus(
        _demo.read_text_corpus(tiny_corpus(tmp_path / "t.txt", n_lines=40)), 2
    )
    _demo.train(corpus, dim=4, epochs=2, sample=0, progress=True)
    total = 2 * len(corpus.ids)
    lines = capsys.readouterr().err.splitlines()
    assert sum(f"sgns: {total}/{total} words" in line for line in lines) == 1


def _never(*args, **kwargs):
    raise AssertionError("reached training: the argument error came too late")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(_demo, "train", _never)
    monkeypatch.setattr(_demo, "stdlib_docstrings", _never)


@pytest.mark.parametrize(
    "bad,message",
    [
        (["--max-tokens", "0"], "--max-tokens must be >= 1"),
        (["--max-tokens", "-5"], "--max-tokens must be >= 1"),
        (["--lr", "-1"], "--lr must be a finite number > 0"),
        (["--lr", "0"], "--lr must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--lr", "inf"], "--lr must be a finite number > 0"),
        (["--sample", "nan"], "--sample must be a finite number"),
        (["--threads", "100000"], "--threads must be >= 1 and <= "),
        (["--corpus", "{tmp}/missing.txt"], "No such file"),
        (["--corpus", "{tmp}"], "Is a directory"),
        (["--out", "{tmp}/file.txt/sub/vec"], "file.txt is not a directory"),
        (["--out", "{tmp}/dir"], "dir.npz is a directory"),
        (["--out", "/proc/nope/vec"], "cannot create a file in /proc"),
    ],
)
def test_bad_options_are_reported_before_training(
    tmp_path, no_training, capsys, bad, message
):
    if bad[-1].startswith("/proc") and not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    (tmp_path / "file.txt").write_text("x\n")
    (tmp_path / "dir.npz").mkdir()
    argv = [a.format(tmp=tmp_path) for a in bad]
    with pytest.raises(SystemExit) as e:
        _demo.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err


def test_out_folders_are_still_created(tmp_path, capsys):
    corpus_file = tiny_corpus(tmp_path / "tiny.txt", n_lines=20)
    argv = ["--corpus", str(corpus_file), "--epochs", "1", "--dim", "4"]
    argv += ["--min-count", "1", "--no-progress", "--out", str(tmp_path / "a/b/v")]
    assert _demo.main(argv) == 0
    assert (tmp_path / "a/b/v.npz").is_file()
    assert (tmp_path / "a/b/v.vocab.txt").is_file()


def test_an_empty_vocabulary_is_an_error_message_not_a_traceback(tmp_path):
    corpus_file = tiny_corpus(tmp_path / "tiny.txt", n_lines=20)
    for extra in (["--min-count", "1000"], ["--max-tokens", "3"]):
        proc = subprocess.run(
            [sys.executable, "-m", "embtable", "demo", "--corpus", str(corpus_file)]
            + ["--out", "", "--no-progress", *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "error: the vocabulary is empty" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "embtable", "demo", "--corpus", "/nonexistent.txt"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--corpus /nonexistent.txt: No such file" in proc.stderr
