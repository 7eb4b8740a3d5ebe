"""Coverage of the nominal 90% calibrated interval over 200 seeded simulated replicates (the CI test runs 24).

Pairwise world of calibration.simulate.simulate_pairwise: two candidates, an LLM judge in two position orders with
position bias +-0.5, noise 0.7 and a +0.8 bias towards cand-a, a similarity metric, 5% garbage verdicts, three
segments, 3 annotators per labelled request, 400 scored and 60 labelled requests per candidate. Also a binary
absolute world (simulate_binary). Baseline beside it: the human-only interval on the same labels, for the same
estimand (scored requests: with the finite-population correction; population widths reported too).
Goal: coverage in [0.85, 0.95] and mean width no larger than human-only. Usage: python
benchmarks/calibration_coverage.py [--reps 200] [--binary-reps 100]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.simulate import coverage_study  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--binary-reps", type=int, default=100)
    args = ap.parse_args()
    t0 = time.time()
    figures, ok = {}, True
    for kind, reps in (("pairwise", args.reps), ("binary", args.binary_reps)):
        if reps <= 0:
            continue
        df = coverage_study(reps, seed0=10_000, kind=kind, blocks_per_fit=10)
        f = {"intervals": len(df), "coverage": round(float(df.covered.mean()), 3),
             "human_only_coverage": round(float(df.human_covered.mean()), 3),
             "mean_width": round(float(df.width.mean()), 4), "human_only_mean_width": round(float(df.human_width.mean()), 4),
             "bias": round(float((df.estimate - df.truth).mean()), 4),
             "width_ratio_scored": round(float(df.width.mean() / df.human_width.mean()), 3),
             "width_ratio_population": round(float(df.width_population.mean() / df.human_width_population.mean()), 3)}
        figures[kind] = f
        ok &= 0.85 <= f["coverage"] <= 0.95 and f["mean_width"] <= f["human_only_mean_width"]
        print(f"{kind:9s} intervals {f['intervals']:4d}  coverage {f['coverage']:.3f} (human-only "
              f"{f['human_only_coverage']:.3f})  width {f['mean_width']:.4f} (human-only {f['human_only_mean_width']:.4f})"
              f"  bias {f['bias']:+.4f}  width / human-only: scored {f['width_ratio_scored']:.3f}, population "
              f"{f['width_ratio_population']:.3f}", flush=True)
    print(json.dumps({"benchmark": "calibration_coverage", **figures, "seconds": round(time.time() - t0, 1),
                      "goal": "coverage in [0.85, 0.95] at nominal 0.90, mean width <= human-only (same estimand: scored "
                              "requests, human-only with the finite-population correction)",
                      "meets_goal": bool(ok)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
