"""Fused skip-gram negative-sampling (word2vec SGNS) training step."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import _core
from ._indices import as_indices, table_rows

__all__ = ["sgns_step", "sgns_train"]


def _int(value: Any, name: str) -> int:
    """``operator.index(value)``: an int, never a truncated float (TypeError)."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None


def sgns_step(
    in_table: np.ndarray,
    out_table: np.ndarray,
    centers: Any,
    contexts: Any,
    negatives: Any,
    lr: float,
) -> float:
    """One fused skip-gram negative-sampling SGD step, in place on both tables.

    word2vec's inner loop over ``N`` (center, context) pairs, each with ``K``
    negatives, in one multithreaded C++ call (no gathered copies)::

        for i in range(N):
            c = centers[i]; h = in_table[c].copy(); grad = 0
            for t, label in [(contexts[i], 1)] + [(n, 0) for n in negatives[i]]:
                if label == 0 and t == contexts[i]:
                    continue                      # as word2vec
                s = h @ out_table[t]
                g = (label - sigmoid(s)) * lr
                grad += g * out_table[t]          # the row before its update
                out_table[t] += g * h
                loss += -log(sigmoid(s if label else -s))
            in_table[c] += grad
        return loss / N                           # 0.0 when N == 0

    Parameters
    ----------
    in_table, out_table : ndarray, (V_in, D) and (V_out, D)
        The input ("syn0") and output ("syn1neg") tables, float32 or float64
        (one dtype), C-contiguous, writeable, not overlapping.
    centers, contexts : integer array-likes, shape (N,)
        Row ids into ``in_table`` and ``out_table``.
    negatives : integer array-like, shape (N, K)
        Negative row ids into ``out_table`` (e.g. drawn from a unigram^0.75
        table); ``K = 0`` is allowed.
    lr : float
        The learning rate of this step.

    Returns
    -------
    float
        The mean over the N pairs of the pair's loss
        ``-log sigmoid(s_pos) - sum(log sigmoid(-s_neg))``.

    Every id is validated before the first write (``IndexError`` naming the
    argument and the first bad position; both tables are then unchanged).
    With one thread (``embtable.set_num_threads(1)``) the pairs run in order and
    the result is the loop above. With more, pairs are split between threads
    Hogwild-style like word2vec and gensim: no order between the pairs of
    different threads, a pair may read a row another thread updated a moment
    ago, and results vary between runs. It is not a data race: each row is read
    or updated while holding one of 4096 striped spin locks, never two at a time.
    """
    V_in = table_rows(in_table)
    V_out = table_rows(out_table)
    c = as_indices(centers, V_in, "centers")
    x = as_indices(contexts, V_out, "contexts")
    n = as_indices(negatives, V_out, "negatives")
    if not (c.dtype == x.dtype == n.dtype):
        c, x, n = (np.ascontiguousarray(a, dtype=np.int64) for a in (c, x, n))
    return float(_core.sgns_step(in_table, out_table, c, x, n, float(lr)))


def sgns_train(
    in_table: np.ndarray,
    out_table: np.ndarray,
    tokens: Any,
    *,
    noise: Any,
    window: int = 5,
    negative: int = 5,
    lr: float = 0.025,
    end_lr: float | None = None,
    sentences: Any = None,
    start: int = 0,
    stop: int | None = None,
    seed: int = 0,
) -> tuple[float, int]:
    """word2vec's skip-gram loop over a token stream, fused in C++ (gensim's shape).

    For each center position ``i`` in ``[start, stop)`` (default: all of
    ``tokens``): a reduced window ``b`` uniform in ``1..window`` (any size: the
    scratch memory follows the pairs a center has, not ``window``); every position
    ``j`` with ``0 < |i - j| <= b`` in the same sentence gives one
    :func:`sgns_step` pair -- input row ``tokens[j]``, positive output row
    ``tokens[i]``, ``negative`` ids drawn uniformly from ``noise`` (pass a
    unigram^0.75 table, as word2vec). The learning rate falls linearly from
    ``lr`` at ``start`` to ``end_lr`` (default ``lr``) at ``stop``. Pairs are
    generated on the fly: nothing proportional to the pairs is allocated.

    Parameters
    ----------
    in_table, out_table : ndarray, both (V, D)
        float32 or float64, C-contiguous, writeable, not overlapping; ``tokens``
        and ``noise`` index both.
    tokens : integer array-like, shape (n,)
        The (already subsampled) token ids. Contexts may come from anywhere in
        it, so a long stream can be trained in ``start``/``stop`` slices.
    noise : integer array-like, 1-D
        Negatives are drawn uniformly from its entries.
    sentences : integer array-like, shape (n,), optional
        A sentence number per token; windows never cross a change of it.
    window, negative, start, stop : int
        Integers (``operator.index``: a float is a ``TypeError``, never truncated).
    seed : int
        The draws of position ``i`` depend on ``(seed, i)`` only: the same pairs
        for any thread count or slicing (see ``_core.sgns_pairs``). Taken modulo
        ``2**64``.

    Returns
    -------
    (float, int)
        The mean loss per pair (as :func:`sgns_step`) and the number of pairs.

    Threads, validation and the Hogwild trade-off are those of
    :func:`sgns_step`; with one thread the result is exactly ``sgns_step`` run
    on these pairs in order.
    """
    V = table_rows(in_table)
    tok = as_indices(tokens, V, "tokens")
    nz = as_indices(noise, V, "noise")
    if tok.dtype != nz.dtype:
        tok, nz = (np.ascontiguousarray(a, dtype=np.int64) for a in (tok, nz))
    sent = None
    if sentences is not None:
        sent = np.ascontiguousarray(
            as_indices(sentences, None, "sentences"), dtype=np.int64
        )
    window = _int(window, "window")
    negative = _int(negative, "negative")
    start = _int(start, "start")
    seed = _int(seed, "seed")
    n = tok.shape[0] if tok.ndim == 1 else -1
    stop = n if stop is None else _int(stop, "stop")
    end = float(lr) if end_lr is None else float(end_lr)
    loss, pairs = _core.sgns_train(
        in_table,
        out_table,
        tok,
        sent,
        nz,
        start,
        stop,
        # Windows past the stream all reach its ends; this keeps the int in int64.
        min(window, 2**63 - 1),
        negative,
        float(lr),
        end,
        seed & (2**64 - 1),
    )
    return float(loss), int(pairs)
