"""`baton labels`: export a blinded batch, answer it as an annotator would, import it back, and every bad input.

The simulated annotator reads only what an annotator sees (the CSV or the Label Studio tasks). Each answer's text
carries a hidden quality score, so the test knows the right judgment of every (request, model) and can check that
un-blinding (model identities and the swapped A/B order) put each label on the right request and model.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from jobs import cli
from jobs.labels import command as labels_cli
from jobs.config import parse_config
from jobs.decide import run as decide_run
from jobs.errors import ContractError
from jobs.labels.checks import design_weights, run_checks
from jobs.labels.design_table import read_design, write_design
from jobs.labels.export import export_batch
from jobs.labels.import_ import import_answers
from jobs.labels.task import LabelDimension, LabelTaskConfig, load_task_config
from jobs.store import RunStore
from common.tables import DESIGN_COLUMNS

INC, CANDS = "inc-model", ["cand-a", "cand-b"]
N_REQ = 60


def quality(model: str, i: int) -> int:
    """Hidden truth: the quality (1-5) of a model's answer to request i."""
    mult = {INC: 3, "cand-a": 1, "cand-b": 7}[model]
    return (i * mult + (i // 5)) % 5 + 1


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path, {"root": str(tmp_path / "store")})


def make_run(tmp_path, store_cfg: dict) -> dict:
    """A run with traffic (segment app), two candidates' responses and pairwise judge scores in its store."""
    raw = {
        "run_id": "lab-run",
        "store": store_cfg,
        "traffic": {"path": str(tmp_path / "traffic.jsonl"), "segments": ["app"]},
        "incumbent": {"name": INC},
        "candidates": [{"name": c, "kind": "recorded", "path": str(tmp_path / f"{c}.jsonl")} for c in CANDS],
        "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"},
                                    {"name": "correctness", "kind": "binary"},
                                    {"name": "style", "kind": "ordinal"}]},
    }
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    store = RunStore(cfg.store, cfg.run_id)
    ids = [f"r{i:03d}" for i in range(N_REQ)]
    apps = ["X" if i % 3 else "Y" for i in range(N_REQ)]
    traffic = pd.DataFrame({
        "request_id": ids, "app": apps,
        "messages": [[{"role": "user", "content": f"question {i}"}] for i in range(N_REQ)],
        "response": [f"reply q={quality(INC, i)} #{i}" for i in range(N_REQ)],
        "inclusion_prob": 1.0,
    })
    store.write_shard("traffic", "traffic-000000", traffic)
    rows, scores = [], []
    for c in CANDS:
        for i, rid in enumerate(ids):
            rows.append({"request_id": rid, "model": c, "response": f"reply q={quality(c, i)} #{i}",
                         "prompt_tokens": 3, "completion_tokens": 4, "latency_s": 0.1, "finish_reason": "stop",
                         "attempts": 1, "error": None})
            # judge: P(candidate better), informative; app Y requests look worse to the judge
            p = np.clip(0.5 + 0.1 * (quality(c, i) - quality(INC, i)) - (0.3 if apps[i] == "Y" else 0.0), 0.02, 0.98)
            for order in ("ab", "ba"):
                scores.append({"request_id": rid, "model": c, "metric": f"judge.pairwise.quality.{order}", "value": p})
    # one failed response: that unit cannot be labelled
    rows.append({**rows[0], "request_id": "r000", "model": "cand-a"})
    resp = pd.DataFrame(rows[:-1])
    resp.loc[0, ["response", "error"]] = [None, "timeout: no answer"]
    store.write_shard("responses", "responses-0", resp)
    store.write_shard("scores", "scores-0", pd.DataFrame(scores))
    task = load_task_config(None, cfg)
    return {"cfg": cfg, "store": store, "task": task, "cfg_path": str(cfg_path), "tmp": tmp_path}


def baton_labels(argv: list[str]) -> int:
    """`baton labels ARGV` through the CLI's own error handling (exit codes, messages on stderr)."""
    parser = argparse.ArgumentParser(prog="baton labels")
    labels_cli.add_arguments(parser)
    return cli.run_guarded(labels_cli.main, parser.parse_args(argv))


def _q(text: str) -> int:
    return int(re.search(r"q=(\d)", text).group(1))


def answer(row: dict, annotator: str = "ann1") -> dict:
    """What a careful annotator answers, from the texts shown alone."""
    qa, qb = _q(row["answer_a"]), _q(row["answer_b"])
    return {"item_id": row["item_id"], "batch": row["batch"], "annotator": annotator,
            "quality": "A" if qa > qb else "B" if qb > qa else "tie",
            "correctness_a": str(int(qa >= 3)), "correctness_b": str(int(qb >= 3)),
            "style_a": str(qa), "style_b": str(qb)}


def check_against_truth(labels: pd.DataFrame) -> None:
    assert len(labels)
    for r in labels.itertuples():
        i = int(r.request_id[1:])
        if r.dimension == "quality":
            assert r.model in CANDS
            diff = quality(r.model, i) - quality(INC, i)
            assert r.value == (1.0 if diff > 0 else 0.0 if diff < 0 else 0.5), r
        elif r.dimension == "correctness":
            assert r.value == float(quality(r.model, i) >= 3), r
        else:
            assert r.value == float(quality(r.model, i)), r


def test_export_is_blinded_and_records_the_design(run):
    out = run["tmp"] / "batch"
    res = export_batch(run["cfg"], run["store"], run["task"], str(out), n=20, seed=1, batch="b1")
    assert res["items"] == 40 and res["per_candidate"] == {"cand-a": 20, "cand-b": 20}
    csv = pd.read_csv(res["files"]["csv"], dtype=str)
    assert list(csv.columns[:6]) == ["item_id", "batch", "prompt", "answer_a", "answer_b", "annotator"]
    assert {"quality", "correctness_a", "correctness_b", "style_a", "style_b"} <= set(csv.columns)
    for path in out.iterdir():  # nothing an annotator gets names a model or a request, or holds the key
        text = path.read_text()
        for secret in [INC, *CANDS, "r001", "a_is", "inclusion_prob"]:
            assert secret not in text, (path.name, secret)
    key = json.loads(run["store"].read_document("labels", "key-b1.json"))
    assert {it["item_id"] for it in key["items"]} == set(csv["item_id"])
    swapped = sum(it["a_is"] == "incumbent" for it in key["items"])
    assert 8 <= swapped <= 32  # the order is randomised, not fixed
    pools = key["pool_sizes"]
    assert pools == {"cand-a": N_REQ - 1, "cand-b": N_REQ}  # the failed response is not labellable
    for it in key["items"]:
        assert it["inclusion_prob"] == pytest.approx(20 / pools[it["candidate"]])
    tasks = json.loads((out / "b1.labelstudio.json").read_text())
    assert len(tasks) == 40 and set(tasks[0]["data"]) == {"item_id", "batch", "prompt", "answer_a", "answer_b", "rubric"}
    assert "quality: which answer is better" in tasks[0]["data"]["rubric"]
    xml = (out / "b1.label_config.xml").read_text()
    assert '<Choices name="style_b" toName="answer_b"' in xml and '<Choice value="5"/>' in xml


def test_round_trip_csv_two_annotators(run):
    out = run["tmp"] / "batch"
    res = export_batch(run["cfg"], run["store"], run["task"], str(out), n=15, seed=2, batch="b2")
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    answers = pd.DataFrame([answer(r, "ann1") for r in shown] + [answer(r, "ann2") for r in shown[:10]])
    path = run["tmp"] / "answers.csv"
    answers.to_csv(path, index=False)
    summary = import_answers(run["cfg"], run["store"], str(path))
    assert summary["quarantined"] == 0 and summary["committed"]
    labels = run["store"].read_table("labels")
    key = json.loads(run["store"].read_document("labels", "key-b2.json"))
    # per item: 1 pairwise + 2 correctness + 2 style rows, per annotator; the incumbent's answer to a request
    # chosen for both candidates is judged twice by the same annotator, alike, and kept once
    req_of = {it["item_id"]: it["request_id"] for it in key["items"]}
    both = 0
    for ann, rows in answers.groupby("annotator"):
        reqs = pd.Series([req_of[i] for i in rows["item_id"]])
        both += int((reqs.value_counts() == 2).sum())
    assert summary["merged_repeats"] == 2 * both > 0
    assert len(labels) == 5 * (30 + 10) - 2 * both == summary["labels"]
    check_against_truth(labels)
    probs = {(it["request_id"], it["candidate"]): it["inclusion_prob"] for it in key["items"]}
    pw = labels[labels["dimension"] == "quality"]
    assert set(zip(pw["request_id"], pw["model"])) == set(probs)
    for r in pw.itertuples():
        assert r.inclusion_prob == probs[(r.request_id, r.model)] and r.weight == pytest.approx(1 / r.inclusion_prob)
        assert r.batch == "b2"
    assert set(labels.loc[labels["dimension"] != "quality", "model"]) == {INC, *CANDS}
    checks = run_checks(run["cfg"], run["store"], run["task"])
    assert checks["agreement"]["quality"]["items"] == 10 and checks["agreement"]["quality"]["alpha"] == pytest.approx(1.0)
    assert run["store"].has_document("labels", "checks.json")
    # importing the same file again writes nothing twice
    again = import_answers(run["cfg"], run["store"], str(path))
    assert not again["committed"] and len(run["store"].read_table("labels")) == len(labels)


def test_round_trip_label_studio_export(run):
    out = run["tmp"] / "batch"
    export_batch(run["cfg"], run["store"], run["task"], str(out), n=10, seed=3, batch="ls1", design_name="stratified")
    tasks = json.loads((out / "ls1.labelstudio.json").read_text())
    exported = []
    for t, task in enumerate(tasks):  # Label Studio's export: the task plus its annotations
        a = answer(task["data"], "x")
        result = [{"from_name": f, "to_name": "prompt", "type": "choices", "value": {"choices": [a[f]]}}
                  for f in ("quality", "correctness_a", "correctness_b")]
        result += [{"from_name": f, "to_name": f"answer_{f[-1]}", "type": "rating", "value": {"rating": int(a[f])}}
                   for f in ("style_a", "style_b")]
        anns = [{"id": 1000 + t, "completed_by": {"id": 7, "email": "ann@example.com"}, "result": result,
                 "was_cancelled": False}]
        if t == 0:  # a cancelled annotation is not a label
            anns.append({"id": 1, "completed_by": 8, "result": [], "was_cancelled": True})
        exported.append({"id": t + 1, "data": task["data"], "annotations": anns})
    path = run["tmp"] / "ls-export.json"
    path.write_text(json.dumps(exported))
    summary = import_answers(run["cfg"], run["store"], str(path))
    assert summary["format"] == "labelstudio" and summary["quarantined"] == 0
    labels = run["store"].read_table("labels")
    assert len(labels) == 5 * 20 - summary["merged_repeats"] and set(labels["annotator"]) == {"ann@example.com"}
    check_against_truth(labels)
    key = json.loads(run["store"].read_document("labels", "key-ls1.json"))
    strata = {it["stratum"] for it in key["items"]}
    assert strata == {"app=X", "app=Y"}
    for it in key["items"]:  # stratified: pi = n_h / N_h, recorded per unit
        assert 0 < it["inclusion_prob"] < 1
    assert labels["design"].unique().tolist() == ["stratified"]


def test_round_trip_jsonl_with_external_key(run):
    out, key_path = run["tmp"] / "batch", run["tmp"] / "secret-key.json"
    res = export_batch(run["cfg"], run["store"], run["task"], str(out), n=5, seed=4, batch="k1",
                       key_path=str(key_path), candidates=["cand-b"])
    assert res["key"] == str(key_path) and not run["store"].has_document("labels", "key-k1.json")
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    path = run["tmp"] / "answers.jsonl"
    path.write_text("\n".join(json.dumps({**answer(r), "style_a": int(answer(r)["style_a"])}) for r in shown))
    with pytest.raises(ContractError, match="no key for batch 'k1'"):
        import_answers(run["cfg"], run["store"], str(path))
    summary = import_answers(run["cfg"], run["store"], str(path), key_path=str(key_path))
    assert summary["labels"] == 25 and summary["quarantined"] == 0
    check_against_truth(run["store"].read_table("labels"))


def test_bad_inputs_are_quarantined_with_reasons(run):
    out = run["tmp"] / "batch"
    res = export_batch(run["cfg"], run["store"], run["task"], str(out), n=4, seed=5, batch="bad",
                       candidates=["cand-a"])
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    good = [answer(r) for r in shown]
    rows = [
        good[0],
        {**good[1], "quality": "C", "correctness_a": "2", "style_b": "7"},  # off scale (3 fields)
        {**good[2], "style_a": "2.5", "correctness_b": None},  # off scale, missing value
        {**good[3], "item_id": "i-not-exported"},  # unknown item
        good[0],  # exact duplicate: first kept, this one quarantined (5 fields)
        {**good[2], "annotator": "ann2"},  # another annotator on item 2: kept
        {**good[3], "annotator": "ann3"},
        {**good[3], "annotator": "ann3", "quality": "tie" if good[3]["quality"] != "tie" else "A"},  # conflict
    ]
    path = run["tmp"] / "messy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    summary = import_answers(run["cfg"], run["store"], str(path))
    q = run["store"].read_table("quarantine")
    reasons = q["reason"].tolist()

    def has(pattern: str, n: int = 1) -> None:
        hits = [r for r in reasons if re.search(pattern, r)]
        assert len(hits) == n, (pattern, hits, reasons)

    has(r"^row 1: column 'quality': 'C' is not one of A, tie, B")
    has(r"^row 1: column 'correctness_a': '2' is off the binary scale")
    has(r"^row 1: column 'style_b': '7' is off the ordinal scale")
    has(r"^row 2: column 'style_a': '2.5' is off the ordinal scale")
    has(r"^row 2: no value for dimension 'correctness' \(answer B\)")
    has(r"^row 3: item_id 'i-not-exported' is not in the key of batch 'bad'")
    has(r"^row 4: duplicate judgment by ann1 .*\(first at row 0\)", 5)
    has(r"^row [67]: annotator ann3 .*dimension 'quality' gave conflicting values", 2)
    has(r"^row 7: duplicate judgment by ann3 .*\(first at row 6\)", 4)  # its other fields repeat row 6
    assert set(q["row"]) == {1, 2, 3, 4, 6, 7} and q["source"].eq(str(path)).all()
    assert q.loc[q["row"] == 3, "request_id"].isna().all()
    assert q.loc[q["row"] == 1, "request_id"].notna().all()  # un-blinded for the record
    labels = run["store"].read_table("labels")
    # valid: row 0 (5), row 1 (2), row 2 (3), row 5 (5), row 6 (4 of 5: its quality conflicts)
    assert len(labels) == summary["labels"] == 19 and summary["quarantined"] == len(q) == 3 + 2 + 1 + 5 + 2 + 4
    check_against_truth(labels)
    # a later file that contradicts an imported label is a conflict too; the imported one stays; its other answers,
    # the same as imported, are a re-import: skipped and counted, not quarantined as duplicates
    later = run["tmp"] / "later.csv"
    flip = {**good[0], "style_a": str(6 - int(good[0]["style_a"])) if good[0]["style_a"] != "3" else "1"}
    pd.DataFrame([flip]).to_csv(later, index=False)
    s2 = import_answers(run["cfg"], run["store"], str(later))
    assert s2["labels"] == 0 and s2["quarantined"] == 1 and len(run["store"].read_table("labels")) == 19
    assert s2["already_imported"] == 4
    q2 = run["store"].read_table("quarantine")
    new = q2[q2["source"] == str(later)]["reason"].tolist()
    assert len(new) == 1 and "conflicting" in new[0] and "already imported in batch bad" in new[0]


def test_table_level_errors_exit_2_naming_file_and_column(run, capsys):
    out = run["tmp"] / "batch"
    res = export_batch(run["cfg"], run["store"], run["task"], str(out), n=3, seed=6, batch="t1")
    shown = pd.read_csv(res["files"]["csv"], dtype=str)
    no_col = run["tmp"] / "no-style.csv"
    shown.drop(columns=["style_b"]).assign(quality="A").to_csv(no_col, index=False)
    assert baton_labels(["import", "--config", run["cfg_path"], str(no_col)]) == 2
    err = capsys.readouterr().err
    assert str(no_col) in err and "'style_b'" in err
    # with --dimensions the missing dimension is not imported, the rest is
    assert baton_labels(["import", "--config", run["cfg_path"], str(no_col), "--dimensions", "quality"]) == 0
    assert set(run["store"].read_table("labels")["dimension"]) == {"quality"}
    no_id = run["tmp"] / "no-id.csv"
    shown.drop(columns=["item_id"]).to_csv(no_id, index=False)
    assert baton_labels(["import", "--config", run["cfg_path"], str(no_id)]) == 2
    assert "'item_id'" in capsys.readouterr().err
    broken = run["tmp"] / "broken.jsonl"
    broken.write_text('{"item_id": "x"}\n{not json\n')
    assert baton_labels(["import", "--config", run["cfg_path"], str(broken)]) == 2
    assert "line 2" in capsys.readouterr().err
    other = run["tmp"] / "other-batch.csv"
    shown.assign(batch="nope").to_csv(other, index=False)
    assert baton_labels(["import", "--config", run["cfg_path"], str(other)]) == 2
    assert "no key for batch 'nope'" in capsys.readouterr().err
    with pytest.raises(ContractError, match="--n N"):
        export_batch(run["cfg"], run["store"], run["task"], str(out), n=None)
    with pytest.raises(ContractError, match="'cand-z'"):
        export_batch(run["cfg"], run["store"], run["task"], str(out), n=2, candidates=["cand-z"])


def _decision_with_needs(needs: dict) -> dict:
    """A decision.json (the documented example, docs/decision-schema.md) whose candidates and dimensions carry the
    given (labels_needed, labels_needed_segment)."""
    import copy

    from tests.calibration.test_decision_schema import _example

    doc = _example()
    dim = next(iter(doc["candidates"].pop("cand-a")["dimensions"].values()))
    cands = {}
    for cand, dims in needs.items():
        body = {"verdict": "more_labels", "reasons": [], "dimensions": {}}
        for name, (need, seg) in dims.items():
            body["dimensions"][name] = {**copy.deepcopy(dim), "labels_needed": need, "labels_needed_segment": seg}
        cands[cand] = body
    return {**doc, "candidates": cands, "verdicts": {c: "more_labels" for c in cands}, "results": []}


def test_export_from_decision_asks_for_labels_needed_on_the_segment(run):
    export_batch(run["cfg"], run["store"], run["task"], str(run["tmp"] / "b"), n=10, seed=7, batch="d0",
                         candidates=["cand-b"])
    decision = _decision_with_needs({"cand-a": {"quality": (0, None)},
                                     "cand-b": {"quality": (6, "app=Y"), "style": (2, None)}})
    dpath = run["tmp"] / "decision.json"
    dpath.write_text(json.dumps(decision))
    assert baton_labels(["export", "--config", run["cfg_path"], "--out", str(run["tmp"] / "b"),
                     "--from-decision", str(dpath), "--batch", "d1", "--design", "active"]) == 0
    key = json.loads(run["store"].read_document("labels", "key-d1.json"))
    assert len(key["items"]) == 6 and {it["candidate"] for it in key["items"]} == {"cand-b"}
    assert key["segment"] == "app=Y" and key["design"] == "active"
    ys = {f"r{i:03d}" for i in range(N_REQ) if i % 3 == 0}
    assert {it["request_id"] for it in key["items"]} <= ys
    first_ids = {it["request_id"] for it in json.loads(run["store"].read_document("labels", "key-d0.json"))["items"]}
    assert not first_ids & {it["request_id"] for it in key["items"]}  # more labels, not the same ones again
    assert key["pool_sizes"]["cand-b"] == len(ys - first_ids)
    w = design_weights(run["store"])
    both = w[(w["model"] == "cand-b") & w["request_id"].isin(ys - first_ids)]
    assert (both["inclusion_prob"] > 10 / N_REQ).all()  # combined over the two batches


def test_active_export_prefers_uncertain_units(run):
    res = export_batch(run["cfg"], run["store"], run["task"], str(run["tmp"] / "b"), n=12, seed=8, batch="a1",
                       design_name="active", candidates=["cand-a"], tau=0.2)
    assert res["items"] == 12
    pool = read_design(run["store"])
    scores = run["store"].read_table("scores")
    p = scores[(scores["model"] == "cand-a")].groupby("request_id")["value"].mean()
    pool["p"] = p.reindex(pool["request_id"]).to_numpy()
    assert pool["inclusion_prob"].sum() == pytest.approx(12)
    assert pool["inclusion_prob"].min() >= 0.2 * 12 / len(pool) - 1e-12
    close = pool.loc[(pool["p"] - 0.5).abs() < 0.15, "inclusion_prob"].mean()
    clear = pool.loc[(pool["p"] - 0.5).abs() > 0.3, "inclusion_prob"].mean()
    assert close > 1.5 * clear


def test_decide_adjusts_for_the_active_design(run):
    """Export by the active design, answer, import, decide: the model conditions on log pi of every scored unit
    (from the exported pools), the baselines weight each label by 1 / pi."""
    res = export_batch(run["cfg"], run["store"], run["task"], str(run["tmp"] / "b"), n=20, seed=3, batch="act",
                       design_name="active", tau=0.2)
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    path = run["tmp"] / "act.csv"
    pd.DataFrame([answer(r) for r in shown]).to_csv(path, index=False)
    import_answers(run["cfg"], run["store"], str(path))
    dims = [d for d in run["cfg"].decision.dimensions if d.name == "quality"]
    cfg = run["cfg"].model_copy(update={"decision": run["cfg"].decision.model_copy(
        update={"dimensions": dims, "draws": 150, "tune": 150})})
    doc = decide_run(cfg, run["store"]).as_dict()
    weights = design_weights(run["store"])
    for cand in CANDS:
        e = doc["candidates"][cand]["dimensions"]["quality"]
        pool = weights[weights["model"] == cand]
        labelled = set(run["store"].read_table("labels").query("model == @cand")["request_id"])
        pi = pool.loc[pool["request_id"].isin(labelled), "inclusion_prob"]
        assert e["design"]["weighted"] and e["design"]["pi_min"] == pytest.approx(pi.min(), rel=1e-5)
        assert e["design"]["adjustment"] == "covariate" and "design.log_pi" in e["calibration"]
        assert e["design"]["labels_n_eff"] < e["labels_used"] == 20
        assert e["human_only"]["method"] == "hajek" and e["ppi"]["method"] == "design-weighted difference"
        assert any("the model conditions on log pi" in r for r in doc["candidates"][cand]["reasons"])


def test_checks_warn_when_labels_come_from_one_segment(run, capsys):
    res = export_batch(run["cfg"], run["store"], run["task"], str(run["tmp"] / "b"), n=20, seed=9, batch="s1",
                       candidates=["cand-a"], segment="app=Y")
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    path = run["tmp"] / "seg.csv"
    pd.DataFrame([answer(r) for r in shown]).to_csv(path, index=False)
    import_answers(run["cfg"], run["store"], str(path))
    checks = run_checks(run["cfg"], run["store"], run["task"])
    rows = {r["metric"]: r for r in checks["representativeness"]["cand-a"]}
    assert rows["judge.pairwise.quality.ab"]["warn"] and rows["judge.pairwise.quality.ab"]["smd"] < -0.5
    assert any("may not be representative" in w for w in checks["warnings"])
    assert baton_labels(["check", "--config", run["cfg_path"]]) == 0
    printed = capsys.readouterr().out
    assert "warning: candidate cand-a, metric judge.pairwise.quality.ab" in printed


def test_round_trip_on_s3(tmp_path, s3_bucket):
    """The same round trip with the run store on a real S3 API (moto server on loopback)."""
    endpoint, bucket = s3_bucket
    r = make_run(tmp_path, {"root": f"s3://{bucket}/baton", "endpoint_url": endpoint})
    res = export_batch(r["cfg"], r["store"], r["task"], str(tmp_path / "out"), n=6, seed=10, batch="s3b",
                       design_name="active")
    assert r["store"].has_document("labels", "key-s3b.json") and r["store"].uri().startswith("s3://")
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    path = tmp_path / "answers.csv"
    pd.DataFrame([answer(x) for x in shown]).to_csv(path, index=False)
    summary = import_answers(r["cfg"], r["store"], str(path))
    assert summary["committed"] and summary["quarantined"] == 0
    check_against_truth(r["store"].read_table("labels"))
    w = design_weights(r["store"])
    assert len(w) == 2 * N_REQ - 1 and w["inclusion_prob"].sum() == pytest.approx(12)


def test_task_config_is_strict(tmp_path, run):
    bad = tmp_path / "task.yaml"
    bad.write_text(yaml.safe_dump({"dimensions": [{"name": "style", "kind": "ordinal", "scale_max": 7,
                                                   "rubrik": "typo"}]}))
    with pytest.raises(Exception, match="rubrik"):
        load_task_config(str(bad), run["cfg"])
    with pytest.raises(Exception, match="scale_max"):
        LabelDimension(name="s", kind="ordinal", scale_min=3, scale_max=2)
    good = LabelTaskConfig(dimensions=[LabelDimension(name="style", kind="ordinal", scale_min=0, scale_max=10)])
    assert good.dimensions[0].allowed()[0] == "0" and "0 (worst) to 10" in good.dimensions[0].rubric
    for name, field in LabelDimension.model_fields.items():
        assert field.description, name


# -- labels as living data (issue 14) ---------------------------------------------------------------------------
def _labels_table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["request_id", "model", "dimension", "value", "annotator"])


def _pairwise_truth(cand: str, i: int) -> float:
    diff = quality(cand, i) - quality(INC, i)
    return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5


def _quality_only(cfg, **update):
    dims = [d for d in cfg.decision.dimensions if d.name == "quality"]
    return cfg.model_copy(update={"decision": cfg.decision.model_copy(
        update={"dimensions": dims, "draws": 60, "tune": 60, "chains": 2}), **update})


def test_labels_stage_quarantines_bad_rows_decides_on_the_rest_and_reimports_a_corrected_file(run):
    """One off-scale label (7 on a pairwise dimension) no longer ends the run at decide; a corrected labels file on
    a rerun is imported again (its content changed), and an unchanged one is a no-op."""
    from jobs.labels import run as import_labels

    good = [(f"r{i:03d}", c, "quality", _pairwise_truth(c, i), "ann1") for c in CANDS for i in range(1, 31)]
    bad = [("r031", "cand-a", "quality", 7, "ann1"),  # off the pairwise scale
           ("r032", "cand-a", "tone", 1, "ann1"),  # not a decision dimension
           ("r999", "cand-b", "quality", 1, "ann1"),  # no such request in the run
           ("r033", "ghost", "quality", 1, "ann1")]  # neither incumbent nor candidate
    path = run["tmp"] / "labels.csv"
    _labels_table(good + bad).to_csv(path, index=False)
    store = run["store"]
    cfg = _quality_only(run["cfg"], labels=run["cfg"].labels.model_copy(update={"path": str(path)}))
    stats = import_labels(cfg, store)
    q = store.read_table("quarantine")
    assert len(q) == 4 and len(store.read_table("labels")) == 60
    assert stats["changed"] and stats["rows"] == 60 and stats["quarantined"] == 4
    assert q["source"].eq(str(path)).all() and q["stage"].eq("labels").all()
    by_row = {r.row: r for r in q.itertuples()}
    assert set(by_row) == {60, 61, 62, 63}
    assert by_row[60].field == "value" and "value 7 is off the pairwise scale of dimension 'quality'" in by_row[60].reason
    assert by_row[61].field == "dimension" and "'tone' is not one of the decision's dimensions" in by_row[61].reason
    assert by_row[62].field == "request_id" and "'r999' is not in this run's traffic" in by_row[62].reason
    assert by_row[63].field == "model" and "'ghost' is neither the incumbent nor a candidate" in by_row[63].reason
    doc = decide_run(cfg, store).as_dict()  # the decision uses the 60 good labels
    assert {e["labels_used"] for e in (doc["candidates"][c]["dimensions"]["quality"] for c in CANDS)} == {30}

    # the annotator corrects the 7 to a 1: the rerun's labels stage sees a new source and re-imports it
    fixed = bad[:]
    fixed[0] = ("r031", "cand-a", "quality", 1, "ann1")
    _labels_table(good + fixed).to_csv(path, index=False)
    stats2 = import_labels(cfg, store)
    assert stats2["changed"] and stats2["rows"] == 61 and stats2["quarantined"] == 3
    assert stats2["retired"] == [f"labels-import-{stats['fingerprint']}"]
    labels = store.read_table("labels")
    assert len(labels) == 61 and labels.query("request_id == 'r031'")["value"].tolist() == [1.0]
    q2 = store.read_table("quarantine")
    assert len(q2) == 3 and 60 not in set(q2["row"])  # the corrected row left the quarantine
    assert store.fs.ls(store.path("labels", "_retired"))  # the superseded import is kept, out of the table

    # an unchanged source: nothing read, nothing written
    commits = (store.commits("labels"), store.commits("quarantine"))
    stats3 = import_labels(cfg, store)
    assert not stats3["changed"] and stats3["retired"] == []
    assert (store.commits("labels"), store.commits("quarantine")) == commits


def test_standalone_decide_quarantines_an_off_scale_label(run, capsys):
    """`baton decide` with a 7 on a pairwise dimension: the row is quarantined (file, row, field, reason) and the
    decision is made on the rest, exit 0."""
    from jobs import decide

    scores = run["tmp"] / "scores.parquet"
    run["store"].read_table("scores").to_parquet(scores)
    rows = [(f"r{i:03d}", c, "quality", _pairwise_truth(c, i), "ann1") for c in CANDS for i in range(1, 31)]
    rows.insert(5, ("r040", "cand-a", "quality", 7, "ann1"))
    rows.append(("r041", "cand-b", "style", 4, "ann1"))  # another dimension: not decided on, not quarantined
    labels = run["tmp"] / "labels.csv"
    _labels_table(rows).to_csv(labels, index=False)
    out = run["tmp"] / "dec"
    parser = argparse.ArgumentParser()
    decide.add_arguments(parser)
    args = parser.parse_args(["--scores", str(scores), "--labels", str(labels), "--incumbent", INC,
                              *sum((["--candidate", c] for c in CANDS), []), "--dimension", "quality",
                              "--kind", "pairwise", "--margin", "0.05", "--confidence", "0.9", "--out", str(out),
                              "--draws", "60", "--tune", "60"])
    assert cli.run_guarded(decide.main, args) == 0
    doc = json.loads((out / "decision.json").read_text())
    assert set(doc["verdicts"]) == set(CANDS)
    q = pd.read_csv(out / "quarantine.csv")
    assert len(q) == 1 and q.loc[0, "row"] == 5 and q.loc[0, "field"] == "value" and q.loc[0, "source"] == str(labels)
    assert "off the pairwise scale" in q.loc[0, "reason"]
    err = capsys.readouterr().err
    assert f"labels file {labels}: 1 row(s) quarantined" in err and "row 5, field 'value'" in err


def _ls_export(tasks: list[dict], who, updated: str, overrides: dict | None = None) -> list[dict]:
    """A Label Studio JSON export of `tasks` (as exported by Baton), one annotation per task (id 500 + task)."""
    doc = []
    for t, task in enumerate(tasks):
        a = {**answer(task["data"], "x"), **(overrides or {}).get(t, {})}
        result = [{"from_name": f, "to_name": "prompt", "type": "choices", "value": {"choices": [a[f]]}}
                  for f in ("quality", "correctness_a", "correctness_b", "style_a", "style_b")]
        stamp = (overrides or {}).get(t, {}).get("_updated", updated)
        doc.append({"id": t + 1, "data": task["data"], "annotations": [
            {"id": 500 + t, "completed_by": who, "result": result, "was_cancelled": False,
             "created_at": "2026-12-01T10:00:00.000000Z", "updated_at": stamp}]})
    return doc


def test_label_studio_correction_wins_keeps_history_and_reimports_are_no_ops(run):
    """A re-export after an annotator corrected an answer: the correction replaces the stale value (by annotation
    id and updated_at), nothing is quarantined as a duplicate or conflict, the history stays in the store, and an
    identical re-export (even in another file) writes nothing."""
    store = run["store"]
    export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b"), n=6, seed=3, batch="ls1")
    tasks = json.loads((run["tmp"] / "b" / "ls1.labelstudio.json").read_text())
    first = run["tmp"] / "export-1.json"
    first.write_text(json.dumps(_ls_export(tasks, 7, "2026-12-01T10:00:00.000000Z")))
    s1 = import_answers(run["cfg"], store, str(first))
    assert s1["committed"] and s1["quarantined"] == 0
    before = store.read_table("labels")
    # the annotator changes task 0's quality answer in Label Studio: same annotation id, later updated_at
    old = answer(tasks[0]["data"], "x")["quality"]
    new = {"A": "B", "B": "A", "tie": "A"}[old]
    second = run["tmp"] / "export-2.json"
    second.write_text(json.dumps(_ls_export(tasks, 7, "2026-12-01T10:00:00.000000Z",
                                            {0: {"quality": new, "_updated": "2026-12-01T11:30:00.000000Z"}})))
    s2 = import_answers(run["cfg"], store, str(second))
    assert s2["quarantined"] == 0 and s2["committed"], s2["reasons"]
    assert store.read_table("quarantine").empty
    assert s1["annotations"]["new"] == 12
    assert s2["annotations"] == {"new": 0, "corrected": 1, "unchanged": 11, "stale": 0}
    after = store.read_table("labels")
    assert len(after) == len(before)
    key = {it["item_id"]: it for it in json.loads(store.read_document("labels", "key-ls1.json"))["items"]}
    it = key[tasks[0]["data"]["item_id"]]
    cand_is_a = it["a_is"] == "candidate"
    want = 0.5 if new == "tie" else 1.0 if (new == "A") == cand_is_a else 0.0
    row = after.query("request_id == @it['request_id'] and model == @it['candidate'] and dimension == 'quality'")
    assert row["value"].tolist() == [want] and row["annotation_id"].tolist() == ["500"]
    history = json.loads(store.read_document("labels", "ls-ls1.json"))["annotations"]["500"]
    assert [v["row"]["quality"] for v in history] == [old, new] and history[1]["file"] == str(second)
    assert s2["retired"] and store.fs.ls(store.path("labels", "_retired"))
    # the same export again, under another name: a no-op
    commits = (store.commits("labels"), store.commits("quarantine"), store.read_document("labels", "ls-ls1.json"))
    third = run["tmp"] / "export-3.json"
    third.write_text(second.read_text())
    s3 = import_answers(run["cfg"], store, str(third))
    assert not s3["committed"] and s3["annotations"]["unchanged"] == 12 and not s3["retired"]
    assert (store.commits("labels"), store.commits("quarantine"),
            store.read_document("labels", "ls-ls1.json")) == commits
    # an older export arriving late does not undo the correction
    s4 = import_answers(run["cfg"], store, str(first))
    assert s4["annotations"]["stale"] == 1 and not s4["committed"]
    assert store.read_table("labels").equals(after)


def test_label_studio_bad_answer_is_quarantined_once_across_re_exports(run):
    """An off-scale answer is quarantined on the first import and not again when the project is re-exported with
    more annotations; once corrected it leaves the quarantine."""
    store = run["store"]
    export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b"), n=4, seed=5, batch="ls2")
    tasks = json.loads((run["tmp"] / "b" / "ls2.labelstudio.json").read_text())
    t0 = "2026-12-01T10:00:00Z"
    e1 = run["tmp"] / "e1.json"
    e1.write_text(json.dumps(_ls_export(tasks[:5], 7, t0, {1: {"style_a": "9"}})))
    assert import_answers(run["cfg"], store, str(e1))["quarantined"] == 1
    e2 = run["tmp"] / "e2.json"  # three more tasks annotated since
    e2.write_text(json.dumps(_ls_export(tasks, 7, t0, {1: {"style_a": "9"}})))
    s2 = import_answers(run["cfg"], store, str(e2))
    q = store.read_table("quarantine")
    assert s2["quarantined"] == 1 and s2.get("annotations", {}).get("new") == 3
    assert len(q) == 1 and q.loc[0, "field"] == "style_a" and q.loc[0, "source"] == str(e1)
    assert q.loc[0, "row"] == 501 and q.loc[0, "reason"].startswith("annotation 501 (task 2): column 'style_a'")
    e3 = run["tmp"] / "e3.json"
    e3.write_text(json.dumps(_ls_export(tasks, 7, t0, {1: {"style_a": "2", "_updated": "2026-12-01T12:00:00Z"}})))
    s3 = import_answers(run["cfg"], store, str(e3))
    assert s3["quarantined"] == 0 and store.read_table("quarantine").empty
    assert len(store.read_table("labels")) == 5 * len(tasks) - s3["merged_repeats"]


def test_annotator_identity_maps_label_studio_ids_and_emails_to_one_person(run, tmp_path):
    """Label Studio exports name an annotator by numeric user id, its task API by email: with `annotators` in the
    task config both are one identity, so agreement and duplicate checks see one person."""
    store = run["store"]
    export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b"), n=3, seed=7, batch="id1")
    tasks = json.loads((run["tmp"] / "b" / "id1.labelstudio.json").read_text())
    task_cfg = tmp_path / "task.yaml"
    task_cfg.write_text(yaml.safe_dump({"annotators": {"ann@example.com": ["7", "Ann"]}}))
    task = load_task_config(str(task_cfg), run["cfg"])
    ids = task.annotator_identities()
    assert ids == {"ann@example.com": "ann@example.com", "7": "ann@example.com", "Ann": "ann@example.com"}
    export = run["tmp"] / "export.json"  # export: completed_by is the numeric id
    export.write_text(json.dumps(_ls_export(tasks[:3], 7, "2026-12-01T10:00:00Z")))
    import_answers(run["cfg"], store, str(export), identities=ids)
    api = run["tmp"] / "api.json"  # task API: a user object with the email (other tasks of the same person)
    api.write_text(json.dumps([{**t, "annotations": [{**a, "id": a["id"] + 100,
                                                     "completed_by": {"id": 7, "email": "ann@example.com"}}
                                                    for a in t["annotations"]]}
                               for t in _ls_export(tasks, 7, "2026-12-01T10:00:00Z")[3:]]))
    import_answers(run["cfg"], store, str(api), identities=ids)
    assert set(store.read_table("labels")["annotator"]) == {"ann@example.com"}
    # without a mapping, an export's created_username ("email, id") still gives the email
    from jobs.labels.import_ import annotator_identity
    assert annotator_identity({"completed_by": 7, "created_username": " ann@example.com, 7"}, {}) == "ann@example.com"
    assert annotator_identity({"completed_by": 7}, {}) == "7"
    with pytest.raises(Exception, match="listed under both"):
        LabelTaskConfig(annotators={"a@x.org": ["7"], "b@x.org": ["7"]})


def test_printed_summary_keeps_digits_of_batch_names(run, capsys):
    """The quarantine summary printed by `baton labels import` shows reasons as they are (it used to print
    `batch b_` for batch b2)."""
    res = export_batch(run["cfg"], run["store"], run["task"], str(run["tmp"] / "b"), n=3, seed=2, batch="b2")
    shown = pd.read_csv(res["files"]["csv"], dtype=str).to_dict("records")
    first = run["tmp"] / "first.csv"
    pd.DataFrame([answer(r, "ann1") for r in shown]).to_csv(first, index=False)
    assert baton_labels(["import", "--config", run["cfg_path"], str(first)]) == 0
    a = answer(shown[0], "ann1")
    later = run["tmp"] / "later.csv"
    pd.DataFrame([{**a, "style_a": "1" if a["style_a"] != "1" else "2"}]).to_csv(later, index=False)
    capsys.readouterr()
    assert baton_labels(["import", "--config", run["cfg_path"], str(later)]) == 0
    printed = capsys.readouterr().out
    assert "already imported in batch b2" in printed and "batch b_" not in printed, printed
    assert "quarantined 1 (conflicting values), e.g. row 0: annotator ann1" in printed


def test_labels_stage_on_s3_reimports_when_the_object_changes(tmp_path, s3_bucket):
    """labels.path on S3 (moto on loopback): the fingerprint is the object's ETag and size, no download; an
    unchanged object is a no-op, a re-uploaded different one is imported again."""
    import boto3

    from jobs.labels import run as import_labels

    endpoint, bucket = s3_bucket
    r = make_run(tmp_path, {"root": f"s3://{bucket}/baton", "endpoint_url": endpoint})
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    rows = [(f"r{i:03d}", "cand-a", "quality", _pairwise_truth("cand-a", i), "ann1") for i in range(1, 11)]
    put = lambda rs: s3.put_object(Bucket=bucket, Key="in/labels.csv",  # noqa: E731
                                   Body=_labels_table(rs).to_csv(index=False).encode())
    put(rows + [("r011", "cand-a", "quality", 7, "ann1")])
    cfg = r["cfg"].model_copy(update={"labels": r["cfg"].labels.model_copy(
        update={"path": f"s3://{bucket}/in/labels.csv"})})
    first = import_labels(cfg, r["store"])
    assert first["changed"] and first["rows"] == 10 and first["quarantined"] == 1
    assert not import_labels(cfg, r["store"])["changed"]
    put(rows + [("r011", "cand-a", "quality", 1, "ann1")])
    again = import_labels(cfg, r["store"])
    assert again["changed"] and again["rows"] == 11 and again["fingerprint"] != first["fingerprint"]
    assert len(r["store"].read_table("labels")) == 11 and r["store"].read_table("quarantine").empty


def test_label_studio_import_killed_midway_converges_on_rerun(run, monkeypatch):
    """An import killed after committing the batch's new shards but before recording the history and retiring the
    old shards: rerunning it derives the same shard, finishes, and leaves one current shard (no row twice)."""
    from jobs.store import RunStore

    store = run["store"]
    export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b"), n=3, seed=8, batch="ls3")
    tasks = json.loads((run["tmp"] / "b" / "ls3.labelstudio.json").read_text())
    e1, e2 = run["tmp"] / "e1.json", run["tmp"] / "e2.json"
    e1.write_text(json.dumps(_ls_export(tasks, 7, "2026-12-01T10:00:00Z")))
    old = answer(tasks[0]["data"], "x")["quality"]
    e2.write_text(json.dumps(_ls_export(tasks, 7, "2026-12-01T10:00:00Z",
                                        {0: {"quality": {"A": "B", "B": "A", "tie": "A"}[old],
                                             "_updated": "2026-12-01T11:00:00Z"}})))
    import_answers(run["cfg"], store, str(e1))
    n = len(store.read_table("labels"))
    real = RunStore.write_document

    def crash(self, table, name, data):  # the process dies before the history is written
        if name.startswith("ls-"):
            raise KeyboardInterrupt("killed")
        return real(self, table, name, data)

    monkeypatch.setattr(RunStore, "write_document", crash)
    with pytest.raises(KeyboardInterrupt):
        import_answers(run["cfg"], store, str(e2))
    assert len(store.read_table("labels")) == 2 * n  # old and new shard both committed at the kill
    monkeypatch.setattr(RunStore, "write_document", real)
    s = import_answers(run["cfg"], store, str(e2))
    assert s["annotations"]["corrected"] == 1 and len(s["retired"]) == 1
    assert len(store.read_table("labels")) == n and store.read_table("quarantine").empty
    assert sum(r.get("batch") == "ls3" for r in store.commits("labels").values()) == 1


def test_design_is_a_table_committed_once_per_batch(run):
    """The design is the run store's label_design table (a checksummed shard per batch), and a batch's design is
    committed exactly once: exporting the same batch again (its key kept outside the store) is refused and
    writes no row."""
    store = run["store"]
    res = export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b"), n=5, seed=1, batch="e1",
                       key_path=str(run["tmp"] / "key1.json"))
    table = store.read_table("label_design")
    assert list(table.columns) == DESIGN_COLUMNS and len(table) == 2 * N_REQ - 1
    assert set(table["batch"]) == {"e1"} and table["selected"].sum() == res["items"] == 10
    key = json.loads((run["tmp"] / "key1.json").read_text())
    chosen = table[table["selected"]]
    assert set(zip(chosen["request_id"], chosen["model"])) == {(it["request_id"], it["candidate"]) for it in key["items"]}
    assert "sha256" in store.commit_record("label_design", "e1")
    assert not store.fs.glob(store.path("labels", "design-*"))  # no documents any more
    with pytest.raises(ContractError, match="e1"):
        export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b2"), n=5, seed=2, batch="e1",
                     key_path=str(run["tmp"] / "key2.json"))
    with pytest.raises(ContractError, match="already"):
        write_design(store, "e1", pd.DataFrame({"request_id": ["r001"], "candidate": ["cand-a"],
                                                "inclusion_prob": [0.5]}), pd.DataFrame(columns=["request_id", "candidate"]))
    assert len(store.read_table("label_design")) == 2 * N_REQ - 1 and store.count_rows("label_design") == 2 * N_REQ - 1
    # a key kept outside the store still keeps its units out of the next batch (the design says they are taken)
    export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b3"), n=5, seed=3, batch="e2")
    second = read_design(store).query("batch == 'e2' and selected")
    assert not set(zip(second["request_id"], second["model"])) & set(zip(chosen["request_id"], chosen["model"]))


def test_design_of_a_run_exported_before_the_table_is_still_read(run):
    """A run store written by the earlier export (labels/design-<batch>.parquet documents, the chosen units only in
    labels/key-<batch>.json) is read by the same reader: its weights count, its units are not offered again."""
    store = run["store"]
    pool = pd.DataFrame({"request_id": [f"r{i:03d}" for i in range(N_REQ)], "candidate": "cand-b",
                         "inclusion_prob": 0.1})
    buf = __import__("io").BytesIO()
    pool.to_parquet(buf, index=False)
    store.write_document("labels", "design-old.parquet", buf.getvalue())
    picked = [f"r{i:03d}" for i in range(0, N_REQ, 10)]
    store.write_document("labels", "key-old.json", json.dumps(
        {"batch": "old", "items": [{"item_id": f"i{r}", "request_id": r, "candidate": "cand-b", "a_is": "candidate",
                                    "inclusion_prob": 0.1, "stratum": "all"} for r in picked]}))
    legacy = read_design(store)
    assert list(legacy.columns) == DESIGN_COLUMNS and len(legacy) == N_REQ and set(legacy["batch"]) == {"old"}
    assert sorted(legacy.loc[legacy["selected"], "request_id"]) == picked
    w = design_weights(store)
    assert len(w) == N_REQ and w["inclusion_prob"].to_numpy() == pytest.approx(0.1)
    export_batch(run["cfg"], store, run["task"], str(run["tmp"] / "b"), n=10, seed=4, batch="new",
                 candidates=["cand-b"])
    both = read_design(store)
    new = both[both["batch"] == "new"]
    assert len(new) == N_REQ - len(picked) and not set(new["request_id"]) & set(picked)  # not offered again
    w = design_weights(store).set_index("request_id")
    assert w.loc["r001", "inclusion_prob"] == pytest.approx(1 - 0.9 * (1 - 10 / (N_REQ - len(picked))))
    assert w.loc["r000", "inclusion_prob"] == pytest.approx(0.1)  # only in the old batch's pool


def test_export_segment_filter_reads_a_turn_position():
    """A decision's blocking turn position (labels_needed_segment 'turn=3+', docs/conversations.md) selects the
    units at those turns; a plain segment still matches its value."""
    from jobs.labels.export import _segment_filter

    units = pd.DataFrame({"request_id": list("abcdef"), "turn": [1, 2, 3, 4, 7, None], "app": list("xxyyxy")})
    assert _segment_filter(units, "turn=3+")["request_id"].tolist() == ["c", "d", "e"]
    assert _segment_filter(units, "turn=1-2")["request_id"].tolist() == ["a", "b", "f"]  # no turn: a single turn
    assert _segment_filter(units, "turn=2|app=x")["request_id"].tolist() == ["b"]


def test_requests_in_traffic_reads_every_shard_and_finds_only_the_run_s_requests(tmp_path):
    """The labels stage checks label request ids against traffic one shard at a time: ids in any shard are found,
    others not; no traffic, no check."""
    from jobs.config import StoreConfig
    from jobs.labels.import_ import requests_in_traffic

    store = RunStore(StoreConfig(root=str(tmp_path / "s")), "r")
    assert requests_in_traffic(store, ["a"]) is None
    for k in range(3):
        store.write_shard("traffic", f"traffic-{k:06d}",
                          pd.DataFrame({"request_id": [f"r{k}-{i}" for i in range(50)]}))
    got = requests_in_traffic(store, ["r0-1", "r2-49", "r1-7", "r9-0", "r0-1"])
    assert sorted(got) == ["r0-1", "r1-7", "r2-49"]
