"""Report stage: render decision.json (and the run's manifest figures) into report.html and report.md."""

from __future__ import annotations

import logging

import numpy as np

from calibration.schema import Decision
from jobs.config import RunConfig
from jobs.store import RunStore

log = logging.getLogger(__name__)


def cost_rows(cfg: RunConfig, store: RunStore) -> list[dict]:
    """Cost and throughput rows, per stage and model, from the shards' commit records: summed over every invocation
    that contributed to the run (a resumed run's figures are the whole run's, not its last invocation's).

    ``wall_s`` is the summed work time of the shards (per worker: with k workers the elapsed time is about 1/k of
    it), so requests/s is one worker's throughput. Scored requests are the distinct (model, request_id) pairs of
    the scores table. Cost comes from the tokens in the responses records and the candidates' prices.
    """
    from jobs.replay import candidate_totals, candidates_to_replay

    rows: list[dict] = []
    traffic = store.commits("traffic")
    if traffic:
        rows.append({"stage": "sample", "model": "all", "requests": sum(int(r["rows"]) for r in traffic.values())})
    for cand in candidates_to_replay(cfg):
        t = candidate_totals(store, cand, sorted(traffic))
        if t["shards_committed"]:
            rows.append({"stage": "replay", "model": cand.name, "requests": t["requests"],
                         "tokens_in": t["prompt_tokens"], "tokens_out": t["completion_tokens"], "errors": t["errors"],
                         "wall_s": t["shard_wall_s"], "est_cost_usd": t["est_cost"]})
    scored: dict[str, dict] = {}
    recorded: list[str] = []
    for shard, rec in sorted(store.commits("scores").items()):
        if "model" not in rec:  # imported score files (and records older than the per-shard statistics)
            recorded.append(shard)
            continue
        row = scored.setdefault(rec["model"], {"stage": "score", "model": rec["model"], "requests": 0, "wall_s": 0.0})
        # One model and one traffic shard per scores shard: its distinct request ids are its scored requests.
        row["requests"] += int(rec["distinct_requests"]) if "distinct_requests" in rec else _distinct(store, shard)
        row["wall_s"] += float(rec.get("stats", {}).get("work_s", 0.0))
    rows.extend(scored.values())
    if recorded:
        rows.append({"stage": "recorded_scores", "model": "all", "requests": _distinct_pairs(store, recorded)})
    return rows


def _distinct(store: RunStore, shard: str) -> int:
    df = store.read_shard("scores", shard, columns=["model", "request_id"])
    return 0 if df is None else int(len(df.drop_duplicates()))


def _distinct_pairs(store: RunStore, shards: list[str]) -> int:
    """Distinct (model, request_id) over some scores shards (a pair can span chunks of an imported file)."""
    import pandas as pd

    keys = [df.drop_duplicates() for s in shards
            if (df := store.read_shard("scores", s, columns=["model", "request_id"])) is not None]
    return int(len(pd.concat(keys, ignore_index=True).drop_duplicates())) if keys else 0


def judge_bias(store: RunStore, incumbent: str) -> dict:
    """Position bias of every pairwise judge asked in both orders, and length bias of every pairwise verdict.

    Position: P(the answer shown first wins) in each order; order ab shows the candidate first, so
    P(A wins | ab) = mean(ab) and P(A wins | ba) = 1 - mean(ba) (values are oriented candidate-better = 1).
    Length: Pearson correlation of the verdict with the candidate-minus-incumbent length difference.
    Only the judge and length rows are read, compactly (integer codes, float32), shard by shard.
    """
    from jobs.compact import read_scores_compact

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
        "cost": cost_rows(cfg, store),
        "judge_bias": judge_bias(store, cfg.incumbent.name),
    }
    code = code_rates(store)
    if code:
        extras["code"] = code
    if truth:
        extras["truth"] = truth
    return extras


def code_rates(store: RunStore) -> dict:
    """Per model, the plain means of the exec.* metrics (code tasks, docs/code-tasks.md); {} when none were scored."""
    from jobs.compact import read_scores_compact

    df = read_scores_compact(store, keep_metric=lambda m: m.startswith("exec."))
    if df.empty:
        return {}
    means = df.assign(metric=df["metric"].astype(str), model=df["model"].astype(str)).groupby(
        ["model", "metric"])["value"].agg(["mean", "count"])
    out: dict = {}
    for (model, metric), row in means.iterrows():
        r = out.setdefault(model, {"error_kinds": {}})
        if metric == "exec.pass":
            r["n"] = int(row["count"])
        if metric.startswith("exec.error_kind."):
            r["error_kinds"][metric.removeprefix("exec.error_kind.")] = round(float(row["mean"]), 4)
        else:
            r[metric.removeprefix("exec.")] = round(float(row["mean"]), 4)
    return out


def run(cfg: RunConfig, store: RunStore, decision: Decision, truth: dict | None = None,
        drift: dict | None = None) -> dict:
    """Render and store report.html and report.md next to decision.json; returns their URIs. ``drift``: a nightly
    run's history view (jobs.nightly_drift.report_drift), shown as the report's history section."""
    from calibration.report import render_report

    extras = report_extras(cfg, store, truth)
    if drift:
        extras["drift"] = drift
    md, html = render_report(decision, extras)
    uris = {
        "report_md": store.write_document("decision", "report.md", md),
        "report_html": store.write_document("decision", "report.html", html),
    }
    store.update_manifest(reports=uris)
    return uris


# The stage's earlier name, kept so code written against it (other branches, scripts) still runs.
write_report = run
