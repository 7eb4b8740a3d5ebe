"""`baton labels export|import|check`: choose requests for human labelling, blind them, take the answers back.

The command line only; the work is in jobs.labels.export (choose, blind, write a batch and its key),
jobs.labels.import_ (un-blind, validate, quarantine and commit the answers), jobs.labels.checks (design weights,
agreement and representativeness, stored in ``labels/checks.json``) and jobs.labels.task (dimensions and scales,
``--task-config``).
"""

from __future__ import annotations

import argparse

import numpy as np

from jobs.config import load_config
from jobs.errors import EXIT_OK
from jobs.labels.checks import run_checks
from jobs.labels.export import export_batch
from jobs.labels.import_ import import_answers
from jobs.labels.task import load_task_config
from jobs.store import RunStore


# -- CLI ------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="labels_command", metavar="SUBCOMMAND", required=True)
    ex = sub.add_parser("export", help="choose, blind and write a batch of tasks (CSV, Label Studio JSON)")
    ex.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    ex.add_argument("--out", required=True, help="folder for the annotator files (never holds the key)")
    ex.add_argument("--n", type=int, default=None, help="units to label per candidate")
    ex.add_argument("--from-decision", default=None, help="DIR/decision.json: ask for its labels_needed, on its segment")
    ex.add_argument("--design", choices=["random", "stratified", "active"], default="random", help="sampling design")
    ex.add_argument("--stratify-by", nargs="+", default=None, help="segment columns of the strata (default: traffic.segments)")
    ex.add_argument("--segment", default=None, help="only this segment, e.g. 'app=Grammarly' or 'app=X|region=EU'")
    ex.add_argument("--candidate", action="append", default=None, help="only this candidate (repeatable)")
    ex.add_argument("--tau", type=float, default=0.2, help="active design: uniform share, the floor tau*n/N of pi")
    ex.add_argument("--uncertainty-metric", default=None, help="active design: metric in [0,1] read as P(candidate better)")
    ex.add_argument("--uncertainty", default=None, help="active design: table (request_id, model, sd) of predicted label sd")
    ex.add_argument("--seed", type=int, default=0, help="seed of the design and the answer order")
    ex.add_argument("--batch", default=None, help="batch name (default: a timestamp)")
    ex.add_argument("--key", default=None, help="write the key here instead of the run store")
    ex.add_argument("--task-config", default=None, help="YAML of LabelTaskConfig (rubrics, scales)")
    im = sub.add_parser("import", help="un-blind, validate and commit annotators' answers")
    im.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    im.add_argument("file", help="answers: .csv, .jsonl, or a Label Studio export .json")
    im.add_argument("--key", default=None, help="key file if the export wrote it outside the run store")
    im.add_argument("--batch", default=None, help="batch name (default: the file's batch column)")
    im.add_argument("--dimensions", nargs="+", default=None, help="import only these dimensions")
    im.add_argument("--task-config", default=None, help="YAML of LabelTaskConfig (dimension kinds for the checks, "
                    "annotators: one identity per person)")
    ch = sub.add_parser("check", help="agreement and representativeness of the run's labels")
    ch.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    ch.add_argument("--task-config", default=None, help="YAML of LabelTaskConfig")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = RunStore(cfg.store, cfg.run_id)
    task = load_task_config(args.task_config, cfg)
    if args.labels_command == "export":
        res = export_batch(cfg, store, task, args.out, n=args.n, design_name=args.design, seed=args.seed,
                           candidates=args.candidate, stratify_by=args.stratify_by, segment=args.segment,
                           tau=args.tau, batch=args.batch, key_path=args.key, from_decision=args.from_decision,
                           uncertainty_metric=args.uncertainty_metric, uncertainty_path=args.uncertainty)
        if not res.get("batch"):
            print(res.get("message", "nothing to export"))
            return EXIT_OK
        print(f"batch {res['batch']}: {res['items']} tasks ({res['design']} design"
              + (f", segment {res['segment']}" if res["segment"] else "") + f"), per candidate {res['per_candidate']}")
        for kind, p in res["files"].items():
            print(f"  {kind}: {p}")
        print(f"  key (keep away from annotators): {res['key']}")
        return EXIT_OK
    if args.labels_command == "import":
        res = import_answers(cfg, store, args.file, key_path=args.key, batch=args.batch, dimensions=args.dimensions,
                             identities=task.annotator_identities())
        print(f"{res['file']} ({res['format']}), batch {res['batch']}: {res['labels']} labels "
              f"{'committed' if res['committed'] else 'not committed (already imported or none valid)'}, "
              f"{res['quarantined']} quarantined")
        if "annotations" in res:
            print("  Label Studio annotations: " + ", ".join(f"{n} {what}" for what, n in res["annotations"].items())
                  + (f"; replaced shard(s) {res['retired']}" if res["retired"] else ""))
        if res.get("already_imported"):
            print(f"  {res['already_imported']} judgments already imported with the same value skipped")
        if res["merged_repeats"]:
            print(f"  {res['merged_repeats']} identical judgments of the same answer in two tasks kept once")
        for kind, r in res["reasons"].items():
            print(f"  quarantined {r['count']} ({kind}), e.g. {r['example']}")
    _print_checks(run_checks(cfg, store, task))
    return EXIT_OK


def _print_checks(checks: dict) -> None:
    for dim, a in checks["agreement"].items():
        alpha = "n/a" if not np.isfinite(a["alpha"]) else f"{a['alpha']:.3f}"
        print(f"agreement {dim}: Krippendorff's alpha ({a['level']}) {alpha} on {a['items']} items with >= 2 "
              f"annotators ({a['annotators']} annotators)")
    for w in checks["warnings"]:
        print(f"warning: {w}")
