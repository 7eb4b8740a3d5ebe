"""jobs.compact.read_scores_compact: the scores table as compact categoricals, equal to the plain read, and a
filtered read that keeps in its dictionaries only the names of the rows it kept."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.compact import read_scores_compact
from jobs.config import StoreConfig
from jobs.store import RunStore


def _store(tmp_path) -> RunStore:
    store = RunStore(StoreConfig(root=str(tmp_path / "store")), "compact")
    rng = np.random.default_rng(0)
    for k in range(3):
        ids = [f"r{k}-{i}" for i in range(200)]
        rows = [pd.DataFrame({"request_id": ids, "model": model, "metric": metric,
                              "value": rng.normal(size=200)})
                for model in ("inc", "cand") for metric in ("check.length_chars", "judge.quality")]
        # code-task rows on a few requests of the middle shard only
        rows.append(pd.DataFrame({"request_id": ids[:5], "model": "cand", "metric": "exec.pass",
                                  "value": [1.0, 0.0, np.nan, 1.0, 1.0]}))
        store.write_shard("scores", f"scores-{k:06d}", pd.concat(rows[: 4 + (k == 1)], ignore_index=True))
    return store


def test_compact_read_equals_the_plain_read(tmp_path):
    store = _store(tmp_path)
    plain = store.read_table("scores")
    got = read_scores_compact(store)
    assert len(got) == len(plain) == 3 * 800 + 5
    for c in ("request_id", "model", "metric"):
        assert isinstance(got[c].dtype, pd.CategoricalDtype)
        assert (got[c].astype(str).to_numpy() == plain[c].astype(str).to_numpy()).all()
    np.testing.assert_array_equal(got["value"].to_numpy(), plain["value"].to_numpy(dtype=np.float32))


def test_a_filtered_read_keeps_only_the_kept_rows_names(tmp_path):
    store = _store(tmp_path)
    got = read_scores_compact(store, keep_metric=lambda m: m.startswith("exec."))
    assert len(got) == 5 and set(got["metric"].astype(str)) == {"exec.pass"}
    assert list(got["request_id"].astype(str)) == [f"r1-{i}" for i in range(5)]
    # the dictionaries hold the kept rows' names, not every request id of every shard read (600 here)
    assert len(got["request_id"].cat.categories) == 5
    assert list(got["model"].cat.categories) == ["cand"] and list(got["metric"].cat.categories) == ["exec.pass"]
    assert np.isnan(got["value"].to_numpy()[2])
