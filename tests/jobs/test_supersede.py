"""A committed shard's new version (a retry's merged rows) on a local folder and on S3 (moto on loopback): every
reader sees exactly one version; a stale writer cannot supersede; a retracted shard is redone by its stage."""

from __future__ import annotations

import pandas as pd


def _rows(errors: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(len(errors))], "model": "m",
                         "response": [None if e else f"answer {i}" for i, e in enumerate(errors)], "error": errors})


def test_superseded_shard_is_one_version_in_every_reader(store):
    store.write_shard("responses", "m-t0", _rows(["connection: down", None, "timeout: slow"]), meta={"stats": {"n": 1}})
    store.write_shard("responses", "m-t1", _rows([None]))
    first = store.commit_record("responses", "m-t0")
    assert store.supersede_shard("responses", "m-t0", _rows([None, None, None]), replaces=first["file"],
                                 meta={"stats": {"n": 2}}) is True
    rec = store.commit_record("responses", "m-t0")
    assert rec["generation"] == 1 and rec["supersedes"] == first["file"] and rec["stats"] == {"n": 2}
    assert store.read_shard("responses", "m-t0")["error"].isna().all()
    table = store.read_table("responses")
    assert len(table) == 4 and table["error"].isna().all()
    assert sum(len(df) for _, df in store.iter_shards("responses")) == 4 and store.count_rows("responses") == 4
    assert len(store.shard_paths("responses")) == 2
    assert [p.rsplit("/", 1)[-1] for p in store.garbage("responses")] == [first["file"]]
    # A writer holding the old version (a retried task, a second driver) cannot supersede it again.
    assert store.supersede_shard("responses", "m-t0", _rows(["x: y"] * 3), replaces=first["file"]) is False
    assert store.read_shard("responses", "m-t0")["error"].isna().all()


def test_retracted_shard_is_no_longer_committed(store):
    store.write_shard("scores", "scores-m-t0", pd.DataFrame({"request_id": ["r0"], "value": [1.0]}))
    assert store.retract_shard("scores", "scores-m-t0") is True
    assert not store.is_committed("scores", "scores-m-t0") and store.read_table("scores").empty
    assert store.retract_shard("scores", "scores-m-t0") is False
    # Its stage commits it again.
    assert store.write_shard("scores", "scores-m-t0", pd.DataFrame({"request_id": ["r0"], "value": [2.0]})) is True
    assert store.read_table("scores")["value"].tolist() == [2.0]
