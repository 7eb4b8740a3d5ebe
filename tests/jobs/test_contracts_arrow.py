"""The vectorised message checks (jobs.contracts_arrow) against the Python checks they stand in for: the same
valid rows, messages, responses and quarantine reasons on every case, Arrow list column or not."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.contracts import ROLES, iter_table_chunks, validate_traffic
from jobs.contracts_arrow import fast_messages


def U(text):
    return {"role": "user", "content": text}


CASES = [  # (messages, response)
    ([U("hi")], None),
    ([{"role": "system", "content": "be brief"}, U("hi")], "an answer"),
    ([U("hi"), {"role": "assistant", "content": "incumbent said"}], None),  # trailing answer fills the response
    ([U("hi"), {"role": "assistant", "content": "incumbent said"}], "kept"),
    ([], None),
    (None, None),
    ([{"role": "robot", "content": "x"}], None),
    ([{"role": "user", "content": None}], None),
    ([{"role": "assistant", "content": "x"}], None),
    ([U("   ")], None),
    ([U("\u3000\u2028\t")], None),  # whitespace to Python's strip(), not to ASCII regexes
    ([U("\x1c\x1f")], None),
    ([U("中文 question")], None),
    ([U("a"), None, U("b")], None),
    ([{"role": None, "content": "x"}], None),
    ([U("fine"), U("")], None),
    ([U("")], None),
    ([U("x"), {"role": "tool", "content": "{}"}, U("y")], None),
]


def _table(list_type, with_extra: bool) -> pa.Table:
    ids = [f"r{i}" for i in range(len(CASES))] + [None, "r0"]  # a missing id and a duplicate one
    msgs = [m for m, _ in CASES] + [[U("no id")], [U("dup")]]
    resp = [r for _, r in CASES] + [None, None]
    fields = [("role", pa.string()), ("content", pa.string())] + ([("name", pa.string())] if with_extra else [])
    string = pa.large_string() if list_type is pa.large_list else pa.string()
    item = pa.struct([(n, string if t == pa.string() else t) for n, t in fields])
    if with_extra:
        msgs = [None if m is None else [None if e is None else {**e, "name": "n"} for e in m] for m in msgs]
    return pa.table({"request_id": pa.array(ids, pa.string()), "messages": pa.array(msgs, list_type(item)),
                     "response": pa.array(resp, pa.string()), "app": pa.array(["a"] * len(ids))})


def _checked(path, arrow_lists: bool):
    [(source, _, chunk)] = list(iter_table_chunks(str(path), chunk_rows=1000, arrow_lists=arrow_lists))
    return chunk, validate_traffic(chunk, source, segments=["app"])


def _plain(valid: pd.DataFrame) -> list[dict]:
    rows = []
    for r in valid.to_dict("records"):
        r["messages"] = None if r["messages"] is None else [dict(m) for m in list(r["messages"])]
        r["response"] = None if r["response"] is None or r["response"] is pd.NA else str(r["response"])
        rows.append(r)
    return rows


@pytest.mark.parametrize("list_type", [pa.list_, pa.large_list])
@pytest.mark.parametrize("with_extra", [False, True])
def test_arrow_path_gives_what_the_python_path_gives(tmp_path, list_type, with_extra):
    path = tmp_path / "traffic.parquet"
    pq.write_table(_table(list_type, with_extra), path)
    chunk, fast = _checked(path, arrow_lists=True)
    assert isinstance(chunk["messages"].dtype, pd.ArrowDtype)  # the fast path really ran
    _, slow = _checked(path, arrow_lists=False)
    assert _plain(fast.valid) == _plain(slow.valid)
    cols = ["row", "request_id", "field", "reason"]
    assert fast.quarantine[cols].to_dict("records") == slow.quarantine[cols].to_dict("records")
    assert len(fast.valid) == 6 and len(fast.quarantine) == len(CASES) + 2 - 6  # every row is one or the other
    # the trailing incumbent answer filled an empty response and left a given one alone
    by_id = {r["request_id"]: r for r in _plain(fast.valid)}
    assert by_id["r2"]["response"] == "incumbent said" and by_id["r2"]["messages"] == [U("hi")]
    assert by_id["r3"]["response"] == "kept"
    assert by_id["r12"]["messages"] == [U("中文 question")]
    # the traffic shard's Parquet type is the same whichever path made it
    t_fast = pa.Table.from_pandas(fast.valid, preserve_index=False)
    t_slow = pa.Table.from_pandas(slow.valid, preserve_index=False)
    assert t_fast.schema.field("messages").type == t_slow.schema.field("messages").type
    assert json.dumps(_plain(fast.valid), default=str) == json.dumps(_plain(slow.valid), default=str)


def test_fast_rows_are_a_subset_of_the_valid_ones_and_skip_trailing_answers(tmp_path):
    path = tmp_path / "traffic.parquet"
    pq.write_table(_table(pa.list_, False), path)
    chunk, checked = _checked(path, arrow_lists=True)
    ok, msgs = fast_messages(chunk["messages"], ROLES)
    valid_ids = set(checked.valid["request_id"])
    assert set(chunk["request_id"][ok].dropna()) <= valid_ids
    assert not ok[2] and not ok[3]  # a trailing assistant turn is left to the Python path
    assert len(msgs) == ok.sum() and msgs.type == pa.list_(pa.struct([("role", pa.string()),
                                                                      ("content", pa.string())]))


def test_not_a_list_column_takes_the_python_path():
    assert fast_messages(pd.Series([[U("x")]], dtype=object), ROLES) is None
    col = pd.Series(pd.arrays.ArrowExtensionArray(pa.array([["a"]], pa.list_(pa.string()))))
    assert fast_messages(col, ROLES) is None  # lists of strings: not role/content structs
    empty = pd.Series(pd.arrays.ArrowExtensionArray(pa.array([], pa.list_(pa.struct([("role", pa.string()),
                                                                                       ("content", pa.string())])))))
    ok, msgs = fast_messages(empty, ROLES)
    assert len(ok) == 0 and len(msgs) == 0 and np.asarray(ok).dtype == bool


def test_a_shard_with_arrow_messages_reads_back_as_python_objects(tmp_path):
    from jobs.config import StoreConfig
    from jobs.store import RunStore

    path = tmp_path / "traffic.parquet"
    pq.write_table(_table(pa.list_, False), path)
    _, fast = _checked(path, arrow_lists=True)
    _, slow = _checked(path, arrow_lists=False)
    store = RunStore(StoreConfig(root=str(tmp_path / "store")), "r")
    store.write_shard("traffic", "traffic-000000", fast.valid)
    store.write_shard("traffic", "traffic-000001", slow.valid)
    a, b = store.read_shard("traffic", "traffic-000000"), store.read_shard("traffic", "traffic-000001")
    assert a["messages"].dtype == object and _plain(a) == _plain(b)
