"""`baton labels import`: read the annotators' answers back, un-blind them through the key and validate them.

Reads the annotators' CSV, JSONL or a Label Studio export, un-blinds it through the key and validates every
judgment. Unknown item ids, values off a dimension's scale, missing values, duplicates and one annotator's
conflicting values become quarantine rows with their reason (never a silent drop); a file that cannot be read or
lacks a column is an error naming the file and column (exit 2). Valid labels are committed to the labels table
with their batch, design weight and inclusion probability.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd

from jobs.config import RunConfig
from jobs.contracts import QUARANTINE_COLUMNS, validate_labels
from jobs.errors import ContractError
from jobs.label_task import KEY_SCHEMA, LabelDimension, parse_value, unblind
from jobs.store import RunStore, shard_id

log = logging.getLogger("baton.labels")


# -- import ---------------------------------------------------------------------------------------------------
def read_answers(path: str) -> tuple[pd.DataFrame, str]:
    """Wide answer rows (item_id, annotator, batch, <field>...) and a description of each row's origin.

    CSV and JSONL hold one row per (item, annotator); a Label Studio export holds tasks with annotations, each
    annotation one row (annotator = completed_by).
    """
    lower = path.lower()
    try:
        if lower.endswith(".csv"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            df["_origin"] = [f"row {i}" for i in range(len(df))]
            return df, "csv"
        if lower.endswith((".jsonl", ".ndjson")):
            rows = []
            with open(path) as fh:
                for i, line in enumerate(fh):
                    if line.strip():
                        try:
                            rows.append({**json.loads(line), "_origin": f"line {i + 1}"})
                        except json.JSONDecodeError as exc:
                            raise ContractError(f"{path}: line {i + 1} is not JSON ({exc.msg})") from None
            return _stringify(pd.DataFrame(rows)), "jsonl"
        if lower.endswith(".json"):
            with open(path) as fh:
                doc = json.load(fh)
            if not isinstance(doc, list):
                raise ContractError(f"{path}: expected a JSON list (a Label Studio export or rows)")
            if any(isinstance(t, dict) and "annotations" in t for t in doc):
                return _from_label_studio(doc, path), "labelstudio"
            return _stringify(pd.DataFrame([{**r, "_origin": f"element {i}"} for i, r in enumerate(doc)])), "json"
    except ContractError:
        raise
    except FileNotFoundError:
        raise ContractError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ContractError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    raise ContractError(f"{path}: unknown format (use .csv, .jsonl, or .json from Label Studio)")


def _stringify(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if col != "_origin":
            out[col] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        (str(int(v)) if isinstance(v, (bool, np.bool_)) else
                         str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) for v in out[col]]
    return out


def _from_label_studio(doc: list, path: str) -> pd.DataFrame:
    rows = []
    for t, task in enumerate(doc):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ContractError(f"{path}: element {t} has no 'data' mapping (not a Label Studio task)")
        data = task["data"]
        for a, ann in enumerate(task.get("annotations") or []):
            if ann.get("was_cancelled"):
                continue
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            row = {"item_id": data.get("item_id"), "batch": data.get("batch"),
                   "annotator": None if who is None else str(who), "_origin": f"task {t} annotation {a}"}
            for res in ann.get("result") or []:
                value = res.get("value") or {}
                if "choices" in value and value["choices"]:
                    row[res.get("from_name")] = str(value["choices"][0])
                elif "rating" in value:
                    row[res.get("from_name")] = str(value["rating"])
            rows.append(row)
    if not rows:
        raise ContractError(f"{path}: the Label Studio export holds no (non-cancelled) annotations")
    return pd.DataFrame(rows)


def load_key(store: RunStore, batch: str, key_path: str | None) -> dict:
    try:
        if key_path:
            with open(key_path) as fh:
                key = json.load(fh)
        elif store.has_document("labels", f"key-{batch}.json"):
            key = json.loads(store.read_document("labels", f"key-{batch}.json"))
        else:
            raise ContractError(f"no key for batch {batch!r} in {store.uri('labels')} (key-{batch}.json); "
                                "pass --key PATH if the export wrote it elsewhere")
    except OSError as exc:
        raise ContractError(f"{key_path}: cannot read the key ({exc})") from None
    if key.get("schema_version") != KEY_SCHEMA or key.get("batch") != batch:
        raise ContractError(f"{key_path or 'key-' + batch + '.json'}: is not the key of batch {batch!r} "
                            f"(batch {key.get('batch')!r}, schema {key.get('schema_version')!r})")
    return key


def import_answers(cfg: RunConfig, store: RunStore, path: str, key_path: str | None = None,
                   batch: str | None = None, dimensions: list[str] | None = None) -> dict:
    """Un-blind, validate and commit one file of answers; returns a summary with counts and quarantine reasons."""
    wide, fmt = read_answers(path)
    if "item_id" not in wide.columns:
        raise ContractError(f"{path}: missing column 'item_id' (present: {[c for c in wide.columns if c != '_origin']})")
    if batch is None:
        found = sorted({b for b in wide.get("batch", pd.Series(dtype=str)).dropna().unique()})
        if len(found) != 1:
            raise ContractError(f"{path}: column 'batch' must name exactly one batch, found {found}; pass --batch")
        batch = found[0]
    key = load_key(store, batch, key_path)
    dims = [LabelDimension(**d) for d in key["dimensions"]]
    if dimensions:
        unknown = sorted(set(dimensions) - {d.name for d in dims})
        if unknown:
            raise ContractError(f"--dimensions {unknown}: not in batch {batch!r} ({[d.name for d in dims]})")
        dims = [d for d in dims if d.name in dimensions]
    if fmt != "labelstudio":  # a Label Studio annotation without a field is a missing value, not a missing column
        for d in dims:
            for col, _ in d.fields():
                if col not in wide.columns:
                    raise ContractError(f"{path}: missing column {col!r} for dimension {d.name!r} "
                                        f"(import a subset with --dimensions)")
    items = {it["item_id"]: it for it in key["items"]}
    incumbent = key["incumbent"]
    if "annotator" not in wide.columns:
        wide["annotator"] = None

    long, quarantine = [], []

    def bad(origin: str, rid, field: str, reason: str, raw: dict) -> None:
        quarantine.append({"stage": "labels", "source": path, "row": _row_number(origin), "request_id": rid,
                           "field": field, "reason": f"{origin}: {reason}", "raw": json.dumps(raw, default=str)[:2000]})

    for rec in wide.to_dict("records"):
        origin = rec.pop("_origin")
        item_id = rec.get("item_id")
        it = items.get(item_id)
        if it is None:
            bad(origin, None, "item_id", f"item_id {item_id!r} is not in the key of batch {batch!r}", rec)
            continue
        if isinstance(rec.get("batch"), str) and rec["batch"] != batch:
            bad(origin, it["request_id"], "batch", f"batch {rec.get('batch')!r} but imported as batch {batch!r}", rec)
            continue
        annotator = rec.get("annotator")
        annotator = "anonymous" if annotator is None or (isinstance(annotator, float) and np.isnan(annotator)) else annotator
        for d in dims:
            for col, side in d.fields():
                raw = rec.get(col)
                if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
                    bad(origin, it["request_id"], col, f"no value for dimension {d.name!r}"
                        + (f" (answer {side.upper()})" if side else ""), rec)
                    continue
                canon, err = parse_value(d, str(raw))
                if err:
                    bad(origin, it["request_id"], col, f"column {col!r}: {err}", rec)
                    continue
                model, value = unblind(d, side, canon, it, incumbent)
                long.append({"request_id": it["request_id"], "model": model, "dimension": d.name, "value": value,
                             "annotator": str(annotator), "batch": batch, "item_id": item_id,
                             "inclusion_prob": it["inclusion_prob"], "weight": 1.0 / it["inclusion_prob"],
                             "design": key["design"], "_origin": origin, "_field": col, "_raw": rec})
    labels = pd.DataFrame(long)
    merged = [0]
    if len(labels):
        labels = _drop_duplicates(labels, store, bad, merged)
    out = labels.drop(columns=[c for c in labels.columns if c.startswith("_")]) if len(labels) else labels
    q = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:10]
    shard = shard_id("labels", batch, digest)
    committed = False
    if len(out):
        checked = validate_labels(out, path)
        if len(checked.quarantine):  # cannot happen after the checks above; kept as a guard, reported if it does
            q = pd.concat([q, checked.quarantine], ignore_index=True)
        committed = store.write_shard("labels", shard, checked.valid, meta={"source": path, "batch": batch})
        if not committed:
            log.warning("%s: already imported (shard %s committed); nothing written", path, shard)
    if len(q) and (committed or not len(out)):
        store.write_shard("quarantine", shard, q[QUARANTINE_COLUMNS], meta={"source": path, "batch": batch})
    summary = {"file": path, "format": fmt, "batch": batch, "labels": int(len(out)), "committed": committed,
               "quarantined": int(len(q)), "reasons": _reason_counts(q),
               "merged_repeats": merged[0]}
    return summary


def _row_number(origin: str) -> int:
    digits = "".join(ch if ch.isdigit() else " " for ch in origin).split()
    return int(digits[0]) if digits else -1


def _drop_duplicates(labels: pd.DataFrame, store: RunStore, bad, merged: list[int]) -> pd.DataFrame:
    """One judgment per (request, model, dimension, annotator). Different values quarantine the whole group (which
    one is right is unknown); a repeat within one item, or of a label already in the store, is quarantined as a
    duplicate; the same value for the same answer in two items (the incumbent's answer beside two candidates) is
    kept once and counted in ``merged``. Labels already in the store count as earlier members of the group."""
    key = ["request_id", "model", "dimension", "annotator"]
    prior = store.read_table("labels")
    prior_vals: dict[tuple, tuple[float, str]] = {}
    if len(prior):
        prior = prior.assign(annotator=prior["annotator"].fillna("anonymous").astype(str))
        for r in prior.itertuples():
            prior_vals.setdefault((str(r.request_id), str(r.model), str(r.dimension), r.annotator),
                                  (float(r.value), str(getattr(r, "batch", "?"))))
    keep = np.ones(len(labels), dtype=bool)
    for k, idx in labels.groupby(key, sort=False).indices.items():
        vals = labels["value"].to_numpy()[idx]
        origins = [labels["_origin"].iat[i] for i in idx]
        earlier = prior_vals.get(tuple(k))
        what = f"{k[3]} on request {k[0]!r}, model {k[1]!r}, dimension {k[2]!r}"
        if np.unique(np.r_[vals, [earlier[0]] if earlier else []]).size > 1:
            extra = f" and {earlier[0]} already imported in batch {earlier[1]}" if earlier else ""
            for i in idx:
                keep[i] = False
                bad(labels["_origin"].iat[i], k[0], labels["_field"].iat[i],
                    f"annotator {what} gave conflicting values {vals.tolist()} ({', '.join(origins)}){extra}",
                    labels["_raw"].iat[i])
            continue
        seen_items: dict[str, str] = {}
        for i in idx:
            item, origin = labels["item_id"].iat[i], labels["_origin"].iat[i]
            if earlier:
                reason = f"duplicate judgment by {what} (already imported in batch {earlier[1]})"
            elif item in seen_items:
                reason = f"duplicate judgment by {what} (first at {seen_items[item]})"
            elif seen_items:
                # the same answer (the incumbent's, shown beside two candidates) judged alike twice: one row
                keep[i] = False
                merged[0] += 1
                continue
            else:
                seen_items[item] = origin
                continue
            keep[i] = False
            bad(origin, k[0], labels["_field"].iat[i], reason, labels["_raw"].iat[i])
    return labels[keep].reset_index(drop=True)


def _reason_counts(q: pd.DataFrame) -> dict[str, int]:
    if q.empty:
        return {}
    kinds = q["reason"].str.split(": ", n=1).str[1].str.replace(r"'[^']*'|\[[^\]]*\]|\([^)]*\)|\d+(\.\d+)?", "_",
                                                                  regex=True)
    return {str(k): int(v) for k, v in kinds.value_counts().items()}
