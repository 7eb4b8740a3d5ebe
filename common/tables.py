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


def parquet_bytes_frame(raw: bytes, **kwargs) -> pd.DataFrame:
    """Parquet bytes as a frame, read from an Arrow buffer. Not through a Python file object (pandas' file handle,
    BytesIO): Arrow's reader threads calling back into Python can abort the interpreter at exit with "terminate
    called without an active exception" (apache/arrow#34314, #50482; `baton decide` exited -6 once in CI)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(raw), **kwargs).to_pandas()


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
    return pd.concat([read_one(fs, f) for f in files], ignore_index=True) if len(files) > 1 else read_one(fs, files[0])
