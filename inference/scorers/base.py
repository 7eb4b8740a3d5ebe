"""Shared pieces of the scorer stages: the input contract and the long-form output."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.tables import SCORE_COLUMNS  # noqa: F401 - the one column list, shared with jobs/
# Every scorer sees one candidate (or the incumbent) on one traffic shard, joined with the traffic.
INPUT_COLUMNS = ["request_id", "model", "response", "incumbent_response", "reference", "messages"]


class MissingColumn(ValueError):
    """A scorer's input batch lacks a required column (the message names it)."""


def require(batch: pd.DataFrame, columns: list[str], stage: str) -> None:
    """Raise before any work, naming the first missing column."""
    for col in columns:
        if col not in batch.columns:
            raise MissingColumn(f"{stage}: input batch is missing column {col!r} (present: {list(batch.columns)})")


def text_series(batch: pd.DataFrame, column: str) -> pd.Series:
    """A column as object strings with None for null (pandas 3 may hand us the str dtype or NaN)."""
    s = batch[column].astype(object)
    return s.where(s.notna(), None)


def long_form(batch: pd.DataFrame, metrics: dict[str, np.ndarray | pd.Series]) -> pd.DataFrame:
    """Wide metric arrays (aligned with batch rows) to long-form score rows; NaN means 'no score' and is dropped."""
    if not metrics or len(batch) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else object) for c in SCORE_COLUMNS})
    n = len(batch)
    names = list(metrics)
    values = np.concatenate([np.asarray(metrics[m], dtype="float64").reshape(n) for m in names])
    out = pd.DataFrame({
        "request_id": np.tile(batch["request_id"].astype(str).to_numpy(dtype=object), len(names)),
        "model": np.tile(batch["model"].astype(str).to_numpy(dtype=object), len(names)),
        "metric": np.repeat(np.array(names, dtype=object), n),
        "value": values,
    })
    return out[~np.isnan(values)].reset_index(drop=True)
