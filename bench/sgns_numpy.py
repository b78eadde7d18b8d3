"""The demo's training loop with NumPy-made pairs, as baselines.

`_batches` makes word2vec's pairs in NumPy (subsampling, reduced windows,
unigram^0.75 negatives), the same recipe sgns_train runs in C++.
`train_numpy` trains on them in plain NumPy (np.take + np.add.at, one
minibatch step per batch); `train_step` with embtable.sgns_step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import embtable
import numpy as np
from embtable._demo import Corpus, TrainResult, keep_probability, noise_table


@dataclass
class Batch:
    centers: np.ndarray
    contexts: np.ndarray
    negatives: np.ndarray
    done_words: int  # raw corpus tokens covered so far, over all epochs
    epoch: int


def _batches(
    corpus: Corpus,
    epochs: int,
    window: int,
    negative: int,
    sample: float,
    batch_words: int,
    seed: int,
) -> Iterator[Batch]:
    """(center, context, negatives) batches of every epoch, in order.

    A token at i with reduced window b (uniform in 1..window, as word2vec) pairs
    with every token of its sentence at distance <= b. The input ("center") side
    is the context token, the output side the token at i, as in word2vec's C code.
    """
    rng = np.random.default_rng(seed)
    table = noise_table(corpus.counts)
    keep_p = keep_probability(corpus.counts, sample)
    n_raw = len(corpus.ids)
    for epoch in range(epochs):
        keep = np.flatnonzero(rng.random(n_raw) < keep_p[corpus.ids])
        stream = corpus.ids[keep]
        sent = corpus.sentence[keep]
        n = len(stream)
        step = max(1, int(batch_words * len(keep) / max(n_raw, 1)))
        for a in range(0, n, step):
            b = min(a + step, n)
            pos = np.arange(a, b)
            reduced = rng.integers(1, window + 1, size=b - a)
            ins, outs = [], []
            for off in range(1, window + 1):
                near = pos[reduced >= off]
                for j in (near - off, near + off):
                    ok = (j >= 0) & (j < n)
                    i_ok, j_ok = near[ok], j[ok]
                    same = sent[i_ok] == sent[j_ok]
                    ins.append(stream[j_ok[same]])
                    outs.append(stream[i_ok[same]])
            centers = np.concatenate(ins) if ins else np.zeros(0, np.int32)
            contexts = np.concatenate(outs) if outs else np.zeros(0, np.int32)
            negatives = table[
                rng.integers(
                    0, len(table), size=(len(centers), negative), dtype=np.int32
                )
            ]
            done = epoch * n_raw + (int(keep[b - 1]) + 1 if b < n else n_raw)
            yield Batch(centers, contexts, negatives, done, epoch)


def train_numpy(
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
    batch_words: int = 1000,
) -> TrainResult:
    V = len(corpus.words)
    rng = np.random.default_rng(seed)
    in_t = ((rng.random((V, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
    out_t = np.zeros((V, dim), dtype=np.float32)
    total = len(corpus.ids) * epochs
    sums, pairs = [0.0] * epochs, [0] * epochs
    t0 = time.perf_counter()
    for b in _batches(corpus, epochs, window, negative, sample, batch_words, seed + 1):
        if len(b.centers) == 0:
            continue
        alpha = np.float32(max(lr * (1.0 - b.done_words / total), min_lr))
        targets = np.concatenate([b.contexts[:, None], b.negatives], axis=1)  # (P, K+1)
        labels = np.zeros(targets.shape, np.float32)
        labels[:, 0] = 1
        valid = np.ones(targets.shape, bool)
        valid[:, 1:] = b.negatives != b.contexts[:, None]
        h = np.take(in_t, b.centers, axis=0)  # (P, D)
        o = np.take(out_t, targets, axis=0)  # (P, K+1, D)
        s = np.einsum("pd,pkd->pk", h, o)
        g = (
            (labels - 0.5 * (1 + np.tanh(0.5 * s))) * alpha * valid
        )  # sigmoid, no overflow
        loss = np.logaddexp(0, np.where(labels > 0, -s, s)) * valid
        np.add.at(in_t, b.centers, np.einsum("pk,pkd->pd", g, o))
        np.add.at(
            out_t, targets.reshape(-1), (g[:, :, None] * h[:, None, :]).reshape(-1, dim)
        )
        sums[b.epoch] += float(loss.sum())
        pairs[b.epoch] += len(b.centers)
    seconds = time.perf_counter() - t0
    losses = [s / max(p, 1) for s, p in zip(sums, pairs, strict=True)]
    return TrainResult(in_t, out_t, losses, seconds, total)


def train_step(
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
    batch_words: int = 10_000,
) -> TrainResult:
    """The same batches, each trained by one embtable.sgns_step call."""
    V = len(corpus.words)
    rng = np.random.default_rng(seed)
    in_t = ((rng.random((V, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
    out_t = np.zeros((V, dim), dtype=np.float32)
    total = len(corpus.ids) * epochs
    sums, pairs = [0.0] * epochs, [0] * epochs
    t0 = time.perf_counter()
    for b in _batches(corpus, epochs, window, negative, sample, batch_words, seed + 1):
        alpha = max(lr * (1.0 - b.done_words / total), min_lr)
        loss = embtable.sgns_step(
            in_t, out_t, b.centers, b.contexts, b.negatives, alpha
        )
        sums[b.epoch] += loss * len(b.centers)
        pairs[b.epoch] += len(b.centers)
    seconds = time.perf_counter() - t0
    losses = [s / max(p, 1) for s, p in zip(sums, pairs, strict=True)]
    return TrainResult(in_t, out_t, losses, seconds, total)
