"""The report's figures over all score rows (judge bias, distinct recorded pairs) as Ray tasks, so the driver does
not read the scores table (jobs.decide_scan.on_ray says when). One task per group of traffic shards, the groups and
routed recorded shards of jobs.decide_aggregate: each task holds every score row of its requests, so the per-request
joins (a verdict with its two lengths) and the distinct (model, request) pairs are complete within it and its
results add (the code-task pass rates' sums too). The decide stage's scan (jobs.decide_scan) makes the same sums
from the rows it reads and keeps them (jobs.report.save_report_sums); this pass runs only when they are absent or
the scores changed since. Plumbing; the arithmetic is jobs.report's."""
from __future__ import annotations

import pandas as pd

from jobs.decide_aggregate import _read, guarded, routed_plan
from jobs.report import add_bias_sums, add_code_sums, bias_sums, code_sums
from jobs.store import RunStore


def group_task(store: RunStore, task: dict, incumbent: str, *routed) -> tuple[dict, int, dict] | Exception:
    """(judge-bias sums, distinct (model, request) pairs among the routed recorded rows, code-task sums) of one
    group, or the error it met (jobs.decide_aggregate.guarded)."""
    return guarded(_group, store, task, incumbent, routed)


def _group(store: RunStore, task: dict, incumbent: str, routed: tuple) -> tuple[dict, int, dict]:
    scores, _ = _read(store, task, [], routed)
    return group_sums(scores, routed, incumbent)


def group_sums(scores: pd.DataFrame, routed: tuple, incumbent: str) -> tuple[dict, int, dict]:
    """(judge-bias sums, distinct (model, request) pairs of the routed recorded rows, code-task sums) of one
    group's score rows (every row of its requests, the routed ones included); also made by the decide's scan
    (jobs.decide_scan), which reads the same rows."""
    pairs = 0
    if routed:
        keys = pd.concat([p[["model", "request_id"]].astype(str) for p in routed], ignore_index=True)
        pairs = int(len(keys.drop_duplicates()))
    return bias_sums(scores, incumbent), pairs, code_sums(scores)


def add_group_sums(a: tuple[dict, int, dict], b: tuple[dict, int, dict]) -> tuple[dict, int, dict]:
    """The :func:`group_sums` of two disjoint groups together."""
    return add_bias_sums(a[0], b[0]), a[1] + b[1], add_code_sums(a[2], b[2])


def report_sums(store: RunStore, models: list[str], cache: dict | None = None) -> tuple[dict, int, dict]:
    """(judge-bias sums of all score rows, distinct (model, request) pairs of the recorded score shards, code-task
    sums of all score rows), from Ray tasks; ``models`` (incumbent first) name the pipeline's score shards."""
    import ray

    n_hash = max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks, routed = routed_plan(store, models, n_hash, cache)
    remote = ray.remote(num_cpus=1, max_retries=2)(group_task)
    refs = [remote.remote(store, t, models[0], *r) for t, r in zip(tasks, routed)]
    total: tuple[dict, int, dict] = ({}, 0, {})
    for ref in refs:  # in task order: the same float additions on every run
        part = ray.get(ref)
        if isinstance(part, Exception):
            raise part
        total = add_group_sums(total, part)
    return total
