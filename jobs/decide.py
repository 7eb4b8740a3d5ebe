"""`baton decide`: read scores and labels, calibrate, write DIR/decision.json (docs/decision-schema.md).

    baton decide --scores SCORES --labels LABELS --incumbent NAME --candidate NAME [--candidate NAME ...]
                 --dimension NAME --kind pairwise|binary|ordinal --margin M --confidence C --out DIR [--seed N]
                 [--traffic TRAFFIC --segment COL ...] [--fail-unless-migrate]

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
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from calibration.data import InputError, prepare
from calibration.decision import MIGRATE, combine
from calibration.pipeline import SamplerSettings, calibrate_dimension


class DimensionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="dimension name as in the labels table's 'dimension' column")
    kind: Literal["pairwise", "binary", "ordinal"] = Field(description="how the dimension is judged")
    gating: bool = Field(default=True, description="whether this dimension gates the migration verdict")


class DecideSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incumbent: str = Field(description="model name of the production (retiring) model")
    candidates: list[str] = Field(default_factory=list,
                                  description="candidate model names; empty = every other model in scores")
    dimensions: list[DimensionSpec] = Field(description="dimensions to decide on")
    margin: float = Field(ge=0.0, lt=0.5, description="non-inferiority margin M on the estimand's scale")
    confidence: float = Field(gt=0.5, lt=1.0, description="confidence level C for the decision and intervals")
    seed: int = Field(default=0, description="random seed (sampler, thinning, cross-fitting)")
    segments: list[str] = Field(default_factory=list, description="traffic columns defining segments")
    draws: int = Field(default=500, ge=50, description="NUTS draws per chain")
    tune: int = Field(default=500, ge=50, description="NUTS tuning steps per chain")
    chains: int = Field(default=2, ge=1, description="NUTS chains (>= 2 for R-hat)")
    min_segment_n: int = Field(default=20, ge=1, description="scored requests a segment needs before its regression can block migrate")
    design_adjustment: Literal["covariate", "weights", "none"] = Field(
        default="covariate", description="how the model accounts for the labels' design (calibration.label_design); "
        "'covariate' needs the design table given to decide_tables and is 'weights' without it")


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


def decide_tables(scores: pd.DataFrame, labels: pd.DataFrame, traffic: pd.DataFrame | None, spec: DecideSpec,
                  design: pd.DataFrame | None = None) -> dict:
    """Decision document (schema_version 1) for the given tables. Raises InputError on bad input.

    ``design`` (request_id, model, inclusion_prob per candidate unit) is the labels' sampling design; without it
    the labels' own ``inclusion_prob`` column is used when present (calibration.data.prepare)."""
    settings = SamplerSettings(draws=spec.draws, tune=spec.tune, chains=spec.chains, min_segment_n=spec.min_segment_n)
    candidates_doc: dict[str, dict] = {}
    warnings: list[str] = []
    cand_names = None
    for dim in spec.dimensions:
        data = prepare(scores, labels, spec.incumbent, spec.candidates or None, dim.name, dim.kind,
                       traffic=traffic, segment_cols=spec.segments or None, design=design,
                       design_adjustment=spec.design_adjustment)
        cand_names = data.candidates
        warnings += [f"{dim.name}: {w}" for w in data.warnings]
        entries = calibrate_dimension(data, spec.margin, spec.confidence, seed=spec.seed, settings=settings,
                                      gating=dim.gating, gating_dimensions=sum(d.gating for d in spec.dimensions))
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
                "estimate", "interval", "p_noninferior", "p_superior", "verdict", "labels_used", "labels_needed",
                "human_only", "ppi", "judge_only")}})
        verdicts[cand] = doc["verdict"]
    return {
        "schema_version": 1,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "incumbent": spec.incumbent, "margin": spec.margin, "confidence": spec.confidence, "seed": spec.seed,
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
    parser.add_argument("--non-gating", action="store_true", help="report the dimension without gating on it")
    parser.add_argument("--draws", type=int, default=500, help="NUTS draws per chain")
    parser.add_argument("--tune", type=int, default=500, help="NUTS tuning steps per chain")
    parser.add_argument("--design-adjustment", choices=["weights", "none"], default="weights",
                        help="labels with an inclusion_prob column: weight the model's likelihood and the baselines by "
                             "1/pi (weights), or ignore the design (none)")
    parser.add_argument("--fail-unless-migrate", action="store_true",
                        help="exit 3 when any verdict is not migrate (for CI gates)")


def main(args: argparse.Namespace) -> int:
    try:
        spec = DecideSpec(incumbent=args.incumbent, candidates=args.candidate,
                          dimensions=[DimensionSpec(name=args.dimension, kind=args.kind, gating=not args.non_gating)],
                          margin=args.margin, confidence=args.confidence, seed=args.seed, segments=args.segment,
                          draws=args.draws, tune=args.tune, design_adjustment=args.design_adjustment)
    except Exception as e:
        print(f"baton decide: bad arguments: {e}", file=sys.stderr)
        return 2
    try:
        scores = read_table(args.scores, "scores")
        labels = read_table(args.labels, "labels")
        traffic = read_table(args.traffic, "traffic") if args.traffic else None
        doc = _with_file_context(lambda: decide_tables(scores, labels, traffic, spec), args)
    except InputError as e:
        print(f"baton decide: {e}", file=sys.stderr)
        return 2
    for w in doc["warnings"]:
        print(f"baton decide: warning: {w}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / "decision.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    tmp.replace(path)
    for cand, v in doc["verdicts"].items():
        e = doc["candidates"][cand]["dimensions"][args.dimension]
        print(f"{cand}: {v}  {args.dimension} estimate {e['estimate']} interval {e['interval']} "
              f"P(non-inferior) {e['p_noninferior']} labels {e['labels_used']} (+{'?' if e['labels_needed'] is None else e['labels_needed']} needed)")
    print(f"wrote {path}")
    if args.fail_unless_migrate and any(v != MIGRATE for v in doc["verdicts"].values()):
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
