"""common.tables: a folder of table files reads as one table whose Arrow-backed columns are one chunk each, so a
row gather costs the rows taken, not the whole column (the recorded engine gathers once per traffic shard)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from common.tables import one_chunk, read_table


def _chunks(series: pd.Series) -> int:
    return series.array.__arrow_array__().num_chunks


def test_a_folder_reads_whole_with_one_chunk_per_column(tmp_path):
    parts = [pd.DataFrame({"request_id": [f"r{k}-{i}" for i in range(50)], "response": [f"a{i}" for i in range(50)],
                           "tokens": np.arange(50)}) for k in range(7)]
    for k, part in enumerate(parts):
        part.to_parquet(tmp_path / f"part-{k:04d}.parquet")
    got = read_table(str(tmp_path))
    want = pd.concat(parts, ignore_index=True)
    assert _chunks(want["response"]) == 7  # what a plain concatenation leaves
    pd.testing.assert_frame_equal(got, want)
    assert _chunks(got["request_id"]) == 1 and _chunks(got["response"]) == 1
    pos = np.array([3, 120, 349])
    assert list(got.iloc[pos]["request_id"]) == ["r0-3", "r2-20", "r6-49"]


def test_one_chunk_keeps_dtypes_nulls_and_other_columns():
    a = pd.DataFrame({"s": pd.array(["x", None], dtype="str"), "n": [1.0, np.nan],
                      "arrow": pd.array([1, None], dtype=pd.ArrowDtype(pa.int64()))})
    b = a.assign(s=pd.array(["y", "z"], dtype="str"))
    df = pd.concat([a, b], ignore_index=True)
    out = one_chunk(df.copy())
    pd.testing.assert_frame_equal(out, df)
    assert _chunks(out["s"]) == 1 and _chunks(out["arrow"]) == 1 and out["s"].isna().sum() == 1
