"""Drift across nights: the EWMA chart flags a planted shift in the incumbent within 3 nights and is silent before."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibration.drift import DriftConfig, drift_view, ewma_chart, night_alerts, verdict_changes

NIGHTS, START = 40, 25  # 40 nights; the incumbent drifts from night 25 on


def _history(seed: int, shift_sd: float = 4.0) -> pd.DataFrame:
    """Synthetic nights: two candidates, one dimension; the incumbent's judge mean drifts down by shift_sd SDs."""
    rng = np.random.default_rng(seed)
    days = [str(d.date()) for d in pd.date_range("2026-10-01", periods=NIGHTS)]
    rows = []
    for i, day in enumerate(days):
        drift = -shift_sd * 0.02 if i >= START else 0.0
        inc = {"judge.abs.correctness": 4.0 + 5 * drift + rng.normal(0, 0.1),
               "check.length_chars": 300 + rng.normal(0, 5.0)}
        for cand, base in (("cand-a", 0.55), ("cand-b", 0.45)):
            est = base + rng.normal(0, 0.02) - drift  # candidates look better as the incumbent gets worse
            rows.append({"date": day, "candidate": cand, "dimension": "quality", "estimate": est,
                         "verdict": "migrate" if cand == "cand-a" else "reject",
                         "candidate_verdict": "migrate" if cand == "cand-a" else "reject",
                         "incumbent_metric_means": json.dumps(inc)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_planted_incumbent_drift_is_flagged_within_3_nights_and_not_before(seed):
    hist = _history(seed)
    view = drift_view(hist, DriftConfig())  # the defaults: 14 baseline nights
    days = sorted(hist["date"].unique())
    alerts_by_night = {d: night_alerts(view, verdict_changes(hist), d) for d in days}
    assert not any(alerts_by_night[d] for d in days[:START]), {d: a for d, a in alerts_by_night.items() if a}
    first = next(i for i, d in enumerate(days) if any(a["kind"] == "incumbent_drift" and a["metric"] == "judge.abs.correctness"
                                                    for a in alerts_by_night[d]))
    assert START <= first <= START + 2


def test_false_alarm_rate_of_the_chart_is_small():
    """In control, 15 phase II nights: about 6% of series alarm at least once with the defaults (docstring of
    calibration.drift); a 4-sigma shift is flagged within 3 nights in nearly all series."""
    rng = np.random.default_rng(7)
    fired, found = 0, 0
    for _ in range(300):
        x = rng.normal(0, 1, 14 + 15 + 3)
        x[29:] -= 4
        alert = ewma_chart(x).alert
        fired += alert[:29].any()
        found += alert[29:].any()
    assert fired / 300 < 0.12 and found / 300 > 0.95


def test_chart_limits_follow_lucas_saccucci():
    x = np.r_[np.zeros(5), np.ones(5), np.zeros(3)]
    c = ewma_chart(x, baseline=10, lam=0.2, width=3.0)
    sigma = np.std(x[:10], ddof=1)
    assert c.center == pytest.approx(0.5) and c.sigma == pytest.approx(sigma)
    assert c.upper[0] - c.center == pytest.approx(3 * sigma * np.sqrt(0.2 / 1.8 * (1 - 0.8 ** 2)))
    assert c.upper[-1] - c.center == pytest.approx(3 * sigma * np.sqrt(0.2 / 1.8 * (1 - 0.8 ** 26)))
    assert not c.alert[:10].any()  # phase I never alerts
    short = ewma_chart(x[:5], baseline=10)
    assert np.isnan(short.upper).all() and not short.alert.any()


def test_verdict_changes_are_listed_per_candidate_and_dimension():
    hist = _history(0)
    hist.loc[(hist["candidate"] == "cand-b") & (hist["date"] == "2026-10-05"), ["verdict", "candidate_verdict"]] = "migrate"
    ch = verdict_changes(hist)
    assert set(ch["date"]) == {"2026-10-05", "2026-10-06"}  # to migrate, and back
    alerts = night_alerts(drift_view(hist), ch, "2026-10-05")
    assert {(a["kind"], a["dimension"]) for a in alerts} == {("verdict_change", None), ("verdict_change", "quality")}


def drift_night(gate: bool):
    """(drift section, whole drift view, day) of night START + 2 of :func:`_history` (seed 0), as the nightly job
    builds them; ``gate``: the config gates on drift (every alert then gates)."""
    hist = _history(0)
    view = drift_view(hist)
    day = sorted(hist["date"].unique())[START + 2]
    alerts = night_alerts(view, verdict_changes(hist), day)
    section = {"nights": NIGHTS, "baseline_nights": 14, "lam": 0.3, "width": 3.5, "monitoring": True, "gate": gate,
               "gating_alerts": len(alerts) if gate else 0, "alerts": alerts}
    return section, view, day


def test_drift_page_shows_the_alerts_and_the_charts():
    from calibration.report.drift import render_drift

    section, view, day = drift_night(gate=True)
    md, page = render_drift(section, view, day)
    assert "incumbent_drift" in md and "exits 3" in md
    assert page.count("<svg") == view[["series", "candidate", "name"]].drop_duplicates().shape[0]
    assert "http" not in page.split("<style>")[0]
