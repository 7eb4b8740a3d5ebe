"""The nightly job's drift path: 29 recorded nights in the history table, then a real night whose incumbent has
changed (its answers are a tenth as long): the alert lands in decision.json and `gate_on_drift` exits 3."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from jobs.nightly import history_path, read_history, write_history
from jobs.store import RunStore
from tests.jobs.test_nightly import _config, _night

DAY = "2026-11-30"
pytestmark = pytest.mark.slow  # one real night through Ray and PyMC: ~30 s


def _past_nights(store: RunStore, n: int = 29) -> None:
    rng = np.random.default_rng(0)
    for i, day in enumerate(pd.date_range("2026-11-01", periods=n)):
        day = str(day.date())
        inc = {"check.length_chars": 30 + rng.normal(0, 1), "check.empty": 0.0}
        rows = pd.DataFrame([{"date": day, "run_id": f"nightly-{day}", "incumbent": "old", "candidate": c,
                              "dimension": "quality", "kind": "pairwise", "estimate": e + rng.normal(0, 0.03),
                              "interval_low": 0.0, "interval_high": 1.0, "p_noninferior": 0.9, "p_superior": 0.5,
                              "verdict": "more_labels", "candidate_verdict": "more_labels", "labels_used": 30,
                              "n_scored": 120, "candidate_metric_means": "{}",
                              "incumbent_metric_means": json.dumps(inc)} for c, e in (("cand-a", 0.7), ("cand-b", 0.4))])
        write_history(store, day, rows)


def test_drift_alert_reaches_the_decision_and_gates_the_night(tmp_path, capsys):
    import ray

    from jobs.cli import main

    _night(tmp_path, DAY, 120, 5)
    cfg = _config(tmp_path, DAY)
    store = RunStore(cfg.store, f"nightly-{DAY}")
    _past_nights(store)
    path = tmp_path / f"nightly-{DAY}.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["nightly"] = {"gate_on_drift": True, "drift": {"metrics": ["check.length_chars", "check.empty"]}}
    path.write_text(yaml.safe_dump(raw))
    try:
        code = main(["nightly", "--config", str(path), "--date", DAY, "--no-progress"])
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert code == 3, out
    assert "drift alert (incumbent_drift): incumbent check.length_chars" in out
    decision = json.loads(store.read_document("decision", "decision.json"))
    drift = decision["drift"]
    assert drift["nights"] == 30 and drift["monitoring"] and drift["gating_alerts"] >= 1
    kinds = {(a["kind"], a.get("metric")) for a in drift["alerts"]}
    assert ("incumbent_drift", "check.length_chars") in kinds and ("incumbent_drift", "check.empty") not in kinds
    page = store.read_document("decision", "drift.html").decode()
    assert page.count("<svg") >= 2 and "check.length_chars" in page
    assert len(read_history(store)) == 60 and store.fs.exists(history_path(store, DAY))
    # the night's own report shows the history: the charts in report.html, the night tables in report.md
    report = store.read_document("decision", "report.html").decode()
    charts = report.split('id="history-charts"')[1].split("</figure>")[0]
    assert charts.count("<svg") == 4 and "incumbent check.length_chars" in charts  # 2 metrics, 2 candidates
    md = store.read_document("decision", "report.md").decode().split("## Nightly history and drift")[1]
    assert f"| {DAY} |" in md.split("### incumbent check.length_chars, night by night")[1].split("###")[0]
    assert any(line.startswith(f"| {DAY} |") and "ALERT" in line for line in md.splitlines())
