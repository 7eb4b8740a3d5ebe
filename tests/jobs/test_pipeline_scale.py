"""The pipeline of benchmarks/pipeline_scale.py on a small N: every table has exactly the rows it should.

Same generated inputs (benchmarks.pipeline_scale.generate: demo text lengths, two recorded candidates, recorded
pairwise judge verdicts, simulated labels) plus two planted bad traffic rows, through the real
jobs.migrate.run_pipeline on a local Ray (2 CPUs) and a local run store, with a short NUTS run.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.support.fixtures import pipeline_scale_module

N = 2000
LABELS_PER_CANDIDATE = 100


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import ray

    from jobs.config import parse_config
    from jobs.migrate import run_pipeline
    from jobs.store import RunStore

    bench = pipeline_scale_module()
    work = tmp_path_factory.mktemp("scale")
    raw = bench.generate(N, work / "inputs", LABELS_PER_CANDIDATE)
    # Planted: a duplicate id and an empty conversation; both must land in the quarantine, nothing else.
    planted = pd.DataFrame({"request_id": ["r00000000", "planted-empty"],
                            "messages": [[{"role": "user", "content": "again"}], []],
                            "response": ["x", "y"], "app": ["a", "a"]})
    planted.to_json(work / "inputs" / "traffic" / "zz-planted.jsonl", orient="records", lines=True)
    raw["store"] = {"root": str(work / "store")}
    raw["execution"]["shard_rows"] = 1000
    raw["decision"].update(draws=100, tune=100, chains=2)
    cfg = parse_config(raw, "test config")
    started_here = not ray.is_initialized()
    decision = run_pipeline(cfg, progress=False)
    yield bench, cfg, RunStore(cfg.store, cfg.run_id), decision
    if started_here:
        ray.shutdown()


def test_every_table_has_its_rows(run):
    bench, cfg, store, decision = run
    traffic = store.read_table("traffic")
    assert len(traffic) == N and traffic["request_id"].is_unique
    assert len(store.commits("traffic")) == N // 1000

    responses = store.read_table("responses")
    per_model = responses.groupby("model")["request_id"].nunique().to_dict()
    assert per_model == {c: N for c in bench.CANDIDATES}
    assert len(responses) == 2 * N and responses["error"].isna().all()

    scores = store.read_table("scores")
    counts = scores.groupby(["model", "metric"]).size().to_dict()
    checks = ["check.empty", "check.length_chars", "check.markdown", "check.refusal"]
    want = {(bench.INCUMBENT, m): N for m in checks}  # no length ratio for the incumbent against itself
    for cand in bench.CANDIDATES:
        want.update({(cand, m): N for m in [*checks, "check.length_ratio",
                                            "judge.pairwise.quality.ab", "judge.pairwise.quality.ba"]})
    assert counts == want
    assert not scores.duplicated(["request_id", "model", "metric"]).any()

    labels = store.read_table("labels")
    assert len(labels) == 2 * LABELS_PER_CANDIDATE
    assert labels.groupby("model").size().to_dict() == {c: LABELS_PER_CANDIDATE for c in bench.CANDIDATES}


def test_only_the_planted_rows_are_quarantined(run):
    _, _, store, _ = run
    q = store.read_table("quarantine")
    assert sorted(q["request_id"]) == ["planted-empty", "r00000000"]
    assert set(q["stage"]) == {"traffic"}
    assert any("duplicate request_id" in r for r in q["reason"]) and any("empty" in r for r in q["reason"])
    assert store.manifest()["stages"]["sample"]["rows_in"] == N + 2


def test_decision_is_written_for_both_candidates(run):
    bench, _, store, decision = run
    doc = json.loads(store.read_document("decision", "decision.json"))
    assert set(doc["verdicts"]) == set(bench.CANDIDATES) == set(decision.verdicts)
    for cand in bench.CANDIDATES:
        entry = doc["candidates"][cand]["dimensions"]["quality"]
        assert entry["labels_used"] == LABELS_PER_CANDIDATE
        lo, hi = entry["interval"]
        assert 0.0 <= lo <= entry["estimate"] <= hi <= 1.0
    # The simulated truth separates the two candidates (win rates 0.55+0.05 ties vs 0.38+0.05): so must the estimate.
    est = {c: doc["candidates"][c]["dimensions"]["quality"]["estimate"] for c in bench.CANDIDATES}
    assert est["cand-a"] > est["cand-b"]


def test_recorded_scores_stream_in_chunks_and_catch_duplicates_across_them(run, tmp_path, monkeypatch):
    """A recorded score file is committed chunk by chunk; a duplicate key in a later chunk is quarantined with its
    row number in the file, and a rerun adds nothing."""
    import jobs.migrate as migrate
    from jobs.store import RunStore

    _, cfg, _, _ = run
    rows = pd.DataFrame({"request_id": [f"r{i:05d}" for i in range(2500)], "model": "cand-a",
                         "metric": "judge.pairwise.quality.ab", "value": 1.0})
    rows.loc[2100, "request_id"] = "r00007"  # same key as row 7, two chunks earlier
    rows["value"] = rows["value"].astype(object)
    rows.loc[1200, "value"] = "bad"  # not a number: quarantined by the validator inside its chunk
    path = tmp_path / "judge.csv"
    rows.to_csv(path, index=False)
    cfg2 = cfg.model_copy(update={"run_id": "stream", "recorded_scores": [str(path)],
                                  "store": cfg.store.model_copy(update={"root": str(tmp_path / "store")})})
    store = RunStore(cfg2.store, cfg2.run_id)
    monkeypatch.setattr(migrate, "RECORDED_CHUNK_ROWS", 1000)
    stats = migrate.import_recorded_scores(cfg2, store)
    assert stats == {"rows": 2498, "quarantined": 2}
    assert len(store.commits("scores")) == 3
    scores = store.read_table("scores")
    assert len(scores) == 2498 and not scores.duplicated(["request_id", "model", "metric"]).any()
    q = store.read_table("quarantine").sort_values("row")
    assert q["row"].tolist() == [1200, 2100]
    assert "not a number" in q["reason"].iat[0] and "duplicate" in q["reason"].iat[1]
    assert migrate.import_recorded_scores(cfg2, store) == stats
    assert len(store.read_table("scores")) == 2498
