"""The sample stage: deterministic hash sample, streaming validation, shards, quarantine, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.config import SampleConfig, parse_config
from jobs.errors import ContractError
from jobs.sample import run_sample, select, uniform_hash
from jobs.store import RunStore


def _cfg(tmp_path, traffic_path, **sample):
    return parse_config({
        "run_id": "s1", "store": {"root": str(tmp_path / "store")},
        "traffic": {"path": str(traffic_path), "segments": ["region"], "sample": sample},
        "incumbent": {"name": "inc"},
        "candidates": [{"name": "c", "kind": "recorded", "path": "x.jsonl"}],
        "decision": {"dimensions": [{"name": "q", "kind": "pairwise"}]},
        "execution": {"shard_rows": 7},
    })


def _traffic(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)],
        "prompt": [f"question {i}" for i in range(n)],
        "response": [f"answer {i}" for i in range(n)],
        "region": np.where(np.arange(n) % 4 == 0, "eu", "us"),
    })


def test_uniform_hash_is_stable_and_uniform():
    ids = pd.Series([f"id{i}" for i in range(20000)])
    u = uniform_hash(ids, 7)
    assert np.array_equal(u, uniform_hash(ids, 7))
    assert not np.array_equal(u, uniform_hash(ids, 8))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    # Inclusion does not depend on the other ids present.
    assert uniform_hash(pd.Series(["id5"]), 7)[0] == u[5]


def test_stratified_n_allocates_proportionally():
    ids = pd.Series([f"r{i}" for i in range(1000)])
    strata = pd.Series(np.where(np.arange(1000) < 200, "a", "b"))
    mask, prob = select(ids, strata, SampleConfig(n=100, stratify_by=["x"]))
    assert mask.sum() == 100
    assert mask[:200].sum() == 20 and mask[200:].sum() == 80
    assert np.allclose(prob[:200], 0.1) and np.allclose(prob[200:], 0.1)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_sample_stage_shards_and_resumes(tmp_path, fmt, monkeypatch):
    import jobs.sample as sample_mod

    monkeypatch.setattr(sample_mod, "CHUNK_ROWS", 16)  # several chunks: cross-chunk duplicates are caught
    df = _traffic(50)
    df.loc[40, "request_id"] = "r3"  # duplicate in a later chunk
    df.loc[10, "prompt"] = ""  # empty prompt
    df.loc[20, "request_id"] = None  # no id: quarantined, and left out of the duplicate search
    path = tmp_path / f"traffic.{fmt}"
    df.to_parquet(path) if fmt == "parquet" else df.to_json(path, orient="records", lines=True)
    cfg = _cfg(tmp_path, path)
    store = RunStore(cfg.store, cfg.run_id)
    stats = run_sample(cfg, store)
    assert stats["rows"] == 47 and stats["quarantined"] == 3 and stats["shards"] == 7
    table = store.read_table("traffic")
    assert table["request_id"].is_unique and len(table) == 47
    assert sorted(store.commits("traffic")) == [f"traffic-{i:06d}" for i in range(7)]
    q = store.read_table("quarantine").set_index("row")
    assert q.loc[40, "reason"] == "duplicate request_id 'r3' (first at row 3)"
    assert q.loc[10, "field"] == "prompt" and q.loc[20, "field"] == "request_id"
    assert (table["inclusion_prob"] == 1.0).all()
    # A rerun is a no-op: no new shard, no duplicated row.
    run_sample(cfg, store)
    assert store.count_rows("traffic") == 47


def test_sample_fraction_and_missing_stratum_column(tmp_path):
    path = tmp_path / "t.parquet"
    _traffic(400).to_parquet(path)
    cfg = _cfg(tmp_path, path, fraction=0.25, seed=3)
    store = RunStore(cfg.store, cfg.run_id)
    stats = run_sample(cfg, store)
    assert 60 < stats["rows"] < 140
    # The recorded inclusion probability is the realised sampling fraction.
    assert np.allclose(store.read_table("traffic")["inclusion_prob"], stats["rows"] / 400)
    bad = _cfg(tmp_path / "b", path, n=10, stratify_by=["intent"])
    with pytest.raises(ContractError, match="traffic.sample.stratify_by names column 'intent', which the traffic table lacks"):
        run_sample(bad, RunStore(bad.store, bad.run_id))


def test_non_utf8_and_broken_json_lines_are_quarantined_with_their_line_numbers(tmp_path, monkeypatch):
    import jobs.sample as sample_mod

    monkeypatch.setattr(sample_mod, "CHUNK_ROWS", 16)  # the bad lines fall in a later chunk than the first
    lines = _traffic(40).to_json(orient="records", lines=True).encode().splitlines()
    lines[20] = b'{"request_id": "r20", "prompt": "caf\xe9 in latin-1", "region": "eu"}'  # not UTF-8
    lines[33] = b'{"request_id": "r33", "prompt": '  # truncated
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = _cfg(tmp_path, path)
    store = RunStore(cfg.store, cfg.run_id)
    stats = run_sample(cfg, store)
    assert stats["rows_in"] == 40 and stats["rows"] == 38 and stats["quarantined"] == 2
    assert "r20" not in set(store.read_table("traffic")["request_id"])
    q = store.read_table("quarantine").set_index("row")
    assert q.loc[20, "reason"] == "line 21: not UTF-8 (byte 0xe9 at column 37)" and q.loc[20, "field"] == "line"
    assert "caf\\xe9" in q.loc[20, "raw"]
    assert q.loc[33, "reason"] == "line 34: not valid JSON (Expecting value at column 33)"


def test_non_utf8_csv_names_file_and_line(tmp_path):
    from jobs.contracts import read_table_file

    path = tmp_path / "traffic.csv"
    path.write_bytes(b"request_id,prompt\nr1,hello\nr2,caf\xe9\n")
    with pytest.raises(ContractError, match=r"traffic.csv: line 3 is not UTF-8 \(byte 0xe9 at column 7\)"):
        read_table_file(str(path))


def test_a_hash_collision_is_not_taken_for_a_duplicate(tmp_path, monkeypatch):
    """Duplicates are found by a 64-bit hash of the id (the driver holds no id strings); two different ids with the
    same hash are both kept, a true duplicate is still quarantined."""
    import jobs.sample as sample_mod

    real = pd.util.hash_array

    def colliding(values, *a, **k):  # 'r30' hashes like 'r7'
        vals = np.asarray(values, dtype=object)
        return real(np.where(vals == "r30", "r7", vals).astype(object), *a, **k)

    monkeypatch.setattr(sample_mod, "CHUNK_ROWS", 16)
    monkeypatch.setattr(sample_mod.pd.util, "hash_array", colliding)
    df = _traffic(50)
    df.loc[40, "request_id"] = "r3"
    path = tmp_path / "traffic.parquet"
    df.to_parquet(path)
    cfg = _cfg(tmp_path, path)
    stats = run_sample(cfg, RunStore(cfg.store, cfg.run_id))
    assert stats["rows"] == 49 and stats["quarantined"] == 1
    table = RunStore(cfg.store, cfg.run_id).read_table("traffic")
    assert {"r7", "r30"} <= set(table["request_id"])
