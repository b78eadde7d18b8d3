"""load_vectors / save_vectors (word2vec text and binary, GloVe) and from_pretrained.

Oracles: gensim's KeyedVectors.load_word2vec_format / save_word2vec_format on files
the tests write (bit for bit), numpy.float32(str) for single values, and PyTorch's
from_pretrained for the layers (each skipped cleanly when absent).
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path

import embtable
import numpy as np
import pytest
from embtable import _core

ODD_WORDS = [
    "naïve",
    "日本語",
    "emoji🙂",
    "tab\tinside",
    "cr\rinside",
    "quote'\"",
    "back\\slash",
    "e\u0301",  # combining accent
    "nbsp\u00a0word",
    "zero\x00byte",
    "ends\u00a0",  # not ASCII: no reader strips it
    "\tstarts",
    "1.5",
    "-",
    "#",
]


def gensim_load(path, **kw):
    """gensim's reading of `path` as (words, vectors); its overflow warning silenced."""
    keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kv = keyedvectors.KeyedVectors.load_word2vec_format(os.fspath(path), **kw)
    return list(kv.index_to_key), kv.vectors


def bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns, NaN payloads folded to numpy's default NaN (text keeps no payload)."""
    a = np.where(np.isnan(a), np.copysign(np.nan, a), a).astype(a.dtype)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same(words, table, ref_words, ref_table):
    assert words == ref_words
    assert table.shape == ref_table.shape
    assert table.dtype == ref_table.dtype
    assert table.flags.c_contiguous
    np.testing.assert_array_equal(bits(table), bits(ref_table))


def random_table(rng, V, D, dtype=np.float32):
    t = rng.standard_normal((V, D)) * 10.0 ** rng.integers(-6, 6, size=(V, D))
    return t.astype(dtype)


def random_words(rng, V):
    pool = [*ODD_WORDS, *(f"w{i}" for i in range(V))]
    idx = rng.permutation(len(pool))[:V]
    return [pool[i] for i in idx]


@pytest.fixture(params=[False, True], ids=["default-io", "tiny-io"])
def io(request):
    """Default buffer sizes, or tiny ones that put every block / buffer boundary
    inside a small file (lines split across reads, vectors read in place)."""
    if request.param:
        _core._set_vectors_io_override(7, 5)
    yield request.param
    _core._set_vectors_io_override(0, 0)


# ---------------------------------------------------------------------------
# round trips against gensim


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_round_trip_matches_gensim(tmp_path, io, binary, seed):
    rng = np.random.default_rng(seed)
    V, D = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    words = random_words(rng, V)
    table = random_table(rng, V, D)
    path = tmp_path / "v.bin"
    embtable.save_vectors(path, words, table, binary=binary)
    got = embtable.load_vectors(path)
    assert_same(*got, words, table)
    assert_same(*got, *gensim_load(path, binary=binary))
    assert_same(*embtable.load_vectors(path, binary=binary), words, table)


@pytest.mark.parametrize("binary", [False, True])
def test_files_written_by_gensim(tmp_path, io, binary):
    keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
    rng = np.random.default_rng(7)
    V, D = 30, 9
    words = random_words(rng, V)
    table = random_table(rng, V, D)
    kv = keyedvectors.KeyedVectors(D)
    kv.add_vectors(words, table)
    path = tmp_path / "g.w2v"
    kv.save_word2vec_format(os.fspath(path), binary=binary)
    got = embtable.load_vectors(path)
    assert_same(*got, *gensim_load(path, binary=binary))
    assert_same(*got, words, table)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("limit", [0, 1, 5, 29, 30, 100])
def test_limit(tmp_path, io, binary, limit):
    rng = np.random.default_rng(limit)
    words = random_words(rng, 30)
    table = random_table(rng, 30, 4)
    path = tmp_path / "v"
    embtable.save_vectors(path, words, table, binary=binary)
    got = embtable.load_vectors(path, limit=limit)
    assert_same(*got, words[:limit], table[:limit])
    if limit:  # gensim reads everything for limit=0
        assert_same(*got, *gensim_load(path, binary=binary, limit=limit))


def test_limit_does_not_read_past_it(tmp_path):
    # Garbage after the kept rows is neither read nor checked.
    path = tmp_path / "v.txt"
    path.write_bytes(b"4 2\na 1 2\nb 3 4\nc oops\n\xff\xfe 1\n")
    words, table = embtable.load_vectors(path, limit=2)
    assert words == ["a", "b"]
    np.testing.assert_array_equal(table, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="line 4"):
        embtable.load_vectors(path)


@pytest.mark.parametrize("binary", [False, True])
def test_limit_stops_reading_in_every_format(tmp_path, io, binary):
    # Rows past the limit are never looked at, whatever the header says (gensim
    # returns the same first `limit` vectors).
    t = np.arange(6, dtype=np.float32).reshape(3, 2) + 0.5
    words = ["a", "b", "c"]
    embtable.save_vectors(tmp_path / "v", words, t, binary=binary)
    rows = (tmp_path / "v").read_bytes()[4:]
    cases = []
    for header in (1, 2, 3):
        path = tmp_path / f"h{header}"
        path.write_bytes(b"%d 2\n" % header + rows)  # 3 rows: more than announced
        for limit in range(1, header + 1):
            assert_same(
                *embtable.load_vectors(path, limit=limit), words[:limit], t[:limit]
            )
            cases.append((path, limit))
    # Garbage right after the limit is not read either.
    one = rows[: len(rows) // 3]
    path = tmp_path / "garbage"
    path.write_bytes(b"3 2\n" + one + b"\xff\x00 garbage\n")
    assert_same(*embtable.load_vectors(path, limit=1), words[:1], t[:1])
    for path, limit in cases:
        assert_same(
            *embtable.load_vectors(path, limit=limit),
            *gensim_load(path, binary=binary, limit=limit),
        )


@pytest.mark.parametrize("binary", [False, True])
def test_limit_past_the_header_keeps_the_strict_checks(tmp_path, io, binary):
    t = np.arange(6, dtype=np.float32).reshape(3, 2) + 0.5
    path = tmp_path / "v"
    embtable.save_vectors(path, ["a", "b", "c"], t, binary=binary)
    data = path.read_bytes()
    if binary:
        extra = r"vector 3 \(byte \d+\): more vectors than the 2 the header announces"
        short = r"vector 3 \(byte \d+\): the file ends after 2 vectors, but the header says 4$"
    else:
        extra = r"line 4: a row past the 2 vectors the header \(line 1\) announces"
        short = (
            r"line 4: the file ends after 2 vectors, but the header \(line 1\) says 4$"
        )
    path.write_bytes(b"2 2\n" + data[4:])  # one row more than the header says
    for limit in (3, 5, None):
        with pytest.raises(ValueError, match=extra):
            embtable.load_vectors(path, limit=limit)
    cut = len(data) - (len(data) - 4) // 3
    path.write_bytes(b"4 2\n" + data[4:cut])  # the file ends before the limit
    for limit in (3, 4, None):
        with pytest.raises(ValueError, match=short if limit != 3 else "ends after 2"):
            embtable.load_vectors(path, limit=limit)


@pytest.mark.parametrize("binary", [False, True])
def test_float64(tmp_path, io, binary):
    rng = np.random.default_rng(3)
    words = random_words(rng, 25)
    table = random_table(rng, 25, 6, np.float64)
    path = tmp_path / "v"
    embtable.save_vectors(path, words, table, binary=binary)
    words2, t64 = embtable.load_vectors(path, dtype="float64")
    assert t64.dtype == np.float64
    assert_same(words2, t64, *gensim_load(path, binary=binary, datatype=np.float64))
    if binary:  # the format holds float32
        assert_same(words2, t64, words, table.astype(np.float32).astype(np.float64))
    else:  # shortest double form: exact
        assert_same(words2, t64, words, table)
    _, t32 = embtable.load_vectors(path, dtype=np.float32)
    assert_same(words2, t32, *gensim_load(path, binary=binary))


def test_glove(tmp_path, io):
    rng = np.random.default_rng(11)
    words = random_words(rng, 20)
    table = random_table(rng, 20, 5)
    lines = [
        w + " " + " ".join(repr(float(x)) for x in row)
        for w, row in zip(words, table, strict=True)
    ]
    path = tmp_path / "glove.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = embtable.load_vectors(path)
    assert_same(*got, *gensim_load(path, no_header=True))
    assert_same(*got, words, table)
    assert_same(*embtable.load_vectors(path, binary=False), words, table)
    assert_same(*embtable.load_vectors(path, limit=7), words[:7], table[:7])
    assert_same(
        *embtable.load_vectors(path, limit=7),
        *gensim_load(path, no_header=True, limit=7),
    )


def test_glove_one_value_per_word(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("the 0.5\nof -1.25\nand 3\n", encoding="utf-8")
    words, table = embtable.load_vectors(path)
    assert words == ["the", "of", "and"]
    np.testing.assert_array_equal(table, [[0.5], [-1.25], [3]])


def test_first_line_of_two_integers_is_a_header(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("2 5\n7 1\n8 2\n", encoding="utf-8")  # GloVe-like, but a header
    with pytest.raises(
        ValueError, match=r"line 2: expected 5 values after the word, found 1"
    ):
        embtable.load_vectors(path)


def test_hand_written_values_match_gensim(tmp_path, io):
    values = [
        "0",
        "-0",
        "1",
        "+1.5",
        "-2.25e-3",
        "1E5",
        "1e+05",
        ".5",
        "5.",
        "0001.0",
        "3.4028235e38",
        "3.4028236e38",  # rounds to FLT_MAX
        "3.40282357e38",  # past the halfway point: inf in float32
        "1e39",
        "-1e400",
        "1e-400",
        "-1e-46",
        "1.4e-45",
        "1e-310",
        "inf",
        "-Infinity",
        "NaN",
        "-nan",
        # double rounding: float32(double(s)) is 1.0, the correctly rounded float32 is not
        "1.000000059604644776257986737988403547205962240695953369140625",
        "0.1000000000000000055511151231257827021181583404541015625",
        "123456789012345678901234567890",
    ]
    D = len(values)
    rows = [f"w{i} " + " ".join(np.roll(values, i)) for i in range(3)]
    path = tmp_path / "v.txt"
    path.write_bytes((f"3 {D}\n" + "\r\n".join(rows) + "  \r\n\n\n").encode())
    got = embtable.load_vectors(path)
    assert_same(*got, *gensim_load(path))
    with warnings.catch_warnings():  # numpy warns on the float32 overflow
        warnings.simplefilter("ignore")
        ref = np.array(
            [[np.float32(float(v)) for v in np.roll(values, i)] for i in range(3)]
        )
    np.testing.assert_array_equal(bits(got[1]), bits(ref))
    k = next(i for i, v in enumerate(values) if v.startswith("1.0000000596"))
    assert got[1][0, k] == np.float32(1.0)  # gensim's double rounding, kept
    got64 = embtable.load_vectors(path, dtype="float64")
    assert_same(*got64, *gensim_load(path, datatype=np.float64))


def test_parse_value_grammar():
    ok = [
        "1",
        "-1",
        "+1",
        "1.",
        ".1",
        "1e5",
        "1E-5",
        "inf",
        "INF",
        "-inf",
        "+Infinity",
        "nan",
        "-NaN",
        "1e400",
        "00.5e0",
    ]
    for s in ok:
        d, f = _core.parse_vector_value(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.float32(s)
        assert bits(np.asarray(f)) == bits(np.asarray(ref)), s
        assert (math.isnan(d) and math.isnan(float(s))) or d == float(s), s
    # Rejected (numpy accepts some of these via Python's float(): stricter here).
    for s in [
        "",
        "+",
        "-",
        "e5",
        "1e",
        "1.5.2",
        "0x10",
        "1,5",
        "nan(1)",
        "+-1",
        "1 ",
        " 1",
        "1_0",
        "١",
        "1d5",
        "infinit",
    ]:
        assert _core.parse_vector_value(s) is None, s


def test_parse_value_random_decimals_match_python():
    # Short decimals take a fast path, long ones from_chars: both must equal float().
    rng = np.random.default_rng(12)
    for _ in range(20000):
        n_int = int(rng.integers(0, 10))
        n_frac = int(rng.integers(0, 20))
        digits = "".join(map(str, rng.integers(0, 10, size=n_int + n_frac)))
        s = digits[:n_int] + ("." if n_frac or not n_int else "") + digits[n_int:]
        if s == ".":
            s = "0"
        if rng.random() < 0.5:
            s += "eE"[int(rng.integers(0, 2))] + str(int(rng.integers(-40, 40)))
        if rng.random() < 0.3:
            s = "-" + s
        d, f = _core.parse_vector_value(s)
        ref = float(s)
        assert d == ref and math.copysign(1, d) == math.copysign(1, ref), s
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert bits(np.asarray(f)) == bits(np.asarray(np.float32(ref))), s


def test_float32_text_round_trip_all_kinds_of_bits(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 2**32, size=(300, 50), dtype=np.uint64).astype(np.uint32)
    raw[0, :8] = [
        0,
        0x80000000,
        1,
        0x007FFFFF,
        0x00800000,
        0x7F7FFFFF,
        0x7F800000,
        0xFF800000,
    ]
    table = raw.view(np.float32)
    table = np.where(np.isnan(table), np.float32(1.5), table)
    words = [f"w{i}" for i in range(300)]
    path = tmp_path / "v.txt"
    embtable.save_vectors(path, words, table)
    assert_same(*embtable.load_vectors(path), words, table)
    assert_same(*gensim_load(path), words, table)
    # The shortest form: no more digits than numpy's repr of the same float32.
    tokens = path.read_text().split("\n")[1].split(" ")[1:]
    for tok, x in zip(tokens, table[0], strict=True):
        digits = lambda s: len(s.lstrip("-").split("e")[0].replace(".", "").strip("0"))  # noqa: E731
        assert digits(tok) <= max(digits(repr(float(x))), digits(str(x))), (tok, x)


def test_float64_text_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    raw = rng.integers(0, 2**63, size=(100, 20), dtype=np.uint64)
    table = raw.view(np.float64)
    table = np.where(np.isfinite(table), table, 0.25)
    words = [f"w{i}" for i in range(100)]
    path = tmp_path / "v.txt"
    embtable.save_vectors(path, words, table)
    assert_same(*embtable.load_vectors(path, dtype="float64"), words, table)


def test_nan_and_inf_survive(tmp_path):
    table = np.array([[np.nan, np.inf, -np.inf, -0.0]], dtype=np.float32)
    for binary in (False, True):
        embtable.save_vectors(tmp_path / "v", ["x"], table, binary=binary)
        _, t = embtable.load_vectors(tmp_path / "v")
        assert np.isnan(t[0, 0]) and t[0, 1] == np.inf and t[0, 2] == -np.inf
        assert t[0, 3] == 0 and np.signbit(t[0, 3])


@pytest.mark.parametrize("newline", [True, False], ids=["c-tool", "gensim"])
def test_binary_layouts(tmp_path, io, newline):
    rng = np.random.default_rng(2)
    words = random_words(rng, 12)
    table = random_table(rng, 12, 3)
    body = b"".join(
        w.encode() + b" " + row.astype("<f4").tobytes() + (b"\n" if newline else b"")
        for w, row in zip(words, table, strict=True)
    )
    path = tmp_path / "v.bin"
    path.write_bytes(b"12 3\n" + body)
    got = embtable.load_vectors(path)
    assert_same(*got, words, table)
    assert_same(*got, *gensim_load(path, binary=True))
    assert_same(*embtable.load_vectors(path, binary=True), words, table)


def test_binary_detection_of_a_vector_starting_with_a_newline_byte(tmp_path):
    # 0.01f is 0x3C23D70A: its first byte on disk is '\n'.
    table = np.full((2, 4), 0.01, dtype=np.float32)
    path = tmp_path / "v.bin"
    embtable.save_vectors(path, ["a", "b"], table, binary=True)
    assert_same(*embtable.load_vectors(path), ["a", "b"], table)


def ascii_vector(raw: bytes) -> np.ndarray:
    """The float32 values whose little-endian bytes are `raw` (text-like bytes)."""
    return np.frombuffer(raw, "<f4").copy()


@pytest.mark.parametrize("raw", [b"1234", b"1e10", b"5 66", b"-0.5"])
def test_detects_binary_whose_first_vector_reads_as_text(tmp_path, io, raw):
    # The first record "a 1234\n" is a valid text row; the second is not: binary.
    table = np.stack([ascii_vector(raw), np.float32([0.5])])
    path = tmp_path / "v.bin"
    embtable.save_vectors(path, ["a", "b"], table, binary=True)
    assert path.read_bytes().startswith(b"2 1\na " + raw + b"\n")
    assert_same(*embtable.load_vectors(path), ["a", "b"], table)
    assert_same(*embtable.load_vectors(path), *gensim_load(path, binary=True))


def test_detects_binary_from_more_than_the_first_records(tmp_path, io):
    # 40 records whose vectors read as text rows, then one that does not.
    V = 41
    table = np.repeat(ascii_vector(b"12 3"), V)[:, None].copy()
    table[-1] = 0.25
    words = [f"w{i}" for i in range(V)]
    path = tmp_path / "v.bin"
    embtable.save_vectors(path, words, table, binary=True)
    assert_same(*embtable.load_vectors(path), words, table)
    # A vector whose bytes are a text row ending in "\n": the C tool's newline after
    # it is an empty line, which text does not allow.
    table = np.stack([ascii_vector(b"1.5 2.5\n"), np.float32([1, 2])])
    embtable.save_vectors(path, ["a", "b"], table, binary=True)
    assert path.read_bytes().startswith(b"2 2\na 1.5 2.5\n\nb ")
    assert_same(*embtable.load_vectors(path), ["a", "b"], table)


def test_a_file_valid_both_ways_is_text(tmp_path):
    # Only tiny files can be: every row's values take exactly 4 * D bytes.
    path = tmp_path / "v"
    path.write_bytes(b"1 2\na 12 34567\n")
    words, table = embtable.load_vectors(path)
    assert words == ["a"] and table.tolist() == [[12.0, 34567.0]]
    assert_same(
        *embtable.load_vectors(path, binary=True),
        ["a"],
        ascii_vector(b"12 34567")[None],
    )
    path.write_bytes(b"2 2\na 1.5 2.5\nb 3.5 4.5\n")  # hand-written text
    assert embtable.load_vectors(path)[1].tolist() == [[1.5, 2.5], [3.5, 4.5]]


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        ("2 2\na 1 2\u00a0\nb 3 4\n", r"line 2: value 2 \(column 5\): .*'2\\xc2\\xa0'"),
        ("2 2\na 1 \u0661\nb 3 4\n", r"line 2: value 2 \(column 5\): .*'\\xd9\\xa1'"),
        ("2 2\na 1 2\nb 3 4\u00a0\n", r"line 3: value 2 \(column 5\): .*'4\\xc2\\xa0'"),
        ("1 2\na 1 2\x1c\n", r"line 2: value 2 \(column 5\): .*'2\\x1c'"),
        ("2 1\nzero\x00byte 1\nb x\n", r"line 3: value 1 \(column 3\): .*'x'"),
        ("2 2\na 1 2 3\nb 3 4\n", r"line 2: expected 2 values after the word, found 3"),
    ],
)
def test_malformed_text_is_detected_as_text(tmp_path, data, msg):
    # The error names the line and the value, as with binary=False.
    path = tmp_path / "bad.txt"
    path.write_bytes(data.encode())
    for binary in (None, False):
        with pytest.raises(ValueError, match=msg):
            embtable.load_vectors(path, binary=binary)


def test_detection_with_rows_longer_than_the_prefix(tmp_path):
    # A text row or a run of binary records longer than the 64 KiB (plus 8 * D)
    # that detection reads: the cut row is judged on its complete values.
    rng = np.random.default_rng(5)
    table = rng.standard_normal((3, 20000))
    words = ["a", "b", "c"]
    path = tmp_path / "v"
    embtable.save_vectors(path, words, table)
    assert path.stat().st_size > (1 << 16) + 8 * 20000
    assert_same(*embtable.load_vectors(path, dtype="float64"), words, table)
    embtable.save_vectors(path, words, table, binary=True)
    assert_same(*embtable.load_vectors(path), words, table.astype(np.float32))
    # gensim's layout (no newline) with vectors of no '\n' byte: one "line".
    V = 30000
    words = [f"w{i}" for i in range(V)]
    halves = np.full((V, 1), 0.5, np.float32)
    path.write_bytes(bin_file([w.encode() for w in words], halves, newline=False))
    assert b"\n" not in path.read_bytes().split(b"\n", 1)[1]
    assert_same(*embtable.load_vectors(path), words, halves)
    # A bad value early in a long first row: text, named by its line.
    path.write_bytes(b"1 20000\na 0.123456789 x" + b" 0.123456789" * 19998 + b"\n")
    with pytest.raises(ValueError, match=r"line 2: value 2 .*'x'"):
        embtable.load_vectors(path)


def test_detection_never_picks_a_reading_that_fails(tmp_path):
    # Files of text-like bytes: whenever exactly one reading succeeds, detection
    # gives it; when both do, text.
    rng = np.random.default_rng(11)
    alphabet = np.frombuffer(b"0123456789 .e-\n", np.uint8)
    path = tmp_path / "v"
    decided = {"text": 0, "binary": 0, "both": 0}
    for _ in range(600):
        V, D = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        rows = []
        for i in range(V):
            n = 4 * D if rng.random() < 0.5 else int(rng.integers(1, 8 * D))
            rows.append(b"w%d " % i + rng.choice(alphabet, n).tobytes() + b"\n")
        path.write_bytes(b"%d %d\n" % (V, D) + b"".join(rows))
        results = {}
        for name, binary in (("text", False), ("binary", True)):
            try:
                results[name] = embtable.load_vectors(path, binary=binary)
            except ValueError:
                pass
        if len(results) == 1:
            ((name, want),) = results.items()
            decided[name] += 1
            assert_same(*embtable.load_vectors(path), *want)
        elif len(results) == 2:
            decided["both"] += 1
            assert_same(*embtable.load_vectors(path), *results["text"])
    assert min(decided.values()) > 0, decided


def test_empty_table_and_zero_header(tmp_path):
    path = tmp_path / "v.txt"
    embtable.save_vectors(path, [], np.zeros((0, 7), dtype=np.float32))
    assert path.read_bytes() == b"0 7\n"
    words, table = embtable.load_vectors(path)
    assert words == [] and table.shape == (0, 7) and table.dtype == np.float32


def test_save_is_atomic_and_validates_first(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"old")
    t = np.zeros((2, 3), np.float32)
    cases = [
        (["a b", "c"], ValueError, r"words\[0\] = 'a b' contains a space"),
        (["a", "c\n"], ValueError, r"words\[1\] = 'c\\n' contains a newline"),
        (["a", "a"], ValueError, r"words\[1\] = 'a' is a duplicate of words\[0\]"),
        (["a"], ValueError, "1 words for a table of 2 rows"),
        (["a", 3], TypeError, r"words\[1\] must be a str"),
        (["a", "\ud800"], ValueError, "UTF-8"),
        ("ab", TypeError, "single string"),
    ]
    for words, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            embtable.save_vectors(path, words, t)
    with pytest.raises(ValueError, match="2-D"):
        embtable.save_vectors(path, ["a"], np.zeros(3))
    with pytest.raises(TypeError, match="real numbers"):
        embtable.save_vectors(path, ["a"], np.zeros((1, 2), dtype=complex))
    with pytest.raises(TypeError, match="binary"):
        embtable.save_vectors(path, ["a", "b"], t, binary="yes")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.txt"]  # no temp file left
    embtable.save_vectors(path, ["a", "b"], t)
    assert path.read_bytes().startswith(b"2 3\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.txt"]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("D", [0, 3])
def test_save_refuses_words_it_cannot_read_back(tmp_path, binary, D):
    # Empty, or ending with the whitespace the reader strips from a row (with D = 0
    # the word ends its row): refused in both formats and for every D.
    path = tmp_path / "v"
    path.write_bytes(b"old")
    t = np.zeros((2, D), np.float32)
    cases = [
        (["", "b"], r"^words\[0\] = '' is empty"),
        (
            ["a", "b\t"],
            r"^words\[1\] = 'b\\t' ends with whitespace, which readers strip from the end of a row$",
        ),
        (["a\r", "b"], r"^words\[0\] = 'a\\r' ends with whitespace"),
        (["a", "b\x0b"], r"^words\[1\] = 'b\\x0b' ends with whitespace"),
        (["a\x0c", "b"], r"^words\[0\] = 'a\\x0c' ends with whitespace"),
        (["a", " "], r"^words\[1\] = ' ' contains a space"),
    ]
    for words, msg in cases:
        with pytest.raises(ValueError, match=msg):
            embtable.save_vectors(path, words, t, binary=binary)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]
    # Whitespace elsewhere in a word is read back as written.
    words = ["\tstarts", "tab\tin", "ends\u00a0", "\rcr"]
    t = np.ones((4, D), np.float32)
    embtable.save_vectors(path, words, t, binary=binary)
    assert_same(*embtable.load_vectors(path), words, t)
    assert_same(*embtable.load_vectors(path, binary=binary), words, t)


def test_save_other_dtypes(tmp_path):
    path = tmp_path / "v.txt"
    embtable.save_vectors(path, ["a"], np.array([[1, 2]], dtype=np.int64))
    assert path.read_bytes() == b"1 2\na 1 2\n"
    embtable.save_vectors(path, ["a"], np.array([[0.1, 2]], dtype=np.float16))
    assert_same(
        *embtable.load_vectors(path),
        ["a"],
        np.array([[0.1, 2]], np.float16).astype(np.float32),
    )
    embtable.save_vectors(path, ("a",), np.asfortranarray([[0.5, 2]]))  # any layout
    assert path.read_bytes() == b"1 2\na 0.5 2\n"


def test_results_independent_of_threads(tmp_path):
    rng = np.random.default_rng(4)
    V, D = 3000, 40
    words = [f"w{i}" for i in range(V)]
    table = random_table(rng, V, D)
    path = tmp_path / "v.txt"
    before = embtable.get_num_threads()
    try:
        outs = []
        for n in (1, 3):
            embtable.set_num_threads(n)
            embtable.save_vectors(path, words, table)
            outs.append((path.read_bytes(), embtable.load_vectors(path)))
    finally:
        embtable.set_num_threads(before)
    assert outs[0][0] == outs[1][0]
    for _, got in outs:
        assert_same(*got, words, table)


def test_argument_errors(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("1 1\na 1\n")
    with pytest.raises(TypeError, match="dtype"):
        embtable.load_vectors(path, dtype="int32")
    with pytest.raises(ValueError, match="limit must be >= 0"):
        embtable.load_vectors(path, limit=-1)
    with pytest.raises(TypeError, match="limit"):
        embtable.load_vectors(path, limit=1.5)
    with pytest.raises(TypeError, match="binary"):
        embtable.load_vectors(path, binary=1)
    with pytest.raises(TypeError, match="path"):
        embtable.load_vectors(3.5)
    with pytest.raises(FileNotFoundError, match="missing"):
        embtable.load_vectors(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError):
        embtable.load_vectors(tmp_path)
    assert embtable.load_vectors(str(path))[0] == ["a"]
    assert embtable.load_vectors(os.fsencode(path))[0] == ["a"]


# ---------------------------------------------------------------------------
# malformed files: ValueError naming the file and the line / vector

TEXT_ERRORS = [
    # (file bytes, message regex) -- the header is line 1
    (b"2 3\na 1 2 3\nb 1 2\n", r"line 3: expected 3 values after the word, found 2"),
    (
        b"2 3\na 1 2 3\nb 1 2 3 4\n",
        r"line 3: expected 3 values after the word, found 4",
    ),
    (b"2 3\na 1 2 3\nb\n", r"line 3: expected 3 values after the word, found 0"),
    (
        b"3 3\na 1 2 3\nb 1 2 3\n",
        r"line 4: the file ends after 2 vectors, but the header \(line 1\) says 3",
    ),
    (b"3 3\na 1 2 3\nb 1 2 3\n\n  \n", r"line 4: the file ends after 2 vectors"),
    (
        b"1 3\na 1 2 3\nb 1 2 3\n",
        r"line 3: a row past the 1 vectors the header \(line 1\) announces",
    ),
    (b"1 3\na 1 2 3\n\n\nb 1 2 3\n", r"line 5: a row past the 1 vectors"),
    (
        b"0 3\na 1 2 3\n",
        r"line 2: a row past the 0 vectors the header \(line 1\) announces",
    ),
    (b"0 3\n\n \nb 1 2 3\n", r"line 4: a row past the 0 vectors"),
    (
        b"2 3\na 1 2 3\nb 1 x 3\n",
        r"line 3: value 2 \(column 5\): could not convert string to float: 'x'",
    ),
    (
        b"2 3\na 1 2 3\nb 1  3\n",
        r"line 3: value 2 .*could not convert string to float: ''",
    ),
    (b"2 3\na 1 2 3\nb 1 2 3e\n", r"line 3: value 3 .*'3e'"),
    (b"2 3\na 1 2 3\nb 1 2 nan(7)\n", r"line 3: value 3 .*'nan\(7\)'"),
    (
        b"3 3\na 1 2 3\nb 1 2 3\na 4 5 6\n",
        r"line 4: duplicate word 'a' \(first on line 2\)",
    ),
    (
        b"2 1\na 1\n\xff\xfeb 2\n",
        r"line 3: the word is not valid UTF-8 \(byte 1 of '\\xff\\xfeb'\)",
    ),
    (
        b"2 1\na 1\n\xed\xa0\x80 2\n",
        r"line 3: the word is not valid UTF-8",
    ),  # a surrogate
    (b"2 1\na 1\n\xc0\xaf 2\n", r"line 3: the word is not valid UTF-8"),  # overlong
    (b"3 1\na 1\n\nb 2\n", r"line 3: the line is empty"),
    (b"3 1\na 1\n   \nb 2\n", r"line 3: the line is empty"),
    # a header promising more than the file holds allocates no huge table
    (
        b"1000000000000 300\na 1\n",
        r"line 2: expected 300 values after the word, found 1",
    ),
    (b"1000000000000 3\na 1 2 3\n", r"line 3: the file ends after 1 vectors"),
    (b"99999999999999999999 3\n", r"line 1: the header's numbers are too large"),
    # GloVe (no header): the first row sets D
    (b"a 1 2\nb 1 2 3\n", r"line 2: expected 2 values after the word, found 3"),
    (b"a 1 2\nb 1 2\na 3 4\n", r"line 3: duplicate word 'a' \(first on line 1\)"),
    (b"a 1 2\n\nb 1 2\n", r"line 2: the line is empty"),
    (b"a 1 2\nb 1 oops\n", r"line 2: value 2 .*'oops'"),
    (b"\n", r"line 1: the line is empty"),
]


@pytest.mark.parametrize(("data", "msg"), TEXT_ERRORS)
def test_text_errors(tmp_path, io, data, msg):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=msg) as info:
        embtable.load_vectors(path, binary=False)
    assert str(info.value).startswith(str(path) + ", line ")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt: the file is empty"):
        embtable.load_vectors(path)


def bin_file(words, table, header=None, newline=True):
    V, D = table.shape
    head = (header or f"{V} {D}").encode() + b"\n"
    return head + b"".join(
        w + b" " + row.astype("<f4").tobytes() + (b"\n" if newline else b"")
        for w, row in zip(words, table, strict=True)
    )


def test_binary_errors(tmp_path, io):
    t = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    ok = bin_file([b"a", b"b", b"c"], t)
    path = tmp_path / "bad.bin"
    cases = [
        (
            ok[:-7],
            r"vector 3: truncated: the file ends 10 bytes into its 16-byte vector",
        ),
        (ok[:-18], r"vector 3 \(byte \d+\): truncated: the file ends inside the word"),
        (
            bin_file([b"a", b"b", b"c"], t, header="4 4"),
            r"vector 4 \(byte \d+\): the file ends after 3 vectors, but the header says 4",
        ),
        (
            bin_file([b"a", b"b", b"c"], t, header="2 4"),
            r"vector 3 \(byte \d+\): more vectors than the 2 the header announces",
        ),
        (
            bin_file([b"a", b"\xff", b"c"], t),
            r"vector 2 \(byte \d+\): the word is not valid UTF-8",
        ),
        (
            bin_file([b"a", b"b", b"a"], t),
            r"vector 3: duplicate word 'a' \(first at vector 1\)",
        ),
        (b"a 1 2\n", r"line 1: a word2vec binary file starts with a 'V D' header line"),
        (
            b"1 1\n" + b"x" * 100,
            r"vector 1 \(byte 4\): truncated: the file ends inside the word",
        ),
    ]
    for data, msg in cases:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=msg) as info:
            embtable.load_vectors(path, binary=True)
        assert str(info.value).startswith(str(path) + ", ")
    # limit stops before the damage
    path.write_bytes(ok[:-7])
    assert_same(*embtable.load_vectors(path, binary=True, limit=2), ["a", "b"], t[:2])


def test_binary_detected_errors(tmp_path):
    # binary=None: a truncated binary file is still detected as binary.
    t = np.full((2, 8), -3.0, dtype=np.float32)
    path = tmp_path / "bad.bin"
    path.write_bytes(bin_file([b"a", b"b"], t)[:-5])
    with pytest.raises(ValueError, match=r"vector 2: truncated"):
        embtable.load_vectors(path)
    # A malformed text file is still detected as text.
    path.write_bytes(b"2 3\na 1 2\nb 1 2 3\n")
    with pytest.raises(ValueError, match=r"line 2: expected 3 values"):
        embtable.load_vectors(path)


def test_binary_leading_newlines_are_dropped_like_gensim(tmp_path):
    t = np.ones((2, 2), np.float32)
    path = tmp_path / "v.bin"
    path.write_bytes(
        b"2 2\n\n\na " + t[0].tobytes() + b"\r\nb " + t[1].tobytes() + b"\n\n"
    )
    got = embtable.load_vectors(path, binary=True)
    assert got[0] == ["a", "\r\nb"]  # only '\n' is dropped, as gensim does
    assert_same(*got, *gensim_load(path, binary=True))


# ---------------------------------------------------------------------------
# from_pretrained


def test_from_pretrained_rules():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    layer = embtable.Embedding.from_pretrained(w)
    assert layer.trainable is False
    assert layer.embeddings.dtype == np.float32 and layer.embeddings.shape == (4, 3)
    w[0, 0] = 100.0  # copied: the layer does not see later changes
    assert layer.embeddings[0, 0] == 0.0
    np.testing.assert_array_equal(
        layer(np.array([[3, 1]])), np.arange(12).reshape(4, 3)[[[3, 1]]]
    )
    layer = embtable.Embedding.from_pretrained(
        w, freeze=False, padding_idx=-1, max_norm=5.0, sparse=True
    )
    assert (
        layer.trainable is True
        and layer.padding_idx == 3
        and layer.max_norm == 5.0
        and layer.sparse
    )
    np.testing.assert_array_equal(layer.embeddings[3], w[3])  # padding row kept as is
    assert embtable.Embedding.from_pretrained(w.astype(np.float64)).dtype == "float64"
    assert embtable.Embedding.from_pretrained(w.astype(np.float16)).dtype == "float32"
    assert embtable.Embedding.from_pretrained([[1, 2], [3, 4]]).dtype == "float32"
    with pytest.raises(ValueError, match="2-D"):
        embtable.Embedding.from_pretrained(np.zeros(3))
    with pytest.raises(ValueError, match="padding_idx"):
        embtable.Embedding.from_pretrained(w, padding_idx=4)
    with pytest.raises(ValueError, match="padding_idx"):
        embtable.Embedding.from_pretrained(w, padding_idx=-5)
    with pytest.raises(ValueError, match="scale_grad_by_freq"):
        embtable.Embedding.from_pretrained(w, scale_grad_by_freq=True)
    with pytest.raises(TypeError, match="real numbers"):
        embtable.Embedding.from_pretrained(np.zeros((2, 2), dtype=bool))

    bag = embtable.EmbeddingBag.from_pretrained(w)
    assert bag.trainable is False and bag.mode == "mean"
    out = bag(np.array([[0, 1], [2, 3]]))
    np.testing.assert_allclose(out, [(w[0] + w[1]) / 2, (w[2] + w[3]) / 2])
    bag = embtable.EmbeddingBag.from_pretrained(
        w, freeze=False, mode="sum", include_last_offset=True, padding_idx=1
    )
    assert bag.trainable and bag.mode == "sum" and bag.include_last_offset
    out = bag(np.array([0, 1, 2]), offsets=np.array([0, 2, 3]))
    np.testing.assert_array_equal(out, [w[0], w[2]])  # padding id 1 skipped
    with pytest.raises(ValueError, match="mode"):
        embtable.EmbeddingBag.from_pretrained(w, mode="median")


def test_from_pretrained_then_load_vectors(tmp_path):
    words = ["the", "cat", "sat"]
    table = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=np.float32)
    embtable.save_vectors(tmp_path / "v.txt", words, table)
    vocab, vectors = embtable.load_vectors(tmp_path / "v.txt")
    layer = embtable.Embedding.from_pretrained(vectors)
    index = {w: i for i, w in enumerate(vocab)}
    np.testing.assert_array_equal(
        layer(np.array([index["sat"], index["the"]])), table[[2, 0]]
    )


def test_from_pretrained_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        w = rng.standard_normal((9, 5)).astype(dtype)
        ids = rng.integers(0, 9, size=(4, 3))
        for kw in (
            dict(),
            dict(freeze=False, padding_idx=-2),
            dict(padding_idx=3, max_norm=1.0),
        ):
            t = torch.nn.Embedding.from_pretrained(torch.tensor(w), **kw)
            e = embtable.Embedding.from_pretrained(w, **kw)
            assert e.trainable == t.weight.requires_grad
            assert e.padding_idx == t.padding_idx
            ref = t(torch.tensor(ids)).detach().numpy()
            np.testing.assert_allclose(e(ids), ref, rtol=1e-6)
            np.testing.assert_allclose(
                e.embeddings, t.weight.detach().numpy(), rtol=1e-6
            )
        offsets = np.array([0, 2, 2, 7])
        flat = rng.integers(0, 9, size=9)
        for kw in (
            dict(),
            dict(mode="sum", padding_idx=-1),
            dict(mode="max", freeze=False),
            dict(mode="sum", include_last_offset=True),
        ):
            t = torch.nn.EmbeddingBag.from_pretrained(torch.tensor(w), **kw)
            e = embtable.EmbeddingBag.from_pretrained(w, **kw)
            assert e.trainable == t.weight.requires_grad
            assert e.padding_idx == t.padding_idx
            offs = (
                np.array([0, 2, 2, 7, 9]) if kw.get("include_last_offset") else offsets
            )
            ref = t(torch.tensor(flat), torch.tensor(offs)).detach().numpy()
            np.testing.assert_allclose(
                e(flat, offsets=offs), ref, rtol=1e-6, atol=1e-12
            )
        # a torch tensor (a Parameter too) is accepted
        p = torch.nn.Parameter(torch.tensor(w))
        np.testing.assert_array_equal(
            embtable.Embedding.from_pretrained(p).embeddings, w
        )


def test_struct_layout_of_binary_is_little_endian(tmp_path):
    path = tmp_path / "v.bin"
    embtable.save_vectors(
        path, ["ab"], np.array([[1.0, -2.0]], np.float32), binary=True
    )
    assert path.read_bytes() == b"1 2\nab " + struct.pack("<2f", 1.0, -2.0) + b"\n"


def test_show_config_reports_io_sizes():
    cfg = embtable.show_config(mode="dicts")["vectors_io"]
    assert cfg == _core.vectors_config()
    assert cfg["text_block_bytes"] >= cfg["text_piece_bytes"] > 0
    assert cfg["binary_buffer_bytes"] > 0


def test_pathlib_and_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    embtable.save_vectors("rel.txt", ["a"], np.ones((1, 1)))
    assert embtable.load_vectors(Path("rel.txt"))[0] == ["a"]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("n", [7, 5_000])
def test_the_first_repeated_word_in_file_order_is_named(tmp_path, binary, n):
    # Several duplicates: the error names the earliest vector whose word came before
    # (not the first word that has a duplicate somewhere), and where it first was.
    rng = np.random.default_rng(n)
    words = [f"w{i}" for i in range(n)]
    a, b, c = sorted(rng.choice(np.arange(1, n), 3, replace=False).tolist())
    words[c] = words[0]  # word 0 repeats last
    words[b] = words[a - 1] if a > 1 else words[0]  # the first repeat, at b
    first = words.index(words[b])
    assert first < b and all(words.index(w) == i for i, w in enumerate(words[:b]))
    path = tmp_path / "dup"
    vec = np.arange(2, dtype=np.float32)
    with open(path, "wb") as f:
        f.write(f"{n} 2\n".encode())
        for w in words:
            if binary:
                f.write(w.encode() + b" " + vec.tobytes() + b"\n")
            else:
                f.write(f"{w} 0 1\n".encode())
    where = (
        rf"vector {b + 1}: duplicate word '{words[b]}' \(first at vector {first + 1}\)"
        if binary
        else rf"line {b + 2}: duplicate word '{words[b]}' \(first on line {first + 2}\)"
    )
    with pytest.raises(ValueError, match=where):
        embtable.load_vectors(path, binary=binary)
    # Without duplicates the same file loads.
    words[b], words[c] = "x", "y"
    with open(path, "wb") as f:
        f.write(f"{n} 2\n".encode())
        for w in words:
            f.write(
                w.encode() + b" " + vec.tobytes() + b"\n"
                if binary
                else f"{w} 0 1\n".encode()
            )
    got, table = embtable.load_vectors(path, binary=binary)
    assert got == words and table.shape == (n, 2)
