"""The decide stage reads the traffic's conversation columns when the stored traffic has them (clustered estimands,
turn positions, conversation labels; docs/conversations.md) and nothing beyond the segments otherwise."""
from __future__ import annotations

import pandas as pd

from jobs.config import StoreConfig
from jobs.decide import decision_traffic
from jobs.store import RunStore


def test_decision_traffic_reads_conversation_columns_when_present(tmp_path):
    store = RunStore(StoreConfig(root=str(tmp_path / "store")), "conv")
    store.write_shard("traffic", "traffic-000000", pd.DataFrame({
        "request_id": ["a", "b"], "messages": ["x", "y"], "app": ["p", "q"], "conversation_id": ["c", "c"],
        "turn": [1, 2]}))
    got = decision_traffic(store, ["app"])
    assert list(got.columns) == ["request_id", "app", "conversation_id", "turn"] and got["turn"].tolist() == [1, 2]
    assert list(decision_traffic(store, []).columns) == ["request_id", "conversation_id", "turn"]
    plain = RunStore(StoreConfig(root=str(tmp_path / "store")), "plain")
    plain.write_shard("traffic", "traffic-000000", pd.DataFrame({"request_id": ["a"], "messages": ["x"], "app": ["p"]}))
    assert decision_traffic(plain, []) is None  # no segment, no conversation: the decision needs no traffic
    assert list(decision_traffic(plain, ["app"]).columns) == ["request_id", "app"]
