"""jobs.integrity: what `baton run` sets aside before resuming, on a local store and on the moto S3 server; and a
corrupt shard met inside a Ray worker reaching the driver as itself."""

from __future__ import annotations

import pandas as pd
import pytest

from jobs.config import StoreConfig
from jobs.errors import CorruptShard
from jobs.integrity import repair_run
from jobs.store import RunStore


def _rows(n: int, **cols) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], **cols})


def _cut_in_half(store, path: str) -> None:
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: len(raw) // 2])


def test_repair_sets_aside_the_corrupt_and_what_was_computed_from_it(store):
    store.write_shard("traffic", "traffic-000000", _rows(3))
    store.update_manifest(stages={"sample": {"status": "done", "shards": 1}})
    store.write_shard("responses", "cand-traffic-000000", _rows(3, model="cand"))
    store.write_shard("scores", "scores-cand-traffic-000000", _rows(3, model="cand", metric="m", value=1.0))
    store.write_shard("embeddings", "embeddings-cand-traffic-000000", _rows(3, model="cand"))
    store.write_shard("scores", "scores-incumbent-traffic-000000", _rows(3, model="incumbent", metric="m", value=1.0))
    store.write_shard("quarantine", "replay-other-traffic-000000", _rows(1, reason="x"))
    store.write_shard("responses", "other-traffic-000000", _rows(3, model="other"))
    store.write_shard("scores", "scores-other-traffic-000000", _rows(3, model="other", metric="m", value=1.0))
    _cut_in_half(store, store.path("responses", store.commits("responses")["cand-traffic-000000"]["file"]))
    _cut_in_half(store, store.path("quarantine", "_commits", "replay-other-traffic-000000.json"))

    aside = {(a["table"], a["shard"]) for a in repair_run(store)}
    assert aside == {("responses", "cand-traffic-000000"), ("scores", "scores-cand-traffic-000000"),
                     ("embeddings", "embeddings-cand-traffic-000000"), ("quarantine", "replay-other-traffic-000000"),
                     ("responses", "other-traffic-000000"), ("scores", "scores-other-traffic-000000")}
    assert set(store.commits("scores")) == {"scores-incumbent-traffic-000000"}  # untouched
    assert store.commits("responses") == {} and store.commits("embeddings") == {}
    assert store.manifest()["stages"]["sample"]["status"] == "done"  # the traffic is sound: no resample
    assert repair_run(store) == []  # notes are cascaded once


def test_a_corrupt_traffic_shard_makes_the_sample_stage_run_again(store):
    store.write_shard("traffic", "traffic-000000", _rows(3))
    store.update_manifest(stages={"sample": {"status": "done"}})
    _cut_in_half(store, store.path("traffic", store.commits("traffic")["traffic-000000"]["file"]))
    assert repair_run(store)[0]["table"] == "traffic"
    assert store.manifest()["stages"]["sample"]["status"] == "redo"


def test_hand_imported_labels_stop_the_run_with_the_reimport_command(store):
    store.write_shard("labels", "labels-b1-abc", _rows(2, value=1.0),
                      meta={"source": "/data/answers.csv", "batch": "b1"})
    path = store.path("labels", store.commits("labels")["labels-b1-abc"]["file"])
    store.fs.rm_file(path)
    with pytest.raises(CorruptShard) as info:
        repair_run(store, "run.yaml")
    msg = str(info.value)
    assert "table labels, shard labels-b1-abc" in msg and "the data file is missing" in msg
    assert "baton labels import --config run.yaml /data/answers.csv --batch b1" in msg
    assert info.value.exit_code == 4


def test_corrupt_shard_in_a_ray_worker_reaches_the_driver_as_itself(ray_cluster, tmp_path):
    from jobs.shards import run_shards

    class ReadShardTask:  # defined here so Ray pickles it by value (workers cannot import this test module)
        """A shard task that only reads its traffic shard (what every stage's task does first)."""

        def __init__(self, store: RunStore):
            self.store = store

        def __call__(self, shard: str) -> dict:
            return {"rows": len(self.store.read_shard("traffic", shard))}

    store = RunStore(StoreConfig(root=str(tmp_path / "store")), "run-1")
    store.write_shard("traffic", "t", _rows(50))
    store.write_shard("traffic", "u", _rows(50))
    path = store.path("traffic", store.commits("traffic")["t"]["file"])
    raw = bytearray(store.fs.cat_file(path))
    raw[len(raw) // 2] ^= 0xFF
    store.fs.pipe_file(path, bytes(raw))
    with pytest.raises(CorruptShard) as info:
        run_shards(ReadShardTask, {"store": store}, ["t", "u"], progress=False)
    assert type(info.value) is CorruptShard
    assert (info.value.table, info.value.shard, info.value.path) == ("traffic", "t", path)
    assert not store.is_committed("traffic", "t") and store.is_committed("traffic", "u")
