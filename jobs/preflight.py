"""Checks that need no compute, run by `baton validate` and at the start of every run (before any replay).

Paths are absolute where the run lands in Ray's temporary copy of the code, every env var the config names is
set, every input file exists and can be read, and the labels the decision needs are there (or the run was asked
to stop after scoring). Bad input is one ConfigError listing every problem by its key (exit 2); a store that
cannot be reached or read keeps its storage error (exit 4).
"""

from __future__ import annotations

import json
import os
import re

from jobs.config import RunConfig
from jobs.contracts import read_table_file, table_files, validate_labels
from jobs.errors import ConfigError, ContractError, StoreError, StoreNotFound
from jobs.store import RunStore, storage_options

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RAY_WORKING_DIR = re.compile(r"/runtime_resources/working_dir_files/")


def ray_job_entrypoint() -> bool:
    """Whether this process is the entrypoint of a `ray job submit`: Ray's job supervisor hands it the job config
    in RAY_JOB_CONFIG_JSON_ENV_VAR and runs it inside the unpacked working dir (a temporary copy of the code)."""
    if _RAY_WORKING_DIR.search(os.getcwd().replace(os.sep, "/")):
        return True
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return False
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def path_keys(cfg: RunConfig) -> list[tuple[str, str]]:
    """(key, path) of every file or folder the config names."""
    out = [("store.root", cfg.store.root), ("traffic.path", cfg.traffic.path)]
    out += [(f"recorded_scores.{i}", p) for i, p in enumerate(cfg.recorded_scores)]
    if cfg.labels.path:
        out.append(("labels.path", cfg.labels.path))
    engines = [(f"candidates.{i}", c) for i, c in enumerate(cfg.candidates)]
    if cfg.incumbent.replay is not None:
        engines.append(("incumbent.replay", cfg.incumbent.replay))
    for key, c in engines:
        for field in ("path", "chat_template"):
            if getattr(c, field, None):
                out.append((f"{key}.{field}", getattr(c, field)))
    if cfg.scoring.judge.rubrics_dir:
        out.append(("scoring.judge.rubrics_dir", cfg.scoring.judge.rubrics_dir))
    if cfg.scoring.transcript.rubrics_dir:
        out.append(("scoring.transcript.rubrics_dir", cfg.scoring.transcript.rubrics_dir))
    if cfg.scoring.embeddings.model:
        out.append(("scoring.embeddings.model", cfg.scoring.embeddings.model))
    return out


def input_tables(cfg: RunConfig, labels: bool) -> list[tuple[str, str]]:
    """(key, uri) of every table the run reads."""
    out = [("traffic.path", cfg.traffic.path)]
    out += [(f"candidates.{i}.path", c.path) for i, c in enumerate(cfg.candidates) if c.kind == "recorded"]
    if cfg.incumbent.replay is not None and cfg.incumbent.replay.kind == "recorded":
        out.append(("incumbent.replay.path", cfg.incumbent.replay.path))
    out += [(f"recorded_scores.{i}", p) for i, p in enumerate(cfg.recorded_scores)]
    if labels and cfg.labels.path:
        out.append(("labels.path", cfg.labels.path))
    return out


def env_keys(node: object, key: str = "") -> list[tuple[str, str]]:
    """(key path, variable name) of every ``*_env`` field that is set, anywhere in the config."""
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{key}.{k}" if key else str(k)
            if str(k).endswith("_env") and isinstance(v, str):
                out.append((path, v))
            else:
                out += env_keys(v, path)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += env_keys(v, f"{key}.{i}")
    return out


def labels_off(cfg: RunConfig, no_labels: bool = False) -> bool:
    """Whether the run stops after scoring (`labels.mode: none` or `--no-labels`)."""
    return no_labels or cfg.labels.mode == "none"


def preflight(cfg: RunConfig, store: RunStore | None, no_labels: bool = False, source: str = "run config") -> dict:
    """Every check that needs no compute; raises ConfigError (exit 2) listing the problems, or a StoreError (4).

    ``store`` None skips what needs the store (its access check and labels already imported into it).
    Returns what was found: label rows and dimensions, input files checked."""
    problems: list[str] = []
    if ray_job_entrypoint():
        for key, path in path_keys(cfg):
            if not _SCHEME.match(path) and not os.path.isabs(path):
                problems.append(
                    f"{key}: relative path {path!r} under `ray job submit` resolves inside Ray's temporary copy of the "
                    f"code ({os.getcwd()}), which is replaced when a file changes; use an absolute path or s3://")
    for key, name in env_keys(cfg.model_dump(mode="json")):
        if not os.environ.get(name):
            problems.append(f"{key}: environment variable {name} is not set where the driver runs (set it on every "
                            f"Ray node, e.g. from a Kubernetes Secret; the value is never stored or logged)")
    if cfg.scoring.code.enabled:  # the code sandbox's interpreter and isolation, checked here as on a worker
        from inference.scorers.code_exec import config_problems

        problems += config_problems(cfg.scoring.code)
    if problems:  # nothing below is worth trying with unset credentials or paths in a throwaway folder
        raise ConfigError(_report(source, problems))
    if store is not None:
        store.check_access()
    found: dict = {"inputs": {}}
    for key, uri in input_tables(cfg, labels=not labels_off(cfg, no_labels)):
        try:
            found["inputs"][key] = _check_readable(cfg, uri)
        except StoreNotFound:
            problems.append(f"{key}: {uri}: does not exist")
        except ContractError as exc:
            problems.append(f"{key}: {exc}")
        except StoreError as exc:
            raise type(exc)(f"{key}: {exc}") from None
    if problems:
        raise ConfigError(_report(source, problems))
    _check_conversation_labels(cfg, problems)
    if not labels_off(cfg, no_labels):
        found["labels"] = _check_labels(cfg, store, problems)
    if problems:
        raise ConfigError(_report(source, problems))
    return found


def _report(source: str, problems: list[str]) -> str:
    return f"{source}: not ready to run ({len(problems)} problem(s); nothing was computed)\n" + "\n".join(
        f"  {p}" for p in problems)


def _opts(cfg: RunConfig, uri: str) -> dict:
    return storage_options(cfg.store) if uri.startswith("s3://") else {}


def _check_readable(cfg: RunConfig, uri: str) -> int:
    """Number of table files under ``uri``; reads the first byte of each so a denied read fails now."""
    from jobs.errors import storage_error

    fs, files = table_files(uri, _opts(cfg, uri))
    for path in files:
        try:
            with fs.open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise storage_error(exc, path) from None
    return len(files)


def _check_conversation_labels(cfg: RunConfig, problems: list[str]) -> None:
    """A dimension labelled per conversation needs the traffic's conversation_id (docs/conversations.md): checked
    on the first rows of the traffic, so the run does not replay and score before the decision refuses."""
    dims = [i for i, d in enumerate(cfg.decision.dimensions) if d.label_unit == "conversation"]
    if not dims:
        return
    from jobs.contracts import iter_table_chunks

    uri = cfg.traffic.path
    _, _, first = next(iter_table_chunks(uri, _opts(cfg, uri), chunk_rows=1), (None, None, None))
    if first is not None and "conversation_id" not in first.columns:
        for i in dims:
            problems.append(f"decision.dimensions.{i}.label_unit: 'conversation' needs a conversation_id column in "
                            f"the traffic ({uri} has {sorted(map(str, first.columns))})")


def _check_labels(cfg: RunConfig, store: RunStore | None, problems: list[str]) -> dict:
    """Labels for every configured dimension, from labels.path and/or the run's labels table; the margin against
    an ordinal dimension's observed scale where the config declares no levels."""
    import pandas as pd

    frames, where = [], []
    if cfg.labels.path:
        try:
            checked = validate_labels(read_table_file(cfg.labels.path, _opts(cfg, cfg.labels.path)), cfg.labels.path)
        except ContractError as exc:  # unreadable, or a column missing: no dimension can be checked
            problems.append(f"labels.path: {exc}")
            return {"rows": None}
        frames.append(checked.valid[["dimension", "value"]])
        where.append(cfg.labels.path)
    if store is not None and store.count_rows("labels"):
        frames.append(store.read_table("labels", columns=["dimension", "value"]))
        where.append(store.uri("labels"))
    labels = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dimension", "value"])
    if labels.empty:
        if store is None and not cfg.labels.path:
            return {"rows": None, "note": "labels imported into the store not checked (--no-store)"}
        problems.append(
            "labels: no human labels" + (f" in {', '.join(where)}" if where else " (labels.path is not set and none "
                                         f"were imported into run {cfg.run_id!r})")
            + "; set labels.path, import them with `baton labels import`, or set labels.mode: none (`baton run "
              "--no-labels`) to stop after scoring and export requests to label")
        return {"rows": 0}
    dims = labels["dimension"].astype(str)
    for i, dim in enumerate(cfg.decision.dimensions):
        values = pd.to_numeric(labels.loc[dims == dim.name, "value"], errors="coerce").dropna()
        if values.empty:
            problems.append(f"decision.dimensions.{i}.name: no label rows with dimension {dim.name!r} in "
                            f"{', '.join(where)} (dimensions there: {sorted(dims.unique())})")
        elif dim.kind == "ordinal" and not getattr(dim, "levels", None):
            span = float(values.max() - values.min())
            if cfg.decision.margin >= span:
                problems.append(f"decision.margin: {cfg.decision.margin!r} must be below the range of ordinal "
                                f"dimension {dim.name!r} (its labels span {values.min():g}..{values.max():g})")
    return {"rows": int(len(labels)), "dimensions": sorted(dims.unique())}
