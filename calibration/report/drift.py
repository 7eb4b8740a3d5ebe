"""The nightly drift views: the page beside a night's report (drift.html / drift.md: the alerts and the control
charts) and the history section of the night's main report (:func:`history_section`: the same charts, and for
report.md a table of every charted series night by night).

Input: the ``drift`` section of a nightly decision.json and the chart view of ``calibration.drift.drift_view``
(docs/drift.md). Charts are inline SVG (``plots.to_svg``), so the page holds no URL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots import label, to_svg
from .render import Section, esc, fnum
from .templates import CSS

MAX_CHARTS = 24  # alerting series first; a page of every metric of every candidate would bury them
MD_NIGHTS = 30  # nights per series in report.md's history tables (the newest)


def chart_svg(rows: pd.DataFrame, baseline: int, key: str) -> str:
    """One series' chart: nightly values, the EWMA, the limits (band) and centre, alert nights in red."""
    rows = rows.reset_index(drop=True)
    x = np.arange(len(rows))
    fig = Figure(figsize=(6.4, 2.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.fill_between(x, rows["lower"].to_numpy(float), rows["upper"].to_numpy(float), color="#e3f2fd", label="limits")
    ax.plot(x, rows["center"].to_numpy(float), color="#555555", linewidth=0.8)
    ax.plot(x, rows["value"].to_numpy(float), "o", color="#9e9e9e", markersize=2.5, label="night")
    ax.plot(x, rows["ewma"].to_numpy(float), color="#1565c0", linewidth=1.4, label="EWMA")
    alert = rows["alert"].to_numpy(bool)
    if alert.any():
        ax.plot(x[alert], rows["ewma"].to_numpy(float)[alert], "o", color="#c62828", markersize=5, label="alert")
    if 0 < baseline < len(rows):
        ax.axvline(baseline - 0.5, color="#999999", linestyle=":", linewidth=1)
    ticks = x[:: max(1, len(x) // 6)]
    ax.set_xticks(ticks, [label(str(rows["date"].iat[i]), 12) for i in ticks], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=6, loc="best", frameon=False, ncol=4)
    fig.tight_layout()
    return to_svg(fig, key)


def _title(r) -> str:
    return f"incumbent {r.name}" if _is_incumbent(r.candidate) else f"{r.candidate} {r.name}"


def _is_incumbent(candidate) -> bool:
    return candidate is None or pd.isna(candidate)


def ordered_series(view: pd.DataFrame, day: str) -> list:
    """The view's series (series, candidate, name), tonight's alerting ones first, then by kind and name."""
    keys = view[["series", "candidate", "name"]].drop_duplicates()
    tonight = view[view["date"] == day].set_index(["series", "candidate", "name"])["alert"]
    return sorted(keys.itertuples(index=False),
                  key=lambda r: (not bool(tonight.get((r.series, r.candidate, r.name), False)), r.series,
                                 str(r.candidate), r.name))


def series_rows(view: pd.DataFrame, r) -> pd.DataFrame:
    """One series' nights, oldest first."""
    mask = (view["series"] == r.series) & (view["name"] == r.name) & (
        view["candidate"].isna() if _is_incumbent(r.candidate) else view["candidate"] == r.candidate)
    return view[mask].sort_values("date")


def history_section(extras) -> Section | None:
    """The main report's nightly history (None unless ``extras["drift"]`` holds a night's drift view): per series
    (the incumbent's level per metric, each candidate's estimate per dimension) its control chart with the limits
    and the alert nights in red, a summary table, and its nights as a table (report.md cannot hold a plot)."""
    drift = extras.get("drift") if hasattr(extras, "get") else None
    if not isinstance(drift, dict) or not drift.get("view"):
        return None
    section, day = drift.get("section") or {}, str(drift.get("day") or "")
    view = pd.DataFrame(drift["view"])
    base = int(section.get("baseline_nights") or 0)
    s = Section("history", "Nightly history and drift")
    alerts = section.get("alerts") or []
    s.para(f"{section.get('nights', view['date'].nunique())} night(s) in the history, tonight {day}; the first "
           f"{base} set each series' centre and limits (EWMA lam {section.get('lam')}, limits at "
           f"{section.get('width')} EWMA standard deviations; docs/drift.md). Tonight: "
           + (f"{len(alerts)} alert(s): " + "; ".join(str(a.get('detail', a.get('kind'))) for a in alerts)
              if alerts else "no alert") + ".")
    order = ordered_series(view, day)
    charted = order[:MAX_CHARTS]
    summary, svgs = [], []
    for i, r in enumerate(charted):
        rows = series_rows(view, r)
        last = rows.iloc[-1]
        alert_nights = rows.loc[rows["alert"].astype(bool), "date"].astype(str).tolist()
        summary.append([_title(r), str(len(rows)), fnum(last["center"], 4),
                        f"[{fnum(last['lower'], 4)}, {fnum(last['upper'], 4)}]", fnum(last["value"], 4),
                        fnum(last["ewma"], 4), ", ".join(alert_nights) or "none"])
        svgs.append((_title(r), chart_svg(rows, base, f"hist{i}")))
    s.figure("history-charts", svgs, "Nightly level per series, tonight's alerting series first: nightly value "
             "(grey), EWMA (blue), control limits (band) around the centre, alert nights (red); the dotted line "
             "ends the baseline nights.")
    s.table("history-summary", ["series", "nights", "centre", "limits (latest)", "latest value", "latest EWMA",
                                "alert nights"], summary)
    if len(order) > MAX_CHARTS:
        s.para(f"{len(order) - MAX_CHARTS} more series in the history's _drift table.")
    for i, r in enumerate(charted):
        rows = series_rows(view, r).tail(MD_NIGHTS)
        s.sub(f"{_title(r)}, night by night" + (f" (the last {MD_NIGHTS})" if len(rows) == MD_NIGHTS else ""))
        s.table(f"history-nights-{i}", ["night", "value", "EWMA", "lower limit", "upper limit", "alert"],
                [[str(x.date), fnum(x.value, 4), fnum(x.ewma, 4), fnum(x.lower, 4), fnum(x.upper, 4),
                  ("ALERT", "alert") if bool(x.alert) else "—"] for x in rows.itertuples(index=False)],
                row_cls=["alert-night" if bool(a) else "" for a in rows["alert"]])
    return s


def render_drift(section: dict, view: pd.DataFrame, day: str) -> tuple[str, str]:
    """(markdown, html) of the drift page for one night."""
    s = Section("drift", f"Drift across nights: {day}")
    nights, base = section.get("nights", 0), section.get("baseline_nights", 0)
    state = ("monitoring" if section.get("monitoring") else f"baseline: the first {base} nights set the limits; "
             "no alert before then")
    s.para(f"{nights} night(s) in the history; {state}. EWMA lam {section.get('lam')}, limits at "
           f"{section.get('width')} EWMA standard deviations (docs/drift.md).")
    alerts = section.get("alerts", [])
    if alerts:
        s.table("drift-alerts", ["kind", "candidate", "metric or dimension", "detail"],
                [[a["kind"], a.get("candidate") or "incumbent", a.get("metric") or a.get("dimension") or "overall",
                  a["detail"]] for a in alerts])
        if section.get("gate") and section.get("gating_alerts"):
            s.para(f"{section['gating_alerts']} gating alert(s): the nightly job exits 3 (nightly.gate_on_drift).")
    else:
        s.para("No alert tonight.")
    if len(view):
        order = ordered_series(view, day)
        svgs = []
        for i, r in enumerate(order[:MAX_CHARTS]):
            svgs.append((_title(r), chart_svg(series_rows(view, r), base, f"drift{i}")))
        s.figure("drift-charts", svgs, "Control charts, tonight's alerting series first: nightly value (grey), "
                 "EWMA (blue), limits (band), alerts (red); the dotted line ends the baseline.")
        if len(order) > MAX_CHARTS:
            s.para(f"{len(order) - MAX_CHARTS} more series in the history's _drift table.")
    md, body = s.render()
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc('Baton drift ' + day)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")
    return md + "\n", page
