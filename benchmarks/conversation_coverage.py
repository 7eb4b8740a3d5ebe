"""Coverage of the nominal 90% interval when turns of one conversation are correlated (issue 17).

World (tests.support.simulate_conversations.simulate_conversations): 60 conversations of 1..10 turns, two candidates,
a conversation effect (sd 1) on the human preference and another (sd 1) on the LLM judge's reading, shared by the
turns of a conversation; the judge also has a +0.8 bias towards cand-a and a +-0.5 position bias; every turn of 15
random conversations labelled per candidate. Beside Baton with the conversation effect and the clustered estimands
(calibration.clustered) the table shows the same model without the conversation effect (turns as independent
requests), and labels alone with a per-turn CLT and with a cluster-robust (CR1) standard error; each for the scored
turns (finite population) and for the traffic (population).

Goal: Baton's coverage (finite population and population) in [0.85, 0.95] over at least 200 replicates, and the
fit without the conversation effect under-covering (below 0.85) in the same worlds.
Usage: python benchmarks/conversation_coverage.py [--reps 200]. Progress goes to stderr; the last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.simulate_conversations import conversation_coverage_study  # noqa: E402

BAND = (0.85, 0.95)
METHODS = ("clustered", "unclustered", "human", "human_cr")


def figures(df) -> dict:
    out = {"replicates": int(df.rep.nunique()), "intervals": len(df),
           "bias": round(float((df.estimate - df.truth).mean()), 4),
           "bias_unclustered": round(float((df.estimate_unclustered - df.truth).mean()), 4),
           "max_fit_divergences": int(df.fit_divergences.max())}
    for m in METHODS:
        for s in ("fp", "pop"):
            out[f"{m}_{s}_coverage"] = round(float(df[f"{m}_{s}_covered"].mean()), 3)
            out[f"{m}_{s}_mean_width"] = round(float(df[f"{m}_{s}_width"].mean()), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--blocks-per-fit", type=int, default=25)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--tune", type=int, default=200)
    args = ap.parse_args()
    t0 = time.time()
    df = conversation_coverage_study(args.reps, seed0=20_000, draws=args.draws, tune=args.tune,
                                     blocks_per_fit=args.blocks_per_fit,
                                     on_fit=lambda d: print(json.dumps(figures(d)), file=sys.stderr, flush=True))
    f = figures(df)
    print(f"{'interval':28s} {'scored turns':>22s} {'traffic':>22s}")
    for m, label in zip(METHODS, ("Baton, conversation effect", "Baton, turns independent", "labels only, per-turn CLT",
                                  "labels only, cluster-robust")):
        print(f"{label:28s} " + " ".join(f"cov {f[f'{m}_{s}_coverage']:.3f} w {f[f'{m}_{s}_mean_width']:.3f}".rjust(22)
                                         for s in ("fp", "pop")))
    ok = (all(BAND[0] <= f[f"clustered_{s}_coverage"] <= BAND[1] for s in ("fp", "pop"))
          and f["replicates"] >= 200 and min(f["unclustered_fp_coverage"], f["unclustered_pop_coverage"]) < BAND[0])
    print(json.dumps({"benchmark": "conversation_coverage", "draws": args.draws, "tune": args.tune, **f,
                      "seconds": round(time.time() - t0, 1),
                      "goal": f"Baton coverage (scored turns and traffic) in {list(BAND)} at nominal 0.90 over >= 200 "
                              f"replicates; without the conversation effect below {BAND[0]}",
                      "meets_goal": bool(ok)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
