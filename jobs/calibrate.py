"""Decide stage of the pipeline: the run's scores, labels and traffic segments -> decision/decision.json.

The same entry point as the standalone `baton decide` (calibration.pipeline.decide), fed from the run store.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from calibration.data import InputError
from calibration.pipeline import decide
from calibration.schema import Decision
from jobs.config import RunConfig
from jobs.contracts import SCORE_COLUMNS
from jobs.errors import ContractError
from jobs.label_checks import design_weights
from jobs.store import RunStore

log = logging.getLogger(__name__)


def decide_run(cfg: RunConfig, store: RunStore) -> Decision:
    """Calibrate and decide from the run's tables; writes decision.json and returns it."""
    scores = read_scores_compact(store)
    labels = store.read_table("labels")
    if labels.empty:
        raise ContractError(f"{store.uri('labels')}: no human labels in this run (set labels.path or use `baton labels import`)")
    traffic = store.read_table("traffic", columns=["request_id", *cfg.traffic.segments]) if cfg.traffic.segments else None
    # every unit any exported batch could have chosen, not only the labelled ones: a unit's probability combines
    # all batches (`baton labels export`); labels from a plain table carry none and count as a random sample
    design = design_weights(store) if cfg.decision.design_adjustment != "none" else None
    if design is not None and design.empty:
        design = None
    try:
        decision = decide(scores, labels, traffic, cfg.decision, cfg.incumbent.name,
                          [c.name for c in cfg.candidates], list(cfg.traffic.segments), design=design,
                          run_id=cfg.run_id)
    except InputError as exc:
        raise ContractError(f"{store.uri()}: {exc}") from None
    doc = decision.as_dict()
    store.write_document("decision", "decision.json", json.dumps(doc, indent=2, default=float))
    store.update_manifest(stages={"decide": {"verdicts": doc["verdicts"], "warnings": doc["warnings"]}})
    return decision


def read_scores_compact(store: RunStore, keep_metric=None) -> pd.DataFrame:
    """The scores table shard by shard, kept compact: request_id, model and metric as categoricals (int32 codes and
    one copy of each name), value as float32. Each shard's names are mapped to codes against one growing dictionary
    per column and written into preallocated arrays, so a 1M-request run's ~20M score rows take ~0.3 GiB and no
    shard is held as strings longer than its own read (no union of per-shard categories at the end).
    ``keep_metric(name) -> bool`` keeps only the rows of the metrics it accepts."""
    total = store.count_rows("scores")
    dicts: dict[str, dict] = {c: {} for c in ("request_id", "model", "metric")}
    codes = {c: np.empty(total, dtype=np.int32) for c in dicts}
    value = np.empty(total, dtype=np.float32)
    at = 0
    for _, df in store.iter_shards("scores", columns=list(SCORE_COLUMNS), categorical=["request_id", "model", "metric"]):
        if keep_metric is not None:
            metric = df["metric"].astype("category")
            wanted = [m for m in metric.cat.categories if keep_metric(str(m))]
            df = df.loc[metric.isin(wanted).to_numpy()]
        n = len(df)
        if at + n > len(value):  # more rows than the commit records said: grow
            grow = max(at + n, 2 * len(value))
            value = np.resize(value, grow)
            codes = {c: np.resize(a, grow) for c, a in codes.items()}
        for c, d in dicts.items():
            s = df[c]
            cat = s.array if isinstance(s.dtype, pd.CategoricalDtype) else pd.Categorical(s.astype(str))
            names = [str(x) for x in cat.categories]
            local = np.asarray([d.setdefault(x, len(d)) for x in names] + [-1], dtype=np.int32)  # -1: null
            codes[c][at:at + n] = local[np.asarray(cat.codes)]  # a null's code -1 picks the trailing -1
        value[at:at + n] = df["value"].to_numpy(dtype=np.float32)
        at += n
        del df
    if at == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else object) for c in SCORE_COLUMNS})
    out = {c: pd.Categorical.from_codes(codes[c][:at], categories=pd.Index(list(d), dtype=object))
           for c, d in dicts.items()}
    out["value"] = value[:at]
    try:  # hand the Parquet decoding buffers back to the OS before the calibration allocates its arrays
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    return pd.DataFrame(out)
