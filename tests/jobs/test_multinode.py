"""Baton on a Ray cluster of several nodes (one machine, all on 127.0.0.1), with whole worker nodes dying.

A head node without the worker resource and worker nodes that declare it (``ray.cluster_utils.Cluster``: each node
its own raylet, object store and worker processes). ``execution.worker_resources`` keeps the replay and scoring
actors and the provider's rate limiter on the workers; ``Cluster.remove_node(node, allow_graceful=False)`` SIGKILLs
a node's raylet and every process on it, as a lost machine would. The engines are the openai engine against the
loopback server (tests/support/openai_server.py), so the cluster does little but schedule and recover.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from unittest import mock

import psutil
import pytest

from jobs import replay as replay_stage
from jobs import score as score_stage
from jobs.config import parse_config
from jobs.store import RunStore
from tests.support.fixtures import run_config, traffic_frame, write_traffic
from tests.support.judge_script import scripted_judge
from tests.support.openai_server import OpenAIServer, echo_responder

pytestmark = pytest.mark.slow

RESOURCE = "baton_worker"
WORKER_NODE = {"num_cpus": 1, "resources": {RESOURCE: 1000.0}, "node_ip_address": "127.0.0.1",
               "object_store_memory": 100 * 1024 ** 2}
# A killed raylet is declared dead after a few missed health checks: ~1.5 s here instead of Ray's ~15 s default.
FAST_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
              "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    """A head (1 CPU, no worker resource) and two worker nodes; the tests kill workers and add fresh ones."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Cluster would write its address to /tmp/ray/ray_current_cluster, where every other process's plain
    # ray.init() on this shared machine would find and join it: keep it to this module.
    with mock.patch.object(ray._private.utils, "write_ray_address", lambda *a, **k: None):
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": 100 * 1024 ** 2, "_system_config": FAST_DEATH})
    for _ in range(2):
        c.add_node(**WORKER_NODE)
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    # Workers whose raylet was SIGKILLed can outlive it, orphaned (ray::MapWorker processes were seen running
    # minutes after this module): note every Ray worker this process's nodes start, and end the survivors.
    ours: dict[int, psutil.Process] = {}
    done = threading.Event()

    def note_workers() -> None:
        while not done.wait(0.5):
            try:
                kids = psutil.Process().children(recursive=True)
            except psutil.Error:  # a process vanished mid-walk (nodes die here): look again, never stop looking
                continue
            for p in kids:
                if p.pid not in ours and _is_ray_worker(p):
                    ours[p.pid] = p

    watcher = threading.Thread(target=note_workers, daemon=True)
    watcher.start()
    yield c
    ray.shutdown()
    done.set()
    watcher.join(5)
    # Not Cluster.shutdown(): it would also delete the machine-wide address file another Ray may have written.
    for node in list(c.worker_nodes):
        c.remove_node(node, allow_graceful=False)
    c.remove_node(c.head_node, allow_graceful=False)
    _, alive = psutil.wait_procs(list(ours.values()), timeout=10)
    for p in alive:
        try:
            p.kill()  # psutil checks the create time: a reused pid is not killed
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def _is_ray_worker(proc) -> bool:
    try:
        return proc.name().startswith("ray::") or "default_worker.py" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _responder(messages, model):
    return scripted_judge(messages, model) if model == "judge-1" else echo_responder(messages, model)


@pytest.fixture(scope="module")
def server():
    with OpenAIServer(responder=_responder) as srv:
        yield srv


@pytest.fixture
def ran_on(monkeypatch):
    """The node id of every shard a stage ran (from the shard statistics rows run_shards returns)."""
    nodes: list[str] = []
    real = replay_stage.run_shards

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        nodes.extend(out["node_id"].dropna())
        return out

    monkeypatch.setattr(replay_stage, "run_shards", spy)
    monkeypatch.setattr(score_stage, "run_shards", spy)
    return nodes


def _candidate(srv, **kw) -> dict:
    c = {"kind": "openai", "name": "cand", "model": "test-model", "base_url": srv.base_url, "rpm": 60_000,
         "tpm": 10_000_000, "max_concurrency": 2, "num_actors": 2, "timeout_s": 5.0, "backoff_base_s": 0.05,
         "max_attempts": 8}
    c.update(kw)
    return c


def _setup(tmp_path, srv, n, shard_rows, judge=False, **cand):
    raw = run_config(str(tmp_path / "store"), "multi", [_candidate(srv, **cand)],
                     worker_resources={RESOURCE: 1})
    raw["scoring"] = {"embeddings": {"enabled": False}, "num_cpus": 0.5, "num_actors": 2}
    if judge:
        raw["scoring"]["judge"] = {"enabled": True, "engine": {
            "kind": "openai", "name": "judge", "model": "judge-1", "base_url": srv.base_url, "rpm": 60_000,
            "tpm": 10_000_000, "max_concurrency": 2, "timeout_s": 5.0, "max_attempts": 8, "backoff_base_s": 0.05},
            "dimensions": [{"name": "refusal"}]}
    cfg = parse_config(raw)
    store = RunStore(cfg.store, cfg.run_id)
    traffic = traffic_frame(n)
    write_traffic(store, traffic, shard_rows)
    return cfg, store, traffic


class CommitWatch:
    """Polls a table's commit records while a stage runs: every data file each shard was ever committed with."""

    def __init__(self, store: RunStore, table: str):
        self.store, self.table = store, table
        self.files: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._seen()
            time.sleep(0.1)

    def _seen(self) -> None:
        for shard, rec in self.store.commits(self.table).items():
            self.files.setdefault(shard, set()).add(rec["file"])

    def __enter__(self) -> "CommitWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._seen()

    def committed_twice(self) -> dict[str, set[str]]:
        return {s: f for s, f in self.files.items() if len(f) > 1}


def _node_of(node_id: str, cluster):
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


def _actor_nodes(class_part: str) -> set[str]:
    import ray

    return {a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if class_part in a.get("ActorClassName", "") and a["State"] == "ALIVE"}


def _kill_when(cluster, thread, ready, node_id_of, timeout_s=60) -> str:
    """Once ``ready()``, SIGKILL the worker node ``node_id_of()`` names (while the stage's ``thread`` still runs)
    and add a fresh worker in its place."""
    deadline = time.time() + timeout_s
    while not ready():
        assert time.time() < deadline, "the stage never reached the point where a node was to be killed"
        time.sleep(0.05)
    victim = node_id_of()
    assert thread.is_alive(), "the stage finished before the node could be killed"
    cluster.remove_node(_node_of(victim, cluster), allow_graceful=False)
    cluster.add_node(**WORKER_NODE)
    return victim


def _run_in_thread(fn, *args):
    out: dict = {}

    def target():
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def _exactly_once(store, traffic, table, model, metric=None):
    df = store.read_table(table)
    df = df[df["model"] == model]
    if metric is not None:
        df = df[df["metric"] == metric]
    assert sorted(df["request_id"]) == sorted(traffic["request_id"]), f"{table}/{model}: not every id exactly once"


def test_actors_stay_on_workers_and_a_node_killed_mid_replay_and_mid_scoring_loses_nothing(
        cluster, server, ran_on, tmp_path):
    head = cluster.head_node.node_id
    server.reset(rpm=None, tpm=None, latency_s=0.25)
    cfg, store, traffic = _setup(tmp_path, server, 48, 4, judge=True)
    shards = sorted(store.commits("traffic"))

    # Replay: a worker node running a replay actor dies once 3 of the 12 shards are committed.
    with CommitWatch(store, "responses") as watch:
        thread, out = _run_in_thread(replay_stage.run, cfg, store, False)
        victim = _kill_when(cluster, thread, lambda: len(store.commits("responses")) >= 3,
                            lambda: sorted(_actor_nodes("MapWorker") - {head})[0])
        thread.join(180)
    assert not thread.is_alive()
    assert "error" not in out, f"replay raised after a worker node died: {out.get('error')!r}"
    assert victim != head and out["result"]["cand"]["requests"] == 48
    assert not watch.committed_twice()
    assert set(store.commits("responses")) == {f"cand-{s}" for s in shards}
    _exactly_once(store, traffic, "responses", "cand")
    assert store.read_table("responses")["error"].isna().all()
    sent = Counter(e.request_id for e in server.log)
    print(f"node killed mid-replay: {len(server.log)} requests for 48 ids ({sum(v > 1 for v in sent.values())} sent "
          f"again: in flight on the dead node)")

    # Scoring (a slow judge): a worker node running a scoring actor dies once 6 of the 24 shards are committed.
    with CommitWatch(store, "scores") as watch:
        thread, out = _run_in_thread(score_stage.run, cfg, store, False)
        _kill_when(cluster, thread, lambda: len(store.commits("scores")) >= 6,
                   lambda: sorted(_actor_nodes("MapWorker") - {head})[0])
        thread.join(180)
    assert not thread.is_alive()
    assert "error" not in out, f"scoring raised after a worker node died: {out.get('error')!r}"
    assert not watch.committed_twice()
    assert len(store.commits("scores")) == 2 * len(shards)
    for model in ("incumbent", "cand"):
        _exactly_once(store, traffic, "scores", model, "judge.abs.refusal")
        _exactly_once(store, traffic, "scores", model, "check.length_chars")

    # Every shard of both stages ran on a worker node, never on the head.
    assert ran_on and head not in set(ran_on)

    # A rerun finds everything committed: nothing is sent, nothing is committed again.
    before = {t: {s: r["file"] for s, r in store.commits(t).items()} for t in ("responses", "scores")}
    server.reset(latency_s=0.0)
    replay_stage.run(cfg, store, False)
    score_stage.run(cfg, store, False)
    assert len(server.log) == 0
    assert {t: {s: r["file"] for s, r in store.commits(t).items()} for t in ("responses", "scores")} == before


def test_limiter_restarts_on_another_worker_and_the_rate_still_holds(cluster, server, ran_on, tmp_path):
    import ray

    from inference.engines.ratelimit import limiter_name

    head = cluster.head_node.node_id
    # 5 requests a second, burst 1 s (5 requests): the run takes about 8 s. Slow enough that a request stamped up
    # to 0.2 s late by the busy server thread moves at most one request into a later window.
    rpm, n = 300, 40
    server.reset(rpm=None, tpm=None, latency_s=0.05)
    cfg, store, traffic = _setup(tmp_path, server, n, 8, provider_key="limiter-test", rpm=rpm)
    name = limiter_name("limiter-test")

    def limiter():
        a = [a for a in ray._private.state.actors().values() if a.get("Name") == name and a["State"] == "ALIVE"]
        return (a[0]["Address"]["NodeID"], a[0]["NumRestarts"]) if a else (None, 0)

    restarted = None
    with CommitWatch(store, "responses") as watch:
        thread, out = _run_in_thread(replay_stage.run, cfg, store, False)
        victim = _kill_when(cluster, thread, lambda: len(server.log) >= 20 and limiter()[0] is not None,
                            lambda: limiter()[0])
        killed_at = time.monotonic()  # the server's clock (it runs in this process)
        while thread.is_alive() and restarted is None:  # the limiter lives as long as the stage
            node, restarts = limiter()
            restarted = node if restarts >= 1 else None
            time.sleep(0.1)
        thread.join(180)
    assert not thread.is_alive()
    assert "error" not in out, f"replay raised after the limiter's node died: {out.get('error')!r}"
    assert victim != head
    assert restarted is not None and restarted not in (victim, head)
    assert not watch.committed_twice() and head not in set(ran_on)
    _exactly_once(store, traffic, "responses", "cand")
    assert store.read_table("responses")["error"].isna().all()

    # The rate the server saw: in every window, at most rpm/60 per second plus one burst (1 s of the rate).
    t = sorted(e.t for e in server.log)
    rate = rpm / 60.0
    # Windows from the second second on. In the first, each new client connection's first request pays a one-off
    # set-up after its permit (30 ms on an idle machine, up to 0.4 s on the loaded CI machine, measured with
    # send-time headers), so up to four of the start-up burst's requests reach the server late and bunch with the
    # next ones: client set-up, not the limiter; the whole-run bound below still counts them.
    second = t[0] + 1.0
    start = _worst_excess(t, rate, starts_before=second)
    worst = _worst_excess(t, rate, starts_after=second)
    after = _worst_excess(t, rate, ends_after=killed_at, starts_after=second)
    overall = (len(t) - 1) / (t[-1] - t[0])
    gap = max(b - a for a, b in zip(t, t[1:]))
    print(f"limiter restart: {len(t)} requests over {t[-1] - t[0]:.2f} s = {overall:.2f}/s (limit {rate}/s); "
          f"largest excess over rate*window in 1/2/5 s windows: {worst:.1f} requests, {after:.1f} in windows "
          f"reaching past the kill (burst allows {rate:.0f}), {start:.1f} in windows starting in the first "
          f"second; longest pause {gap:.2f} s")
    # The whole run is a window too: the first burst makes the plain mean rate exceed the limit on a short run, so
    # hold its count, like every window's, to rate * duration plus the burst.
    assert len(t) - rate * (t[-1] - t[0]) <= rate + 1, (len(t), t[-1] - t[0])
    # The documented burst is 1 s of the rate (5 requests). One request more is allowed because these are arrival
    # times stamped by a server thread in this busy process, not the limiter's permits: a request stamped late
    # lands in the next window (the permits themselves are checked exactly in test_openai_engine). Windows past
    # the kill hold 1-2 here; a restart with full buckets (broken on purpose) gave 5-6, still within one burst
    # because the restart's pause refills a provider's bucket as well: that the restarted limiter starts empty is
    # checked exactly in test_a_restarted_limiter_starts_with_empty_buckets.
    assert worst <= rate + 1 and after <= rate + 1, (worst, after)


def _worst_excess(t: list[float], rate: float, ends_after: float | None = None, starts_after: float | None = None,
                  starts_before: float | None = None) -> float:
    """The most requests any 1, 2 or 5 s window of arrival times ``t`` holds beyond ``rate * window`` (only windows
    ending after ``ends_after``, starting at or after ``starts_after``, starting before ``starts_before``)."""
    worst = 0.0
    for w in (1.0, 2.0, 5.0):
        for i, start in enumerate(t):
            if ((ends_after is not None and start + w < ends_after)
                    or (starts_after is not None and start < starts_after)
                    or (starts_before is not None and start >= starts_before)):
                continue
            worst = max(worst, sum(1 for x in t[i:] if x < start + w) - rate * w)
    return worst


def test_a_restarted_limiter_starts_with_empty_buckets(cluster):
    """Its predecessor may have spent the burst just before it died: a restart must not hand out a second one."""
    import ray

    from inference.engines.ratelimit import get_limiter, limiter_resources

    handle = get_limiter("restart-test", rpm=600, tpm=1e9, resources=limiter_resources({RESOURCE: 1}))
    assert max(ray.get([handle.reserve.remote(1) for _ in range(10)])) == 0.0  # the first burst: 10 at once
    ray.kill(handle, no_restart=False)  # the process dies; Ray restarts the actor (max_restarts=-1)
    deadline = time.time() + 30
    while ray._private.state.actors(handle._actor_id.hex())["NumRestarts"] < 1:
        assert time.time() < deadline, "the limiter was not restarted"
        time.sleep(0.05)
    waits = ray.get([handle.reserve.remote(1) for _ in range(10)])
    assert waits[-1] > 0.5  # paced from empty: the tenth waits about a second, not 0
    assert ray.get(handle.snapshot.remote()).get("restarted") == 1
    ray.kill(handle, no_restart=True)
