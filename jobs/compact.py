"""The scores table read compactly (categorical codes, float32), for the decide and report stages. Plumbing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.tables import SCORE_COLUMNS
from jobs.store import RunStore


def rows_of_metrics(df: pd.DataFrame, keep_metric) -> pd.DataFrame:
    """The score rows whose metric ``keep_metric(name) -> bool`` accepts, tested once per metric name, not per row."""
    if not len(df):
        return df
    metric = df["metric"].astype("category")
    wanted = [m for m in metric.cat.categories if keep_metric(str(m))]
    return df.loc[metric.isin(wanted).to_numpy()]


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
            df = rows_of_metrics(df, keep_metric)
            # a filtered categorical keeps every category: without this each request id of every shard entered
            # the dictionary (10M ids, ~1.2 GiB, at 10M requests) though no row of it was kept
            df = df.assign(**{c: df[c].cat.remove_unused_categories() for c in ("request_id", "model", "metric")
                              if isinstance(df[c].dtype, pd.CategoricalDtype)})
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
