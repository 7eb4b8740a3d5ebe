"""The `baton` command line, the top of the house: it loads each command's module and nothing imports it.
Every command has --help; exit codes are listed in jobs.errors. Shared argument helpers live in jobs.entry."""

from __future__ import annotations

import argparse
import importlib
import sys

from jobs.entry import EPILOG, run_guarded, setup_logging
from jobs.errors import EXIT_BAD_INPUT

# name -> (module, one-line help). Each module exposes add_arguments(parser) and main(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("jobs.validate", "check a run config, the store and the traffic table without spending compute"),
    "run": ("jobs.migrate", "run the whole pipeline: sample, replay, score, calibrate, decide, report"),
    "replay": ("jobs.replay", "replay the run's traffic to every candidate (responses table)"),
    "score": ("jobs.score", "score every response (scores and embeddings tables)"),
    "decide": ("jobs.decide", "calibrate scores against human labels and decide (standalone, from tables)"),
    "nightly": ("jobs.nightly", "replay one day's traffic partition and append to the history table"),
    "labels": ("jobs.labels.command", "export requests for human labelling, import and check labels"),
    "submit": ("jobs.submit", "submit a Baton job to a Ray cluster and follow its logs"),
    "demo": ("jobs.demo", "run the shipped PandaLM demo end to end on a local Ray and a local store"),
}


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
    setup_logging(args.verbose)
    if not getattr(args, "_main", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return run_guarded(args._main, args)


if __name__ == "__main__":
    sys.exit(main())
