"""Replay mode ``conversation`` end to end on a real local Ray cluster through the transformers engine (tiny model):
every turn answered once, turns in order, the candidate's own earlier answers in each turn's history."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from jobs.errors import ContractError  # noqa: E402
from jobs.replay_conversation import replay_conversations  # noqa: E402
from tests.support.tiny_model import tiny_model_path  # noqa: E402


def _user(conv: str, k: int, words: int = 0) -> str:
    return f"please explain replay {conv} turn {k}" + " detail" * words


def conversation_traffic(turns: dict[str, int], long_turn: tuple[str, int] | None = None) -> pd.DataFrame:
    """Logged conversations: turn k's messages are u1, a1, ..., uk with the incumbent's logged answers a_j."""
    rows = []
    for conv, n in turns.items():
        history = [{"role": "system", "content": "be brief"}] if conv == "c1" else []
        for k in range(1, n + 1):
            words = 600 if long_turn == (conv, k) else 0
            history = history + [{"role": "user", "content": _user(conv, k, words)}]
            rows.append({"request_id": f"{conv}-t{k}", "conversation_id": conv, "turn": k, "messages": history})
            history = history + [{"role": "assistant", "content": f"INCUMBENT {conv} {k}"}]
    return pd.DataFrame(rows)


CAND = {"kind": "transformers", "name": "tiny-hf", "batch_size": 4,
        "sampling": {"max_tokens": 5, "temperature": 0.0}}


@pytest.fixture(scope="module")
def replayed(ray_cluster):
    traffic = conversation_traffic({"c0": 3, "c1": 1, "c2": 4, "c3": 2, "c4": 3}, long_turn=("c4", 2))
    shuffled = traffic.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must come from `turn`
    return traffic, replay_conversations(shuffled, {**CAND, "model": tiny_model_path()}, num_actors=2)


@pytest.mark.slow  # Ray start and two actors loading the model: ~2 min on the loaded shared 2 cores
def test_every_turn_once_in_order_with_the_candidates_own_history(replayed):
    traffic, out = replayed
    assert sorted(out.request_id) == sorted(traffic.request_id)  # every turn, once
    assert (out["round"][out.error.isna()] == out["turn"][out.error.isna()]).all()  # turn k sent in round k
    by_id = out.set_index("request_id")
    for conv in ["c0", "c1", "c2", "c3"]:
        n = int((traffic.conversation_id == conv).sum())
        for k in range(1, n + 1):
            sent = by_id.loc[f"{conv}-t{k}", "messages_sent"]
            users = [m["content"] for m in sent if m["role"] == "user"]
            answers = [m["content"] for m in sent if m["role"] == "assistant"]
            assert users == [_user(conv, j) for j in range(1, k + 1)]  # logged user turns replayed as they are
            assert answers == [by_id.loc[f"{conv}-t{j}", "response"] for j in range(1, k)]  # its own, in order
            assert sent[-1]["role"] == "user" and not any("INCUMBENT" in m["content"] for m in sent)
            assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant"] * (k - 1) + ["user"]
    assert by_id.loc["c1-t1", "messages_sent"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.slow
def test_a_failed_turn_stops_its_conversation_not_the_others(replayed):
    _, out = replayed
    by_id = out.set_index("request_id")
    assert by_id.loc["c4-t1", "error"] is None
    assert by_id.loc["c4-t2", "error"].startswith("context_length")  # the real model's context is 512 tokens
    assert by_id.loc["c4-t3", "error"].startswith("upstream: turn 3 not sent: turn 2 (c4-t2) failed")
    assert out[~out.conversation_id.eq("c4")].error.isna().all()


@pytest.mark.parametrize("edit, message", [
    (lambda t: pd.concat([t, t.iloc[[1]]], ignore_index=True), "conversation 'c0', field 'turn'"),
    (lambda t: t.assign(turn=t.turn.where(t.request_id != "c0-t2", 5)), "conversation 'c0', field 'turn'"),
    (lambda t: t.assign(turn=t.turn.astype(object).where(t.request_id != "c0-t1", "x")),
     "row 0 (request_id 'c0-t1'), field 'turn'"),
    (lambda t: t.assign(messages=[t.messages[1] if r == "c0-t3" else m for r, m in zip(t.request_id, t.messages)]),
     "request_id 'c0-t3' (conversation 'c0', turn 3), field 'messages': 2 user message(s), expected 3"),
    (lambda t: t.drop(columns="turn"), "needs column 'turn'"),
])
def test_bad_conversation_traffic_is_a_contract_error_before_any_model(edit, message):
    bad = edit(conversation_traffic({"c0": 3, "c1": 2}))
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        replay_conversations(bad, {**CAND, "model": "/no/such/model"})  # never loaded: the check comes first
    assert exc.value.exit_code == 2
