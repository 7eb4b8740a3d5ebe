"""The nightly job's drift view: charts over the history table, the night's alerts added to its decision.

Statistics in ``calibration.drift`` (docs/drift.md); here only the IO: read the history, compute, write the view
next to the history (``<store root>/history/_drift/date=YYYY-MM-DD.parquet``) and the alerts into the night's
decision.json (field ``drift``, docs/decision-schema.md), with the charts on a page of their own beside the night's
report (``decision/drift.html`` and ``drift.md``) and, through :func:`report_drift`, in the night's report itself.
"""

from __future__ import annotations

import io
import json

from calibration.drift import DriftConfig, drift_view, night_alerts, verdict_changes
from calibration.report.drift import render_drift
from calibration.schema import Decision, Verdict
from jobs.store import RunStore

# Alerts that gate a night when `nightly.gate_on_drift` is set: the incumbent or an estimate left its limits, or a
# candidate lost a migrate verdict. A verdict that improves is reported, never gated on.
GATING_KINDS = ("incumbent_drift", "estimate_drift")


def gating(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["kind"] in GATING_KINDS
            or a["kind"] == "verdict_change" and a.get("previous") == Verdict.MIGRATE]


def report_drift(section: dict, view, day: str) -> dict:
    """The report's ``extras["drift"]`` (calibration.report.drift.history_section) from the night's drift."""
    return {"day": day, "section": section, "view": view.to_dict("records")}


def attach_drift(history, decision: Decision, day: str, night_store: RunStore, config: DriftConfig,
                 gate: bool):
    """Compute the night's drift section, put it in the decision (and its stored decision.json); return it and
    the chart view (calibration.drift.drift_view)."""
    view = drift_view(history, config)
    alerts = night_alerts(view, verdict_changes(history), day)
    nights = int(history["date"].nunique()) if len(history) else 0
    section = {"nights": nights, "baseline_nights": config.baseline_nights, "lam": config.lam,
               "width": config.width, "monitoring": nights > config.baseline_nights, "gate": gate,
               "alerts": alerts, "gating_alerts": len(gating(alerts))}
    decision.drift = section
    night_store.write_document("decision", "decision.json", json.dumps(decision.as_dict(), indent=2, default=float))
    md, page = render_drift(section, view, day)
    night_store.write_document("decision", "drift.md", md)
    night_store.write_document("decision", "drift.html", page)
    buf = io.BytesIO()
    view.to_parquet(buf, index=False)
    night_store.write_bytes("/".join([night_store.root_path("history"), "_drift", f"date={day}.parquet"]), buf.getvalue())
    return section, view
