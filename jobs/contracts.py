"""Table contracts (docs/contracts.md) and their validators.

A table-level break (a missing column, an unreadable file) raises ContractError naming the file and column,
before any compute is spent. A row-level break sends the row to the quarantine table with its reason: nothing
is silently dropped, and every valid row goes on.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from common.tables import (LABEL_COLUMNS, QUARANTINE_COLUMNS, RESPONSE_COLUMNS, SCORE_COLUMNS,  # noqa: F401 - re-exported
                           TABLE_SUFFIXES, read_one)
from common.tables import table_files as common_table_files
from jobs.contracts_arrow import fast_messages, messages_column
from jobs.errors import ContractError

ROLES = {"system", "user", "assistant", "tool"}
# A JSONL line that could not be decoded is read as a row holding only these two columns (why, and the line as
# text with bad bytes escaped); every validator quarantines such a row under its row number.
UNREADABLE, UNREADABLE_LINE = "_baton_unreadable", "_baton_line"


@dataclass
class Checked:
    """A validated table and the rows it quarantined."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame


class _Quarantine:
    def __init__(self, stage: str, source: str, df: pd.DataFrame):
        self.stage, self.source, self.df = stage, source, df
        self.rows: list[dict] = []
        self.bad = np.zeros(len(df), dtype=bool)
        if UNREADABLE in df.columns:
            reasons, lines = df[UNREADABLE].tolist(), df[UNREADABLE_LINE].tolist()
            for pos in np.flatnonzero(df[UNREADABLE].notna().to_numpy()):
                self.bad[pos] = True
                self.rows.append({"stage": stage, "source": source, "row": int(pos), "request_id": None,
                                  "field": "line", "reason": reasons[pos], "raw": str(lines[pos])[:2000]})

    def add(self, pos: int, field: str, reason: str) -> None:
        if self.bad[pos]:
            return  # one reason per row: the first problem found
        self.bad[pos] = True
        rid = self.df["request_id"].iat[pos] if "request_id" in self.df else None
        raw = self.df.iloc[pos].to_dict()
        self.rows.append({
            "stage": self.stage, "source": self.source, "row": int(pos),
            "request_id": None if _is_null(rid) else str(rid), "field": field, "reason": reason,
            "raw": json.dumps(raw, default=str)[:2000],
        })

    def add_mask(self, mask: np.ndarray, field: str, reason: str) -> None:
        for pos in np.flatnonzero(mask & ~self.bad):
            self.add(int(pos), field, reason)

    def result(self, valid: pd.DataFrame) -> Checked:
        q = pd.DataFrame(self.rows, columns=QUARANTINE_COLUMNS)
        valid = valid.drop(columns=[UNREADABLE, UNREADABLE_LINE], errors="ignore")
        return Checked(valid.loc[~self.bad].reset_index(drop=True), q)


def _is_null(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _not_strings(col: pd.Series) -> np.ndarray:
    """Which values are neither a string nor missing. A pandas string column holds nothing else, so only an
    object column is looked at value by value (that loop was a quarter of a recorded replay shard's time)."""
    if isinstance(col.dtype, pd.StringDtype):
        return np.zeros(len(col), dtype=bool)
    return np.array([not (_is_null(v) or isinstance(v, str)) for v in col], dtype=bool)


def require_columns(df: pd.DataFrame, columns: list[str], source: str, what: str) -> None:
    """Raise ContractError naming the first missing column (and the columns present)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        unreadable = ""
        if UNREADABLE in df.columns and df[UNREADABLE].notna().any():
            unreadable = f"; unreadable lines, first: {df[UNREADABLE].dropna().iat[0]}"
        present = [c for c in df.columns if c not in (UNREADABLE, UNREADABLE_LINE)]
        raise ContractError(f"{source}: {what} table is missing column {missing[0]!r} "
                            f"(required: {columns}; present: {present}){unreadable}")


def _ids(df: pd.DataFrame, q: _Quarantine) -> pd.Series:
    ids = df["request_id"]
    null = ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy()
    q.add_mask(null, "request_id", "request_id is missing or empty")
    return ids.astype(str).where(~null, None)


def _normalise_messages(value: object) -> tuple[list[dict] | None, str | None, str | None]:
    """(messages, trailing assistant answer, error). JSON strings (CSV files) are parsed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            return None, None, f"messages is a string that is not JSON ({exc.msg})"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list):
        return None, None, f"messages must be a list of {{role, content}}, got {type(value).__name__}"
    if not value:
        return None, None, "messages is empty"
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return None, None, f"messages[{i}] must be a mapping with role and content, got {type(m).__name__}"
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return None, None, f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}"
        if not isinstance(content, str):
            return None, None, f"messages[{i}].content must be a string, got {type(content).__name__}"
        out.append({"role": role, "content": content})
    trailing = None
    if out[-1]["role"] == "assistant":
        # Multi-turn: the last assistant turn is the incumbent's answer to the turn being replayed.
        trailing = out.pop()["content"]
    if not out or out[-1]["role"] != "user":
        return None, None, "messages must end with a user turn (optionally followed by the incumbent's answer)"
    if not out[-1]["content"].strip():
        return None, None, f"messages[{len(out) - 1}].content (the replayed user turn) is empty"
    return out, trailing, None


def validate_traffic(df: pd.DataFrame, source: str, segments: list[str] | None = None) -> Checked:
    """Check and normalise a traffic table.

    Table-level: a `request_id` column and one of `messages`/`prompt`; every configured segment column.
    Row-level (quarantined): missing or duplicate ids, malformed or empty messages, non-string response or
    reference, unparseable timestamp, missing segment value.
    """
    segments = segments or []
    require_columns(df, ["request_id"], source, "traffic")
    if "messages" not in df.columns and "prompt" not in df.columns:
        raise ContractError(f"{source}: traffic table needs a 'messages' or a 'prompt' column (present: {list(df.columns)})")
    require_columns(df, segments, source, "traffic (segment columns named in config)")
    df = df.reset_index(drop=True)
    q = _Quarantine("traffic", source, df)
    ids = _ids(df, q)

    dup = ids.duplicated(keep="first").to_numpy() & ids.notna().to_numpy()
    if dup.any():
        first = {rid: pos for pos, rid in reversed(list(enumerate(ids))) if rid is not None}
        for pos in np.flatnonzero(dup):
            q.add(int(pos), "request_id", f"duplicate request_id {ids.iat[pos]!r} (first at row {first[ids.iat[pos]]})")

    # Plain Python lists, read once: per-row pandas access (``.iat``, ``pd.isna`` on a scalar) cost more than the
    # checks themselves (~25 s per million rows).
    n = len(df)
    messages: list[object] = [None] * n
    # Parquet traffic read with Arrow lists (iter_table_chunks(arrow_lists=True)): the rows that plainly pass are
    # found and kept in Arrow (jobs.contracts_arrow); only the others are looked at one by one below.
    fast = fast_messages(df["messages"], ROLES) if "messages" in df.columns else None
    fast_ok = fast[0] & ~q.bad if fast is not None else np.zeros(n, dtype=bool)
    slow_rows = np.flatnonzero(~fast_ok)
    raw_col = (df["messages"].iloc[slow_rows].tolist() if "messages" in df.columns else [None] * len(slow_rows))
    prompt_col = df["prompt"].tolist() if "prompt" in df.columns else None
    response = df["response"] if "response" in df.columns else pd.Series([None] * n, dtype=object)
    filled: dict[int, str] = {}
    resp_null = response.isna().to_numpy()
    bad = q.bad
    for k, pos in enumerate(slow_rows.tolist()):
        if bad[pos]:
            continue
        raw_msgs = raw_col[k]
        if not isinstance(raw_msgs, (list, np.ndarray)) and _is_null(raw_msgs):
            if prompt_col is not None:
                prompt = prompt_col[pos]
                if not isinstance(prompt, str) or not prompt.strip():
                    q.add(pos, "prompt", "neither messages nor a non-empty prompt string")
                    continue
                raw_msgs = [{"role": "user", "content": prompt}]
            else:
                q.add(pos, "messages", "messages is missing")
                continue
        msgs, trailing, err = _normalise_messages(raw_msgs)
        if err:
            q.add(pos, "messages", err)
            continue
        messages[pos] = msgs
        if trailing is not None and resp_null[pos]:
            filled[pos] = trailing
    if filled:
        response = response.astype(object)
        response.iloc[list(filled)] = list(filled.values())
    response = response.astype(object) if not isinstance(response.dtype, pd.StringDtype) else response

    for col in ("response", "reference"):
        series = response if col == "response" else df.get(col)
        if series is None:
            continue
        q.add_mask(_not_strings(series), col, f"{col} must be a string or null")

    if "tests" in df.columns:  # code tasks (scoring.code): a Python source string or a list of snippets
        q.add_mask(np.array([not _tests_ok(v) for v in df["tests"].tolist()], dtype=bool), "tests",
                   "tests must be a string of Python or a list of strings")

    timestamp = None
    if "timestamp" in df.columns:
        timestamp = pd.to_datetime(df["timestamp"], errors="coerce", utc=True)
        q.add_mask((timestamp.isna() & df["timestamp"].notna()).to_numpy(), "timestamp", "timestamp is not a date-time")

    for seg in segments:
        q.add_mask(df[seg].isna().to_numpy(), seg, f"segment column {seg!r} is missing a value")

    if fast is not None:
        msg_col = messages_column(n, np.flatnonzero(fast_ok), fast[1].filter(pa.array(fast_ok[fast[0]])),
                                  {p: messages[p] for p in slow_rows.tolist()})
    else:
        msg_col = pd.Series(messages, dtype=object)
    out = pd.DataFrame({"request_id": ids, "messages": msg_col})
    out["response"] = response.where(response.notna(), None) if response.dtype == object else response
    out["reference"] = df["reference"].astype(object).where(df["reference"].notna(), None) if "reference" in df.columns else None
    if "tests" in df.columns:
        out["tests"] = [v if isinstance(v, str) else None if _is_null_like(v) or not _tests_ok(v) else json.dumps(list(v))
                        for v in df["tests"].tolist()]  # one Parquet type: a list travels as its JSON text
    if timestamp is not None:
        out["timestamp"] = timestamp
    for seg in segments:
        out[seg] = df[seg].astype(str)
    if "conversation_id" in df.columns:  # conversations (docs/conversations.md): kept for replay and the clustering
        conv = df["conversation_id"]
        out["conversation_id"] = conv.astype(str).where(conv.notna(), None)
    if "turn" in df.columns:
        turn = pd.to_numeric(df["turn"], errors="coerce")
        whole = turn.dropna()
        out["turn"] = turn.astype("Int64") if (whole == whole.round()).all() else turn
    return q.result(out)


def _tests_ok(value: object) -> bool:
    if isinstance(value, str) or _is_null_like(value):
        return True
    return isinstance(value, (list, np.ndarray)) and all(isinstance(x, str) for x in value)


def _is_null_like(value: object) -> bool:
    if isinstance(value, (list, np.ndarray)):
        return False
    return _is_null(value)


def validate_responses(df: pd.DataFrame, source: str) -> Checked:
    """Responses: every row names its request and model; a success has a response, a failure an error."""
    require_columns(df, ["request_id", "model"], source, "responses")
    df = df.reset_index(drop=True).copy()
    for col in RESPONSE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    q = _Quarantine("responses", source, df)
    ids = _ids(df, q)
    df["request_id"] = ids
    dup = df.duplicated(["request_id", "model"], keep="first").to_numpy()
    q.add_mask(dup, "request_id", "duplicate (request_id, model)")
    neither = (df["response"].isna() & df["error"].isna()).to_numpy()
    q.add_mask(neither, "response", "neither a response nor an error")
    wrong = _not_strings(df["response"])
    q.add_mask(wrong, "response", "response must be a string or null")
    for col in ("prompt_tokens", "completion_tokens", "attempts"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    df["latency_s"] = pd.to_numeric(df["latency_s"], errors="coerce").astype("float64")
    return q.result(df[RESPONSE_COLUMNS + [c for c in df.columns if c not in RESPONSE_COLUMNS]])


def validate_scores(df: pd.DataFrame, source: str) -> Checked:
    """Scores (long form): request_id, model, metric, numeric value."""
    require_columns(df, SCORE_COLUMNS, source, "scores")
    df = df.reset_index(drop=True).copy()
    q = _Quarantine("scores", source, df)
    df["request_id"] = _ids(df, q)
    value = pd.to_numeric(df["value"], errors="coerce")
    q.add_mask((value.isna() & df["value"].notna()).to_numpy(), "value", "value is not a number")
    q.add_mask(df["metric"].isna().to_numpy(), "metric", "metric is missing")
    q.add_mask(df["model"].isna().to_numpy(), "model", "model is missing")
    q.add_mask(df.duplicated(["request_id", "model", "metric"], keep="first").to_numpy(), "metric",
               "duplicate (request_id, model, metric)")
    df["value"] = value.astype("float64")
    return q.result(df)


def validate_labels(df: pd.DataFrame, source: str) -> Checked:
    """Labels: request_id, model, dimension, numeric value, optional annotator."""
    require_columns(df, LABEL_COLUMNS, source, "labels")
    df = df.reset_index(drop=True).copy()
    if "annotator" not in df.columns:
        df["annotator"] = None
    q = _Quarantine("labels", source, df)
    df["request_id"] = _ids(df, q)
    value = pd.to_numeric(df["value"], errors="coerce")
    q.add_mask(value.isna().to_numpy(), "value", "value is missing or not a number")
    q.add_mask(df["dimension"].isna().to_numpy(), "dimension", "dimension is missing")
    q.add_mask(df["model"].isna().to_numpy(), "model", "model is missing")
    df["value"] = value.astype("float64")
    return q.result(df)


def read_table_file(uri: str, storage_options: dict | None = None) -> pd.DataFrame:
    """Read a whole (small) table: one file (Parquet, JSONL, JSON, CSV) or a folder of them, with clear errors."""
    from jobs.errors import storage_error

    fs, files = table_files(uri, storage_options)
    try:
        frames = [_read_one(fs, f, f if len(files) > 1 else uri) for f in files]
    except OSError as exc:
        raise storage_error(exc, uri) from None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def table_files(uri: str, storage_options: dict | None = None) -> tuple[object, list[str]]:
    """(filesystem, files) of a table (common.tables.table_files), with the contract's errors."""
    from jobs.errors import storage_error

    try:
        fs, path, files = common_table_files(uri, storage_options)
        if not files:
            raise ContractError(f"{uri}: folder holds no table files ({', '.join(TABLE_SUFFIXES)})")
        if files == [path] and not fs.exists(path):
            raise FileNotFoundError(uri)
        return fs, files
    except OSError as exc:
        raise storage_error(exc, uri) from None


def iter_table_chunks(uri: str, storage_options: dict | None = None, chunk_rows: int = 50_000,
                      columns: list[str] | None = None, arrow_lists: bool = False):
    """Stream a table as (source file, first row number in that file, DataFrame chunk), never the whole table.

    Parquet is read by record batches; JSONL and CSV by pandas chunks (tolerant of mixed types, so a bad row
    reaches the validator and is quarantined instead of failing the whole file). ``arrow_lists``: Parquet list
    columns stay Arrow-backed (``pd.ArrowDtype``) instead of becoming Python objects (jobs.contracts_arrow).
    """
    import pyarrow.parquet as pq

    fs, files = table_files(uri, storage_options)
    for path in files:
        lower = path.lower()
        shown = path if len(files) > 1 else uri
        try:
            with fs.open(path, "rb") as fh:
                if lower.endswith(".parquet"):
                    pf = pq.ParquetFile(fh)
                    cols = [c for c in columns if c in pf.schema_arrow.names] if columns else None
                    start = 0
                    for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols, use_threads=False):
                        chunk = batch.to_pandas(use_threads=False,  # common.tables.parquet_bytes_frame says why
                                                types_mapper=_arrow_lists if arrow_lists else None)
                        yield shown, start, chunk
                        start += len(chunk)
                    continue
                if lower.endswith((".jsonl", ".ndjson")):
                    reader = jsonl_chunks(fh, chunk_rows)
                elif lower.endswith(".csv"):
                    reader = pd.read_csv(fh, dtype={"request_id": str}, chunksize=chunk_rows)
                else:
                    reader = [_read_one(fs, path, shown)]
                start = 0
                for chunk in reader:
                    if columns:
                        chunk = chunk[[c for c in columns if c in chunk.columns]]
                    yield shown, start, chunk.reset_index(drop=True)
                    start += len(chunk)
        except (ContractError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - a parser error means a corrupt or mislabelled file
            raise _unreadable(fs, path, shown, exc) from None


def _arrow_lists(t: pa.DataType):
    return pd.ArrowDtype(t) if pa.types.is_list(t) or pa.types.is_large_list(t) else None


def jsonl_chunks(fh, chunk_rows: int):
    """DataFrames of up to ``chunk_rows`` lines of a binary JSONL file handle (blank lines skipped, as pandas does).

    A chunk that decodes and parses whole goes through pandas at its speed. Otherwise each line is tried alone:
    a line that is not UTF-8, not JSON or not an object becomes a row with only ``UNREADABLE`` (the reason, with
    its 1-based line number) and ``UNREADABLE_LINE``, which the validators quarantine; the other lines are read
    by pandas as usual. One bad line costs one row, not the file."""
    line_no = 0
    while True:
        lines = list(itertools.islice(fh, chunk_rows))
        if not lines:
            return
        first = line_no + 1
        line_no += len(lines)
        try:
            yield pd.read_json(io.StringIO(b"".join(lines).decode("utf-8")), lines=True, dtype=False)
        except ValueError:  # UnicodeDecodeError is one too
            yield _jsonl_lines(lines, first)


def _jsonl_lines(lines: list[bytes], first: int) -> pd.DataFrame:
    good: list[str] = []
    good_pos: list[int] = []
    bad: dict[int, tuple[str, str]] = {}
    n = 0
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        where = f"line {first + k}"
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
            if not isinstance(json.loads(text), dict):
                bad[n] = (f"{where}: not a JSON object", text)
            else:
                good.append(text + "\n")
                good_pos.append(n)
        except UnicodeDecodeError as exc:
            bad[n] = (f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                      raw.decode("utf-8", errors="backslashreplace"))
        except json.JSONDecodeError as exc:
            bad[n] = (f"{where}: not valid JSON ({exc.msg} at column {exc.colno})", text)
        n += 1
    frame = pd.read_json(io.StringIO("".join(good)), lines=True, dtype=False) if good else pd.DataFrame(index=range(0))
    frame.index = good_pos
    frame = frame.reindex(range(n))
    frame[UNREADABLE] = pd.Series({i: r for i, (r, _) in bad.items()}, index=range(n), dtype=object)
    frame[UNREADABLE_LINE] = pd.Series({i: t for i, (_, t) in bad.items()}, index=range(n), dtype=object)
    return frame


def _unreadable(fs, path: str, shown: str, exc: Exception) -> ContractError:
    """The ContractError for a file a parser rejected; a text file that is not UTF-8 names its first bad line."""
    kind = path.lower().rsplit(".", 1)[-1]
    if isinstance(exc, UnicodeDecodeError):
        with fs.open(path, "rb") as fh:
            for k, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as bad:
                    return ContractError(f"{shown}: line {k} is not UTF-8 (byte 0x{raw[bad.start]:02x} at column "
                                         f"{bad.start + 1}); save the file as UTF-8 or remove the line")
    return ContractError(f"{shown}: cannot be read as {kind} ({type(exc).__name__}: {str(exc)[:200]})")


def _read_one(fs, path: str, shown: str) -> pd.DataFrame:
    lower = path.lower()
    if not lower.endswith(TABLE_SUFFIXES):
        raise ContractError(f"{shown}: unknown table format (use .parquet, .jsonl, .json or .csv)")
    try:
        if lower.endswith((".jsonl", ".ndjson")):
            with fs.open(path, "rb") as fh:
                chunks = list(jsonl_chunks(fh, 1_000_000))
            return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else (chunks[0] if chunks else pd.DataFrame())
        return read_one(fs, path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser error means a corrupt or mislabelled file
        raise _unreadable(fs, path, shown, exc) from None
