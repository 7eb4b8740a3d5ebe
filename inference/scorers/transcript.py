"""Whole-transcript judge: one score per conversation, over every assistant turn in order.

In ``conversation`` replay (inference.engines.conversation) the model writes every assistant turn; the last turn's
``messages_sent`` holds the logged user turns with the model's own earlier answers, and its response closes the
transcript. The transcript goes through the LLM judge's machinery (``Judge``: a versioned rubric's absolute
section, ``{{conversation}}`` = the transcript; parsed by ``verdicts.parse_score``) with a transcript rubric
(built-in ``conversation.v1``). Metric ``judge.transcript.<rubric>``, written on the conversation's LAST turn row:
the score is about the conversation, the last turn is the one row whose history holds all of it, and a
conversation keeps exactly one row per metric (so per-turn tables and labels join unchanged). A conversation whose
last turn has no answer (it, or an earlier turn, failed) gets no transcript score. Failures (engine error,
unparseable answer) are rows with ``value`` NaN and ``error`` set, as for the judge.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from inference.engines.base import normalise_messages
from inference.scorers.config import JudgeConfig, JudgeDimension, TranscriptConfig
from inference.scorers.judge import JUDGE_COLUMNS, Judge

PREFIX = "judge.transcript."


def transcripts(batch: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation with an answered last turn: its request_id and model, the transcript as
    ``messages`` (history without a trailing logged answer, then the model's last answer), ``response``."""
    rows = []
    turn = pd.to_numeric(batch["turn"]).astype(int)
    last = batch.assign(_t=turn).sort_values("_t", kind="stable").groupby("conversation_id", sort=False).tail(1)
    for rid, model, msgs, answer in zip(last["request_id"], last["model"], last["messages"], last["response"]):
        if not isinstance(answer, str):
            continue
        history = normalise_messages(msgs, rid)
        while history and history[-1]["role"] == "assistant":
            history = history[:-1]
        rows.append({"request_id": str(rid), "model": str(model), "response": answer, "incumbent_response": None,
                     "reference": None, "messages": history + [{"role": "assistant", "content": answer}]})
    return pd.DataFrame(rows, columns=["request_id", "model", "response", "incumbent_response", "reference",
                                       "messages"])


class TranscriptJudge:
    """``TranscriptJudge(config, engine_config)(batch)``: a (model, shard) batch holding whole conversations
    (request_id, model, conversation_id, turn, messages = the history each turn was sent with, response) in,
    ``judge.transcript.<name>`` rows out (``error``/``raw`` set on failures)."""

    def __init__(self, config: TranscriptConfig, engine_config=None, rubrics_dir: str | None = None,
                 engine: Callable[[pd.DataFrame], pd.DataFrame] | None = None):
        # The rubric's absolute section, through the judge's own prompt and parse code.
        self.judge = Judge(JudgeConfig(
            enabled=True, engine=engine_config, rubrics_dir=config.rubrics_dir or rubrics_dir,
            max_answer_chars=max(100, config.max_transcript_chars // 2), raw_chars=config.raw_chars,
            dimensions=[JudgeDimension(name=d.name, version=d.version, absolute=True, pairwise=False)
                        for d in config.dimensions]), engine=engine)

    def versions(self) -> dict[str, dict]:
        return self.judge.versions()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = self.judge(transcripts(batch))
        out["metric"] = out["metric"].str.replace("judge.abs.", PREFIX, regex=False)
        return out[JUDGE_COLUMNS]
