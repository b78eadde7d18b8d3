"""Skip-gram words/second: embtable vs plain NumPy vs gensim, one corpus, one run.

    python bench/bench_sgns.py [--threads 2] [--repeats 3] [--corpus PATH]
                               [--skip-numpy]

Raw words/second = corpus tokens x epochs / training time (corpus building,
vocabulary excluded), at dim 100, window 5, 5 negatives, min_count 5, 5 epochs,
sample 1e-3. gensim (an optional extra, never required) runs when installed.
Quality: cosine of related pairs against random pairs, for each trained table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import embtable
import numpy as np
from embtable import _demo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sgns_numpy import train_numpy, train_step  # noqa: E402

SETTINGS = dict(dim=100, window=5, negative=5, epochs=5, sample=1e-3)


def quality(table: np.ndarray, words: list[str], corpus: _demo.Corpus) -> str:
    index = {w: i for i, w in enumerate(words)}
    sub = _demo.Corpus(corpus.ids, corpus.sentence, words, corpus.counts)
    sub.index = index
    rows, rand = _demo.pair_report(table, sub, _demo.PAIRS)
    pct = [p for *_, p in rows]
    head = ", ".join(f"{x}/{y} {s:.2f} ({p:.0f}%)" for x, y, s, p in rows[:3])
    return f"pairs above {statistics.mean(pct):.0f}% of random on average; {head}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--corpus")
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    args = ap.parse_args()
    settings = dict(SETTINGS, epochs=args.epochs)
    sentences = (
        _demo.read_text_corpus(args.corpus)
        if args.corpus
        else _demo.stdlib_docstrings()
    )
    corpus = _demo.build_corpus(sentences, min_count=5)
    n = len(corpus.ids)
    print(
        f"corpus: {n:,} tokens, {len(corpus.words):,} words; {settings}; "
        f"{args.threads} threads; median of {args.repeats}"
    )
    embtable.set_num_threads(args.threads)
    results: dict[str, list[float]] = {}
    per_cpu: dict[str, list[float]] = {}
    cpu0 = [0.0]

    def start() -> None:
        cpu0[0] = time.process_time()

    def record(name: str, wps: float, qual: str) -> None:
        # Words per CPU-second (all threads) is steadier than wall time on a
        # shared machine, and shows the work each method spends per word.
        wpc = n * settings["epochs"] / max(time.process_time() - cpu0[0], 1e-9)
        results.setdefault(name, []).append(wps)
        per_cpu.setdefault(name, []).append(wpc)
        print(
            f"  {name:<28} {wps:>10,.0f} words/s {wpc:>10,.0f} words/CPU-s   {qual}",
            flush=True,
        )

    try:
        import gensim
        from gensim.models import Word2Vec
    except ImportError:
        gensim = None
        print("  gensim not installed: skipped (pip install gensim)")
    token_sents = [_demo.tokenize(s) for s in sentences]
    for r in range(args.repeats):
        start()
        res = _demo.train(corpus, seed=1 + r, **settings)
        record(
            "embtable sgns_train (demo)",
            res.words_per_second,
            quality(res.in_table, corpus.words, corpus),
        )
        start()
        res = train_step(corpus, seed=1 + r, **settings)
        record(
            "sgns_step + NumPy pairs",
            res.words_per_second,
            quality(res.in_table, corpus.words, corpus),
        )
        if gensim is not None:
            model = Word2Vec(
                vector_size=settings["dim"],
                window=settings["window"],
                negative=settings["negative"],
                min_count=5,
                sg=1,
                hs=0,
                sample=settings["sample"],
                workers=args.threads,
                seed=1 + r,
            )
            model.build_vocab(token_sents)
            start()
            t1 = time.perf_counter()
            model.train(
                token_sents,
                total_examples=model.corpus_count,
                epochs=settings["epochs"],
            )
            secs = time.perf_counter() - t1
            words = model.wv.index_to_key
            table = model.wv.vectors[[model.wv.key_to_index[w] for w in words]]
            record(
                f"gensim {gensim.__version__} Word2Vec",
                n * settings["epochs"] / secs,
                quality(np.ascontiguousarray(table), list(words), corpus),
            )
        if not args.skip_numpy and r == 0:
            start()
            res = train_numpy(corpus, **settings)
            record(
                "plain NumPy (take+add.at)",
                res.words_per_second,
                quality(res.in_table, corpus.words, corpus),
            )
    print("median (best) of the runs:  words/s | words/CPU-second")
    for name, v in results.items():
        c = per_cpu[name]
        print(
            f"  {name:<28} {statistics.median(v):>10,.0f} ({max(v):,.0f})"
            f" | {statistics.median(c):>10,.0f} ({max(c):,.0f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
