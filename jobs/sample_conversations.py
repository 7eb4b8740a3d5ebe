"""The sampling stage in ``replay.mode: conversation``: whole conversations, never split across shards.

A conversation's turns depend on each other (turn k is sent with the candidate's answers to turns 1..k-1), so the
unit of sampling, of sharding and of resume is the conversation:

- first pass (keys: request_id, conversation_id, turn, the messages' user count, strata): the traffic must carry
  ``conversation_id`` and ``turn`` and every conversation must be turns 1..n each once with turn k holding k user
  messages (inference.engines.conversation.check_turns); anything else is a ContractError (exit 2) naming the
  file, row or conversation and the field, before anything is committed or any model loads. The sample draws
  conversations (the hash of ``conversation_id``; a stratum or ``n`` that selects some turns of a conversation
  takes all of them). Conversations are ordered by the position of their last row in the file and packed whole,
  in that order, into shards of about ``execution.shard_rows`` rows (a longer conversation is a shard of its own).
- second pass: rows are validated chunk by chunk as in jobs.sample and dealt to their planned shard; a shard is
  committed as soon as its last row has been read (the packing order makes the shards complete in order, so only
  the rows of unfinished conversations are held). A quarantined turn takes its conversation's later turns with it
  (their history would hold a turn that was never replayed), each with its own reason; earlier turns are kept.

Deterministic for a seed and a traffic table: a rerun after a crash plans the same shards, and
``RunStore.write_shard`` skips the ones already committed.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from inference.engines.conversation import check_turns
from jobs.config import RunConfig
from jobs.contracts import QUARANTINE_COLUMNS, _normalise_messages, iter_table_chunks, validate_traffic
from jobs.errors import ContractError
from jobs.store import RunStore, shard_id, storage_options

log = logging.getLogger(__name__)
CHUNK_ROWS = 50_000


def _user_count(messages: object, prompt: object) -> int | None:
    """User messages of a row's logged history (None: malformed, left to the validator to quarantine)."""
    if isinstance(messages, (list, np.ndarray, str)) or (messages is not None and not pd.isna(messages)):
        msgs, _, err = _normalise_messages(messages)
        return None if err else sum(m["role"] == "user" for m in msgs)
    return 1 if isinstance(prompt, str) and prompt.strip() else None


def _keys(uri: str, opts: dict, strat_cols: list[str]) -> pd.DataFrame:
    """First pass: the keys of every row, and its user-message count (the messages themselves are not kept)."""
    wanted = ["request_id", "conversation_id", "turn", "messages", "prompt", *strat_cols]
    parts = []
    for _, _, chunk in iter_table_chunks(uri, opts, CHUNK_ROWS, columns=wanted):
        for col in ["request_id", "conversation_id", "turn", *strat_cols]:
            if col not in chunk.columns:
                if col in strat_cols:
                    raise ContractError(f"{uri}: traffic.sample.stratify_by names column {col!r}, which the traffic "
                                        f"table lacks")
                raise ContractError(f"{uri}: replay.mode: conversation needs column {col!r} in the traffic (each row "
                                    f"one turn: conversation_id, turn 1..n); present: {list(chunk.columns)}. Add it, "
                                    f"or set replay.mode: turn")
        msgs = chunk["messages"].tolist() if "messages" in chunk.columns else [None] * len(chunk)
        prompts = chunk["prompt"].tolist() if "prompt" in chunk.columns else [None] * len(chunk)
        keys = chunk[["request_id", "conversation_id", "turn", *strat_cols]].copy()
        keys["_users"] = pd.Series([_user_count(m, p) for m, p in zip(msgs, prompts)], dtype=object)
        parts.append(keys)
    if not parts:  # an empty table
        return pd.DataFrame(columns=["request_id", "conversation_id", "turn", *strat_cols, "_users"])
    return pd.concat(parts, ignore_index=True)


def plan(keys: pd.DataFrame, cfg: RunConfig, uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(selected mask, inclusion probability, shard index or -1) per row of the traffic, for whole conversations."""
    from jobs.sample import select

    ids = keys["request_id"]
    has_id = ids.notna().to_numpy()
    strat_cols = cfg.traffic.sample.stratify_by
    strata = keys[strat_cols].astype(str).agg("|".join, axis=1) if strat_cols else None
    conv = keys["conversation_id"].astype(str).where(keys["conversation_id"].notna(), None)
    mask, prob = select(conv.fillna("").astype(str), strata, cfg.traffic.sample)
    chosen = set(conv[mask & has_id].dropna())
    mask = (conv.isin(chosen).to_numpy() & has_id) | ~has_id  # whole conversations; id-less rows to the quarantine
    pos = np.flatnonzero(mask & has_id)
    rows = keys.iloc[pos]  # index: the row's number in the table (the errors name it)
    try:
        check_turns(rows, uri, users=list(rows["_users"]))
    except ValueError as exc:
        raise ContractError(f"replay.mode: conversation: {exc}") from None
    rows = rows.reset_index(drop=True)
    # A conversation's probability is its rows' (equal unless strata differ within it): the first row's.
    conv_prob = pd.Series(prob[pos], index=rows["conversation_id"].astype(str).to_numpy()).groupby(level=0).first()
    prob = np.where(mask & has_id, conv.map(conv_prob).fillna(0).to_numpy(dtype=float), prob)
    last = pd.Series(pos, index=rows["conversation_id"].astype(str).to_numpy()).groupby(level=0).max().sort_values()
    sizes = rows["conversation_id"].astype(str).value_counts()
    shard_of: dict[str, int] = {}
    index, filled = 0, 0
    for c in last.index:
        if filled and filled + sizes[c] > cfg.execution.shard_rows:
            index, filled = index + 1, 0
        shard_of[c] = index
        filled += int(sizes[c])
    shard = np.full(len(keys), -1)
    shard[pos] = rows["conversation_id"].astype(str).map(shard_of).to_numpy()
    return mask, prob, shard


def check(cfg: RunConfig) -> int:
    """The first pass alone (`baton validate`): raises ContractError (exit 2) as the run would; returns the number
    of conversations the sample keeps."""
    uri = cfg.traffic.path
    keys = _keys(uri, storage_options(cfg.store) if uri.startswith("s3://") else {}, cfg.traffic.sample.stratify_by)
    _, _, shard = plan(keys, cfg, uri)
    return int(keys.loc[shard >= 0, "conversation_id"].nunique())


def run(cfg: RunConfig, store: RunStore, stage: str = "sample") -> dict:
    """Commit the run's traffic table of whole conversations (and its quarantine); see the module docstring."""
    uri = cfg.traffic.path
    opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
    keys = _keys(uri, opts, cfg.traffic.sample.stratify_by)
    mask, prob, shard = plan(keys, cfg, uri)
    ids = keys["request_id"]
    dup = (ids.duplicated(keep="first") & ids.notna()).to_numpy()
    first_at = pd.Series(np.arange(len(ids)), index=ids).groupby(level=0).min() if dup.any() else None
    n_shards = int(shard.max()) + 1 if (shard >= 0).any() else 0
    remaining = np.bincount(shard[shard >= 0], minlength=n_shards)
    n_conversations = int(keys.loc[shard >= 0, "conversation_id"].nunique())
    del keys

    buffers: dict[int, list[pd.DataFrame]] = {}
    dropped: dict[str, tuple[int, str]] = {}  # conversation -> (its first quarantined turn, why)
    next_shard, offset, n_in, n_rows, n_quarantined = 0, 0, 0, 0, 0
    for k, (source, start, chunk) in enumerate(iter_table_chunks(uri, opts, CHUNK_ROWS)):
        n = len(chunk)
        sel = np.flatnonzero(mask[offset:offset + n])
        picked = chunk.iloc[sel].reset_index(drop=True)
        checked = validate_traffic(picked, source, segments=cfg.traffic.segments)
        q = checked.quarantine.copy()
        bad_pos = q["row"].to_numpy(dtype=int)
        q["_glob"] = offset + sel[bad_pos]
        q["row"] = start + sel[bad_pos]  # row number in the source file
        valid_pos = np.setdiff1d(np.arange(len(picked)), bad_pos)
        valid = checked.valid
        glob = offset + sel[valid_pos]
        valid["inclusion_prob"] = prob[glob]
        if first_at is not None and dup[glob].any():  # duplicates across chunks: the validator sees one chunk
            cross = dup[glob]
            extra = pd.DataFrame([{
                "stage": "traffic", "source": source, "row": int(start + sel[valid_pos[i]]),
                "request_id": str(valid["request_id"].iat[i]), "field": "request_id",
                "reason": f"duplicate request_id {valid['request_id'].iat[i]!r} (first at row "
                          f"{int(first_at[valid['request_id'].iat[i]])})", "raw": None,
                "_glob": int(glob[i])} for i in np.flatnonzero(cross)])
            q = pd.concat([q, extra], ignore_index=True)
            valid, glob = valid.loc[~cross].reset_index(drop=True), glob[~cross]
        for g, reason in zip(q["_glob"].astype(int), q["reason"]):
            if shard[g] >= 0:  # a planned turn: its conversation's later turns go too (at the shard's commit)
                c, t = str(chunk["conversation_id"].iat[g - offset]), int(pd.to_numeric(chunk["turn"].iat[g - offset]))
                if c not in dropped or t < dropped[c][0]:
                    dropped[c] = (t, str(reason))
        if not q.empty:
            store.write_shard("quarantine", shard_id("traffic", "q", f"{k:06d}"), q[QUARANTINE_COLUMNS])
            n_quarantined += len(q)
            log.warning("%d traffic row(s) quarantined from %s; first: row %s: %s",
                        len(q), source, q["row"].iat[0], q["reason"].iat[0])
        for s, part in valid.assign(_shard=shard[glob], _row=start + glob - offset).groupby("_shard", sort=False):
            buffers.setdefault(int(s), []).append(part)
        in_chunk = shard[offset + sel]
        remaining -= np.bincount(in_chunk[in_chunk >= 0], minlength=n_shards)
        while next_shard < n_shards and remaining[next_shard] == 0:
            rows, nq = _commit(store, next_shard, buffers.pop(next_shard, []), dropped, source)
            n_rows, n_quarantined = n_rows + rows, n_quarantined + nq
            next_shard += 1
        offset += n
        n_in += n
    if n_shards == 0:  # nothing sampled: one empty shard, as jobs.sample commits
        store.write_shard("traffic", "traffic-000000", pd.DataFrame(
            columns=["request_id", "messages", "response", "reference", "conversation_id", "turn", "inclusion_prob"]))
    stats = {"status": "done", "source": uri, "rows_in": int(n_in), "rows": int(n_rows),
             "quarantined": int(n_quarantined), "shards": max(n_shards, 1), "conversations": n_conversations,
             "mode": "conversation"}
    store.update_manifest(stages={stage: stats})
    return stats


def _commit(store: RunStore, index: int, parts: list[pd.DataFrame], dropped: dict[str, tuple[int, str]],
            source: str) -> tuple[int, int]:
    """Commit one shard of whole conversations (turns in order); turns after a quarantined one to the quarantine."""
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["request_id", "conversation_id", "turn"])
    turn = pd.to_numeric(frame["turn"]).astype(int)
    cut = np.array([c in dropped and t > dropped[c][0] for c, t in zip(frame["conversation_id"], turn)], dtype=bool)
    if cut.any():
        gone = frame.loc[cut]
        q = pd.DataFrame({
            "stage": "traffic", "source": source, "row": gone["_row"].astype("int64").to_numpy(),
            "request_id": gone["request_id"].astype(str).to_numpy(dtype=object), "field": "turn",
            "reason": [f"conversation {c!r}: turn {dropped[c][0]} was quarantined ({dropped[c][1][:200]}), so turn {t} "
                       f"cannot be replayed in conversation mode" for c, t in zip(gone["conversation_id"], turn[cut])],
            "raw": None})
        store.write_shard("quarantine", shard_id("traffic", "q", "conversation", f"{index:06d}"), q[QUARANTINE_COLUMNS])
    kept = frame.loc[~cut].assign(_t=turn[~cut])
    order = {c: i for i, c in enumerate(pd.unique(kept["conversation_id"]))}
    kept = kept.assign(_c=kept["conversation_id"].map(order)).sort_values(["_c", "_t"], kind="stable")
    store.write_shard("traffic", f"traffic-{index:06d}",
                      kept.drop(columns=["_shard", "_row", "_t", "_c"], errors="ignore").reset_index(drop=True))
    return int(len(kept)), int(cut.sum())
