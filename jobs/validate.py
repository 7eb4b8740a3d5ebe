"""`baton validate`: check config, store access, inputs, labels and the traffic contract before any compute is spent.

The same checks (jobs.preflight) run at the start of `baton run`; here the traffic is also read whole and checked
row by row.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.config import load_config
from jobs.contracts import read_table_file, validate_traffic
from jobs.errors import EXIT_BAD_INPUT, EXIT_OK
from jobs.preflight import preflight
from jobs.store import RunStore, storage_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    parser.add_argument("--no-store", action="store_true", help="skip the store access check (and labels imported into it)")
    parser.add_argument("--no-labels", action="store_true",
                        help="the run will stop after scoring (as `baton run --no-labels`): labels are not required")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = None if args.no_store else RunStore(cfg.store, cfg.run_id)
    found = preflight(cfg, store, no_labels=args.no_labels, source=args.config)
    opts = storage_options(cfg.store) if cfg.traffic.path.startswith("s3://") else {}
    checked = validate_traffic(read_table_file(cfg.traffic.path, opts), cfg.traffic.path, cfg.traffic.segments)
    report = {"config": args.config, "run_id": cfg.run_id, "traffic_rows_valid": len(checked.valid),
              "traffic_rows_quarantined": len(checked.quarantine),
              "first_problems": checked.quarantine[["row", "field", "reason"]].head(10).to_dict("records"),
              "input_files": found["inputs"], "labels": found.get("labels", "not required (--no-labels)")}
    if cfg.replay.mode == "conversation":  # turns 1..n of every conversation, as `baton run` checks them first
        from jobs import sample_conversations

        report["conversations"] = sample_conversations.check(cfg)
    print(json.dumps(report, indent=2, default=str))
    if len(checked.quarantine):
        print(f"{len(checked.quarantine)} traffic row(s) would be quarantined", file=sys.stderr)
    return EXIT_OK if checked.valid.shape[0] else EXIT_BAD_INPUT


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry(__name__))
