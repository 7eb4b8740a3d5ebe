"""Guards under misspecification: how often a candidate inferior beyond the margin gets `migrate`, with and without
the guards (calibration.guards), and how often the guards block a truly non-inferior candidate.

Worlds (tests.support.simulate.simulate_misspec): ``well_specified`` (the judge as the model assumes),
``segment_judge`` (judge quality differs by segment: blind and favouring the candidate in one of three),
``nonlinear`` (a continuous judge score that is a cubic, saturating function of the human preference) and
``style`` (the judge favours a style of the candidate that humans mildly dislike). Each replicate: 400 scored
requests, 50 labelled per candidate with three annotators, two candidates: ``cand-inferior`` (human win rate about
0.41 < 0.45 = 0.5 - margin) and ``cand-ok`` (about 0.54). Margin 0.05, confidence 0.9, basis population.
Replicates are independent blocks of one vectorised NUTS model (calibration.models), each decided as a run of its
own would be (its own convergence diagnostics, calibration.pipeline.summarise_dimension).

Goal: in every world the guarded migrate rate of a candidate inferior beyond the margin is at most 1 - confidence.
Usage: python benchmarks/calibration_misspec.py [--reps 100] [--blocks-per-fit 25] [--draws 300 --tune 300]
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

from calibration.data import prepare  # noqa: E402
from calibration.decision import MIGRATE, thresholds  # noqa: E402
from calibration.diagnostics import sampler_diagnostics  # noqa: E402
from calibration.estimands import thin_params  # noqa: E402
from calibration.models import fit  # noqa: E402
from calibration.pipeline import SamplerSettings, summarise_dimension  # noqa: E402
from tests.support.simulate import MISSPEC_WORLDS, simulate_misspec  # noqa: E402

MARGIN, CONF = 0.05, 0.9


def run_world(world: str, reps: int, blocks_per_fit: int, draws: int, tune: int, seed0: int,
              **sim_kwargs) -> pd.DataFrame:
    thr = thresholds("pairwise", MARGIN)[0]
    st = SamplerSettings(draws=draws, tune=tune, max_posterior_draws=600)
    rows = []
    for start in range(0, reps, blocks_per_fit):
        reps_here = list(range(start, min(reps, start + blocks_per_fit)))
        tabs = [simulate_misspec(seed0 + r, world, **sim_kwargs) for r in reps_here]
        blocks = [prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, ["region"])
                  for t in tabs]
        t0 = time.time()
        idata, params = fit(blocks, draws=draws, tune=tune, seed=seed0 + start)
        rng = np.random.default_rng(seed0 + start)
        for b, (r, t, d) in enumerate(zip(reps_here, tabs, blocks)):
            diag = sampler_diagnostics(idata, block=b)
            p = thin_params(params, b, st.max_posterior_draws, rng)
            out = summarise_dimension(d, p, diag, MARGIN, CONF, seed0 + r, st, basis="population", rng=rng)
            for cand, e in out.items():
                fired = {g["name"]: g["fired"] for g in e["guards"]}
                rows.append({"world": world, "rep": r, "candidate": cand, "truth": t.truth[cand],
                             "inferior": t.truth[cand] < thr, "verdict": e["verdict"],
                             "unguarded": e["verdict_unguarded"], "converged": e["diagnostics"]["converged"],
                             "covered": e["interval"][0] <= t.truth[cand] <= e["interval"][1],
                             **{f"fired_{k}": v for k, v in fired.items()}})
        print(f"  {world}: replicates {reps_here[0]}-{reps_here[-1]} fitted and decided in {time.time() - t0:.0f}s",
              file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> dict:
    inf, ok = df[df.inferior], df[~df.inferior]
    mig = lambda s: round(float((s == MIGRATE).mean()), 3) if len(s) else None  # noqa: E731
    out = {"n_inferior": int(len(inf)), "n_noninferior": int(len(ok)),
           "migrate_inferior_unguarded": mig(inf.unguarded), "migrate_inferior_guarded": mig(inf.verdict),
           "migrate_ok_unguarded": mig(ok.unguarded), "migrate_ok_guarded": mig(ok.verdict),
           # a guard "blocks" a non-inferior candidate when the model alone would have migrated it
           "block_rate_noninferior": round(float(((ok.unguarded == MIGRATE) & (ok.verdict != MIGRATE)).sum()
                                                 / max(1, (ok.unguarded == MIGRATE).sum())), 3) if len(ok) else None,
           "coverage": round(float(df.covered.mean()), 3), "converged": round(float(df.converged.mean()), 3)}
    for col in [c for c in df.columns if c.startswith("fired_")]:
        out[f"{col}_inferior"] = round(float(inf[col].fillna(False).mean()), 3) if len(inf) else None
        out[f"{col}_noninferior"] = round(float(ok[col].fillna(False).mean()), 3) if len(ok) else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100, help="replicates per world (each has both candidates)")
    ap.add_argument("--blocks-per-fit", type=int, default=25)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--worlds", default=",".join(MISSPEC_WORLDS))
    ap.add_argument("--annotators", type=int, default=1, help="annotators per labelled request (3 is ~5x slower)")
    args = ap.parse_args()
    t0 = time.time()
    figures, ok = {}, True
    print(f"{'world':16s} {'n_inf':>5s} {'migrate|inferior':>17s} {'(guarded)':>9s} {'migrate|ok':>10s} "
          f"{'(guarded)':>9s} {'block|ok':>8s} {'coverage':>8s}")
    for i, world in enumerate(args.worlds.split(",")):
        df = run_world(world, args.reps, args.blocks_per_fit, args.draws, args.tune, 50_000 + 10_000 * i,
                       n_annot=args.annotators)
        f = summarise(df)
        figures[world] = f
        ok &= f["migrate_inferior_guarded"] is not None and f["migrate_inferior_guarded"] <= 1 - CONF
        print(f"{world:16s} {f['n_inferior']:5d} {f['migrate_inferior_unguarded']:17.3f} "
              f"{f['migrate_inferior_guarded']:9.3f} {f['migrate_ok_unguarded']:10.3f} {f['migrate_ok_guarded']:9.3f} "
              f"{f['block_rate_noninferior']:8.3f} {f['coverage']:8.3f}", flush=True)
    print(json.dumps({"benchmark": "calibration_misspec", "replicates_per_world": args.reps, "margin": MARGIN,
                      "confidence": CONF, "basis": "population", "worlds": figures,
                      "seconds": round(time.time() - t0, 1),
                      "goal": f"guarded migrate rate of a candidate inferior beyond the margin <= {1 - CONF:.2f} "
                              "in every world",
                      "meets_goal": bool(ok)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
