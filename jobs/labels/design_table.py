"""The ``label_design`` table: every exported batch's pool units, their inclusion probability and whether chosen.

One shard per batch (shard id = the batch name), committed exactly once by `baton labels export`, so a batch's
design is written whole or not at all and never twice. :func:`read_design` is the one reader: the design weights
(jobs.labels.checks) and the units already taken (jobs.labels.export) both come from it.

Runs exported before the table existed hold the design as documents ``labels/design-<batch>.parquet`` (columns
request_id, candidate, inclusion_prob) and the chosen units only in ``labels/key-<batch>.json``; they are read too,
for batches the table does not hold.
"""

from __future__ import annotations

import json

import pandas as pd

from common.tables import DESIGN_COLUMNS, parquet_bytes_frame
from jobs.errors import ContractError
from jobs.store import RunStore

TABLE = "label_design"


def write_design(store: RunStore, batch: str, pool: pd.DataFrame, chosen: pd.DataFrame) -> None:
    """Commit a batch's design: ``pool`` (request_id, candidate, inclusion_prob) of every unit offered, ``chosen``
    the units picked (request_id, candidate). A batch already committed is refused (exactly once)."""
    picked = set(zip(chosen["request_id"].astype(str), chosen["candidate"].astype(str)))
    df = pd.DataFrame({"batch": batch, "request_id": pool["request_id"].astype(str).to_numpy(),
                       "model": pool["candidate"].astype(str).to_numpy(),
                       "inclusion_prob": pool["inclusion_prob"].to_numpy(dtype=float)})
    df["selected"] = [(r, m) in picked for r, m in zip(df["request_id"], df["model"])]
    if not store.write_shard(TABLE, batch, df[DESIGN_COLUMNS], meta={"batch": batch}):
        raise ContractError(f"batch {batch!r}: its design is already in {store.uri(TABLE)}; choose another --batch")


def read_design(store: RunStore) -> pd.DataFrame:
    """All batches' design rows (DESIGN_COLUMNS): the ``label_design`` table, plus legacy design documents of
    batches it does not hold."""
    table = store.read_table(TABLE)
    frames = [table[DESIGN_COLUMNS]] if not table.empty else []
    have = set(table["batch"].astype(str)) if not table.empty else set()
    frames += [df for batch, df in _legacy(store) if batch not in have]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(DESIGN_COLUMNS, (str, str, str, float, bool))})
    out = pd.concat(frames, ignore_index=True)
    return out.astype({"batch": str, "request_id": str, "model": str, "inclusion_prob": float, "selected": bool})


def _legacy(store: RunStore) -> list[tuple[str, pd.DataFrame]]:
    """(batch, rows) of the design documents ``labels/design-<batch>.parquet``, ``selected`` from the batch's key
    in the store (the old export kept the chosen units only there). A legacy key without a design document (a
    crash between the two writes) still marks its units as taken, with no inclusion probability."""
    try:
        names = store.fs.ls(store.path("labels"), detail=False, refresh=True)
    except FileNotFoundError:
        return []
    bases = {n.rsplit("/", 1)[-1] for n in names}
    designs = sorted(b[len("design-"):-len(".parquet")] for b in bases
                     if b.startswith("design-") and b.endswith(".parquet"))
    keys = sorted(b[len("key-"):-len(".json")] for b in bases if b.startswith("key-") and b.endswith(".json"))
    out = []
    for batch in sorted(set(designs) | set(keys)):
        picked: set[tuple[str, str]] = set()
        if batch in keys:
            key = json.loads(store.read_document("labels", f"key-{batch}.json"))
            picked = {(str(it["request_id"]), str(it["candidate"])) for it in key["items"]}
        if batch in designs:
            doc = parquet_bytes_frame(store.read_document("labels", f"design-{batch}.parquet"))
            df = pd.DataFrame({"batch": batch, "request_id": doc["request_id"].astype(str).to_numpy(),
                               "model": doc["candidate"].astype(str).to_numpy(),
                               "inclusion_prob": doc["inclusion_prob"].to_numpy(dtype=float)})
        else:
            df = pd.DataFrame({"batch": batch, "request_id": [r for r, _ in sorted(picked)],
                               "model": [m for _, m in sorted(picked)], "inclusion_prob": float("nan")})
        df["selected"] = [(r, m) in picked for r, m in zip(df["request_id"], df["model"])]
        out.append((batch, df[DESIGN_COLUMNS]))
    return out
