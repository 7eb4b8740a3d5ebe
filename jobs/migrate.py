"""`python -m jobs.migrate --config URI` (and `baton run`): the whole pipeline, idempotent for a run id.

traffic -> responses -> scores -> labels -> decision -> report, each stage a table in the run store.
Every stage skips what is already committed, so resubmitting a failed run resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np
import pandas as pd

from calibration.schema import Decision
from jobs.config import RunConfig, load_config
from jobs.contracts import QUARANTINE_COLUMNS, iter_table_chunks, validate_scores
from jobs.errors import EXIT_GATE, EXIT_OK
from jobs.shards import ensure_ray
from jobs.store import RunStore, shard_id, storage_options

log = logging.getLogger("baton")
RECORDED_CHUNK_ROWS = 500_000  # rows per committed shard of a recorded score file: the driver holds one at a time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.entry import config_arguments, retry_errors_argument

    config_arguments(parser)
    retry_errors_argument(parser)
    parser.add_argument("--fail-unless-migrate", action="store_true",
                        help=f"exit {EXIT_GATE} unless every candidate's verdict is migrate (for CI gates)")
    parser.add_argument("--no-labels", action="store_true",
                        help="no human labels yet: stop after scoring and say how to export requests to label "
                             "(as labels.mode: none)")


def main(args: argparse.Namespace) -> int:
    from jobs.replay import with_retry_flag

    cfg = with_retry_flag(load_config(args.config), args)
    decision = run_pipeline(cfg, progress=not args.no_progress, no_labels=args.no_labels, config_uri=args.config)
    if gate_fails(decision, args.fail_unless_migrate or cfg.decision.fail_unless_migrate):
        return EXIT_GATE
    return EXIT_OK


def gate_fails(decision: Decision | None, gate: bool) -> bool:
    """`--fail-unless-migrate` (or decision.fail_unless_migrate): no decision (stopped before labels) passes no gate."""
    return gate and (decision is None or not decision.gate_passes())


def run_pipeline(cfg: RunConfig, progress: bool = True, truth: dict | None = None, no_labels: bool = False,
                 config_uri: str = "CONFIG") -> Decision | None:
    """Run (or resume) every stage; returns the decision document, or None when the run stops after scoring for
    want of labels (``no_labels`` or labels.mode: none). `truth` (demo only) goes into the report; `config_uri`
    names the config in the commands an error suggests."""
    from jobs.preflight import preflight

    store = RunStore(cfg.store, cfg.run_id)
    # before any compute: paths, env vars, the store (bucket, credentials), inputs and labels fail here
    preflight(cfg, store, no_labels=no_labels, source=config_uri)
    # One driver per run id: a second `baton run` waits (execution.lease_wait_s) or exits 2 naming the holder.
    with store.lease(cfg.execution.lease_ttl_s).acquire(cfg.execution.lease_wait_s) as lease:
        return _run_stages(cfg, store, lease, progress, truth, no_labels, config_uri)


def _run_stages(cfg: RunConfig, store: RunStore, lease, progress: bool, truth: dict | None, no_labels: bool,
                config_uri: str) -> Decision | None:
    from jobs import decide, labels, replay, report, sample, score
    from jobs.integrity import repair_run
    from jobs.preflight import labels_off

    repair_run(store, config_uri)  # corrupt shards (and what was computed from them) are set aside, redone below
    store.update_manifest(config=cfg.model_dump(mode="json"))
    timings: dict[str, float] = {}

    def stage(name: str, fn):
        lease.check()  # a driver whose lease was taken over stops before doing more
        started = time.monotonic()
        log.info("stage %s: start", name)
        out = fn()
        timings[name] = round(time.monotonic() - started, 3)
        # Each stage records its own statistics in the manifest; here only its wall time.
        store.update_manifest(stages={name: {"wall_s": timings[name]}})
        log.info("stage %s: done in %.1f s", name, timings[name])
        return out

    stage("sample", lambda: sample.run(cfg, store))
    start_local_ray(cfg)
    stage("replay", lambda: replay.run(cfg, store, progress=progress))
    stage("score", lambda: score.run(cfg, store, progress=progress))
    stage("recorded_scores", lambda: import_recorded_scores(cfg, store))
    if labels_off(cfg, no_labels):
        store.update_manifest(stages={"labels": {"mode": "none"}})
        print_next_steps(store, config_uri)
        return None
    stage("labels", lambda: labels.run(cfg, store))
    decision = stage("decide", lambda: decide.run(cfg, store))
    stage("report", lambda: report.run(cfg, store, decision, truth))
    print_verdicts(decision, store)
    return decision


def start_local_ray(cfg: RunConfig) -> None:
    """ensure_ray; a local Ray this driver starts itself is tied to its life (jobs.ray_reaper)."""
    import os

    import ray

    from jobs.ray_reaper import fate_share

    starts_here = not (ray.is_initialized() or cfg.execution.ray_address or os.environ.get("RAY_ADDRESS"))
    ensure_ray(cfg)
    if starts_here:
        fate_share()


def import_recorded_scores(cfg: RunConfig, store: RunStore) -> dict:
    """Validate score tables computed elsewhere and commit them to the scores table.

    Each file is streamed in chunks of ``RECORDED_CHUNK_ROWS`` rows, one shard per chunk, so the driver never
    holds a whole file. Duplicate (request_id, model, metric) rows across chunks of a file are found by a 64-bit
    hash of the key (8 bytes per kept row) and quarantined like duplicates within a chunk. A file committed whole
    by an earlier run (shard ``recorded-<i>``) is skipped; a chunk already committed is not rewritten."""
    stats = {"rows": 0, "quarantined": 0}
    for i, uri in enumerate(cfg.recorded_scores):
        if store.is_committed("scores", shard_id("recorded", i)):
            continue
        opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
        seen: list[np.ndarray] = []  # sorted key hashes of the rows kept from earlier chunks of this file
        for j, (_, start, chunk) in enumerate(iter_table_chunks(uri, opts, RECORDED_CHUNK_ROWS)):
            checked = validate_scores(chunk, uri)
            valid, q = checked.valid, checked.quarantine.copy()
            kept_rows = np.setdiff1d(np.arange(len(chunk)), q["row"].to_numpy(dtype=int))
            q["row"] = start + q["row"].to_numpy(dtype=int)  # row number in the file
            key = pd.util.hash_pandas_object(valid[["request_id", "model", "metric"]], index=False).to_numpy()
            cross = np.zeros(len(valid), dtype=bool)
            for prev in seen:
                pos = np.minimum(np.searchsorted(prev, key), len(prev) - 1)
                cross |= prev[pos] == key
            if cross.any():
                raw = valid.loc[cross]
                extra = pd.DataFrame({
                    "stage": "scores", "source": uri, "row": start + kept_rows[cross],
                    "request_id": raw["request_id"].astype(str).to_numpy(), "field": "metric",
                    "reason": "duplicate (request_id, model, metric)",
                    "raw": [json.dumps(r, default=str)[:2000] for r in raw.to_dict("records")]})
                q = pd.concat([q, extra], ignore_index=True)
                valid = valid.loc[~cross]
            if len(valid):
                seen.append(np.sort(key[~cross]))
            store.write_shard("scores", shard_id("recorded", i, j), valid[["request_id", "model", "metric", "value"]],
                              meta={"source": uri, "first_row": int(start)})
            if len(q):
                store.write_shard("quarantine", shard_id("recorded-scores", i, j), q[QUARANTINE_COLUMNS])
            stats["rows"] += len(valid)
            stats["quarantined"] += len(q)
    store.update_manifest(stages={"recorded_scores": stats})
    return stats


def print_next_steps(store: RunStore, config_uri: str) -> None:
    """A run without labels stops after scoring: say how to get them and finish the run."""
    print(f"\nBaton run {store.run_id}: scored {store.count_rows('scores')} score rows; stopped before the decision "
          f"because it has no human labels (labels.mode: none or --no-labels). Next:\n"
          f"  1. export requests to label:  baton labels export --config {config_uri} --out LABEL_DIR\n"
          f"  2. import the answers:        baton labels import --config {config_uri} LABEL_DIR/ANSWERS.csv\n"
          f"     (or set labels.path to a labels table)\n"
          f"  3. rerun with labels:         baton run --config {config_uri}   (without --no-labels or "
          f"labels.mode: none; replay and scoring are not redone)")


def print_verdicts(decision: Decision, store: RunStore) -> None:
    print(f"\nBaton run {store.run_id}: margin {decision.margin}, confidence {decision.confidence}")
    for cand, body in decision.candidates.items():
        dims = ", ".join(
            f"{d}: {v.estimate:.3f} [{v.interval[0]:.3f}, {v.interval[1]:.3f}]"
            for d, v in body.dimensions.items())
        print(f"  {cand}: {body.verdict.value.upper()}  ({dims})")
    print(f"report: {store.uri('decision', 'report.html')}")
    print(f"decision: {store.uri('decision', 'decision.json')}")


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.migrate"))
