"""The continuity judge through the real openai engine against the loopback OpenAI-compatible server (a scripted
judge at the edge of the world)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.engines import OpenAIEngineConfig, make_engine
from inference.scorers.continuity import ContinuityJudge, parse_fits
from tests.support.openai_server import OpenAIServer


def scripted(messages: list[dict], model: str) -> str:
    user = messages[-1]["content"]
    answer = user.split("<assistant_answer>")[1].split("</assistant_answer>")[0]
    if "GARBLE" in answer:
        return "I cannot tell"
    return '{"fits": false}' if "WRONG" in answer else '{"fits": true}'


def _traffic():
    rows, history = [], []
    for k, text in enumerate(["write a sort", "thanks, now add tests", "great, ship it"], start=1):
        history = history + [{"role": "user", "content": text}]
        rows.append({"request_id": f"c0-t{k}", "conversation_id": "c0", "turn": k, "messages": history})
        history = history + [{"role": "assistant", "content": f"logged {k}"}]
    rows.append({"request_id": "c1-t1", "conversation_id": "c1", "turn": 1,
                 "messages": [{"role": "user", "content": "hi"}]})
    return pd.DataFrame(rows)


def test_flags_turns_the_next_user_message_no_longer_fits():
    responses = pd.DataFrame({"request_id": ["c0-t1", "c0-t2", "c0-t3", "c1-t1"], "model": "cand",
                              "response": ["def sort(x): ...", "WRONG: I refuse to write tests", "done", "hello"],
                              "conversation_id": ["c0", "c0", "c0", "c1"], "turn": [1, 2, 3, 1]})
    with OpenAIServer(responder=scripted) as srv:
        cfg = OpenAIEngineConfig(kind="openai", name="judge", model="judge-1", base_url=srv.base_url, rpm=60_000,
                                 tpm=10_000_000, max_attempts=2, timeout_s=10)
        out = ContinuityJudge(make_engine(cfg))(responses, _traffic())
    got = dict(zip(out.request_id, out.value))
    assert got == {"c0-t1": 1.0, "c0-t2": 0.0}  # last turns have no next message: no row
    assert (out.metric == "judge.continuity").all() and out.error.isna().all()


@pytest.mark.parametrize("text, value", [('{"fits": true}', 1.0), ('{"fits": false}', 0.0), ("No, it does not", 0.0),
                                         ("yes.", 1.0), ("maybe", None), ('{"fit": 1}', None), ("", None)])
def test_parse_fits_never_guesses(text, value):
    v, why = parse_fits(text)
    assert v == value and ((why is None) == (value is not None))


def test_unparseable_judge_answer_is_a_nan_row_with_its_reason():
    responses = pd.DataFrame({"request_id": ["c0-t1"], "model": "cand", "response": ["GARBLE"],
                              "conversation_id": ["c0"], "turn": [1]})
    with OpenAIServer(responder=scripted) as srv:
        cfg = OpenAIEngineConfig(kind="openai", name="judge", model="judge-1", base_url=srv.base_url, rpm=60_000,
                                 tpm=10_000_000, max_attempts=2, timeout_s=10)
        out = ContinuityJudge(make_engine(cfg))(responses, _traffic())
    assert np.isnan(out.value.iat[0]) and "neither JSON" in out.error.iat[0] and out.raw.iat[0] == "I cannot tell"
