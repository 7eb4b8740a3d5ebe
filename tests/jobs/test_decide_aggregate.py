"""The decide stage's estimand sums as Ray tasks over the run's shards (decision.aggregate: ray) agree with the
driver's own sums (local) to float32 precision, on a real local Ray and a local run store, for every shard
layout: the pipeline's score shards per (model, traffic shard) (one task per traffic shard), recorded score shards
that do not partition the requests (routed to groups of traffic shards), both at once, and a run without a traffic
table (hash buckets). The whole decision.json too, through jobs.decide.run with real PyMC."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibration import baselines, guards
from calibration.data import prepare
from calibration.scored import Predictors, ScoredSums, local_scored_sums
from calibration.estimands import finish, local_sums
from jobs.config import RunConfig, StoreConfig
from jobs.decide import run as decide_run
from jobs import decide_aggregate
from jobs.decide_aggregate import plan, ray_sums, sums_function
from jobs.store import RunStore, shard_id
from tests.calibration.test_aggregate_split import _params
from tests.support.fixtures import run_config
from tests.support.simulate import simulate_binary, simulate_pairwise

N_TRAFFIC_SHARDS = 3


def _write_run(root, run_id: str, t, layout: str) -> RunStore:
    store = RunStore(StoreConfig(root=str(root)), run_id)
    rid = t.traffic["request_id"].to_numpy()
    part = np.arange(len(rid)) * N_TRAFFIC_SHARDS // len(rid)
    for k in range(N_TRAFFIC_SHARDS):
        store.write_shard("traffic", f"traffic-{k:06d}", t.traffic[part == k].reset_index(drop=True))
    shard_of = pd.Series(part, index=rid)
    scores = t.scores
    if layout == "mixed":  # the judge's verdicts recorded, the other metrics scored by the pipeline
        judged = scores["metric"].astype(str).str.contains("judge")
        assert judged.any() and not judged.all()
        scores, recorded = scores[~judged], scores[judged]
    if layout in ("pipeline", "mixed"):  # scores-<model>-<traffic shard>, as jobs.score writes them
        for (model, k), df in scores.groupby([scores["model"], shard_of.loc[scores["request_id"]].to_numpy()]):
            store.write_shard("scores", shard_id("scores", model, f"traffic-{k:06d}"), df.reset_index(drop=True))
    else:  # recorded scores, per input-file chunk: a request's rows spread over shards
        recorded = scores
    if layout != "pipeline":
        rows = np.random.default_rng(0).permutation(len(recorded))
        for j, idx in enumerate(np.array_split(rows, 4)):
            store.write_shard("scores", shard_id("recorded", 0, j), recorded.iloc[np.sort(idx)].reset_index(drop=True))
    if layout == "no-traffic":
        for k in range(N_TRAFFIC_SHARDS):
            store.retract_shard("traffic", f"traffic-{k:06d}")
    store.write_shard("labels", "labels-000000", t.labels.reset_index(drop=True))
    return store


def _close_sums(a, b):
    for f in ("s1", "s2", "nv", "n_seg"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-5, err_msg=f)


def _predictors(d, p) -> Predictors:
    _, w, const = baselines.crossfit(d, baselines.cell_matrix(d), 0, unlabelled=False)
    return Predictors.build(d.kind, len(d.candidates), d.n_models, d.cat_values, w, const, guards.thin_draws(p))


def _local_rest(d, pr) -> ScoredSums:
    unl = np.flatnonzero(~baselines.labelled_requests(d))
    return local_scored_sums(d.X, np.asarray(d.seg_idx), d.present, d.judge_raw, unl, pr)


def _close_rest(a: ScoredSums, b: ScoredSums):
    assert a.n_req == b.n_req > 0
    for f in ("judge", "ridge", "bayes"):
        for g in ("n", "mean", "m2"):
            np.testing.assert_allclose(getattr(getattr(a, f), g), getattr(getattr(b, f), g), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{f}.{g}")


# Every layout for pairwise; binary (a request effect, absolute cells) on the two layouts a run writes.
@pytest.mark.parametrize("kind,layout", [("pairwise", "pipeline"), ("pairwise", "recorded"), ("pairwise", "mixed"),
                                         ("pairwise", "no-traffic"), ("binary", "pipeline"), ("binary", "mixed")])
def test_ray_sums_equal_local_sums(ray_cluster, tmp_path, layout, kind, monkeypatch):
    if kind == "pairwise":
        t, dim = simulate_pairwise(5, n_requests=1500, n_labels=90), "quality"
    else:
        t, dim = simulate_binary(6, n_requests=1500, n_labels=120), "correctness"
    store = _write_run(tmp_path / "store", "agg", t, layout)
    models = sorted(t.scores["model"].unique())
    # Two groups of three traffic shards where shards are routed: a group of more than one traffic shard.
    monkeypatch.setattr(decide_aggregate, "MAX_GROUPS", 2)
    tasks, loose = plan(store, models, 3)
    assert len(loose) == (4 if layout in ("recorded", "mixed") else 0)
    if layout == "no-traffic":
        assert [t_.get("bucket") for t_ in tasks] == [0, 1, 2]
    else:
        assert sorted(s for t_ in tasks for s in t_["traffic"]) == sorted(store.commits("traffic"))
        assert len(tasks) == (3 if layout == "pipeline" else 2)
        # every pipeline score shard in exactly one task
        owned = [s for t_ in tasks for s in t_["scores"]]
        assert sorted(owned) == sorted(set(store.commits("scores")) - set(loose))
    segs = [] if layout == "no-traffic" else ["region"]  # no traffic table: no segments
    d = prepare(t.scores, t.labels, "incumbent", None, dim, kind, t.traffic if segs else None, segs or None)
    p = _params(d, with_req_effect=kind == "binary")
    cache: dict = {}
    pr = _predictors(d, p)
    got, rest = ray_sums(store, d, p, segs, None, pr, n_hash=3, cache=cache)
    _close_sums(got, local_sums(d, p))
    # the baselines' sums over the unlabelled requests (calibration.scored), made in the same tasks
    _close_rest(rest, _local_rest(d, pr))
    assert rest.n_req == d.n_req - len(np.unique(d.lab_req))
    assert bool(cache) == bool(loose)
    if loose:  # a second dimension reuses the routed parts
        parts = cache["parts"]
        _close_sums(ray_sums(store, d, p, segs, None, pr, n_hash=3, cache=cache)[0], got)
        assert cache["parts"] is parts
    a = finish(got, np.random.default_rng(3), d.kind, d.cat_values)
    b = finish(local_sums(d, p), np.random.default_rng(3), d.kind, d.cat_values)
    for f in ("fp", "pop", "fp_seg", "pop_seg"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-6, err_msg=f)


def test_auto_sums_here_below_the_threshold(tmp_path):
    t = simulate_pairwise(5, n_requests=200, n_labels=40)
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, ["region"])
    store = RunStore(StoreConfig(root=str(tmp_path / "s")), "r")
    assert sums_function("local", store, ["region"], None) is None
    started = []
    assert sums_function("auto", store, ["region"], None, ensure=lambda: started.append(1))(d, _params(d),
                                                                                          None) is None
    assert not started  # no Ray for a small run


def _numbers(doc, path=""):
    """Flattened numeric leaves of a decision document (created_at and text left out)."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k != "created_at":
                out.update(_numbers(v, f"{path}.{k}"))
        return out
    if isinstance(doc, list):
        out = {}
        for i, v in enumerate(doc):
            out.update(_numbers(v, f"{path}[{i}]"))
        return out
    return {path: doc}


@pytest.mark.parametrize("kind", ["pairwise", "binary"])
def test_decision_entries_from_ray_equal_local(ray_cluster, tmp_path, kind):
    """Every entry the decision writes per candidate (estimate, intervals, P(non-inferior), segments, guards,
    labels_needed) from one set of posterior draws, summed by Ray or here (the fit is the same either way)."""
    from calibration.pipeline import SamplerSettings, summarise_dimension

    if kind == "pairwise":
        t, dim = simulate_pairwise(9, n_requests=1200, n_labels=90), "quality"
    else:
        t, dim = simulate_binary(10, n_requests=1200, n_labels=120), "correctness"
    store = _write_run(tmp_path / "store", "entries", t, "pipeline")
    d = prepare(t.scores, t.labels, "incumbent", None, dim, kind, t.traffic, ["region"])
    p = _params(d, D=200, with_req_effect=kind == "binary")
    diag = {"converged": True}
    out = {}
    for mode in ("local", "ray"):
        sums = sums_function(mode, store, ["region"], None)
        out[mode] = _numbers(summarise_dimension(d, p, diag, 0.05, 0.9, 0, SamplerSettings(), aggregate_sums=sums))
    assert out["local"].keys() == out["ray"].keys()
    assert any(k.endswith(".segments.region=eu.interval[0]") for k in out["local"])
    for key, v in out["local"].items():
        if isinstance(v, float):
            assert out["ray"][key] == pytest.approx(v, rel=1e-5, abs=1.5e-4), key
        else:
            assert out["ray"][key] == v, key


@pytest.mark.parametrize("layout", ["pipeline", "recorded"])
def test_a_task_that_meets_a_corrupt_shard_raises_the_stores_error(ray_cluster, tmp_path, layout):
    """A score shard damaged after the driver read it: the driver raises the store's own CorruptShard (exit 4,
    naming table, shard and file; the shard is set aside so a rerun redoes it), not Ray's wrapper. A recorded
    shard is read by its routing task, which hands the store's error to the group tasks."""
    from jobs.errors import CorruptShard

    t = simulate_pairwise(5, n_requests=300, n_labels=40)
    store = _write_run(tmp_path / "store", f"corrupt-{layout}", t, layout)
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, ["region"])
    shard = sorted(store.commits("scores"))[1 if layout == "pipeline" else 2]
    store.fs.pipe_file(store.path("scores", store.commits("scores")[shard]["file"]), b"not parquet")
    with pytest.raises(CorruptShard, match=shard):
        p = _params(d)
        ray_sums(store, d, p, ["region"], None, _predictors(d, p))
    assert shard not in store.commits("scores")


def test_route_puts_every_row_in_exactly_one_group(tmp_path):
    """Routing a recorded shard by request (no Ray: route is a plain function): every row lands in one part, in
    the group of its traffic shard; a request absent from traffic lands in one part too, flagged."""
    from jobs.decide_aggregate import route, traffic_index

    t = simulate_pairwise(5, n_requests=600, n_labels=40)
    store = _write_run(tmp_path / "store", "route", t, "recorded")
    extra = pd.DataFrame({"request_id": ["not-in-traffic"], "model": ["incumbent"],
                          "metric": ["embed.sim_incumbent"], "value": [0.5]})
    store.write_shard("scores", shard_id("recorded", 1, 0), extra)
    tasks, loose = plan(store, sorted(t.scores["model"].unique()), 3)
    index = traffic_index(store, tasks)
    assert len(index[0]) == len(t.traffic)
    home = {rid: task["group"] for task in tasks for s in task["traffic"]
            for rid in store.read_shard("traffic", s)["request_id"]}
    total = 0
    for shard in loose:
        parts = route(store, shard, index, len(tasks))
        whole = store.read_shard("scores", shard)
        assert sum(len(p) for p in parts) == len(whole)
        for g, part in enumerate(parts):
            ids = part["request_id"].astype(str)
            assert all(home.get(r, g) == g for r in ids)
            assert (part["in_traffic"].to_numpy() == ids.isin(list(home)).to_numpy()).all()
        total += len(whole)
    assert total == len(t.scores) + 1


def test_a_routed_row_of_another_group_is_refused(tmp_path):
    """The check behind the 64-bit routing: a row said to be in traffic that is not in the group's traffic (what
    a hash collision would do) stops the task instead of summing it as another request, with a Baton error (which
    the task hands to the driver as it is, exit 1)."""
    from jobs.decide_aggregate import _read
    from jobs.errors import BatonError

    t = simulate_pairwise(5, n_requests=300, n_labels=40)
    store = _write_run(tmp_path / "store", "collide", t, "recorded")
    tasks, _ = plan(store, sorted(t.scores["model"].unique()), 3)
    other = store.read_shard("traffic", tasks[1]["traffic"][0])["request_id"].iloc[0]
    stray = pd.DataFrame({"request_id": pd.Categorical([other]), "model": ["incumbent"],
                          "metric": ["embed.sim_incumbent"], "value": [0.5], "in_traffic": [True]})
    with pytest.raises(BatonError, match="hash collision"):
        _read(store, tasks[0], ["region"], (stray,))
    scores, _ = _read(store, tasks[0], ["region"], (stray.assign(in_traffic=False),))
    assert other in set(scores["request_id"])  # absent from traffic: summed where its hash put it


@pytest.mark.slow  # three NUTS fits: about 4 minutes on 2 shared cores
def test_decision_json_from_ray_equals_local_and_a_sampled_driver_decides_alike(ray_cluster, tmp_path,
                                                                                 monkeypatch):
    """decision.json through jobs.decide.run with real PyMC, recorded scores routed: with Ray aggregation and the
    driver holding every request (the hash sample takes all 1,500), every number equals the local decision's to
    decision.json's rounding. With a sample of about 300 (jobs.decide_scan), the driver holds the labelled requests
    and the sample only: every count is still the all-requests one, and the estimates move by far less than their
    intervals' half-width (the feature transform is fitted on the sample, so the fit differs a little)."""
    from jobs import decide as decide_mod
    from jobs import decide_scan

    t = simulate_pairwise(8, n_requests=1500, n_labels=80)
    store = _write_run(tmp_path / "store", "decide-sub", t, "recorded")
    monkeypatch.setattr(decide_aggregate, "MAX_GROUPS", 2)
    held = []
    real_decide = decide_mod.decide

    def spy(scores, *a, **k):
        held.append(scores["request_id"].nunique())
        return real_decide(scores, *a, **k)

    monkeypatch.setattr(decide_mod, "decide", spy)
    docs = {}
    for mode, sample in (("local", None), ("ray", None), ("ray", 300)):
        if sample:
            monkeypatch.setattr(decide_scan, "SAMPLE_REQUESTS", sample)
        raw = run_config(str(tmp_path / "store"), "decide-sub",
                         [{"kind": "recorded", "name": c, "path": str(tmp_path / "unused.parquet")} for c in ("cand-a", "cand-b")])
        raw["decision"].update({"draws": 150, "tune": 150, "aggregate": mode})
        decide_run(RunConfig.model_validate(raw), store)
        docs[(mode, sample)] = json.loads(store.read_document("decision", "decision.json"))
    n_labelled = t.labels["request_id"].nunique()
    assert held[:2] == [1500, 1500] and held[2] <= n_labelled + 2 * 300 and held[2] < 1500 / 2
    local, ray_ = _numbers(docs[("local", None)]), _numbers(docs[("ray", None)])
    assert local.keys() == ray_.keys()
    assert len(docs[("local", None)]["candidates"]["cand-a"]["dimensions"]["quality"]["segments"]) == 3
    for key, v in local.items():
        if isinstance(v, float):  # decision.json rounds to 4-5 decimals: one unit of the last may flip
            assert ray_[key] == pytest.approx(v, rel=1e-5, abs=1.5e-4), key
        else:
            assert ray_[key] == v, key
    for cand in ("cand-a", "cand-b"):
        a, b = (docs[m]["candidates"][cand]["dimensions"]["quality"] for m in (("local", None), ("ray", 300)))
        for key in ("n_scored", "labels_used"):
            assert a[key] == b[key], key
        assert a["judge_only"] == b["judge_only"]  # raw judge values: the same sums over the same requests
        assert {s: e["n_scored"] for s, e in a["segments"].items()} == \
            {s: e["n_scored"] for s, e in b["segments"].items()}
        half = (a["interval"][1] - a["interval"][0]) / 2
        assert abs(a["estimate"] - b["estimate"]) < 0.25 * half, (a["estimate"], b["estimate"], half)
        assert a["human_only"] == b["human_only"]  # labels alone: no transform


@pytest.mark.parametrize("layout", ["mixed"])  # recorded verdicts joined with the pipeline's lengths
def test_report_figures_from_ray_equal_the_drivers(ray_cluster, tmp_path, layout, monkeypatch):
    """The report's judge bias (position, and length: a verdict joined with both answers' lengths, here from
    recorded judge shards and pipeline length shards), distinct recorded pairs and code pass rates, from Ray
    tasks over the groups (jobs.report_scan) and from the decide's scan (kept for the report stage), equal the
    driver's own reading of the whole scores table."""
    import dataclasses

    from jobs.decide_scan import scan
    from jobs.report import (_distinct_pairs, code_rates, judge_bias, load_report_sums, save_report_sums,
                             scores_fingerprint)
    from jobs.report_scan import report_sums

    t = simulate_pairwise(5, n_requests=900, n_labels=40)
    ids = t.traffic["request_id"].to_numpy()
    models = ["incumbent", "cand-a", "cand-b"]
    lengths = pd.DataFrame({"request_id": np.tile(ids, 3), "model": np.repeat(models, len(ids)),
                            "metric": "check.length_chars",
                            "value": np.random.default_rng(1).normal(300, 80, 3 * len(ids)).round()})
    # longer candidate answers win more often: a length correlation to find
    rng = np.random.default_rng(2)
    passed = pd.DataFrame({"request_id": np.tile(ids[:300], 2), "model": np.repeat(models[:2], 300),
                           "metric": "exec.pass", "value": (rng.random(600) < 0.7).astype(float)})
    passed.loc[::50, "value"] = np.nan  # a task that could not run is no pass rate's row
    verdict = t.scores["metric"].astype(str).str.startswith("judge.pairwise")
    t = dataclasses.replace(t, scores=pd.concat([t.scores, lengths, passed], ignore_index=True))
    store = _write_run(tmp_path / "store", f"report-{layout}", t, layout)
    monkeypatch.setattr(decide_aggregate, "MAX_GROUPS", 2)
    want = judge_bias(store, "incumbent")
    sums, pairs, code = report_sums(store, models)
    assert verdict.any() and want == judge_bias(store, "incumbent", sums)
    # the code-task pass rates too (read here by the driver: exec.* rows only)
    assert code_rates(store) == code_rates(store, code) and code_rates(store)["cand-a"]["n"] == 294
    # The decide's scan reads the same rows and makes the same sums, which the report stage then reads back
    # (jobs.report.load_report_sums) while the scores table is unchanged.
    fingerprint = scores_fingerprint(store)
    sub = scan(store, models, ["region"], t.labels["request_id"].to_numpy(), {})
    assert sub.report[1:] == (pairs, code) and sub.report[0].keys() == sums.keys()
    for name, row in sums.items():
        assert sub.report[0][name]["n"] == row["n"] and sub.report[0][name]["sum"] == row["sum"]
        np.testing.assert_array_equal(sub.report[0][name]["length"], row["length"])
    save_report_sums(store, fingerprint, *sub.report)
    kept = load_report_sums(store)
    assert judge_bias(store, "incumbent", kept[0]) == want and kept[1] == pairs
    assert code_rates(store, kept[2]) == code_rates(store)
    # a score shard committed after the decide's pass voids the kept sums: the report makes its own
    store.write_shard("scores", shard_id("recorded", 1, 0), t.scores.head(3).reset_index(drop=True))
    assert load_report_sums(store) is None
    assert {"position", "length"} <= set(want["judge.pairwise.quality"]) | set(want["judge.pairwise.quality.ab"])
    recorded = sorted(set(store.commits("scores")) - {shard_id("scores", m, f"traffic-{k:06d}")
                                                       for m in models for k in range(N_TRAFFIC_SHARDS)})
    assert pairs == (_distinct_pairs(store, recorded) if recorded else 0) and (pairs > 0) == (layout == "mixed")
