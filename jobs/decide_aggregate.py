"""The estimands' sums over the scored requests as Ray tasks (``decision.aggregate: ray``, or ``auto`` from
``AUTO_RAY_REQUESTS`` scored requests on): each task reads its part of the run's scores (and traffic, for the
segments) from the run store, makes the requests' features with the dimension's fitted transform
(calibration.data.FeatureSpec.rows) and returns the per-draw sufficient statistics per segment
(calibration.estimands.chunk_sums). The driver adds them in a fixed order and never sees a request of them.

Which requests a task takes: the pipeline's score shards are ``scores-<model>-<traffic shard>``, so one task per
traffic shard reads that traffic shard and its models' score shards. Score shards that do not follow it (recorded
scores, written per input file) do not partition the requests; then each of ``n`` tasks reads every score shard
and keeps the requests whose id hashes to it (each shard is read ``n`` times). Plumbing; the statistics are in
calibration.estimands.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from calibration.data import CalibrationData, segment_codes
from calibration.estimands import AggregateSums, aggregation_model, chunk_sums
from common.tables import SCORE_COLUMNS
from jobs.store import RunStore, shard_id

log = logging.getLogger(__name__)

AUTO_RAY_REQUESTS = 200_000  # ``auto``: below this the driver sums faster than Ray starts tasks
CHUNK_CELLS = 1 << 22  # draw x request cells per chunk in a task, as calibration.estimands.local_sums


def plan(store: RunStore, models: list[str], n_hash: int) -> list[dict]:
    """One dict per task: ``{"traffic": shard, "scores": [shards]}`` when every score shard is a model's shard of
    a traffic shard, else ``{"bucket": k, "of": n_hash}``."""
    traffic = sorted(store.commits("traffic"))
    scores = set(store.commits("scores"))
    owner = {shard_id("scores", m, t): t for t in traffic for m in models}
    if traffic and scores and scores <= set(owner):
        return [{"traffic": t, "scores": sorted(s for s in scores if owner[s] == t)} for t in traffic]
    return [{"bucket": k, "of": n_hash} for k in range(n_hash)]


def _bucket(ids: pd.Series, n: int) -> np.ndarray:
    """Hash bucket of each request id (pandas' fixed-key hash: the same in every process)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        cats = pd.util.hash_array(np.asarray(ids.cat.categories.astype(str), dtype=object)) % n
        codes = np.asarray(ids.cat.codes)
        return np.where(codes >= 0, cats[np.maximum(codes, 0)], -1)
    return (pd.util.hash_array(ids.astype(str).to_numpy(dtype=object)) % n).astype(np.int64)


def _read(store: RunStore, task: dict, segment_cols: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The task's score rows (value as float32, as jobs.compact reads them for the driver) and traffic rows."""
    cols = ["request_id", *segment_cols]
    if "traffic" in task:
        parts = [store.read_shard("scores", s, columns=list(SCORE_COLUMNS)) for s in task["scores"]]
        traffic = store.read_shard("traffic", task["traffic"], columns=cols) if segment_cols else None
    else:
        parts = []
        for _, df in store.iter_shards("scores", columns=list(SCORE_COLUMNS), categorical=["request_id"]):
            parts.append(df.loc[_bucket(df["request_id"], task["of"]) == task["bucket"]])
        traffic = None
        if segment_cols:
            frames = [store.read_shard("traffic", s, columns=cols) for s in sorted(store.commits("traffic"))]
            traffic = pd.concat([f.loc[_bucket(f["request_id"], task["of"]) == task["bucket"]] for f in frames],
                                ignore_index=True)
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return pd.DataFrame(columns=list(SCORE_COLUMNS)), traffic
    scores = pd.concat([p.assign(request_id=p["request_id"].astype(str)) for p in parts], ignore_index=True)
    scores["value"] = scores["value"].to_numpy(dtype=np.float32)
    return scores, traffic


def task_sums(store: RunStore, task: dict, ctx: dict) -> AggregateSums | Exception:
    """One task's :class:`AggregateSums`, or the Baton or input error it raised, for the driver to raise as it is
    (Ray would hand the driver a RayTaskError, which the decide stage's exit codes do not know)."""
    from calibration.checks import InputError
    from jobs.errors import BatonError

    try:
        return _task_sums(store, task, ctx)
    except (BatonError, InputError) as exc:
        return exc


def _task_sums(store: RunStore, task: dict, ctx: dict) -> AggregateSums:
    model, spec = ctx["model"], ctx["spec"]
    D, C, S = model.p["cut"].shape[0], model.n_candidates, len(ctx["segment_names"])
    total = AggregateSums.zeros(D, C, S)
    scores, traffic = _read(store, task, ctx["segment_cols"])
    scores = scores[scores["model"].astype(str).isin(spec.row_models + [spec.incumbent])]
    if scores.empty:
        return total
    ids, X, present = spec.rows(scores, ctx["design"])
    del scores
    seg = segment_codes(traffic, ctx["segment_cols"] or None, ids, ctx["segment_names"])
    emask = (present if spec.kind == "pairwise" else present[:, 1:]).astype(np.float32)
    index = pd.Index(ids)
    obs = np.full(present.shape, np.nan, dtype=np.float32)
    lab = ctx["labelled"]
    at = index.get_indexer(lab["request_id"])
    obs[at[at >= 0], lab["model"][at >= 0]] = lab["ybar"][at >= 0]
    drawn = None
    if ctx["drawn"] is not None:
        d_ids, v = ctx["drawn"]
        pos = index.get_indexer(d_ids)
        drawn = (pos[pos >= 0], v[:, pos >= 0])
    chunk = max(256, CHUNK_CELLS // max(D, 1))
    for r0 in range(0, len(ids), chunk):
        sl = slice(r0, min(len(ids), r0 + chunk))
        local = None
        if drawn is not None:
            inside = (drawn[0] >= sl.start) & (drawn[0] < sl.stop)
            order = np.argsort(drawn[0][inside])
            local = (drawn[0][inside][order] - sl.start, drawn[1][:, inside][:, order])
        total.add(chunk_sums(model, X[sl], seg[sl], seg[sl], emask[sl], obs[sl], S, local))
    return total


def context(data: CalibrationData, p: dict, segment_cols: list[str], design: pd.DataFrame | None) -> dict:
    """What every task needs from the driver: O(draws x (models, features, segments) + labels), no request."""
    model, drawn = aggregation_model(data, p)
    req, mod, ybar, _ = data.labelled_cells()
    labelled = {"request_id": np.asarray(data.request_ids[req], dtype=object), "model": mod.astype(np.int64),
                "ybar": ybar.astype(np.float32)}
    drawn_ids = None if drawn is None else (np.asarray(data.request_ids[drawn[0]], dtype=object), drawn[1])
    uses_design = data.features.log_pi_floor is not None
    return {"model": model, "spec": data.features, "segment_cols": list(segment_cols),
            "segment_names": list(data.segment_names), "labelled": labelled, "drawn": drawn_ids,
            "design": design if uses_design else None}


def ray_sums(store: RunStore, data: CalibrationData, p: dict, segment_cols: list[str],
             design: pd.DataFrame | None, n_hash: int | None = None) -> AggregateSums:
    """The :class:`AggregateSums` of all scored requests of the run, summed by Ray tasks (module docstring)."""
    import ray

    ctx = ray.put(context(data, p, segment_cols, design))
    n_hash = n_hash or max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks = plan(store, [data.incumbent, *data.candidates], n_hash)
    remote = ray.remote(num_cpus=1, max_retries=2)(task_sums)
    refs = [remote.remote(store, t, ctx) for t in tasks]
    D, C, S = p["cut"].shape[0], len(data.candidates), len(data.segment_names)
    total = AggregateSums.zeros(D, C, S)
    for ref in refs:  # in task order: the same float additions on every run
        part = ray.get(ref)
        if isinstance(part, Exception):
            raise part
        total.add(part)
    log.info("decide: estimand sums of %d requests from %d Ray tasks", int(total.n_seg.sum()), len(tasks))
    return total


def sums_function(mode: str, store: RunStore, segment_cols: list[str], design: pd.DataFrame | None, ensure=None):
    """The ``aggregate_sums`` hook of calibration.pipeline.decide for ``decision.aggregate`` = ``mode``: None for
    ``local``; else a function that sums on Ray (``ensure()`` first joins or starts it), or answers None (sum in
    the driver) for ``auto`` below ``AUTO_RAY_REQUESTS`` scored requests."""
    if mode == "local":
        return None

    def sums(data: CalibrationData, p: dict) -> AggregateSums | None:
        if data.features is None or (mode == "auto" and data.n_req < AUTO_RAY_REQUESTS):
            return None
        if ensure is not None:
            ensure()
        return ray_sums(store, data, p, segment_cols, design)

    return sums
