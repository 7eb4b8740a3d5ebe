"""Reading a whole table file by its extension: the one format dispatch shared by the recorded engine and jobs."""

from __future__ import annotations

import pandas as pd

TABLE_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")


def read_one(fs, path: str) -> pd.DataFrame:
    """One Parquet, JSONL, JSON or CSV file from an fsspec filesystem (request ids stay strings in CSV)."""
    lower = path.lower()
    with fs.open(path, "rb") as fh:
        if lower.endswith(".parquet"):
            return pd.read_parquet(fh)
        if lower.endswith((".jsonl", ".ndjson")):
            return pd.read_json(fh, lines=True, dtype=False)
        if lower.endswith(".json"):
            return pd.read_json(fh, dtype=False)
        if lower.endswith(".csv"):
            return pd.read_csv(fh, dtype={"request_id": str})
    raise ValueError(f"{path}: unknown table format (use {', '.join(TABLE_SUFFIXES)})")


def read_table(uri: str, storage_options: dict | None = None) -> pd.DataFrame:
    """A table file, or every table file under a folder (sorted), local or s3://."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if fs.isdir(path):
        files = sorted(f for f in fs.find(path) if f.lower().endswith(TABLE_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"{uri}: folder holds no table files")
        return pd.concat([read_one(fs, f) for f in files], ignore_index=True)
    return read_one(fs, path)
