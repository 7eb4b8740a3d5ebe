"""Decide stage (:func:`run`: the run's scores, labels and traffic segments -> decision/decision.json) and the
standalone `baton decide` (the same entry point, calibration.pipeline.decide, fed from table files):

    baton decide --scores SCORES --labels LABELS --incumbent NAME --candidate NAME [--candidate NAME ...]
                 --dimension NAME --kind pairwise|binary|ordinal --margin M --confidence C --out DIR [--seed N]
                 [--traffic TRAFFIC --segment COL ...] [--levels 1,2,3,4,5] [--basis population|scored]
                 [--fail-unless-migrate]

Exit codes: 0 written (whatever the verdict), 2 bad input (message on stderr names file, row, column),
3 with --fail-unless-migrate when some verdict is not ``migrate``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from calibration.config import DecisionConfig
from calibration.data import InputError
from calibration.pipeline import Partial, decide
from calibration.schema import Decision
from jobs.compact import read_scores_compact
from jobs.config import RunConfig
from jobs.contracts import read_table_file
from jobs.decide_aggregate import sums_function
from jobs.decide_scan import on_ray, scan
from jobs.errors import EXIT_GATE, EXIT_OK, BatonError, ContractError
from jobs.labels.checks import design_weights, screen_labels
from jobs.report import save_report_sums, scores_fingerprint
from jobs.store import RunStore


def run(cfg: RunConfig, store: RunStore) -> Decision:
    """The pipeline's decide stage: calibrate and decide from the run's tables; writes decision.json, returns it.

    From ``jobs.decide_scan.SUBSET_FROM_REQUESTS`` traffic requests on (``decision.aggregate: auto``; always with
    ``ray``), the driver reads only the labelled requests and a sample of the rest (jobs.decide_scan) and every sum
    over the scored requests is made by Ray tasks (jobs.decide_aggregate), so its memory does not grow with the
    run. Conversation traffic is always read whole (its estimands are summed by conversation, here)."""
    labels = store.read_table("labels")
    if labels.empty:
        raise ContractError(f"{store.uri('labels')}: no human labels in this run (set labels.path or use `baton labels import`)")
    segments = list(cfg.traffic.segments)
    models = [cfg.incumbent.name, *[c.name for c in cfg.candidates]]
    # every unit any exported batch could have chosen, not only the labelled ones: a unit's probability combines
    # all batches (`baton labels export`); labels from a plain table carry none and count as a random sample
    design = design_weights(store) if cfg.decision.design_adjustment != "none" else None
    if design is not None and design.empty:
        design = None
    # decision.aggregate: the estimands' sums over the scored requests as Ray tasks over the shards (or here)
    sums = sums_function(cfg.decision.aggregate, store, segments, design, ensure=lambda: join_ray(cfg))
    partial = None
    if on_ray(cfg.decision.aggregate, store):
        join_ray(cfg)
        fingerprint = scores_fingerprint(store)  # before the pass: a shard committed meanwhile voids the sums
        sub = scan(store, models, segments, labels["request_id"].to_numpy(), sums.cache)
        save_report_sums(store, fingerprint, *sub.report)
        scores, traffic = sub.scores, sub.traffic
        partial = Partial(sub.segment_names, sub.missing_segment)
    else:
        scores = read_scores_compact(store)
        traffic = decision_traffic(store, segments)
    try:
        decision = decide(scores, labels, traffic, cfg.decision, cfg.incumbent.name,
                          [c.name for c in cfg.candidates], segments, design=design,
                          run_id=cfg.run_id, aggregate_sums=sums, partial=partial)
    except InputError as exc:
        raise ContractError(f"{store.uri()}: {exc}") from None
    doc = decision.as_dict()
    store.write_document("decision", "decision.json", json.dumps(doc, indent=2, default=float))
    store.update_manifest(stages={"decide": {"verdicts": doc["verdicts"], "warnings": doc["warnings"]}})
    return decision


def join_ray(cfg: RunConfig) -> None:
    """Join the run's Ray, or start a local one tied to this driver's life (jobs.migrate.start_local_ray; imported
    here because jobs.migrate imports this module)."""
    from jobs.migrate import start_local_ray  # noqa: PLC0415

    start_local_ray(cfg)


def decision_traffic(store: RunStore, segments: list[str]) -> pd.DataFrame | None:
    """The traffic columns the decision reads: request_id, the segments and, where the traffic has them, the
    conversation columns (``conversation_id``: the clustered estimands and conversation-level labels; ``turn``:
    per-turn-position results; docs/conversations.md). None when there is nothing beyond request_id."""
    cols = ["request_id", *segments, "conversation_id", "turn"]
    frames = [df for shard in sorted(store.commits("traffic"))
              if (df := store.read_shard("traffic", shard, columns=cols, ignore_missing=True)) is not None]
    if not frames:
        return None
    traffic = pd.concat(frames, ignore_index=True)
    return traffic if len(traffic.columns) > 1 else None


# -- `baton decide` -------------------------------------------------------------------------------------------


def read_table(path: str, what: str) -> pd.DataFrame:
    """The table file (jobs.contracts.read_table_file: Parquet, JSONL, JSON or CSV by extension, or a folder of
    them), its errors as InputError naming what it is."""
    try:
        return read_table_file(path)
    except BatonError as e:
        raise InputError(f"{what} file {e}") from e


def read_labels(path: str, decision: DecisionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labels table's usable rows and its bad rows of the decided dimensions (quarantine rows naming the file,
    row, field and reason; jobs.labels.checks.screen_labels), so one off-scale label does not end the decision."""
    try:
        checked = screen_labels(read_table(path, "labels"), path, {d.name: d.kind for d in decision.dimensions},
                                levels={d.name: d.levels for d in decision.dimensions if d.levels},
                                other_dimensions="keep")
    except ContractError as e:
        raise InputError(str(e)) from e
    return checked.valid, checked.quarantine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", required=True, help="scores table (Parquet or CSV): request_id, model, metric, value")
    parser.add_argument("--labels", required=True, help="labels table: request_id, model, dimension, value[, annotator, "
                        "inclusion_prob, batch] (inclusion_prob: the design's probability of choosing the unit)")
    parser.add_argument("--incumbent", required=True, help="incumbent model name")
    parser.add_argument("--candidate", action="append", default=[], help="candidate model name (repeatable)")
    parser.add_argument("--dimension", required=True, help="dimension name in the labels table")
    parser.add_argument("--kind", required=True, choices=["pairwise", "binary", "ordinal"])
    parser.add_argument("--margin", required=True, type=float, help="non-inferiority margin M")
    parser.add_argument("--confidence", required=True, type=float, help="confidence level C, e.g. 0.9")
    parser.add_argument("--out", required=True, help="output directory for decision.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--traffic", default=None, help="optional traffic table with segment columns")
    parser.add_argument("--segment", action="append", default=[], help="segment column of --traffic (repeatable)")
    parser.add_argument("--levels", type=_levels, default=None,
                        help="ordinal dimension's declared levels, comma-separated (e.g. 1,2,3,4,5)")
    parser.add_argument("--non-gating", action="store_true", help="report the dimension without gating on it")
    parser.add_argument("--label-unit", choices=["turn", "conversation"], default="turn",
                        help="what a label judges: a turn (default) or a whole conversation (needs --traffic with "
                             "conversation_id; the estimand is then the mean over conversations)")
    parser.add_argument("--draws", type=int, default=500, help="NUTS draws per chain")
    parser.add_argument("--tune", type=int, default=500, help="NUTS tuning steps per chain")
    parser.add_argument("--design-adjustment", choices=["weights", "none"], default="weights",
                        help="labels with an inclusion_prob column: weight the model's likelihood and the baselines by "
                             "1/pi (weights), or ignore the design (none)")
    parser.add_argument("--metric", action="append", default=[],
                        help="use only this metric as a covariate (repeatable; default: every numeric metric)")
    parser.add_argument("--basis", choices=["population", "scored"], default="population",
                        help="decide for the future traffic (population, default) or for the scored requests only")
    parser.add_argument("--fail-unless-migrate", action="store_true",
                        help="exit 3 when any verdict is not migrate (for CI gates)")


def _levels(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--levels: expected numbers separated by commas, got {text!r}") from None


# DecisionConfig fields -> the flag that sets them, so an argument error names the flag the user typed
_FLAGS = {"margin": "--margin", "confidence": "--confidence", "seed": "--seed", "draws": "--draws", "tune": "--tune",
          "design_adjustment": "--design-adjustment", "dimensions": "--dimension", "metrics": "--metric",
          "name": "--dimension", "kind": "--kind", "basis": "--basis", "levels": "--levels",
          "label_unit": "--label-unit"}


def decision_from_args(args: argparse.Namespace) -> DecisionConfig:
    """The same DecisionConfig the run config's decision section builds, from the flags (ValidationError if bad)."""
    dim = {"name": args.dimension, "kind": args.kind, "gating": not args.non_gating, "metrics": args.metric or None,
           "levels": args.levels, "label_unit": getattr(args, "label_unit", "turn")}
    return DecisionConfig.model_validate({
        "dimensions": [dim], "margin": args.margin, "confidence": args.confidence, "seed": args.seed,
        "draws": args.draws, "tune": args.tune, "design_adjustment": args.design_adjustment,
        "fail_unless_migrate": args.fail_unless_migrate, "basis": args.basis})


def _argument_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = next((str(p) for p in reversed(e["loc"]) if isinstance(p, str)), "")
        path = ".".join(str(p) for p in e["loc"])
        where = f"{_FLAGS.get(field, field)} (decision.{path})" if field else "arguments"
        lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        decision = decision_from_args(args)
    except ValidationError as e:
        print(f"baton decide: bad arguments: {_argument_errors(e)}", file=sys.stderr)
        return 2
    try:
        scores = read_table(args.scores, "scores")
        labels, bad_labels = read_labels(args.labels, decision)
        traffic = read_table(args.traffic, "traffic") if args.traffic else None
        result = _with_file_context(lambda: decide(scores, labels, traffic, decision, args.incumbent,
                                                   args.candidate, args.segment), args)
    except InputError as e:
        print(f"baton decide: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if len(bad_labels):
        bad_labels.to_csv(Path(args.out) / "quarantine.csv", index=False)
        result.warnings += [f"labels file {args.labels}: {len(bad_labels)} row(s) quarantined to "
                            f"{Path(args.out) / 'quarantine.csv'}, e.g. row {bad_labels['row'].iat[0]}, field "
                            f"{bad_labels['field'].iat[0]!r}: {bad_labels['reason'].iat[0]}"]
    result.warnings = [w.replace("(declare the dimension's levels)", "(declare them with --levels)")
                       for w in result.warnings]
    for w in result.warnings:
        print(f"baton decide: warning: {w}", file=sys.stderr)
    path = Path(args.out) / "decision.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=1, allow_nan=False))
    tmp.replace(path)
    for cand, v in result.verdicts.items():
        e = result.candidates[cand].dimensions[args.dimension]
        needed = "?" if e.labels_needed is None else e.labels_needed
        print(f"{cand}: {v}  {args.dimension} estimate {e.estimate} interval {e.interval} (scored) "
              f"{e.interval_population} (population) P(non-inferior) {e.p_noninferior} ({e.basis}) "
              f"labels {e.labels_used} (+{needed} needed)")
    print(f"wrote {path}")
    if decision.fail_unless_migrate and not result.gate_passes():
        return EXIT_GATE
    return EXIT_OK


# The statistics layer names no flag (it serves the run config too); here its messages get the flags to fix.
_FLAG_HINTS = (("segment columns ", "--segment needs --traffic"), ("candidate ", "--candidate, --incumbent"),
               ("dimension kind ", "--kind"), ("traffic: no 'conversation_id'", "--label-unit conversation needs --traffic"))


def _with_file_context(fn, args):
    """Prefix table errors with the file they came from, and argument errors with the flag to fix."""
    try:
        return fn()
    except InputError as e:
        msg = str(e)
        for table, path in (("scores", args.scores), ("labels", args.labels), ("traffic", args.traffic)):
            if path and msg.startswith(f"{table}:"):
                raise InputError(f"{table} file {path}: {msg[len(table) + 1:].strip()}") from e
        for prefix, flags in _FLAG_HINTS:
            if msg.startswith(prefix):
                raise InputError(f"{flags}: {msg}") from e
        raise


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.decide"))
