"""Scale: calibrate with 2,000 labelled requests and aggregate the posterior over 1,000,000 scored requests.

Goal: the whole path (long tables -> arrays, NUTS fit, diagnostics, chunked aggregation, baselines) under 120 s and
under 4 GiB peak resident memory on this 2-core machine. Baseline printed beside it: the human-only interval
(what 2,000 labels give without the metrics). Peak memory from resource.getrusage (this process and, separately,
the sampler's child processes). Usage: python benchmarks/calibration_scale.py [--requests 1000000]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.data import prepare  # noqa: E402
from calibration.pipeline import SamplerSettings, calibrate_dimension  # noqa: E402
from tests.support.simulate import simulate_pairwise  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--labels", type=int, default=2000)
    args = ap.parse_args()
    sim = simulate_pairwise(0, n_requests=args.requests, n_labels=args.labels, n_annot=1, candidates=("cand-a",),
                            cand_effect=(0.2,), judge_bias=(0.5,))
    print(f"simulated {len(sim.scores):,} score rows, {len(sim.labels):,} label rows", file=sys.stderr)
    t0 = time.perf_counter()
    data = prepare(sim.scores, sim.labels, "incumbent", ["cand-a"], "quality", "pairwise", sim.traffic, ["region"])
    t_prep = time.perf_counter() - t0
    out = calibrate_dimension(data, 0.05, 0.9, seed=0, settings=SamplerSettings(retry_unconverged=False))
    total = time.perf_counter() - t0
    e = out["cand-a"]
    self_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    child_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    truth = sim.truth["cand-a"]
    rows = [("seconds (prepare+fit+aggregate)", round(total, 1), "< 120"),
            ("  of which prepare", round(t_prep, 1), ""),
            ("peak RSS main process GiB", round(self_gib, 2), "< 4"),
            ("peak RSS largest sampler child GiB", round(child_gib, 2), "< 4"),
            ("bayes interval width", round(e["interval"][1] - e["interval"][0], 4), ""),
            ("human-only interval width (baseline)",
             round(e["human_only"]["interval"][1] - e["human_only"]["interval"][0], 4), ""),
            ("truth covered by bayes interval", e["interval"][0] <= truth <= e["interval"][1], ""),
            ("converged", e["diagnostics"]["converged"], "")]
    for name, val, goal in rows:
        print(f"{name:40s} {str(val):>10s} {goal}")
    meets = bool(total < 120 and self_gib < 4 and child_gib < 4)
    print(json.dumps({"benchmark": "calibration_scale", "requests": data.n_req, "labels": args.labels,
                      "seconds": round(total, 1), "prepare_seconds": round(t_prep, 1),
                      "peak_rss_gib": round(self_gib, 2), "peak_rss_child_gib": round(child_gib, 2),
                      "bayes_width": rows[4][1], "human_only_width": rows[5][1],
                      "goal": "seconds < 120 and peak RSS < 4 GiB", "meets_goal": meets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
