"""The replay stage on a real local Ray cluster: openai (loopback server), transformers (tiny model), recorded;
a killed worker actor and a killed driver lose no row and redo at most the unfinished shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from jobs.config import parse_config  # noqa: E402
from jobs.cli import main as cli_main
from jobs.replay import replay  # noqa: E402
from jobs.store import RunStore, shard_id  # noqa: E402
from tests.support.fixtures import run_config, traffic_frame, write_traffic  # noqa: E402
from tests.support.openai_server import OpenAIServer  # noqa: E402
from tests.support.tiny_model import tiny_model_path  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def server():
    srv = OpenAIServer().start()
    yield srv
    srv.stop()


def _api(srv, name="cand-api", **kw) -> dict:
    c = {"kind": "openai", "name": name, "model": "test-model", "base_url": srv.base_url, "rpm": 60_000,
         "tpm": 10_000_000, "max_concurrency": 8, "timeout_s": 1.0, "backoff_base_s": 0.05, "max_attempts": 8,
         "prices": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}
    c.update(kw)
    return c


def _setup(tmp_path, n, shard_rows, candidates, run_id="run1", **execution):
    cfg = parse_config(run_config(str(tmp_path / "store"), run_id, candidates, **execution))
    store = RunStore(cfg.store, cfg.run_id)
    traffic = traffic_frame(n, multi_turn_every=4)
    shards = write_traffic(store, traffic, shard_rows)
    return cfg, store, traffic, shards


def _responses(store, name):
    df = store.read_table("responses")
    return df[df["model"] == name]


def test_openai_replay_on_ray_with_faults_then_rerun_is_a_no_op(ray_cluster, server, tmp_path):
    server.reset(rpm=6000, tpm=1_000_000, fault_500=0.08, fault_malformed=0.05, fault_hang=0.03, hang_s=3.0, seed=3)
    cfg, store, traffic, shards = _setup(tmp_path, 120, 30, [_api(server, num_actors=2)])
    stats = replay(cfg, store, progress=False)
    out = _responses(store, "cand-api")
    assert sorted(out["request_id"]) == sorted(traffic["request_id"])  # each id exactly once
    assert out["error"].isna().all()
    assert sorted(e.request_id for e in server.successes()) == sorted(traffic["request_id"])
    s = stats["cand-api"]
    assert s["requests"] == 120 and s["ok"] == 120 and s["shards_run"] == 4 and s["shards_committed"] == 4
    assert s["attempts"] == len(server.log) and s["attempts"] > 120
    assert s["prompt_tokens"] == out["prompt_tokens"].sum() > 0
    assert s["est_cost"] == pytest.approx(s["prompt_tokens"] * 2e-6 + s["completion_tokens"] * 8e-6)
    assert store.manifest()["stages"]["replay"]["cand-api"]["requests"] == 120
    # The stage's window runs from the first shard's dispatch to the last shard's commit: it spans every request
    # the server saw, and fits in the stage's wall time (which adds the actors' start-up).
    sent = [e.t for e in server.log]
    assert max(sent) - min(sent) <= s["dispatch_to_commit_s"] <= s["wall_s"]
    # A rerun finds every shard committed: no request is sent again, totals unchanged.
    server.reset()
    again = replay(cfg, store, progress=False)["cand-api"]
    assert again["shards_run"] == 0 and again["shards_skipped"] == 4 and len(server.log) == 0
    assert again["dispatch_to_commit_s"] == 0.0
    assert again["requests"] == 120 and again["attempts"] == s["attempts"]


def test_transformers_replay_multi_turn_and_context_errors(ray_cluster, tmp_path):
    model = tiny_model_path()
    cand = {"kind": "transformers", "name": "tiny-hf", "model": model, "batch_size": 4,
            "sampling": {"max_tokens": 6, "temperature": 0.0}}
    cfg, store, traffic, shards = _setup(tmp_path, 10, 5, [cand])
    # One request far longer than the model's 512-token context: an error row, not a failed shard.
    long = traffic_frame(1, prefix="long", words=600)
    write_traffic_one = store.write_shard("traffic", "traffic-000099", long)
    assert write_traffic_one
    stats = replay(cfg, store, progress=False)["tiny-hf"]
    out = _responses(store, "tiny-hf").set_index("request_id")
    assert len(out) == 11 and stats["requests"] == 11
    assert out.loc["long00000", "error"].startswith("context_length")
    ok = out.drop(index="long00000")
    assert ok["error"].isna().all() and (ok["completion_tokens"] == 6).all()
    # The multi-turn conversation was rendered whole: its prompt is longer than the single-turn one.
    assert ok.loc["r00000", "prompt_tokens"] > ok.loc["r00001", "prompt_tokens"]
    # Greedy decoding is deterministic: the same engine outside Ray gives the same answers.
    from inference.engines import make_engine

    eng = make_engine(parse_config(run_config(str(tmp_path), "x", [cand])).candidates[0])
    direct = eng(traffic.iloc[:3][["request_id", "messages"]]).set_index("request_id")
    assert list(direct["response"]) == list(ok.loc[direct.index, "response"])


def test_recorded_candidate_is_validated_and_quarantined(ray_cluster, tmp_path):
    n = 8
    rec = pd.DataFrame({
        "request_id": [f"r{i:05d}" for i in range(n - 1)] + ["r00002", "unknown-id"],
        "response": [f"recorded {i}" for i in range(n - 1)] + ["duplicate", "stray"],
    })
    rec.loc[3, "response"] = None  # neither a response nor an error: quarantined
    path = tmp_path / "recorded.parquet"
    rec.to_parquet(path)
    cand = {"kind": "recorded", "name": "shadow", "path": str(path)}
    cfg, store, traffic, _ = _setup(tmp_path, n, 4, [cand])
    stats = replay(cfg, store, progress=False)["shadow"]
    out = _responses(store, "shadow").set_index("request_id")
    assert sorted(out.index) == sorted(traffic["request_id"])
    assert out.loc["r00002", "response"] == "recorded 2"  # the first of the duplicates
    assert out.loc["r00003", "error"].startswith("quarantined")
    assert out.loc["r00007", "error"].startswith("not_recorded")
    q = store.read_table("quarantine")
    assert set(q["request_id"]) == {"r00002", "r00003"} and len(q) == 2
    assert stats["errors"] == {"not_recorded": 1, "quarantined": 1}


def test_recorded_candidates_run_side_by_side_and_an_error_waits_for_the_others(ray_cluster, tmp_path):
    """Recorded candidates replay as concurrent Ray Data executions (jobs.replay.run): each candidate's rows land
    once, in its own shards; a candidate whose engine fails is raised only after the others have committed."""
    n = 12
    paths = {}
    for name in ("rec-a", "rec-b"):
        paths[name] = tmp_path / f"{name}.parquet"
        pd.DataFrame({"request_id": [f"r{i:05d}" for i in range(n)],
                      "response": [f"{name} says {i}" for i in range(n)]}).to_parquet(paths[name])
    cands = [{"kind": "recorded", "name": k, "path": str(v)} for k, v in paths.items()]
    cfg, store, traffic, shards = _setup(tmp_path, n, 4, cands)
    stats = replay(cfg, store, progress=False)
    for name in paths:
        out = _responses(store, name)
        assert sorted(out["request_id"]) == sorted(traffic["request_id"])  # every request exactly once
        assert (out["response"] == name + " says " + out["request_id"].str[1:].astype(int).astype(str)).all()
        assert stats[name]["shards_run"] == len(shards) and stats[name]["ok"] == n
    assert set(store.commits("responses")) == {shard_id(c, s) for c in paths for s in shards}
    again = replay(cfg, store, progress=False)  # a rerun sends nothing
    assert all(again[c]["shards_run"] == 0 for c in paths)

    broken = [*cands, {"kind": "recorded", "name": "rec-gone", "path": str(tmp_path / "gone.parquet")}]
    cfg2, store2, _, shards2 = _setup(tmp_path / "two", n, 4, broken, run_id="run2")
    with pytest.raises(Exception, match="gone.parquet"):
        replay(cfg2, store2, progress=False)
    committed = set(store2.commits("responses"))
    assert {shard_id(c, s) for c in paths for s in shards2} <= committed  # the good ones finished first
    assert not any(s.startswith("rec-gone") for s in committed)


def _worker_pids(name_part: str) -> list[int]:
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    pids = []
    for p in psutil.Process(raylet).children(recursive=True):
        try:
            if name_part in " ".join(p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def test_killed_worker_actor_loses_no_row(ray_cluster, server, tmp_path):
    server.reset(rpm=None, tpm=None, fault_500=0.0, fault_malformed=0.0, fault_hang=0.0, latency_s=0.15)
    cfg, store, traffic, shards = _setup(tmp_path, 60, 10, [_api(server, max_concurrency=4)])
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(replay(cfg, store, progress=False)))
    thread.start()
    try:
        deadline = time.time() + 60
        while len(store.commits("responses")) < 1 and time.time() < deadline:
            time.sleep(0.1)
        pids = _worker_pids("MapWorker")
        assert pids, "no Ray Data map worker found to kill"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(120)
        server.reset(latency_s=0.0)
    assert not thread.is_alive()
    out = _responses(store, "cand-api")
    assert sorted(out["request_id"]) == sorted(traffic["request_id"])  # nothing lost, nothing twice
    assert out["error"].isna().all() and len(store.commits("responses")) == 6
    assert result["cand-api"]["requests"] == 60


def test_driver_crash_then_rerun_redoes_only_unfinished_shards(ray_cluster, server, tmp_path):
    server.reset(rpm=None, tpm=None, latency_s=0.2)
    cfg, store, traffic, shards = _setup(tmp_path, 64, 8, [_api(server, max_concurrency=4)],
                                         ray_address=ray_cluster)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.replay", "--config", str(cfg_path), "--no-progress"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while len(store.commits("responses")) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, "the driver finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_at_crash = set(store.commits("responses"))
    assert 2 <= len(done_at_crash) < len(shards)
    server.reset(latency_s=0.0)
    stats = replay(cfg, store, progress=False)["cand-api"]
    unfinished = {s for s in shards if shard_id("cand-api", s) not in done_at_crash}
    unfinished_ids = set(pd.concat([traffic.iloc[int(s[-6:]) * 8:(int(s[-6:]) + 1) * 8] for s in unfinished])["request_id"])
    asked = {e.request_id for e in server.log}
    assert asked <= unfinished_ids  # committed shards were not replayed again
    assert stats["shards_run"] <= len(unfinished)
    out = _responses(store, "cand-api")
    assert sorted(out["request_id"]) == sorted(traffic["request_id"])


def test_engine_startup_failure_fails_loudly(ray_cluster, tmp_path):
    cand = {"kind": "transformers", "name": "broken", "model": str(tmp_path / "no-such-model")}
    cfg, store, _, _ = _setup(tmp_path, 4, 2, [cand])
    started = time.time()
    with pytest.raises(Exception, match="cannot load transformers model"):
        replay(cfg, store, progress=False)
    assert time.time() - started < 120
    assert store.commits("responses") == {}


def test_main_reports_bad_config_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_id: x\ncandidatez: []\n")
    assert cli_main(["replay", "--config", str(bad)]) == 2
    assert "candidatez: unknown key (did you mean 'candidates'?)" in capsys.readouterr().err


def _pipeline_config(tmp_path, server, run_id: str, n: int, **cand) -> tuple[str, pd.DataFrame]:
    """A `baton run` config on a real traffic file (sampled into shards of 10), checks-only scoring."""
    traffic = traffic_frame(n, multi_turn_every=4)
    traffic.to_parquet(tmp_path / "traffic.parquet")
    cfg = run_config(str(tmp_path / "store"), run_id, [_api(server, **cand)], shard_rows=10)
    cfg["traffic"]["path"] = str(tmp_path / "traffic.parquet")
    cfg["scoring"] = {"embeddings": {"enabled": False}}
    cfg["labels"] = {"mode": "none"}  # replay and scoring only: no decision without labels
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path), traffic


def _check_one_row_per_request_in_every_reader(cfg, store, traffic, name):
    from jobs.labels.export import units_of_run
    from jobs.score import score

    want = sorted(traffic["request_id"])
    table = _responses(store, name)
    assert sorted(table["request_id"]) == want and table["error"].isna().all()
    shards = pd.concat([df for _, df in store.iter_shards("responses")])
    assert sorted(shards.loc[shards["model"] == name, "request_id"]) == want
    one = pd.concat([store.read_shard("responses", shard_id(name, s)) for s in sorted(store.commits("traffic"))])
    assert sorted(one["request_id"]) == want
    assert store.count_rows("responses") == len(traffic)
    score(cfg, store, progress=False)
    scores = store.read_table("scores")
    scores = scores[scores["model"] == name]
    assert not scores.duplicated(["request_id", "metric"]).any()
    answered = scores[scores["metric"] == "check.length_chars"]  # a metric only an answer gets
    assert sorted(answered["request_id"]) == want  # every recovered answer was scored, once
    units = units_of_run(cfg, store, [name])
    assert sorted(units["request_id"]) == want


def test_outage_stops_after_replay_then_rerun_retries_only_failed_rows(ray_cluster, server, tmp_path, capsys, cli_logging):
    server.reset(rpm=None, tpm=None, fault_500=0.0, fault_malformed=0.0, fault_hang=0.0, latency_s=0.0, down="drop")
    # a dropped connection fails at once whatever the timeout; a generous one keeps a slow answer under CI load
    # (8 of 30 once, at 1 s) from being retried, which this test counts as paying twice
    path, traffic = _pipeline_config(tmp_path, server, "outage", 30, max_attempts=2, backoff_base_s=0.01,
                                     timeout_s=10.0)
    cfg = parse_config(yaml.safe_load(open(path)))
    store = RunStore(cfg.store, cfg.run_id)
    try:
        # Run 1: the provider is down throughout: the run stops right after replay, naming what to do.
        assert cli_main(["run", "--config", path, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "candidate 'cand-api' has no successful response: all 30 requests failed, 30 of them with " \
               "'connection'" in err
        assert "the run stops before scoring" in err and "rerun the same run id" in err and "outage" in err
        assert store.commits("scores") == {}
        first = len(server.log)
        assert first == 60 and store.manifest()["stages"]["replay"]["cand-api"]["attempts"] == 60
        # Run 2: the provider is back; only the failed rows are sent, each once, and they replace the failed ones.
        server.reset(down=None)
        assert cli_main(["replay", "--config", path, "--no-progress"]) == 0
    finally:
        server.down = None  # up again even if an assertion failed (the log is kept for the checks below)
    assert sorted(e.request_id for e in server.log) == sorted(traffic["request_id"])
    second = len(server.log)
    stats = store.manifest()["stages"]["replay"]["cand-api"]
    assert stats["attempts"] == first + second and stats["ok"] == 30 and stats["rows_recovered"] == 30
    assert [i["attempts"] for i in stats["invocations"]] == [60, 30]
    assert (_responses(store, "cand-api")["attempts"] == 3).all()  # two failed attempts, then one that answered
    _check_one_row_per_request_in_every_reader(cfg, store, traffic, "cand-api")
    # Run 3: nothing failed any more: not one request is sent again (never pay twice).
    server.reset()
    assert cli_main(["replay", "--config", path, "--no-progress"]) == 0
    assert len(server.log) == 0
    assert store.manifest()["stages"]["replay"]["cand-api"]["attempts"] == first + second


@pytest.mark.slow  # four Ray Data stages: ~45 s on the shared 2 cores
def test_partial_failures_are_retried_and_their_scores_redone(ray_cluster, server, tmp_path):
    server.reset(rpm=None, tpm=None, fault_500=0.3, fault_malformed=0.0, fault_hang=0.0, latency_s=0.0, seed=5)
    path, traffic = _pipeline_config(tmp_path, server, "partial", 40, max_attempts=1)
    cfg = parse_config(yaml.safe_load(open(path)))
    store = RunStore(cfg.store, cfg.run_id)
    from jobs.sample import run_sample
    from jobs.score import score

    run_sample(cfg, store)
    replay(cfg, store, progress=False)
    failed = set(_responses(store, "cand-api").query("error.notna()")["request_id"])
    ok_first = {e.request_id for e in server.successes()}
    assert 3 <= len(failed) < 40 and not failed & ok_first
    score(cfg, store, progress=False)
    scores = store.read_table("scores")
    answered = (scores["metric"] == "check.length_chars") & (scores["model"] == "cand-api")
    assert set(scores.loc[answered, "request_id"]) == ok_first
    # --retry-errors none: nothing is sent again.
    server.reset(fault_500=0.0)
    none = cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"retry_errors": "none"})})
    assert replay(none, store, progress=False)["cand-api"]["shards_retried"] == 0 and len(server.log) == 0
    stats = replay(cfg, store, progress=False)["cand-api"]
    assert {e.request_id for e in server.log} == failed and len(server.log) == len(failed)
    assert stats["rows_recovered"] == len(failed) and stats["ok"] == 40
    _check_one_row_per_request_in_every_reader(cfg, store, traffic, "cand-api")


def test_a_candidate_failing_on_a_non_retryable_error_names_the_fix():
    from jobs.replay import ReplayFailed, check_replayed

    cfg = parse_config(run_config("/tmp/unused", "r1", [{"kind": "recorded", "name": "c", "path": "/tmp/x.parquet"}]))
    ok = {"requests": 10, "ok": 9, "errors": {"timeout": 1}}
    check_replayed(cfg, {"good": ok})
    with pytest.raises(ReplayFailed, match=r"candidate 'c' has no successful response: all 10 requests failed, 8 of "
                                           r"them with 'auth'.*--retry-errors all") as exc:
        check_replayed(cfg, {"good": ok, "c": {"requests": 10, "ok": 0, "errors": {"auth": 8, "timeout": 2}}})
    assert exc.value.exit_code == 2


def test_recovered_incumbent_rows_withdraw_every_model_scores_of_that_shard(ray_cluster, server, tmp_path):
    """The shard task itself, in this process (its limiter is a Ray actor of the module's cluster)."""
    from inference.engines.base import error_row, response_frame
    from jobs.replay import ReplayShardTask

    server.reset(rpm=None, tpm=None, fault_500=0.0, fault_malformed=0.0, fault_hang=0.0, latency_s=0.0, down=None)
    inc = _api(server, name="inc")
    cfg, store, traffic, shards = _setup(tmp_path, 6, 6, [_api(server)])
    failed = response_frame([error_row(r, "inc", "timeout" if i % 2 else "bad_request", "x", attempts=2)
                             for i, r in enumerate(traffic["request_id"])])
    store.write_shard("responses", shard_id("inc", shards[0]), failed,
                      meta={"candidate": "inc", "traffic_shard": shards[0],
                            "stats": {"errors": '{"bad_request": 3, "timeout": 3}', "attempts": 12}})
    downstream = {("scores", shard_id("scores", m, shards[0])) for m in ("inc", "cand-api")} | {
        ("embeddings", shard_id("embeddings", "inc", shards[0])), ("quarantine", shard_id("judge", "inc", shards[0]))}
    other = ("scores", shard_id("scores", "cand-api", "traffic-000001"))
    for table, sid in downstream | {other}:
        store.write_shard(table, sid, pd.DataFrame({"request_id": ["r00000"]}))
    task = ReplayShardTask(store, inc, retry_errors="retryable", downstream=["inc", "cand-api"])
    out = task(shards[0])
    assert out["retried"] == 3 and out["recovered"] == 3
    assert {e.request_id for e in server.log} == set(traffic["request_id"][1::2])  # only the timeouts
    assert not any(store.is_committed(t, s) for t, s in downstream) and store.is_committed(*other)
    rows = store.read_shard("responses", shard_id("inc", shards[0])).set_index("request_id")
    assert rows["error"].isna().sum() == 3 and rows.loc["r00000", "error"].startswith("bad_request")
    assert list(rows.index) == list(traffic["request_id"]) and rows.loc["r00001", "attempts"] == 3
    # A rerun of the task: the bad_request rows are not retryable; nothing is sent.
    server.reset()
    assert task(shards[0]) == {"skipped": 1} and len(server.log) == 0
