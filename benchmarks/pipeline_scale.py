"""How Baton's own cost grows with traffic (no model time): the real pipeline at N = 100k, 1M and 10M requests,
against a plain single-process script doing the same work (benchmarks/plain_pipeline.py) measured in the same run.

Per N, generated inputs (not timed): traffic with text lengths drawn from the shipped PandaLM demo data
(demo/pandalm/*.jsonl, each text made unique by a request tag), recorded responses of two candidates, recorded
pairwise judge verdicts (both position orders, correlated with a simulated truth so the calibration has signal)
and 2,000 simulated human labels (1,000 per candidate). Then `jobs.migrate.run_pipeline` runs for real in a fresh
driver process (local Ray with 2 CPUs): sample -> replay (recorded engine; the two candidates side by side) ->
score (the cheap deterministic checks; ``scoring.num_actors: 2``, one actor per CPU) -> recorded_scores -> labels
-> decide (PyMC) -> report, on a local run store, and for the 100k case also on the moto S3 server on loopback. At the sizes in ``--plain-sizes`` the plain script (no Ray, no run store: read,
join, checks, write Parquet, the same PyMC fit and aggregation; what it leaves out is in its docstring) runs on
the same inputs in a fresh process. Embeddings (model time) are measured by benchmarks/embed_throughput.py.

Measured per N and stage: wall time, requests per second, peak RSS of the driver and of the Ray workers (psutil
sampling every 0.1 s of the driver and of every process under it: raylet, GCS and the ``ray::`` workers), Ray's
object-store spill, and the plain script's wall time and peak RSS.

Goal (issue 16): at 10M, Baton (wall time from Ray start to the report) at least as fast as the plain script
(``ratio_vs_plain_at_10M`` = plain / Baton >= 1.0); the driver's peak RSS under 2 GiB at 10M and flat from 1M to
10M (``driver_ratio_10M_1M`` <= 1.2); time(10M) / time(1M) <= 11. The last line is one JSON object with the
figures and "meets_goal". The whole default run is meant to finish within 55 minutes on a 2-core machine.

    python benchmarks/pipeline_scale.py [--sizes 100000,1000000,10000000] [--s3-sizes 100000]
                                        [--plain-sizes 1000000,10000000] [--embed-slice 0]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "demo" / "pandalm"
INCUMBENT = "incumbent"
CANDIDATES = ("cand-a", "cand-b")
WIN_RATE = {"cand-a": 0.55, "cand-b": 0.38}  # simulated truth: P(candidate better) per request
FILE_ROWS = 100_000  # rows per generated input file (traffic, recorded responses, judge scores)
SHARD_ROWS = 20_000  # rows per run-store shard: ~5-10 MB Parquet objects, few enough tasks that per-task overhead is small
STAGES = ("sample", "replay", "score", "recorded_scores", "labels", "decide", "report")
GIB = 1024 ** 3


# -- inputs --------------------------------------------------------------------------------------------------
def _pools() -> tuple[list[str], list[str], list[str]]:
    traffic = pd.read_json(DEMO / "traffic.jsonl", lines=True, dtype=False)
    prompts = [m[-1]["content"] for m in traffic["messages"]]
    answers = [r for r in traffic["response"] if isinstance(r, str)]
    for f in sorted(DEMO.glob("responses-*.jsonl")):
        answers += [r for r in pd.read_json(f, lines=True, dtype=False)["response"] if isinstance(r, str)]
    apps = sorted(traffic["app"].astype(str).unique())
    return prompts, answers, apps


def _texts(pool: list[str], idx: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Pool texts made unique per request (a realistic length, not a dictionary-compressible repeat)."""
    arr = np.array(pool, dtype=object)[idx]
    return (arr + tags).astype(object)


def generate(n: int, out: Path, labels_per_candidate: int, seed: int = 0) -> dict:
    """Write the inputs of an N-request run under ``out``; returns the raw run config (store root filled later)."""
    rng = np.random.default_rng(seed)
    prompts, answers, apps = _pools()
    for sub in ("traffic", *CANDIDATES, "judge"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    judge_files = []
    for f, lo in enumerate(range(0, n, FILE_ROWS)):
        hi = min(n, lo + FILE_ROWS)
        m = hi - lo
        ids = np.char.add("r", np.char.zfill(np.arange(lo, hi).astype(str), 8)).astype(object)
        tags = np.char.add(" #", ids.astype(str)).astype(object)
        content = _texts(prompts, rng.integers(0, len(prompts), m), tags)
        messages = [[{"role": "user", "content": c}] for c in content]
        pd.DataFrame({
            "request_id": ids, "messages": messages,
            "response": _texts(answers, rng.integers(0, len(answers), m), tags),
            "app": np.array(apps, dtype=object)[rng.integers(0, len(apps), m)],
        }).to_parquet(out / "traffic" / f"part-{f:04d}.parquet", index=False)
        judge = []
        for cand in CANDIDATES:
            pd.DataFrame({
                "request_id": ids, "response": _texts(answers, rng.integers(0, len(answers), m), tags),
                "prompt_tokens": rng.integers(20, 400, m), "completion_tokens": rng.integers(5, 300, m),
                "latency_s": rng.gamma(2.0, 0.4, m), "finish_reason": "stop", "attempts": 1,
            }).to_parquet(out / cand / f"part-{f:04d}.parquet", index=False)
            truth = _truth(cand, ids, seed)
            for order in ("ab", "ba"):  # the judge agrees with the truth 75% of the time, else a coin
                agree = rng.random(m) < 0.75
                value = np.where(agree, truth, rng.choice([0.0, 0.5, 1.0], m))
                judge.append(pd.DataFrame({"request_id": ids, "model": cand,
                                           "metric": f"judge.pairwise.quality.{order}", "value": value}))
        path = out / "judge" / f"part-{f:04d}.parquet"
        pd.concat(judge, ignore_index=True).to_parquet(path, index=False)
        judge_files.append(str(path))
    labels = []
    for cand in CANDIDATES:
        pick = np.sort(rng.choice(n, size=min(n, labels_per_candidate), replace=False))
        ids = np.char.add("r", np.char.zfill(pick.astype(str), 8)).astype(object)
        truth = _truth(cand, ids, seed)
        noisy = np.where(rng.random(len(ids)) < 0.9, truth, rng.choice([0.0, 0.5, 1.0], len(ids)))
        labels.append(pd.DataFrame({"request_id": ids, "model": cand, "dimension": "quality",
                                    "annotator": "sim", "value": noisy}))
    pd.concat(labels, ignore_index=True).to_csv(out / "labels.csv", index=False)
    return {
        "run_id": f"scale-{n}",
        "store": {"root": None},
        "traffic": {"path": str(out / "traffic"), "segments": ["app"]},
        "incumbent": {"name": INCUMBENT},
        "candidates": [{"name": c, "kind": "recorded", "path": str(out / c)} for c in CANDIDATES],
        # one scoring actor per CPU: the checks are CPU work (the default, 1, leaves a CPU idle on this machine)
        "scoring": {"embeddings": {"enabled": False}, "num_actors": 2},
        "recorded_scores": judge_files,
        "labels": {"path": str(out / "labels.csv")},
        "decision": {"dimensions": [{"name": "quality", "kind": "pairwise", "gating": True}], "margin": 0.05,
                     "confidence": 0.9},
        "execution": {"num_cpus": 2, "shard_rows": SHARD_ROWS},
    }


def _truth(cand: str, ids: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic per (candidate, request): the same truth for the judge and for the human labels."""
    num = np.array([int(i[1:]) for i in ids], dtype=np.int64)
    u = np.random.default_rng([seed, CANDIDATES.index(cand)]).random(num.max() + 1 if len(num) else 0)[num]
    return np.where(u < WIN_RATE[cand], 1.0, np.where(u < WIN_RATE[cand] + 0.1, 0.5, 0.0))


# -- one measured run (a fresh driver process) ---------------------------------------------------------------
class MemorySampler(threading.Thread):
    """RSS of this process and of every process under it (Ray's raylet, GCS and workers), every 0.1 s."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.samples: list[tuple[float, int, int, int]] = []  # (t, driver, workers sum, largest worker)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            driver = self.me.memory_info().rss
            total, largest = 0, 0
            for p in self.me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                    continue
                total += rss
                largest = max(largest, rss)
            self.samples.append((time.monotonic(), driver, total, largest))
            self.stop.wait(0.1)

    def peak(self, t0: float, t1: float) -> dict:
        rows = [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]
        return {"driver_rss_gib": round(max(r[1] for r in rows) / GIB, 3),
                "workers_rss_gib": round(max(r[2] for r in rows) / GIB, 3),
                "largest_worker_rss_gib": round(max(r[3] for r in rows) / GIB, 3)}


class StageClock(logging.Handler):
    """Stage boundaries from run_pipeline's log lines ("stage NAME: start" / "stage NAME: done ...")."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("stage "):
            name = msg.split()[1].rstrip(":")
            (self.start if msg.endswith("start") else self.end)[name] = time.monotonic()


def run_one(config_path: str, result_path: str) -> None:
    import yaml

    from jobs.config import parse_config
    from jobs.migrate import run_pipeline
    from jobs.store import RunStore

    raw = yaml.safe_load(Path(config_path).read_text())
    n = int(raw.pop("_n"))
    cfg = parse_config(raw, config_path)
    sampler = MemorySampler()
    clock = StageClock()
    log = logging.getLogger("baton")
    log.setLevel(logging.INFO)
    log.addHandler(clock)
    sampler.start()
    from jobs.shards import ensure_ray

    t_ray = time.monotonic()
    ensure_ray(cfg)  # started here (not inside run_pipeline) so the object store's spill can be read afterwards
    t0 = time.monotonic()
    decision = run_pipeline(cfg, progress=False)
    t1 = time.monotonic()
    spill = _spill()
    if hasattr(decision, "as_dict"):
        decision = decision.as_dict()
    import ray

    ray.shutdown()
    sampler.stop.set()
    sampler.join()
    store = RunStore(cfg.store, cfg.run_id)
    counts = {t: store.count_rows(t) for t in ("traffic", "responses", "scores", "labels", "quarantine")}
    objects = store.fs.find(store.path(), detail=True)  # what the run left in the store: objects and bytes
    footprint = {"objects": len(objects), "gib": round(sum(int(o.get("size") or 0) for o in objects.values()) / GIB, 3)}
    stages = {}
    for s in STAGES:
        a, b = clock.start.get(s), clock.end.get(s)
        if a is None or b is None:
            continue
        stages[s] = {"wall_s": round(b - a, 3), **sampler.peak(a, b)}
    total = sum(v["wall_s"] for v in stages.values())
    Path(result_path).write_text(json.dumps({
        "n": n, "store": "s3" if cfg.store.root.startswith("s3://") else "local", "stages": stages,
        "pipeline_s": round(total, 3), "wall_incl_ray_start_s": round(t1 - t_ray, 3), "ray_start_s": round(t0 - t_ray, 3),
        **sampler.peak(t_ray, t1), "spill": spill,
        "counts": counts, "footprint": footprint, "verdicts": decision["verdicts"],
        "estimates": {c: b["dimensions"]["quality"]["estimate"] for c, b in decision["candidates"].items()},
    }))


def _spill() -> dict | None:
    """Bytes and objects Ray's object store spilled to disk during the run (Ray's own counters; a private API, so
    None when it is not there)."""
    try:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        gcs = ray.get_runtime_context().gcs_address  # this run's cluster, not another Ray on the machine
        stats = get_memory_info_reply(get_state_from_address(gcs)).store_stats
        return {"spilled_gib": round(stats.spilled_bytes_total / GIB, 3), "spilled_objects": int(stats.spilled_objects_total),
                "restored_gib": round(stats.restored_bytes_total / GIB, 3)}
    except Exception:  # noqa: BLE001 - figures for the record only
        return None


def run_embed_slice(config_path: str, result_path: str) -> None:
    """Model time, for reference: the real MiniLM embedder scoring a slice (not part of the goal)."""
    import yaml

    from jobs.config import parse_config
    from jobs.sample import run_sample
    from jobs.score import score
    from jobs.shards import ensure_ray
    from jobs.store import RunStore

    raw = yaml.safe_load(Path(config_path).read_text())
    cfg = parse_config(raw, config_path)
    store = RunStore(cfg.store, cfg.run_id)
    run_sample(cfg, store)
    ensure_ray(cfg)
    from jobs.replay import replay

    replay(cfg, store, progress=False)
    t = time.monotonic()
    stats = score(cfg, store, progress=False)
    Path(result_path).write_text(json.dumps({"rows": cfg.traffic.sample.n, "score_wall_s": time.monotonic() - t,
                                             "embedded": stats["embedded"], "embed_s_sum": stats.get("embed_s")}))


def _child(mode: str, raw: dict, work: Path, env: dict) -> dict:
    import yaml

    cfg_path = work / f"run-{raw['run_id']}.yaml"
    res_path = work / f"result-{raw['run_id']}.json"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run([sys.executable, __file__, f"--{mode}", str(cfg_path), str(res_path)], env=env,
                          cwd=str(ROOT), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run {raw['run_id']} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(res_path.read_text())


# -- orchestration ----------------------------------------------------------------------------------------------
def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000", help="request counts, comma-separated")
    ap.add_argument("--s3-sizes", default="100000", help="sizes also run on the moto S3 server ('' for none)")
    ap.add_argument("--plain-sizes", default="1000000,10000000",
                    help="sizes also run by the plain single-process script, the baseline ('' for none)")
    ap.add_argument("--labels", type=int, default=1000, help="simulated human labels per candidate")
    ap.add_argument("--embed-slice", type=int, default=0, help="requests of an embedding slice (0: skip; "
                    "benchmarks/embed_throughput.py measures embeddings)")
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder, removed afterwards)")
    ap.add_argument("--run-one", nargs=2, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS)
    ap.add_argument("--embed-one", nargs=2, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        run_one(*args.run_one)
        return 0
    if args.embed_one:
        run_embed_slice(*args.embed_one)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    s3_sizes = {int(s) for s in args.s3_sizes.split(",") if s} & set(sizes)
    plain_sizes = {int(s) for s in args.plain_sizes.split(",") if s} & set(sizes)
    plain: dict[int, dict] = {}
    tmp = tempfile.TemporaryDirectory(prefix="baton-scale-") if args.work is None else None
    work = Path(args.work or tmp.name)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    results: list[dict] = []
    smallest: dict | None = None
    moto = None
    try:
        for n in sorted(sizes):
            t = time.monotonic()
            raw = generate(n, work / f"inputs-{n}", args.labels)
            raw["_n"] = n
            smallest = smallest or json.loads(json.dumps(raw))
            print(f"N={n}: inputs generated in {time.monotonic() - t:.1f} s (not timed); {_load()}", flush=True)
            targets = [("local", str(work / f"store-{n}"))]
            if n in s3_sizes:
                targets.append(("s3", None))
            for kind, root in targets:
                run_raw = json.loads(json.dumps(raw))
                run_env = dict(env)
                if kind == "s3":
                    moto = moto or _start_moto()
                    endpoint = "http://%s:%d" % moto.get_host_and_port()
                    _make_bucket(endpoint, f"scale-{n}")
                    run_raw["store"] = {"root": f"s3://scale-{n}/baton", "endpoint_url": endpoint}
                    run_env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                                   AWS_DEFAULT_REGION="us-east-1")
                else:
                    run_raw["store"] = {"root": root}
                run_raw["run_id"] = f"scale-{n}-{kind}"
                load_before = _load()
                res = _child("run-one", {k: v for k, v in run_raw.items()}, work, run_env)
                res["load_before"], res["load_after"] = load_before, _load()
                results.append(res)
                print(f"N={n} {kind}: {res['pipeline_s']:.1f} s, {n / res['pipeline_s']:.0f} req/s, driver peak "
                      f"{res['driver_rss_gib']:.2f} GiB; {res['load_after']}", flush=True)
                if kind == "local":
                    shutil.rmtree(root, ignore_errors=True)  # disk: a 10M store is several GB
            if n in plain_sizes:
                plain[n] = _plain(raw, work, n, env)
                print(f"N={n} plain: {plain[n]['wall_s']:.1f} s, peak RSS {plain[n]['peak_rss_gib']:.2f} GiB; "
                      f"{_load()}", flush=True)
            if not (args.embed_slice and n == min(sizes)):  # the embedding slice reuses the smallest inputs
                shutil.rmtree(work / f"inputs-{n}", ignore_errors=True)
        embed = None
        if args.embed_slice:
            n_src = min(sizes)
            emb = json.loads(json.dumps(smallest))
            emb.pop("_n", None)
            emb.update(run_id="embed-slice", store={"root": str(work / "store-embed")},
                       scoring={"embeddings": {"enabled": True}},
                       traffic={**emb["traffic"], "sample": {"n": min(args.embed_slice, n_src), "seed": 0}})
            embed = _child("embed-one", emb, work, env)
    finally:
        if moto is not None:
            moto.stop()
        if tmp is not None:
            tmp.cleanup()
    return report(results, embed, plain)


def _plain(raw: dict, work: Path, n: int, env: dict) -> dict:
    """The baseline on the same inputs in a fresh process; its own wall time (after imports) and peak RSS."""
    import yaml

    cfg_path = work / f"plain-{n}.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / f"plain-out-{n}"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plain_pipeline.py"), str(cfg_path), str(out)],
                          env=env, cwd=str(ROOT), capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"plain run at N={n} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load_after"] = _load()
    return res


def _start_moto():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access-log line per S3 request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server


def _make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)


def report(results: list[dict], embed: dict | None, plain: dict[int, dict]) -> int:
    print()
    head = f"{'N':>9} {'store':>5} {'stage':>16} {'wall s':>8} {'req/s':>9} {'driver GiB':>10} {'workers GiB':>11}"
    print(head)
    print("-" * len(head))
    for r in results:
        for s, v in r["stages"].items():
            rate = r["n"] / v["wall_s"] if v["wall_s"] > 0 else float("inf")
            print(f"{r['n']:>9} {r['store']:>5} {s:>16} {v['wall_s']:>8.2f} {rate:>9.0f} {v['driver_rss_gib']:>10.2f} "
                  f"{v['workers_rss_gib']:>11.2f}")
        print(f"{r['n']:>9} {r['store']:>5} {'TOTAL stages':>16} {r['pipeline_s']:>8.2f} {r['n'] / r['pipeline_s']:>9.0f} "
              f"{r['driver_rss_gib']:>10.2f} {r['workers_rss_gib']:>11.2f}   ({r['load_after']})")
        print(f"{r['n']:>9} {r['store']:>5} {'wall, Ray start':>16} {r['wall_incl_ray_start_s']:>8.2f} "
              f"{r['n'] / r['wall_incl_ray_start_s']:>9.0f}   (Ray start {r['ray_start_s']:.1f} s; spill {r['spill']})")
        if r["store"] == "local" and r["n"] in plain:
            p = plain[r["n"]]
            print(f"{r['n']:>9} {'plain':>5} {'script (baseline)':>16} {p['wall_s']:>8.2f} {r['n'] / p['wall_s']:>9.0f} "
                  f"{p['peak_rss_gib']:>10.2f} {'-':>11}   steps {p['steps_s']}   <- baseline")
        print(f"{'':>9} counts {r['counts']}; store {r['footprint']}; verdicts {r['verdicts']}")
    local = {r["n"]: r for r in results if r["store"] == "local"}
    ns = sorted(local)
    ratios = {}
    for a, b in zip(ns, ns[1:]):
        ratios[f"{b}/{a}"] = {"size_ratio": b / a, "time_ratio": round(local[b]["wall_incl_ray_start_s"] / local[a]["wall_incl_ray_start_s"], 2),
                              "stages": {s: round(local[b]["stages"][s]["wall_s"] / max(local[a]["stages"][s]["wall_s"], 1e-9), 2)
                                         for s in local[a]["stages"] if s in local[b]["stages"]}}
        print(f"time ratio {b}/{a} (x{b // a} requests): total x{ratios[f'{b}/{a}']['time_ratio']}; per stage "
              f"{ratios[f'{b}/{a}']['stages']}")
    if embed:
        print(f"embedding slice (model time, not in the goal): {embed['embedded']} texts embedded, score stage "
              f"{embed['score_wall_s']:.1f} s for {embed['rows']} requests x 3 models")
    M1, M10 = 1_000_000, 10_000_000
    goal = {"min_ratio_vs_plain_at_10M": 1.0, "max_peak_driver_rss_gib_at_10M": 2.0, "max_driver_ratio_10M_1M": 1.2,
            "max_time_ratio_10M_1M": 11}

    def wall(n):
        return local[n]["wall_incl_ray_start_s"] if n in local else None

    ratio_plain = round(plain[M10]["wall_s"] / wall(M10), 3) if M10 in plain and M10 in local else None
    ratio_plain_1m = round(plain[M1]["wall_s"] / wall(M1), 3) if M1 in plain and M1 in local else None
    drv10 = local[M10]["driver_rss_gib"] if M10 in local else None
    drv_ratio = round(drv10 / local[M1]["driver_rss_gib"], 3) if drv10 is not None and M1 in local else None
    t_ratio = round(wall(M10) / wall(M1), 2) if M10 in local and M1 in local else None
    print(f"ratio plain / Baton: {ratio_plain_1m} at 1M, {ratio_plain} at 10M (goal >= 1.0 at 10M); driver peak "
          f"{drv10} GiB at 10M, x{drv_ratio} of 1M (goal < 2 GiB, <= 1.2); time 10M/1M x{t_ratio} (goal <= 11)")
    checks = [ratio_plain is not None and ratio_plain >= goal["min_ratio_vs_plain_at_10M"],
              drv10 is not None and drv10 < goal["max_peak_driver_rss_gib_at_10M"],
              drv_ratio is not None and drv_ratio <= goal["max_driver_ratio_10M_1M"],
              t_ratio is not None and t_ratio <= goal["max_time_ratio_10M_1M"]]
    print(json.dumps({
        "benchmark": "pipeline_scale",
        "runs": [{"n": r["n"], "store": r["store"], "pipeline_s": r["pipeline_s"], "wall_s": r["wall_incl_ray_start_s"],
                  "req_per_s": round(r["n"] / r["wall_incl_ray_start_s"], 1), "driver_rss_gib": r["driver_rss_gib"],
                  "workers_rss_gib": r["workers_rss_gib"], "largest_worker_rss_gib": r["largest_worker_rss_gib"],
                  "spill": r["spill"], "stages_s": {s: v["wall_s"] for s, v in r["stages"].items()},
                  "estimates": r["estimates"], "store_footprint": r["footprint"],
                  "load_after": r["load_after"]}
                 for r in results],
        "plain": {str(n): {"wall_s": p["wall_s"], "peak_rss_gib": p["peak_rss_gib"], "steps_s": p["steps_s"],
                           "estimates": p["estimates"],
                           "load_after": p["load_after"]} for n, p in plain.items()},
        "ratios": {k: v["time_ratio"] for k, v in ratios.items()},
        "ratio_vs_plain_at_1M": ratio_plain_1m,
        "ratio_vs_plain_at_10M": ratio_plain,
        "driver_ratio_10M_1M": drv_ratio,
        "time_ratio_10M_1M": t_ratio,
        "req_per_s_at_1M": round(M1 / wall(M1), 1) if M1 in local else None,
        "req_per_s_at_10M": round(M10 / wall(M10), 1) if M10 in local else None,
        "peak_driver_rss_gib_at_10M": drv10,
        "peak_driver_rss_gib": max((r["driver_rss_gib"] for r in results), default=None), "embed_slice": embed,
        "goal": goal, "meets_goal": bool(all(checks)),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
