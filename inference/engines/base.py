"""What every engine shares: the responses columns, input normalisation, error strings, engine exceptions.

An engine is a Ray Data style stage: ``Engine(config)`` once per actor, then ``engine(batch)`` with columns
``request_id`` and ``messages``; it returns exactly one row per input row, in input order, with
``RESPONSE_COLUMNS``. A request that fails is a row with ``response`` null and ``error`` set to
``"<kind>: <detail>"`` (kinds in ``http_errors.ERROR_KINDS``); an engine that cannot work at all (start-up failure,
dead engine) raises, failing its shard loudly.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from common.tables import RESPONSE_COLUMNS  # noqa: F401 - the one column list, shared with jobs/

INPUT_COLUMNS = ["request_id", "messages"]


class EngineError(RuntimeError):
    """An engine cannot serve its shard at all; the shard fails loudly."""


class EngineStartupError(EngineError):
    """The engine did not start (bad model path, out of memory, start-up timeout)."""


class EngineDeadError(EngineError):
    """The engine died while serving (its process exited or stopped answering)."""


def require_input(batch: pd.DataFrame, engine: str) -> None:
    """Fail before any work when an input column is missing, naming it."""
    for col in INPUT_COLUMNS:
        if col not in batch.columns:
            raise KeyError(f"{engine}: input batch is missing column {col!r} (present: {list(batch.columns)})")


def normalise_messages(value: object, request_id: object = None) -> list[dict]:
    """Messages as a list of plain {role, content} dicts.

    Parquet round trips turn lists of dicts into numpy arrays of dicts; CSV gives JSON strings.
    """
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"request {request_id!r}: messages must be a non-empty list, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"request {request_id!r}: messages[{i}] must be a mapping with role and content")
        out.append({"role": str(m["role"]), "content": "" if m["content"] is None else str(m["content"])})
    return out


def error_text(kind: str, detail: str) -> str:
    """The `error` column: a stable kind, then a human detail (already masked of secrets)."""
    return f"{kind}: {detail}"[:1000]


def error_kind(error: object) -> str | None:
    """The kind of an `error` column value (None for a success)."""
    if error is None or (isinstance(error, float) and np.isnan(error)):
        return None
    return str(error).split(":", 1)[0].strip() or "unknown"


def mask(text: str, secrets: list[str | None]) -> str:
    """Remove secret values (and anything that looks like a bearer token) from a message."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return re.sub(r"(?i)(bearer\s+)[^\s'\"]+", r"\1***", text)


def response_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the responses frame with stable dtypes."""
    df = pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
    for col in ("prompt_tokens", "completion_tokens", "attempts"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    df["latency_s"] = pd.to_numeric(df["latency_s"], errors="coerce").astype("float64")
    for col in ("request_id", "model", "response", "finish_reason", "error"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


def error_row(request_id: object, model: str, kind: str, detail: str, attempts: int = 0, latency_s: float = 0.0) -> dict:
    return {"request_id": str(request_id), "model": model, "response": None, "prompt_tokens": 0,
            "completion_tokens": 0, "latency_s": latency_s, "finish_reason": None, "attempts": attempts,
            "error": error_text(kind, detail)}
