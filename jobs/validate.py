"""`baton validate`: check config, store access and the traffic contract before any compute is spent."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.config import load_config
from jobs.contracts import read_table_file, validate_traffic
from jobs.errors import EXIT_BAD_INPUT, EXIT_OK
from jobs.store import RunStore, storage_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    parser.add_argument("--no-store", action="store_true", help="skip the store access check")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if not args.no_store:
        RunStore(cfg.store, cfg.run_id).check_access()
    opts = storage_options(cfg.store) if cfg.traffic.path.startswith("s3://") else {}
    checked = validate_traffic(read_table_file(cfg.traffic.path, opts), cfg.traffic.path, cfg.traffic.segments)
    report = {"config": args.config, "run_id": cfg.run_id, "traffic_rows_valid": len(checked.valid),
              "traffic_rows_quarantined": len(checked.quarantine),
              "first_problems": checked.quarantine[["row", "field", "reason"]].head(10).to_dict("records")}
    print(json.dumps(report, indent=2, default=str))
    if len(checked.quarantine):
        print(f"{len(checked.quarantine)} traffic row(s) would be quarantined", file=sys.stderr)
    return EXIT_OK if checked.valid.shape[0] else EXIT_BAD_INPUT


if __name__ == "__main__":
    from jobs.cli import module_entry

    sys.exit(module_entry(__name__))
