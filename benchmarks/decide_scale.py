"""The decide stage's estimand aggregation in the driver (decision.aggregate: local) or as Ray tasks over the run's
shards (ray): driver peak RSS, wall time and agreement, at N synthetic scored requests (no model time, no PyMC).

Per N: a synthetic pairwise run (tests/support/simulate.simulate_pairwise: two candidates, three judge metrics,
three regions) written to a local run store as the pipeline writes it (traffic shards of 50k requests, score
shards per (model, traffic shard)). Then, per mode, a fresh driver process does what jobs.decide.run does up to
the aggregation (read_scores_compact, prepare) and aggregates with 1,000 synthetic posterior draws (the fit is
the same whatever the mode, so it is left out); a thread samples the driver's RSS every 0.05 s.
Reported: the driver's RSS before the aggregation, its peak during it, the increase, and the wall time; the
ray estimates' largest relative difference from local.

Goal (issue 16): the Ray aggregation adds no more to the driver's peak RSS than the local one, and agrees with it
to float32 precision (relative difference < 1e-5). Last line: one JSON object with the figures and "meets_goal".

    python benchmarks/decide_scale.py [--sizes 200000,1000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARD = 50_000
MIB = 1024 ** 2


def generate(root: str, n: int) -> None:
    from jobs.config import StoreConfig
    from jobs.store import RunStore, shard_id
    from tests.support.simulate import simulate_pairwise

    t = simulate_pairwise(1, n_requests=n, n_labels=300)
    store = RunStore(StoreConfig(root=root), "bench")
    part = np.arange(n) // SHARD
    shard_of = part[np.searchsorted(t.traffic["request_id"].to_numpy(), t.scores["request_id"].to_numpy())]
    for k in range(part.max() + 1):
        store.write_shard("traffic", f"traffic-{k:06d}", t.traffic[part == k].reset_index(drop=True))
    for (model, k), df in t.scores.groupby([t.scores["model"], shard_of]):
        store.write_shard("scores", shard_id("scores", model, f"traffic-{k:06d}"), df.reset_index(drop=True))
    store.write_shard("labels", "labels-000000", t.labels.reset_index(drop=True))


class RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.me, self.peak, self.stop = psutil.Process(), 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.me.memory_info().rss)
            time.sleep(0.05)


def child(root: str, mode: str) -> None:
    """One driver: read, prepare, aggregate in ``mode``; prints one JSON line."""
    import psutil

    from calibration.data import prepare
    from calibration.estimands import finish, local_sums
    from jobs.compact import read_scores_compact
    from jobs.config import StoreConfig
    from jobs.decide import decision_traffic
    from jobs.decide_aggregate import ray_sums
    from jobs.store import RunStore
    from tests.calibration.test_aggregate_split import _params
    from tests.jobs.test_decide_aggregate import _predictors

    if mode == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    store = RunStore(StoreConfig(root=root), "bench")
    scores = read_scores_compact(store)
    data = prepare(scores, store.read_table("labels"), "incumbent", None, "quality", "pairwise",
                   decision_traffic(store, ["region"]), ["region"])
    del scores
    p = _params(data, D=1000)
    before = psutil.Process().memory_info().rss
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    sums = ray_sums(store, data, p, ["region"], None, _predictors(data, p))[0] if mode == "ray" \
        else local_sums(data, p)
    wall = time.perf_counter() - t0
    sampler.stop = True
    sampler.join()
    est = finish(sums, np.random.default_rng(0), data.kind, data.cat_values)
    print(json.dumps({"mode": mode, "n": int(data.n_req), "wall_s": round(wall, 2),
                      "rss_before_mib": round(before / MIB, 1), "rss_peak_mib": round(max(sampler.peak, before) / MIB, 1),
                      "s1": sums.s1.sum(axis=0).tolist(), "fp_mean": est.fp.mean(axis=0).tolist()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200000")
    ap.add_argument("--child", nargs=2, metavar=("ROOT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(tmp, n)
            print(f"N={n}: inputs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            res = {}
            for mode in ("local", "ray"):
                out = subprocess.run([sys.executable, __file__, "--child", tmp, mode], capture_output=True, text=True,
                                     check=True)
                res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        rel = float(np.max(np.abs(np.array(res["ray"]["s1"]) - res["local"]["s1"]) / np.abs(res["local"]["s1"])))
        for mode in ("local", "ray"):
            r = res[mode]
            rows.append({"n": n, "mode": mode, "wall_s": r["wall_s"], "rss_before_mib": r["rss_before_mib"],
                         "rss_peak_mib": r["rss_peak_mib"],
                         "rss_added_mib": round(r["rss_peak_mib"] - r["rss_before_mib"], 1), "max_rel_diff": rel})
    print(f"{'N':>9} {'mode':>6} {'wall s':>7} {'RSS before MiB':>15} {'peak MiB':>9} {'added MiB':>10} {'rel diff':>9}")
    for r in rows:
        print(f"{r['n']:>9} {r['mode']:>6} {r['wall_s']:>7} {r['rss_before_mib']:>15} {r['rss_peak_mib']:>9} "
              f"{r['rss_added_mib']:>10} {r['max_rel_diff']:>9.1e}")
    by = {(r["n"], r["mode"]): r for r in rows}
    sizes = sorted({r["n"] for r in rows})
    meets = all(by[(n, "ray")]["rss_added_mib"] <= by[(n, "local")]["rss_added_mib"] + 1.0
                and by[(n, "ray")]["max_rel_diff"] < 1e-5 for n in sizes)
    print(json.dumps({"rows": rows, "meets_goal": bool(meets)}))


if __name__ == "__main__":
    main()
