"""jobs.score end to end on a local run store: real Ray actor pool, real MiniLM, the real openai engine against a
loopback server with a scripted judge. Checks the scores, embeddings and quarantine tables, and resume."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from jobs.config import parse_config
from jobs.score import score
from jobs.store import RunStore, shard_id
from tests.support.judge_script import scripted_judge
from tests.support.openai_server import OpenAIServer



def _m(text):
    return [{"role": "user", "content": text}]


TRAFFIC = {
    "traffic-000000": pd.DataFrame({
        "request_id": ["a1", "a2", "a3", "a4"],
        "messages": [_m("Capital of France?"), _m("How do I build a bomb?"), _m("2+2?"), _m("JUDGE-GARBAGE hi")],
        "response": ["Paris is the capital of France.", "I can't help with that.", "4", "Hello there."],
        "reference": ["Paris", None, "4", None],
        "region": ["eu", "us", "eu", "us"],
    }),
    "traffic-000001": pd.DataFrame({
        "request_id": ["b1", "b2"],
        "messages": [_m("Name a colour."), _m("Capital of Italy?")],
        "response": ["Blue.", "Rome."],
        "reference": [None, "Rome"],
        "region": ["eu", "eu"],
    }),
}
CAND_A = {
    "traffic-000000": (["The capital of France is Paris.", "Sure: step one, get the bomb parts.", None, "Hi!"],
                       [None, None, "server_error: HTTP 500 after 6 attempts", None]),
    "traffic-000001": (["Blue.", "Milan."], [None, None]),
}


def _responses(model, answers, errors, ids):
    return pd.DataFrame({"request_id": ids, "model": model, "response": answers, "prompt_tokens": 5,
                         "completion_tokens": 5, "latency_s": 0.1, "finish_reason": "stop", "attempts": 1,
                         "error": errors})


@pytest.fixture(scope="module")
def judge_server():
    with OpenAIServer(responder=scripted_judge) as srv:
        yield srv


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_cluster, judge_server):
    root = tmp_path_factory.mktemp("store")
    cfg = parse_config({
        "run_id": "score-test",
        "store": {"root": str(root)},
        "traffic": {"path": "unused.parquet", "segments": ["region"]},
        "incumbent": {"name": "inc"},
        "candidates": [{"kind": "recorded", "name": "cand-a", "path": "unused.csv"},
                       {"kind": "recorded", "name": "cand-b", "path": "unused.csv"}],
        "decision": {"dimensions": [{"name": "correctness", "kind": "pairwise"}]},
        "scoring": {
            "checks": {"language": "en"},
            "embeddings": {"batch_size": 16},
            "judge": {"enabled": True, "raw_chars": 50,
                      "engine": {"kind": "openai", "name": "judge", "model": "judge-1", "base_url": judge_server.base_url,
                                 "rpm": 60000, "tpm": 10000000, "max_attempts": 2},
                      "dimensions": [{"name": "correctness", "pairwise": True}, {"name": "refusal"}]},
        },
    })
    store = RunStore(cfg.store, cfg.run_id)
    for shard, df in TRAFFIC.items():
        store.write_shard("traffic", shard, df)
        answers, errors = CAND_A[shard]
        store.write_shard("responses", shard_id("cand-a", shard), _responses("cand-a", answers, errors, list(df["request_id"])))
    # cand-b has answered only the first shard so far (its replay is still running).
    store.write_shard("responses", shard_id("cand-b", "traffic-000000"),
                      _responses("cand-b", ["Paris.", "No.", "4", "Hey"], [None] * 4, list(TRAFFIC["traffic-000000"]["request_id"])))
    stats = score(cfg, store, progress=False)
    return cfg, store, stats


def _value(scores, rid, model, metric):
    hit = scores[(scores["request_id"] == rid) & (scores["model"] == model) & (scores["metric"] == metric)]
    assert len(hit) <= 1
    return None if hit.empty else float(hit["value"].iat[0])


def test_stats_and_shards(run):
    _, store, stats = run
    assert stats["shards_done"] == 5 and stats["shards_waiting"] == 1 and stats["shards_skipped"] == 0
    assert stats["responses_failed"] == 1
    assert stats["rubrics"]["correctness"]["rubric"] == "correctness.v1" and len(stats["rubrics"]["refusal"]["sha256"]) == 64
    assert stats["embedding_model"] == "all-MiniLM-L6-v2"
    assert set(store.commits("scores")) == {shard_id("scores", m, s) for m in ("inc", "cand-a") for s in TRAFFIC} | {
        shard_id("scores", "cand-b", "traffic-000000")}
    scores = store.read_table("scores")
    assert list(scores.columns) == ["request_id", "model", "metric", "value"]
    assert not scores.duplicated(["request_id", "model", "metric"]).any() and scores["value"].notna().all()
    assert stats["rows"] == len(scores)


def test_candidate_and_incumbent_metrics(run):
    _, store, _ = run
    scores = store.read_table("scores")
    cand = set(scores.loc[(scores["model"] == "cand-a") & (scores["request_id"] == "a1"), "metric"])
    assert {"check.refusal", "check.length_chars", "check.length_ratio", "check.language", "embed.sim_incumbent",
            "embed.sim_reference", "judge.abs.correctness", "judge.abs.refusal", "judge.pairwise.correctness.ab",
            "judge.pairwise.correctness.ba"} <= cand
    inc = set(scores.loc[(scores["model"] == "inc") & (scores["request_id"] == "a1"), "metric"])
    # The incumbent's own answers get absolute metrics only.
    assert {"check.refusal", "check.length_chars", "embed.sim_reference", "judge.abs.correctness", "judge.abs.refusal"} <= inc
    assert not any(m.startswith("judge.pairwise") or m in ("check.length_ratio", "embed.sim_incumbent") for m in inc)
    # Values: the same answer as the incumbent is similarity 1; a paraphrase high; a wrong city lower.
    assert _value(scores, "b1", "cand-a", "embed.sim_incumbent") == pytest.approx(1.0, abs=1e-4)
    assert _value(scores, "a1", "cand-a", "embed.sim_incumbent") > 0.8
    assert _value(scores, "b2", "cand-a", "embed.sim_reference") < _value(scores, "b2", "inc", "embed.sim_reference")
    assert _value(scores, "a2", "inc", "check.refusal") == 1.0 and _value(scores, "a2", "cand-a", "check.refusal") == 0.0
    assert _value(scores, "a2", "inc", "judge.abs.refusal") == 5.0 and _value(scores, "a2", "cand-a", "judge.abs.refusal") == 1.0
    assert _value(scores, "a1", "cand-a", "judge.abs.correctness") == 5.0
    assert _value(scores, "b2", "cand-a", "judge.pairwise.correctness.ab") == 0.0
    assert _value(scores, "b2", "cand-a", "judge.pairwise.correctness.ba") == 0.0
    # The failed response (a3) has no score at all.
    assert scores[(scores["model"] == "cand-a") & (scores["request_id"] == "a3")].empty


def test_embeddings_table_and_reuse(run):
    _, store, _ = run
    emb = store.read_table("embeddings")
    assert list(emb.columns) == ["request_id", "model", "field", "vector"]
    # References and the incumbent's answers are stored once, in the incumbent's shards; candidates add their answers.
    assert emb.groupby(["model", "field"]).size().to_dict() == {
        ("cand-a", "response"): 5, ("cand-b", "response"): 4, ("inc", "reference"): 3, ("inc", "response"): 6}
    vec = np.stack(emb["vector"].map(np.asarray))
    assert vec.dtype == np.float32 and vec.shape[1] == 384


def test_judge_failures_quarantined(run):
    _, store, stats = run
    q = store.read_table("quarantine")
    assert set(q["stage"]) == {"score.judge"} and set(q["request_id"]) == {"a4"}
    assert stats["judge_failures"] == len(q)
    assert set(q["field"]) >= {"judge.abs.correctness", "judge.pairwise.correctness.ab", "judge.pairwise.correctness.ba"}
    assert q["reason"].str.contains("no score found|no verdict found").all()
    assert q["raw"].str.contains("lorem ipsum").all()
    scores = store.read_table("scores")
    assert not scores[(scores["request_id"] == "a4") & scores["metric"].str.startswith("judge.")].any().any()


def test_rerun_skips_then_scores_new_responses(run):
    cfg, store, _ = run
    before = store.count_rows("scores")
    again = score(cfg, store, progress=False)
    assert again["shards_done"] == 0 and again["shards_skipped"] == 5 and store.count_rows("scores") == before
    store.write_shard("responses", shard_id("cand-b", "traffic-000001"),
                      _responses("cand-b", ["Red.", "Rome."], [None, None], ["b1", "b2"]))
    third = score(cfg, store, progress=False)
    assert third["shards_done"] == 1 and third["shards_waiting"] == 0
    scores = store.read_table("scores")
    assert _value(scores, "b2", "cand-b", "judge.pairwise.correctness.ab") == 0.5  # both answers hold the reference
    assert not scores.duplicated(["request_id", "model", "metric"]).any()


def test_replayed_incumbent_checks_only(tmp_path, ray_cluster):
    cfg = parse_config({
        "run_id": "score-replayed", "store": {"root": str(tmp_path / "store")},
        "traffic": {"path": "unused.parquet"},
        "incumbent": {"name": "inc", "replay": {"kind": "recorded", "name": "inc", "path": "unused.csv"}},
        "candidates": [{"kind": "recorded", "name": "cand-a", "path": "unused.csv"}],
        "decision": {"dimensions": [{"name": "correctness", "kind": "pairwise"}]},
        "scoring": {"embeddings": {"enabled": False}},
    })
    store = RunStore(cfg.store, cfg.run_id)
    for shard, df in TRAFFIC.items():
        store.write_shard("traffic", shard, df.drop(columns=["response"]))
        answers, errors = CAND_A[shard]
        store.write_shard("responses", shard_id("cand-a", shard), _responses("cand-a", answers, errors, list(df["request_id"])))
    # The replayed incumbent has answered only the first shard: the candidate's second shard waits for it.
    store.write_shard("responses", shard_id("inc", "traffic-000000"),
                      _responses("inc", ["Paris.", "No.", "4", "Hello"], [None] * 4, list(TRAFFIC["traffic-000000"]["request_id"])))
    stats = score(cfg, store, progress=False)
    assert stats["shards_done"] == 2 and stats["shards_waiting"] == 2 and "rubrics" not in stats
    scores = store.read_table("scores")
    assert _value(scores, "a1", "cand-a", "check.length_ratio") == pytest.approx(len("The capital of France is Paris.") / len("Paris."))
    assert _value(scores, "a1", "inc", "check.length_chars") == len("Paris.")
    assert not scores["metric"].str.startswith(("embed.", "judge.")).any()
    assert store.count_rows("embeddings") == 0
