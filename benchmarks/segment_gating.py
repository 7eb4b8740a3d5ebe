"""Segment gating on a 6 regions x 3 dimensions world: false blocks at the margin, missed regressions.

World (tests.support.simulate.simulate_segment_world): one candidate, three pairwise dimensions, six regions, 1,200
scored requests (about 200 per region), 300 labelled requests per dimension (one annotator), an LLM judge in two
position orders (position bias +-0.5, noise 0.7) per dimension. Margin 0.05 (threshold: win rate 0.45), C = 0.9,
the segment rule of calibration.segments (one simultaneous band per dimension at level 0.9^(1/3)).

- ``at_margin``: every region of every dimension has population win rate exactly 0.45 (non-inferior, on the
  boundary, the least favourable case). A false block is the segment rule firing on any of the 18 cells.
- ``one_regressing``: win rate 0.55 everywhere except one region (apac) on one dimension (quality) at 0.25,
  i.e. 0.20 beyond the margin. A miss is a ``migrate`` verdict for the candidate.
Verdicts are computed as if every fit had converged (so a convergence failure cannot hide a miss); divergences are
reported. The per-segment veto that the joint rule replaces (P_seg(NI) <= 1 - C on each cell) is reported beside
it. Replicates are fitted as independent blocks of one vectorised NUTS run (calibration.models).
Goal: false-block rate <= 0.10 and migrate rate <= 0.10. Usage: python benchmarks/segment_gating.py [--reps 100]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration import decision, segments  # noqa: E402
from calibration.data import prepare  # noqa: E402
from calibration.estimands import aggregate, thin_params  # noqa: E402
from calibration.models import fit  # noqa: E402
from tests.support.simulate import simulate_segment_world  # noqa: E402

CONF, MARGIN, MIN_SEG_N = 0.9, 0.05, 20
DIMS = ("quality", "safety", "style")
REGIONS = ("eu", "us", "apac", "latam", "mena", "africa")
AT_MARGIN = np.full((3, 6), 0.45)
ONE_REGRESSING = np.full((3, 6), 0.55)
ONE_REGRESSING[0, 2] = 0.25


def run_scenario(name: str, win_rate: np.ndarray, reps: int, seed0: int, reps_per_fit: int, draws: int,
                 tune: int) -> dict:
    thr_ni, thr_sup = decision.thresholds("pairwise", MARGIN)
    level = segments.family_level(CONF, len(DIMS))
    rows, divergences, fits = [], 0, 0
    for start in range(0, reps, reps_per_fit):
        reps_here = list(range(start, min(reps, start + reps_per_fit)))
        worlds = [simulate_segment_world(seed0 + r, win_rate, regions=REGIONS, dimensions=DIMS) for r in reps_here]
        blocks = [prepare(w[d].scores, w[d].labels, "incumbent", None, d, "pairwise", w[d].traffic, ["region"])
                  for w in worlds for d in DIMS]
        idata, params = fit(blocks, draws=draws, tune=tune, seed=seed0 + start)
        divergences += int(idata.sample_stats["diverging"].to_numpy().sum())
        fits += 1
        rng = np.random.default_rng(seed0 + start)
        for i, r in enumerate(reps_here):
            verdicts, joint_block, old_block, blocked_cells = [], False, False, []
            for j, d in enumerate(DIMS):
                b = i * len(DIMS) + j
                data = blocks[b]
                est = aggregate(data, thin_params(params, b, 1000, rng), rng)
                emask = data.estimand_mask()[:, 0]
                labelled = np.zeros(data.n_req, dtype=bool)
                labelled[np.unique(data.lab_req)] = True
                gate = segments.gate_segments(data, est, 0, labelled, emask, thr_ni, thr_sup, CONF, level, MIN_SEG_N)
                p_ni = decision.prob_above(est.fp[:, 0], thr_ni)
                verdicts.append(decision.dimension_verdict(p_ni, CONF, True, gate.blocking)[0])
                joint_block |= bool(gate.blocking)
                blocked_cells += [f"{d}/{s}" for s in gate.blocking]
                old_block |= any(e["gating"] and e["p_noninferior_population"] <= 1 - CONF + 1e-9
                                 for e in gate.entries.values())
            rows.append({"rep": r, "verdict": decision.combine(verdicts), "joint_block": joint_block,
                         "old_block": old_block, "cells": blocked_cells})
        print(f"  {name}: {len(rows)}/{reps} replicates, {time.strftime('%H:%M:%S')}: blocked "
              f"{sum(x['joint_block'] for x in rows)}, per-segment veto {sum(x['old_block'] for x in rows)}, migrate "
              f"{sum(x['verdict'] == decision.MIGRATE for x in rows)}", flush=True)
    verdicts = [x["verdict"] for x in rows]
    return {
        "replicates": len(rows), "fits": fits, "divergences": divergences,
        "blocked_rate": round(float(np.mean([x["joint_block"] for x in rows])), 3),
        "blocked_rate_per_segment_veto": round(float(np.mean([x["old_block"] for x in rows])), 3),
        "migrate_rate": round(verdicts.count(decision.MIGRATE) / len(rows), 3),
        "verdicts": {v: verdicts.count(v) for v in (decision.MIGRATE, decision.MORE, decision.REJECT)},
        "regressing_cell_found_rate": round(float(np.mean(["quality/region=apac" in x["cells"] for x in rows])), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100, help="replicates per scenario")
    ap.add_argument("--reps-per-fit", type=int, default=10, help="replicates per vectorised NUTS run (x 3 blocks)")
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--tune", type=int, default=400)
    ap.add_argument("--scenario", choices=["at_margin", "one_regressing"], action="append",
                    help="run only these (to run the two in parallel processes); default both")
    args = ap.parse_args()
    t0 = time.time()
    res = {}
    for name, wr, seed0 in (("at_margin", AT_MARGIN, 50_000), ("one_regressing", ONE_REGRESSING, 60_000)):
        if args.scenario and name not in args.scenario:
            continue
        res[name] = run_scenario(name, wr, args.reps, seed0, args.reps_per_fit, args.draws, args.tune)
    if len(res) < 2:
        print(json.dumps({"benchmark": "segment_gating", "partial": True, **res, "seconds": round(time.time() - t0, 1)}))
        return 0
    am, reg = res["at_margin"], res["one_regressing"]
    print(f"{'scenario':16s} {'reps':>5s} {'blocked':>8s} {'per-seg veto':>13s} {'migrate':>8s}  verdicts")
    for name, f in res.items():
        print(f"{name:16s} {f['replicates']:5d} {f['blocked_rate']:8.3f} {f['blocked_rate_per_segment_veto']:13.3f} "
              f"{f['migrate_rate']:8.3f}  {f['verdicts']}")
    meets = am["blocked_rate"] <= 0.10 and reg["migrate_rate"] <= 0.10
    print(json.dumps({
        "benchmark": "segment_gating", "regions": len(REGIONS), "dimensions": len(DIMS),
        "false_block_rate_at_margin": am["blocked_rate"], "migrate_rate_one_regressing": reg["migrate_rate"],
        "replicates": {"at_margin": am["replicates"], "one_regressing": reg["replicates"]},
        "per_segment_veto_false_block_rate": am["blocked_rate_per_segment_veto"],
        "per_segment_veto_migrate_rate_note": "n/a (the veto only adds blocks)",
        "regressing_cell_found_rate": reg["regressing_cell_found_rate"],
        "verdicts": {"at_margin": am["verdicts"], "one_regressing": reg["verdicts"]},
        "divergences": {"at_margin": am["divergences"], "one_regressing": reg["divergences"]},
        "draws": args.draws, "tune": args.tune, "seconds": round(time.time() - t0, 1),
        "goal": "at the margin everywhere, blocked in <= 10% of runs; one region 0.20 beyond the margin on one "
                "dimension, migrate in <= 10% of runs",
        "meets_goal": bool(meets)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
