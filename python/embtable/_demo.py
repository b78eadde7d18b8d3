"""``python -m embtable demo``: word2vec (skip-gram, negative sampling) with embtable.

Trains word embeddings on a corpus every machine has -- the docstrings of the
Python standard library -- or on any text file (``--corpus PATH``), using only
NumPy and :func:`embtable.sgns_train`, the fused C++ word2vec loop. Then prints the
nearest neighbours of a few words, the similarity of a few related pairs against
random ones, and saves the input table.

NumPy builds the vocabulary and subsamples frequent words once per epoch;
:func:`embtable.sgns_train` does the rest in C++ (reduced windows, negatives
from a unigram^0.75 table, the fused SGNS updates, on all threads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import embtable

from . import _core
from ._atomic import atomic_write_text, unwritable

__all__ = [
    "Corpus",
    "TrainResult",
    "build_corpus",
    "keep_probability",
    "main",
    "nearest",
    "noise_table",
    "pair_report",
    "read_text_corpus",
    "save_table",
    "stdlib_docstrings",
    "tokenize",
    "train",
]

_WORD = re.compile(r"[a-z]+")
# Never imported while collecting docstrings: tests, GUIs, modules that act on
# import (print, open a browser) and tool packages with nothing to say.
_SKIP = {
    "__hello__",
    "__phello__",
    "__main__",
    "_tkinter",
    "antigravity",
    "ensurepip",
    "idlelib",
    "lib2to3",
    "pydoc_data",
    "site",
    "test",
    "tests",
    "this",
    "tkinter",
    "turtle",
    "turtledemo",
    "venv",
    "webbrowser",
}
PAIRS = (
    ("list", "tuple"),
    ("read", "write"),
    ("send", "recv"),
    ("key", "value"),
    ("start", "stop"),
    ("client", "server"),
    ("encode", "decode"),
)
QUERY_WORDS = ("list", "file", "thread")


# ---------------------------------------------------------------------------
# Corpus


def _skipped(name: str) -> bool:
    return any(p in _SKIP or p.startswith(("test", "_test")) for p in name.split("."))


def _collect_stdlib_docstrings() -> list[str]:
    """Import every stdlib module (in this process) and return its docstrings.

    Modules, then their classes and functions, then the classes' methods, in
    sorted order, each object once. Run it in a child process: importing the
    whole standard library has side effects a caller should not inherit.
    """
    import importlib
    import inspect
    import io
    import pkgutil
    import sysconfig
    import warnings

    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    paths = [stdlib, os.path.join(stdlib, "lib-dynload")]
    names = sorted(
        set(sys.builtin_module_names) | {m.name for m in pkgutil.iter_modules(paths)}
    )
    docs: list[str] = []
    seen: set[int] = set()

    def collect(obj: object, modname: str, depth: int) -> None:
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str) and id(obj) not in seen:
            seen.add(id(obj))
            docs.append(doc)
        if depth == 0:
            return
        try:
            members = sorted(vars(obj).items())
        except TypeError:
            return
        for key, value in members:
            if key.startswith("__"):
                continue
            if (inspect.isclass(value) or inspect.isroutine(value)) and getattr(
                value, "__module__", None
            ) == modname:
                collect(value, modname, depth - 1)

    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        todo = list(reversed(names))
        while todo:
            name = todo.pop()
            if _skipped(name):
                continue
            try:
                module = importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - anything may happen on import
                continue
            file = getattr(module, "__file__", None)
            if file is not None and not os.path.realpath(file).startswith(stdlib):
                continue  # e.g. a site-packages module shadowing nothing
            collect(module, name, 2)
            path = getattr(module, "__path__", None)
            if path is not None:
                subs = sorted(f"{name}.{m.name}" for m in pkgutil.iter_modules(path))
                todo.extend(reversed(subs))
    return docs


def stdlib_docstrings() -> list[str]:
    """The docstrings of the Python standard library, collected in a child process."""
    code = (
        "import json, sys\n"
        "from embtable._demo import _collect_stdlib_docstrings\n"
        "docs = _collect_stdlib_docstrings()\n"
        "sys.stdout.write(json.dumps(docs))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"collecting stdlib docstrings failed:\n{proc.stderr[-2000:]}"
        )
    return list(json.loads(proc.stdout))


def read_text_corpus(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file: each a sentence, as gensim's LineSentence."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def tokenize(text: str) -> list[str]:
    """Lowercase alphabetic words."""
    return _WORD.findall(text.lower())


@dataclass
class Corpus:
    """A tokenized corpus over a vocabulary.

    ``ids``: the word id of every in-vocabulary token, in order (int32).
    ``sentence``: the sentence number of each token (windows never cross it).
    ``words``: the vocabulary, most frequent first; ``counts`` their counts.
    """

    ids: np.ndarray
    sentence: np.ndarray
    words: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}


def build_corpus(
    sentences: Sequence[str], min_count: int = 5, max_tokens: int | None = None
) -> Corpus:
    """Tokenize, count, keep words seen at least ``min_count`` times, map to ids."""
    tokenized = [tokenize(s) for s in sentences]
    if max_tokens is not None:
        kept, total = [], 0
        for toks in tokenized:
            if total >= max_tokens:
                break
            toks = toks[: max_tokens - total]
            kept.append(toks)
            total += len(toks)
        tokenized = kept
    counter = Counter(t for toks in tokenized for t in toks)
    vocab = sorted(
        (w for w, n in counter.items() if n >= min_count),
        key=lambda w: (-counter[w], w),
    )
    index = {w: i for i, w in enumerate(vocab)}
    ids: list[int] = []
    sent: list[int] = []
    for s, toks in enumerate(tokenized):
        row = [index[t] for t in toks if t in index]
        ids.extend(row)
        sent.extend([s] * len(row))
    counts = np.array([counter[w] for w in vocab], dtype=np.int64)
    return Corpus(
        np.array(ids, dtype=np.int32), np.array(sent, dtype=np.int32), vocab, counts
    )


# ---------------------------------------------------------------------------
# Training


def noise_table(counts: np.ndarray, size: int | None = None) -> np.ndarray:
    """word2vec's negative-sampling table: word w fills a share ~ counts[w]**0.75.

    Every draw is a random read of this table, so by default it is sized to the
    vocabulary (64 slots a word, 2**16 to 2**25 in all) rather than word2vec's
    1e8: small enough to stay in cache, fine enough for the rarest word.
    """
    if size is None:
        size = min(max(64 * len(counts), 1 << 16), 1 << 25)
    p = counts.astype(np.float64) ** 0.75
    reps = np.maximum(np.round(p / p.sum() * size), 1).astype(np.int64)
    return np.repeat(np.arange(len(counts), dtype=np.int32), reps)


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's subsampling: frequent words are dropped with probability 1 - keep."""
    if sample <= 0:
        return np.ones(len(counts))
    threshold = sample * counts.sum()
    f = counts.astype(np.float64)
    return np.minimum((np.sqrt(f / threshold) + 1) * threshold / f, 1.0)


@dataclass
class TrainResult:
    """What :func:`train` returns: both tables, per-epoch mean losses, timing."""

    in_table: np.ndarray
    out_table: np.ndarray
    epoch_loss: list[float]
    seconds: float
    raw_words: int  # tokens x epochs

    @property
    def words_per_second(self) -> float:
        return self.raw_words / self.seconds if self.seconds > 0 else float("inf")


class _Progress:
    """tqdm when installed, else a line every few seconds on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.total = total
        self.done = 0
        self.t0 = time.perf_counter()
        self.last_print = self.t0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(
            total=total,
            unit="word",
            unit_scale=True,
            dynamic_ncols=True,
            desc="sgns",
            file=sys.stderr,
        )

    def update(self, done: int, loss: float, lr: float) -> None:
        step, self.done = done - self.done, done
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.4f}", refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_print >= 2.0 or done >= self.total:
            self.last_print = now
            rate = done / max(now - self.t0, 1e-9)
            print(
                f"sgns: {done}/{self.total} words, {rate:,.0f} words/s, "
                f"loss {loss:.3f}",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    corpus: Corpus,
    *,
    dim: int = 100,
    window: int = 5,
    negative: int = 5,
    epochs: int = 5,
    lr: float = 0.025,
    min_lr: float = 0.0001,
    sample: float = 1e-3,
    seed: int = 1,
    batch_words: int = 50_000,
    progress: bool = False,
) -> TrainResult:
    """Skip-gram with negative sampling over `corpus`; returns the trained tables.

    word2vec's recipe: input table uniform in +-0.5/dim, output table zeros,
    frequent words subsampled with `sample` (NumPy, once per epoch), then
    :func:`embtable.sgns_train` over the epoch's stream in slices of about
    `batch_words` corpus words (reduced windows, negatives from a unigram^0.75
    table, the learning rate falling linearly from `lr` to `min_lr` over all
    the words, all in the C++ kernel).
    """
    V = len(corpus.words)
    if V == 0:
        raise ValueError(
            "the vocabulary is empty: lower --min-count or use a larger corpus"
        )
    rng = np.random.default_rng(seed)
    # The two tables are Embedding layers' own tables, trained in place by the
    # fused kernel (a sparse Embedding + optimizer step per pair would be correct
    # but pays a Python round trip per batch of pairs).
    init = embtable.initializers.RandomUniform(-0.5 / dim, 0.5 / dim, seed=seed)
    in_table = embtable.Embedding(
        V, dim, embeddings_initializer=init, name="sgns_in"
    ).embeddings
    out_table = embtable.Embedding(
        V, dim, embeddings_initializer="zeros", name="sgns_out"
    ).embeddings
    table = noise_table(corpus.counts)
    keep_p = keep_probability(corpus.counts, sample)
    n_raw = len(corpus.ids)
    total = n_raw * epochs

    def rate(done: int) -> float:
        return max(lr * (1.0 - done / max(total, 1)), min_lr)

    sums = [0.0] * epochs
    pairs = [0] * epochs
    bar = _Progress(total, progress)
    t0 = time.perf_counter()
    try:
        for epoch in range(epochs):
            kept = np.flatnonzero(rng.random(n_raw) < keep_p[corpus.ids])
            stream = corpus.ids[kept]
            sentences = corpus.sentence[kept].astype(np.int64)
            n = len(stream)
            step = max(1, int(batch_words * n / max(n_raw, 1)))
            epoch_seed = int(rng.integers(0, 2**63))
            done_b = epoch * n_raw
            for a in range(0, n, step):
                b = min(a + step, n)
                done_a = epoch * n_raw + int(kept[a])
                done_b = epoch * n_raw + (int(kept[b]) if b < n else n_raw)
                loss, count = embtable.sgns_train(
                    in_table,
                    out_table,
                    stream,
                    noise=table,
                    window=window,
                    negative=negative,
                    lr=rate(done_a),
                    end_lr=rate(done_b),
                    sentences=sentences,
                    start=a,
                    stop=b,
                    seed=epoch_seed,
                )
                sums[epoch] += loss * count
                pairs[epoch] += count
                if b < n:  # the epoch's last slice: reported below, once
                    bar.update(done_b, loss, rate(done_b))
            bar.update(
                (epoch + 1) * n_raw, sums[epoch] / max(pairs[epoch], 1), rate(done_b)
            )
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    epoch_loss = [
        s / p if p else float("nan") for s, p in zip(sums, pairs, strict=True)
    ]
    return TrainResult(in_table, out_table, epoch_loss, seconds, total)


# ---------------------------------------------------------------------------
# Evaluation and output


def _unit_rows(table: np.ndarray) -> np.ndarray:
    """Rows minus their mean, scaled to unit length.

    On a small corpus every word vector shares one large common direction, which
    makes all raw cosines high; removing the mean first (a standard
    post-processing of word vectors) leaves the similarities that tell words apart.
    """
    centered = table - table.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    return centered / np.maximum(norms, 1e-12)


def nearest(
    table: np.ndarray, words: list[str], word: str, k: int = 8
) -> list[tuple[str, float]]:
    """The `k` words closest to `word` by cosine similarity (`word` excluded).

    Cosines are taken after subtracting the mean vector (see `_unit_rows`).
    """
    unit = _unit_rows(table)
    w = words.index(word)
    sims = unit @ unit[w]
    order = np.argsort(-sims, kind="stable")
    top = order[order != w][:k]
    return [(words[i], float(sims[i])) for i in top]


def pair_report(
    table: np.ndarray,
    corpus: Corpus,
    pairs: Sequence[tuple[str, str]],
    seed: int = 0,
    n_random: int = 2000,
) -> tuple[list[tuple[str, str, float, float]], float]:
    """Each known pair's cosine (mean removed) and percentile among random pairs."""
    unit = _unit_rows(table)
    V = len(corpus.words)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, V, n_random)
    b = rng.integers(0, V, n_random)
    keep = a != b
    rand = np.sort(np.einsum("ij,ij->i", unit[a[keep]], unit[b[keep]]))
    out = []
    for x, y in pairs:
        if x in corpus.index and y in corpus.index:
            s = float(unit[corpus.index[x]] @ unit[corpus.index[y]])
            pct = 100.0 * float(np.searchsorted(rand, s)) / max(len(rand), 1)
            out.append((x, y, s, pct))
    return out, float(rand.mean()) if len(rand) else float("nan")


def save_table(
    table: np.ndarray, words: list[str], path: str | os.PathLike[str]
) -> Path:
    """Saves `table` with embtable.Embedding.save, and its vocabulary.

    The table goes to `path` (``.npz`` added when missing); the words, one per
    line in row order, to the same name with ``.vocab.txt``. Each file is written
    atomically (``_atomic``).
    """
    p = _npz_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    embtable.Embedding(table.shape[0], table.shape[1], weights=table, name="sgns").save(
        p
    )
    atomic_write_text(
        p.with_name(p.name[: -len(".npz")] + ".vocab.txt"), "\n".join(words) + "\n"
    )
    return p


def _npz_path(path: str | os.PathLike[str]) -> Path:
    """Where save_table writes the table: `path`, with ``.npz`` added when missing
    (the rule of ``layer.save``, as ``np.savez``)."""
    from ._checkpoint import _path_for_save

    return _path_for_save(path)


def _out_problem(path: str) -> str | None:
    """Why save_table could not write to `path`, or None; checked before training
    (save_table creates missing folders)."""
    return unwritable(_npz_path(path), make_parents=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m embtable demo",
        description="Train word2vec skip-gram embeddings (negative sampling) with "
        "embtable "
        "on the Python standard library's docstrings or on a text file.",
    )
    p.add_argument(
        "--corpus",
        metavar="PATH",
        help="a UTF-8 text file, one sentence per line (default: the stdlib "
        "docstrings)",
    )
    p.add_argument("--epochs", type=int, default=5, help="passes over the corpus (5)")
    p.add_argument("--dim", type=int, default=100, help="embedding dimension (100)")
    p.add_argument("--window", type=int, default=5, help="max context distance (5)")
    p.add_argument("--negative", type=int, default=5, help="negatives per pair (5)")
    p.add_argument("--min-count", type=int, default=5, help="drop rarer words (5)")
    p.add_argument(
        "--sample",
        type=float,
        default=1e-3,
        help="subsampling threshold of frequent words, 0 to disable (1e-3)",
    )
    p.add_argument(
        "--lr", type=float, default=0.025, help="initial learning rate (0.025)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="embtable threads (default: embtable.get_num_threads())",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument(
        "--max-tokens", type=int, default=None, help="use only the first N tokens"
    )
    p.add_argument(
        "--words",
        default=",".join(QUERY_WORDS),
        help="comma-separated words to show neighbours of (list,file,thread)",
    )
    p.add_argument(
        "--out",
        default="embtable-sgns.npz",
        help="where to save the input table (embtable-sgns.npz; the vocabulary "
        "goes next to it as .vocab.txt); '' to skip saving",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with command-line arguments `argv` (``sys.argv[1:]`` by default)."""
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "dim", "window", "min_count"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max-tokens must be >= 1")
    if args.negative < 0:
        parser.error("--negative must be >= 0")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    if not math.isfinite(args.sample):
        parser.error(f"--sample must be a finite number, got {args.sample}")
    limit = int(_core.max_threads())
    if args.threads is not None and not 1 <= args.threads <= limit:
        parser.error(f"--threads must be >= 1 and <= {limit}")
    if args.corpus:
        try:
            with open(args.corpus, "rb"):
                pass
        except OSError as e:
            parser.error(f"--corpus {args.corpus}: {e.strerror or e}")
    if args.out:
        problem = _out_problem(args.out)
        if problem is not None:
            parser.error(f"--out {args.out}: {problem}")
    old_threads = embtable.get_num_threads()
    if args.threads is not None:
        embtable.set_num_threads(args.threads)
    try:
        return _run(args, parser)
    finally:
        embtable.set_num_threads(old_threads)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    t0 = time.perf_counter()
    if args.corpus:
        sentences = read_text_corpus(args.corpus)
        source = args.corpus
    else:
        sentences = stdlib_docstrings()
        source = f"docstrings of the Python {sys.version.split()[0]} standard library"
    corpus = build_corpus(sentences, args.min_count, args.max_tokens)
    print(
        f"corpus: {source}: {len(corpus.ids):,} tokens, {len(corpus.words):,} words "
        f"with count >= {args.min_count} ({time.perf_counter() - t0:.1f} s)"
    )
    if not corpus.words:
        more = ", raise --max-tokens" if args.max_tokens is not None else ""
        parser.error(
            f"the vocabulary is empty: no word occurs {args.min_count} times "
            f"(--min-count); lower --min-count{more} or use a larger corpus"
        )
    print(
        f"training: dim {args.dim}, window {args.window}, {args.negative} negatives, "
        f"{args.epochs} epochs, {embtable.get_num_threads()} threads"
    )
    result = train(
        corpus,
        dim=args.dim,
        window=args.window,
        negative=args.negative,
        epochs=args.epochs,
        lr=args.lr,
        sample=args.sample,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(
        f"trained in {result.seconds:.2f} s: {result.words_per_second:,.0f} words/s "
        f"(tokens x epochs / training time)"
    )
    print("loss per epoch: " + ", ".join(f"{x:.4f}" for x in result.epoch_loss))
    for word in [w.strip() for w in args.words.split(",") if w.strip()]:
        if word not in corpus.index:
            print(f"{word!r} is not in the vocabulary")
            continue
        near = ", ".join(
            f"{w} {s:.2f}" for w, s in nearest(result.in_table, corpus.words, word)
        )
        print(f"nearest to {word!r} (cosine, mean removed): {near}")
    report, rand_mean = pair_report(result.in_table, corpus, PAIRS)
    if report:
        print(
            "cosine of related pairs (mean vector removed; "
            f"random pairs average {rand_mean:.2f}):"
        )
        for x, y, s, pct in report:
            print(f"  {x}/{y}: {s:.2f} (above {pct:.0f}% of random pairs)")
    if args.out:
        path = save_table(result.in_table, corpus.words, args.out)
        print(
            f"saved the {result.in_table.shape[0]} x {result.in_table.shape[1]} table "
            "to "
            f"{path} (words in {path.name[:-4]}.vocab.txt)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
