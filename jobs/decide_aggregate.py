"""The estimands' sums over the scored requests as Ray tasks (``decision.aggregate: ray``, or ``auto`` from
``AUTO_RAY_REQUESTS`` scored requests on): each task reads its part of the run's scores (and traffic, for the
segments) from the run store, makes the requests' features with the dimension's fitted transform
(calibration.data.FeatureSpec.rows) and returns the per-draw sufficient statistics per segment
(calibration.estimands.chunk_sums). The driver adds them in a fixed order and never sees a request of them.

Which requests a task takes: the pipeline's score shards are ``scores-<model>-<traffic shard>``, so one task per
traffic shard reads that traffic shard and its models' score shards. Score shards that do not follow it (recorded
scores, written per chunk of an input file) are routed first: one Ray task per such shard splits its rows by the
group of traffic shards that holds each request (a sorted 64-bit hash of every traffic request id, built by the
driver one traffic shard at a time: 12 bytes a request), and each group's task takes its parts with its traffic
and pipeline shards. Every score row is read once. Only a run without a traffic table falls back to hash buckets
of request ids, where every task reads every score shard. Plumbing; the statistics are in calibration.estimands.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from calibration.data import CalibrationData, segment_codes
from calibration.estimands import CHUNK_CELLS, AggregateSums, aggregation_model, chunk_sums
from calibration.scored import Predictors, ScoredSums, chunk_scored_sums
from common.keys import isin
from common.tables import SCORE_COLUMNS
from jobs.errors import BatonError
from jobs.store import RunStore, shard_id

log = logging.getLogger(__name__)

AUTO_RAY_REQUESTS = 200_000  # ``auto``: below this the driver sums faster than Ray starts tasks
MAX_GROUPS = 64  # tasks when recorded scores are routed: parts per routed shard, so objects = shards x groups
KEYS = ["request_id", "model", "metric"]  # score key columns, read dictionary-encoded (categoricals)


def plan(store: RunStore, models: list[str], n_hash: int) -> tuple[list[dict], list[str]]:
    """The tasks and the score shards to route to them.

    Each task is ``{"traffic": [shards], "scores": [shards], "group": g}``: one traffic shard each when every
    score shard is a model's shard of a traffic shard, else up to ``MAX_GROUPS`` contiguous groups of traffic
    shards, and the other score shards (the second value) are routed to them by request (:func:`route`). Without
    a traffic table, ``{"bucket": k, "of": n_hash}`` hash buckets and nothing to route."""
    traffic = sorted(store.commits("traffic"))
    scores = set(store.commits("scores"))
    if not traffic:
        return [{"bucket": k, "of": n_hash} for k in range(n_hash)], []
    owner = {shard_id("scores", m, t): t for t in traffic for m in models}
    loose = sorted(scores - set(owner))
    groups = ([[str(t) for t in g] for g in np.array_split(traffic, min(len(traffic), MAX_GROUPS))] if loose
              else [[t] for t in traffic])
    return [{"traffic": g, "scores": sorted(s for s in scores if owner.get(s) in g), "group": i}
            for i, g in enumerate(groups)], loose


def _hash(values: np.ndarray) -> np.ndarray:
    """64-bit hash of request ids as strings (pandas' fixed-key hash: the same in every process)."""
    return pd.util.hash_array(np.asarray(values, dtype=object).astype(str).astype(object))


def traffic_index(store: RunStore, tasks: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted hashes of every traffic request id, the group of each), read one traffic shard at a time."""
    hashes, groups = [], []
    for task in tasks:
        for t in task["traffic"]:
            h = _hash(store.read_shard("traffic", t, columns=["request_id"])["request_id"].to_numpy())
            hashes.append(h)
            groups.append(np.full(len(h), task["group"], dtype=np.int32))
    h, g = np.concatenate(hashes), np.concatenate(groups)
    order = np.argsort(h, kind="stable")
    return h[order], g[order]


def route(store: RunStore, shard: str, index: tuple[np.ndarray, np.ndarray], n_groups: int):
    """One score shard's rows split by the group that holds each request (``n_groups`` frames; one frame when
    ``n_groups`` is 1, as Ray returns it). A request absent from traffic goes to the group its hash picks, with
    ``in_traffic`` False; the group's task checks that the others are its own (a hash collision would not be)."""
    from calibration.checks import InputError

    try:
        df = store.read_shard("scores", shard, columns=list(SCORE_COLUMNS), categorical=KEYS)
    except (BatonError, InputError) as exc:  # for the group tasks to hand back as it is (see task_sums)
        return [exc] * n_groups if n_groups > 1 else exc
    keys, group_of = index
    cat_h = _hash(df["request_id"].cat.categories.to_numpy())
    pos = np.minimum(np.searchsorted(keys, cat_h), max(len(keys) - 1, 0))
    found = (keys[pos] == cat_h) if len(keys) else np.zeros(len(cat_h), dtype=bool)
    cat_g = np.where(found, group_of[pos] if len(keys) else 0, (cat_h % np.uint64(n_groups)).astype(np.int64))
    codes = df["request_id"].cat.codes.to_numpy()
    g, inside = cat_g[codes], found[codes]
    parts = []
    for k in range(n_groups):
        sel = g == k
        part = df.loc[sel].assign(in_traffic=inside[sel])
        parts.append(part.assign(request_id=part["request_id"].cat.remove_unused_categories()))
    return parts if n_groups > 1 else parts[0]


def _bucket(ids: pd.Series, n: int) -> np.ndarray:
    """Hash bucket of each request id (pandas' fixed-key hash: the same in every process)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        cats = _hash(ids.cat.categories.to_numpy()) % n
        codes = np.asarray(ids.cat.codes)
        return np.where(codes >= 0, cats[np.maximum(codes, 0)], -1)
    return (pd.util.hash_array(ids.astype(str).to_numpy(dtype=object)) % n).astype(np.int64)


def _read(store: RunStore, task: dict, segment_cols: list[str],
          routed: tuple[pd.DataFrame, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The task's score rows (keys as categoricals of strings, value as float32, as jobs.compact reads them for
    the driver) and traffic rows. The keys are read dictionary-encoded, so filtering and grouping move integer
    codes, not strings (expanded to one string per row, they were most of the decide's scan)."""
    cols = ["request_id", *segment_cols]
    if "traffic" in task:
        parts = [store.read_shard("scores", s, columns=list(SCORE_COLUMNS), categorical=KEYS) for s in task["scores"]]
        traffic = None
        if segment_cols or routed:
            traffic = pd.concat([store.read_shard("traffic", t, columns=cols) for t in task["traffic"]],
                                ignore_index=True)
        for part in routed:
            mine = part["request_id"][part["in_traffic"].to_numpy()].astype(str)
            if len(mine) and not isin(mine, traffic["request_id"]).all():
                raise BatonError(f"score rows routed to traffic shards {task['traffic'][0]}..{task['traffic'][-1]} "
                                   f"by a 64-bit hash are of other requests (a hash collision): set "
                                   f"decision.aggregate: local for this run")
            parts.append(part.drop(columns="in_traffic"))
        if not segment_cols:
            traffic = None
    else:
        parts = []
        for _, df in store.iter_shards("scores", columns=list(SCORE_COLUMNS), categorical=KEYS):
            parts.append(df.loc[_bucket(df["request_id"], task["of"]) == task["bucket"]])
        traffic = None
        if segment_cols:
            frames = [store.read_shard("traffic", s, columns=cols) for s in sorted(store.commits("traffic"))]
            traffic = pd.concat([f.loc[_bucket(f["request_id"], task["of"]) == task["bucket"]] for f in frames],
                                ignore_index=True)
    return concat_categorical([p for p in parts if p is not None]), traffic


def concat_categorical(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Score frames concatenated with categorical string keys (each frame's keys made categorical if they are not)
    and float32 values, without expanding a key to one string per row."""
    from pandas.api.types import union_categoricals

    frames = [f for f in frames if len(f)]
    if not frames:  # the same dtypes, no rows
        empty = {c: pd.Categorical([], categories=pd.Index([], dtype=object)) for c in KEYS}
        return pd.DataFrame({**empty, "value": np.zeros(0, np.float32)})
    out = {}
    for c in KEYS:
        cats = [f[c] if isinstance(f[c].dtype, pd.CategoricalDtype) else f[c].astype(str).astype("category")
                for f in frames]
        cats = [x.cat.rename_categories(x.cat.categories.astype(str).astype(object))
                if x.cat.categories.dtype != object else x for x in cats]
        out[c] = union_categoricals(cats)
    out["value"] = np.concatenate([f["value"].to_numpy(dtype=np.float32) for f in frames])
    return pd.DataFrame(out)


def guarded(fn, store: RunStore, task: dict, ctx, routed: tuple):
    """``fn(store, task, ctx, routed)`` for one group task, or the Baton or input error it (or a routing task)
    raised, for the driver to raise as it is: Ray would hand the driver a RayTaskError, which the stages' exit
    codes do not know. Every group pass (the aggregation, jobs.decide_scan, jobs.report_scan) runs through it."""
    from calibration.checks import InputError

    try:
        for part in routed:
            if isinstance(part, Exception):
                return part
        return fn(store, task, ctx, routed)
    except (BatonError, InputError) as exc:
        return exc


def task_sums(store: RunStore, task: dict, ctx: dict, *routed: pd.DataFrame
              ) -> tuple[AggregateSums, ScoredSums] | Exception:
    """One task's :class:`AggregateSums` and the :class:`ScoredSums` of its unlabelled requests, or the error it
    met (:func:`guarded`)."""
    return guarded(_task_sums, store, task, ctx, routed)


def _task_sums(store: RunStore, task: dict, ctx: dict, routed: tuple = ()) -> tuple[AggregateSums, ScoredSums]:
    model, spec = ctx["model"], ctx["spec"]
    D, C, S = model.p["cut"].shape[0], model.n_candidates, len(ctx["segment_names"])
    total = AggregateSums.zeros(D, C, S)
    scores, traffic = _read(store, task, ctx["segment_cols"], routed)
    scores = scores[scores["model"].isin(spec.row_models + [spec.incumbent]).to_numpy()]
    if scores.empty:
        return total, ScoredSums.zeros(C)
    ids, X, present, judge_raw = spec.rows(scores, ctx["design"], judge=True)
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
    unl = np.flatnonzero(~isin(index, ctx["labelled_requests"]))
    rest = ScoredSums.zeros(C)
    for r0 in range(0, len(unl), chunk):
        r = unl[r0:r0 + chunk]
        rest = rest.add(chunk_scored_sums(ctx["predictors"], X[r], seg[r], present[r],
                                          None if judge_raw is None else judge_raw[r]))
    return total, rest


def context(data: CalibrationData, p: dict, segment_cols: list[str], design: pd.DataFrame | None,
            predictors: Predictors) -> dict:
    """What every task needs from the driver: O(draws x (models, features, segments) + labels), no request."""
    model, drawn = aggregation_model(data, p)
    req, mod, ybar, _ = data.labelled_cells()
    labelled = {"request_id": np.asarray(data.request_ids[req], dtype=object), "model": mod.astype(np.int64),
                "ybar": ybar.astype(np.float32)}
    drawn_ids = None if drawn is None else (np.asarray(data.request_ids[drawn[0]], dtype=object), drawn[1])
    uses_design = data.features.log_pi_floor is not None
    return {"model": model, "spec": data.features, "segment_cols": list(segment_cols),
            "segment_names": list(data.segment_names), "labelled": labelled, "drawn": drawn_ids,
            "design": design if uses_design else None, "predictors": predictors,
            "labelled_requests": pd.Index(np.unique(np.asarray(data.request_ids[data.lab_req], dtype=object)))}


def routed_plan(store: RunStore, models: list[str], n_hash: int, cache: dict | None = None
                ) -> tuple[list[dict], list[list]]:
    """The tasks (:func:`plan`) and, for each, the object refs of its parts of the loose score shards, routed by
    Ray tasks (:func:`route`). ``cache`` (a dict kept by the caller across the passes and dimensions of one
    decide) keeps the routed parts, so they are routed once."""
    import ray

    tasks, loose = plan(store, models, n_hash)
    if not loose:
        return tasks, [[] for _ in tasks]
    cache = {} if cache is None else cache
    key = (tuple(loose), tuple(tuple(t["traffic"]) for t in tasks))
    if cache.get("key") != key:
        index = ray.put(traffic_index(store, tasks))
        router = ray.remote(num_cpus=1, max_retries=2, num_returns=len(tasks))(route)
        out = [router.remote(store, shard, index, len(tasks)) for shard in loose]
        cache.update(key=key, parts=[o if isinstance(o, list) else [o] for o in out])
        log.info("decide: %d loose score shard(s) routed to %d groups of traffic shards", len(loose), len(tasks))
    return tasks, [[parts[g] for parts in cache["parts"]] for g in range(len(tasks))]


def ray_sums(store: RunStore, data: CalibrationData, p: dict, segment_cols: list[str],
             design: pd.DataFrame | None, predictors: Predictors, n_hash: int | None = None,
             cache: dict | None = None) -> tuple[AggregateSums, ScoredSums]:
    """The :class:`AggregateSums` of all scored requests of the run and the :class:`ScoredSums` of the unlabelled
    ones (calibration.scored, with ``predictors``), summed by Ray tasks (module docstring).
    ``cache`` (a dict kept by the caller across the dimensions of one decide) keeps the routed parts of the loose
    score shards, so they are routed once."""
    import ray

    ctx = ray.put(context(data, p, segment_cols, design, predictors))
    n_hash = n_hash or max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks, routed = routed_plan(store, [data.incumbent, *data.candidates], n_hash, cache)
    remote = ray.remote(num_cpus=1, max_retries=2)(task_sums)
    refs = [remote.remote(store, t, ctx, *r) for t, r in zip(tasks, routed)]
    D, C, S = p["cut"].shape[0], len(data.candidates), len(data.segment_names)
    total, rest = AggregateSums.zeros(D, C, S), ScoredSums.zeros(C)
    for ref in refs:  # in task order: the same float additions on every run
        part = ray.get(ref)
        if isinstance(part, Exception):
            raise part
        total.add(part[0])
        rest = rest.add(part[1])
    log.info("decide: estimand sums of %d requests from %d Ray tasks", int(total.n_seg.sum()), len(tasks))
    return total, rest


def sums_function(mode: str, store: RunStore, segment_cols: list[str], design: pd.DataFrame | None, ensure=None):
    """The ``aggregate_sums`` hook of calibration.pipeline.decide for ``decision.aggregate`` = ``mode``: None for
    ``local``; else a function that sums on Ray (``ensure()`` first joins or starts it), or answers None (sum in
    the driver) for ``auto`` below ``AUTO_RAY_REQUESTS`` scored requests."""
    if mode == "local":
        return None

    def sums(data: CalibrationData, p: dict, predictors: Predictors) -> tuple[AggregateSums, ScoredSums] | None:
        if data.features is None or (mode == "auto" and not data.partial and data.n_req < AUTO_RAY_REQUESTS):
            return None
        if ensure is not None:
            ensure()
        return ray_sums(store, data, p, segment_cols, design, predictors, cache=cache)

    cache: dict = {}
    sums.cache = cache  # the routed parts, for jobs.decide_scan's pass too
    return sums
