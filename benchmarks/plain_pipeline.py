"""The baseline of `benchmarks/pipeline_scale.py` (issue 16): the same work as a Baton run of the benchmark, done by
a plain single-process pandas/pyarrow script, no Ray, no run store.

Per generated input file (100k requests): read the traffic and each candidate's recorded responses, join them on
request_id, compute the same cheap checks (``inference.scorers.Checks``, the function Baton's score stage calls),
write the responses and scores as Parquet; then read the recorded judge verdicts and the labels, and run the same
calibration and decision (``calibration.pipeline.decide``: the same PyMC fit on the labels and the same numpy
aggregation over every scored request), and write decision.json.

What it leaves out, on purpose (what Baton pays for and this script does not): the sampling stage's per-row
contract checks and hashing, quarantine of bad rows, shard commit records and content hashes, verification on
read, resume after a crash (nothing here survives a kill), progress, the lease, the report, and spreading the work
over more than one process. Every table is written once as plain files.

    python benchmarks/plain_pipeline.py CONFIG.yaml OUT_DIR     (CONFIG: the run config pipeline_scale generates)
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _compact(long: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"request_id": long["request_id"].astype("category"),
                         "model": long["model"].astype("category"),
                         "metric": long["metric"].astype("category"),
                         "value": long["value"].to_numpy(dtype=np.float32)})


def _concat_categorical(frames: list[pd.DataFrame]) -> pd.DataFrame:
    from pandas.api.types import union_categoricals

    out = {c: union_categoricals([f[c] for f in frames], ignore_order=True) for c in ("request_id", "model", "metric")}
    out["value"] = np.concatenate([f["value"].to_numpy() for f in frames])
    return pd.DataFrame(out)


def run_plain(raw: dict, out: Path) -> dict:
    """Run the plain pipeline for a pipeline_scale run config; returns per-step seconds."""
    from calibration.pipeline import decide
    from inference.scorers import Checks
    from jobs.config import parse_config

    cfg = parse_config({**raw, "store": {"root": str(out / "unused-store")}}, "<plain>")
    checks = Checks(cfg.scoring.checks)
    out.mkdir(parents=True, exist_ok=True)
    incumbent = cfg.incumbent.name
    cands = [(c.name, Path(c.path)) for c in cfg.candidates]
    seg = list(cfg.traffic.segments)
    times = {"read_join": 0.0, "checks": 0.0, "write": 0.0, "recorded_scores": 0.0, "labels": 0.0, "decide": 0.0}
    score_parts, traffic_parts = [], []
    for f in sorted(Path(cfg.traffic.path).glob("*.parquet")):
        t = time.monotonic()
        traffic = pd.read_parquet(f, columns=["request_id", "response", *seg])
        answers = {incumbent: traffic[["request_id", "response"]]}
        for name, folder in cands:
            answers[name] = pd.read_parquet(folder / f.name, columns=["request_id", "response"])
        batches = []
        for model, frame in answers.items():
            b = frame.assign(model=model)
            if model == incumbent:
                b["incumbent_response"] = None
            else:
                b = b.merge(traffic[["request_id", "response"]].rename(columns={"response": "incumbent_response"}),
                            on="request_id", how="left")
            batches.append(b)
        times["read_join"] += time.monotonic() - t
        t = time.monotonic()
        scored = [_compact(checks(b)) for b in batches]
        times["checks"] += time.monotonic() - t
        t = time.monotonic()
        for model, b in zip(answers, batches):
            b[["request_id", "model", "response"]].to_parquet(out / f"responses-{model}-{f.name}", index=False)
        part = _concat_categorical(scored)
        part.to_parquet(out / f"scores-{f.name}", index=False)
        times["write"] += time.monotonic() - t
        score_parts.append(part)
        traffic_parts.append(traffic[["request_id", *seg]].astype({c: "category" for c in ["request_id", *seg]}))
    t = time.monotonic()
    for path in cfg.recorded_scores:
        score_parts.append(_compact(pd.read_parquet(path)))
    scores = _concat_categorical(score_parts)
    del score_parts
    times["recorded_scores"] = time.monotonic() - t
    t = time.monotonic()
    labels = pd.read_csv(cfg.labels.path)
    traffic = pd.concat(traffic_parts, ignore_index=True)
    times["labels"] = time.monotonic() - t
    t = time.monotonic()
    decision = decide(scores, labels, traffic, cfg.decision, incumbent, [c for c, _ in cands], seg, run_id="plain")
    (out / "decision.json").write_text(json.dumps(decision.as_dict(), indent=2, default=float))
    times["decide"] = time.monotonic() - t
    doc = decision.as_dict()
    return {"steps_s": {k: round(v, 3) for k, v in times.items()}, "score_rows": int(len(scores)),
            "verdicts": doc["verdicts"],
            "estimates": {c: b["dimensions"]["quality"]["estimate"] for c, b in doc["candidates"].items()}}


def main() -> int:
    import yaml

    raw = yaml.safe_load(Path(sys.argv[1]).read_text())
    raw.pop("_n", None)
    t = time.monotonic()
    res = run_plain(raw, Path(sys.argv[2]))
    res["wall_s"] = round(time.monotonic() - t, 3)
    # the largest resident size of this process (PyMC's chain processes are children and not included)
    res["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
