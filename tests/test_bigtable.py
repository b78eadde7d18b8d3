"""Tables past 2**31 elements: positions, offsets and sizes must be 64-bit everywhere.

A sparse np.memmap table of V * D = 2**31 + 512 float32 (8 GiB + 2 KiB of file,
but only the touched pages are ever written). Rows at and past element 2**31
(row 2**25 with D = 64) are gathered and scatter-added and compared with NumPy
on the same rows. Run with EMBTABLE_BIGTABLE=1 (ci/bigtable.sh does, for the
plain and the UBSan build); skipped otherwise.
"""

from __future__ import annotations

import os

import embtable
import numpy as np
import pytest

pytestmark = [
    pytest.mark.bigtable,
    pytest.mark.skipif(
        os.environ.get("EMBTABLE_BIGTABLE") != "1",
        reason="set EMBTABLE_BIGTABLE=1 (needs an 8 GiB sparse file)",
    ),
]

D = 64
V = 2**25 + 8  # V * D = 2**31 + 512
BOUNDARY_ROW = 2**31 // D  # first row whose elements lie past element 2**31
ROWS = np.array(
    [
        0,
        1,
        BOUNDARY_ROW - 1,
        BOUNDARY_ROW,
        BOUNDARY_ROW + 3,
        V - 1,
        12_345_678,
        BOUNDARY_ROW,
        V - 1,
        V - 1,
    ]
)  # duplicates on purpose


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "table.f32"
    t = np.memmap(path, dtype=np.float32, mode="w+", shape=(V, D))
    assert t.size == 2**31 + 512
    for r in np.unique(ROWS):  # only these pages are written; the rest stays a hole
        t[r] = np.arange(D, dtype=np.float32) + np.float32(r % 1000)
    yield t
    del t
    path.unlink()


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64, np.uint32, np.uint64])
@pytest.mark.parametrize("threads", [1, 2])
def test_gather_past_2_31(table, index_dtype, threads):
    embtable.set_num_threads(threads)
    idx = ROWS.astype(index_dtype)
    want = np.stack([np.asarray(table[int(r)]) for r in ROWS])
    got = embtable.gather(table, idx)
    np.testing.assert_array_equal(got, want)
    # Long enough for the pool: every task's rows are past element 2**31.
    many = np.repeat(ROWS[3:5], 3000).astype(index_dtype)
    np.testing.assert_array_equal(
        embtable.gather(table, many),
        np.stack([np.asarray(table[int(r)]) for r in many]),
    )


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_scatter_add_past_2_31(table, deterministic, threads):
    embtable.set_num_threads(threads)
    rows = np.unique(ROWS)
    before = {int(r): np.array(table[int(r)]) for r in rows}
    idx = np.concatenate([ROWS, np.repeat(ROWS[3:6], 700)]).astype(np.int64)
    upd = (np.arange(idx.size * D, dtype=np.float32).reshape(idx.size, D) % 5) - 2
    embtable.scatter_add(table, idx, upd, deterministic=deterministic)
    for r in rows:
        want = before[int(r)].copy()
        sel = idx == r
        for u in upd[sel]:  # np.add.at order, on this row only
            want += u
        np.testing.assert_array_equal(
            np.asarray(table[int(r)]), want, err_msg=f"row {r}"
        )
    for r in rows:  # restore for the other parametrizations
        table[int(r)] = before[int(r)]


def test_index_error_names_large_values(table):
    with pytest.raises(
        IndexError,
        match=f"index {V} at position \\(2,\\) is out of bounds "
        f"for a table with {V} rows",
    ):
        embtable.gather(table, np.array([BOUNDARY_ROW, V - 1, V], dtype=np.int64))


@pytest.mark.skipif(not hasattr(embtable, "embedding_bag"), reason="no embedding_bag")
def test_embedding_bag_past_2_31(table):
    idx = ROWS.astype(np.int64)
    offsets = np.array([0, 3, 5], dtype=np.int64)
    got = embtable.embedding_bag(table, idx, offsets, mode="sum")
    rows = np.stack([np.asarray(table[int(r)]) for r in ROWS])
    want = np.stack([rows[0:3].sum(0), rows[3:5].sum(0), rows[5:].sum(0)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
