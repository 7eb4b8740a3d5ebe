"""The tables' column lists (docs/contracts.md) and the one table-file reader: format by extension, a file or a
folder of them, local or s3://. jobs.contracts adds the contract's errors and the streaming reader on top;
inference's recorded engine reads its file through :func:`read_table`."""

from __future__ import annotations

import pandas as pd

TABLE_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")

RESPONSE_COLUMNS = ["request_id", "model", "response", "prompt_tokens", "completion_tokens", "latency_s",
                    "finish_reason", "attempts", "error"]
SCORE_COLUMNS = ["request_id", "model", "metric", "value"]
LABEL_COLUMNS = ["request_id", "model", "dimension", "value"]
QUARANTINE_COLUMNS = ["stage", "source", "row", "request_id", "field", "reason", "raw"]
# A labels batch's sampling design: every unit of its pool, chosen or not (jobs.labels.design_table).
DESIGN_COLUMNS = ["batch", "request_id", "model", "inclusion_prob", "selected"]


def frame_to_arrow(df: pd.DataFrame):
    """``pa.Table.from_pandas(df, preserve_index=False)``, readable back by pandas when ``df`` holds Arrow-backed
    nested columns (jobs.contracts_arrow's messages): pandas records such a dtype as a string it cannot parse
    again ("list<item: struct<...>>[pyarrow]"), so the table carries the metadata the same columns would have as
    Python objects, and reads back as they would."""
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    nested = [c for c in df.columns
              if isinstance(df[c].dtype, pd.ArrowDtype) and pa.types.is_nested(df[c].dtype.pyarrow_dtype)]
    if nested and len(df):
        head = df.head(1).astype({c: object for c in nested})
        table = table.replace_schema_metadata(pa.Table.from_pandas(head, preserve_index=False).schema.metadata)
    return table


def parquet_bytes_frame(raw: bytes, columns: list[str] | None = None,
                        read_dictionary: list[str] | None = None) -> pd.DataFrame:
    """Parquet bytes as a frame, decoded on the calling thread.

    Arrow's thread pools are the cause of "terminate called without an active exception" (exit -6) at interpreter
    exit (apache/arrow#34314): a pool worker still joinable when the process tears down. `pq.read_table` starts one
    even with ``use_threads=False`` (its dataset scan), and so does a threaded ``to_pandas``; `ParquetFile.read` and
    ``to_pandas(use_threads=False)`` start none. `baton decide` exited -6 that way in CI twice; a script that reads
    like `pq.read_table` aborted 2 times in 60 under load here, this one 0 in 120. Shards are small, so one thread
    costs little. Not through a Python file object either: Arrow calling back into Python is the same hazard.
    Missing ``columns`` raise ArrowInvalid, as `pq.read_table` does; ``read_dictionary`` columns come back
    dictionary-encoded (pandas categoricals)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(pa.BufferReader(raw), read_dictionary=read_dictionary)
    if columns is not None and (missing := [c for c in columns if c not in pf.schema_arrow.names]):
        raise pa.ArrowInvalid(f"no column(s) {missing} in the Parquet file (present: {pf.schema_arrow.names})")
    table = pf.read(columns=columns, use_threads=False, use_pandas_metadata=columns is None)
    return table.to_pandas(use_threads=False)


def read_one(fs, path: str) -> pd.DataFrame:
    """One Parquet, JSONL, JSON or CSV file from an fsspec filesystem (request ids stay strings in CSV)."""
    lower = path.lower()
    with fs.open(path, "rb") as fh:
        if lower.endswith(".parquet"):
            return parquet_bytes_frame(fh.read())
        if lower.endswith((".jsonl", ".ndjson")):
            return pd.read_json(fh, lines=True, dtype=False)
        if lower.endswith(".json"):
            return pd.read_json(fh, dtype=False)
        if lower.endswith(".csv"):
            return pd.read_csv(fh, dtype={"request_id": str})
    raise ValueError(f"{path}: unknown table format (use {', '.join(TABLE_SUFFIXES)})")


def table_files(uri: str, storage_options: dict | None = None) -> tuple[object, str, list[str]]:
    """(filesystem, path, files): the one file at ``uri``, or every table file under the folder, sorted so the
    order is stable (empty when the folder holds none)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if fs.isdir(path):
        return fs, path, sorted(f for f in fs.find(path) if f.lower().endswith(TABLE_SUFFIXES))
    return fs, path, [path]


def read_table(uri: str, storage_options: dict | None = None) -> pd.DataFrame:
    """A table file, or every table file under a folder (sorted), local or s3://."""
    fs, _, files = table_files(uri, storage_options)
    if not files:
        raise FileNotFoundError(f"{uri}: folder holds no table files")
    if len(files) == 1:
        return read_one(fs, files[0])
    return one_chunk(pd.concat([read_one(fs, f) for f in files], ignore_index=True))


def one_chunk(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each Arrow-backed column (pandas' default strings) in one Arrow chunk, in place.

    A concatenation of files leaves such a column in one chunk per file, and a row gather (``iloc``, pyarrow's
    take) over many chunks costs time in proportion to the whole column, not to the rows taken: the recorded
    engine's per-shard lookup into a 10M-row answers table of 100 files took most of the replay stage (py-spy),
    and 0.64 s per 10,000-row gather at 2M rows against 0.008 s from one chunk. Each column is combined once
    (pandas' pyarrow strings are large_string: no 2 GiB offset limit)."""
    import pyarrow as pa

    for col in df.columns:
        arr = df[col].array
        if not isinstance(arr, pd.arrays.ArrowExtensionArray):
            continue
        chunked = arr.__arrow_array__()
        if isinstance(chunked, pa.ChunkedArray) and chunked.num_chunks > 1:
            df[col] = pd.array(chunked.combine_chunks(), dtype=df[col].dtype)
    return df
