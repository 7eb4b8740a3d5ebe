"""`baton decide`: read scores and labels, calibrate, write DIR/decision.json (docs/decision-schema.md).

    baton decide --scores SCORES --labels LABELS --incumbent NAME --candidate NAME [--candidate NAME ...]
                 --dimension NAME --kind pairwise|binary|ordinal --margin M --confidence C --out DIR [--seed N]
                 [--traffic TRAFFIC --segment COL ...] [--levels 1,2,3,4,5] [--basis population|scored]
                 [--fail-unless-migrate]

Exit codes: 0 written (whatever the verdict), 2 bad input (message on stderr names file, row, column),
3 with --fail-unless-migrate when some verdict is not ``migrate``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from calibration.config import DecisionConfig
from calibration.data import InputError, prepare
from calibration.decision import MIGRATE, combine
from calibration.pipeline import SamplerSettings, calibrate_dimension


def read_table(path: str, what: str) -> pd.DataFrame:
    """Parquet or CSV (by extension; unknown extensions are tried as Parquet, then CSV)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file {path}: does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq") or p.is_dir():
            return pd.read_parquet(p)
        if suffix in (".csv", ".tsv", ".gz"):
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        try:
            return pd.read_parquet(p)
        except Exception:
            return pd.read_csv(p)
    except InputError:
        raise
    except Exception as e:  # unreadable file: name it
        raise InputError(f"{what} file {path}: cannot be read as Parquet or CSV ({type(e).__name__}: {e})") from e


def read_labels(path: str, decision: DecisionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labels table's usable rows and its bad rows of the decided dimensions (quarantine rows naming the file,
    row, field and reason; jobs.label_checks.screen_labels), so one off-scale label does not end the decision."""
    from jobs.errors import ContractError
    from jobs.label_checks import screen_labels

    try:
        checked = screen_labels(read_table(path, "labels"), path, {d.name: d.kind for d in decision.dimensions},
                                levels={d.name: d.levels for d in decision.dimensions if d.levels},
                                other_dimensions="keep")
    except ContractError as e:
        raise InputError(str(e)) from e
    return checked.valid, checked.quarantine


def decide_tables(scores: pd.DataFrame, labels: pd.DataFrame, traffic: pd.DataFrame | None,
                  decision: DecisionConfig, incumbent: str, candidates: list[str] | None = None,
                  segments: list[str] | None = None, design: pd.DataFrame | None = None) -> dict:
    """Decision document (schema_version 1) for the given tables. Raises InputError on bad input.

    ``decision`` is the run config's decision section (or `baton decide`'s flags); ``incumbent``, ``candidates``
    (None or empty: every other model in scores) and ``segments`` (traffic columns) are facts of the run.
    ``design`` (request_id, model, inclusion_prob per candidate unit) is the labels' sampling design; without it
    the labels' own ``inclusion_prob`` column is used when present (calibration.data.prepare)."""
    d = decision
    settings = SamplerSettings(draws=d.draws, tune=d.tune, chains=d.chains, min_segment_n=d.min_segment_n)
    candidates_doc: dict[str, dict] = {}
    warnings: list[str] = []
    cand_names = None
    for dim in d.dimensions:
        data = prepare(scores, labels, incumbent, candidates or None, dim.name, dim.kind,
                       traffic=traffic, segment_cols=segments or None, design=design,
                       design_adjustment=d.design_adjustment, metrics=dim.metrics,
                       levels=dim.levels)
        cand_names = data.candidates
        warnings += [f"{dim.name}: {w}" for w in data.warnings]
        entries = calibrate_dimension(data, d.margin, d.confidence, seed=d.seed, settings=settings,
                                      gating=dim.gating, basis=d.basis,
                                      gating_dimensions=sum(x.gating for x in d.dimensions))
        for cand, entry in entries.items():
            candidates_doc.setdefault(cand, {"verdict": None, "reasons": [], "dimensions": {}})
            candidates_doc[cand]["dimensions"][dim.name] = entry
    results, verdicts = [], {}
    for cand, doc in candidates_doc.items():
        gating = [e["verdict"] for e in doc["dimensions"].values() if e["gating"]]
        doc["verdict"] = combine(gating)
        for name, e in doc["dimensions"].items():
            doc["reasons"] += [f"{name}: {r}" for r in e.pop("reasons")]
            results.append({"candidate": cand, "dimension": name, **{k: e[k] for k in (
                "estimate", "interval", "interval_population", "basis", "p_noninferior", "p_superior", "verdict",
                "labels_used", "labels_needed",
                "human_only", "ppi", "judge_only")}})
        verdicts[cand] = doc["verdict"]
    return {
        "schema_version": 1,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "incumbent": incumbent, "margin": d.margin, "confidence": d.confidence, "seed": d.seed,
        "verdicts": verdicts, "candidates": candidates_doc, "results": results, "warnings": warnings,
        "candidate_order": cand_names,
    }


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
          "name": "--dimension", "kind": "--kind", "basis": "--basis", "levels": "--levels"}


def decision_from_args(args: argparse.Namespace) -> DecisionConfig:
    """The same DecisionConfig the run config's decision section builds, from the flags (ValidationError if bad)."""
    dim = {"name": args.dimension, "kind": args.kind, "gating": not args.non_gating, "metrics": args.metric or None,
           "levels": args.levels}
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
        doc = _with_file_context(lambda: decide_tables(scores, labels, traffic, decision, args.incumbent,
                                                       args.candidate, args.segment), args)
    except InputError as e:
        print(f"baton decide: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if len(bad_labels):
        bad_labels.to_csv(Path(args.out) / "quarantine.csv", index=False)
        doc["warnings"] += [f"labels file {args.labels}: {len(bad_labels)} row(s) quarantined to "
                            f"{Path(args.out) / 'quarantine.csv'}, e.g. row {bad_labels['row'].iat[0]}, field "
                            f"{bad_labels['field'].iat[0]!r}: {bad_labels['reason'].iat[0]}"]
    for w in doc["warnings"]:
        print(f"baton decide: warning: {w}", file=sys.stderr)
    path = Path(args.out) / "decision.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    tmp.replace(path)
    for cand, v in doc["verdicts"].items():
        e = doc["candidates"][cand]["dimensions"][args.dimension]
        needed = "?" if e["labels_needed"] is None else e["labels_needed"]
        print(f"{cand}: {v}  {args.dimension} estimate {e['estimate']} interval {e['interval']} (scored) "
              f"{e['interval_population']} (population) P(non-inferior) {e['p_noninferior']} ({e['basis']}) "
              f"labels {e['labels_used']} (+{needed} needed)")
    print(f"wrote {path}")
    if decision.fail_unless_migrate and any(v != MIGRATE for v in doc["verdicts"].values()):
        return 3
    return 0


def _with_file_context(fn, args):
    """Prefix table errors with the file they came from."""
    try:
        return fn()
    except InputError as e:
        msg = str(e)
        for table, path in (("scores", args.scores), ("labels", args.labels), ("traffic", args.traffic)):
            if path and msg.startswith(f"{table}:"):
                raise InputError(f"{table} file {path}: {msg[len(table) + 1:].strip()}") from e
        raise


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="baton decide", description=__doc__.splitlines()[0])
    add_arguments(_p)
    sys.exit(main(_p.parse_args()))
