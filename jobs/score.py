"""`python -m jobs.score --config URI` (and `baton score`): every response to automated metrics.

One shard task per pending (model, traffic shard): read the traffic shard and the model's responses shard, run
the cheap checks, the embeddings and the judge (``inference.scorers``), then commit, in this order, the
``embeddings`` shard, the judge failures (``quarantine``) and last the ``scores`` shard ``shard_id("scores",
model, S)``, whose commit marks the task done (a rerun skips it).

The incumbent's shards run first: its answers and the references are embedded once, there, and the candidates'
tasks read those vectors back instead of encoding them again (a candidate task encodes only its own answers,
unless the incumbent's embeddings shard is missing).

In ``replay.mode: conversation`` a traffic shard holds whole conversations: the judge reads the history each turn
was sent with (the responses' ``messages_sent``), and two more judges can run (docs/conversations.md):
``scoring.continuity`` (``judge.continuity`` per turn with a next turn: does the logged next user message still fit
the model's answer; models whose answers were replayed) and ``scoring.transcript`` (``judge.transcript.<rubric>``
per conversation, on its last turn's row). Both commit with the shard's other scores, so they resume like them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np
import pandas as pd

from inference.scorers import Checks, Embedder, Judge, ScoringConfig, similarity_scores, split_failures
from inference.scorers.code_exec import CodeExec
from inference.scorers.continuity import ContinuityJudge
from inference.scorers.embeddings import EMBED_COLUMNS
from inference.scorers.judge import build_judge_engine
from inference.scorers.rubrics import load_rubric
from inference.scorers.transcript import TranscriptJudge
from jobs.config import RunConfig, load_config
from jobs.contracts import QUARANTINE_COLUMNS, SCORE_COLUMNS, validate_scores
from jobs.shards import ensure_ray, run_shards
from jobs.store import RunStore, shard_id

log = logging.getLogger(__name__)


class ScoreShardTask:
    """Shard task (see jobs.shards): built once per actor, so the embedding model and judge engine load once."""

    def __init__(self, store: RunStore, scoring: ScoringConfig, incumbent: str, incumbent_replayed: bool,
                 segments: list[str], conversation: bool = False):
        self.store, self.scoring = store, scoring
        self.incumbent, self.incumbent_replayed, self.segments = incumbent, incumbent_replayed, segments
        self.checks = Checks(scoring.checks)
        self.embedder = Embedder(scoring.embeddings) if scoring.embeddings.enabled else None
        self.judge = Judge(scoring.judge) if scoring.judge.enabled else None
        self.code = CodeExec(scoring.code) if scoring.code.enabled else None
        self.conversation = conversation
        self.continuity = (ContinuityJudge(build_judge_engine(scoring.judge_engine("continuity")),
                                           raw_chars=scoring.continuity.raw_chars)
                           if conversation and scoring.continuity.enabled else None)
        self.transcript = (TranscriptJudge(scoring.transcript, scoring.judge_engine("transcript"),
                                           scoring.judge.rubrics_dir)
                           if conversation and scoring.transcript.enabled else None)

    # -- inputs ------------------------------------------------------------------------------------------
    def _answers(self, model: str, traffic_shard: str, traffic: pd.DataFrame) -> pd.Series | None:
        """A model's answers on the shard, indexed by request_id (null where it failed); None if not available."""
        if model == self.incumbent and not self.incumbent_replayed:
            if "response" not in traffic.columns:  # traffic without answers: nothing of the incumbent to score
                return pd.Series([None] * len(traffic), index=traffic["request_id"], dtype=object)
            return traffic.set_index("request_id")["response"]
        resp = self.store.read_shard("responses", shard_id(model, traffic_shard),
                                     columns=["request_id", "response", "error"], ignore_missing=True)
        if resp is None:
            return None
        resp = resp.drop_duplicates("request_id")
        ok = resp["error"].isna() if "error" in resp.columns else pd.Series(True, index=resp.index)
        return resp["response"].where(ok, None).set_axis(resp["request_id"].astype(str))

    def batch(self, model: str, traffic_shard: str) -> tuple[pd.DataFrame, int]:
        """The joined input of the scorers, and how many of the model's responses had failed (not scored)."""
        # Only the judge reads the conversation; without it the messages (most of a shard's bytes, and slow to
        # turn into Python objects) are not read at all.
        judges = self.judge is not None or self.continuity is not None or self.transcript is not None
        wanted = ["request_id", "response", "reference", *self.segments] + (["messages"] if judges else [])
        if self.conversation:
            wanted += ["conversation_id", "turn"]
        if self.code is not None:
            wanted.append("tests")  # absent from a shard of traffic without code tasks: ignore_missing drops it
        traffic = self.store.read_shard("traffic", traffic_shard, columns=wanted, ignore_missing=True)
        if traffic is None:
            raise FileNotFoundError(f"traffic shard {traffic_shard!r} is not committed")
        traffic = traffic.assign(request_id=traffic["request_id"].astype(str))
        answers = self._answers(model, traffic_shard, traffic)
        if answers is None:
            raise FileNotFoundError(f"responses of {model!r} for traffic shard {traffic_shard!r} are not committed")
        keep = ("messages", "tests", "conversation_id", "turn", *self.segments)
        batch = traffic[["request_id", *[c for c in keep if c in traffic.columns]]].copy()
        batch["model"] = model
        batch["response"] = answers.reindex(batch["request_id"]).to_numpy(dtype=object)
        if model == self.incumbent:
            batch["incumbent_response"] = None  # no relative metrics for the incumbent itself
        else:
            inc = self._answers(self.incumbent, traffic_shard, traffic)
            batch["incumbent_response"] = (inc.reindex(batch["request_id"]).to_numpy(dtype=object)
                                           if inc is not None else None)
        batch["reference"] = traffic["reference"].to_numpy(dtype=object) if "reference" in traffic.columns else None
        for col in ("response", "incumbent_response", "reference"):
            batch[col] = batch[col].astype(object).where(batch[col].notna(), None)
        batch["messages_sent"] = None
        if self.conversation and "messages" in batch.columns:
            sent = self._sent(model, traffic_shard)
            if sent is not None:  # the judges read the history the model was sent, not the logged one
                batch["messages_sent"] = sent.reindex(batch["request_id"]).to_numpy(dtype=object)
                batch["logged_messages"] = batch["messages"]
                batch["messages"] = [s if s is not None and not (isinstance(s, float) and np.isnan(s)) else m
                                     for s, m in zip(batch["messages_sent"], batch["logged_messages"])]
        failed = int(batch["response"].isna().sum())
        return batch, failed

    def _sent(self, model: str, traffic_shard: str) -> pd.Series | None:
        """A conversation-mode model's ``messages_sent`` by request_id; None for logged answers."""
        if model == self.incumbent and not self.incumbent_replayed:
            return None
        resp = self.store.read_shard("responses", shard_id(model, traffic_shard), columns=["request_id", "messages_sent"],
                                     ignore_missing=True)
        if resp is None or "messages_sent" not in resp.columns:
            return None  # a recorded candidate's answers: no history of their own
        resp = resp.drop_duplicates("request_id")
        return resp["messages_sent"].set_axis(resp["request_id"].astype(str))

    # -- the task ----------------------------------------------------------------------------------------
    def __call__(self, key: str) -> dict:
        model, traffic_shard = json.loads(key)
        out_shard = shard_id("scores", model, traffic_shard)
        stats = {"model": model, "traffic_shard": traffic_shard, "skipped": False, "rows": 0, "responses": 0,
                 "responses_failed": 0, "embedded": 0, "judge_calls": 0, "judge_failures": 0,
                 "checks_s": 0.0, "embed_s": 0.0, "judge_s": 0.0}
        if self.store.is_committed("scores", out_shard):
            stats["skipped"] = True
            return stats
        started = time.monotonic()
        batch, failed = self.batch(model, traffic_shard)
        stats["responses"], stats["responses_failed"] = int(len(batch) - failed), failed
        parts = []

        t = time.monotonic()
        parts.append(self.checks(batch))
        stats["checks_s"] = time.monotonic() - t

        if self.embedder is not None:
            t = time.monotonic()
            vectors = self._embed(batch, model, traffic_shard)
            parts.append(similarity_scores(vectors))
            own = vectors[vectors["model"] == model] if model == self.incumbent else vectors[
                (vectors["model"] == model) & (vectors["field"] == "response")]
            stats["embedded"] = int(len(own))
            self.store.write_shard("embeddings", shard_id("embeddings", model, traffic_shard),
                                   own[EMBED_COLUMNS].reset_index(drop=True),
                                   meta={"model_name": self.embedder.model_name})
            stats["embed_s"] = time.monotonic() - t

        if self.code is not None and "tests" in batch.columns:
            t = time.monotonic()
            parts.append(self.code(batch))
            stats["exec_s"] = round(time.monotonic() - t, 3)
            stats["exec_isolation"] = ",".join(sorted(self.code.isolations))

        t = time.monotonic()
        verdicts = [self.judge(batch)] if self.judge is not None else []
        sent = batch["messages_sent"].notna()
        if self.continuity is not None and sent.any():  # only answers the model wrote to its own history
            logged = batch.assign(messages=batch.get("logged_messages", batch["messages"]))
            verdicts.append(self.continuity(batch[sent], logged))
            stats["continuity_calls"] = int(len(verdicts[-1]))
        if self.transcript is not None:
            verdicts.append(self.transcript(batch))
            stats["transcript_calls"] = int(len(verdicts[-1]))
        if verdicts:
            judged = pd.concat(verdicts, ignore_index=True) if len(verdicts) > 1 else verdicts[0]
            scores, failures = split_failures(judged)
            parts.append(scores)
            stats["judge_calls"], stats["judge_failures"] = int(len(judged)), int(len(failures))
            if len(failures):
                self.store.write_shard("quarantine", shard_id("judge", model, traffic_shard),
                                       _quarantine_rows(failures, batch, out_shard))
            stats["judge_s"] = time.monotonic() - t

        table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
            pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else object) for c in SCORE_COLUMNS})
        checked = validate_scores(table[SCORE_COLUMNS], out_shard)
        if len(checked.quarantine):  # a scorer bug (a duplicated metric), not bad input: fail the shard loudly
            raise RuntimeError(f"{out_shard}: scorers produced invalid rows: {checked.quarantine['reason'].iat[0]}")
        # The work time travels in the commit record: the report's throughput sums it over every invocation.
        self.store.write_shard("scores", out_shard, checked.valid[SCORE_COLUMNS],
                               meta={"model": model, "traffic_shard": traffic_shard,
                                     "stats": {"work_s": round(time.monotonic() - started, 3)}})
        stats["rows"] = int(len(checked.valid))
        return stats

    def _embed(self, batch: pd.DataFrame, model: str, traffic_shard: str) -> pd.DataFrame:
        """Vectors of the response, the incumbent's answer and the reference, labelled with this model."""
        if model == self.incumbent:
            return self._with_fields(("response", "reference"))(batch)
        stored = self.store.read_shard("embeddings", shard_id("embeddings", self.incumbent, traffic_shard))
        if stored is None:  # the incumbent's shard is missing (e.g. scored elsewhere): encode its texts here
            return self._with_fields(("response", "incumbent_response", "reference"))(batch)
        own = self._with_fields(("response",))(batch)
        stored = stored[stored["request_id"].isin(set(batch["request_id"]))].copy()
        stored["field"] = stored["field"].replace({"response": "incumbent_response"})
        stored["model"] = model
        return pd.concat([own, stored[EMBED_COLUMNS]], ignore_index=True) if len(stored) else own

    def _with_fields(self, fields: tuple[str, ...]) -> Embedder:
        self.embedder.fields = fields  # the same loaded model, a different choice of columns
        return self.embedder


def _quarantine_rows(failures: pd.DataFrame, batch: pd.DataFrame, source: str) -> pd.DataFrame:
    pos = pd.Series(np.arange(len(batch)), index=batch["request_id"].astype(str).to_numpy())
    pos = pos[~pos.index.duplicated()]
    return pd.DataFrame({
        "stage": "score.judge", "source": source,
        "row": pos.reindex(failures["request_id"].astype(str)).fillna(-1).astype("int64").to_numpy(),
        "request_id": failures["request_id"].astype(str).to_numpy(dtype=object),
        "field": failures["metric"].to_numpy(dtype=object),
        "reason": failures["error"].to_numpy(dtype=object),
        "raw": [json.dumps({"model": m, "answer": r})[:2000] for m, r in zip(failures["model"], failures["raw"])],
    })[QUARANTINE_COLUMNS]


def _judge_limiters(cfg: RunConfig) -> list:
    """The driver creates the rate limiter of every API judge, as the replay stage does for the candidates: a
    limiter created by a scoring actor would die with that actor (its owner), failing every other actor's shard."""
    from inference.engines.ratelimit import get_limiter, limiter_resources

    scoring = cfg.scoring
    engines = [scoring.judge.engine if scoring.judge.enabled else None]
    if cfg.replay.mode == "conversation":
        engines += [scoring.judge_engine(k) for k in ("continuity", "transcript") if getattr(scoring, k).enabled]
    return [get_limiter(e.provider_key or e.base_url, e.rpm, e.tpm,
                        resources=limiter_resources(cfg.execution.worker_resources))
            for e in engines if e is not None and e.kind == "openai"]


def run(cfg: RunConfig, store: RunStore, progress: bool = True) -> dict:
    """Score every pending (model, traffic shard); returns the stage statistics (rubric versions included)."""
    scoring = cfg.scoring
    incumbent = cfg.incumbent.name
    replayed = cfg.incumbent.replay is not None
    traffic = sorted(store.commits("traffic"))
    responses = set(store.commits("responses"))
    scored = set(store.commits("scores"))
    kwargs = {"store": store, "scoring": scoring, "incumbent": incumbent, "incumbent_replayed": replayed,
              "segments": list(cfg.traffic.segments), "conversation": cfg.replay.mode == "conversation"}
    stats: dict = {"shards_done": 0, "shards_skipped": 0, "shards_waiting": 0, "rows": 0, "responses_failed": 0,
                   "judge_calls": 0, "judge_failures": 0, "embedded": 0}
    started = time.monotonic()
    frames = []
    limiters: list = []
    # Incumbent first (its vectors are reused by the candidates), then every candidate.
    for models in ([incumbent], [c.name for c in cfg.candidates]):
        keys = []
        for model in models:
            for s in traffic:
                if shard_id("scores", model, s) in scored:
                    stats["shards_skipped"] += 1
                elif model == incumbent and not replayed or (
                        shard_id(model, s) in responses
                        # a candidate waits for a replayed incumbent: its relative metrics need those answers
                        and (model == incumbent or not replayed or shard_id(incumbent, s) in responses)):
                    keys.append(json.dumps([model, s]))
                else:
                    stats["shards_waiting"] += 1  # its responses are not committed yet (a replay still to finish)
        if keys:
            if not limiters:
                ensure_ray(cfg)
                limiters = _judge_limiters(cfg)  # held until the stage ends
            frames.append(run_shards(ScoreShardTask, kwargs, keys, num_actors=scoring.num_actors,
                                     num_cpus=scoring.num_cpus, num_gpus=scoring.num_gpus,
                                     resources=cfg.execution.worker_resources,
                                     desc=f"score {'incumbent' if models == [incumbent] else 'candidates'}",
                                     progress=progress))
    if frames:
        done = pd.concat(frames, ignore_index=True)
        stats["shards_done"] = int((~done["skipped"].astype(bool)).sum())
        stats["shards_skipped"] += int(done["skipped"].astype(bool).sum())
        for col in ("rows", "responses_failed", "judge_calls", "judge_failures", "embedded"):
            stats[col] = int(done[col].sum())
        for col in ("continuity_calls", "transcript_calls"):  # conversation mode only
            if col in done.columns:
                stats[col] = int(done[col].fillna(0).sum())
        for col in ("checks_s", "embed_s", "judge_s"):
            stats[col] = round(float(done[col].sum()), 3)
        if "exec_isolation" in done.columns:  # which sandbox ran the code tasks (docs/code-tasks.md)
            stats["exec_isolation"] = sorted({m for v in done["exec_isolation"].dropna() for m in str(v).split(",") if m})
    stats["wall_s"] = round(time.monotonic() - started, 3)
    if scoring.embeddings.enabled:
        stats["embedding_model"] = scoring.embeddings.model_name or (
            "all-MiniLM-L6-v2" if scoring.embeddings.model is None else scoring.embeddings.model.rstrip("/").rsplit("/", 1)[-1])
    if scoring.judge.enabled:
        judge = scoring.judge
        stats["judge_model"] = judge.engine.model if judge.engine is not None else None
        stats["rubrics"] = {d.name: {"rubric": r.id, "sha256": r.sha256} for d in judge.dimensions
                            for r in [load_rubric(d.name, d.version, judge.rubrics_dir)]}
    if cfg.replay.mode == "conversation" and scoring.transcript.enabled:
        stats["transcript_rubrics"] = {
            d.name: {"rubric": r.id, "sha256": r.sha256} for d in scoring.transcript.dimensions
            for r in [load_rubric(d.name, d.version, scoring.transcript.rubrics_dir or scoring.judge.rubrics_dir)]}
    store.update_manifest(stages={"score": stats})
    return stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.entry import config_arguments

    config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = RunStore(cfg.store, cfg.run_id)
    store.check_access()
    ensure_ray(cfg)
    stats = run(cfg, store, progress=not args.no_progress)
    print(json.dumps(stats, default=str))
    return 0


# The stage's earlier name, kept so code written against it (other branches, scripts) still runs.
score = run


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.score"))
