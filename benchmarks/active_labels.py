"""Active vs random choice of human labels: labels needed for the same interval width, and coverage.

A seeded simulation of the decision's estimand, the mean human label (a pairwise win, 1 candidate better /
0 incumbent better) over all N scored requests. Each repetition draws a fresh population: a latent difficulty per
request, the human label, and an automated judge's probability that is informative but miscalibrated. Both designs
use the same estimator, the design-weighted (Horvitz-Thompson) difference estimator with the judge's probability
as predictor (calibration.design.difference_estimate; Sarndal et al. 1992), and the same normal interval with the
Hajek-Deville variance. They differ only in which requests get labels:

- random: simple random sample, pi = n / N;
- active: pi proportional to sqrt(p (1 - p)) of the judge's probability, mixed with 20% uniform (a floor at
  0.2 n / N), drawn by randomised systematic pps sampling, weights 1 / pi (Zrnic & Candes 2024).

The figure of merit: the smallest active sample size whose mean interval width is at most the random design's
width at n_random, and the saving 1 - n_active / n_random (goal >= 0.25), while both designs keep coverage >= 0.85
at nominal 0.90.

Baton decides on the Bayesian calibration model, not on this estimator, so a second part (``--bayes-reps``
replicates, default 60) fits that model (calibration.models, real NUTS, replicates as independent blocks) in the
'calibrated' scenario with the judge's logit as its metric and the model's default design adjustment
(``covariate``: log pi in the model): random at n_random; active from the n_active found above upwards in steps
until no wider than random; active at n_random; and, for comparison, the ``weights`` adjustment (1/pi
pseudo-likelihood) at n_active. The goal asks the same of it: a saving of at least 25% at equal width, coverage
>= 0.85. The first part runs in seconds, the second in about ten minutes.
Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.design import (active_probabilities, bernoulli_sd, difference_estimate,  # noqa: E402
                                random_design, systematic_pps)

BAYES = "calibration model (ordered logistic, NUTS), posterior of the finite-population mean, central interval"
ESTIMATOR = "design-weighted Horvitz-Thompson difference estimator (judge probability as predictor), Hajek-Deville variance, normal interval"


SCENARIOS = {
    # the judge's probability after calibration on earlier labels: right on average, noisy per request
    "calibrated": {"spread": 4.5, "slope": 1.0, "shift": 0.0, "noise": 0.5},
    # sensitivity: the raw judge, shrunk and shifted (the active design's uncertainty is then off)
    "raw_judge": {"spread": 4.5, "slope": 0.7, "shift": 0.4, "noise": 0.5},
}


def population(rng: np.random.Generator, n_pop: int, scenario: dict) -> tuple[np.ndarray, np.ndarray]:
    """(human labels y, judge probability f) for one population of scored requests."""
    eta = rng.normal(0.3, scenario["spread"], n_pop)  # most requests are clear-cut, some are close calls
    y = (rng.uniform(size=n_pop) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    logit_f = scenario["slope"] * eta + scenario["shift"] + rng.normal(0.0, scenario["noise"], n_pop)
    return y, 1.0 / (1.0 + np.exp(-logit_f))


def draw(rng: np.random.Generator, n_pop: int, n: int, design: str, tau: float, scenario: dict):
    """A fresh population and its label sample: (y, f, chosen indices, pi of every unit)."""
    y, f = population(rng, n_pop, scenario)
    if design == "random":
        idx, pi = random_design(n_pop, n, rng)
    else:
        pi = active_probabilities(bernoulli_sd(f), n, tau)
        idx = systematic_pps(pi, rng)
    return y, f, idx, pi


def one(rng: np.random.Generator, n_pop: int, n: int, design: str, confidence: float, tau: float, scenario: dict):
    y, f, idx, pi = draw(rng, n_pop, n, design, tau, scenario)
    res = difference_estimate(f, y[idx], f[idx], pi[idx], confidence)
    lo, hi = res["interval"]
    return hi - lo, lo <= y.mean() <= hi


def evaluate(args, n: int, design: str, scenario: str) -> dict:
    """Mean interval width and coverage over ``args.reps`` fresh populations and samples."""
    rng = np.random.default_rng([args.seed, n, 0 if design == "random" else 1, list(SCENARIOS).index(scenario)])
    widths, cover = np.empty(args.reps), np.empty(args.reps, dtype=bool)
    for r in range(args.reps):
        widths[r], cover[r] = one(rng, args.population, n, design, args.confidence, args.tau, SCENARIOS[scenario])
    return {"n": n, "width": round(float(widths.mean()), 5), "coverage": round(float(cover.mean()), 4)}


def compare(args, scenario: str) -> dict:
    """Random at n_random; active on a grid of sizes up to the first whose width is no larger; active at n_random."""
    base = evaluate(args, args.n_random, "random", scenario)
    act = None
    for n in range(args.step, args.n_random + 1, args.step):
        act = evaluate(args, n, "active", scenario)
        if act["width"] <= base["width"]:
            break
    same_n = evaluate(args, args.n_random, "active", scenario)
    n_active = act["n"] if act["width"] <= base["width"] else None
    saving = 1.0 - n_active / args.n_random if n_active else 0.0
    return {"random": base, "active_same_width": act, "active_same_labels": same_n, "n_active": n_active,
            "label_saving": round(saving, 4)}


def bayes_tables(rng: np.random.Generator, n_pop: int, n: int, design: str, tau: float, scenario: dict):
    """One population and label sample as Baton's tables: scores (the judge's logit), labels, the design table."""
    import pandas as pd

    y, f, idx, pi = draw(rng, n_pop, n, design, tau, scenario)
    rid = np.array([f"r{i:06d}" for i in range(n_pop)], dtype=object)
    f = np.clip(f, 1e-6, 1 - 1e-6)
    scores = pd.DataFrame({"request_id": rid, "model": "cand", "metric": "judge.logit", "value": np.log(f / (1 - f))})
    labels = pd.DataFrame({"request_id": rid[idx], "model": "cand", "dimension": "quality", "value": y[idx],
                           "annotator": "a0", "inclusion_prob": pi[idx]})
    return scores, labels, pd.DataFrame({"request_id": rid, "model": "cand", "inclusion_prob": pi}), y.mean()


def bayes_evaluate(args, n: int, design: str, adjustment: str) -> dict:
    """Width and coverage of the Bayesian interval over ``args.bayes_reps`` replicates fitted as one NUTS run."""
    from calibration.data import prepare
    from calibration.estimands import aggregate, thin_params
    from calibration.models import fit

    rng = np.random.default_rng([args.seed, n, 0 if design == "random" else 1, 7])
    reps = [bayes_tables(rng, args.population, n, design, args.tau, SCENARIOS["calibrated"])
            for _ in range(args.bayes_reps)]
    blocks = [prepare(sc, lab, "inc", ["cand"], "quality", "pairwise", design=des, design_adjustment=adjustment)
              for sc, lab, des, _ in reps]
    idata, params = fit(blocks, draws=300, tune=300, seed=args.seed % 10_000)
    draw_rng = np.random.default_rng(args.seed)
    a = (1 - args.confidence) / 2
    widths, cover = [], []
    for b, (d, (_, _, _, truth)) in enumerate(zip(blocks, reps)):
        fp = aggregate(d, thin_params(params, b, 600, draw_rng), draw_rng).fp[:, 0]
        lo, hi = np.quantile(fp, [a, 1 - a])
        widths.append(hi - lo)
        cover.append(lo <= truth <= hi)
    return {"n": n, "design": design, "adjustment": adjustment, "width": round(float(np.mean(widths)), 5),
            "coverage": round(float(np.mean(cover)), 4),
            "divergences": int(idata.sample_stats["diverging"].to_numpy().sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--reps", type=int, default=400, help="repetitions per design and sample size")
    ap.add_argument("--population", type=int, default=4000, help="scored requests N")
    ap.add_argument("--n-random", type=int, default=400, help="labels of the random design")
    ap.add_argument("--step", type=int, default=10, help="grid step of the active sample sizes tried")
    ap.add_argument("--tau", type=float, default=0.2, help="uniform share of the active design (its floor)")
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--bayes-reps", type=int, default=60, help="replicates of the Bayesian part (0 skips it)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    results = {name: compare(args, name) for name in SCENARIOS}

    print(f"estimator (both designs): {ESTIMATOR}")
    print(f"population N={args.population}, {args.reps} repetitions per row, nominal coverage {args.confidence}, "
          f"active floor tau={args.tau}, seed {args.seed}\n")
    print(f"{'scenario':<12}{'design':<26}{'labels':>8}{'mean width':>12}{'coverage':>10}")
    for name, res in results.items():
        for label, key in (("random (baseline)", "random"), ("active, same width", "active_same_width"),
                           ("active, same labels", "active_same_labels")):
            row = res[key]
            print(f"{name:<12}{label:<26}{row['n']:>8}{row['width']:>12.4f}{row['coverage']:>10.3f}")
        print(f"{name:<12}labels saved at equal width: {res['label_saving']:.1%}\n")
    main_res = results["calibrated"]
    coverages = [main_res[k]["coverage"] for k in ("random", "active_same_width", "active_same_labels")]
    meets = bool(main_res["label_saving"] >= 0.25 and min(coverages) >= 0.85)
    bayes, bayes_ok, bayes_saving = [], None, None
    if args.bayes_reps and main_res["n_active"]:
        base_b = bayes_evaluate(args, args.n_random, "random", "covariate")
        # the smallest active size, from the difference estimator's upwards, within the random design's width
        grid = []
        for n in range(main_res["n_active"], args.n_random + 1, args.step):
            grid.append(bayes_evaluate(args, n, "active", "covariate"))
            if grid[-1]["width"] <= base_b["width"]:
                break
        act_b = grid[-1]
        n_b = act_b["n"] if act_b["width"] <= base_b["width"] else None
        same = grid[-1] if act_b["n"] == args.n_random else bayes_evaluate(args, args.n_random, "active", "covariate")
        weighted = bayes_evaluate(args, main_res["n_active"], "active", "weights")
        bayes = [base_b, *grid, *([same] if same is not grid[-1] else []), weighted]
        print(f"Bayesian part ({BAYES}), scenario 'calibrated', {args.bayes_reps} replicates per row")
        print(f"{'design':<10}{'adjustment':<12}{'labels':>8}{'mean width':>12}{'coverage':>10}{'divergences':>13}")
        for r in bayes:
            print(f"{r['design']:<10}{r['adjustment']:<12}{r['n']:>8}{r['width']:>12.4f}{r['coverage']:>10.3f}"
                  f"{r['divergences']:>13}")
        bayes_saving = 1.0 - n_b / args.n_random if n_b else 0.0
        print(f"Bayesian: labels saved at equal width: {bayes_saving:.1%}\n")
        bayes_ok = bool(bayes_saving >= 0.25 and min(base_b["coverage"], act_b["coverage"], same["coverage"]) >= 0.85)
        meets = meets and bayes_ok
    print("goal (scenario 'calibrated'): active saves >= 25% of the labels at the random design's width, "
          "coverage >= 0.85 at nominal 0.90, for the difference estimator and (when run) for the Bayesian model; "
          "'raw_judge' is a sensitivity check, not part of the goal")
    print(json.dumps({
        "benchmark": "active_labels", "estimator": ESTIMATOR, "seed": args.seed, "reps": args.reps,
        "population": args.population, "confidence": args.confidence, "tau": args.tau, "n_random": args.n_random,
        "scenarios": {k: {**SCENARIOS[k], **v} for k, v in results.items()},
        "label_saving": main_res["label_saving"], "min_coverage": min(coverages),
        "bayes": {"reps": args.bayes_reps, "estimator": BAYES, "rows": bayes,
                  "label_saving": round(bayes_saving, 4) if bayes else None, "meets": bayes_ok},
        "goal": {"label_saving_min": 0.25, "coverage_min": 0.85, "scenario": "calibrated"},
        "wall_s": round(time.monotonic() - started, 2), "meets_goal": meets,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
