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
at nominal 0.90. Runs in a few seconds; prints a table, then one JSON line.
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


def one(rng: np.random.Generator, n_pop: int, n: int, design: str, confidence: float, tau: float, scenario: dict):
    y, f = population(rng, n_pop, scenario)
    if design == "random":
        idx, pi = random_design(n_pop, n, rng)
    else:
        pi = active_probabilities(bernoulli_sd(f), n, tau)
        idx = systematic_pps(pi, rng)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--reps", type=int, default=400, help="repetitions per design and sample size")
    ap.add_argument("--population", type=int, default=4000, help="scored requests N")
    ap.add_argument("--n-random", type=int, default=400, help="labels of the random design")
    ap.add_argument("--step", type=int, default=10, help="grid step of the active sample sizes tried")
    ap.add_argument("--tau", type=float, default=0.2, help="uniform share of the active design (its floor)")
    ap.add_argument("--confidence", type=float, default=0.9)
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
    print("goal (scenario 'calibrated'): active saves >= 25% of the labels at the random design's width, "
          "coverage >= 0.85 at nominal 0.90; 'raw_judge' is a sensitivity check, not part of the goal")
    print(json.dumps({
        "benchmark": "active_labels", "estimator": ESTIMATOR, "seed": args.seed, "reps": args.reps,
        "population": args.population, "confidence": args.confidence, "tau": args.tau, "n_random": args.n_random,
        "scenarios": {k: {**SCENARIOS[k], **v} for k, v in results.items()},
        "label_saving": main_res["label_saving"], "min_coverage": min(coverages),
        "goal": {"label_saving_min": 0.25, "coverage_min": 0.85, "scenario": "calibrated"},
        "wall_s": round(time.monotonic() - started, 2), "meets_goal": meets,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
