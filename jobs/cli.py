"""The `baton` command line. Every command has --help; exit codes are listed in jobs.errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jobs.errors import EXIT_BAD_INPUT, EXIT_FAILURE, BatonError, CorruptShard

# name -> (module, one-line help). Each module exposes add_arguments(parser) and main(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("jobs.validate", "check a run config, the store and the traffic table without spending compute"),
    "run": ("jobs.migrate", "run the whole pipeline: sample, replay, score, calibrate, decide, report"),
    "replay": ("jobs.replay", "replay the run's traffic to every candidate (responses table)"),
    "score": ("jobs.score", "score every response (scores and embeddings tables)"),
    "decide": ("jobs.decide", "calibrate scores against human labels and decide (standalone, from tables)"),
    "nightly": ("jobs.nightly", "replay one day's traffic partition and append to the history table"),
    "labels": ("jobs.labels", "export requests for human labelling, import and check labels"),
    "submit": ("jobs.submit", "submit a Baton job to a Ray cluster and follow its logs"),
    "demo": ("jobs.demo", "run the shipped PandaLM demo end to end on a local Ray and a local store"),
}

EPILOG = """exit codes: 0 success; 1 unexpected failure; 2 bad input (config, tables, arguments);
3 decision gate failed (a verdict other than migrate, when asked to gate); 4 storage unreachable or denied;
5 (baton submit) stopped waiting at --timeout while the job still runs"""


def config_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every pipeline entry point takes."""
    parser.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def retry_errors_argument(parser: argparse.ArgumentParser) -> None:
    """`--retry-errors` of the commands that replay (overrides execution.retry_errors)."""
    parser.add_argument("--retry-errors", choices=("all", "retryable", "none"), default=None,
                        help="failed responses a rerun of the run id sends again: retryable kinds (connection, "
                             "timeout, server_error, rate_limited, conflict, malformed; the default), all, or none. "
                             "Successful responses are never sent again")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baton", description="Is the model replacing your retiring LLM at least as good, on your traffic?",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command whose module is not built yet is not offered
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third-party chatter (and request dumps) stays out of the user's log.
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "httpx", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "_main", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_guarded(args._main, args)


def run_guarded(fn, args) -> int:
    """Run a command; a BatonError becomes its message on stderr and its exit code."""
    try:
        return int(fn(args) or 0)
    except BatonError as exc:
        print(f"baton: error: {exc}", file=sys.stderr)
        if isinstance(exc, CorruptShard) and exc.marker and getattr(args, "config", None):
            print(f"baton: to redo it, run: baton run --config {args.config}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("baton: interrupted; rerun with the same run id to resume", file=sys.stderr)
        return EXIT_FAILURE


def module_entry(module_name: str) -> int:
    """`python -m jobs.<name> ...`: the same arguments as `baton <name> ...`."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m {module_name}", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "httpx", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_guarded(module.main, args)


if __name__ == "__main__":
    sys.exit(main())
