"""The `recorded` engine: responses collected elsewhere, read from a table and aligned to the traffic.

The table needs ``request_id`` and ``response`` (and may carry the other responses columns, and a model column
when it holds several models). Every traffic request gets exactly one row: the first recorded row for it, or an
error row of kind ``not_recorded``. Contract checks of the recorded rows themselves (duplicates, rows with
neither response nor error) are the replay stage's job, which quarantines them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from inference.engines.base import RESPONSE_COLUMNS, error_text, require_input, response_frame
from inference.engines.config import RecordedEngineConfig
from common.tables import read_table


class RecordedEngine:
    """Ray Data stage: ``RecordedEngine(config)(batch) -> responses batch`` from the recorded table."""

    def __init__(self, config: RecordedEngineConfig, storage_options: dict | None = None):
        self.config = config
        table = read_table(config.path, storage_options)
        for col in ("request_id", "response"):
            if col not in table.columns:
                raise KeyError(f"recorded table {config.path}: missing column {col!r} (present: {list(table.columns)})")
        if config.model_column:
            if config.model_column not in table.columns:
                raise KeyError(f"recorded table {config.path}: model_column {config.model_column!r} is not a column")
            table = table[table[config.model_column].astype(str) == config.name]
        table = table.reset_index(drop=True)
        table["request_id"] = table["request_id"].astype(str)
        self.table = table
        # An index built once per actor: a shard's lookup costs O(shard), not a scan of the whole table.
        codes, uniques = pd.factorize(table["request_id"])
        self._order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(uniques))
        self._start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._count = counts.astype(np.int64)
        self._ids = pd.Index(uniques)

    def lookup(self, request_ids) -> pd.DataFrame:
        """The raw recorded rows of these requests (duplicates and bad rows included) with model = config.name.

        Rows come in table order, as a filter of the table would give them."""
        at = self._ids.get_indexer(pd.Index(pd.unique(pd.Series(request_ids).astype(str))))
        at = at[at >= 0]
        counts = self._count[at]
        # positions of every row of every found id, in one vectorised gather
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        pos = np.sort(self._order[np.repeat(self._start[at], counts) + within])
        rows = self.table.iloc[pos].copy()
        rows["model"] = self.config.name
        for col in RESPONSE_COLUMNS:
            if col not in rows.columns:
                rows[col] = 1 if col == "attempts" else (0 if col.endswith("tokens") else None)
        return rows[RESPONSE_COLUMNS].reset_index(drop=True)

    def align(self, batch: pd.DataFrame, rows: pd.DataFrame, missing_kind: str = "not_recorded",
              reasons: dict[str, str] | None = None) -> pd.DataFrame:
        """One row per request of ``batch``: its first row in ``rows`` or an error row (with its reason)."""
        want = batch["request_id"].astype(str).reset_index(drop=True)
        first = rows.drop_duplicates("request_id", keep="first")
        first = first.assign(request_id=first["request_id"].astype(str)).set_index("request_id")
        at = first.index.get_indexer(want)
        found = at >= 0
        out = first.iloc[np.where(found, at, 0)].reset_index(drop=True) if len(first) else \
            pd.DataFrame(index=range(len(want)), columns=[c for c in RESPONSE_COLUMNS if c != "request_id"])
        out.insert(0, "request_id", want.to_numpy(dtype=object))
        out = out.reindex(columns=RESPONSE_COLUMNS)
        if not found.all():
            miss = ~found
            missing = want[miss]
            absent = error_text(missing_kind, f"no row in {self.config.path}")
            reasons = reasons or {}
            err = [error_text("quarantined", reasons[r]) if r in reasons else absent for r in missing]  # rare rows
            blank = {"model": self.config.name, "response": None, "prompt_tokens": 0, "completion_tokens": 0,
                     "latency_s": 0.0, "finish_reason": None, "attempts": 0}
            for col, value in blank.items():
                out[col] = out[col].astype(object)
                out.loc[miss, col] = value
            out["error"] = out["error"].astype(object)
            out.loc[miss, "error"] = err
        return response_frame(out)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require_input(batch, f"recorded engine {self.config.name!r}")
        rows = self.lookup(list(batch["request_id"]))
        usable = rows["response"].notna() | rows["error"].notna()
        return self.align(batch, rows[usable])
