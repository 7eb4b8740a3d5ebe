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


def test_cost_rows_per_candidate_and_stage():
    rows = cost_rows({"replay": {"cand": {"requests": 10, "prompt_tokens": 5, "completion_tokens": 7, "errors": {"timeout": 1},
                                          "wall_s": 2.0, "est_cost": 0.1}, "wall_s": 3.0},
                      "score": {"rows": 30, "wall_s": 1.5}})
    assert {"stage": "replay", "model": "cand", "requests": 10, "tokens_in": 5, "tokens_out": 7,
            "errors": {"timeout": 1}, "wall_s": 2.0, "est_cost_usd": 0.1} in rows
    assert {"stage": "score", "model": "all", "wall_s": 1.5, "requests": 30} in rows
