"""Report stage: render decision.json (and the run's manifest figures) into report.html and report.md."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

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
    Read shard by shard, keeping only the columns and rows these figures need.
    """
    frames = []
    for _, shard in store.iter_shards("scores", columns=["request_id", "model", "metric", "value"]):
        keep = shard["metric"].str.startswith("judge.pairwise.") | (shard["metric"] == "check.length_chars")
        frames.append(shard.loc[keep])
    if not frames:
        return {}
    df = pd.concat(frames, ignore_index=True)
    out: dict = {}
    pair = df[df["metric"].str.startswith("judge.pairwise.")]
    lengths = df[df["metric"] == "check.length_chars"].set_index(["request_id", "model"])["value"]
    inc_len = lengths.xs(incumbent, level="model") if incumbent in lengths.index.get_level_values("model") else None
    for metric in sorted(pair["metric"].unique()):
        v = pair[pair["metric"] == metric]
        if metric.endswith(".ab"):
            twin = pair[pair["metric"] == metric[:-3] + ".ba"]
            if len(twin):
                out.setdefault(metric[:-3], {})["position"] = {
                    "p_a_wins_ab": round(float(v["value"].mean()), 4),
                    "p_a_wins_ba": round(float(1 - twin["value"].mean()), 4), "n": int(len(v))}
        if inc_len is not None:
            cand_len = lengths.reindex(pd.MultiIndex.from_frame(v[["request_id", "model"]])).to_numpy()
            diff = cand_len - inc_len.reindex(v["request_id"]).to_numpy()
            ok = np.isfinite(diff) & np.isfinite(v["value"].to_numpy())
            if ok.sum() > 2 and np.std(diff[ok]) > 0 and np.std(v["value"].to_numpy()[ok]) > 0:
                r = float(np.corrcoef(diff[ok], v["value"].to_numpy()[ok])[0, 1])
                out.setdefault(metric, {})["length"] = {"correlation": round(r, 4), "n": int(ok.sum())}
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
