"""`python -m jobs.nightly --config URI --date YYYY-MM-DD`: one night's full-traffic replay and its history row.

The config's `traffic.path` is the root of a date-partitioned traffic table (`<root>/date=YYYY-MM-DD/`); the run
id becomes `<run_id>-<date>`, so a night that is rerun resumes (and replaces) its own run. The night's
decision appends one row per candidate and dimension to the history table `<store root>/history/`, one file per
night (`date=YYYY-MM-DD.parquet`) written whole: a rerun replaces that night's rows, never adds a second set.
Each row also carries the mean of every automated metric for the candidate and for the incumbent that night, so
a drift in the incumbent itself is visible over time, not only the difference. Those series feed EWMA control
charts (jobs/nightly_drift.py, docs/drift.md): the night's alerts go into its decision.json (`drift`), its
report.html / report.md get the history charts and tables, and with `nightly.gate_on_drift: true` a gating alert
exits 3.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from datetime import date as Date

import pandas as pd

from calibration.schema import Decision
from common.tables import parquet_bytes_frame
from jobs.config import RunConfig, load_config
from jobs.errors import EXIT_GATE, EXIT_OK, ConfigError
from jobs.nightly_drift import attach_drift, report_drift
from jobs.store import RunStore

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.entry import config_arguments

    config_arguments(parser)  # the config's traffic.path is the root of the date-partitioned traffic
    parser.add_argument("--date", required=True, help="the night's partition, YYYY-MM-DD")
    parser.add_argument("--fail-unless-migrate", action="store_true", help=f"exit {EXIT_GATE} unless every verdict is migrate")


def night_config(cfg: RunConfig, day: str) -> RunConfig:
    """The night's config: its own run id and its own traffic partition."""
    if not _DATE.match(day):
        raise ConfigError(f"--date: expected YYYY-MM-DD, got {day!r}")
    try:
        Date.fromisoformat(day)
    except ValueError:
        raise ConfigError(f"--date: {day!r} is not a calendar date") from None
    root = cfg.traffic.path.rstrip("/")
    traffic = cfg.traffic.model_copy(update={"path": f"{root}/date={day}/"})
    return cfg.model_copy(update={"run_id": f"{cfg.run_id}-{day}", "traffic": traffic})


def history_rows(decision: Decision, day: str, run_id: str, metric_means: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate and dimension for the history table."""
    inc = decision.incumbent
    inc_means = metric_means[metric_means["model"] == inc].set_index("metric")["value"].to_dict()
    rows = []
    for cand, body in decision.candidates.items():
        cand_means = metric_means[metric_means["model"] == cand].set_index("metric")["value"].to_dict()
        for dim, d in body.dimensions.items():
            rows.append({
                "date": day, "run_id": run_id, "incumbent": inc, "candidate": cand, "dimension": dim,
                "kind": d.kind, "estimate": d.estimate, "interval_low": d.interval[0],
                "interval_high": d.interval[1], "p_noninferior": d.p_noninferior,
                "p_superior": d.p_superior, "verdict": d.verdict.value, "candidate_verdict": body.verdict.value,
                "labels_used": d.labels_used, "n_scored": d.n_scored,
                "candidate_metric_means": json.dumps(cand_means, sort_keys=True),
                "incumbent_metric_means": json.dumps(inc_means, sort_keys=True),
            })
    return pd.DataFrame(rows)


def history_path(store: RunStore, day: str) -> str:
    return "/".join([store.root_path("history"), f"date={day}.parquet"])


def write_history(store: RunStore, day: str, rows: pd.DataFrame) -> str:
    """Replace the night's history file (a whole-object write: readers see the old or the new, never half)."""
    buf = io.BytesIO()
    rows.to_parquet(buf, index=False)
    path = history_path(store, day)
    store.write_bytes(path, buf.getvalue())
    return path


def read_history(store: RunStore) -> pd.DataFrame:
    """Every night's rows, oldest first."""
    folder = store.root_path("history")
    try:
        files = sorted(f for f in store.fs.ls(folder, detail=False, refresh=True) if f.endswith(".parquet"))
    except FileNotFoundError:
        return pd.DataFrame()
    frames = [parquet_bytes_frame(store.fs.cat_file(f)) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def metric_means(store: RunStore) -> pd.DataFrame:
    """Mean of each metric per model, aggregated shard by shard (the driver never holds the scores table)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for _, shard in store.iter_shards("scores", columns=["model", "metric", "value"]):
        agg = shard.groupby(["model", "metric"])["value"].agg(["sum", "count"])
        for key, (s, c) in agg.iterrows():
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    return pd.DataFrame([{"model": m, "metric": k, "value": s / c if c else float("nan")}
                         for (m, k), (s, c) in sums.items()], columns=["model", "metric", "value"])


def run_night(cfg: RunConfig, day: str, progress: bool = True,
              config_uri: str = "CONFIG") -> tuple[Decision | None, pd.DataFrame]:
    """The night's run and its history rows; (None, no rows) when the run stops after scoring for want of labels."""
    from jobs.migrate import run_pipeline

    night = night_config(cfg, day)
    decision = run_pipeline(night, progress=progress, config_uri=config_uri)
    if decision is None:
        return None, pd.DataFrame()
    store = RunStore(night.store, night.run_id)
    rows = history_rows(decision, day, night.run_id, metric_means(store))
    write_history(store, day, rows)
    history = read_history(store)
    section, view = attach_drift(history[history["date"] <= day], decision, day, store, cfg.nightly.drift,
                                 cfg.nightly.gate_on_drift)
    from jobs.report import run as write_report  # the night's report again, now with its history charts

    write_report(night, store, decision, drift=report_drift(section, view, day))
    return decision, rows


def main(args: argparse.Namespace) -> int:
    from jobs.migrate import gate_fails

    cfg = load_config(args.config)
    decision, rows = run_night(cfg, args.date, progress=not args.no_progress, config_uri=args.config)
    print(f"history: {len(rows)} row(s) for {args.date}")
    drift = (decision.drift if decision is not None else None) or {}
    for alert in drift.get("alerts", []):
        print(f"drift alert ({alert['kind']}): {alert['detail']}")
    if gate_fails(decision, args.fail_unless_migrate or cfg.decision.fail_unless_migrate):
        return EXIT_GATE
    if cfg.nightly.gate_on_drift and drift.get("gating_alerts"):
        return EXIT_GATE  # docs/drift.md: the same exit 3 as the verdict gate; the printed alerts say which
    return EXIT_OK


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.nightly"))
