"""Before a run resumes: find corrupt shards of the run store and set them aside, with everything computed from them.

``RunStore.verify`` finds, per table, commit records that do not parse and data files that are missing or of the
wrong size (readers find the rest, a checksum mismatch, and set the shard aside themselves). A set-aside shard is
no longer committed, so the stage that wrote it redoes it on this run, exactly once. What was computed from it is
set aside too, so it is recomputed from the redone rows (the pipeline's shard names are its links):

    traffic/*, quarantine/traffic-q-*      -> the sample stage runs again (deterministic: the same shards)
    responses/X                            -> scores/scores-X, embeddings/embeddings-X
    quarantine/replay-X                    -> responses/X
    quarantine/judge-X, embeddings/embeddings-X -> scores/scores-X
    quarantine/recorded-scores-X           -> scores/recorded-X
    quarantine/labels-import               -> labels/labels-import

Labels imported by hand (``baton labels import``) cannot be redone without their answers file: the run stops
(exit 4) with the exact command that re-imports it.
"""

from __future__ import annotations

import json
import logging

from jobs.errors import CorruptShard
from jobs.store import TABLES, RunStore

log = logging.getLogger(__name__)


def dependents(table: str, shard: str) -> list[tuple[str, str]]:
    """The shards computed from (table, shard), by the pipeline's shard names."""
    if table == "responses":
        return [("scores", f"scores-{shard}"), ("embeddings", f"embeddings-{shard}")]
    if table == "embeddings" and shard.startswith("embeddings-"):
        return [("scores", "scores-" + shard[len("embeddings-"):])]
    if table == "quarantine":
        for prefix, (dep_table, dep_prefix) in {"replay-": ("responses", ""), "judge-": ("scores", "scores-"),
                                                 "recorded-scores-": ("scores", "recorded-")}.items():
            if shard.startswith(prefix):
                return [(dep_table, dep_prefix + shard[len(prefix):])]
        if shard == "labels-import":
            return [("labels", "labels-import")]
    return []


def _redoes_sample(table: str, shard: str) -> bool:
    return table == "traffic" or (table == "quarantine" and shard.startswith("traffic-q-"))


def _by_hand(table: str, shard: str) -> bool:
    """Shards no stage of `baton run` writes: answers imported with `baton labels import`."""
    return table in ("labels", "quarantine") and shard.startswith("labels-") and shard != "labels-import"


def repair_run(store: RunStore, config_uri: str | None = None) -> list[dict]:
    """Set aside every unsound shard and what depends on it; returns what was set aside (table, shard, reason).

    Raises CorruptShard (exit 4) naming the re-import command when a hand-imported labels shard was set aside.
    """
    aside: list[dict] = []
    for table in TABLES:
        for shard, uri, reason in store.verify(table):
            store.set_aside(table, shard, f"{uri}: {reason}")
    manual: list[tuple[str, str, str, dict]] = []
    redo_sample = False
    while True:  # until no note is left to cascade (a dependent set aside here leaves a note of its own)
        notes = [(t, p, n) for t in TABLES for p, n in store.set_asides(t) if not n.get("cascaded")]
        if not notes:
            break
        for table, path, note in notes:
            shard = note["shard"]
            aside.append({"table": table, "shard": shard, "reason": note["reason"]})
            for dep_table, dep_shard in dependents(table, shard):
                if store.is_committed(dep_table, dep_shard):
                    store.set_aside(dep_table, dep_shard, f"computed from {table}/{shard}, which was set aside")
            redo_sample |= _redoes_sample(table, shard)
            if _by_hand(table, shard):
                manual.append((table, shard, path, note))
            store.mark_cascaded(path, note)
    if redo_sample:
        store.update_manifest(stages={"sample": {"status": "redo"}})
    if manual:
        table, shard, path, note = manual[0]
        raise CorruptShard(table, shard, store.uri(table, "_commits", f"{shard}.json"),
                           f"{note['reason']}; set aside (see {path}), and only its answers file can redo it: "
                           + _reimport_command(note, config_uri))
    return aside


def _reimport_command(note: dict, config_uri: str | None) -> str:
    try:
        record = json.loads(note.get("record") or "")
    except json.JSONDecodeError:
        record = {}
    source = record.get("source") or "ANSWERS_FILE"
    batch = f" --batch {record['batch']}" if record.get("batch") else ""
    return f"baton labels import --config {config_uri or 'RUN_CONFIG'} {source}{batch}"
