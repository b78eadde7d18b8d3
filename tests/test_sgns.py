"""sgns_step: the fused skip-gram negative-sampling step against NumPy."""

from __future__ import annotations

import embtable
import numpy as np
import pytest
from embtable import _core


def sgns_numpy(in_table, out_table, centers, contexts, negatives, lr):
    """The documented formulation, pair by pair, in the tables' dtype."""
    dt = in_table.dtype.type
    lr = dt(lr)
    loss = 0.0
    for i in range(len(centers)):
        c = centers[i]
        h = in_table[c].copy()
        grad = np.zeros_like(h)
        targets = [(contexts[i], 1)] + [
            (t, 0) for t in negatives[i] if t != contexts[i]
        ]
        for t, label in targets:
            s = dt(h @ out_table[t])
            g = (dt(label) - dt(1) / (dt(1) + np.exp(-s))) * lr
            grad += g * out_table[t]
            out_table[t] += g * h
            loss += float(np.logaddexp(0.0, -float(s) if label else float(s)))
        in_table[c] += grad
    return loss / len(centers) if len(centers) else 0.0


def make(V_in, V_out, D, N, K, dtype=np.float32, itype=np.int64, seed=0):
    rng = np.random.default_rng(seed)
    in_table = (rng.random((V_in, D)) - 0.5).astype(dtype)
    out_table = ((rng.random((V_out, D)) - 0.5) * 0.5).astype(dtype)
    centers = rng.integers(0, V_in, N).astype(itype)
    contexts = rng.integers(0, V_out, N).astype(itype)
    negatives = rng.integers(0, V_out, (N, K)).astype(itype)
    return in_table, out_table, centers, contexts, negatives


@pytest.fixture
def one_thread():
    old = embtable.get_num_threads()
    embtable.set_num_threads(1)
    yield
    embtable.set_num_threads(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("D", [1, 7, 16, 37, 100])
def test_matches_numpy_single_thread(one_thread, dtype, itype, D):
    # Few rows, many pairs: rows are updated again and again, so order matters.
    args = make(6, 5, D, 300, 4, dtype, itype, seed=D)
    a_in, a_out = args[0].copy(), args[1].copy()
    b_in, b_out = args[0].copy(), args[1].copy()
    loss = embtable.sgns_step(a_in, a_out, *args[2:], 0.05)
    want = sgns_numpy(b_in, b_out, *args[2:], 0.05)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(a_in, b_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(a_out, b_out, rtol=tol, atol=tol)
    assert loss == pytest.approx(want, rel=tol)
    assert not np.array_equal(a_in, args[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_scalar_ref(one_thread, dtype):
    args = make(50, 40, 33, 2000, 5, dtype, np.int32, seed=3)
    a_in, a_out = args[0].copy(), args[1].copy()
    b_in, b_out = args[0].copy(), args[1].copy()
    la = embtable.sgns_step(a_in, a_out, *args[2:], 0.025)
    lb = _core.sgns_step(b_in, b_out, *args[2:], 0.025, ref=True)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(a_in, b_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(a_out, b_out, rtol=tol, atol=tol)
    assert la == pytest.approx(lb, rel=tol)


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_simd_levels_agree_bitwise(one_thread, level):
    cfg = embtable.show_config(mode="dicts")
    if level not in cfg["simd"]["compiled"]:
        pytest.skip(f"{level} not compiled")
    before = cfg["simd"]["selected"]
    try:
        _core.set_simd_level(level)
    except ValueError:
        pytest.skip(f"this CPU lacks {level}")
    try:
        args = make(30, 30, 45, 500, 5, np.float32, np.int64, seed=9)
        a_in, a_out = args[0].copy(), args[1].copy()
        la = embtable.sgns_step(a_in, a_out, *args[2:], 0.1)
        _core.set_simd_level("baseline")
        b_in, b_out = args[0].copy(), args[1].copy()
        lb = embtable.sgns_step(b_in, b_out, *args[2:], 0.1)
    finally:
        _core.set_simd_level(before)
    np.testing.assert_array_equal(a_in, b_in)
    np.testing.assert_array_equal(a_out, b_out)
    assert la == lb


def test_loss_is_mean_pair_loss_at_zero_tables(one_thread):
    # All scores 0: each pair costs (1 + K) * log 2; zero tables stay zero.
    in_t = np.zeros((4, 8), np.float32)
    out_t = np.zeros((4, 8), np.float32)
    loss = embtable.sgns_step(in_t, out_t, [0, 1], [2, 3], [[0, 1, 1], [2, 0, 1]], 0.1)
    assert loss == pytest.approx(4 * np.log(2), rel=1e-6)
    # A negative equal to the context is skipped, as word2vec does.
    loss = embtable.sgns_step(in_t, out_t, [0], [2], [[2, 2, 1]], 0.1)
    assert loss == pytest.approx(2 * np.log(2), rel=1e-6)


def test_empty_and_k_zero():
    in_t, out_t = np.ones((3, 4)), np.ones((3, 4))
    assert (
        embtable.sgns_step(in_t, out_t, [], [], np.zeros((0, 5), np.int64), 0.1) == 0.0
    )
    assert (in_t == 1).all() and (out_t == 1).all()
    loss = embtable.sgns_step(in_t, out_t, [0], [1], np.zeros((1, 0), np.int64), 0.1)
    assert loss == pytest.approx(np.logaddexp(0, -4.0))
    assert (in_t[0] > 1).all() and (out_t[1] > 1).all()


@pytest.mark.parametrize(
    "which, pos, value, match",
    [
        ("centers", 7, 20, r"^centers: index 20 at position \(7,\) .* 20 rows$"),
        ("contexts", 3, 12, r"^contexts: index 12 at position \(3,\) .* 12 rows$"),
        (
            "negatives",
            (5, 1),
            12,
            r"^negatives: index 12 at position \(5, 1\) .* 12 rows$",
        ),
        ("negatives", (8, 0), -1, r"^negatives: index -1 at position \(8, 0\)"),
    ],
)
def test_bad_ids_raise_and_leave_tables_untouched(which, pos, value, match):
    in_t, out_t, c, x, n = make(20, 12, 8, 10, 3)
    arrays = {"centers": c, "contexts": x, "negatives": n}
    arrays[which][pos] = value
    arrays[which][-1] = -5  # a later bad id: the first one is named
    in0, out0 = in_t.copy(), out_t.copy()
    with pytest.raises(IndexError, match=match):
        embtable.sgns_step(in_t, out_t, c, x, n, 0.1)
    np.testing.assert_array_equal(in_t, in0)
    np.testing.assert_array_equal(out_t, out0)


def test_argument_errors():
    in_t, out_t, c, x, n = make(10, 10, 4, 5, 2)
    with pytest.raises(TypeError, match="float16"):
        embtable.sgns_step(in_t.astype(np.float16), out_t, c, x, n, 0.1)
    with pytest.raises(TypeError, match="int32"):
        embtable.sgns_step(in_t.astype(np.int32), out_t.astype(np.int32), c, x, n, 0.1)
    with pytest.raises(TypeError, match="float64"):
        embtable.sgns_step(in_t, out_t.astype(np.float64), c, x, n, 0.1)
    with pytest.raises(TypeError):
        embtable.sgns_step(in_t, out_t, c.astype(float), x, n, 0.1)
    with pytest.raises(ValueError, match="same D"):
        embtable.sgns_step(in_t, out_t[:, :3].copy(), c, x, n, 0.1)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        embtable.sgns_step(in_t, out_t, c, x, n[:4], 0.1)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        embtable.sgns_step(in_t, out_t, c, x, n.ravel(), 0.1)
    with pytest.raises(ValueError, match="contexts"):
        embtable.sgns_step(in_t, out_t, c, x[:3], n, 0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        embtable.sgns_step(np.asfortranarray(in_t), out_t, c, x, n, 0.1)
    ro = out_t.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        embtable.sgns_step(in_t, ro, c, x, n, 0.1)
    with pytest.raises(ValueError, match="overlaps"):
        embtable.sgns_step(in_t, in_t, c, x, n, 0.1)
    with pytest.raises(TypeError, match="ndarray"):
        embtable.sgns_step(in_t.tolist(), out_t, c, x, n, 0.1)


def test_mixed_index_dtypes_and_lists_are_converted(one_thread):
    in_t, out_t, c, x, n = make(10, 10, 4, 5, 2)
    a_in, a_out = in_t.copy(), out_t.copy()
    la = embtable.sgns_step(
        a_in, a_out, c.astype(np.int32), x.astype(np.uint16), n.tolist(), 0.1
    )
    lb = embtable.sgns_step(in_t, out_t, c, x, n, 0.1)
    np.testing.assert_array_equal(a_in, in_t)
    np.testing.assert_array_equal(a_out, out_t)
    assert la == lb


def test_threaded_training_reduces_loss():
    # A planted structure: word w's context is always (w + 1) % V. Threaded
    # (Hogwild) steps must learn it, and must not corrupt anything.
    old = embtable.get_num_threads()
    embtable.set_num_threads(2)
    try:
        rng = np.random.default_rng(5)
        V, D, N, K = 200, 32, 20000, 5
        in_t = ((rng.random((V, D)) - 0.5) / D).astype(np.float32)
        out_t = np.zeros((V, D), np.float32)
        losses = []
        for _ in range(8):
            c = rng.integers(0, V, N)
            n = rng.integers(0, V, (N, K))
            losses.append(embtable.sgns_step(in_t, out_t, c, (c + 1) % V, n, 0.05))
    finally:
        embtable.set_num_threads(old)
    assert np.isfinite(in_t).all() and np.isfinite(out_t).all()
    assert losses[-1] < 0.5 * losses[0]
    # The learned context of w scores above a random word for most w.
    scores = in_t @ out_t.T
    w = np.arange(V)
    assert np.mean(scores[w, (w + 1) % V] > np.median(scores, axis=1)) > 0.95


# --- sgns_train: the fused token-stream loop ---------------------------------


def stream(n=300, V=40, sentences=True, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, n)
    sent = np.cumsum(rng.random(n) < 0.1) if sentences else None
    noise = rng.integers(0, V, 1000)
    return tokens, sent, noise


@pytest.mark.parametrize("window", [1, 3, 5])
def test_pairs_follow_the_window_and_sentence_rules(window):
    pos_tokens = np.arange(200)  # token id = position, so pairs show their distance
    sent = np.repeat(np.arange(20), 10)
    noise = np.arange(50)
    ins, outs, negs = _core.sgns_pairs(pos_tokens, sent, noise, 0, 200, window, 3, 7)
    assert negs.shape == (len(ins), 3) and negs.min() >= 0 and negs.max() < 50
    d = ins - outs
    assert (np.abs(d) >= 1).all() and (np.abs(d) <= window).all()
    assert (sent[ins] == sent[outs]).all()
    # Symmetric reduced window: each center has 2b candidates before the cuts, and
    # an interior center sees j = i - b .. i + b, b uniform in 1..window.
    widths = {}
    for i, o in zip(ins, outs, strict=True):
        widths[o] = max(widths.get(o, 0), abs(i - o))
    interior = [c for c in range(200) if c % 10 >= window and c % 10 < 10 - window]
    if interior:
        seen = {widths.get(c, 0) for c in interior}
        assert seen <= set(range(1, window + 1))
        if window > 1 and len(interior) > 20:
            assert len(seen) > 1


def test_pairs_release_the_gil():
    # A long stream takes seconds: another Python thread keeps running meanwhile.
    from gil_probe import ticks_during

    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 1000, 400_000)
    noise = rng.integers(0, 1000, 1000)
    during, (ins, _, _) = ticks_during(
        lambda: _core.sgns_pairs(tokens, None, noise, 0, len(tokens), 5, 1, 3)
    )
    assert len(ins) > len(tokens)
    # With the GIL held the counter could only run before the call and after it.
    assert during >= 50, during


def test_pairs_do_not_depend_on_slicing():
    tokens, sent, noise = stream()
    whole = _core.sgns_pairs(tokens, sent, noise, 0, 300, 4, 5, 11)
    parts = [
        _core.sgns_pairs(tokens, sent, noise, a, b, 4, 5, 11)
        for a, b in [(0, 17), (17, 200), (200, 300)]
    ]
    for k in range(3):
        np.testing.assert_array_equal(whole[k], np.concatenate([p[k] for p in parts]))
    other = _core.sgns_pairs(tokens, sent, noise, 0, 300, 4, 5, 12)
    assert not np.array_equal(whole[2][: len(other[2])], other[2][: len(whole[2])])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_train_equals_sgns_step_on_its_pairs(one_thread, dtype, itype):
    tokens, sent, noise = stream(seed=2)
    tokens, noise = tokens.astype(itype), noise.astype(itype)
    rng = np.random.default_rng(1)
    in_t = (rng.random((40, 24)) - 0.5).astype(dtype)
    out_t = (rng.random((40, 24)) - 0.5).astype(dtype)
    a_in, a_out, b_in, b_out = in_t.copy(), out_t.copy(), in_t.copy(), out_t.copy()
    loss, pairs = embtable.sgns_train(
        a_in,
        a_out,
        tokens,
        noise=noise,
        window=3,
        negative=4,
        lr=0.05,
        sentences=sent,
        start=10,
        stop=290,
        seed=5,
    )
    ins, outs, negs = _core.sgns_pairs(tokens, sent, noise, 10, 290, 3, 4, 5)
    want = embtable.sgns_step(b_in, b_out, ins, outs, negs, 0.05)
    assert pairs == len(ins) > 0
    np.testing.assert_array_equal(a_in, b_in)
    np.testing.assert_array_equal(a_out, b_out)
    assert loss == pytest.approx(want, rel=1e-12)


def test_train_learning_rate_decays_linearly(one_thread):
    # One center per call: each call's step uses exactly lr at `start`.
    tokens, sent, noise = stream(n=50, seed=4)
    rng = np.random.default_rng(0)
    in_t = (rng.random((40, 8)) - 0.5).astype(np.float64)
    out_t = (rng.random((40, 8)) - 0.5).astype(np.float64)
    a_in, a_out, b_in, b_out = in_t.copy(), out_t.copy(), in_t.copy(), out_t.copy()
    embtable.sgns_train(
        a_in,
        a_out,
        tokens,
        noise=noise,
        window=2,
        negative=2,
        lr=0.1,
        end_lr=0.0,
        sentences=sent,
        start=0,
        stop=50,
        seed=3,
    )
    for i in range(50):
        ins, outs, negs = _core.sgns_pairs(tokens, sent, noise, i, i + 1, 2, 2, 3)
        embtable.sgns_step(b_in, b_out, ins, outs, negs, 0.1 * (1 - i / 50))
    np.testing.assert_allclose(a_in, b_in, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a_out, b_out, rtol=1e-12, atol=1e-14)


def test_train_errors_leave_tables_untouched():
    tokens, sent, noise = stream()
    in_t, out_t = np.zeros((40, 4), np.float32), np.zeros((40, 4), np.float32)
    bad = tokens.copy()
    bad[123] = 40
    with pytest.raises(IndexError, match=r"^tokens: index 40 at position \(123,\)"):
        embtable.sgns_train(in_t, out_t, bad, noise=noise)
    bad_noise = noise.copy()
    bad_noise[5] = -1
    with pytest.raises(IndexError, match=r"^noise: index -1 at position \(5,\)"):
        embtable.sgns_train(in_t, out_t, tokens, noise=bad_noise)
    with pytest.raises(ValueError, match="start <= stop"):
        embtable.sgns_train(in_t, out_t, tokens, noise=noise, start=5, stop=400)
    with pytest.raises(ValueError, match="noise is empty"):
        embtable.sgns_train(in_t, out_t, tokens, noise=[])
    with pytest.raises(ValueError, match="one \\(V, D\\)"):
        embtable.sgns_train(in_t, np.zeros((41, 4), np.float32), tokens, noise=noise)
    with pytest.raises(ValueError, match="sentences"):
        embtable.sgns_train(in_t, out_t, tokens, noise=noise, sentences=sent[:-1])
    assert not in_t.any() and not out_t.any()
    assert embtable.sgns_train(in_t, out_t, tokens, noise=noise, window=0) == (0.0, 0)
    assert embtable.sgns_train(in_t, out_t, tokens[:0], noise=noise) == (0.0, 0)


def test_train_threaded_learns_a_planted_structure():
    # Sentences "w w+1 w+2" over V words: neighbours in id co-occur.
    old = embtable.get_num_threads()
    embtable.set_num_threads(2)
    try:
        V, D = 100, 24
        rng = np.random.default_rng(3)
        starts = rng.integers(0, V, 20000)
        tokens = ((starts[:, None] + np.arange(3)) % V).ravel()
        sent = np.repeat(np.arange(len(starts)), 3)
        in_t = ((rng.random((V, D)) - 0.5) / D).astype(np.float32)
        out_t = np.zeros((V, D), np.float32)
        losses = [
            embtable.sgns_train(
                in_t,
                out_t,
                tokens,
                noise=np.arange(V),
                window=2,
                negative=5,
                lr=0.05,
                sentences=sent,
                seed=e,
            )[0]
            for e in range(4)
        ]
    finally:
        embtable.set_num_threads(old)
    assert np.isfinite(in_t).all() and losses[-1] < 0.7 * losses[0]
    scores = in_t @ out_t.T
    w = np.arange(V)
    assert np.mean(scores[w, (w + 1) % V] > np.median(scores, axis=1)) > 0.95


@pytest.mark.parametrize("window", [10**9, 2**62, 2**70])
def test_a_window_longer_than_the_stream_reaches_its_ends(one_thread, window):
    # Before: 2 * window (* K) ids allocated per task, whatever the stream: GBs,
    # then bad_alloc (and an int64 overflow for the largest). The draws keep the
    # given window (b uniform in 1..window, one draw whatever its size), so every
    # window this long reaches both ends of this 10-token stream: the same pairs
    # and negatives as a window of 10**6 (for this seed, every b >= 9 for both).
    tokens, sent, noise = stream(n=10, V=5, seed=6)
    for sentences in (None, sent):
        runs = []
        for w in (10**6, window):
            in_t, out_t = np.full((5, 4), 0.1, np.float32), np.zeros((5, 4), np.float32)
            got = embtable.sgns_train(
                in_t, out_t, tokens, noise=noise, window=w, sentences=sentences, seed=1
            )
            runs.append((got, in_t, out_t))
        (want, a_in, a_out), (got, b_in, b_out) = runs
        # every ordered pair of positions in one sentence
        ids = np.zeros(10, np.int64) if sentences is None else np.asarray(sentences)
        all_pairs = int(sum(c * (c - 1) for c in np.unique(ids, return_counts=True)[1]))
        assert got == want and want[1] == all_pairs > 0
        np.testing.assert_array_equal(a_in, b_in)
        np.testing.assert_array_equal(a_out, b_out)
        if window < 2**63:
            for k, (x, y) in enumerate(
                zip(
                    _core.sgns_pairs(tokens, sentences, noise, 0, 10, 10**6, 5, 1),
                    _core.sgns_pairs(tokens, sentences, noise, 0, 10, window, 5, 1),
                    strict=True,
                )
            ):
                np.testing.assert_array_equal(x, y, err_msg=str(k))


def test_a_huge_window_over_short_sentences_trains_their_pairs(one_thread):
    # A window meaning "the whole sentence" (item2vec's use): 3,000 sentences of 4
    # tokens give (almost: b < 3 has probability 2 / 11,999 per center) all their
    # 4 * 3 pairs each, with scratch memory for those pairs only.
    tokens = np.arange(12_000) % 40
    sent = np.repeat(np.arange(3_000), 4)
    in_t, out_t = np.zeros((40, 4), np.float32), np.zeros((40, 4), np.float32)
    _, pairs = embtable.sgns_train(
        in_t, out_t, tokens, noise=np.arange(40), window=10**12, sentences=sent
    )
    assert 0.99 * 36_000 < pairs <= 36_000


@pytest.mark.parametrize("name", ["window", "negative", "start", "stop", "seed"])
@pytest.mark.parametrize("value", [1.0, 1.9, "1"])
def test_train_integer_arguments_refuse_floats(name, value):
    tokens, _, noise = stream(n=50, V=10)
    in_t, out_t = np.zeros((10, 4), np.float32), np.zeros((10, 4), np.float32)
    with pytest.raises(TypeError, match=f"^{name} must be an integer, got "):
        embtable.sgns_train(in_t, out_t, tokens, noise=noise, **{name: value})
    assert not in_t.any() and not out_t.any()


def test_train_integer_arguments_take_numpy_integers(one_thread):
    tokens, sent, noise = stream(n=100, V=10)
    runs = []
    for conv in (int, np.int64):
        in_t, out_t = np.full((10, 4), 0.1, np.float32), np.zeros((10, 4), np.float32)
        kw = {"window": 3, "negative": 2, "start": 5, "stop": 90, "seed": 2**64 - 1}
        got = embtable.sgns_train(
            in_t,
            out_t,
            tokens,
            noise=noise,
            sentences=sent,
            **{k: conv(v) if v < 2**63 else v for k, v in kw.items()},
        )
        runs.append((got, in_t.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    # seed is taken modulo 2**64: -1 and 2**64 - 1 are one seed.
    in_t, out_t = np.full((10, 4), 0.1, np.float32), np.zeros((10, 4), np.float32)
    got = embtable.sgns_train(
        in_t, out_t, tokens, noise=noise, sentences=sent,
        window=3, negative=2, start=5, stop=90, seed=-1,
    )  # fmt: skip
    assert got == runs[0][0]
