"""The replay stage: every traffic shard to every candidate model, one responses shard per (candidate, shard).

For each candidate (and the incumbent when ``incumbent.replay`` is set) the pending traffic shards (those whose
responses shard is not committed) run as shard tasks on a Ray Data actor pool (``jobs.shards.run_shards``); each
actor builds the candidate's engine once (``inference.engines.make_engine``) and, per shard, reads the traffic
shard, replays it, checks the rows against the responses contract (bad rows to the quarantine table, the request
kept as an error row) and commits ``responses/<candidate>-<traffic shard>``. A rerun redoes uncommitted shards
and retries the failed rows of committed ones (``execution.retry_errors`` / ``--retry-errors``: retryable kinds
by default; successful rows are never sent again): the retried rows replace the failed ones in a new version of
the shard (``RunStore.supersede_shard``), so every reader still sees one row per (request, candidate), and the
scores computed from the old version are withdrawn so the score stage redoes them. Statistics travel in each
shard's commit record (a retry adds its attempts to the row's), so the manifest's totals cover every run that
contributed, not just the last one. A candidate left without a single successful row stops the run here, before
any scoring, naming its dominant error kind.

In ``replay.mode: conversation`` every traffic shard holds whole conversations (jobs.sample_conversations), and
the task wraps the engine in ``inference.engines.conversation.ConversationEngine``: the candidate writes every
turn, in order, with its own earlier answers in the history; the responses shard also keeps ``messages_sent`` (the
history each turn was sent with) and ``round``. A retry resends a conversation from its first failed turn (the
turns after it were never sent), its earlier answers kept as that turn's history.

    python -m jobs.replay --config run.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from inference.engines import make_engine
from inference.engines.base import error_kind, error_row, response_frame
from inference.engines.config import CandidateConfig
from inference.engines.conversation import CONVERSATION_COLUMNS, ConversationEngine
from inference.engines.http_errors import retryable
from jobs.config import RunConfig, default_s3_options, load_config
from common.keys import isin
from common.tables import RESPONSE_COLUMNS
from jobs.contracts import validate_responses
from jobs.errors import EXIT_BAD_INPUT, EXIT_FAILURE, BatonError, ContractError
from jobs.shards import ensure_ray, run_shards
from jobs.store import RunStore, shard_id

log = logging.getLogger(__name__)
TABLE = "responses"
CONVERSATION_EXTRA = ["messages_sent", "round"]  # kept in a conversation-mode responses shard (docs/conversations.md)


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


def should_retry(kind: str | None, policy: str) -> bool:
    """Whether a row that failed with ``kind`` is sent again by a rerun (None: the row succeeded, never resent)."""
    if kind is None or policy == "none":
        return False
    return policy == "all" or retryable(kind)


def needs_retry(record: dict, policy: str) -> bool:
    """Whether a committed responses shard holds rows to retry (from the error counts in its commit record)."""
    errors = json.loads(record.get("stats", {}).get("errors", "{}"))
    return any(n and should_retry(kind, policy) for kind, n in errors.items())


class ReplayShardTask:
    """Shard task (see jobs.shards): one traffic shard through one candidate's engine, committed whole; for a
    committed shard, its failed rows retried (per ``retry_errors``) and the shard superseded."""

    def __init__(self, store: RunStore, candidate: dict, retry_errors: str = "retryable",
                 downstream: list[str] | None = None, mode: str = "turn"):
        from pydantic import TypeAdapter

        self.store = store
        self.candidate = TypeAdapter(CandidateConfig).validate_python(candidate)
        self.retry_errors = retry_errors
        # Models whose scores read this candidate's answers (itself; for a replayed incumbent, every candidate).
        self.downstream = downstream or [self.candidate.name]
        kwargs = {}
        if self.candidate.kind == "recorded":
            kwargs["storage_options"] = default_s3_options(self.candidate.path)
        self.engine = make_engine(self.candidate, **kwargs)
        # A recorded file's answers are looked up as they are, in either mode.
        self.conversation = mode == "conversation" and self.candidate.kind != "recorded"
        self.columns = RESPONSE_COLUMNS + (CONVERSATION_EXTRA if self.conversation else [])
        self.keys = CONVERSATION_COLUMNS if self.conversation else []

    def __call__(self, traffic_shard: str) -> dict:
        name = self.candidate.name
        out_shard = shard_id(name, traffic_shard)
        record = self.store.commit_record(TABLE, out_shard)
        if record is not None:
            return self._retry(traffic_shard, out_shard, record)
        started = time.monotonic()
        # A recorded engine needs only the ids: the messages (most of a shard's bytes) are not read.
        columns = ["request_id"] if self.candidate.kind == "recorded" else ["request_id", "messages", *self.keys]
        batch = self._traffic(traffic_shard, columns)
        if self.candidate.kind == "recorded":
            raw = self.engine.lookup(batch["request_id"])
            checked = validate_responses(raw, source=self.candidate.path)
            reasons = self._quarantine(checked.quarantine, shard_id("replay", name, traffic_shard))
            out = self.engine.align(batch, checked.valid[RESPONSE_COLUMNS], reasons=reasons)
        else:
            out = self._run_engine(batch, shard_id("replay", name, traffic_shard))
        self._check_complete(batch, out, traffic_shard)
        stats = shard_stats(out, time.monotonic() - started)
        written = self.store.write_shard(TABLE, out_shard, out[self.columns],
                                         meta={"candidate": name, "traffic_shard": traffic_shard, "stats": stats})
        return {**stats, "skipped": 0 if written else 1, "sent": int(len(batch)), "attempts_now": stats["attempts"]}

    def _traffic(self, traffic_shard: str, columns: list[str]) -> pd.DataFrame:
        batch = self.store.read_shard("traffic", traffic_shard, columns=columns)
        if batch is None:
            raise ContractError(f"{self.store.uri('traffic')}: traffic shard {traffic_shard} is not committed")
        batch["request_id"] = batch["request_id"].astype(str)
        return batch

    def _run_engine(self, batch: pd.DataFrame, quarantine_shard: str,
                    answered: dict[str, dict] | None = None) -> pd.DataFrame:
        name = self.candidate.name
        if self.conversation:
            try:
                out = ConversationEngine(self.engine, name)(batch, answered)
            except ValueError as exc:  # the sample stage checked the shard; a hand-made one may still be wrong
                raise ContractError(f"candidate {name!r}: {exc}") from None
        else:
            out = self.engine(batch)
        checked = validate_responses(out, source=f"engine {name}")
        if len(checked.quarantine):
            # An engine broke the contract on some rows: keep the request as an error row, the raw row aside.
            reasons = self._quarantine(checked.quarantine, quarantine_shard)
            out = pd.concat([checked.valid[self.columns],
                             response_frame([error_row(r, name, "quarantined", why) for r, why in reasons.items()])],
                            ignore_index=True)
        return out

    def _retry(self, traffic_shard: str, out_shard: str, record: dict) -> dict:
        """Send the shard's failed rows again; the merged rows supersede the shard (successful rows untouched)."""
        if self.candidate.kind == "recorded" or not needs_retry(record, self.retry_errors):
            return {"skipped": 1}  # a recorded file answers the same every time
        started = time.monotonic()
        old = self.store.read_shard(TABLE, out_shard)
        old["request_id"] = old["request_id"].astype(str)
        again = old["error"].map(lambda e: should_retry(error_kind(e), self.retry_errors)).to_numpy(dtype=bool)
        if not again.any():
            return {"skipped": 1}
        traffic = self._traffic(traffic_shard, ["request_id", "messages", *self.keys])
        answered = None
        if self.conversation:
            again, batch, answered = _conversation_retry(traffic, old, again)
        else:
            batch = traffic[traffic["request_id"].isin(set(old.loc[again, "request_id"]))].reset_index(drop=True)
        generation = int(record.get("generation", 0)) + 1
        new = self._run_engine(batch, shard_id("replay", self.candidate.name, traffic_shard, f"retry{generation}"),
                               answered)
        self._check_complete(batch, new, traffic_shard)
        if answered:  # the kept turns came back as they were: only the resent ones are new
            new = new[~new["request_id"].isin(set(answered))].reset_index(drop=True)
            batch = batch[~batch["request_id"].isin(set(answered))].reset_index(drop=True)
        sent_attempts = int(new["attempts"].sum())
        # A row's attempts count every invocation that sent it, so the shard's totals stay cumulative.
        before = old.loc[again].set_index("request_id")["attempts"]
        new["attempts"] = (new["attempts"] + new["request_id"].map(before).fillna(0)).astype("int64")
        merged = pd.concat([old.loc[~again, self.columns], new[self.columns]], ignore_index=True)
        order = pd.Series(np.arange(len(traffic)), index=traffic["request_id"].to_numpy())
        merged = merged.iloc[np.argsort(order.reindex(merged["request_id"]).to_numpy(), kind="stable")]
        self._check_complete(traffic, merged, traffic_shard)
        recovered = int(new["error"].isna().sum())
        if recovered:
            # Withdrawn before the new version is committed: a crash in between only redoes work, never leaves
            # scores of the old answers standing.
            for model in self.downstream:
                self.store.retract_shard("scores", shard_id("scores", model, traffic_shard))
            self.store.retract_shard("embeddings", shard_id("embeddings", self.candidate.name, traffic_shard))
            self.store.retract_shard("quarantine", shard_id("judge", self.candidate.name, traffic_shard))
        prior_wall = float(record.get("stats", {}).get("wall_s", 0.0))
        stats = shard_stats(merged, prior_wall + time.monotonic() - started)
        written = self.store.supersede_shard(
            TABLE, out_shard, merged.reset_index(drop=True), replaces=record["file"],
            meta={"candidate": self.candidate.name, "traffic_shard": traffic_shard, "stats": stats})
        return {**stats, "skipped": 0 if written else 1, "sent": int(len(batch)), "attempts_now": sent_attempts,
                "retried": int(len(batch)), "recovered": recovered}

    def _quarantine(self, q: pd.DataFrame, quarantine_shard: str) -> dict[str, str]:
        if len(q):
            self.store.write_shard("quarantine", quarantine_shard, q)
        return {str(r): str(why) for r, why in zip(q["request_id"], q["reason"]) if r is not None}

    def _check_complete(self, batch: pd.DataFrame, out: pd.DataFrame, traffic_shard: str) -> None:
        if _same_ids(batch["request_id"], out["request_id"]):
            return
        want, got = Counter(batch["request_id"]), Counter(out["request_id"])
        if want != got:
            missing = sorted((want - got).keys())[:5]
            extra = sorted((got - want).keys())[:5]
            raise ContractError(f"candidate {self.candidate.name!r}, traffic shard {traffic_shard}: engine output does "
                                f"not match its input one to one (missing {missing}, extra/duplicated {extra})")


def _same_ids(want: pd.Series, got: pd.Series) -> bool:
    """Whether ``got`` holds exactly the ids of ``want``, each once, in the common case of distinct ids (Arrow's
    hash set, not two Counters of Python strings); False sends the caller to the exact multiset comparison."""
    if len(want) != len(got) or want.isna().any() or got.isna().any():
        return False
    w, g = pd.Index(want.astype(str)), pd.Index(got.astype(str))
    return bool(w.is_unique and g.is_unique and isin(g, w).all())


def _conversation_retry(traffic: pd.DataFrame, old: pd.DataFrame, again: np.ndarray
                        ) -> tuple[np.ndarray, pd.DataFrame, dict[str, dict]]:
    """Conversation mode: (rows to resend, the engine's batch, the rows kept as history). A conversation is resent
    from its first turn to retry; its turns after that one (not sent: ``upstream``) go along, its earlier answered
    turns are handed back as they are."""
    keys = traffic.set_index("request_id")[["conversation_id", "turn"]]
    conv = old["request_id"].map(keys["conversation_id"])
    turn = pd.to_numeric(old["request_id"].map(keys["turn"])).astype(int)
    first = turn[again].groupby(conv[again]).min()
    resend = conv.isin(first.index) & (turn >= conv.map(first))
    kept = old[conv.isin(first.index) & ~resend]
    answered = {str(r["request_id"]): r for r in kept.to_dict("records")}
    batch = traffic[traffic["conversation_id"].isin(first.index)].reset_index(drop=True)
    return resend.to_numpy(dtype=bool), batch, answered


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


class ReplayFailed(BatonError):
    """A candidate has no successful response at all: nothing to score, so the run stops after replay."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def check_replayed(cfg: RunConfig, results: dict[str, dict]) -> None:
    """Stop before scoring when a replayed model has no successful row, naming its dominant error kind."""
    for name, st in results.items():
        if not st["requests"] or st["ok"] > 0:
            continue
        kind, count = max(st["errors"].items(), key=lambda kv: kv[1]) if st["errors"] else ("unknown", st["requests"])
        if retryable(kind):
            todo = (f"the provider failed or was unreachable; when it is back, rerun the same run id "
                    f"(`baton run --config <this run's config>`, run id {cfg.run_id}): failed rows of retryable kinds "
                    f"are sent again, successful ones never")
            code = EXIT_FAILURE
        else:
            todo = (f"'{kind}' is not retried by default: fix the candidate (its base_url, model or api_key_env), "
                    f"then rerun the same run id with `baton run --config <this run's config> --retry-errors all`")
            code = EXIT_BAD_INPUT
        raise ReplayFailed(f"replay: candidate {name!r} has no successful response: all {st['requests']} requests "
                           f"failed, {count} of them with '{kind}' (errors by kind: {st['errors']}); the run stops "
                           f"before scoring. {todo[0].upper()}{todo[1:]}.", code)


def run(cfg: RunConfig, store: RunStore, progress: bool = True) -> dict:
    """Replay pending traffic shards to every candidate and retry failed rows of committed ones (per
    ``cfg.execution.retry_errors``); returns per-candidate statistics (also in the manifest). Raises
    ReplayFailed when a candidate ends with no successful row."""
    traffic = sorted(store.commits("traffic"))
    if not traffic:
        raise ContractError(f"{store.uri('traffic')}: no committed traffic shards to replay (run the sampling stage first)")
    sampled = store.manifest().get("stages", {}).get("sample", {}).get("mode", "turn")
    if cfg.replay.mode == "conversation" and sampled != "conversation":
        raise ContractError(f"replay.mode: conversation, but the traffic of run {cfg.run_id!r} was sampled per turn "
                            f"(its shards may split conversations): use a new run id for a conversation-mode run")
    ensure_ray(cfg)
    policy = cfg.execution.retry_errors
    results: dict[str, dict] = {}
    limiters = []  # held until the stage ends: a named actor dies when its creator's last handle goes
    commits = store.commits(TABLE)
    plans = {}
    for cand in candidates_to_replay(cfg):
        pending = [s for s in traffic if shard_id(cand.name, s) not in commits]
        retry = [] if cand.kind == "recorded" else [
            s for s in traffic if shard_id(cand.name, s) in commits and needs_retry(commits[shard_id(cand.name, s)], policy)]
        plans[cand.name] = (cand, pending, retry)

    def replay_one(name: str) -> tuple[pd.DataFrame, float]:
        cand, pending, retry = plans[name]
        started = time.monotonic()
        if not (pending or retry):
            return pd.DataFrame(), started
        if cand.kind == "openai":
            # The driver creates the provider's limiter, so it outlives any worker actor that dies.
            from inference.engines.ratelimit import get_limiter, limiter_resources

            limiters.append(get_limiter(cand.provider_key or cand.base_url, cand.rpm, cand.tpm,
                                        resources=limiter_resources(cfg.execution.worker_resources)))
        downstream = ([cand.name, *(c.name for c in cfg.candidates)] if cand.name == cfg.incumbent.name
                      else [cand.name])
        done = run_shards(ReplayShardTask, {"store": store, "candidate": cand.model_dump(), "retry_errors": policy,
                                            "downstream": downstream, "mode": cfg.replay.mode},
                          pending + retry, desc=f"replay {cand.name}", progress=progress,
                          resources=cfg.execution.worker_resources, **_resources(cand))
        return done, started

    # Recorded candidates are lookups in a file (one 0.5-CPU actor each, no provider or GPU to share): they run side
    # by side, each its own Ray Data execution from a driver thread. The others run one after the other.
    recorded = [n for n, (c, p, r) in plans.items() if c.kind == "recorded" and (p or r)]
    ran: dict[str, tuple[pd.DataFrame, float] | BaseException] = {}
    if len(recorded) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(recorded)) as pool:
            futures = {n: pool.submit(replay_one, n) for n in recorded}
            for n, fut in futures.items():  # every execution finishes (and commits) before the first error is raised
                try:
                    ran[n] = fut.result()
                except BaseException as exc:  # noqa: BLE001
                    ran[n] = exc
        failed = [v for v in ran.values() if isinstance(v, BaseException)]
        if failed:
            raise failed[0]
    for name, (cand, pending, retry) in plans.items():
        done, started = ran[name] if name in ran else replay_one(name)
        now = {k: int(done[k].fillna(0).sum()) if k in done.columns else 0
               for k in ("sent", "attempts_now", "retried", "recovered")}
        stats = candidate_totals(store, cand, traffic)
        stats["shards_run"] = len(pending)
        stats["shards_retried"] = len(retry)
        stats["shards_skipped"] = len(traffic) - len(pending) - len(retry)
        stats["rows_retried"], stats["rows_recovered"] = now["retried"], now["recovered"]
        stats["retry_errors"] = policy
        stats["wall_s"] = round(time.monotonic() - started, 3)
        # This invocation's shards, from the first one's dispatch to the last one's commit (engine start-up excluded;
        # reading, rendering, waits between shards and commits included): the stage's own throughput window.
        stats["dispatch_to_commit_s"] = (round(float(done["finished_at"].max() - done["dispatched_at"].min()), 3)
                                         if "dispatched_at" in done.columns and len(done) else 0.0)
        # One entry per invocation of the stage: what it sent and what that cost (``attempts`` above is the total).
        previous = store.manifest().get("stages", {}).get("replay", {}).get(cand.name, {}).get("invocations", [])
        stats["invocations"] = [*previous, {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                            "shards_run": len(pending), "shards_retried": len(retry),
                                            "requests_sent": now["sent"], "attempts": now["attempts_now"],
                                            "rows_recovered": now["recovered"]}]
        store.update_manifest(stages={"replay": {cand.name: stats}})
        results[cand.name] = stats
    check_replayed(cfg, results)
    return results


def with_retry_flag(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The config with ``--retry-errors`` (when given) in place of ``execution.retry_errors``."""
    flag = getattr(args, "retry_errors", None)
    if flag is None:
        return cfg
    return cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"retry_errors": flag})})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.entry import config_arguments, retry_errors_argument

    config_arguments(parser)
    retry_errors_argument(parser)


def main(args: argparse.Namespace) -> int:
    """The replay stage alone: samples the traffic first if that is not committed yet."""
    from jobs import sample

    cfg = with_retry_flag(load_config(args.config), args)
    store = RunStore(cfg.store, cfg.run_id)
    store.check_access()
    with store.lease(cfg.execution.lease_ttl_s).acquire(cfg.execution.lease_wait_s):
        if not store.commits("traffic"):
            sample.run(cfg, store)
        stats = run(cfg, store, progress=not args.no_progress)
    print(json.dumps({"replay": stats}, indent=2, default=str))
    return 0


# The stage's earlier name, kept so code written against it (other branches, scripts) still runs.
replay = run


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.replay"))
