"""Report extras computed from the run's tables: judge position and length bias, cost rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.config import StoreConfig
from jobs.report import cost_rows, judge_bias
from jobs.store import RunStore


def test_position_and_length_bias(tmp_path):
    store = RunStore(StoreConfig(root=str(tmp_path)), "r")
    rng = np.random.default_rng(0)
    n = 400
    ids = [f"q{i}" for i in range(n)]
    longer = rng.normal(0, 50, n)
    # A judge that prefers whatever it sees first: P(first wins) 0.7 in both orders, and longer answers.
    ab = (rng.random(n) < 0.7).astype(float)
    ba = (rng.random(n) < 0.3).astype(float)
    rows = [*({"request_id": r, "model": "cand", "metric": "judge.pairwise.q.ab", "value": v} for r, v in zip(ids, ab)),
            *({"request_id": r, "model": "cand", "metric": "judge.pairwise.q.ba", "value": v} for r, v in zip(ids, ba)),
            *({"request_id": r, "model": "cand", "metric": "check.length_chars", "value": 200 + d} for r, d in zip(ids, longer)),
            *({"request_id": r, "model": "inc", "metric": "check.length_chars", "value": 200.0} for r in ids)]
    df = pd.DataFrame(rows)
    store.write_shard("scores", "a", df.iloc[: len(df) // 2])
    store.write_shard("scores", "b", df.iloc[len(df) // 2:])
    bias = judge_bias(store, "inc")
    pos = bias["judge.pairwise.q"]["position"]
    assert pos["p_a_wins_ab"] == pytest.approx(ab.mean(), abs=1e-4)
    assert pos["p_a_wins_ba"] == pytest.approx(1 - ba.mean(), abs=1e-4)
    assert pos["p_a_wins_ab"] > 0.6 and pos["p_a_wins_ba"] > 0.6 and pos["n"] == n
    r = bias["judge.pairwise.q.ab"]["length"]["correlation"]
    assert r == pytest.approx(np.corrcoef(longer, ab)[0, 1], abs=1e-3)


def test_cost_rows_come_from_the_shard_records_of_every_invocation(tmp_path):
    """A resumed run: the manifest holds only the last invocation (which replayed and scored nothing, in 0.01 s);
    the report's figures are the records' sums: requests, work time, scored requests, cost."""
    import json

    from jobs.config import parse_config
    from tests.support.fixtures import run_config

    raw = run_config(str(tmp_path), "r", [{"kind": "recorded", "name": "cand", "path": "unused.csv",
                                           "prices": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}])
    cfg = parse_config(raw, "test")
    store = RunStore(cfg.store, "r")
    for k in range(2):  # two traffic shards, replayed and scored by two different invocations
        ids = [f"q{k}-{i}" for i in range(10)]
        store.write_shard("traffic", f"traffic-00000{k}", pd.DataFrame({"request_id": ids}))
        stats = {"rows": 10, "ok": 9, "prompt_tokens": 1000, "completion_tokens": 500, "attempts": 10,
                 "latency_s_sum": 1.0, "errors": json.dumps({"timeout": 1}), "wall_s": 2.0 + k}
        store.write_shard("responses", f"cand-traffic-00000{k}", pd.DataFrame({"request_id": ids, "model": "cand"}),
                          meta={"candidate": "cand", "traffic_shard": f"traffic-00000{k}", "stats": stats})
        for model in ("cand", "incumbent"):
            scores = pd.DataFrame({"request_id": ids * 2, "model": model, "metric": ["a"] * 10 + ["b"] * 10,
                                   "value": 1.0})
            store.write_shard("scores", f"scores-{model}-traffic-00000{k}", scores,
                              meta={"model": model, "traffic_shard": f"traffic-00000{k}", "stats": {"work_s": 0.5}})
    store.update_manifest(stages={"replay": {"cand": {"requests": 0, "wall_s": 0.01, "est_cost": 0.0}, "wall_s": 0.01},
                                  "score": {"rows": 0, "wall_s": 0.01}})
    rows = {(r["stage"], r["model"]): r for r in cost_rows(cfg, store)}
    assert rows[("replay", "cand")] == {"stage": "replay", "model": "cand", "requests": 20, "tokens_in": 2000,
                                        "tokens_out": 1000, "errors": {"timeout": 2}, "wall_s": 5.0,
                                        "est_cost_usd": pytest.approx(2000 * 2e-6 + 1000 * 8e-6)}
    # Scored requests: distinct request ids of the scores table (20 per model), not metric rows (40).
    assert rows[("score", "cand")] == {"stage": "score", "model": "cand", "requests": 20, "wall_s": 1.0}
    assert rows[("score", "incumbent")]["requests"] == 20
    assert rows[("sample", "all")]["requests"] == 20


def test_report_total_adds_no_requests_and_shows_small_costs():
    from calibration.report import render_report
    from calibration.report.view import cost_table_rows as view_rows
    from calibration.report.view import cost_total

    extras = {"cost": [{"stage": "replay", "model": "c", "requests": 20, "wall_s": 5.0, "est_cost_usd": 0.000123},
                       {"stage": "score", "model": "c", "requests": 20, "wall_s": 1.0}]}
    total = cost_total(view_rows(extras))
    assert total.requests is None and total.requests_per_s is None and total.est_cost_usd == pytest.approx(0.000123)
    from calibration.schema import Decision

    empty = Decision(created_at="2026-12-01T00:00:00Z", incumbent="i", margin=0.05, confidence=0.9, seed=0,
                     verdicts={}, candidates={}, results=[])
    md, _ = render_report(empty, extras)
    line = next(x for x in md.splitlines() if x.startswith("| total |"))
    assert "| 40 |" not in line and line.rstrip(" |").endswith("$0.000123")
    assert "| replay | c | 20 |" in md and "| 4.00 |" in md  # 20 requests over 5 s of shard work
