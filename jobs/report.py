"""Report stage: render decision.json (and the run's manifest figures) into report.html and report.md."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from calibration.schema import Decision
from jobs.compact import rows_of_metrics
from jobs.config import RunConfig
from jobs.store import RunStore

log = logging.getLogger(__name__)


def cost_rows(cfg: RunConfig, store: RunStore, recorded_pairs: int | None = None) -> list[dict]:
    """Cost and throughput rows, per stage and model, from the shards' commit records: summed over every invocation
    that contributed to the run (a resumed run's figures are the whole run's, not its last invocation's).

    ``wall_s`` is the summed work time of the shards (per worker: with k workers the elapsed time is about 1/k of
    it), so requests/s is one worker's throughput. Scored requests are the distinct (model, request_id) pairs of
    the scores table. Cost comes from the tokens in the responses records and the candidates' prices.
    ``recorded_pairs``: the recorded shards' distinct pairs, counted elsewhere (jobs.report_scan); None: here.
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
        rows.append({"stage": "recorded_scores", "model": "all",
                     "requests": _distinct_pairs(store, recorded) if recorded_pairs is None else recorded_pairs})
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


def _bias_metric(name: str) -> bool:
    return name.startswith("judge.pairwise.") or name == "check.length_chars"


def judge_bias(store: RunStore, incumbent: str, sums: dict | None = None) -> dict:
    """Position bias of every pairwise judge asked in both orders, and length bias of every pairwise verdict.

    Position: P(the answer shown first wins) in each order; order ab shows the candidate first, so
    P(A wins | ab) = mean(ab) and P(A wins | ba) = 1 - mean(ba) (values are oriented candidate-better = 1).
    Length: Pearson correlation of the verdict with the candidate-minus-incumbent length difference.
    From ``sums`` (:func:`bias_sums` added over parts of the requests, e.g. by jobs.report_scan), or from the
    judge and length rows read here, compactly (integer codes, float32), shard by shard."""
    if sums is None:
        from jobs.compact import read_scores_compact

        df = read_scores_compact(store, keep_metric=_bias_metric)
        if df.empty:
            return {}
        sums = bias_sums(df, incumbent)
    return bias_figures(sums)


def bias_sums(df: pd.DataFrame, incumbent: str) -> dict:
    """Additive sums for :func:`bias_figures` from score rows (request_id, model, metric, value) holding every
    judge and length row of their requests: per judge metric, the (non-missing) verdicts' count and sum, and the
    moments of (length difference, verdict) over the rows where both are known. Sums of disjoint sets of requests
    add."""
    df = rows_of_metrics(df, _bias_metric)
    if df.empty:
        return {}
    metric = df["metric"].astype("category")
    model = df["model"].astype("category")
    req = df["request_id"].astype("category")
    mets = [str(m) for m in metric.cat.categories]
    models = [str(m) for m in model.cat.categories]
    mcode, modcode = metric.cat.codes.to_numpy(), model.cat.codes.to_numpy()
    reqs, vals = req.cat.codes.to_numpy(), df["value"].to_numpy(dtype=np.float32)
    lengths = np.full((len(req.cat.categories), len(models)), np.nan, dtype=np.float32)
    if "check.length_chars" in mets:
        sel = mcode == mets.index("check.length_chars")
        lengths[reqs[sel], modcode[sel]] = vals[sel]
    inc = models.index(incumbent) if incumbent in models else None
    out: dict = {}
    for name in (m for m in mets if m.startswith("judge.pairwise.")):
        sel = mcode == mets.index(name)
        val = vals[sel].astype(float)
        fin = np.isfinite(val)  # a failed judgement (NaN) is no verdict
        row = {"n": int(fin.sum()), "sum": float(val[fin].sum()), "length": np.zeros(6)}
        if inc is not None:
            r = reqs[sel]
            diff = (lengths[r, modcode[sel]] - lengths[r, inc]).astype(float)
            ok = np.isfinite(diff) & np.isfinite(val)
            d, v = diff[ok], val[ok]
            row["length"] = np.array([len(d), d.sum(), v.sum(), (d * d).sum(), (v * v).sum(), (d * v).sum()])
        out[name] = row
    return out


def add_bias_sums(a: dict, b: dict) -> dict:
    """The :func:`bias_sums` of the union of two disjoint sets of requests."""
    out = {k: dict(v) for k, v in a.items()}
    for name, row in b.items():
        if name not in out:
            out[name] = dict(row)
        else:
            out[name] = {"n": out[name]["n"] + row["n"], "sum": out[name]["sum"] + row["sum"],
                         "length": out[name]["length"] + row["length"]}
    return out


def bias_figures(sums: dict) -> dict:
    """The report's judge-bias entries (:func:`judge_bias`) from :func:`bias_sums`."""
    out: dict = {}
    for name in sorted(sums):
        row = sums[name]
        if name.endswith(".ab") and name[:-3] + ".ba" in sums:
            twin = sums[name[:-3] + ".ba"]
            out.setdefault(name[:-3], {})["position"] = {
                "p_a_wins_ab": round(row["sum"] / max(row["n"], 1), 4),
                "p_a_wins_ba": round(1 - twin["sum"] / max(twin["n"], 1), 4), "n": int(row["n"])}
        n, sd, sv, sdd, svv, sdv = (float(x) for x in row["length"])
        if n > 2:
            vd, vv, c = sdd / n - (sd / n) ** 2, svv / n - (sv / n) ** 2, sdv / n - sd * sv / n / n
            # the variances' rounding floor: a constant column's computed variance is ~1e-16 of its mean square
            if vd > 1e-12 * max(sdd / n, 1e-300) and vv > 1e-12 * max(svv / n, 1e-300):
                corr = float(np.clip(c / np.sqrt(vd * vv), -1.0, 1.0))
                out.setdefault(name, {})["length"] = {"correlation": round(corr, 4), "n": int(n)}
    return out


REPORT_SUMS = "report_sums.json"


def scores_fingerprint(store: RunStore) -> str:
    """The committed scores shards and their row counts, hashed: sums made over the table are valid while it holds."""
    import hashlib

    recs = sorted((shard, int(rec["rows"])) for shard, rec in store.commits("scores").items())
    return hashlib.sha256(json.dumps(recs).encode()).hexdigest()


def save_report_sums(store: RunStore, fingerprint: str, sums: dict, pairs: int, code: dict) -> None:
    """Keep the report's sums over every score row (judge bias, recorded pairs, code rates), made by the decide
    stage's Ray pass over the same rows (jobs.decide_scan), beside decision.json, with the scores table's
    :func:`scores_fingerprint` at the time: the report stage then reads no score row."""
    doc = {"scores_fingerprint": fingerprint, "recorded_pairs": int(pairs),
           "judge_bias": {k: {**v, "length": [float(x) for x in v["length"]]} for k, v in sums.items()},
           "code": [[m, k, float(t), int(c)] for (m, k), (t, c) in sorted(code.items())]}
    store.write_document("decision", REPORT_SUMS, json.dumps(doc))


def load_report_sums(store: RunStore) -> tuple[dict, int, dict] | None:
    """The sums :func:`save_report_sums` kept, or None when there are none or the scores table changed since."""
    if not store.has_document("decision", REPORT_SUMS):
        return None
    try:
        doc = json.loads(store.read_document("decision", REPORT_SUMS))
    except ValueError:  # a torn or foreign file: made again by the report's own pass
        return None
    if doc.get("scores_fingerprint") != scores_fingerprint(store):
        return None
    sums = {k: {**v, "length": np.asarray(v["length"], dtype=float)} for k, v in doc["judge_bias"].items()}
    return sums, int(doc["recorded_pairs"]), {(m, k): (t, c) for m, k, t, c in doc["code"]}


def report_extras(cfg: RunConfig, store: RunStore, truth: dict | None = None) -> dict:
    """What the report shows beside the decision: run id, config summary, cost and throughput, judge bias.

    The figures over every score row are made by Ray tasks when the decide's are (jobs.decide_scan.on_ray), so
    the driver does not read the scores table: kept by the decide stage's scan (:func:`load_report_sums`), or
    made again by the report's own pass (jobs.report_scan) when the scores changed since; else here."""
    from jobs.decide_scan import on_ray

    sums, pairs, code = None, None, None
    if on_ray(cfg.decision.aggregate, store):
        kept = load_report_sums(store)  # made by the decide stage's pass over the same score rows
        if kept is None:
            from jobs.decide import join_ray
            from jobs.report_scan import report_sums

            join_ray(cfg)
            kept = report_sums(store, [cfg.incumbent.name, *[c.name for c in cfg.candidates]])
        sums, pairs, code = kept
    else:  # one read of the rows both figures need (judge, length and exec.* metrics), not one read each
        from jobs.compact import read_scores_compact

        rows = read_scores_compact(store, keep_metric=lambda m: _bias_metric(m) or m.startswith("exec."))
        sums, code = bias_sums(rows, cfg.incumbent.name), code_sums(rows)  # {} each when no row
        del rows
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
        "cost": cost_rows(cfg, store, pairs),
        "judge_bias": judge_bias(store, cfg.incumbent.name, sums),
    }
    code = code_rates(store, code)
    if code:
        extras["code"] = code
    if truth:
        extras["truth"] = truth
    return extras


def code_sums(df: pd.DataFrame) -> dict:
    """Additive sums for :func:`code_figures` from score rows: per (model, exec.* metric), the non-missing values'
    sum and count. Sums of disjoint sets of score rows add (:func:`add_code_sums`)."""
    df = rows_of_metrics(df, lambda m: m.startswith("exec."))
    if df.empty:
        return {}
    g = pd.DataFrame({"model": df["model"].astype(str).to_numpy(), "metric": df["metric"].astype(str).to_numpy(),
                      "value": df["value"].to_numpy(dtype=float)}).groupby(["model", "metric"])["value"]
    return {k: (float(s), int(c)) for (k, s), c in zip(g.sum().items(), g.count().to_numpy())}


def add_code_sums(a: dict, b: dict) -> dict:
    """The :func:`code_sums` of the union of two disjoint sets of score rows."""
    out = dict(a)
    for k, (s, c) in b.items():
        s0, c0 = out.get(k, (0.0, 0))
        out[k] = (s0 + s, c0 + c)
    return out


def code_figures(sums: dict) -> dict:
    """Per model, the plain means of the exec.* metrics (code tasks, docs/code-tasks.md) from :func:`code_sums`."""
    out: dict = {}
    for (model, metric), (total, count) in sorted(sums.items()):
        if not count:
            continue
        r = out.setdefault(model, {"error_kinds": {}})
        mean = round(total / count, 4)
        if metric == "exec.pass":
            r["n"] = int(count)
        if metric.startswith("exec.error_kind."):
            r["error_kinds"][metric.removeprefix("exec.error_kind.")] = mean
        else:
            r[metric.removeprefix("exec.")] = mean
    return out


def code_rates(store: RunStore, sums: dict | None = None) -> dict:
    """Per model, the plain means of the exec.* metrics (code tasks); {} when none were scored. ``sums``: the
    :func:`code_sums` of every score row, made elsewhere (jobs.report_scan); None: read here."""
    if sums is None:
        from jobs.compact import read_scores_compact

        sums = code_sums(read_scores_compact(store, keep_metric=lambda m: m.startswith("exec.")))
    return code_figures(sums)


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
