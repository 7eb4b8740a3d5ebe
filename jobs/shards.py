"""Run a stage shard by shard on Ray: the unit of work, of commit and of resume is one shard.

Each stage is a *shard task*: a class built once per actor (``task_cls(**task_kwargs)``) whose ``__call__(shard)``
reads its input shard from the run store, does the work, commits the output shard with ``RunStore.write_shard``
and returns a small dict of statistics. The driver only ever sees those dicts, never the tables.

Fault tolerance comes from Ray Data's actor pools: a killed actor is restarted and its shard retried; the retry
finds the shard committed (``write_shard`` returns False) or redoes it from scratch, so no row is lost or written
twice. A crashed driver resumes by calling the stage again: committed shards are skipped before any work.
"""

from __future__ import annotations

import base64
import logging
import pickle
import time
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)
_ERROR = "_baton_error"


class _ShardAdapter:
    """Ray Data callable: one row (one shard id) in, one row of statistics out."""

    def __init__(self, task_cls: type, task_kwargs: dict):
        import ray

        self.task = task_cls(**task_kwargs)
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from jobs.errors import BatonError

        rows = []
        for shard in batch["shard"]:
            started = time.monotonic()
            # Wall-clock stamps (comparable across workers on one cluster) so the driver can time a stage from the
            # first shard's dispatch to the last shard's commit (a task returns after its commit).
            dispatched_at = time.time()
            try:
                stats = dict(self.task(str(shard)) or {})
            except BatonError as exc:
                # Ray passes the driver only the text of a worker's exception: Baton's errors (a corrupt shard, a
                # contract break) travel in the row, pickled, and the driver raises them as they are.
                stats = {_ERROR: base64.b64encode(pickle.dumps(exc)).decode()}
            stats.setdefault("wall_s", time.monotonic() - started)
            stats["shard"] = str(shard)
            stats["dispatched_at"], stats["finished_at"] = dispatched_at, time.time()
            stats["node_id"] = self.node_id  # where the shard ran (docs/multinode.md: actors stay off the head)
            rows.append(stats)
        return pd.DataFrame(rows)


def run_shards(
    task_cls: type,
    task_kwargs: dict[str, Any],
    shards: list[str],
    *,
    num_actors: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    desc: str = "shards",
    progress: bool = True,
    resources: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Run ``task_cls`` over ``shards`` on an actor pool; returns one statistics row per shard. ``resources``: Ray
    custom resources each actor asks for (``execution.worker_resources``: keeps the actors on worker nodes)."""
    if not shards:
        return pd.DataFrame(columns=["shard"])
    import ray

    ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=len(shards))
    ds = ds.map_batches(
        _ShardAdapter,
        fn_constructor_kwargs={"task_cls": task_cls, "task_kwargs": task_kwargs},
        batch_size=1,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(num_actors, len(shards)))),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources or None,
    )
    rows = []
    bar = _progress(len(shards), desc) if progress else None
    try:
        for row in ds.iter_rows():
            rows.append(row)
            if bar is not None:
                bar.update(1)
    except Exception as exc:
        cause = baton_cause(exc)
        if cause is None:
            raise
        raise cause from None  # Baton's own error (a corrupt shard, a contract break) reads as itself
    finally:
        if bar is not None:
            bar.close()
    failed = [r[_ERROR] for r in rows if isinstance(r.get(_ERROR), str)]
    if failed:  # every other shard has finished and committed; the first error is the run's
        raise pickle.loads(base64.b64decode(failed[0]))
    return pd.DataFrame(rows).drop(columns=[_ERROR], errors="ignore")


def baton_cause(exc: BaseException) -> BaseException | None:
    """The BatonError a worker raised, out of Ray's wrappers (RayTaskError, UserCodeException), or None."""
    from jobs.errors import BatonError

    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BatonError) and type(e).__module__.startswith("jobs."):
            return e
        todo.extend(c for c in (getattr(e, "cause", None), e.__cause__, e.__context__) if isinstance(c, BaseException))
    return None


def ensure_ray(cfg) -> None:
    """Join or start Ray for a run (``cfg``: a RunConfig). Under `ray job submit`, RAY_ADDRESS points at the
    cluster and ray.init() joins it; alone, it starts a local Ray that serves this process, on loopback."""
    import os

    import ray

    if ray.is_initialized():
        return
    if cfg.execution.ray_address:
        ray.init(address=cfg.execution.ray_address, log_to_driver=False)
        return
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=cfg.execution.num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(log_to_driver=False)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="shard", mininterval=2.0)
