"""Nightly job: one partition per night, its own run, and exactly one history row per candidate and dimension."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.nightly import night_config, read_history, run_night
from jobs.store import RunStore

pytestmark = pytest.mark.slow
CANDS = ("cand-a", "cand-b")


def _night(root, day: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"{day}-{i:03d}" for i in range(n)]
    folder = root / "traffic" / f"date={day}"
    folder.mkdir(parents=True)
    pd.DataFrame({"request_id": ids, "prompt": [f"q {i}" for i in range(n)], "response": ["old"] * n,
                  "intent": rng.choice(["faq", "chat"], n)}).to_json(folder / "part-0.jsonl", orient="records", lines=True)
    rec, scores, labels = [], [], []
    for c, p in zip(CANDS, (0.7, 0.4)):
        truth = rng.random(n) < p
        judge = np.where(rng.random(n) < 0.85, truth, ~truth).astype(float)
        rec += [{"request_id": r, "model": c, "response": f"new {c}"} for r in ids]
        scores += [{"request_id": r, "model": c, "metric": "judge.pairwise.quality.ab", "value": v} for r, v in zip(ids, judge)]
        labels += [{"request_id": r, "model": c, "dimension": "quality", "value": float(t)}
                   for r, t in list(zip(ids, truth))[:30]]
    pd.DataFrame(rec).to_json(folder.parent.parent / f"recorded-{day}.jsonl", orient="records", lines=True)
    pd.DataFrame(scores).to_csv(folder.parent.parent / f"scores-{day}.csv", index=False)
    pd.DataFrame(labels).to_csv(folder.parent.parent / f"labels-{day}.csv", index=False)


def _config(root, day: str):
    raw = {
        "run_id": "nightly", "store": {"root": str(root / "store")},
        "traffic": {"path": str(root / "traffic"), "segments": ["intent"]},
        "incumbent": {"name": "old"},
        "candidates": [{"name": c, "kind": "recorded", "path": str(root / f"recorded-{day}.jsonl"), "model_column": "model"}
                       for c in CANDS],
        "scoring": {"embeddings": {"enabled": False}},
        "recorded_scores": [str(root / f"scores-{day}.csv")],
        "labels": {"path": str(root / f"labels-{day}.csv")},
        "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}], "draws": 200, "tune": 200},
        "execution": {"shard_rows": 50, "num_cpus": 2},
    }
    path = root / f"nightly-{day}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(str(path))


def test_night_config_checks_the_date(tmp_path):
    _night(tmp_path, "2026-11-23", 5, 0)
    cfg = _config(tmp_path, "2026-11-23")
    night = night_config(cfg, "2026-11-23")
    assert night.run_id == "nightly-2026-11-23" and night.traffic.path.endswith("/traffic/date=2026-11-23/")
    with pytest.raises(ConfigError, match="--date: expected YYYY-MM-DD"):
        night_config(cfg, "23/11/2026")
    with pytest.raises(ConfigError, match="is not a calendar date"):
        night_config(cfg, "2026-02-30")


def test_rerun_replaces_the_nights_rows_and_a_new_night_adds_its_own(tmp_path):
    import ray

    for day, seed in (("2026-11-23", 1), ("2026-11-24", 2)):
        _night(tmp_path, day, 120, seed)
    try:
        run_night(_config(tmp_path, "2026-11-23"), "2026-11-23", progress=False)
        store = RunStore(_config(tmp_path, "2026-11-23").store, "nightly-2026-11-23")
        first = read_history(store)
        assert len(first) == 2 and set(first["candidate"]) == set(CANDS)
        run_night(_config(tmp_path, "2026-11-23"), "2026-11-23", progress=False)  # the same night again
        again = read_history(store)
        assert len(again) == 2
        assert again.groupby(["date", "candidate", "dimension"]).size().max() == 1
        run_night(_config(tmp_path, "2026-11-24"), "2026-11-24", progress=False)
        both = read_history(store)
    finally:
        ray.shutdown()
    assert len(both) == 4
    assert both.groupby(["candidate", "dimension"]).size().to_dict() == {("cand-a", "quality"): 2, ("cand-b", "quality"): 2}
    assert sorted(both["date"].unique()) == ["2026-11-23", "2026-11-24"]
    a = both[both["candidate"] == "cand-a"]
    assert (a["estimate"] > 0.5).all()  # cand-a wins 70% on both nights
    assert "judge.pairwise.quality.ab" in a["candidate_metric_means"].iat[0]


def test_config_fail_unless_migrate_gates_the_night(tmp_path, capsys):
    """`decision.fail_unless_migrate: true` in the config gates a nightly run as it gates `baton run` (exit 3):
    cand-b wins 40% of the time, so it is not migrated."""
    import ray

    from jobs.cli import main

    day = "2026-11-25"
    _night(tmp_path, day, 120, 3)
    _config(tmp_path, day)
    path = tmp_path / f"nightly-{day}.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["decision"]["fail_unless_migrate"] = True
    path.write_text(yaml.safe_dump(raw))
    try:
        assert main(["nightly", "--config", str(path), "--date", day, "--no-progress"]) == 3
    finally:
        ray.shutdown()
    assert "history: 2 row(s)" in capsys.readouterr().out
