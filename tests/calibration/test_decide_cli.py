"""`python -m jobs.decide` glue: bad inputs (exit 2, message names file/row/column), a real PandaLM slice end to end,
and a one-segment regression while the total improves (real NUTS fits)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.support.simulate import simulate_pairwise
from calibration.config import DecisionConfig
from calibration.pipeline import decide

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"

SCORES = DATA / "pandalm_llama_scores.csv"
LABELS = DATA / "pandalm_llama_labels.csv"


def _run(*args, timeout=600):
    cmd = [sys.executable, "-m", "jobs.decide", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


BASE = ["--incumbent", "llama-7b", "--candidate", "opt-7b", "--candidate", "pythia-6.9b", "--dimension", "quality",
        "--kind", "pairwise", "--margin", "0.05", "--confidence", "0.9"]


def test_bad_inputs_exit_2_with_location(tmp_path):
    bad = pd.read_csv(SCORES)
    bad["value"] = bad["value"].astype(object)
    bad.loc[7, "value"] = "n/a-ish"
    bad_path = tmp_path / "scores_bad.csv"
    bad.to_csv(bad_path, index=False)
    r = _run("--scores", bad_path, "--labels", LABELS, *BASE, "--out", tmp_path / "o1")
    assert r.returncode == 2
    assert str(bad_path) in r.stderr and "row 7" in r.stderr and "'value'" in r.stderr
    nocol = tmp_path / "labels_nocol.parquet"
    pd.read_csv(LABELS).drop(columns="dimension").to_parquet(nocol)
    r = _run("--scores", SCORES, "--labels", nocol, *BASE, "--out", tmp_path / "o2")
    assert r.returncode == 2 and str(nocol) in r.stderr and "dimension" in r.stderr
    r = _run("--scores", tmp_path / "missing.csv", "--labels", LABELS, *BASE, "--out", tmp_path / "o3")
    assert r.returncode == 2 and "missing.csv" in r.stderr and "does not exist" in r.stderr
    lab = pd.read_csv(LABELS)
    lab.loc[4, "value"] = 0.7
    badlab = tmp_path / "labels_badval.csv"
    lab.to_csv(badlab, index=False)
    # an off-scale label is a bad row, not bad input: quarantined (file, row, field, reason), decided on the rest
    r = _run("--scores", SCORES, "--labels", badlab, *BASE, "--out", tmp_path / "o4", "--draws", "50", "--tune", "50")
    assert r.returncode == 0 and "row 4, field 'value'" in r.stderr and "0.7" in r.stderr
    assert (tmp_path / "o4" / "decision.json").exists()
    assert pd.read_csv(tmp_path / "o4" / "quarantine.csv")["row"].tolist() == [4]


def test_end_to_end_pandalm_slice(tmp_path):
    # parquet scores + csv labels with a label for an unscored request (quarantined with a warning)
    pq = tmp_path / "scores.parquet"
    pd.read_csv(SCORES).to_parquet(pq)
    lab = pd.read_csv(LABELS)
    extra = lab.iloc[[0]].assign(request_id="not-scored")
    labp = tmp_path / "labels.csv"
    pd.concat([lab, extra]).to_csv(labp, index=False)
    out = tmp_path / "out"
    r = _run("--scores", pq, "--labels", labp, *BASE, "--out", out, "--seed", "3", "--fail-unless-migrate")
    assert r.returncode in (0, 3), r.stderr[-2000:]
    doc = json.loads((out / "decision.json").read_text())
    assert doc["schema_version"] == 1 and doc["incumbent"] == "llama-7b"
    assert "not-scored" in r.stderr and any("absent from scores" in w for w in doc["warnings"])
    assert set(doc["verdicts"]) == {"opt-7b", "pythia-6.9b"}
    assert (r.returncode == 3) == any(v != "migrate" for v in doc["verdicts"].values())
    for cand in ("opt-7b", "pythia-6.9b"):
        e = doc["candidates"][cand]["dimensions"]["quality"]
        lo, hi = e["interval"]
        assert lo <= e["estimate"] <= hi and 0 <= lo and hi <= 1
        assert e["verdict"] in ("migrate", "more_labels", "reject")
        assert 0 <= e["p_superior"] <= e["p_noninferior"] <= 1
        assert 0 < e["labels_used"] <= 60
        for base in ("human_only", "ppi", "judge_only"):
            assert len(e[base]["interval"]) == 2
        assert 0 < len(e["posterior_draws"]) <= 1000
        assert set(e["diagnostics"]) >= {"r_hat_max", "ess_bulk_min", "divergences", "converged", "ppc"}
        if not e["diagnostics"]["converged"]:
            assert e["verdict"] != "migrate"
        # PandaLM: LLaMA-7B beats both opponents, so each candidate's win rate is credibly below 0.5
        assert hi < 0.5
    assert {(row["candidate"], row["dimension"]) for row in doc["results"]} == {
        ("opt-7b", "quality"), ("pythia-6.9b", "quality")}


def test_segment_regression_blocks_migrate():
    # candidate better overall, much worse in one region; plenty of labels so the regression is credible
    sim = simulate_pairwise(7, n_requests=900, n_labels=300, candidates=("cand-a",), cand_effect=(1.0,),
                            judge_bias=(0.0,), seg_effects=(0.6, 0.6, -2.4), segments=("eu", "us", "apac"))
    decision = DecisionConfig(dimensions=[{"name": "quality", "kind": "pairwise"}], margin=0.05, confidence=0.9,
                              draws=400, tune=400)
    doc = decide(sim.scores, sim.labels, sim.traffic, decision, "incumbent", segments=["region"]).as_dict()
    e = doc["candidates"]["cand-a"]["dimensions"]["quality"]
    assert sim.truth["cand-a"] > 0.5 and sim.truth_seg["cand-a"]["region=apac"] < 0.3
    assert e["p_noninferior"] >= 0.9
    assert e["segments"]["region=apac"]["p_noninferior"] <= 0.1
    assert e["verdict"] == "more_labels" and doc["verdicts"]["cand-a"] != "migrate"
    assert e["labels_needed_segment"] == "region=apac"
    assert any("region=apac" in r for r in doc["candidates"]["cand-a"]["reasons"])


def test_labels_with_a_design(tmp_path):
    """`baton decide` on labels that carry inclusion_prob: a bad probability is exit 2 naming file, row and
    column; good ones weight the model's likelihood and the baselines (the labels alone cannot give the
    unlabelled units' probabilities, so the model cannot condition on them)."""
    from tests.support.simulate import simulate_design

    t = simulate_design(7, "stratified", n_requests=300, n_labels=40)
    scores, labels = tmp_path / "scores.parquet", tmp_path / "labels.csv"
    t.scores.to_parquet(scores)
    bad = t.labels.copy()
    bad.loc[5, "inclusion_prob"] = 1.7
    bad.to_csv(tmp_path / "bad.csv", index=False)
    args = ["--incumbent", "incumbent", "--candidate", "cand-a", "--dimension", "quality", "--kind", "pairwise",
            "--margin", "0.05", "--confidence", "0.9", "--draws", "200", "--tune", "200"]
    r = _run("--scores", scores, "--labels", tmp_path / "bad.csv", *args, "--out", tmp_path / "o0")
    assert r.returncode == 2, r.stderr
    assert "bad.csv" in r.stderr and "row 5" in r.stderr and "'inclusion_prob'" in r.stderr
    t.labels.to_csv(labels, index=False)
    r = _run("--scores", scores, "--labels", labels, *args, "--out", tmp_path / "o1")
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "o1" / "decision.json").read_text())["candidates"]["cand-a"]["dimensions"]["quality"]
    assert e["design"]["weighted"] and e["design"]["adjustment"] == "weights"
    assert e["design"]["labels_n_eff"] < 40 and e["human_only"]["method"] == "hajek"
    plain = t.labels["value"].mean()
    hajek = (t.labels["value"] / t.labels["inclusion_prob"]).sum() / (1 / t.labels["inclusion_prob"]).sum()
    assert abs(e["human_only"]["estimate"] - hajek) < 1e-3 and abs(hajek - plain) > 0.01


def test_margin_bound_depends_on_the_kind(tmp_path):
    """`--margin 0.6` on a pairwise dimension is refused before any table is read (exit 2, naming the flag and the
    config key); on a binary dimension the same margin is inside the scale (a difference of rates)."""
    r = _run("--scores", SCORES, "--labels", LABELS, *[a if a != "0.05" else "0.6" for a in BASE],
             "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "--margin (decision.margin)" in r.stderr and "below 0.5 for pairwise dimension 'quality'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    binary = DecisionConfig(dimensions=[{"name": "ok", "kind": "binary"}], margin=0.6)
    assert binary.margin == 0.6


def test_metrics_restrict_the_covariates():
    """`dimensions[].metrics` (`--metric`): only the named metrics enter the calibration; an unknown one is bad
    input naming it."""
    import pytest

    from calibration.data import InputError, prepare

    sim = simulate_pairwise(3, n_requests=60, n_labels=20, candidates=("cand-a",), cand_effect=(0.3,), judge_bias=(0.8,))
    metric_names = sorted(sim.scores["metric"].unique())
    assert len(metric_names) >= 2
    keep = metric_names[:1]
    data = prepare(sim.scores, sim.labels, "incumbent", None, "quality", "pairwise", metrics=keep)
    assert data.raw_metric_names == keep
    with pytest.raises(InputError, match="no-such-metric"):
        prepare(sim.scores, sim.labels, "incumbent", None, "quality", "pairwise", metrics=["no-such-metric"])


def test_levels_flag_declares_the_scale_and_rejects_labels_outside(tmp_path, capsys):
    import argparse

    import pytest

    from jobs.decide import add_arguments, main

    rid = [f"q{i}" for i in range(8)]
    scores = pd.DataFrame({"request_id": rid * 2, "model": ["inc"] * 8 + ["cand"] * 8, "metric": "judge.abs.style",
                           "value": [float(i % 4) for i in range(16)]})
    labels = pd.DataFrame({"request_id": rid[:4] * 2, "model": ["inc"] * 4 + ["cand"] * 4, "dimension": "style",
                           "value": [2, 3, 4, 3, 3, 6, 4, 2]})
    sp, lp = tmp_path / "scores.csv", tmp_path / "labels.csv"
    scores.to_csv(sp, index=False)
    labels.to_csv(lp, index=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--scores", str(sp), "--labels", str(lp), "--incumbent", "inc", "--candidate", "cand", "--dimension",
            "style", "--kind", "ordinal", "--margin", "0.1", "--confidence", "0.9", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        parser.parse_args([*base, "--levels", "low,high"])
    assert e.value.code == 2
    assert not (tmp_path / "o" / "decision.json").exists()
    # a label outside the declared scale is quarantined naming file, row and field; the decision uses the rest
    assert main(parser.parse_args([*base, "--levels", "1,2,3,4,5", "--draws", "50", "--tune", "50"])) == 0
    err = capsys.readouterr().err
    quarantine = pd.read_csv(tmp_path / "o" / "quarantine.csv")
    assert quarantine["row"].tolist() == [5] and quarantine["field"].tolist() == ["value"]
    assert "6" in quarantine["reason"].iat[0] and str(lp) in err
    assert (tmp_path / "o" / "decision.json").exists()


def test_config_levels_reach_the_decision_config():
    from jobs.config import parse_config

    raw = {"run_id": "r1", "traffic": {"path": "traffic.jsonl"}, "incumbent": {"name": "old"},
           "candidates": [{"name": "new-rec", "kind": "recorded", "path": "rec.jsonl"}],
           "decision": {"dimensions": [{"name": "style", "kind": "ordinal", "levels": [1, 2, 3, 4, 5]},
                                       {"name": "quality", "kind": "pairwise"}]}}
    decision = parse_config(raw).decision
    assert decision.dimensions[0].levels == [1.0, 2.0, 3.0, 4.0, 5.0] and decision.dimensions[1].levels is None


def test_baton_decide_names_the_flags_the_statistics_layer_does_not(tmp_path, capsys):
    """calibration.data's errors name no flag (it serves the run config too); `baton decide` adds the flags to fix,
    exit 2, before any sampling."""
    import argparse

    from jobs.decide import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--scores", str(SCORES), "--labels", str(LABELS), "--dimension", "quality", "--kind", "pairwise",
            "--margin", "0.05", "--confidence", "0.9", "--out", str(tmp_path / "o")]
    assert main(parser.parse_args([*base, "--incumbent", "llama-7b", "--candidate", "llama-7b"])) == 2
    err = capsys.readouterr().err
    assert "--candidate, --incumbent: candidate 'llama-7b' is also the incumbent" in err
    assert main(parser.parse_args([*base, "--incumbent", "llama-7b", "--segment", "app"])) == 2
    assert "--segment needs --traffic: segment columns ['app'] given without a traffic table" in capsys.readouterr().err


def test_label_unit_conversation_needs_the_conversation_column(tmp_path, capsys):
    """`--label-unit conversation` without a traffic table that has conversation_id: exit 2 naming the flag, the
    file and the column, before any sampling."""
    import argparse

    from jobs.decide import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--scores", str(SCORES), "--labels", str(LABELS), "--dimension", "quality", "--kind", "pairwise",
            "--margin", "0.05", "--confidence", "0.9", "--out", str(tmp_path / "o"), "--incumbent", "llama-7b",
            "--label-unit", "conversation"]
    assert main(parser.parse_args(base)) == 2
    assert "--label-unit conversation needs --traffic: traffic: no 'conversation_id' column, but dimension " \
           "'quality' is labelled per conversation" in capsys.readouterr().err
    traffic = tmp_path / "traffic.csv"
    pd.read_csv(SCORES, dtype={"request_id": str})[["request_id"]].drop_duplicates().to_csv(traffic, index=False)
    assert main(parser.parse_args([*base, "--traffic", str(traffic)])) == 2
    assert f"traffic file {traffic}: no 'conversation_id' column" in capsys.readouterr().err
