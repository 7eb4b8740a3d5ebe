"""Coverage of the nominal 90% calibrated interval over seeded simulated replicates, per kind of dimension.

- pairwise (tests.support.simulate.simulate_pairwise): two candidates, an LLM judge in two position orders with
  position bias +-0.5, noise 0.7 and a +0.8 bias towards cand-a, a similarity metric, 5% garbage verdicts, three
  segments, 3 annotators per labelled request, 400 scored and 60 labelled requests per candidate;
- binary and ordinal (tests.support.simulate.simulate_absolute, a 1..5 scale for ordinal): incumbent and candidate
  answer the same 400 requests, whose difficulty (sd ``--shared-sd``) both share; 60 requests labelled for both;
  a judge score with a +0.6 bias towards the candidate, which sees the shared difficulty unless
  ``--judge-sees-difficulty`` says it sees less of it (the world where pairing has most to give). Each absolute kind
  is fitted twice: with the paired request effect (the model's default) and without it (``paired=False``), to show
  what pairing buys.
- binary3: the binary world with two candidates (quality +0.2 and -0.1 against the incumbent) and the judge's +0.6
  towards the first only: three row models, so the row-model intercepts are pooled around the models' mean judge
  scores (calibration.models._pooled_intercepts); paired only. Its goal holds per candidate.

Baseline beside each: the human-only interval on the same labels with the finite-population correction
sqrt(1 - n/N) (calibration.baselines.human_only's `interval`), so both intervals target the scored requests' value;
the population widths (Bayes `interval_population` against human-only's) are reported beside them.
Goal (issue 13): coverage in [0.85, 0.95] at nominal 0.90 and mean width no larger than human-only.
600 replicates per kind by default (the issue asks for at least 200): a coverage near 0.87 counted over 200
replicates is uncertain by +-0.024 (one sd), so the band's edge was one interval away on either side of it
(2026-12-05: the pairwise judge-favoured candidate 169 of 200 on seeds 10,000-, 351 of 400 on seeds 20,000-);
over 600 it is +-0.014 (the whole run about 50 minutes on the 2-core machine). Each candidate's Wilson 95%
interval for its coverage is printed beside it.
Beside it, per candidate, the sd of the estimate's errors over the sd its interval claims (half-width / z_0.95):
over 1 is an interval too narrow, measured more finely than a coverage count (not part of the goal).
Usage: python benchmarks/calibration_coverage.py [--reps 600] [--seed0 10000]
[--kinds pairwise,binary,ordinal,binary3]
[--variants paired,unpaired]
Progress (cumulative figures after each vectorised fit) goes to stderr; the last stdout line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scipy.stats import binomtest, norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.simulate import coverage_study  # noqa: E402

NOMINAL = 0.90  # the intervals' level, passed to the study: the band and Z_NOMINAL are about this one level
BAND = (0.85, 0.95)
Z_NOMINAL = float(norm.ppf(0.5 + NOMINAL / 2))  # half-width / Z_NOMINAL = the sd a nominal normal interval claims
# kind -> (simulator kind, its arguments beyond the defaults)
KINDS = {"pairwise": ("pairwise", {}), "binary": ("binary", {}), "ordinal": ("ordinal", {}),
         "binary3": ("binary", {"candidates": ("cand-a", "cand-b"), "model_effect": (0.0, 0.2, -0.1),
                                "judge_bias": (0.0, 0.6, 0.0)})}


def figures(df) -> dict:
    by = df.groupby("candidate")
    return {"replicates": int(df.rep.nunique()), "intervals": len(df), "coverage": round(float(df.covered.mean()), 3),
            "mean_width": round(float(df.width.mean()), 4),
            "human_only_fpc_coverage": round(float(df.human_fpc_covered.mean()), 3),
            "human_only_fpc_mean_width": round(float(df.human_fpc_width.mean()), 4),
            "bias": round(float((df.estimate - df.truth).mean()), 4),
            "width_ratio_scored": round(float(df.width.mean() / df.human_fpc_width.mean()), 3),
            "width_ratio_population": round(float(df.width_population.mean() / df.human_width_population.mean()), 3),
            "max_fit_divergences": int(df.fit_divergences.max()),
            "coverage_per_candidate": {c: round(float(v), 3) for c, v in by.covered.mean().items()},
            # how far the count itself could be from the true coverage (binomial, Wilson 1927)
            "coverage_ci95_per_candidate": {
                c: [round(float(x), 3) for x in binomtest(int(g.covered.sum()), len(g)).proportion_ci(
                    0.95, method="wilson")] for c, g in by},
            "width_ratio_per_candidate": {c: round(float(g.width.mean() / g.human_fpc_width.mean()), 3) for c, g in by},
            # over 1: the estimate errs more than its interval claims (too narrow), whatever the coverage count says
            "error_sd_over_claimed_sd_per_candidate": {
                c: round(float((g.estimate - g.truth).std() / (g.width / (2 * Z_NOMINAL)).mean()), 3)
                for c, g in by}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=600, help="replicates per kind (and per paired/unpaired fit)")
    ap.add_argument("--seed0", type=int, default=10_000, help="replicate r is simulated with seed seed0 + r")
    ap.add_argument("--kinds", default="pairwise,binary,ordinal,binary3")
    ap.add_argument("--variants", default="paired,unpaired",
                    help="absolute kinds: fit with the paired request effect, without it, or both")
    ap.add_argument("--blocks-per-fit", type=int, default=25)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--shared-sd", type=float, default=1.0, help="sd of the request difficulty shared by the models")
    ap.add_argument("--judge-sees-difficulty", type=float, default=1.0,
                    help="share of the shared difficulty the judge's score reflects (0: the judge misses it all)")
    args = ap.parse_args()
    if args.seed0 < 0 or args.reps < 1:  # refused here, not as a numpy traceback from the first simulation
        ap.error(f"--seed0 must be >= 0 (numpy seeds) and --reps >= 1; got {args.seed0} and {args.reps}")
    out, ok = {}, True
    for kind in args.kinds.split(","):
        sim_kind, kw = KINDS[kind]
        paired_only = kind in ("pairwise", "binary3")  # one fit each: no paired/unpaired variants
        variants = [True] if paired_only else [v == "paired" for v in args.variants.split(",")]
        for paired in variants:
            name = kind if paired_only else f"{kind}_{'paired' if paired else 'unpaired'}"
            t0 = time.time()
            sim = kw if sim_kind == "pairwise" else {**kw, "shared_sd": args.shared_sd,
                                                     "judge_sees_difficulty": args.judge_sees_difficulty}
            df = coverage_study(args.reps, seed0=args.seed0, kind=sim_kind, blocks_per_fit=args.blocks_per_fit,
                                draws=args.draws, tune=args.tune, paired=paired, confidence=NOMINAL,
                                on_fit=lambda d, n=name: print(f"{n}: {json.dumps(figures(d))}", file=sys.stderr,
                                                               flush=True), **sim)
            f = {**figures(df), "seconds": round(time.time() - t0, 1)}
            out[name] = f
            if paired:  # per candidate: an average over candidates could hide a failing one
                ok &= all(BAND[0] <= v <= BAND[1] for v in f["coverage_per_candidate"].values()) \
                    and all(v <= 1.0 for v in f["width_ratio_per_candidate"].values())
            print(f"{name:18s} replicates {f['replicates']:4d}  coverage {f['coverage']:.3f} (human-only fpc "
                  f"{f['human_only_fpc_coverage']:.3f})  width {f['mean_width']:.4f} (human-only fpc "
                  f"{f['human_only_fpc_mean_width']:.4f})  bias {f['bias']:+.4f}  {f['seconds']:.0f} s", flush=True)
            for c, v in f["coverage_per_candidate"].items():
                lo, hi = f["coverage_ci95_per_candidate"][c]
                print(f"{'':18s}   {c}: coverage {v:.3f} (95% {lo:.3f}-{hi:.3f})  width / human-only fpc "
                      f"{f['width_ratio_per_candidate'][c]:.3f}", flush=True)
    for kind in ("binary", "ordinal"):
        if f"{kind}_paired" in out and f"{kind}_unpaired" in out:
            out[f"{kind}_narrowing"] = round(1 - out[f"{kind}_paired"]["mean_width"]
                                             / out[f"{kind}_unpaired"]["mean_width"], 3)
    print(json.dumps({"benchmark": "calibration_coverage", "seed0": args.seed0, "draws": args.draws,
                      "tune": args.tune, "shared_sd": args.shared_sd,
                      "judge_sees_difficulty": args.judge_sees_difficulty, **out,
                      "goal": f"per candidate: coverage in {list(BAND)} at nominal {NOMINAL:.2f}, mean width <= "
                              "human-only (fpc)",
                      "meets_goal": bool(ok)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
