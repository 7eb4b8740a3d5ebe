"""Malformed traffic and tables: the exact error, or the quarantine row with its reason; nothing valid lost."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from jobs.contracts import (
    read_table_file,
    validate_labels,
    validate_responses,
    validate_scores,
    validate_traffic,
)
from jobs.errors import ContractError


def _traffic() -> pd.DataFrame:
    ok = [{"role": "user", "content": "hello"}]
    return pd.DataFrame({
        "request_id": ["a", "b", None, "a", "c", "d", "e", "f", "g", "h"],
        "messages": [
            ok,
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello!"}],  # trailing answer -> incumbent response
            ok,  # missing id
            ok,  # duplicate of a
            [],  # empty
            "not json",
            [{"role": "robot", "content": "x"}],
            [{"role": "user", "content": 5}],
            None,  # falls back to prompt
            None,  # neither
        ],
        "prompt": [None] * 8 + ["a plain prompt", None],
        "region": ["eu", "us", "eu", "eu", "us", "eu", "us", "eu", "us", "eu"],
    })


def test_traffic_quarantine_reasons_and_nothing_valid_lost():
    checked = validate_traffic(_traffic(), "traffic.parquet", segments=["region"])
    assert list(checked.valid["request_id"]) == ["a", "b", "g"]
    q = checked.quarantine.set_index("row")
    assert q.loc[2, "reason"] == "request_id is missing or empty"
    assert q.loc[3, "reason"] == "duplicate request_id 'a' (first at row 0)"
    assert q.loc[4, "reason"] == "messages is empty"
    assert q.loc[5, "reason"].startswith("messages is a string that is not JSON")
    assert "messages[0].role must be one of" in q.loc[6, "reason"]
    assert q.loc[7, "reason"] == "messages[0].content must be a string, got int"
    assert q.loc[9, "reason"] == "neither messages nor a non-empty prompt string"
    assert set(q["source"]) == {"traffic.parquet"}
    assert len(checked.valid) + len(checked.quarantine) == len(_traffic())
    b = checked.valid.set_index("request_id").loc["b"]
    assert b["response"] == "hello!"
    assert [m["role"] for m in b["messages"]] == ["system", "user"]
    g = checked.valid.set_index("request_id").loc["g"]
    assert g["messages"] == [{"role": "user", "content": "a plain prompt"}]


def test_traffic_missing_columns_name_file_and_column():
    with pytest.raises(ContractError, match=r"t.csv: traffic table is missing column 'request_id'"):
        validate_traffic(pd.DataFrame({"prompt": ["x"]}), "t.csv")
    with pytest.raises(ContractError, match=r"t.csv: traffic table needs a 'messages' or a 'prompt' column"):
        validate_traffic(pd.DataFrame({"request_id": ["x"]}), "t.csv")
    with pytest.raises(ContractError, match=r"missing column 'intent'"):
        validate_traffic(pd.DataFrame({"request_id": ["x"], "prompt": ["p"]}), "t.csv", segments=["intent"])


def test_traffic_wrong_types_and_segments():
    df = pd.DataFrame({
        "request_id": [1, 2, 3, 4],
        "prompt": ["p1", "p2", "p3", "p4"],
        "response": ["r", 7, None, "r"],
        "timestamp": ["2026-01-01T00:00:00Z", "2026-01-01", "yesterday-ish", None],
        "intent": ["faq", "faq", "faq", None],
    })
    checked = validate_traffic(df, "t.jsonl", segments=["intent"])
    assert list(checked.valid["request_id"]) == ["1"]
    reasons = dict(zip(checked.quarantine["row"], checked.quarantine["reason"]))
    assert reasons == {1: "response must be a string or null", 2: "timestamp is not a date-time",
                       3: "segment column 'intent' is missing a value"}


def test_messages_must_end_with_user_turn():
    df = pd.DataFrame({"request_id": ["x"], "messages": [[{"role": "system", "content": "s"}]]})
    checked = validate_traffic(df, "t")
    assert checked.valid.empty
    assert "must end with a user turn" in checked.quarantine["reason"].iat[0]


def test_corrupt_parquet_and_unknown_format(tmp_path):
    bad = tmp_path / "traffic.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ContractError, match=r"traffic.parquet: cannot be read as parquet"):
        read_table_file(str(bad))
    other = tmp_path / "traffic.xlsx"
    other.write_bytes(b"x")
    with pytest.raises(ContractError, match="unknown table format"):
        read_table_file(str(other))
    from jobs.errors import StoreNotFound

    with pytest.raises(StoreNotFound, match="does not exist"):
        read_table_file(str(tmp_path / "absent.parquet"))


def test_csv_with_json_messages_roundtrip(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"request_id": ["001", "002"],
                  "messages": [json.dumps([{"role": "user", "content": "q1"}]), json.dumps([{"role": "user", "content": "q2"}])]
                  }).to_csv(path, index=False)
    checked = validate_traffic(read_table_file(str(path)), str(path))
    assert list(checked.valid["request_id"]) == ["001", "002"]  # ids stay strings, leading zeros kept
    assert checked.quarantine.empty


def test_responses_scores_labels_contracts():
    r = validate_responses(pd.DataFrame({
        "request_id": ["a", "a", "b", "c"], "model": ["m", "m", "m", "m"],
        "response": ["x", "x", None, None], "error": [None, None, "timeout", None]}), "resp")
    assert list(r.valid["request_id"]) == ["a", "b"]
    assert set(r.quarantine["reason"]) == {"duplicate (request_id, model)", "neither a response nor an error"}

    s = validate_scores(pd.DataFrame({"request_id": ["a", "b", "a"], "model": ["m", "m", "m"],
                                      "metric": ["x", "x", "x"], "value": [1.0, "oops", 2.0]}), "scores")
    assert list(s.valid["value"]) == [1.0]
    assert set(s.quarantine["reason"]) == {"value is not a number", "duplicate (request_id, model, metric)"}
    with pytest.raises(ContractError, match="scores: scores table is missing column 'metric'"):
        validate_scores(pd.DataFrame({"request_id": [], "model": [], "value": []}), "scores")

    lab = validate_labels(pd.DataFrame({"request_id": ["a", "b"], "model": ["m", "m"], "dimension": ["q", None],
                                        "value": [1, 0]}), "labels")
    assert list(lab.valid["request_id"]) == ["a"]
    assert lab.quarantine["field"].tolist() == ["dimension"]
