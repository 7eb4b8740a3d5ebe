"""Corrupt shards on a real run: a data file cut in half and half a commit record, on local disk and on the moto S3
server, then `baton run` again (jobs.migrate.run_pipeline on a local Ray): every request id exactly once in every
table. And a run that was interrupted after the replay and resumed reports figures of the whole run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.support.fixtures import assert_exactly_once, pipeline_scale_module

N = 120
SHARD_ROWS = 40
PRICES = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}

pytestmark = pytest.mark.slow  # two to four small pipeline runs (Ray, PyMC) per case


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("corrupt")
    raw = pipeline_scale_module().generate(N, work / "inputs", labels_per_candidate=40)
    for c in raw["candidates"]:
        c["prices"] = PRICES
    raw["execution"].update(shard_rows=SHARD_ROWS, num_cpus=2)
    raw["decision"].update(draws=50, tune=50, chains=1)
    return work, raw


@pytest.fixture(scope="module")
def ray_local(moto_server):
    """Ray as run_pipeline starts it, kept for the module; after the moto server, whose credentials (env vars) the
    Ray workers must inherit."""
    import ray

    started_here = not ray.is_initialized()
    yield
    if started_here:
        ray.shutdown()


def _config(raw: dict, root: str, run_id: str, **store):
    from jobs.config import parse_config

    return parse_config({**raw, "run_id": run_id, "store": {"root": root, **store}}, "test config")



def _cut_in_half(store, path: str) -> None:
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: len(raw) // 2])


def _corrupt(store, cfg) -> dict:
    """A responses data file cut in half, half of a scores commit record, half of a traffic data file."""
    cand = cfg.candidates[0].name
    resp = store.commits("responses")[f"{cand}-traffic-000001"]
    _cut_in_half(store, store.path("responses", resp["file"]))
    _cut_in_half(store, store.path("scores", "_commits", f"scores-{cfg.incumbent.name}-traffic-000002.json"))
    _cut_in_half(store, store.path("traffic", store.commits("traffic")["traffic-000000"]["file"]))
    return {"responses": f"{cand}-traffic-000001", "scores": f"scores-{cfg.incumbent.name}-traffic-000002",
            "traffic": "traffic-000000"}


def _rerun_heals(store, cfg) -> None:
    from jobs.migrate import run_pipeline

    hurt = _corrupt(store, cfg)
    decision = run_pipeline(cfg, progress=False)
    assert set(decision.verdicts) == {c.name for c in cfg.candidates}
    aside = {(t, n["shard"]) for t in ("traffic", "responses", "scores") for _, n in store.set_asides(t)}
    cand = cfg.candidates[0].name
    # The three damaged shards, and the scores computed from the damaged responses, were set aside and redone.
    assert set(hurt.items()) | {("scores", f"scores-{cand}-traffic-000001")} <= aside
    for table, shard in hurt.items():
        assert store.is_committed(table, shard)
    assert store.verify("responses") == [] and store.verify("scores") == []
    assert_exactly_once(store, cfg, N)


def test_resumed_run_reports_the_whole_run_and_a_corrupt_store_heals(inputs, ray_local):
    """Local disk: replay alone first (an interrupted run), then `baton run` resumes; then corruption, rerun."""
    from jobs.migrate import run_pipeline
    from jobs.replay import replay
    from jobs.sample import run_sample
    from jobs.store import RunStore

    work, raw = inputs
    cfg = _config(raw, str(work / "store"), "resumed")
    store = RunStore(cfg.store, cfg.run_id)
    run_sample(cfg, store)
    replay(cfg, store, progress=False)  # the first invocation stops here
    run_pipeline(cfg, progress=False)  # the second replays nothing and does the rest
    _check_report(store, cfg)
    _rerun_heals(store, cfg)
    _check_report(store, cfg)


def _check_report(store, cfg) -> None:
    from jobs.report import report_extras

    rows = {(r["stage"], r["model"]): r for r in report_extras(cfg, store)["cost"]}
    for cand in cfg.candidates:
        r = rows[("replay", cand.name)]
        recs = [rec for rec in store.commits("responses").values() if rec["candidate"] == cand.name]
        assert r["requests"] == N and r["wall_s"] == pytest.approx(sum(x["stats"]["wall_s"] for x in recs), abs=1e-2)
        tokens = sum(x["stats"]["prompt_tokens"] for x in recs), sum(x["stats"]["completion_tokens"] for x in recs)
        assert r["est_cost_usd"] == pytest.approx((tokens[0] * 3.0 + tokens[1] * 15.0) / 1e6, rel=1e-4)
        assert r["est_cost_usd"] > 0
    for model in [cfg.incumbent.name, *(c.name for c in cfg.candidates)]:
        r = rows[("score", model)]
        assert r["requests"] == N and r["wall_s"] > 0  # scored requests from the scores table, not this invocation's
    md = store.read_document("decision", "report.md").decode()
    cost = md[md.index("Cost and throughput"):]
    total = next(line for line in cost.splitlines() if line.startswith("| total |"))
    cells = [c.strip() for c in total.split("|")[1:-1]]
    assert cells[2] in ("—", "") and cells[7] in ("—", "")  # no requests, no rate added across stages
    expected = sum(r.get("est_cost_usd") or 0 for r in rows.values())
    assert cells[-1] != "$0.00" and float(cells[-1].lstrip("$").replace(",", "")) == pytest.approx(expected, rel=0.01)


def test_corrupt_shards_on_s3_heal_on_rerun(inputs, ray_local, s3_bucket):
    from jobs.migrate import run_pipeline
    from jobs.store import RunStore

    endpoint, bucket = s3_bucket
    work, raw = inputs
    cfg = _config(raw, f"s3://{bucket}/baton", "s3run", endpoint_url=endpoint,
                  access_key_id_env="AWS_ACCESS_KEY_ID", secret_access_key_env="AWS_SECRET_ACCESS_KEY")
    store = RunStore(cfg.store, cfg.run_id)
    run_pipeline(cfg, progress=False)
    _rerun_heals(store, cfg)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_corrupt_record_met_outside_baton_run_names_it_and_the_command(inputs, tmp_path, request, where, capsys):
    """`baton replay` reads the traffic records before any compute: half a record ends in exit 4 naming the
    table, shard and path, and the command that redoes it, not a traceback."""
    import yaml

    from jobs.cli import main as cli_main
    from jobs.sample import run_sample
    from jobs.store import RunStore

    work, raw = inputs
    if where == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        cfg = _config(raw, f"s3://{bucket}/b", "cli", endpoint_url=endpoint,
                      access_key_id_env="AWS_ACCESS_KEY_ID", secret_access_key_env="AWS_SECRET_ACCESS_KEY")
    else:
        cfg = _config(raw, str(tmp_path / "store"), "cli")
    store = RunStore(cfg.store, cfg.run_id)
    run_sample(cfg, store)
    _cut_in_half(store, store.path("traffic", "_commits", "traffic-000001.json"))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    assert cli_main(["replay", "--config", str(path), "--no-progress"]) == 4
    err = capsys.readouterr().err
    assert "run store corrupt: table traffic, shard traffic-000001, " in err
    assert store.uri("traffic", "_commits", "traffic-000001.json") in err
    assert f"to redo it, run: baton run --config {path}" in err
    assert "Traceback" not in err
    assert not store.is_committed("traffic", "traffic-000001")
