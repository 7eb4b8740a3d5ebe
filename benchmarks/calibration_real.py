"""Calibration on real human judgments: coverage of the full-human value when all but n labels are hidden.

PandaLM (Wang et al., ICLR 2024; Apache-2.0; /work/shared/data/pandalm): 999 pairwise items, 10 model pairs, three
annotators each, verdicts of GPT-3.5-turbo and PandaLM-7B. Model a of ``cmp_key`` "a_b" (response1) plays the
incumbent and model b the candidate; each pair is one candidate (named by its cmp_key) of one joint fit, so the
judge-to-human mapping is partially pooled across pairs. Labels: 0 tie -> 0.5, 1 (response1) -> 0, 2 -> 1;
judges the same way, GPT garbage -> missing. A length-ratio check is a third metric.

HANNA (Chhun et al., COLING 2022 / TACL 2024; MIT; /work/shared/data/hanna): 96 prompts x 11 systems, three raters
(1-5). Incumbent = "Human" stories, candidates = the 10 systems, dimension = one criterion (ordinal), metrics = the
five LLM judges' ratings of that criterion (prompt 1) plus the 72 automatic metrics (PCA-compressed).

For each n in (25, 50, 100, 200) and each random draw: keep n labelled requests (PandaLM: n items; HANNA: n
prompts, labelled for every system), fit, and check whether the 90% interval covers the full-human value; the same
for the human-only and PPI++ intervals. Prints a table and ends with one JSON line.
Usage: python benchmarks/calibration_real.py [--draws-per-n 10] [--quick]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.data import prepare  # noqa: E402
from calibration.pipeline import SamplerSettings, calibrate_dimension  # noqa: E402

DATA = Path("/work/shared/data")
CONF = 0.9


def pandalm_tables(root: Path = DATA / "pandalm", pair_as_candidate: bool = True):
    """Long scores/labels tables from the PandaLM test set (see module docstring)."""
    items = json.loads((root / "testset-v1.json").read_text())
    gpt = {g["idx"]: g["gpt_result"] for g in json.loads((root / "gpt-3.5-turbo-testset-v1.json").read_text())}
    pl = {g["idx"]: g["pandalm_result"] for g in json.loads((root / "pandalm-7b-testset-v1.json").read_text())}
    hmap = {"0": 0.5, "1": 0.0, "2": 1.0}
    gmap = {"1": 0.0, "2": 1.0, "Tie": 0.5}
    srows, lrows = [], []
    for it in items:
        a, b = it["cmp_key"].split("_", 1)
        rid = f"pandalm-{it['idx']}"
        cand = it["cmp_key"] if pair_as_candidate else b
        g = gmap.get(str(gpt.get(it["idx"])), np.nan)
        p = hmap.get(str(pl.get(it["idx"])), np.nan)
        r1, r2 = it["response1"], it["response2"]  # a few responses are JSON booleans, not text: missing metric
        ratio = np.log((len(r2) + 1) / (len(r1) + 1)) if isinstance(r1, str) and isinstance(r2, str) else np.nan
        srows += [(rid, cand, "judge.pairwise.quality.gpt35", g), (rid, cand, "judge.pairwise.quality.pandalm7b", p),
                  (rid, cand, "check.log_length_ratio", ratio)]
        for k in (1, 2, 3):
            lrows.append((rid, cand, "quality", hmap[str(it[f"annotator{k}"])], f"annotator{k}"))
    scores = pd.DataFrame(srows, columns=["request_id", "model", "metric", "value"])
    labels = pd.DataFrame(lrows, columns=["request_id", "model", "dimension", "value", "annotator"])
    return scores, labels


def hanna_tables(criterion: str = "CH", root: Path = DATA / "hanna"):
    """Long tables for one HANNA criterion (RE CH EM SU EG CX); incumbent 'Human'."""
    df = pd.read_csv(root / "hanna_metric_scores_llm.csv")
    judges = [c for c in df.columns if c.endswith(f" {criterion} 1") and not c.startswith("Human")]
    auto = [c for c in df.columns[7:] if not c.startswith(("Human", "Beluga", "OrcaPlatypus", "Mistral", "Llama",
                                                              "ChatGPT"))]
    srows, lrows = [], []
    for _, row in df.iterrows():
        model = row["Model"]
        for col in judges + auto:
            vals = np.asarray(ast.literal_eval(row[col]), dtype=float)
            name = ("judge.abs." + criterion.lower() + "." + col.split()[0]) if col in judges else "auto." + col
            srows.append(pd.DataFrame({"request_id": [f"hanna-{i}" for i in range(len(vals))], "model": model,
                                       "metric": name, "value": vals}))
        for r in (1, 2, 3):
            vals = np.asarray(ast.literal_eval(row[f"Human {r} {criterion}"]), dtype=float)
            lrows.append(pd.DataFrame({"request_id": [f"hanna-{i}" for i in range(len(vals))], "model": model,
                                       "dimension": criterion, "value": vals, "annotator": f"rater{r}"}))
    return pd.concat(srows, ignore_index=True), pd.concat(lrows, ignore_index=True)


def full_truth(labels: pd.DataFrame, kind: str, incumbent: str) -> dict[str, float]:
    cell = labels.groupby(["request_id", "model"])["value"].mean().unstack("model")
    if kind == "pairwise":
        return {m: float(cell[m].mean()) for m in cell.columns}
    return {m: float((cell[m] - cell[incumbent]).mean()) for m in cell.columns if m != incumbent}


def run_case(name, scores, labels, kind, incumbent, dimension, ns, draws_per_n, seed0, settings):
    truth = full_truth(labels, kind, incumbent)
    reqs = np.array(sorted(labels["request_id"].unique()))
    rows = []
    for n in ns:
        if n >= len(reqs):
            continue
        for rep in range(draws_per_n):
            rng = np.random.default_rng(seed0 + 1000 * n + rep)
            keep = set(rng.choice(reqs, n, replace=False))
            lab = labels[labels["request_id"].isin(keep)]
            data = prepare(scores, lab, incumbent, None, dimension, kind)
            t0 = time.time()
            out = calibrate_dimension(data, 0.05, CONF, seed=rep, settings=settings)
            for cand, e in out.items():
                t = truth[cand]
                # like with like: every `interval` is for the scored requests (the baselines with the
                # finite-population correction); the population widths are kept beside them
                for method, src in (("bayes", e), ("human_only", e["human_only"]), ("ppi", e["ppi"] or {})):
                    iv, ivp = src.get("interval"), src.get("interval_population")
                    if iv is None:
                        continue
                    rows.append({"case": name, "n": n, "rep": rep, "candidate": cand, "method": method,
                                 "covered": iv[0] <= t <= iv[1], "width": iv[1] - iv[0],
                                 "width_population": (ivp[1] - ivp[0]) if ivp else np.nan})
            print(f"  {name} n={n} rep={rep} fit+aggregate {time.time() - t0:.1f}s "
                  f"converged={e['diagnostics']['converged']}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws-per-n", type=int, default=10)
    ap.add_argument("--ns", default="25,50,100,200")
    ap.add_argument("--quick", action="store_true", help="fewer draws and sampler steps (smoke run)")
    ap.add_argument("--hanna-criterion", default="CH")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    settings = SamplerSettings(draws=300 if args.quick else 500, tune=300 if args.quick else 500,
                               retry_unconverged=False)
    t0 = time.time()
    s, lab = pandalm_tables()
    res = [run_case("pandalm", s, lab, "pairwise", "incumbent", "quality", ns, args.draws_per_n, 0, settings)]
    hs, hl = hanna_tables(args.hanna_criterion)
    res.append(run_case(f"hanna-{args.hanna_criterion}", hs, hl, "ordinal", "Human", args.hanna_criterion,
                        [n for n in ns if n < 96], max(2, args.draws_per_n // 2), 7, settings))
    df = pd.concat(res, ignore_index=True)
    summ = df.groupby(["case", "candidate", "n", "method"]).agg(coverage=("covered", "mean"),
                                                                width=("width", "mean"), k=("covered", "size"))
    wide = summ.unstack("method")
    pd.set_option("display.width", 200, "display.max_rows", 500)
    print(wide.round(3).to_string())
    by_n = df.groupby(["case", "n", "method"]).agg(coverage=("covered", "mean"), width=("width", "mean")).unstack()
    print("\naveraged over candidates:")
    print(by_n.round(3).to_string())
    cov = df[df.method == "bayes"].groupby(["case", "n"])["covered"].mean()
    w = df.groupby(["case", "n", "method"])["width"].mean().unstack()
    wp = df.groupby(["case", "n", "method"])["width_population"].mean().unstack()
    figures = {
        "coverage_bayes_by_case_n": {f"{c}/n={n}": round(float(v), 3) for (c, n), v in cov.items()},
        "coverage_human_only_by_case_n": {f"{c}/n={n}": round(float(v), 3) for (c, n), v in
                                          df[df.method == "human_only"].groupby(["case", "n"])["covered"].mean().items()},
        "coverage_ppi_by_case_n": {f"{c}/n={n}": round(float(v), 3) for (c, n), v in
                                   df[df.method == "ppi"].groupby(["case", "n"])["covered"].mean().items()},
        "width_by_case_n": {f"{c}/n={n}": {m: round(float(w.loc[(c, n), m]), 4) for m in w.columns}
                            for (c, n) in w.index},
        "width_ratio_bayes_over_human_only": {
            "scored": {f"{c}/n={n}": round(float(w.loc[(c, n), "bayes"] / w.loc[(c, n), "human_only"]), 3)
                       for (c, n) in w.index},
            "population": {f"{c}/n={n}": round(float(wp.loc[(c, n), "bayes"] / wp.loc[(c, n), "human_only"]), 3)
                           for (c, n) in wp.index}},
    }
    meets = bool((cov >= 0.85).all() and (w["bayes"] <= w["human_only"] * 1.0001).all())
    print(json.dumps({"benchmark": "calibration_real", **figures, "seconds": round(time.time() - t0, 1),
                      "goal": "bayes coverage >= 0.85 at nominal 0.90 for every case and n; mean width <= "
                              "human-only (and < PPI++ where judges are informative)",
                      "meets_goal": meets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
