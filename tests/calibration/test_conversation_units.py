"""Conversations as units: per-turn-position results (and their joint gate), per-conversation labels and the
conversation-level estimand, through calibration.pipeline.decide and in a seeded coverage study."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibration.checks import InputError
from calibration.config import DecisionConfig
from calibration.conversation_units import bucket_names, conversation_tables, turn_positions
from calibration.estimands import EstimandDraws
from calibration.segments import Grouping, gate_segments
from tests.calibration.test_coverage import honest_band
from tests.support.simulate_conversations import simulate_conversation_labels


def test_turn_buckets_default_and_custom():
    assert bucket_names([1, 2, 3]) == ["1", "2", "3+"]
    assert bucket_names([3, 1]) == ["1-2", "3+"]
    traffic = pd.DataFrame({"request_id": ["a", "b", "c", "d", "e"], "turn": [1, 2, 3, 7, None]})
    codes, names = turn_positions(traffic, np.array(["a", "b", "c", "d", "e", "x"]))
    assert names == ["turn=1", "turn=2", "turn=3+"]
    assert codes.tolist() == [0, 1, 2, 2, 0, 0]  # no turn (or absent from traffic): a single-turn exchange
    codes, names = turn_positions(traffic, np.array(["a", "b", "c", "d"]), [1, 3])
    assert names == ["turn=1-2", "turn=3+"] and codes.tolist() == [0, 0, 1, 1]
    assert turn_positions(traffic, np.array(["a", "e"])) is None  # one position only: nothing to compare
    assert turn_positions(traffic.drop(columns="turn"), np.array(["a"])) is None
    assert turn_positions(traffic, np.array(["a", "b"]), []) is None


def test_conversation_tables_average_turns_and_key_labels_by_conversation():
    traffic = pd.DataFrame({"request_id": ["c1-1", "c1-2", "c1-3", "c2-1"], "conversation_id": ["c1"] * 3 + ["c2"],
                            "turn": [1, 2, 3, 1], "app": ["x", "y", "y", "z"]})
    scores = pd.DataFrame({"request_id": ["c1-1", "c1-2", "c1-3", "c1-3", "c2-1"], "model": "m",
                           "metric": ["judge.q", "judge.q", "judge.q", "judge.transcript.goal", "judge.q"],
                           "value": [1.0, 0.0, 0.5, 1.0, 0.25]})
    labels = pd.DataFrame({"request_id": ["c1-3", "c2", "ignored", "zz"], "model": "m",
                           "dimension": ["goal", "goal", "goal", "other"], "value": [1.0, 0.0, 0.5, 1.0],
                           "conversation_id": [None, None, "c1", None]})
    s, lab, tr, warns = conversation_tables(scores, labels, traffic, "goal", ["app"])
    got = s.set_index(["request_id", "metric"])["value"]
    assert got[("c1", "judge.q")] == pytest.approx(0.5) and got[("c2", "judge.q")] == 0.25
    assert got[("c1", "judge.transcript.goal")] == 1.0 and ("c2", "judge.transcript.goal") not in got
    # a turn's request_id, the conversation id, and an explicit conversation_id all name the conversation
    assert lab["request_id"].tolist() == ["c1", "c2", "c1"] and "conversation_id" not in lab.columns
    assert tr.set_index("request_id")["app"].to_dict() == {"c1": "x", "c2": "z"}  # the first turn's segment
    assert tr.set_index("request_id")["turns"].to_dict() == {"c1": 3, "c2": 1}
    assert warns == []
    with pytest.raises(InputError, match="traffic: no 'conversation_id' column, but dimension 'goal'"):
        conversation_tables(scores, labels, traffic.drop(columns="conversation_id"), "goal")


def _est(cols: list[np.ndarray]) -> EstimandDraws:
    d = np.stack(cols, axis=1)[:, None, :]  # (draw, candidate, group)
    # 100 requests, half in each group (as _Data's segments and the test's turn positions)
    return EstimandDraws(fp=d.mean(axis=2), pop=d.mean(axis=2), fp_seg=d, pop_seg=d,
                         n_seg=np.full((1, d.shape[2]), 100.0 / d.shape[2]))


class _Data:
    segment_names = ["app=x", "app=y"]
    seg_idx = np.repeat([0, 1], 50)


@pytest.mark.parametrize("gates", [True, False])
def test_a_regressing_turn_position_blocks_jointly_with_the_segments(gates):
    """Segments fine, turns 3+ clearly below the threshold: the position is in the one joint band (its adjusted
    probability beside the segments') and blocks, unless turn positions are reported only."""
    rng = np.random.default_rng(0)
    seg = _est([rng.normal(0.6, 0.02, 2000), rng.normal(0.6, 0.02, 2000)])
    pos = _est([rng.normal(0.62, 0.02, 2000), rng.normal(0.3, 0.02, 2000)])
    grouping = Grouping(["turn=1", "turn=2+"], np.tile([0, 1], 50), pos, gates)
    ones = np.ones(100, bool)
    gate = gate_segments(_Data(), seg, 0, ~ones, ones, 0.45, 0.5, 0.9, 0.9, 20, "population", grouping)
    assert set(gate.entries) == {"app=x", "app=y"} and set(gate.positions) == {"turn=1", "turn=2+"}
    assert gate.positions["turn=2+"]["gating"] is gates and gate.positions["turn=2+"]["n_scored"] == 50
    assert gate.blocking == (["turn=2+"] if gates else [])
    assert ("p_noninferior_joint" in gate.positions["turn=2+"]) is gates
    assert gate.where["turn=2+"] == (grouping, 1)
    if gates:  # the labels that would settle the block go to the blocking position
        from calibration.pipeline import _labels_needed

        labelled = np.zeros(100, bool)
        labelled[[0, 1, 2, 3]] = True  # two labels at turns 2+ (odd requests), disagreeing: not settled yet
        y = np.where(labelled, np.array([0.5, 1.0, 0.5, 0.0] + [0.0] * 96), np.nan)
        need, where = _labels_needed(_Data(), seg.pop[:, 0], seg, 0, labelled, ones, 0.45, 0.9, "more_labels",
                                     True, gate, y, 100, 20)
        assert where == "turn=2+" and need > 0


@pytest.fixture(scope="module")
def conv_decision():
    """One decision over a world with per-turn labels (quality) and per-conversation labels (goal)."""
    from calibration.pipeline import decide

    w = simulate_conversation_labels(11, n_conversations=30, max_turns=5, n_label_conversations=12,
                                     candidates=("cand-a",), cand_effect=(0.4,), judge_bias=(0.6,), turn_labels=True)
    cfg = DecisionConfig.model_validate({"dimensions": [{"name": "quality", "kind": "pairwise"},
                                                        {"name": "goal", "kind": "pairwise",
                                                         "label_unit": "conversation", "gating": False}],
                                         "draws": 60, "tune": 60})
    return w, decide(w.scores, w.labels, w.traffic, cfg, "incumbent")


def test_decision_has_turn_positions_and_states_its_estimand(conv_decision):
    w, d = conv_decision
    dims = d.candidates["cand-a"].dimensions
    q, g = dims["quality"], dims["goal"]
    assert q.estimand == "turn" and g.estimand == "conversation"
    assert list(q.turn_positions) == ["turn=1", "turn=2", "turn=3+"] and g.turn_positions is None
    n_turn = w.traffic.turn.clip(upper=3).value_counts().sort_index().tolist()
    assert [e["n_scored"] for e in q.turn_positions.values()] == n_turn and q.n_scored == len(w.traffic)
    assert all("p_noninferior_joint" in e for e in q.turn_positions.values())
    assert g.n_scored == 30 and g.labels_used == 12  # conversations, not turns
    assert "cluster_robust" in q.human_only  # the traffic's conversation_id switches on the clustered estimands
    assert {r.dimension: r.estimand for r in d.results} == {"quality": "turn", "goal": "conversation"}
    assert "judge.transcript.goal" in g.calibration  # the last turn's transcript judge feeds the conversation
    doc = d.as_dict()
    assert doc["candidates"]["cand-a"]["dimensions"]["goal"]["estimand"] == "conversation"


def test_report_shows_turn_positions_and_the_conversation_estimand(conv_decision):
    from calibration.report import render_report

    _, d = conv_decision
    md, html = render_report(d)
    assert "## Results per turn position" in md and 'id="turn-positions-table"' in html
    part = md.split("## Results per turn position")[1].split("\n## ")[0]
    rows = [line for line in part.splitlines() if line.startswith("| cand-a | quality |")]
    assert [r.split(" | ")[2] for r in rows] == ["1", "2", "3+"]
    assert "Labelled per conversation: goal" in md


@pytest.mark.slow  # one vectorised NUTS fit of 40 worlds: 25 s alone, 90 s on 2 shared cores
def test_per_conversation_interval_covers():
    """Seeded worlds whose labels judge whole conversations (20 of 60 labelled per candidate; turn judges and a
    transcript judge on the last turn as covariates), fitted together in one vectorised NUTS model: the 90%
    intervals of the mean over conversations cover the scored conversations' and the traffic's truth within the
    honest band of 160 intervals, and the estimate is unbiased."""
    from calibration.data import prepare
    from calibration.estimands import aggregate, thin_params
    from calibration.models import fit

    reps = 40
    tabs = [simulate_conversation_labels(900 + r) for r in range(reps)]
    blocks = []
    for t in tabs:
        s, lab, tr, _ = conversation_tables(t.scores, t.labels, t.traffic, "goal")
        blocks.append(prepare(s, lab, "incumbent", None, "goal", "pairwise", tr))
    assert blocks[0].n_req == 60 and (blocks[0].lab_model == 0).sum() == 20  # conversations, not turns
    _, par = fit(blocks, draws=150, tune=150, seed=1)
    rng = np.random.default_rng(0)
    covered, err = [], []
    for b, (t, d) in enumerate(zip(tabs, blocks)):
        est = aggregate(d, thin_params(par, b, 1000, rng), rng)
        for ci, c in enumerate(d.candidates):
            for draws, truth in ((est.fp, t.truth[c]), (est.pop, t.truth_seg["population"][c])):
                lo, hi = np.quantile(draws[:, ci], [0.05, 0.95])
                covered.append(lo <= truth <= hi)
            err.append(est.fp[:, ci].mean() - t.truth[c])
    lo, hi = honest_band(len(covered))
    print(f"per-conversation coverage {np.mean(covered):.3f} over {len(covered)} intervals, band [{lo:.3f}, {hi:.3f}]")
    assert lo <= np.mean(covered) <= hi, np.mean(covered)
    assert abs(np.mean(err)) < 0.03, np.mean(err)
