"""Cheap-check and embedding metrics on the PandaLM human-annotated pairwise test set, against the human verdicts.

Data: /work/shared/data/pandalm (Wang et al., PandaLM, ICLR 2024, arXiv:2306.05087; Apache-2.0): 999 items, two
responses each, three annotators (0 tie, 1 response1 better, 2 response2 better), plus GPT-3.5-turbo's and
PandaLM-7B's verdicts on the same items.

Every response goes through the scorers' real code: ``Checks`` (check.*), ``Embedder`` (all-MiniLM-L6-v2) for
``embed.sim_reference`` (against GPT-3.5's reference answer, the only reference the data has: a caveat, it is a
judge's text) and ``embed.sim_prompt`` (similarity to instruction + input; relevance). response1 plays the
incumbent, response2 the candidate.

Per metric m, the pairwise signal is d = m(response2) - m(response1), set against the human majority h (1 response2
better, 0.5 tie, 0 response1 better): Spearman rho(d, h) over all items, the point-biserial correlation on the
non-tie items, and the sign agreement (sign of d vs the human winner, non-tie items, d != 0). The two judges are
shown beside them the same way (d = +1 / 0 / -1 from their verdict) with their agreement rates. Prints a table,
then one JSON line. The goal is completeness: every metric computed for every response, finite correlations (a metric that is
constant over the data, e.g. no response uses markdown, has none and is marked constant).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from inference.scorers import Checks, ChecksConfig, EmbeddingConfig, Embedder, similarity_scores  # noqa: E402

DATA = Path("/work/shared/data/pandalm")


def load() -> pd.DataFrame:
    base = pd.DataFrame(json.loads((DATA / "testset-v1.json").read_text()))
    gpt = pd.DataFrame(json.loads((DATA / "gpt-3.5-turbo-testset-v1.json").read_text()))
    pandalm = pd.DataFrame(json.loads((DATA / "pandalm-7b-testset-v1.json").read_text()))
    df = base.merge(gpt, on="idx", validate="1:1").merge(pandalm, on="idx", validate="1:1")
    votes = df[["annotator1", "annotator2", "annotator3"]].astype(int).to_numpy()
    # Majority of three (0 tie, 1, 2); no majority (all different) counts as a tie.
    counts = np.stack([(votes == k).sum(axis=1) for k in (0, 1, 2)], axis=1)
    majority = np.where(counts.max(axis=1) >= 2, counts.argmax(axis=1), 0)
    df["human"] = np.select([majority == 2, majority == 1], [1.0, 0.0], 0.5)
    df["prompt"] = (df["instruction"].astype(str) + "\n" + df["input"].fillna("").astype(str)).str.strip()
    for col in ("response1", "response2", "gpt_reference"):
        df[col] = df[col].where(df[col].map(lambda v: isinstance(v, str)), None)
    return df


def judge_signal(values: pd.Series, mapping: dict) -> np.ndarray:
    """A judge's verdict as d in {+1 response2, -1 response1, 0 tie}; NaN when unparseable."""
    return values.astype(str).str.strip().map(mapping).astype("float64").to_numpy()


def metric_table(df: pd.DataFrame, embedder: Embedder) -> tuple[pd.DataFrame, dict]:
    """Per item: d = metric(response2) - metric(response1) for every check and embedding metric."""
    rows = []
    for side, model in (("response1", "r1"), ("response2", "r2")):
        rows.append(pd.DataFrame({
            "request_id": df["idx"].astype(str), "model": model, "response": df[side],
            # response1 plays the incumbent for response2's relative metrics only
            "incumbent_response": df["response1"] if side == "response2" else None,
            "reference": df["gpt_reference"],
        }))
    batch = pd.concat(rows, ignore_index=True)
    t0 = time.perf_counter()
    checks = Checks(ChecksConfig(language="en"))(batch)
    t_checks = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = embedder(batch)
    sims = similarity_scores(emb)
    # Relevance: similarity of each response to its prompt (instruction + input).
    prompts = embedder.encode(df["prompt"].tolist())
    resp = emb[emb["field"] == "response"]
    pvec = dict(zip(df["idx"].astype(str), prompts))
    rel = pd.DataFrame({"request_id": resp["request_id"], "model": resp["model"], "metric": "embed.sim_prompt",
                        "value": [float(np.dot(v, pvec[r])) for r, v in zip(resp["request_id"], resp["vector"])]})
    t_embed = time.perf_counter() - t0
    scores = pd.concat([checks, sims, rel], ignore_index=True)
    wide = scores.pivot_table(index=["request_id", "model"], columns="metric", values="value").unstack("model")
    wide = wide.reindex(df["idx"].astype(str))
    out = {}
    for metric in sorted(scores["metric"].unique()):
        if metric in ("check.length_ratio", "embed.sim_incumbent"):
            continue  # relative metrics: handled below (response2 vs response1 directly)
        out[metric] = (wide[(metric, "r2")] - wide[(metric, "r1")]).to_numpy()
    ratio = wide[("check.length_ratio", "r2")].to_numpy()
    out["check.log_length_ratio"] = np.log(np.where(ratio > 0, ratio, np.nan))
    coverage = {
        "responses": int(batch["response"].notna().sum()),
        "check_rows": int(len(checks)),
        "embedded_responses": int((emb["field"] == "response").sum()),
        "checks_rows_per_s": round(len(batch) / t_checks, 1),
        "embed_s": round(t_embed, 1),
    }
    return pd.DataFrame(out, index=df.index), coverage


def correlate(d: np.ndarray, h: np.ndarray) -> dict:
    ok = np.isfinite(d)
    rho = stats.spearmanr(d[ok], h[ok]).statistic if ok.sum() > 2 and np.ptp(d[ok]) > 0 else np.nan
    nt = ok & (h != 0.5)
    pb = stats.pointbiserialr(h[nt], d[nt]).statistic if nt.sum() > 2 and np.ptp(d[nt]) > 0 else np.nan
    decided = nt & (d != 0)
    agree = float(np.mean(np.sign(d[decided]) == np.where(h[decided] == 1.0, 1, -1))) if decided.any() else np.nan
    return {"spearman": float(rho), "point_biserial": float(pb), "sign_agreement": agree,
            "coverage_non_tie": float(decided.sum() / max((h != 0.5).sum(), 1)),
            "constant": bool(ok.sum() == 0 or np.ptp(d[ok]) == 0)}


def main() -> int:
    df = load()
    h = df["human"].to_numpy()
    embedder = Embedder(EmbeddingConfig(device="cpu", batch_size=64), fields=("response", "incumbent_response", "reference"))
    diffs, coverage = metric_table(df, embedder)
    results = {m: correlate(diffs[m].to_numpy(), h) for m in diffs.columns}
    judges = {
        "judge:gpt-3.5-turbo": judge_signal(df["gpt_result"], {"2": 1.0, "1": -1.0, "Tie": 0.0, "tie": 0.0}),
        "judge:pandalm-7b": judge_signal(df["pandalm_result"], {"2": 1.0, "1": -1.0, "0": 0.0}),
    }
    for name, d in judges.items():
        r = correlate(d, h)
        three_way = np.where(np.isnan(d), -9, d)
        r["agreement_3way"] = float(np.mean(three_way == np.select([h == 1.0, h == 0.0], [1.0, -1.0], 0.0)))
        r["parsed"] = float(np.isfinite(d).mean())
        results[name] = r

    print(f"PandaLM test set: {len(df)} items, human majority: {int((h == 1).sum())} response2, "
          f"{int((h == 0).sum())} response1, {int((h == 0.5).sum())} tie")
    print(f"{'metric (d = r2 - r1)':<28}{'spearman':>10}{'pt-biserial':>13}{'sign agree':>12}{'coverage':>10}")
    for name, r in results.items():
        extra = f"   3-way agreement {r['agreement_3way']:.3f}, parsed {r['parsed']:.3f}" if "agreement_3way" in r else ""
        print(f"{name:<28}{r['spearman']:>10.3f}{r['point_biserial']:>13.3f}{r['sign_agreement']:>12.3f}"
              f"{r['coverage_non_tie']:>10.3f}{extra}")
    print(f"coverage: {coverage}")
    print("caveat: embed.sim_reference uses GPT-3.5's own reference answer (the only one in the data), so it is not "
          "independent of the GPT-3.5 judge")

    metric_rows = {k: v for k, v in results.items() if not k.startswith("judge:")}
    answered = int(df["response1"].notna().sum() + df["response2"].notna().sum())  # a few responses are not strings
    complete = (coverage["responses"] == answered and coverage["embedded_responses"] == answered
                and all(np.isfinite(r["spearman"]) or r["constant"] for r in metric_rows.values()))
    summary = {
        "items": len(df),
        "metrics": {k: {kk: (None if isinstance(vv, float) and not np.isfinite(vv) else round(vv, 4) if isinstance(vv, float) else vv)
                        for kk, vv in v.items()} for k, v in results.items()},
        "coverage": coverage,
        "goal": "every check and embedding metric computed for every response, with finite correlations (judges shown as the baseline)",
        "meets_goal": bool(complete),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
