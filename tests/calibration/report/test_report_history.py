"""The main report of a nightly run shows the history: each series' control chart (inline SVG, alert nights in red)
and, for report.md, a summary and a night-by-night table with the alert nights marked."""

from __future__ import annotations

import copy

from calibration.report import render_report
from tests.calibration.test_drift import drift_night


def _drift_extras():
    section, view, day = drift_night(gate=False)
    view = view[view["date"] <= day]
    return {"day": day, "section": section, "view": view.to_dict("records")}, view, day


def test_nightly_report_has_the_history_charts_and_tables(decision, extras, parse_html):
    drift, view, day = _drift_extras()
    md, page = render_report(copy.deepcopy(decision), {**copy.deepcopy(extras), "drift": drift})
    dom = parse_html(page)
    sec = dom.by_id("sec-history")
    series = view[["series", "candidate", "name"]].drop_duplicates()
    fig = dom.by_id("history-charts")
    assert len(fig.find_all("svg")) == len(series) == 4  # 2 incumbent metrics, 2 candidates' estimates
    assert "#c62828" in page.split('id="history-charts"')[1].split("</figure>")[0]  # alert nights drawn in red
    assert sec.find_all(id="history-summary")
    # report.md: the summary names each series' alert nights; the night tables mark them
    part = md.split("## Nightly history and drift")[1]
    inc_row = next(line for line in part.splitlines() if line.startswith("| incumbent judge.abs.correctness |"))
    alert_nights = sorted(view[(view["name"] == "judge.abs.correctness") & view["alert"]]["date"])
    assert alert_nights and alert_nights[-1] == day and inc_row.rstrip(" |").endswith(", ".join(alert_nights))
    table = part.split("### incumbent judge.abs.correctness, night by night")[1].split("###")[0]
    assert [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if "ALERT" in line] == alert_nights
    assert "### incumbent check.length_chars, night by night" in part and "<svg" not in md
    # the charts lead with tonight's alerting series
    titles = [w.attrs["title"] for w in fig.find_all("div", class_="svg-wrap")]
    tonight = view[(view["date"] == day) & view["alert"]]
    alerting = {f"{c} {n}" if isinstance(c, str) else f"incumbent {n}" for c, n in zip(tonight.candidate, tonight.name)}
    assert "incumbent judge.abs.correctness" in alerting and set(titles[:len(alerting)]) == alerting


def test_no_history_section_outside_nightly_runs(rendered):
    md, page = rendered
    assert "Nightly history" not in md and "sec-history" not in page
