"""Continuity judge for conversation-mode replay: does the logged next user message still fit the candidate's answer?

In ``conversation`` replay (inference.engines.conversation) the user messages are the logged ones, written in reply
to the incumbent. After the candidate's answer to turn k the logged user turn k + 1 may no longer make sense (it
thanks for code the candidate never wrote, corrects a mistake the candidate did not make), and from there on the
replayed conversation is not one a user would have had. An LLM judge reads the candidate's answer and the next
user message and answers ``{"fits": true | false}``. Metric ``judge.continuity`` on turn k's row: 1 fits, 0 does
not; the last turn of a conversation has no next message and no row. An engine error or an unparseable answer is a
row with ``value`` NaN and ``error`` set (never a guess).
"""
from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from inference.engines.base import normalise_messages
from inference.scorers.verdicts import _json_object

METRIC = "judge.continuity"
COLUMNS = ["request_id", "model", "metric", "value", "error", "raw"]
SYSTEM = ("You check replayed conversations. An assistant answered a user; then the user wrote the next message, "
          "but that message was written in reply to a different assistant's answer. Decide whether the next user "
          "message still makes sense as a reply to THIS answer. Answer with JSON: {\"fits\": true} or "
          "{\"fits\": false}.")


def _last_user(messages: object, request_id: object) -> str:
    return next(m["content"] for m in reversed(normalise_messages(messages, request_id)) if m["role"] == "user")


def prompts(responses: pd.DataFrame, traffic: pd.DataFrame, limit: int = 6000) -> pd.DataFrame:
    """One judge call per answered turn that has a next turn: request_id, model, messages."""
    nxt = traffic.assign(turn=pd.to_numeric(traffic["turn"]).astype(int) - 1)
    nxt = {(c, t): _last_user(m, r) for c, t, m, r in zip(nxt["conversation_id"], nxt["turn"], nxt["messages"],
                                                           nxt["request_id"])}
    rows = []
    for rid, model, answer, conv, turn in zip(responses["request_id"], responses["model"], responses["response"],
                                              responses["conversation_id"], responses["turn"]):
        follow = nxt.get((conv, int(turn)))
        if follow is None or not isinstance(answer, str):
            continue
        user = (f"<assistant_answer>\n{answer[:limit]}\n</assistant_answer>\n"
                f"<next_user_message>\n{follow[:limit]}\n</next_user_message>")
        rows.append({"request_id": str(rid), "model": str(model),
                     "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]})
    return pd.DataFrame(rows, columns=["request_id", "model", "messages"])


def parse_fits(text: object) -> tuple[float | None, str | None]:
    """(1.0 | 0.0, None) or (None, reason), from JSON ``{"fits": bool}`` or a leading yes / no."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer"
    obj = _json_object(text)
    if obj is not None:
        if isinstance(obj.get("fits"), bool):
            return float(obj["fits"]), None
        return None, f"JSON answer has no boolean 'fits' (keys: {sorted(obj)[:6]})"
    m = re.match(r"\s*(yes|no)\b", text, re.IGNORECASE)
    if m:
        return float(m.group(1).lower() == "yes"), None
    return None, "answer is neither JSON with 'fits' nor yes/no"


class ContinuityJudge:
    """``ContinuityJudge(engine)(responses, traffic)``: conversation-mode responses (with ``conversation_id`` and
    ``turn``, jobs.replay in conversation mode) and their traffic in, ``judge.continuity`` score rows out."""

    def __init__(self, engine: Callable[[pd.DataFrame], pd.DataFrame], raw_chars: int = 500):
        self.engine = engine
        self.raw_chars = raw_chars

    def __call__(self, responses: pd.DataFrame, traffic: pd.DataFrame) -> pd.DataFrame:
        calls = prompts(responses, traffic)
        if calls.empty:
            return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else object) for c in COLUMNS})
        out = self.engine(calls[["request_id", "messages"]]).set_index("request_id")
        rows = []
        for rid, model in zip(calls["request_id"], calls["model"]):
            text, err = out.at[rid, "response"], out.at[rid, "error"]
            value, why = (None, f"judge engine: {err}") if isinstance(err, str) else parse_fits(text)
            rows.append({"request_id": rid, "model": model, "metric": METRIC,
                         "value": np.nan if value is None else value, "error": why,
                         "raw": None if why is None or not isinstance(text, str) else text[:self.raw_chars]})
        return pd.DataFrame(rows, columns=COLUMNS)
