"""Conversations as units: turn-position groups, and the per-conversation tables of a conversation-level estimand.

- :func:`turn_positions`: the turn-position group of every scored request (``1``, ``2``, ``3+`` by default), read
  from the traffic's ``turn`` column, so the decision reports (and gates on) each position without the user making
  ``turn`` a segment column (calibration.pipeline, calibration.segments).
- :func:`conversation_tables`: for a dimension labelled per conversation (``label_unit: conversation``; "did the
  conversation reach its goal"), one row per conversation: every metric is averaged over the conversation's turns
  (a metric written on one turn only, such as a transcript judge's ``judge.transcript.*`` on the last turn, is that
  turn's value), the labels are keyed by conversation, and the segments are the first turn's. The existing
  calibration then runs on it as if each conversation were a request, so its estimand is the mean over
  conversations (each weighs the same, whatever its length) and its population is the traffic's conversations.
  Conversations are independent units there: no conversation effect is needed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from calibration.checks import InputError, require as _require

TURN_COL = "turn"
CONVERSATION_COL = "conversation_id"
DEFAULT_TURN_EDGES = (1, 2, 3)


def bucket_names(edges) -> list[str]:
    """Names of the turn-position groups: one per edge, the last open (``[1, 2, 3]`` -> ``1``, ``2``, ``3+``;
    ``[1, 3]`` -> ``1-2``, ``3+``)."""
    e = sorted(int(x) for x in edges)
    names = []
    for i, lo in enumerate(e):
        hi = e[i + 1] - 1 if i + 1 < len(e) else None
        names.append(f"{lo}+" if hi is None else str(lo) if hi == lo else f"{lo}-{hi}")
    return names


def turn_positions(traffic: pd.DataFrame | None, request_ids: np.ndarray, edges=DEFAULT_TURN_EDGES,
                   turn_col: str = TURN_COL) -> tuple[np.ndarray, list[str]] | None:
    """(group code per request, group names ``turn=<bucket>``) for the requests' turn numbers, or None when the
    traffic has no ``turn`` column, no edges are asked for, or the scored turns fall in fewer than two groups.

    Edges are the groups' lower bounds (the first should be 1). A scored request without a turn number (absent
    from traffic, or empty) counts as a single-turn exchange: turn 1."""
    if traffic is None or turn_col not in traffic.columns or not edges:
        return None
    e = np.asarray(sorted(int(x) for x in edges))
    tid = traffic["request_id"].astype(str).to_numpy()
    first = ~pd.Series(tid).duplicated(keep="first").to_numpy()
    turn = pd.to_numeric(traffic[turn_col], errors="coerce").to_numpy(dtype=float)[first]
    pos = pd.Index(tid[first]).get_indexer(pd.Index(np.asarray(request_ids, dtype=str)))
    t = np.where(pos >= 0, turn[np.maximum(pos, 0)] if len(turn) else np.nan, np.nan)
    t = np.where(np.isfinite(t), t, 1.0)
    codes = np.clip(np.searchsorted(e, t, side="right") - 1, 0, len(e) - 1)
    names = [f"{turn_col}={n}" for n in bucket_names(e)]
    used = np.unique(codes)
    if len(used) < 2:
        return None
    remap = np.full(len(names), -1)
    remap[used] = np.arange(len(used))
    return remap[codes].astype(np.int64), [names[i] for i in used]


def conversation_tables(scores: pd.DataFrame, labels: pd.DataFrame, traffic: pd.DataFrame | None, dimension: str,
                        segment_cols: list[str] | None = None, conv_col: str = CONVERSATION_COL
                        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(scores, labels, traffic, warnings) with one unit per conversation, for ``dimension``'s labels (module
    docstring); the unit's ``request_id`` is the conversation id.

    A label's conversation is its ``conversation_id`` when the labels table has that column and the row a value;
    otherwise its ``request_id``, naming either the conversation itself or any of its turns (e.g. the last one,
    where a transcript judge writes). Raises InputError when the traffic carries no ``conversation_id``."""
    if traffic is None or conv_col not in traffic.columns:
        raise InputError(f"traffic: no {conv_col!r} column, but dimension {dimension!r} is labelled per conversation "
                         f"(label_unit: conversation)")
    _require(scores, ["request_id", "model", "metric", "value"], "scores")
    _require(labels, ["request_id", "model", "dimension", "value"], "labels")
    warns: list[str] = []
    tr = traffic.drop_duplicates("request_id", keep="first")
    tid = tr["request_id"].astype(str)
    conv = tr[conv_col].astype("string")
    empty = conv.isna() | (conv.str.len() == 0)
    conv = conv.where(~empty, tid)  # a turn without a conversation is a conversation of its own
    conv_of = pd.Series(conv.to_numpy(dtype=object), index=tid.to_numpy())
    # scores: mean over each conversation's turns, per model and metric (NaN-skipping: a metric on one turn only
    # is that turn's value)
    rid = scores["request_id"].astype(str)
    sconv = rid.map(conv_of)
    orphan = sconv.isna()
    if orphan.any():
        warns.append(f"scores: {int(orphan.sum())} row(s) of request(s) absent from traffic each taken as a "
                     f"conversation of its own (e.g. {rid[orphan].iat[0]!r})")
        sconv = sconv.where(~orphan, rid)
    conv_scores = (scores.assign(request_id=sconv.to_numpy(), model=scores["model"].astype(str),
                                 metric=scores["metric"].astype(str),
                                 value=pd.to_numeric(scores["value"], errors="coerce"))
                   .groupby(["request_id", "model", "metric"], sort=False, observed=True)["value"].mean()
                   .reset_index())
    # labels of this dimension, keyed by conversation
    lab = labels[labels["dimension"].astype(str) == dimension].copy()
    key = lab["request_id"].astype(str)
    turn_key = key.map(conv_of)  # the request_id names a turn: its conversation
    key = turn_key.where(turn_key.notna(), key)
    if conv_col in lab.columns:
        given = lab[conv_col].astype("string")
        key = given.where(given.notna() & (given.str.len() > 0), key)
    lab["request_id"] = key.to_numpy(dtype=object)
    conv_labels = lab.drop(columns=[conv_col], errors="ignore")
    # traffic: one row per conversation, its segments from its first turn
    keep = ["request_id", *[c for c in (segment_cols or []) if c in tr.columns]]
    order = tr.assign(_conv=conv.to_numpy(dtype=object))
    if TURN_COL in order.columns:
        order = order.assign(_t=pd.to_numeric(order[TURN_COL], errors="coerce")).sort_values("_t", kind="stable")
    first = order.drop_duplicates("_conv", keep="first")
    conv_traffic = first[keep].assign(request_id=first["_conv"].to_numpy(dtype=object)).reset_index(drop=True)
    n_turns = order.groupby("_conv").size()
    conv_traffic["turns"] = conv_traffic["request_id"].map(n_turns).to_numpy()
    return conv_scores, conv_labels, conv_traffic, warns
