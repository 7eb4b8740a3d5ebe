"""Helpers shared by the engine and replay tests (imported by their conftest/test modules)."""

from __future__ import annotations

import contextlib
import os
import socket

import pandas as pd


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: all sockets are held open until every port is chosen (one at a time, the OS may
    hand out the same just-released port twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(contextlib.closing(socket.socket())) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def start_local_ray(num_cpus: int = 2) -> None:
    """A local Ray cluster of this test module (stopped with ray.shutdown(), never `ray stop`)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", configure_logging=False)


def traffic_frame(n: int, prefix: str = "r", multi_turn_every: int = 0, words: int = 8) -> pd.DataFrame:
    """n requests; every ``multi_turn_every``-th one is a three-turn conversation ending with a user turn."""
    rows = []
    for i in range(n):
        text = " ".join(["please", "explain", "the", "replay", "number", str(i)] + ["detail"] * max(0, words - 6))
        msgs = [{"role": "user", "content": text}]
        if multi_turn_every and i % multi_turn_every == 0:
            msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"first question {i}"},
                    {"role": "assistant", "content": f"first answer {i}"}, {"role": "user", "content": text}]
        rows.append({"request_id": f"{prefix}{i:05d}", "messages": msgs, "response": f"incumbent {i}",
                     "reference": None, "region": "eu" if i % 2 else "us"})
    return pd.DataFrame(rows)


def write_traffic(store, df: pd.DataFrame, shard_rows: int) -> list[str]:
    """Commit a traffic table as shards traffic-000000, ... (what the sampling stage does)."""
    shards = []
    for k, start in enumerate(range(0, len(df), shard_rows)):
        sid = f"traffic-{k:06d}"
        store.write_shard("traffic", sid, df.iloc[start:start + shard_rows].reset_index(drop=True))
        shards.append(sid)
    return shards


def run_config(root: str, run_id: str, candidates: list[dict], **execution) -> dict:
    """A minimal valid run config (as a dict) for replay tests."""
    return {
        "run_id": run_id,
        "store": {"root": root},
        "traffic": {"path": os.path.join(root, "unused-traffic.parquet"), "segments": ["region"]},
        "incumbent": {"name": "incumbent"},
        "candidates": candidates,
        "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]},
        "execution": execution,
    }


def pipeline_scale_module():
    """benchmarks/pipeline_scale.py as a module (its `generate` makes the inputs of the pipeline tests)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline_scale.py"
    spec = importlib.util.spec_from_file_location("pipeline_scale", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def assert_exactly_once(store, cfg, n: int) -> None:
    """Every table of a run of ``n`` requests holds every request id exactly once (per model, per metric where the
    table has those); ``cfg`` is the run's config."""
    traffic = store.read_table("traffic")
    ids = set(traffic["request_id"])
    assert len(ids) == n and traffic["request_id"].is_unique
    responses = store.read_table("responses")
    for cand in cfg.candidates:
        got = responses.loc[responses["model"] == cand.name, "request_id"]
        assert got.is_unique and set(got) == ids, cand.name
    scores = store.read_table("scores")
    assert not scores.duplicated(["request_id", "model", "metric"]).any()
    for (model, metric), grp in scores.groupby(["model", "metric"]):
        assert set(grp["request_id"]) <= ids, (model, metric)
    for model in [cfg.incumbent.name, *(c.name for c in cfg.candidates)]:
        checks = scores[(scores["model"] == model) & (scores["metric"] == "check.length_chars")]
        assert set(checks["request_id"]) == ids, model
    quarantine = store.read_table("quarantine")
    if len(quarantine):
        assert not quarantine.duplicated(["source", "row", "request_id", "field"]).any()
