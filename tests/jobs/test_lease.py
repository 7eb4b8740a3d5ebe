"""The run lease on a local folder and on a real S3 API (moto server on loopback): one holder at a time, a second
driver exits 2 naming the holder, a killed driver's lease is taken over once its heartbeat is stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from jobs.cli import main as cli_main
from jobs.lease import Lease, LeaseHeld, LeaseLost
from jobs.store import RunStore
from tests.support.fixtures import run_config, traffic_frame

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _race(store: RunStore, n: int, **lease_kw) -> tuple[list[Lease], list[BaseException]]:
    """n drivers try to take the lease at the same instant."""
    barrier = threading.Barrier(n)
    won: list[Lease] = []
    lost: list[BaseException] = []

    def contend() -> None:
        lease = store.lease(**lease_kw)
        barrier.wait()
        try:
            won.append(lease.acquire(0))
        except LeaseHeld as exc:
            lost.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return won, lost


def test_racing_drivers_one_holder_then_released_lease_is_free(store):
    won, lost = _race(store, 6, ttl_s=30)
    assert len(won) == 1 and len(lost) == 5
    assert f"pid {os.getpid()}" in str(lost[0]) and "is in use by another driver" in str(lost[0])
    won[0].release()
    again = store.lease(ttl_s=30).acquire(0)
    assert again.took_over is None  # a released lease is free, not stale
    again.release()


def test_stale_lease_is_taken_over_by_exactly_one_and_the_old_holder_stops(store):
    # The old holder's heartbeat comes too late (3 s > ttl 1 s): as for a driver stalled or killed.
    old = store.lease(ttl_s=1, heartbeat_s=3).acquire(0)
    with pytest.raises(LeaseHeld):
        store.lease(ttl_s=30).acquire(0)
    time.sleep(1.2)
    won, lost = _race(store, 5, ttl_s=30)
    assert len(won) == 1 and len(lost) == 4
    assert won[0].took_over["owner"] == old.owner
    deadline = time.time() + 15
    while old.lost is None and time.time() < deadline:
        time.sleep(0.1)
    with pytest.raises(LeaseLost, match="taken over by another driver"):
        old.check()
    old.release()  # a lost lease is not released over the new holder's
    with pytest.raises(LeaseHeld):
        store.lease(ttl_s=30).acquire(0)
    won[0].release()


def test_heartbeat_keeps_the_lease_and_a_waiter_gets_it_when_released(store):
    holder = store.lease(ttl_s=2, heartbeat_s=0.3).acquire(0)
    time.sleep(3)  # past the ttl: only the heartbeat keeps it
    with pytest.raises(LeaseHeld):
        store.lease(ttl_s=30).acquire(0)
    threading.Timer(1.0, holder.release).start()
    started = time.monotonic()
    waiter = store.lease(ttl_s=30).acquire(wait_s=20, poll_s=0.2)
    assert 0.5 < time.monotonic() - started < 15 and waiter.took_over is None
    waiter.release()


def test_a_waiter_in_the_same_process_never_takes_over_a_lease_being_released(store):
    """CI once saw a same-process waiter take over while the holder was releasing: the holder left the active set
    before its released record was written, so for that moment the lease read as this process's ended one."""
    holder = store.lease(ttl_s=30, heartbeat_s=0.3).acquire(0)
    stop = holder.stop_heartbeat

    def slow_stop() -> None:  # widen the window between leaving the heartbeat and writing "released"
        stop()
        time.sleep(1.5)

    holder.stop_heartbeat = slow_stop
    threading.Timer(0.5, holder.release).start()
    waiter = store.lease(ttl_s=30).acquire(wait_s=20, poll_s=0.05)
    assert waiter.took_over is None
    waiter.release()


def test_killed_driver_lease_is_taken_over_after_it_expires(store):
    code = ("import sys, time, pickle; store = pickle.loads(bytes.fromhex(sys.argv[1])); "
            "store.lease(ttl_s=2, heartbeat_s=0.5).acquire(0); print('held', flush=True); time.sleep(120)")
    import pickle

    proc = subprocess.Popen([sys.executable, "-c", code, pickle.dumps(store).hex()], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"):
            store.lease(ttl_s=30).acquire(0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lease = store.lease(ttl_s=30).acquire(wait_s=20, poll_s=0.2)
        assert lease.took_over["pid"] == proc.pid
        lease.release()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store):
    # A driver that ended without releasing (crashed, or the store was down when it tried): its lease has 300 s left.
    code = ("import os, sys, pickle; store = pickle.loads(bytes.fromhex(sys.argv[1])); "
            "store.lease(ttl_s=300, heartbeat_s=100).acquire(0); print('held', flush=True); os._exit(0)")
    import pickle

    proc = subprocess.Popen([sys.executable, "-c", code, pickle.dumps(store).hex()], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.wait(30)
    started = time.monotonic()
    lease = store.lease(ttl_s=30).acquire(0)  # no wait: the old holder's process is gone
    assert time.monotonic() - started < 10 and lease.took_over["pid"] == proc.pid
    lease.release()


def test_this_process_reruns_after_a_release_the_store_refused(store, monkeypatch):
    first = store.lease(ttl_s=300).acquire(0)
    with pytest.raises(LeaseHeld):  # while it is held, this process's next driver must wait like any other
        store.lease(ttl_s=30).acquire(0)
    real = store._write_bytes
    monkeypatch.setattr(store, "_write_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError("store unreachable")))
    first.release()  # the release cannot be written: the record still says held for ~300 s
    monkeypatch.setattr(store, "_write_bytes", real)
    again = store.lease(ttl_s=30).acquire(0)
    assert again.took_over["owner"] == first.owner
    again.release()


def test_second_run_and_replay_exit_2_naming_the_holder(store, tmp_path, capsys, cli_logging):
    cfg = run_config(str(tmp_path), "run-1", [{"kind": "recorded", "name": "shadow", "path": str(tmp_path / "x.parquet")}])
    cfg["store"] = store.cfg.model_dump(exclude_none=True)
    cfg["labels"] = {"mode": "none"}
    # inputs that pass `baton run`'s checks before compute, so what refuses the run is the lease
    frame = traffic_frame(4)
    frame["region"] = "eu"
    frame.to_parquet(cfg["traffic"]["path"])
    frame[["request_id"]].assign(response="a").to_parquet(tmp_path / "x.parquet")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    holder = store.lease(ttl_s=30).acquire(0)
    try:
        for command in ("run", "replay"):
            assert cli_main([command, "--config", str(path), "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert "run run-1 is in use by another driver" in err
            assert f"pid {os.getpid()}" in err and "host " in err and "started " in err and "expires " in err
    finally:
        holder.release()
    # Nothing of the run was started by the refused drivers.
    assert store.commits("traffic") == {} and store.manifest() == {}
