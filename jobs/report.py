"""Report stage: render decision.json (and the run's manifest figures) into report.html and report.md."""

from __future__ import annotations

import logging

from jobs.config import RunConfig
from jobs.store import RunStore

log = logging.getLogger(__name__)


def report_extras(cfg: RunConfig, store: RunStore, truth: dict | None = None) -> dict:
    """What the report shows beside the decision: run id, config summary, cost and throughput per stage."""
    manifest = store.manifest()
    stages = manifest.get("stages", {})
    extras: dict = {
        "run_id": cfg.run_id,
        "config_summary": {
            "incumbent": cfg.incumbent.name,
            "candidates": ", ".join(f"{c.name} ({c.kind})" for c in cfg.candidates),
            "traffic": cfg.traffic.path,
            "segments": ", ".join(cfg.traffic.segments) or "none",
            "margin": cfg.decision.margin,
            "confidence": cfg.decision.confidence,
        },
        "cost": {"stages": {name: stats for name, stats in stages.items()}},
    }
    replay = stages.get("replay", {})
    if isinstance(replay.get("candidates"), dict):
        extras["cost"]["candidates"] = replay["candidates"]
    if truth:
        extras["truth"] = truth
    return extras


def write_report(cfg: RunConfig, store: RunStore, decision: dict, truth: dict | None = None) -> dict:
    """Render and store report.html and report.md next to decision.json; returns their URIs."""
    from calibration.report import render_report

    md, html = render_report(decision, report_extras(cfg, store, truth))
    uris = {
        "report_md": store.write_document("decision", "report.md", md),
        "report_html": store.write_document("decision", "report.html", html),
    }
    store.update_manifest(reports=uris)
    return uris
