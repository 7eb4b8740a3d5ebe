"""Report stage: render decision.json (and the run's manifest figures) into report.html and report.md."""

from __future__ import annotations

import logging

import numpy as np

from jobs.config import RunConfig
from jobs.store import RunStore

log = logging.getLogger(__name__)


COST_KEYS = {"prompt_tokens": "tokens_in", "completion_tokens": "tokens_out", "requests": "requests",
             "errors": "errors", "wall_s": "wall_s", "est_cost": "est_cost_usd"}


def cost_rows(stages: dict) -> list[dict]:
    """Cost and throughput rows per stage (and per candidate for the replay) from the manifest's stage stats."""
    rows = []
    for name, stats in stages.items():
        per_model = {k: v for k, v in stats.items() if isinstance(v, dict) and "requests" in v}
        if per_model:
            for model, st in per_model.items():
                rows.append({"stage": name, "model": model, **{COST_KEYS[k]: st[k] for k in COST_KEYS if k in st}})
        row = {"stage": name, "model": "all"}
        if "wall_s" in stats:
            row["wall_s"] = stats["wall_s"]
        for key in ("rows", "requests"):
            if key in stats and not isinstance(stats[key], dict):
                row["requests"] = stats[key]
        rows.append(row)
    return rows


def judge_bias(store: RunStore, incumbent: str) -> dict:
    """Position bias of every pairwise judge asked in both orders, and length bias of every pairwise verdict.

    Position: P(the answer shown first wins) in each order; order ab shows the candidate first, so
    P(A wins | ab) = mean(ab) and P(A wins | ba) = 1 - mean(ba) (values are oriented candidate-better = 1).
    Length: Pearson correlation of the verdict with the candidate-minus-incumbent length difference.
    Only the judge and length rows are read, compactly (integer codes, float32), shard by shard.
    """
    from jobs.calibrate import read_scores_compact

    df = read_scores_compact(store, keep_metric=lambda m: m.startswith("judge.pairwise.") or m == "check.length_chars")
    if df.empty:
        return {}
    mets = [str(m) for m in df["metric"].cat.categories]
    models = [str(m) for m in df["model"].cat.categories]
    mcode, modcode = df["metric"].cat.codes.to_numpy(), df["model"].cat.codes.to_numpy()
    reqs, vals = df["request_id"].cat.codes.to_numpy(), df["value"].to_numpy()
    n_req = len(df["request_id"].cat.categories)
    del df
    lengths = np.full((n_req, len(models)), np.nan, dtype=np.float32)
    if "check.length_chars" in mets:
        sel = mcode == mets.index("check.length_chars")
        lengths[reqs[sel], modcode[sel]] = vals[sel]
    inc = models.index(incumbent) if incumbent in models else None
    out: dict = {}
    for metric in sorted(m for m in mets if m.startswith("judge.pairwise.")):
        sel = mcode == mets.index(metric)
        val = vals[sel].astype(float)
        if metric.endswith(".ab") and metric[:-3] + ".ba" in mets:
            twin = vals[mcode == mets.index(metric[:-3] + ".ba")].astype(float)
            out.setdefault(metric[:-3], {})["position"] = {
                "p_a_wins_ab": round(float(val.mean()), 4), "p_a_wins_ba": round(float(1 - twin.mean()), 4),
                "n": int(len(val))}
        if inc is not None:
            r = reqs[sel]
            diff = (lengths[r, modcode[sel]] - lengths[r, inc]).astype(float)
            ok = np.isfinite(diff) & np.isfinite(val)
            if ok.sum() > 2 and np.std(diff[ok]) > 0 and np.std(val[ok]) > 0:
                corr = float(np.corrcoef(diff[ok], val[ok])[0, 1])
                out.setdefault(metric, {})["length"] = {"correlation": round(corr, 4), "n": int(ok.sum())}
    return out


def report_extras(cfg: RunConfig, store: RunStore, truth: dict | None = None) -> dict:
    """What the report shows beside the decision: run id, config summary, cost and throughput, judge bias."""
    stages = store.manifest().get("stages", {})
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
        "cost": cost_rows(stages),
        "judge_bias": judge_bias(store, cfg.incumbent.name),
    }
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
