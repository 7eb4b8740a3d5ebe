"""What every command's entry point shares: the common arguments, the error-to-exit-code guard and
`python -m jobs.<stage>`. Plumbing: the stage modules and jobs.cli import it; it imports no stage and not the CLI."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jobs.errors import EXIT_FAILURE, BatonError, CorruptShard

EPILOG = """exit codes: 0 success; 1 unexpected failure; 2 bad input (config, tables, arguments);
3 decision gate failed (a verdict other than migrate, when asked to gate); 4 storage unreachable or denied;
5 (baton submit) stopped waiting at --timeout while the job still runs"""

NOISY_LOGGERS = ("botocore", "s3fs", "aiobotocore", "urllib3", "httpx", "openai")


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


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third-party chatter (and request dumps) stays out of the user's log.
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    setup_logging()
    return run_guarded(module.main, args)
