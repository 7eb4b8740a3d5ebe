"""The decide stage's driver without the scored requests: what it reads instead of the whole scores table.

The PyMC fit needs the labelled requests only, the feature transform a sample, and everything else over the
scored requests is sums made by Ray tasks (jobs.decide_aggregate; calibration.scored). So from
``SUBSET_FROM_REQUESTS`` scored requests on (and with ``decision.aggregate: ray``), one Ray pass over the run's
shards (the tasks of jobs.decide_aggregate.plan, loose score shards routed once and reused by the aggregation)
returns, per group of traffic shards: the score and traffic rows of the labelled requests (any dimension) and of a
hash sample of about ``SAMPLE_REQUESTS`` requests in all, the distinct segment values of its scored requests and
how many have none, and the report's sums over every score row (jobs.report_scan.group_sums: the report stage
then reads none). The driver then holds O(labels + sample) rows, whatever the number of requests; the sample
fits the feature transform (calibration.features), the labelled requests the model. Plumbing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from calibration.data import segment_names
from common.keys import isin
from jobs.decide_aggregate import _hash, _read, concat_categorical, guarded, routed_plan
from jobs.report_scan import add_group_sums, group_sums
from jobs.store import RunStore

log = logging.getLogger(__name__)

SAMPLE_REQUESTS = 200_000  # requests the feature transform is fitted on (all of them below this)
SUBSET_FROM_REQUESTS = 200_000  # ``auto``: from this many traffic requests on, the driver holds the subset only
_BINS = 1 << 20  # resolution of the sampling rate


@dataclass
class Subset:
    """What the driver holds of the run's scored requests: the scores and traffic rows of the labelled requests and
    the sample, the names of every scored request's segment (as calibration.data.prepare would name them from all
    of them), how many scored requests have no segment value, and how many were scored."""

    scores: pd.DataFrame
    traffic: pd.DataFrame | None
    segment_names: list[str]
    missing_segment: int
    n_requests: int
    report: tuple[dict, int, dict] | None = None  # jobs.report_scan.group_sums over every score row, for the report


def on_ray(mode: str, store: RunStore) -> bool:
    """Whether the driver reads only a subset of the scored requests and leaves the rest to Ray tasks (the decide's
    :func:`scan`, the report's jobs.report_scan): with ``decision.aggregate`` ``ray``, or ``auto`` from
    ``SUBSET_FROM_REQUESTS`` traffic requests on, and a traffic table without conversations (conversation traffic
    is summed by conversation in the driver)."""
    if mode == "local" or not store.commits("traffic"):
        return False
    first = store.read_shard("traffic", sorted(store.commits("traffic"))[0], ignore_missing=True,
                             columns=["request_id", "conversation_id", "turn"])
    if first is not None and {"conversation_id", "turn"} & set(first.columns):
        return False
    return mode == "ray" or store.count_rows("traffic") >= SUBSET_FROM_REQUESTS


def sampled(ids: pd.Index, rate: float) -> np.ndarray:
    """Whether each request id is in the hash sample of rate ``rate`` (the same ids in every process and run)."""
    if rate >= 1.0:
        return np.ones(len(ids), dtype=bool)
    return (_hash(ids.to_numpy()) % np.uint64(_BINS)) < np.uint64(int(np.ceil(rate * _BINS)))


def scan_task(store: RunStore, task: dict, ctx: dict, *routed) -> dict | Exception:
    """One group's share of the :class:`Subset` (see the module docstring), or the error it met
    (jobs.decide_aggregate.guarded)."""
    return guarded(_scan, store, task, ctx, routed)


def _scan(store: RunStore, task: dict, ctx: dict, routed: tuple) -> dict:
    cols = ctx["segment_cols"]
    scores, traffic = _read(store, task, cols, routed)
    report = group_sums(scores, routed, ctx["models"][0])  # the report's figures, from the rows read anyway
    scores = scores[scores["model"].isin(ctx["models"]).to_numpy()]
    rid = scores["request_id"].cat.remove_unused_categories()
    ids = pd.Index(rid.cat.categories.to_numpy(dtype=object))  # the distinct scored requests
    chosen = isin(ids, ctx["keep"]) | sampled(ids, ctx["rate"])
    keep = ids[chosen]
    rows = chosen[np.asarray(rid.cat.codes)]
    out = {"scores": _compact(scores[rows]), "n_requests": len(ids),
           "traffic": None, "combos": None, "missing": 0, "absent": False, "report": report}
    if traffic is not None:
        traffic = traffic.assign(request_id=traffic["request_id"].astype(str)).drop_duplicates("request_id")
        mine = traffic[isin(traffic["request_id"], ids)]
        out["absent"] = bool(len(mine) < len(ids))
        out["missing"] = int(len(ids) - len(mine) + mine[cols].isna().any(axis=1).sum())
        out["combos"] = mine[cols].drop_duplicates()
        out["traffic"] = mine[isin(mine["request_id"], keep)]
    return out


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """The rows kept, each key's categories cut to those used (the driver holds them)."""
    return df.assign(**{c: df[c].cat.remove_unused_categories() for c in ("request_id", "model", "metric")})


def scan(store: RunStore, models: list[str], segment_cols: list[str], keep: np.ndarray, cache: dict,
         sample: int | None = None) -> Subset:
    """The :class:`Subset` of the run for the decision of ``models`` (incumbent first), keeping the requests
    ``keep`` (the labelled ones) and a hash sample of about ``sample`` (default ``SAMPLE_REQUESTS``) others."""
    import ray

    n_traffic = store.count_rows("traffic")
    rate = min(1.0, (SAMPLE_REQUESTS if sample is None else sample) / max(n_traffic, 1))
    n_hash = max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks, routed = routed_plan(store, models, n_hash, cache)
    ctx = ray.put({"segment_cols": list(segment_cols), "models": list(models), "rate": rate,
                   "keep": pd.Index(np.unique(np.asarray(keep, dtype=object).astype(str)))})
    remote = ray.remote(num_cpus=1, max_retries=2)(scan_task)
    refs = [remote.remote(store, t, ctx, *r) for t, r in zip(tasks, routed)]
    parts = []
    for ref in refs:  # in task order: the same rows in the same order on every run
        part = ray.get(ref)
        if isinstance(part, Exception):
            raise part
        parts.append(part)
    scores = concat_categorical([p["scores"] for p in parts])
    n_requests = sum(p["n_requests"] for p in parts)
    report: tuple[dict, int, dict] = ({}, 0, {})
    for p in parts:  # in task order, as jobs.report_scan adds them
        report = add_group_sums(report, p["report"])
    traffic, names, missing = None, ["all"], 0
    if segment_cols:
        traffic = pd.concat([p["traffic"] for p in parts], ignore_index=True)
        combos = pd.concat([p["combos"] for p in parts], ignore_index=True).drop_duplicates()
        names = segment_names(combos, segment_cols)
        if any(p["absent"] for p in parts):  # scored requests without a traffic row: every column missing
            names = sorted(set(names) | {"|".join(f"{c}=<missing>" for c in segment_cols)})
        missing = sum(p["missing"] for p in parts)
    log.info("decide: the driver holds %d of %d scored requests (labelled and a %.4f sample), %d segments",
             scores["request_id"].nunique() if len(scores) else 0, n_requests, rate, len(names))
    return Subset(scores, traffic, names, missing, n_requests, report)
