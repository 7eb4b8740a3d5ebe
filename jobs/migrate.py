"""`python -m jobs.migrate --config URI` (and `baton run`): the whole pipeline, idempotent for a run id.

traffic -> responses -> scores -> labels -> decision -> report, each stage a table in the run store.
Every stage skips what is already committed, so resubmitting a failed run resumes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from jobs.config import RunConfig, load_config
from jobs.contracts import QUARANTINE_COLUMNS, read_table_file, validate_labels, validate_scores
from jobs.errors import EXIT_GATE, EXIT_OK
from jobs.shards import ensure_ray
from jobs.store import RunStore, shard_id, storage_options

log = logging.getLogger("baton")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.cli import config_arguments

    config_arguments(parser)
    parser.add_argument("--fail-unless-migrate", action="store_true",
                        help=f"exit {EXIT_GATE} unless every candidate's verdict is migrate (for CI gates)")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    decision = run_pipeline(cfg, progress=not args.no_progress)
    gate = args.fail_unless_migrate or cfg.decision.fail_unless_migrate
    if gate and any(v != "migrate" for v in decision["verdicts"].values()):
        return EXIT_GATE
    return EXIT_OK


def run_pipeline(cfg: RunConfig, progress: bool = True, truth: dict | None = None) -> dict:
    """Run (or resume) every stage; returns the decision document. `truth` (demo only) goes into the report."""
    from jobs.calibrate import decide_run
    from jobs.replay import replay
    from jobs.report import write_report
    from jobs.sample import run_sample
    from jobs.score import score

    store = RunStore(cfg.store, cfg.run_id)
    store.check_access()  # before any compute: a missing bucket or bad credentials fail here
    store.update_manifest(config=cfg.model_dump(mode="json"))
    timings: dict[str, float] = {}

    def stage(name: str, fn):
        started = time.monotonic()
        log.info("stage %s: start", name)
        out = fn()
        timings[name] = round(time.monotonic() - started, 3)
        # Each stage records its own statistics in the manifest; here only its wall time.
        store.update_manifest(stages={name: {"wall_s": timings[name]}})
        log.info("stage %s: done in %.1f s", name, timings[name])
        return out

    stage("sample", lambda: run_sample(cfg, store))
    ensure_ray(cfg)
    stage("replay", lambda: replay(cfg, store, progress=progress))
    stage("score", lambda: score(cfg, store, progress=progress))
    stage("recorded_scores", lambda: import_recorded_scores(cfg, store))
    stage("labels", lambda: import_labels(cfg, store))
    decision = stage("decide", lambda: decide_run(cfg, store))
    stage("report", lambda: write_report(cfg, store, decision, truth))
    print_verdicts(decision, store)
    return decision


def import_recorded_scores(cfg: RunConfig, store: RunStore) -> dict:
    """Validate score tables computed elsewhere and commit them to the scores table (once per file)."""
    stats = {"rows": 0, "quarantined": 0}
    for i, uri in enumerate(cfg.recorded_scores):
        shard = shard_id("recorded", i)
        if store.is_committed("scores", shard):
            continue
        opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
        checked = validate_scores(read_table_file(uri, opts), uri)
        store.write_shard("scores", shard, checked.valid[["request_id", "model", "metric", "value"]], meta={"source": uri})
        if len(checked.quarantine):
            store.write_shard("quarantine", shard_id("recorded-scores", i), checked.quarantine[QUARANTINE_COLUMNS])
        stats["rows"] += len(checked.valid)
        stats["quarantined"] += len(checked.quarantine)
    store.update_manifest(stages={"recorded_scores": stats})
    return stats


def import_labels(cfg: RunConfig, store: RunStore) -> dict:
    """Validate the human labels named in the config and commit them to the labels table."""
    uri = cfg.labels.path
    if not uri or store.is_committed("labels", "labels-import"):
        return {"rows": store.count_rows("labels")}
    opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
    checked = validate_labels(read_table_file(uri, opts), uri)
    store.write_shard("labels", "labels-import", checked.valid, meta={"source": uri})
    if len(checked.quarantine):
        store.write_shard("quarantine", "labels-import", checked.quarantine[QUARANTINE_COLUMNS])
    stats = {"rows": len(checked.valid), "quarantined": len(checked.quarantine), "source": uri}
    store.update_manifest(stages={"labels": stats})
    return stats


def print_verdicts(decision: dict, store: RunStore) -> None:
    print(f"\nBaton run {store.run_id}: margin {decision['margin']}, confidence {decision['confidence']}")
    for cand, body in decision["candidates"].items():
        dims = ", ".join(
            f"{d}: {v['estimate']:.3f} [{v['interval'][0]:.3f}, {v['interval'][1]:.3f}]"
            for d, v in body["dimensions"].items())
        print(f"  {cand}: {body['verdict'].upper()}  ({dims})")
    print(f"report: {store.uri('decision', 'report.html')}")
    print(f"decision: {store.uri('decision', 'decision.json')}")


if __name__ == "__main__":
    from jobs.cli import module_entry

    sys.exit(module_entry("jobs.migrate"))
