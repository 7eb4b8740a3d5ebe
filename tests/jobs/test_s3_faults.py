"""S3 that misbehaves: the run store behind a fault-injecting proxy (tests/support/s3_fault_proxy.py) in front of the
moto server on loopback. 503 SlowDown, 500 InternalError, connection resets before and after the request reached
S3, slow responses, and S3 unreachable for a while: retries are bounded, every commit happens exactly once (an
exclusive create whose response was lost recognises its own object), and a run that met an outage exits 4 naming
the bucket and resumes when S3 is back."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest

from jobs.config import StoreConfig
from jobs.errors import StoreError
from jobs.store import S3FS_CALLS, RunStore
from tests.support.fixtures import assert_exactly_once, pipeline_scale_module
from tests.support.s3_fault_proxy import KINDS, METHODS, S3FaultProxy

N = 60
SHARD_ROWS = 20
FAST = {"max_attempts": 5, "connect_timeout_s": 2.0, "read_timeout_s": 5.0}


@pytest.fixture(scope="module")
def proxy(moto_server):
    srv = S3FaultProxy(moto_server, seed=16).start()
    yield srv
    srv.stop()


@pytest.fixture
def faulty(proxy, s3_bucket):
    """(proxy, bucket): a fresh bucket behind the proxy, faults off and counters zero until the test says."""
    proxy.reset()
    yield proxy, s3_bucket[1]
    proxy.reset()


def _store(proxy, bucket, run_id="run-1", **kw) -> RunStore:
    return RunStore(StoreConfig(root=f"s3://{bucket}/prefix", endpoint_url=proxy.endpoint,
                                access_key_id_env="AWS_ACCESS_KEY_ID", secret_access_key_env="AWS_SECRET_ACCESS_KEY",
                                **{**FAST, **kw}), run_id)


def _frame(k: int, n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{k:03d}-{i}" for i in range(n)], "value": [float(k * 10 + i) for i in range(n)]})


def test_retries_are_set_explicitly_from_the_store_config():
    from pydantic import ValidationError

    from jobs.store import storage_options

    opts = storage_options(StoreConfig(root="s3://b/p", max_attempts=7, retry_mode="adaptive", read_timeout_s=9))
    assert opts["config_kwargs"] == {"retries": {"total_max_attempts": 7, "mode": "adaptive"},
                                     "connect_timeout": 5.0, "read_timeout": 9.0}
    assert RunStore(StoreConfig(root="s3://b/p"), "r").fs.retries == S3FS_CALLS
    with pytest.raises(ValidationError, match="retry_mode"):
        StoreConfig(root="s3://b/p", retry_mode="legacy")


def test_commits_are_exactly_once_through_a_quarter_of_requests_failing(faulty):
    proxy, bucket = faulty
    store = _store(proxy, bucket)
    store.check_access()
    proxy.configure(rate=0.25, delay_s=0.3, seed=7)
    proxy.script("reset_after", "PUT", "/scores/_commits/", times=3)  # surely some lost answers to commits
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def cycles(worker: int) -> None:
        s = _store(proxy, bucket)  # one client per thread, as Ray workers have
        try:
            for j in range(4):
                k = worker * 100 + j
                first = s.write_shard("scores", f"s-{k:03d}", _frame(k))
                again = s.write_shard("scores", f"s-{k:03d}", _frame(k + 1))  # a rerun: writes nothing
                got = s.read_shard("scores", f"s-{k:03d}")
                results[k] = [first, again, got.equals(_frame(k))]
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=cycles, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proxy.configure(rate=0.0)
    assert not errors, errors
    assert len(results) == 32 and all(r == [True, False, True] for r in results.values()), results
    records = store.commits("scores")
    assert sorted(records) == sorted(f"s-{k:03d}" for k in results)
    table = store.read_table("scores")
    assert len(table) == 32 * 4 and table["request_id"].is_unique
    assert store.verify("scores") == [] and store.garbage("scores") == []  # no data file lost or left behind
    for kind in KINDS:
        assert proxy.injected(kind=kind) > 0, (kind, dict(proxy.counts))
    for method in METHODS:
        assert proxy.injected(method=method) > 0, (method, dict(proxy.counts))


def test_exclusive_create_whose_response_was_lost_is_recognised_as_its_own(faulty):
    """The commit PUT reaches S3, the connection is reset before the answer: botocore retries, S3 answers 412
    (the object exists), and it is this writer's own commit, not another writer's."""
    proxy, bucket = faulty
    store = _store(proxy, bucket)
    proxy.script("reset_after", "PUT", "/scores/_commits/s-000.json")
    assert store.write_shard("scores", "s-000", _frame(0)) is True
    assert proxy.injected("reset_after", "PUT") == 1
    assert store.read_shard("scores", "s-000").equals(_frame(0))  # its data file was kept
    assert store.verify("scores") == [] and store.garbage("scores") == []
    # Another writer of the same shard still loses, and removes only its own data file.
    assert _store(proxy, bucket).write_shard("scores", "s-000", _frame(1)) is False
    assert store.read_shard("scores", "s-000").equals(_frame(0)) and store.garbage("scores") == []
    # A superseding commit (an overwrite) whose response was lost is one new version.
    first = store.commit_record("scores", "s-000")
    proxy.script("reset_after", "PUT", "/scores/_commits/s-000.json")
    assert store.supersede_shard("scores", "s-000", _frame(2), replaces=first["file"]) is True
    rec = store.commit_record("scores", "s-000")
    assert rec["generation"] == 1 and rec["supersedes"] == first["file"]
    assert store.read_shard("scores", "s-000").equals(_frame(2))
    # The run lease: its exclusive create, answer lost, is this driver's lease (not "in use by another driver").
    proxy.script("reset_after", "PUT", "/_lease/")
    lease = store.lease(ttl_s=30).acquire(wait_s=0)
    try:
        assert lease.generation == 0 and lease.latest()[1]["owner"] == lease.owner
    finally:
        lease.release()
    # A document (an overwrite) whose answer was lost.
    proxy.script("reset_after", "PUT", "/decision/decision.json")
    store.write_document("decision", "decision.json", '{"a": 1}')
    assert store.read_document("decision", "decision.json") == b'{"a": 1}'
    assert proxy.injected("reset_after", "PUT") == 4


def test_unreachable_store_fails_in_bounded_time_naming_the_bucket(faulty, monkeypatch, caplog):
    proxy, bucket = faulty
    monkeypatch.setenv("S3_FAULT_SECRET", "do-not-print-this-secret-value")
    store = RunStore(StoreConfig(root=f"s3://{bucket}/prefix", endpoint_url=proxy.endpoint, max_attempts=3,
                                 access_key_id_env="AWS_ACCESS_KEY_ID", secret_access_key_env="S3_FAULT_SECRET",
                                 connect_timeout_s=1.0, read_timeout_s=2.0), "run-1")
    with proxy.unreachable():
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.write_shard("scores", "s-000", _frame(0))
        took = time.monotonic() - started
    assert info.value.exit_code == 4
    assert f"s3://{bucket}/prefix/runs/run-1/scores" in str(info.value) and "cannot reach" in str(info.value)
    assert "do-not-print-this-secret-value" not in str(info.value) + caplog.text
    # 3 attempts per call, at most S3FS_CALLS calls, each attempt's request sent at most twice (aiohttp resends a
    # request once when its connection drops before any answer); jittered backoff of at most 1 + 2 s per call.
    assert proxy.injected("down") <= 2 * S3FS_CALLS * 3 and took < 20, (dict(proxy.counts), took)
    # Back up: the same write goes through, once.
    assert store.write_shard("scores", "s-000", _frame(0)) is True and store.count_rows("scores") == 4


def test_store_that_keeps_throttling_exits_4_naming_the_bucket(faulty):
    proxy, bucket = faulty
    store = _store(proxy, bucket, max_attempts=2)
    proxy.configure(rate=1.0, kinds=("slowdown",), methods=("PUT",))
    with pytest.raises(StoreError) as info:
        store.write_shard("scores", "s-000", _frame(0))
    assert info.value.exit_code == 4 and f"s3://{bucket}/prefix/runs/run-1/scores/" in str(info.value)
    assert "503 SlowDown" in str(info.value) and "through every retry" in str(info.value)
    assert proxy.injected("slowdown", "PUT") == 2 * S3FS_CALLS  # s3fs repeats a throttled call once
    proxy.configure(rate=0.0)
    assert store.write_shard("scores", "s-000", _frame(0)) is True and store.count_rows("scores") == 4


# -- a whole run behind the proxy ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("s3faults")
    raw = pipeline_scale_module().generate(N, work / "inputs", labels_per_candidate=N)
    raw["execution"].update(shard_rows=SHARD_ROWS, num_cpus=2)
    raw["decision"].update(draws=50, tune=50, chains=1)
    return work, raw


@pytest.fixture(scope="module")
def ray_local(moto_server):
    """Ray as run_pipeline starts it, kept for the module; after the moto server, whose credentials (env vars) the
    Ray workers inherit."""
    import ray

    started_here = not ray.is_initialized()
    yield
    if started_here:
        ray.shutdown()


def _run_config(raw, proxy, bucket, run_id):
    from jobs.config import parse_config

    store = {"root": f"s3://{bucket}/baton", "endpoint_url": proxy.endpoint, **FAST,
             "access_key_id_env": "AWS_ACCESS_KEY_ID", "secret_access_key_env": "AWS_SECRET_ACCESS_KEY"}
    return parse_config({**raw, "run_id": run_id, "store": store}, "test config")


def _assert_exactly_once(store, cfg, left: dict[str, list[str]] | None = None) -> None:
    """Every request once in every table, every commit readable, and no data file without a commit except those in
    ``left`` (table -> data files a killed run wrote before its commit could land)."""
    assert_exactly_once(store, cfg, N)
    for table in ("traffic", "responses", "scores"):
        assert store.verify(table) == [] and sorted(store.garbage(table)) == sorted((left or {}).get(table, [])), table


@pytest.mark.slow  # a whole run (Ray, PyMC) through the faults: ~110 s on 2 busy cores
def test_pipeline_run_through_faults_is_exactly_once(faulty, inputs, ray_local):
    from jobs.migrate import run_pipeline

    proxy, bucket = faulty
    work, raw = inputs
    cfg = _run_config(raw, proxy, bucket, "faulty")
    store = RunStore(cfg.store, cfg.run_id)
    proxy.configure(rate=0.15, delay_s=0.3, seed=3)
    # Besides the random faults, surely some lost answers to exclusive creates: the lease, two shard commits.
    proxy.script("reset_after", "PUT", "/_lease/lease-")
    proxy.script("reset_after", "PUT", "/responses/_commits/", times=2)
    decision = run_pipeline(cfg, progress=False)
    proxy.configure(rate=0.0)
    assert set(decision.verdicts) == {c.name for c in cfg.candidates}
    _assert_exactly_once(store, cfg)
    assert json.loads(store.read_document("decision", "decision.json"))
    assert proxy.injected() > 20 and proxy.injected("reset_after", "PUT") >= 3, dict(proxy.counts)


@pytest.mark.slow  # two runs up to scoring (Ray), the first waiting out its retries: ~90 s
def test_run_meets_an_outage_exits_4_then_resumes(faulty, inputs, ray_local, tmp_path, capsys):
    """S3 goes away right after the first responses shard is committed: `baton run` exits 4 naming the bucket;
    when S3 is back, the same command finishes without redoing what was committed."""
    import yaml

    from jobs.cli import main as cli_main

    proxy, bucket = faulty
    work, raw = inputs
    # The failed run cannot release its lease while S3 is down: the rerun waits out its ttl (short here).
    raw = {**raw, "execution": {**raw["execution"], "lease_ttl_s": 4.0, "lease_wait_s": 30.0}}
    cfg = _run_config(raw, proxy, bucket, "outage")
    store = RunStore(cfg.store, cfg.run_id)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    proxy.script("down_after", "PUT", "/responses/_commits/")
    code = cli_main(["run", "--config", str(path), "--no-progress", "--no-labels"])
    took = time.monotonic() - proxy.down_since  # from the outage to the exit
    err = capsys.readouterr().err
    assert code == 4, err
    assert f"s3://{bucket}/baton" in err and "cannot reach the store endpoint" in err and "Traceback" not in err, err
    print(err.strip().splitlines()[-1], f"({took:.1f} s)")
    assert took < 90, took
    proxy.up()
    before = {table: store.commits(table) for table in ("traffic", "responses")}
    assert before["traffic"] and before["responses"]  # the outage came mid-run
    # A shard whose data file was written just before the outage, with its commit refused, leaves that file
    # behind (a crashed writer's garbage, as the store documents); the rerun must add none of its own.
    left = {table: store.garbage(table) for table in ("traffic", "responses", "scores")}
    print("data files the outage left uncommitted:", {t: len(n) for t, n in left.items()})
    assert cli_main(["run", "--config", str(path), "--no-progress", "--no-labels"]) == 0
    for table, records in before.items():
        after = store.commits(table)
        for shard, rec in records.items():
            assert after[shard]["file"] == rec["file"], (table, shard)  # committed before the outage: not redone
    _assert_exactly_once(store, cfg, left)
