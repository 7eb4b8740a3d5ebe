"""The retry of an unconverged fit (calibration.pipeline.retry_sampler) against the retry it replaced, on the real
HANNA label draws whose first fit fails its diagnostics.

`baton decide` fits once and, when R-hat, bulk ESS or divergences fail (calibration.diagnostics), fits once more.
The old retry always asked for smaller steps (tuning x2, target_accept 0.99), the cure for divergences. HANNA's
ordinal fits fail without divergences, on bulk ESS (cut points, intercepts and slope means trade off and mix
slowly); the new retry doubles draws and tuning there and keeps 0.99 for fits that diverge.

Workload: HANNA criterion CH (/work/shared/data/hanna, see benchmarks/calibration_real.py), label draws drawn as
calibration_real.py draws them (seed 7 + 1000 n + draw), a first fit at --draws/--tune (the real-data benchmark's
300/300), and for every draw whose first fit fails, both retries from the same seed. Baseline: the old retry on
the same draws, in the same run. Goal: the new retry converges at least as often, and its bulk ESS per second of
sampling (the smallest over the free variables, as the diagnostics use it) is higher in the median.

Usage: python benchmarks/sampler_retry.py [--ns 25,50] [--tries 8] [--max-failing 3]
The last stdout line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration_real import hanna_tables  # noqa: E402

from calibration.data import prepare  # noqa: E402
from calibration.diagnostics import sampler_diagnostics  # noqa: E402
from calibration.models import fit  # noqa: E402
from calibration.pipeline import SamplerSettings, retry_sampler  # noqa: E402

OLD_RETRY = "tune x2, target_accept 0.99"


def _fit(d, seed: int, chains: int, **kw) -> dict:
    t0 = time.time()
    idata, _ = fit([d], chains=chains, seed=seed, **kw)
    dg = sampler_diagnostics(idata)
    secs = time.time() - t0
    return {"converged": dg["converged"], "ess_bulk_min": dg["ess_bulk_min"], "r_hat_max": dg["r_hat_max"],
            "divergences": dg["divergences"], "seconds": round(secs, 1),
            "ess_per_s": round(dg["ess_bulk_min"] / secs, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="25,50", help="labelled prompts per draw")
    ap.add_argument("--tries", type=int, default=8, help="label draws tried per n")
    ap.add_argument("--max-failing", type=int, default=3, help="stop an n after this many failing draws")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    args = ap.parse_args()
    st = SamplerSettings(draws=args.draws, tune=args.tune)
    scores, labels = hanna_tables("CH")
    reqs = np.array(sorted(labels["request_id"].unique()))
    rows, firsts = [], 0
    t_all = time.time()
    for n in [int(x) for x in args.ns.split(",") if x]:
        failing = 0
        for rep in range(args.tries):
            if failing >= args.max_failing:
                break
            rng = np.random.default_rng(7 + 1000 * n + rep)
            keep = set(rng.choice(reqs, n, replace=False))
            d = prepare(scores, labels[labels["request_id"].isin(keep)], "Human", None, "CH", "ordinal",
                        levels=[1, 2, 3, 4, 5])
            first = _fit(d, rep, st.chains, draws=st.draws, tune=st.tune)
            firsts += 1
            print(f"n={n} draw {rep}: first fit converged={first['converged']} ess={first['ess_bulk_min']} "
                  f"div={first['divergences']}", file=sys.stderr, flush=True)
            if first["converged"]:
                continue
            failing += 1
            diag = {"divergences": first["divergences"]}
            for name, kw in ((OLD_RETRY, {"draws": st.draws, "tune": 2 * st.tune, "target_accept": 0.99}),
                             ("retry_sampler", retry_sampler(diag, st))):
                r = _fit(d, rep + 1, st.chains, **kw)
                rows.append({"n": n, "draw": rep, "retry": name, "first_ess": first["ess_bulk_min"],
                             "first_divergences": first["divergences"], **r})
    df = pd.DataFrame(rows)
    if df.empty:
        print("no first fit failed; nothing to compare", file=sys.stderr)
        print(json.dumps({"benchmark": "sampler_retry", "failing_draws": 0, "first_fits": firsts,
                          "meets_goal": False, "goal": "a failing first fit to compare retries on"}))
        return 1
    pd.set_option("display.width", 200)
    print(df.set_index(["n", "draw", "retry"]).to_string())
    by = df.groupby("retry")
    summary = {name: {"converged": int(g["converged"].sum()), "of": int(len(g)),
                      "median_ess_bulk_min": float(g["ess_bulk_min"].median()),
                      "median_ess_per_s": float(g["ess_per_s"].median()),
                      "median_seconds": float(g["seconds"].median())} for name, g in by}
    new, old = summary["retry_sampler"], summary[OLD_RETRY]
    print("\nper retry (medians over the failing draws):")
    print(pd.DataFrame(summary).T.to_string())
    meets = new["converged"] >= old["converged"] and new["median_ess_per_s"] > old["median_ess_per_s"]
    print(json.dumps({"benchmark": "sampler_retry", "first_fits": firsts, "failing_draws": int(len(df) // 2),
                      "new": new, "baseline_old_retry": old,
                      "ess_per_s_ratio": round(new["median_ess_per_s"] / old["median_ess_per_s"], 2),
                      "seconds": round(time.time() - t_all, 1),
                      "goal": "the new retry converges at least as often as the old one and has the higher median "
                              "bulk ESS per second, on the same failing HANNA draws",
                      "meets_goal": bool(meets)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
