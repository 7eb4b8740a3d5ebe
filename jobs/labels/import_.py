"""`baton labels import` and the pipeline's labels stage: human labels as living data.

Answers (`import_answers`): the annotators' CSV, JSONL or a Label Studio export, un-blinded through the key and
validated judgment by judgment. Unknown item ids, values off a dimension's scale, missing values, duplicates and one
annotator's conflicting values become quarantine rows with their reason (never a silent drop); a file that cannot
be read or lacks a column is an error naming the file and column (exit 2). Valid labels are committed to the labels
table with their batch, design weight and inclusion probability.

A Label Studio project is re-exported as annotators work and correct: its annotations are tracked by id and
``updated_at`` in ``labels/ls-<batch>.json`` (every version, the history), the latest version of each wins, and
the batch's labels and quarantine rows are one shard each, named by their content, that replaces the batch's
earlier shards (kept under ``<table>/_retired/``). An identical re-export writes nothing.

The pipeline's labels stage (`import_labels_table`, ``labels.path``) is re-imported when its source changes
(content hash of a local file, ETag and size on S3) and is a no-op when it does not; its bad rows are quarantined
(jobs.labels.checks.screen_labels) and the decision uses the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from common.keys import isin
from jobs.config import RunConfig
from jobs.contracts import QUARANTINE_COLUMNS, read_table_file, table_files, validate_labels
from jobs.errors import ContractError, storage_error
from jobs.labels.task import KEY_SCHEMA, LabelDimension, parse_value, unblind
from jobs.store import RunStore, shard_id, storage_options

log = logging.getLogger("baton.labels")
LS_ORIGIN = "labelstudio"  # commit-record tag of a Label Studio batch's current shard
TABLE_ORIGIN = "labels.path"  # commit-record tag of the pipeline's labels-table import


# -- reading --------------------------------------------------------------------------------------------------
def read_answers(path: str, identities: dict[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """Wide answer rows (item_id, annotator, batch, <field>...) and a description of each row's origin.

    CSV and JSONL hold one row per (item, annotator); a Label Studio export holds tasks with annotations, each
    annotation one row with its ``annotation_id`` and ``updated_at``. Annotators are mapped to one identity through
    ``identities`` (alias -> identity, LabelTaskConfig.annotators).
    """
    lower = path.lower()
    try:
        if lower.endswith(".csv"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            df["_origin"] = [f"row {i}" for i in range(len(df))]
            return _identify(df, identities), "csv"
        if lower.endswith((".jsonl", ".ndjson")):
            rows = []
            with open(path) as fh:
                for i, line in enumerate(fh):
                    if line.strip():
                        try:
                            rows.append({**json.loads(line), "_origin": f"line {i + 1}"})
                        except json.JSONDecodeError as exc:
                            raise ContractError(f"{path}: line {i + 1} is not JSON ({exc.msg})") from None
            return _identify(_stringify(pd.DataFrame(rows)), identities), "jsonl"
        if lower.endswith(".json"):
            with open(path) as fh:
                doc = json.load(fh)
            if not isinstance(doc, list):
                raise ContractError(f"{path}: expected a JSON list (a Label Studio export or rows)")
            if any(isinstance(t, dict) and "annotations" in t for t in doc):
                return _from_label_studio(doc, path, identities or {}), "labelstudio"
            rows = _stringify(pd.DataFrame([{**r, "_origin": f"element {i}"} for i, r in enumerate(doc)]))
            return _identify(rows, identities), "json"
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


def _identify(df: pd.DataFrame, identities: dict[str, str] | None) -> pd.DataFrame:
    if identities and "annotator" in df.columns:
        df["annotator"] = [identities.get(str(a), a) if isinstance(a, str) else a for a in df["annotator"]]
    return df


def annotator_identity(ann: dict, identities: dict[str, str]) -> str | None:
    """One name for the person behind a Label Studio annotation.

    An export names them by numeric user id (``completed_by: 7``; ``created_username: "ann@x.org, 7"`` beside
    it), the task API by a user object with an email. Every name found is looked up in ``identities`` (the task
    config's ``annotators``); otherwise the email, else the numeric id."""
    who = ann.get("completed_by")
    names: list[str] = []
    if isinstance(who, dict):
        names += [str(who[k]) for k in ("email", "id") if who.get(k) is not None]
    elif who is not None:
        names.append(str(who))
    user = ann.get("created_username")
    if isinstance(user, str) and user.strip():
        parts = [p.strip() for p in user.split(",") if p.strip()]
        names = [p for p in parts if "@" in p] + names + [p for p in parts if "@" not in p]
    for n in names:
        if n in identities:
            return identities[n]
    emails = [n for n in names if "@" in n]
    return emails[0] if emails else (names[0] if names else None)


def _from_label_studio(doc: list, path: str, identities: dict[str, str]) -> pd.DataFrame:
    rows = []
    for t, task in enumerate(doc):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ContractError(f"{path}: element {t} has no 'data' mapping (not a Label Studio task)")
        data, task_id = task["data"], task.get("id", t)
        for a, ann in enumerate(task.get("annotations") or []):
            if ann.get("was_cancelled"):
                continue
            aid = str(ann["id"]) if ann.get("id") is not None else f"task{task_id}.{a}"
            who = annotator_identity(ann, identities)
            row = {"item_id": data.get("item_id"), "batch": data.get("batch"),
                   "annotator": None if who is None else str(who), "annotation_id": aid,
                   "updated_at": str(ann.get("updated_at") or ann.get("created_at") or ""),
                   "_origin": f"annotation {aid} (task {task_id})"}
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


# -- answers --------------------------------------------------------------------------------------------------
def import_answers(cfg: RunConfig, store: RunStore, path: str, key_path: str | None = None,
                   batch: str | None = None, dimensions: list[str] | None = None,
                   identities: dict[str, str] | None = None) -> dict:
    """Un-blind, validate and commit one file of answers; returns a summary with counts and quarantine reasons."""
    wide, fmt = read_answers(path, identities)
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
    if "annotator" not in wide.columns:
        wide["annotator"] = None
    if fmt == "labelstudio":
        return _import_label_studio(store, path, wide, batch, key, dims)
    wide["_source"] = path
    out, q, (merged, already), kinds = _judge(wide, key, dims, batch, store.read_table("labels"))
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:10]
    shard = shard_id("labels", batch, digest)
    committed = False
    if len(out):
        committed = store.write_shard("labels", shard, out, meta={"source": path, "batch": batch})
        if not committed:
            log.warning("%s: already imported (shard %s committed); nothing written", path, shard)
    if len(q) and (committed or not len(out)):
        store.write_shard("quarantine", shard, q[QUARANTINE_COLUMNS], meta={"source": path, "batch": batch})
    return {"file": path, "format": fmt, "batch": batch, "labels": int(len(out)), "committed": committed,
            "quarantined": int(len(q)), "reasons": _reason_counts(q, kinds), "merged_repeats": merged,
            "already_imported": already}


def _judge(wide: pd.DataFrame, key: dict, dims: list[LabelDimension], batch: str, prior: pd.DataFrame):
    """(valid label rows, quarantine rows, (merged repeats, already imported), reason kind per quarantine row) of
    wide answer rows
    (with ``_origin`` and ``_source``); ``prior`` holds the labels already imported, for duplicates and conflicts."""
    items = {it["item_id"]: it for it in key["items"]}
    incumbent = key["incumbent"]
    long, quarantine, kinds = [], [], []
    sources = dict(zip(wide["_origin"], wide["_source"]))

    def bad(origin: str, rid, field: str, reason: str, raw: dict, kind: str) -> None:
        kinds.append(kind)
        quarantine.append({"stage": "labels", "source": sources[origin], "row": _row_number(origin),
                           "request_id": rid, "field": field, "reason": f"{origin}: {reason}",
                           "raw": json.dumps(raw, default=str)[:2000]})

    for rec in wide.to_dict("records"):
        origin = rec.pop("_origin")
        rec.pop("_source")
        item_id = rec.get("item_id")
        it = items.get(item_id)
        if it is None:
            bad(origin, None, "item_id", f"item_id {item_id!r} is not in the key of batch {batch!r}", rec,
                "unknown item_id")
            continue
        if isinstance(rec.get("batch"), str) and rec["batch"] != batch:
            bad(origin, it["request_id"], "batch", f"batch {rec.get('batch')!r} but imported as batch {batch!r}", rec,
                "wrong batch")
            continue
        annotator = rec.get("annotator")
        annotator = "anonymous" if annotator is None or (isinstance(annotator, float) and np.isnan(annotator)) else annotator
        provenance = {k: rec[k] for k in ("annotation_id", "updated_at") if k in rec}
        for d in dims:
            for col, side in d.fields():
                raw = rec.get(col)
                if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
                    bad(origin, it["request_id"], col, f"no value for dimension {d.name!r}"
                        + (f" (answer {side.upper()})" if side else ""), rec, "missing value")
                    continue
                canon, err = parse_value(d, str(raw))
                if err:
                    bad(origin, it["request_id"], col, f"column {col!r}: {err}", rec, "value off the dimension's scale")
                    continue
                model, value = unblind(d, side, canon, it, incumbent)
                long.append({"request_id": it["request_id"], "model": model, "dimension": d.name, "value": value,
                             "annotator": str(annotator), "batch": batch, "item_id": item_id,
                             "inclusion_prob": it["inclusion_prob"], "weight": 1.0 / it["inclusion_prob"],
                             "design": key["design"], **provenance, "_origin": origin, "_field": col, "_raw": rec})
    labels = pd.DataFrame(long)
    merged = [0, 0]
    if len(labels):
        labels = _drop_duplicates(labels, prior, bad, merged)
    out = labels.drop(columns=[c for c in labels.columns if c.startswith("_")]) if len(labels) else labels
    q = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    if len(out):
        checked = validate_labels(out, "labels of batch " + batch)
        if len(checked.quarantine):  # cannot happen after the checks above; kept as a guard, reported if it does
            q = pd.concat([q, checked.quarantine], ignore_index=True)
            kinds += ["labels contract"] * len(checked.quarantine)
        out = checked.valid
    return out, q, tuple(merged), kinds


# -- Label Studio: annotations by id and updated_at ------------------------------------------------------------
def _import_label_studio(store: RunStore, path: str, wide: pd.DataFrame, batch: str, key: dict,
                         dims: list[LabelDimension]) -> dict:
    """Merge one export into the batch's annotation history; re-derive and replace the batch's shards if changed."""
    doc_name = f"ls-{batch}.json"
    before = store.read_document("labels", doc_name).decode() if store.has_document("labels", doc_name) else None
    state = json.loads(before) if before else {"batch": batch, "annotations": {}}
    history = state["annotations"]
    counts = {"new": 0, "corrected": 0, "unchanged": 0, "stale": 0}
    now = _now()
    for rec in wide.to_dict("records"):
        row = {k: v for k, v in rec.items() if k != "_origin" and not (isinstance(v, float) and np.isnan(v))}
        versions = history.setdefault(rec["annotation_id"], [])
        latest = versions[-1] if versions else None
        if latest is None:
            what = "new"
        elif latest["row"] == row:
            what = "unchanged"
        elif _ts(row.get("updated_at")) < _ts(latest["row"].get("updated_at")):
            what = "stale"  # an older export than one already imported: the later correction stays
        else:
            what = "corrected"
        counts[what] += 1
        if what in ("new", "corrected"):
            versions.append({"row": row, "origin": rec["_origin"], "file": path, "imported_at": now})
    current = [{**v[-1]["row"], "_origin": v[-1]["origin"], "_source": v[-1]["file"]}
               for _, v in sorted(history.items())]
    cur = pd.DataFrame(current)
    for col in ("annotator", "batch"):
        if col not in cur.columns:
            cur[col] = None
    commits = store.commits("labels")
    ours = {s for s, r in commits.items() if r.get("origin") == LS_ORIGIN and r.get("batch") == batch}
    prior = _labels_except(store, commits, ours)
    out, q, (merged, _), kinds = _judge(cur, key, dims, batch, prior)
    order = [c for c in ("request_id", "model", "dimension", "annotator", "annotation_id") if c in out.columns]
    out = out.sort_values(order, kind="stable").reset_index(drop=True) if len(out) else out
    digest = hashlib.sha256((out.to_json(orient="records") + q.to_json(orient="records")).encode()).hexdigest()[:12]
    shard = shard_id("labels", batch, "ls", digest)
    meta = {"source": path, "batch": batch, "origin": LS_ORIGIN}
    # quarantine first, labels second (the labels commit marks the import done), then the history, then retire
    # the batch's earlier shards: a run killed anywhere re-derives the same shard ids and converges
    if len(q):
        store.write_shard("quarantine", shard, q[QUARANTINE_COLUMNS], meta=meta)
    committed = store.write_shard("labels", shard, out, meta=meta)
    after = json.dumps(state, indent=1, sort_keys=True, default=str)
    if after != before:
        store.write_document("labels", doc_name, after)
    retired = retire_shards(store, "labels", lambda s, r: s in ours, keep=shard)
    retired += retire_shards(store, "quarantine",
                             lambda s, r: r.get("origin") == LS_ORIGIN and r.get("batch") == batch, keep=shard)
    return {"file": path, "format": "labelstudio", "batch": batch, "labels": int(len(out)), "committed": committed,
            "quarantined": int(len(q)), "reasons": _reason_counts(q, kinds), "merged_repeats": merged,
            "annotations": counts, "retired": retired}


def _labels_except(store: RunStore, commits: dict[str, dict], skip: set[str]) -> pd.DataFrame:
    frames = [store.read_shard("labels", s) for s in sorted(commits) if s not in skip]
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _ts(text) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts) if not pd.isna(ts) else pd.Timestamp.min.tz_localize("UTC")
    except (ValueError, TypeError):
        return pd.Timestamp.min.tz_localize("UTC")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- superseded shards ----------------------------------------------------------------------------------------
def retire_shards(store: RunStore, table: str, match, keep: str) -> list[str]:
    """Take the committed shards ``match(shard, record)`` accepts, other than ``keep``, out of ``table``.

    Readers see only shards with a commit record (jobs.store), so moving the record to
    ``<table>/_retired/`` (with ``superseded_by``; RunStore.uncommit) retires the shard while its data file stays:
    the history of a corrected import. Idempotent, so a rerun after a crash finishes the job."""
    retired = []
    for shard, rec in store.commits(table).items():
        if shard == keep or not match(shard, rec):
            continue
        store.uncommit(table, shard, "_retired", {**rec, "retired_at": _now(), "superseded_by": keep})
        retired.append(shard)
    return retired


# -- the pipeline's labels table (labels.path) ----------------------------------------------------------------
def source_fingerprint(uri: str, storage_opts: dict | None = None) -> str:
    """Identity of a table's content without trusting its name: the sha256 of a local file's bytes, an S3
    object's ETag and size (no download); over every file of a folder table."""
    fs, files = table_files(uri, storage_opts)
    h = hashlib.sha256()
    try:
        for f in files:
            info = fs.info(f)
            etag = info.get("ETag") or info.get("etag")
            h.update(f"{f}\0{info.get('size')}\0".encode())
            if etag:
                h.update(str(etag).encode())
            else:
                with fs.open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
    except OSError as exc:
        raise storage_error(exc, uri) from None
    return h.hexdigest()[:16]


def import_labels_table(cfg: RunConfig, store: RunStore) -> dict:
    """The labels stage: validate ``labels.path`` and commit it, again whenever its content changes.

    Bad rows (off-scale for the dimension's kind, unknown dimension, request or model, missing or non-numeric
    fields) go to quarantine with file, row, field and reason; the decision uses the rest. The shard is named by
    the source's fingerprint: an unchanged source is a no-op, a changed one replaces the earlier import (retired,
    not deleted; see retire_shards)."""
    from jobs.labels.checks import screen_labels

    uri = cfg.labels.path
    if not uri:
        return {"rows": store.count_rows("labels")}
    opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
    fp = source_fingerprint(uri, opts)
    shard = shard_id("labels-import", fp)
    stats: dict = {"source": uri, "fingerprint": fp, "changed": not store.is_committed("labels", shard)}
    if stats["changed"]:
        table = read_table_file(uri, opts)
        ids = table["request_id"].astype(str) if "request_id" in table.columns else []
        checked = screen_labels(
            table, uri, {d.name: d.kind for d in cfg.decision.dimensions},
            levels={d.name: d.levels for d in cfg.decision.dimensions if d.levels},
            requests=requests_in_traffic(store, ids),
            models=[cfg.incumbent.name, *(c.name for c in cfg.candidates)])
        meta = {"source": uri, "fingerprint": fp, "origin": TABLE_ORIGIN}
        if len(checked.quarantine):  # before the labels commit, which marks this source imported
            store.write_shard("quarantine", shard, checked.quarantine[QUARANTINE_COLUMNS], meta=meta)
        store.write_shard("labels", shard, checked.valid, meta=meta)
        stats.update(rows=len(checked.valid), quarantined=len(checked.quarantine))
        if len(checked.quarantine):
            log.warning("%s: %d label row(s) quarantined (e.g. row %s, field %r: %s)", uri, len(checked.quarantine),
                        checked.quarantine["row"].iat[0], checked.quarantine["field"].iat[0],
                        checked.quarantine["reason"].iat[0])

    def earlier(s: str, rec: dict) -> bool:  # "labels-import": the shard of Baton before sources were fingerprinted
        return s == "labels-import" or rec.get("origin") == TABLE_ORIGIN

    stats["retired"] = retire_shards(store, "labels", earlier, keep=shard)
    retire_shards(store, "quarantine", earlier, keep=shard)
    store.update_manifest(stages={"labels": stats})
    return stats


# -- helpers --------------------------------------------------------------------------------------------------
def requests_in_traffic(store: RunStore, ids) -> list[str] | None:
    """Which of ``ids`` (a labels file's request ids: thousands) the run's traffic holds, read one traffic shard at
    a time with the ids as Parquet dictionary codes, so the driver never holds the traffic's ids as strings (10M
    of them took it to 5.8 GiB). None when the run has no traffic (nothing to check against)."""
    if not store.commits("traffic"):
        return None
    wanted = pd.Index(pd.unique(np.asarray(ids, dtype=object)))
    found = np.zeros(len(wanted), dtype=bool)
    for _, shard in store.iter_shards("traffic", columns=["request_id"], categorical=["request_id"]):
        found |= isin(wanted, shard["request_id"].astype("category").cat.categories)
        if found.all():
            break
    return list(wanted[found])


def _row_number(origin: str) -> int:
    digits = "".join(ch if ch.isdigit() else " " for ch in origin).split()
    return int(digits[0]) if digits else -1


def _drop_duplicates(labels: pd.DataFrame, prior: pd.DataFrame, bad, merged: list[int]) -> pd.DataFrame:
    """One judgment per (request, model, dimension, annotator). Different values quarantine the whole group (which
    one is right is unknown); a repeat within one item, or of a label already in the store, is quarantined as a
    duplicate; the same value for the same answer in two items (the incumbent's answer beside two candidates) is
    kept once and counted in ``merged[0]``. Labels already imported (``prior``) count as earlier members of the
    group; the same value again (a re-import of a grown file) is skipped, counted in ``merged[1]``, not quarantined."""
    key = ["request_id", "model", "dimension", "annotator"]
    prior_vals: dict[tuple, tuple[float, str]] = {}
    if len(prior):
        who = prior["annotator"] if "annotator" in prior.columns else pd.Series(None, index=prior.index, dtype=object)
        prior = prior.assign(annotator=who.fillna("anonymous").astype(str))
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
                    labels["_raw"].iat[i], "conflicting values")
            continue
        if earlier:  # no conflict: every value here equals the one imported, so this is a re-import
            keep[idx] = False
            merged[1] += len(idx)
            continue
        seen_items: dict[str, str] = {}
        for i in idx:
            item, origin = labels["item_id"].iat[i], labels["_origin"].iat[i]
            if item in seen_items:
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
            bad(origin, k[0], labels["_field"].iat[i], reason, labels["_raw"].iat[i], "duplicate judgment")
    return labels[keep].reset_index(drop=True)


def _reason_counts(q: pd.DataFrame, kinds: list[str]) -> dict[str, dict]:
    """Quarantine rows by kind of problem, each with its count and first full reason (the reasons themselves are
    never rewritten: batch names, item ids and values stay as they are)."""
    out: dict[str, dict] = {}
    for kind, reason in zip(kinds, q["reason"]):
        entry = out.setdefault(kind, {"count": 0, "example": reason})
        entry["count"] += 1
    return out
