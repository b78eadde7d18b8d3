"""The demo's training loop in plain NumPy (np.take + np.add.at), as a baseline.

The same batches as embtable's demo (subsampling, reduced windows, unigram^0.75
negatives, linear learning-rate decay); each batch is one minibatch step: gather
rows, score every (center, target) pair, scatter-add both gradients.
"""

from __future__ import annotations

import time

import numpy as np

from embtable._demo import Corpus, TrainResult, _batches


def train_numpy(corpus: Corpus, *, dim: int = 100, window: int = 5, negative: int = 5,
                epochs: int = 5, lr: float = 0.025, min_lr: float = 0.0001,
                sample: float = 1e-3, seed: int = 1, batch_words: int = 1000) -> TrainResult:
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
        h = np.take(in_t, b.centers, axis=0)                     # (P, D)
        o = np.take(out_t, targets, axis=0)                      # (P, K+1, D)
        s = np.einsum("pd,pkd->pk", h, o)
        g = (labels - 1 / (1 + np.exp(-s))) * alpha * valid
        loss = np.logaddexp(0, np.where(labels > 0, -s, s)) * valid
        np.add.at(in_t, b.centers, np.einsum("pk,pkd->pd", g, o))
        np.add.at(out_t, targets.reshape(-1), (g[:, :, None] * h[:, None, :]).reshape(-1, dim))
        sums[b.epoch] += float(loss.sum())
        pairs[b.epoch] += len(b.centers)
    seconds = time.perf_counter() - t0
    return TrainResult(in_t, out_t, [s / max(p, 1) for s, p in zip(sums, pairs)], seconds, total)
