"""The whole-transcript judge through the real openai engine against the loopback OpenAI-compatible server (the
scripted judge of tests/support/judge_script.py at the edge of the world)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from inference.engines import OpenAIEngineConfig
from inference.scorers.config import TranscriptConfig
from inference.scorers.transcript import TranscriptJudge, transcripts
from tests.support.judge_script import scripted_judge
from tests.support.openai_server import OpenAIServer


def _batch() -> pd.DataFrame:
    """Two conversations as jobs.score joins them: messages = the history each turn was sent with."""
    u = [{"role": "user", "content": f"q{k}"} for k in range(1, 4)]
    a = [{"role": "assistant", "content": f"mine {k}"} for k in range(1, 4)]
    return pd.DataFrame({
        "request_id": ["c0-t2", "c0-t1", "c0-t3", "c1-t1", "c2-t1", "c2-t2"],
        "model": "cand", "conversation_id": ["c0", "c0", "c0", "c1", "c2", "c2"], "turn": [2, 1, 3, 1, 1, 2],
        "messages": [u[:1] + a[:1] + u[1:2], u[:1], u[:1] + a[:1] + u[1:2] + a[1:2] + u[2:3],
                     [{"role": "user", "content": "JUDGE-GARBAGE"}], u[:1], u[:1] + a[:1] + u[1:2]],
        "response": ["mine 2", "mine 1", "mine 3", "hi", "mine 1", None],  # c2's last turn failed
    })


def test_transcripts_are_the_last_turns_history_closed_by_its_answer():
    t = transcripts(_batch()).set_index("request_id")
    assert sorted(t.index) == ["c0-t3", "c1-t1"]  # the last turn of each; c2's last turn has no answer
    assert [m["content"] for m in t.loc["c0-t3", "messages"]] == ["q1", "mine 1", "q2", "mine 2", "q3", "mine 3"]


def test_scores_on_the_last_turn_and_failures_are_nan_rows():
    with OpenAIServer(responder=scripted_judge) as srv:
        engine = OpenAIEngineConfig(kind="openai", name="judge", model="judge-1", base_url=srv.base_url,
                                    rpm=60_000, tpm=10_000_000, max_attempts=2, timeout_s=10)
        out = TranscriptJudge(TranscriptConfig(enabled=True), engine)(_batch()).set_index("request_id")
    assert (out.metric == "judge.transcript.conversation").all()
    assert out.loc["c0-t3", "value"] == 3.0 and out.loc["c0-t3", "error"] is None  # three assistant turns seen
    assert np.isnan(out.loc["c1-t1", "value"]) and "no score" in out.loc["c1-t1", "error"]
