"""The replay stage: every traffic shard to every candidate model, one responses shard per (candidate, shard).

For each candidate (and the incumbent when ``incumbent.replay`` is set) the pending traffic shards (those whose
responses shard is not committed) run as shard tasks on a Ray Data actor pool (``jobs.shards.run_shards``); each
actor builds the candidate's engine once (``inference.engines.make_engine``) and, per shard, reads the traffic
shard, replays it, checks the rows against the responses contract (bad rows to the quarantine table, the request
kept as an error row) and commits ``responses/<candidate>-<traffic shard>``. A rerun redoes only uncommitted
shards. Statistics travel in each shard's commit record, so the manifest's totals cover every run that
contributed, not just the last one.

    python -m jobs.replay --config run.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter

import pandas as pd

from inference.engines import make_engine
from inference.engines.base import RESPONSE_COLUMNS as ENGINE_COLUMNS
from inference.engines.base import error_row, response_frame
from inference.engines.config import CandidateConfig
from jobs.config import RunConfig, default_s3_options, load_config
from jobs.contracts import RESPONSE_COLUMNS, validate_responses
from jobs.errors import ContractError
from jobs.shards import ensure_ray, run_shards
from jobs.store import RunStore, shard_id

log = logging.getLogger(__name__)
TABLE = "responses"
assert ENGINE_COLUMNS == RESPONSE_COLUMNS, "inference.engines.base.RESPONSE_COLUMNS drifted from jobs.contracts"


def shard_stats(out: pd.DataFrame, wall_s: float) -> dict:
    """Flat statistics of one responses shard (errors by kind as a JSON string: Ray Data rows stay flat)."""
    errors = out["error"].dropna()
    # error_kind for every failed row at once: the text before the first ':' (or "unknown" when empty)
    kinds = errors.astype(str).str.split(":", n=1).str[0].str.strip().replace("", "unknown").value_counts()
    kinds = {str(k): int(v) for k, v in kinds.items()}
    return {
        "rows": int(len(out)),
        "ok": int(out["error"].isna().sum()),
        "prompt_tokens": int(out["prompt_tokens"].sum()),
        "completion_tokens": int(out["completion_tokens"].sum()),
        "attempts": int(out["attempts"].sum()),
        "latency_s_sum": float(out["latency_s"].fillna(0).sum()),
        "errors": json.dumps(dict(sorted(kinds.items()))),
        "wall_s": float(wall_s),
    }


class ReplayShardTask:
    """Shard task (see jobs.shards): one traffic shard through one candidate's engine, committed whole."""

    def __init__(self, store: RunStore, candidate: dict):
        from pydantic import TypeAdapter

        self.store = store
        self.candidate = TypeAdapter(CandidateConfig).validate_python(candidate)
        kwargs = {}
        if self.candidate.kind == "recorded":
            kwargs["storage_options"] = default_s3_options(self.candidate.path)
        self.engine = make_engine(self.candidate, **kwargs)

    def __call__(self, traffic_shard: str) -> dict:
        name = self.candidate.name
        out_shard = shard_id(name, traffic_shard)
        if self.store.is_committed(TABLE, out_shard):
            return {"skipped": 1}
        started = time.monotonic()
        # A recorded engine needs only the ids: the messages (most of a shard's bytes) are not read.
        columns = ["request_id"] if self.candidate.kind == "recorded" else ["request_id", "messages"]
        batch = self.store.read_shard("traffic", traffic_shard, columns=columns)
        if batch is None:
            raise ContractError(f"{self.store.uri('traffic')}: traffic shard {traffic_shard} is not committed")
        batch["request_id"] = batch["request_id"].astype(str)
        if self.candidate.kind == "recorded":
            raw = self.engine.lookup(list(batch["request_id"]))
            checked = validate_responses(raw, source=self.candidate.path)
            reasons = self._quarantine(checked.quarantine, traffic_shard)
            out = self.engine.align(batch, checked.valid[RESPONSE_COLUMNS], reasons=reasons)
        else:
            out = self.engine(batch)
            checked = validate_responses(out, source=f"engine {name}")
            if len(checked.quarantine):
                # An engine broke the contract on some rows: keep the request as an error row, the raw row aside.
                reasons = self._quarantine(checked.quarantine, traffic_shard)
                out = pd.concat([checked.valid[RESPONSE_COLUMNS],
                                 response_frame([error_row(r, name, "quarantined", why) for r, why in reasons.items()])],
                                ignore_index=True)
        self._check_complete(batch, out, traffic_shard)
        stats = shard_stats(out, time.monotonic() - started)
        written = self.store.write_shard(TABLE, out_shard, out[RESPONSE_COLUMNS],
                                         meta={"candidate": name, "traffic_shard": traffic_shard, "stats": stats})
        return {**stats, "skipped": 0 if written else 1}

    def _quarantine(self, q: pd.DataFrame, traffic_shard: str) -> dict[str, str]:
        if len(q):
            self.store.write_shard("quarantine", shard_id("replay", self.candidate.name, traffic_shard), q)
        return {str(r): str(why) for r, why in zip(q["request_id"], q["reason"]) if r is not None}

    def _check_complete(self, batch: pd.DataFrame, out: pd.DataFrame, traffic_shard: str) -> None:
        want, got = Counter(batch["request_id"]), Counter(out["request_id"])
        if want != got:
            missing = sorted((want - got).keys())[:5]
            extra = sorted((got - want).keys())[:5]
            raise ContractError(f"candidate {self.candidate.name!r}, traffic shard {traffic_shard}: engine output does "
                                f"not match its input one to one (missing {missing}, extra/duplicated {extra})")


def _resources(c) -> dict:
    """Actor pool shape per engine kind."""
    if c.kind == "vllm":
        return {"num_actors": c.replicas, "num_cpus": 1, "num_gpus": c.num_gpus}
    if c.kind == "transformers":
        return {"num_actors": c.num_actors, "num_cpus": 1, "num_gpus": 1 if c.device.startswith("cuda") else 0}
    if c.kind == "openai":
        return {"num_actors": c.num_actors, "num_cpus": 0.5, "num_gpus": 0}
    return {"num_actors": 1, "num_cpus": 0.5, "num_gpus": 0}


def candidates_to_replay(cfg: RunConfig) -> list:
    out = list(cfg.candidates)
    if cfg.incumbent.replay is not None:
        out.append(cfg.incumbent.replay.model_copy(update={"name": cfg.incumbent.name}))
    return out


def candidate_totals(store: RunStore, candidate, traffic_shards: list[str]) -> dict:
    """Totals of a candidate over its committed responses shards (from their commit records)."""
    commits = store.commits(TABLE)
    wanted = {shard_id(candidate.name, s) for s in traffic_shards}
    tot = Counter()
    errors: Counter[str] = Counter()
    shards = 0
    for sid, rec in commits.items():
        if sid not in wanted or rec.get("candidate") != candidate.name:
            continue
        shards += 1
        st = rec.get("stats", {})
        for key in ("rows", "ok", "prompt_tokens", "completion_tokens", "attempts", "latency_s_sum", "wall_s"):
            tot[key] += st.get(key, 0)
        errors.update(json.loads(st.get("errors", "{}")))
    prices = candidate.prices
    cost = tot["prompt_tokens"] / 1e6 * prices.input_per_mtok + tot["completion_tokens"] / 1e6 * prices.output_per_mtok
    return {
        "kind": candidate.kind,
        "shards_committed": shards,
        "shards_total": len(traffic_shards),
        "requests": int(tot["rows"]),
        "ok": int(tot["ok"]),
        "errors": dict(sorted(errors.items())),
        "attempts": int(tot["attempts"]),
        "prompt_tokens": int(tot["prompt_tokens"]),
        "completion_tokens": int(tot["completion_tokens"]),
        "mean_latency_s": tot["latency_s_sum"] / tot["rows"] if tot["rows"] else None,
        "shard_wall_s": round(float(tot["wall_s"]), 3),
        "est_cost": round(cost, 6),
    }


def replay(cfg: RunConfig, store: RunStore, progress: bool = True) -> dict:
    """Replay pending traffic shards to every candidate; returns per-candidate statistics (also in the manifest)."""
    traffic = sorted(store.commits("traffic"))
    if not traffic:
        raise ContractError(f"{store.uri('traffic')}: no committed traffic shards to replay (run the sampling stage first)")
    ensure_ray(cfg)
    results: dict[str, dict] = {}
    limiters = []  # held until the stage ends: a named actor dies when its creator's last handle goes
    for cand in candidates_to_replay(cfg):
        pending = [s for s in traffic if not store.is_committed(TABLE, shard_id(cand.name, s))]
        started = time.monotonic()
        if pending:
            if cand.kind == "openai":
                # The driver creates the provider's limiter, so it outlives any worker actor that dies.
                from inference.engines.ratelimit import get_limiter

                limiters.append(get_limiter(cand.provider_key or cand.base_url, cand.rpm, cand.tpm))
            run_shards(ReplayShardTask, {"store": store, "candidate": cand.model_dump()}, pending,
                       desc=f"replay {cand.name}", progress=progress, **_resources(cand))
        stats = candidate_totals(store, cand, traffic)
        stats["shards_run"] = len(pending)
        stats["shards_skipped"] = len(traffic) - len(pending)
        stats["wall_s"] = round(time.monotonic() - started, 3)
        store.update_manifest(stages={"replay": {cand.name: stats}})
        results[cand.name] = stats
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.cli import config_arguments

    config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """The replay stage alone: samples the traffic first if that is not committed yet."""
    from jobs.sample import run_sample

    cfg = load_config(args.config)
    store = RunStore(cfg.store, cfg.run_id)
    store.check_access()
    if not store.commits("traffic"):
        run_sample(cfg, store)
    stats = replay(cfg, store, progress=not args.no_progress)
    print(json.dumps({"replay": stats}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    from jobs.cli import module_entry

    sys.exit(module_entry("jobs.replay"))
