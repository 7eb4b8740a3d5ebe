"""The run store on a local folder and on a real S3 API (moto server on loopback)."""

from __future__ import annotations

import io
import logging
import threading

import pandas as pd
import pytest

from jobs.config import StoreConfig
from jobs.errors import StoreAccessDenied, StoreError, StoreNotFound
from jobs.store import RunStore, shard_id


def _frame(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(start, start + n)], "value": range(start, start + n)})


def test_commit_then_read_and_rerun_skips(store):
    store.check_access()
    assert store.write_shard("scores", "s-000", _frame(0, 5)) is True
    assert store.write_shard("scores", "s-001", _frame(5, 3)) is True
    # A rerun of the same shard writes nothing: no duplicated row.
    assert store.write_shard("scores", "s-000", _frame(0, 5)) is False
    table = store.read_table("scores")
    assert sorted(table["request_id"]) == sorted(f"r{i}" for i in range(8))
    assert table["request_id"].is_unique
    assert store.count_rows("scores") == 8
    assert set(store.commits("scores")) == {"s-000", "s-001"}


def test_reader_ignores_uncommitted_data_files(store):
    store.write_shard("responses", "a", _frame(0, 4))
    # A writer that crashed after writing its data file but before committing it.
    orphan = store.path("responses", "part-b-crashed.parquet")
    buf = io.BytesIO()
    _frame(100, 4).to_parquet(buf)
    store.fs.pipe_file(orphan, buf.getvalue())
    # A half-written file (truncated bytes) must not break or leak into readers either.
    store.fs.pipe_file(store.path("responses", "part-c-half.parquet"), buf.getvalue()[:50])
    table = store.read_table("responses")
    assert sorted(table["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert len(store.garbage("responses")) == 2
    assert len(store.shard_paths("responses")) == 1


def test_a_listing_never_hides_a_shard_committed_after_it(store):
    """A store that listed a table (verify, garbage) and then reads a shard another process committed since must
    find it: a cached listing once made that read "missing" and set a good shard aside (uncommitted it)."""
    import pickle

    store.write_shard("responses", "a", _frame(0, 4))
    assert store.verify("responses") == [] and store.garbage("responses") == []  # both list the table
    other = pickle.loads(pickle.dumps(store))  # a Ray worker's copy: its own client
    assert other.write_shard("responses", "b", _frame(4, 4)) is True
    assert store.is_committed("responses", "b")
    assert list(store.read_shard("responses", "b")["request_id"]) == ["r4", "r5", "r6", "r7"]
    assert set(store.commits("responses")) == {"a", "b"} and store.verify("responses") == []


def test_concurrent_writers_of_one_shard_commit_once(store):
    results = []

    def write(start):
        results.append(store.write_shard("scores", "same", _frame(start, 3)))

    threads = [threading.Thread(target=write, args=(i * 10,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    table = store.read_table("scores")
    assert len(table) == 3  # exactly one writer's rows, never two
    assert store.count_rows("scores") == 3


def test_manifest_merges_stage_stats(store):
    store.update_manifest(config_hash="abc", stages={"replay": {"rows": 10}})
    store.update_manifest(stages={"replay": {"errors": 1}, "score": {"rows": 30}})
    m = store.manifest()
    assert m["run_id"] == "run-1" and m["config_hash"] == "abc"
    assert m["stages"]["replay"] == {"rows": 10, "errors": 1}
    assert m["stages"]["score"] == {"rows": 30}


def test_documents_roundtrip(store):
    uri = store.write_document("decision", "decision.json", '{"a": 1}')
    assert uri.endswith("runs/run-1/decision/decision.json")
    assert store.read_document("decision", "decision.json") == b'{"a": 1}'
    store.write_document("decision", "decision.json", '{"a": 2}')
    assert store.read_document("decision", "decision.json") == b'{"a": 2}'


def test_unknown_table_and_bad_shard_id(store):
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        store.write_shard("nope", "x", _frame(0, 1))
    with pytest.raises(ValueError, match="shard id"):
        store.write_shard("scores", "a/b", _frame(0, 1))
    assert shard_id("org/model:7b", "traffic-000001") == "org_model_7b-traffic-000001"


def test_missing_bucket_is_a_clear_error(s3_bucket):
    endpoint, _ = s3_bucket
    store = RunStore(StoreConfig(root="s3://no-such-bucket/x", endpoint_url=endpoint), "r")
    with pytest.raises(StoreNotFound, match="s3://no-such-bucket"):
        store.check_access()


def test_bad_credentials_are_a_clear_error_without_the_secret(s3_bucket, monkeypatch, caplog):
    endpoint, bucket = s3_bucket
    # The moto server runs in this process: switch on its IAM check so an unknown access key is rejected.
    from moto.core.authorization import enable_iam_authentication

    monkeypatch.setenv("BAD_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("BAD_SECRET", "super-secret-value-do-not-print")
    store = RunStore(StoreConfig(root=f"s3://{bucket}/p", endpoint_url=endpoint,
                                 access_key_id_env="BAD_KEY_ID", secret_access_key_env="BAD_SECRET"), "r")
    caplog.set_level(logging.DEBUG)
    with enable_iam_authentication(), pytest.raises(StoreAccessDenied) as info:
        store.check_access()
    assert "InvalidAccessKeyId" in str(info.value) or "denied" in str(info.value)
    assert "super-secret-value-do-not-print" not in str(info.value)
    assert "super-secret-value-do-not-print" not in caplog.text


def test_missing_credential_env_var_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    store = RunStore(StoreConfig(root="s3://b/p", access_key_id_env="NOT_SET_ANYWHERE"), "r")
    with pytest.raises(StoreError, match="store.access_key_id_env: environment variable NOT_SET_ANYWHERE is not set"):
        store.check_access()


def test_store_pickles_without_client(store):
    import pickle

    store.check_access()
    clone = pickle.loads(pickle.dumps(store))
    assert clone._fs is None
    clone.write_shard("labels", "l", _frame(0, 2))
    assert store.count_rows("labels") == 2


# -- corruption: every commit records size and sha256; a damaged shard is named and set aside -----------------
def _cut_in_half(store, path: str) -> None:
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: len(raw) // 2])


def test_commit_record_holds_size_and_sha256(store):
    import hashlib

    store.write_shard("scores", "s", _frame(0, 4).assign(model="m"))
    rec = store.commits("scores")["s"]
    raw = store.fs.cat_file(store.path("scores", rec["file"]))
    assert rec["bytes"] == len(raw) and rec["sha256"] == hashlib.sha256(raw).hexdigest()
    assert rec["distinct_requests"] == 4


def test_data_file_cut_in_half_is_named_set_aside_and_redone_once(store):
    from jobs.errors import EXIT_STORAGE, CorruptShard

    store.write_shard("responses", "a", _frame(0, 4))
    store.write_shard("responses", "b", _frame(4, 4))
    data = store.path("responses", store.commits("responses")["b"]["file"])
    _cut_in_half(store, data)
    # The cheap check (one listing, no data read) finds it by its size.
    size = len(store.fs.cat_file(data))
    found = [(s, why.split(",")[0]) for s, _, why in store.verify("responses")]
    assert found == [("b", f"the data file has {size} bytes")]
    with pytest.raises(CorruptShard) as info:
        store.read_table("responses")
    err = info.value
    assert err.exit_code == EXIT_STORAGE
    assert (err.table, err.shard) == ("responses", "b") and err.path.endswith(data.rsplit("/", 1)[-1])
    assert "run store corrupt: table responses, shard b" in str(err) and err.path in str(err)
    # Set aside: no longer committed, so the writer redoes it, and its rows are there exactly once.
    assert not store.is_committed("responses", "b") and store.set_asides("responses")[0][1]["shard"] == "b"
    assert store.write_shard("responses", "b", _frame(4, 4)) is True
    table = store.read_table("responses")
    assert sorted(table["request_id"]) == sorted(f"r{i}" for i in range(8))


def test_half_a_commit_record_is_named_set_aside_and_redone_once(store):
    from jobs.errors import CorruptShard

    store.write_shard("scores", "a", _frame(0, 3))
    store.write_shard("scores", "b", _frame(3, 3))
    _cut_in_half(store, store.path("scores", "_commits", "a.json"))
    with pytest.raises(CorruptShard, match=r"table scores, shard a, .*_commits/a\.json: the commit record does not"):
        store.commits("scores")
    assert set(store.commits("scores")) == {"b"}  # set aside: the rest of the table reads
    assert store.write_shard("scores", "a", _frame(0, 3)) is True
    assert sorted(store.read_table("scores")["request_id"]) == [f"r{i}" for i in range(6)]


def test_same_size_damage_fails_the_checksum_on_read(store):
    from jobs.errors import CorruptShard

    store.write_shard("traffic", "t", _frame(0, 50))
    path = store.path("traffic", store.commits("traffic")["t"]["file"])
    raw = bytearray(store.fs.cat_file(path))
    raw[len(raw) // 2] ^= 0xFF
    store.fs.pipe_file(path, bytes(raw))
    assert store.verify("traffic") == []  # same size: only a read (which hashes the bytes) can tell
    with pytest.raises(CorruptShard, match="sha256 differs"):
        store.read_shard("traffic", "t")
    assert store.read_shard("traffic", "t") is None  # set aside


def test_corrupt_error_crosses_a_process_boundary():
    import pickle

    from jobs.errors import CorruptShard

    err = pickle.loads(pickle.dumps(CorruptShard("scores", "s", "/p", "why", "/m")))
    assert (err.table, err.shard, err.path, err.marker) == ("scores", "s", "/p", "/m") and "table scores" in str(err)
