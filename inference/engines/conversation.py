"""Conversation replay: the candidate writes every assistant turn of a logged conversation, in order.

Two replay modes for traffic that carries ``conversation_id`` and ``turn``:

- ``turn`` (what every engine does): each turn is sent with its logged history, i.e. the incumbent's earlier answers;
- ``conversation`` (:class:`ConversationEngine`): for turn k the assistant messages of the history are replaced by
  the candidate's own answers to turns 1..k-1; the logged user messages are replayed as they are. The turns run in
  rounds: round k sends turn k of every conversation of the batch, so the wrapped engine still batches across
  conversations and no turn is sent before its predecessors are answered.

A turn whose earlier turn failed is not sent (its history would not be the candidate's): it becomes an error row
of kind ``upstream`` naming the failed turn. The logged next user turn may no longer fit the candidate's answer (the
user reacted to the incumbent's); ``messages_sent`` keeps the history each turn was sent with, and
inference.scorers.continuity judges whether the next user message still fits. A batch must hold whole
conversations (the caller groups them: jobs.sample shards whole conversations in ``replay.mode: conversation``).
"""

from __future__ import annotations

import pandas as pd

from inference.engines.base import error_row, normalise_messages, response_frame

MODES = ("turn", "conversation")
CONVERSATION_COLUMNS = ["conversation_id", "turn"]


def check_conversations(batch: pd.DataFrame, source: str = "traffic") -> None:
    """Raise ValueError naming the row and field when the turns of a conversation are not 1..n, each once, with
    turn k's logged history holding k user messages (a conversation's turns are prefixes of one dialogue)."""
    if "messages" not in batch.columns:
        raise ValueError(f"{source}: conversation replay needs column 'messages' (present: {list(batch.columns)})")
    check_turns(batch, source, users=[
        sum(m["role"] == "user" for m in normalise_messages(msgs, rid))
        for rid, msgs in zip(batch["request_id"], batch["messages"])])


def check_turns(batch: pd.DataFrame, source: str = "traffic", users: list[int | None] | None = None) -> None:
    """check_conversations on the keys alone (request_id, conversation_id, turn), with ``users`` (user messages per
    row, None: not checked) in place of the messages: what a caller can check without holding the messages. A row
    is named by its index label (the caller's row number)."""
    for col in ["request_id", *CONVERSATION_COLUMNS]:
        if col not in batch.columns:
            raise ValueError(f"{source}: conversation replay needs column {col!r} (present: {list(batch.columns)})")
    turn = pd.to_numeric(batch["turn"], errors="coerce")
    bad = turn.isna() | (turn != turn.round()) | (turn < 1)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"{source}: row {batch.index[i]} (request_id {batch['request_id'].iat[i]!r}), field 'turn': "
                         f"{batch['turn'].iat[i]!r} is not a whole number >= 1")
    if batch["conversation_id"].isna().any():
        i = int(batch["conversation_id"].isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"{source}: row {batch.index[i]} (request_id {batch['request_id'].iat[i]!r}), field 'conversation_id' "
                         f"is empty")
    keyed = batch[["request_id", "conversation_id"]].assign(_t=turn.astype(int).to_numpy())
    if users is not None:
        keyed["_u"] = list(users)
    for conv, rows in keyed.groupby("conversation_id", sort=False):
        turns = sorted(rows["_t"])
        if turns != list(range(1, len(turns) + 1)):
            raise ValueError(f"{source}: conversation {conv!r}, field 'turn': turns {turns} are not 1..{len(turns)} "
                             f"each once (a missing or duplicated turn)")
        if users is None:
            continue
        for rid, t, n in zip(rows["request_id"], rows["_t"], rows["_u"]):
            if pd.notna(n) and int(n) != t:  # None/NaN: a row the caller quarantines anyway
                raise ValueError(f"{source}: request_id {rid!r} (conversation {conv!r}, turn {t}), field "
                                 f"'messages': {n} user message(s), expected {t}")


def _with_candidate_answers(messages: list[dict], answers: list[str]) -> list[dict]:
    """The logged history with its assistant messages replaced, in order, by the candidate's answers to the
    earlier turns; a trailing logged assistant answer (the incumbent's to this turn) is dropped."""
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    out, users = [], 0
    for m in messages:
        if m["role"] == "assistant":
            continue  # the incumbent's; the candidate's answer follows its user turn instead
        out.append(m)
        if m["role"] == "user":
            users += 1
            if users <= len(answers):
                out.append({"role": "assistant", "content": answers[users - 1]})
    return out


class ConversationEngine:
    """Wraps an engine (``engine(batch) -> responses``) to replay whole conversations in ``conversation`` mode.

    Returns the responses in input order plus ``messages_sent`` (the history each turn was sent with) and
    ``round`` (the call in which it was sent)."""

    def __init__(self, engine, model: str):
        self.engine = engine
        self.model = model

    def __call__(self, batch: pd.DataFrame, answered: dict[str, dict] | None = None) -> pd.DataFrame:
        """``answered``: rows already answered by an earlier call (request_id -> its output row, with
        ``messages_sent`` and ``round``), kept as they are and not sent again: their answers are the history of
        the later turns (a retry resends a conversation from its first failed turn)."""
        check_conversations(batch, f"conversation engine {self.model!r}")
        answered = answered or {}
        batch = batch.reset_index(drop=True)
        turn = pd.to_numeric(batch["turn"]).astype(int).to_numpy()
        answers: dict[object, list[str]] = {c: [] for c in batch["conversation_id"]}
        failed: dict[object, str] = {}
        rows: list[dict | None] = [None] * len(batch)
        sent: list[object] = [None] * len(batch)
        rounds = [0] * len(batch)
        for k in range(1, int(turn.max()) + 1 if len(batch) else 1):
            idx = [i for i in range(len(batch)) if turn[i] == k]
            todo = []
            for i in idx:
                conv, rid = batch["conversation_id"].iat[i], batch["request_id"].iat[i]
                if conv not in failed and str(rid) in answered:
                    done = dict(answered[str(rid)])
                    sent[i], rounds[i] = done.pop("messages_sent", None), int(done.pop("round", k))
                    rows[i] = done
                    answers[conv].append(done["response"])
                    continue
                if conv in failed:
                    rows[i] = error_row(rid, self.model, "upstream", f"turn {k} not sent: {failed[conv]}")
                    continue
                msgs = _with_candidate_answers(normalise_messages(batch["messages"].iat[i], rid), answers[conv])
                sent[i], rounds[i] = msgs, k
                todo.append(i)
            if not todo:
                continue
            out = self.engine(pd.DataFrame({"request_id": batch["request_id"].iloc[todo].to_numpy(),
                                            "messages": pd.Series([sent[i] for i in todo], dtype=object)}))
            for i, row in zip(todo, out.to_dict("records")):
                rows[i] = row
                conv = batch["conversation_id"].iat[i]
                if row.get("error") is None and isinstance(row.get("response"), str):
                    answers[conv].append(row["response"])
                else:
                    failed[conv] = f"turn {k} ({row['request_id']}) failed: {row.get('error')}"
        out = response_frame(rows)
        out["messages_sent"] = pd.Series(sent, dtype=object)
        out["round"] = rounds
        return out
