"""Replay mode ``conversation`` as a configured part of a run (docs/conversations.md).

End to end on a real local Ray cluster: a conversation-mode `baton run --no-labels` through the transformers engine
(tiny local model) with the continuity and transcript judges served by the loopback OpenAI-compatible server (a
scripted judge: the edge of the world). Every turn answered once, in order, with the candidate's own history; a
rerun redoes nothing; a shard lost before its commit is redone alone; a retry resends a conversation from its
failed turn. Without Ray: the sampling stage's checks (exit 2 before anything is committed), whole conversations
per shard, and the quarantine of a conversation's later turns.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from jobs.config import parse_config  # noqa: E402
from jobs.errors import ConfigError, ContractError  # noqa: E402
from jobs.store import RunStore, shard_id  # noqa: E402
from tests.support.judge_script import scripted_judge  # noqa: E402
from tests.support.openai_server import OpenAIServer  # noqa: E402
from tests.support.tiny_model import tiny_model_path  # noqa: E402


def _user(conv: str, k: int, words: int = 0) -> str:
    return f"please explain replay {conv} turn {k}" + " detail" * words


def conversation_traffic(turns: dict[str, int], long_turn: tuple[str, int] | None = None,
                         no_fit: tuple[str, int] | None = None) -> pd.DataFrame:
    """Logged conversations: turn k's messages are u1, a1, ..., uk with the incumbent's logged answers a_j (its
    answer to turn k in ``response``)."""
    rows = []
    for conv, n in turns.items():
        history = [{"role": "system", "content": "be brief"}] if conv == "c1" else []
        for k in range(1, n + 1):
            text = _user(conv, k, 600 if long_turn == (conv, k) else 0) + (" JUDGE-NO-FIT" if no_fit == (conv, k) else "")
            history = history + [{"role": "user", "content": text}]
            rows.append({"request_id": f"{conv}-t{k}", "conversation_id": conv, "turn": k, "messages": history,
                         "response": f"INCUMBENT {conv} {k}"})
            history = history + [{"role": "assistant", "content": f"INCUMBENT {conv} {k}"}]
    return pd.DataFrame(rows)


CAND = {"kind": "transformers", "name": "tiny-hf", "batch_size": 4, "sampling": {"max_tokens": 5, "temperature": 0.0}}


def _raw(root, traffic_path: str, run_id: str = "conv", model: str = "/never/loaded", **over) -> dict:
    raw = {"run_id": run_id, "store": {"root": str(root)}, "traffic": {"path": traffic_path},
           "incumbent": {"name": "inc"}, "candidates": [{**CAND, "model": model}],
           "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]},
           "replay": {"mode": "conversation"}, "labels": {"mode": "none"},
           "execution": {"shard_rows": 4}, "scoring": {"embeddings": {"enabled": False}}}
    raw.update(over)
    return raw


# -- end to end on Ray -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judged():
    """The scripted judge on loopback; records every transcript it is shown."""
    seen: list[str] = []  # transcripts, and the correctness judge's prompts

    def responder(messages, model):
        user = messages[-1]["content"]
        if "<transcript>" in user or "<conversation>" in user:
            seen.append(user)
        return scripted_judge(messages, model)

    with OpenAIServer(responder=responder) as srv:
        yield srv, seen


@pytest.fixture(scope="module")
def run(ray_cluster, judged, tmp_path_factory):
    from jobs.migrate import run_pipeline

    srv, _ = judged
    root = tmp_path_factory.mktemp("conv")
    traffic = conversation_traffic({"c0": 3, "c1": 1, "c2": 4, "c3": 2, "c4": 3}, long_turn=("c4", 2), no_fit=("c2", 3))
    # Order must come from `turn`, and a shard must never split a conversation: the file is shuffled.
    traffic.sample(frac=1.0, random_state=0).reset_index(drop=True).to_parquet(root / "traffic.parquet")
    engine = {"kind": "openai", "name": "judge", "model": "judge-1", "base_url": srv.base_url, "rpm": 60000,
              "tpm": 10000000, "max_attempts": 2}
    cfg = parse_config(_raw(root, str(root / "traffic.parquet"), model=tiny_model_path(), scoring={
        "embeddings": {"enabled": False},
        "judge": {"enabled": True, "engine": engine, "dimensions": [{"name": "correctness"}]},  # engine shared
        "continuity": {"enabled": True}, "transcript": {"enabled": True}}))
    assert run_pipeline(cfg, progress=False, no_labels=True) is None  # stops after scoring: no labels
    store = RunStore(cfg.store, cfg.run_id)
    return cfg, store, traffic


def _responses(store, model="tiny-hf"):
    df = store.read_table("responses")
    return df[df["model"] == model].set_index("request_id")


@pytest.mark.slow  # one Ray actor loading the tiny model, then the judges: ~1 min on the loaded shared cores
def test_every_turn_once_in_order_with_the_candidates_own_history(run):
    cfg, store, traffic = run
    by_id = _responses(store)
    assert sorted(by_id.index) == sorted(traffic.request_id) and by_id.index.is_unique  # every turn, once
    ok = by_id[by_id.error.isna()]
    assert (ok["round"] == traffic.set_index("request_id").loc[ok.index, "turn"]).all()  # turn k sent in round k
    for conv in ["c0", "c1", "c2", "c3"]:
        n = int((traffic.conversation_id == conv).sum())
        for k in range(1, n + 1):
            sent = list(by_id.loc[f"{conv}-t{k}", "messages_sent"])
            users = [m["content"] for m in sent if m["role"] == "user"]
            answers = [m["content"] for m in sent if m["role"] == "assistant"]
            assert [u.replace(" JUDGE-NO-FIT", "") for u in users] == [_user(conv, j) for j in range(1, k + 1)]
            assert answers == [by_id.loc[f"{conv}-t{j}", "response"] for j in range(1, k)]  # its own, in order
            assert sent[-1]["role"] == "user" and not any("INCUMBENT" in m["content"] for m in sent)
    assert by_id.loc["c4-t2", "error"].startswith("context_length")  # the real model's context is 512 tokens
    assert by_id.loc["c4-t3", "error"].startswith("upstream: turn 3 not sent: turn 2 (c4-t2) failed")
    # Each conversation sits in one traffic shard, and there are several shards.
    shards = {s: set(store.read_shard("traffic", s)["conversation_id"]) for s in store.commits("traffic")}
    assert len(shards) > 1 and sum(len(c) for c in shards.values()) == 5 == len(set().union(*shards.values()))


@pytest.mark.slow
def test_continuity_and_transcript_scores(run, judged):
    _, store, traffic = run
    _, seen = judged
    scores = store.read_table("scores")
    cand = scores[scores.model == "tiny-hf"]
    cont = cand[cand.metric == "judge.continuity"].set_index("request_id")["value"]
    # Every answered turn with a next turn, 0 where the logged next user message does not fit (scripted).
    assert cont.to_dict() == {"c0-t1": 1.0, "c0-t2": 1.0, "c2-t1": 1.0, "c2-t2": 0.0, "c2-t3": 1.0, "c3-t1": 1.0,
                              "c4-t1": 1.0}
    tr = cand[cand.metric == "judge.transcript.conversation"].set_index("request_id")["value"]
    # On each conversation's last turn (the scripted score counts the assistant turns); c4 failed: none.
    assert tr.to_dict() == {"c0-t3": 3.0, "c1-t1": 1.0, "c2-t4": 4.0, "c3-t2": 2.0}
    inc = scores[scores.model == "inc"]
    assert not (inc.metric == "judge.continuity").any()  # logged answers: the user did reply to them
    assert inc[inc.metric == "judge.transcript.conversation"].set_index("request_id")["value"].to_dict() == {
        "c0-t3": 3.0, "c1-t1": 1.0, "c2-t4": 4.0, "c3-t2": 2.0, "c4-t3": 3.0}
    # The transcript the judge saw: the logged user turns with the candidate's answers, in order.
    by_id = _responses(store)
    c2 = [t for t in seen if "<transcript>" in t and _user("c2", 4) in t and "INCUMBENT" not in t]
    assert len(c2) == 1
    pos = [c2[0].index(by_id.loc[f"c2-t{k}", "response"]) for k in range(1, 5)]
    users = [c2[0].index(_user("c2", k)) for k in range(1, 5)]
    assert users[0] < pos[0] < users[1] < pos[1] < users[2] < pos[2] < users[3] < pos[3]
    assert store.manifest()["stages"]["score"]["transcript_rubrics"]["conversation"]["rubric"] == "conversation.v1"


@pytest.mark.slow
def test_the_judge_grades_the_history_the_candidate_was_sent(run, judged):
    _, store, _ = run
    _, seen = judged
    by_id = _responses(store)
    conv = [t.split("<conversation>")[1].split("</conversation>")[0] for t in seen if "<conversation>" in t
            and f"<answer>\n{by_id.loc['c2-t3', 'response']}\n</answer>" in t and _user("c2", 3) in t]
    assert conv and all("INCUMBENT" not in c for c in conv)  # not the logged history
    assert all(c.index(by_id.loc["c2-t1", "response"]) < c.index(_user("c2", 2)) for c in conv)
    scores = store.read_table("scores")
    assert ((scores.model == "tiny-hf") & (scores.metric == "judge.abs.correctness")).sum() == 11  # answered turns


@pytest.mark.slow
def test_rerun_redoes_nothing_and_a_lost_shard_is_redone_alone(run, judged):
    from jobs import replay, score

    cfg, store, traffic = run
    srv, _ = judged
    before = {s: r["file"] for s, r in store.commits("responses").items()}
    scored = {s: r["file"] for s, r in store.commits("scores").items()}
    calls = len(srv.log)
    again = replay.run(cfg, store, progress=False)["tiny-hf"]
    assert again["shards_run"] == 0 and again["shards_skipped"] == again["shards_total"] > 1
    assert score.run(cfg, store, progress=False)["shards_done"] == 0 and len(srv.log) == calls
    assert {s: r["file"] for s, r in store.commits("responses").items()} == before
    # A driver killed before one shard's commit: that shard alone is redone, no turn lost or duplicated.
    lost = shard_id("tiny-hf", "traffic-000001")
    old = store.read_shard("responses", lost)
    assert store.retract_shard("responses", lost) and store.retract_shard("scores", shard_id("scores", "tiny-hf", "traffic-000001"))
    st = replay.run(cfg, store, progress=False)["tiny-hf"]
    assert st["shards_run"] == 1 and st["requests"] == len(traffic)
    after = {s: r["file"] for s, r in store.commits("responses").items()}
    assert {s: f for s, f in after.items() if s != lost} == {s: f for s, f in before.items() if s != lost}
    new = store.read_shard("responses", lost)
    assert list(new.request_id) == list(old.request_id) and list(new.response) == list(old.response)  # greedy
    assert sorted(_responses(store).index) == sorted(traffic.request_id)
    assert score.run(cfg, store, progress=False)["shards_done"] == 1


@pytest.mark.slow
def test_retry_resends_a_conversation_from_its_failed_turn(run):
    from jobs import replay

    cfg, store, _ = run
    cfg = cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"retry_errors": "all"})})
    before = _responses(store)
    shard = next(s for s in store.commits("traffic") if "c4" in set(store.read_shard("traffic", s)["conversation_id"]))
    st = replay.run(cfg, store, progress=False)["tiny-hf"]
    assert st["shards_retried"] == 1 and st["rows_retried"] == 2  # c4-t2 and the turn after it, never c4-t1
    after = _responses(store)
    assert sorted(after.index) == sorted(before.index)
    assert after.loc["c4-t1", "response"] == before.loc["c4-t1", "response"]
    assert after.loc["c4-t1", "attempts"] == before.loc["c4-t1", "attempts"]
    assert list(after.loc["c4-t1", "messages_sent"]) == list(before.loc["c4-t1", "messages_sent"])
    assert after.loc["c4-t2", "error"].startswith("context_length") and after.loc["c4-t3", "error"].startswith("upstream")
    assert after.loc["c4-t2", "attempts"] == 2 * before.loc["c4-t2", "attempts"]
    assert store.commit_record("responses", shard_id("tiny-hf", shard))["generation"] == 1


# -- the sampling stage's checks, no Ray ----------------------------------------------------------------------

def _sample(tmp_path, frame: pd.DataFrame, sample_cfg: dict | None = None, **over):
    from jobs import sample

    frame.to_parquet(tmp_path / "t.parquet")
    cfg = parse_config(_raw(tmp_path / "store", str(tmp_path / "t.parquet"), **over))
    if sample_cfg:
        cfg = parse_config({**cfg.model_dump(mode="json"), "traffic": {"path": cfg.traffic.path, "sample": sample_cfg}})
    store = RunStore(cfg.store, cfg.run_id)
    return store, sample.run(cfg, store)


@pytest.mark.parametrize("edit, message", [
    (lambda t: pd.concat([t, t.iloc[[1]].assign(request_id="dup")], ignore_index=True),
     "conversation 'c0', field 'turn'"),
    (lambda t: t.assign(turn=t.turn.where(t.request_id != "c0-t2", 5)), "conversation 'c0', field 'turn'"),
    (lambda t: t.assign(turn=t.turn.astype(object).where(t.request_id != "c0-t1", "x")),
     "(request_id 'c0-t1'), field 'turn'"),
    (lambda t: t.assign(messages=[t.messages[1] if r == "c0-t3" else m for r, m in zip(t.request_id, t.messages)]),
     "request_id 'c0-t3' (conversation 'c0', turn 3), field 'messages': 2 user message(s), expected 3"),
    (lambda t: t.drop(columns="turn"), "needs column 'turn'"),
    (lambda t: t.drop(columns="conversation_id"), "needs column 'conversation_id'"),
])
def test_bad_conversation_traffic_exits_2_before_anything_is_committed(tmp_path, edit, message):
    bad = edit(conversation_traffic({"c0": 3, "c1": 2}))
    if "turn" in bad.columns and bad["turn"].dtype == object:
        bad["turn"] = bad["turn"].astype(str)  # one Parquet type
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        _sample(tmp_path, bad)
    assert exc.value.exit_code == 2 and "t.parquet" in str(exc.value)
    assert not RunStore(parse_config(_raw(tmp_path / "store", "x")).store, "conv").commits("traffic")


def test_cli_run_on_traffic_without_conversations_exits_2(tmp_path, capsys):
    from jobs.cli import main

    conversation_traffic({"c0": 2}).drop(columns=["conversation_id", "turn"]).to_parquet(tmp_path / "t.parquet")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path / "store", str(tmp_path / "t.parquet"))))
    assert main(["run", "--config", str(path), "--no-labels", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "replay.mode: conversation needs column 'conversation_id'" in err and "replay.mode: turn" in err


def test_validate_checks_the_conversations(tmp_path, capsys):
    from jobs.cli import main

    traffic = conversation_traffic({"c0": 3, "c1": 2})
    traffic.to_parquet(tmp_path / "t.parquet")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path / "store", str(tmp_path / "t.parquet"))))
    assert main(["validate", "--config", str(path), "--no-store", "--no-labels"]) == 0
    assert '"conversations": 2' in capsys.readouterr().out
    traffic[traffic.request_id != "c0-t2"].to_parquet(tmp_path / "t.parquet")
    assert main(["validate", "--config", str(path), "--no-store", "--no-labels"]) == 2
    assert "conversation 'c0', field 'turn': turns [1, 3] are not 1..2" in capsys.readouterr().err


def test_shards_hold_whole_conversations_in_turn_order(tmp_path):
    turns = {f"k{i:02d}": 1 + i % 5 for i in range(30)}
    traffic = conversation_traffic(turns).sample(frac=1.0, random_state=1).reset_index(drop=True)
    store, stats = _sample(tmp_path, traffic, execution={"shard_rows": 7})
    assert stats["rows"] == len(traffic) and stats["conversations"] == 30 and stats["mode"] == "conversation"
    seen = []
    for s in sorted(store.commits("traffic")):
        df = store.read_shard("traffic", s)
        assert len(df) <= 7
        for conv, rows in df.groupby("conversation_id", sort=False):
            assert list(rows["turn"]) == list(range(1, turns[conv] + 1))  # whole, in order
        seen += list(pd.unique(df["conversation_id"]))
    assert sorted(seen) == sorted(turns)  # each conversation in exactly one shard


def test_sample_draws_whole_conversations(tmp_path):
    turns = {f"k{i:02d}": 1 + i % 4 for i in range(40)}
    store, stats = _sample(tmp_path, conversation_traffic(turns),
                           sample_cfg={"fraction": 0.5, "seed": 3})
    kept = store.read_table("traffic")
    assert 0 < stats["conversations"] < 40
    for conv, rows in kept.groupby("conversation_id"):
        assert sorted(rows["turn"]) == list(range(1, turns[conv] + 1))
    assert np.allclose(kept["inclusion_prob"], kept["inclusion_prob"].iat[0])


def test_a_quarantined_turn_takes_its_conversations_later_turns(tmp_path):
    traffic = conversation_traffic({"c0": 4, "c1": 2})
    traffic.loc[traffic.request_id == "c0-t2", "response"] = None
    traffic["response"] = traffic["response"].astype(object)
    traffic.loc[traffic.request_id == "c0-t2", "messages"] = None
    store, stats = _sample(tmp_path, traffic)
    kept = store.read_table("traffic")
    assert sorted(kept.request_id) == ["c0-t1", "c1-t1", "c1-t2"]
    q = store.read_table("quarantine").set_index("request_id")
    assert sorted(q.index) == ["c0-t2", "c0-t3", "c0-t4"] and stats["quarantined"] == 3
    assert q.loc["c0-t2", "field"] == "messages"
    assert q.loc["c0-t3", "reason"].startswith("conversation 'c0': turn 2 was quarantined (messages is missing)")


def test_a_run_sampled_per_turn_is_not_replayed_per_conversation(tmp_path):
    from jobs import replay
    from tests.support.fixtures import write_traffic

    cfg = parse_config(_raw(tmp_path / "store", "t.parquet"))
    store = RunStore(cfg.store, cfg.run_id)
    write_traffic(store, conversation_traffic({"c0": 2}), 4)  # committed as the turn-mode sample does
    with pytest.raises(ContractError, match="was sampled per turn") as exc:
        replay.run(cfg, store, progress=False)
    assert exc.value.exit_code == 2


def test_conversation_judges_need_conversation_mode_and_an_engine(tmp_path):
    with pytest.raises(ConfigError, match="scoring.continuity judges conversation-mode answers"):
        parse_config(_raw(tmp_path, "t.parquet", replay={"mode": "turn"}, scoring={"continuity": {
            "enabled": True, "engine": {"kind": "openai", "name": "j", "model": "m", "base_url": "http://127.0.0.1:9"}}}))
    with pytest.raises(ConfigError, match="scoring.transcript.enabled needs an engine"):
        parse_config(_raw(tmp_path, "t.parquet", scoring={"transcript": {"enabled": True}}))
    with pytest.raises(ConfigError, match="replay.mode"):
        parse_config(_raw(tmp_path, "t.parquet", replay={"mode": "dialogue"}))
