"""The demo pipeline (what `make demo` runs) on a small slice of the shipped PandaLM data."""

from __future__ import annotations

import json

import pytest

from jobs.cli import main

pytestmark = pytest.mark.slow


def test_demo_slice_end_to_end(tmp_path, capsys):
    import ray

    try:
        rc = main(["demo", "--out", str(tmp_path / "store"), "--run-id", "demo-slice", "--limit", "120",
                   "--labels-per-candidate", "20"])
    finally:
        ray.shutdown()
    assert rc == 0
    out = capsys.readouterr().out
    run = tmp_path / "store" / "runs" / "demo-slice"
    decision = json.loads((run / "decision" / "decision.json").read_text())
    cands = {"llama-7b", "pythia-6.9b", "cerebras-gpt-6.7B"}
    assert set(decision["verdicts"]) == cands
    for cand in cands:
        assert f"  {cand}: {decision['verdicts'][cand].upper()}" in out
        dim = decision["candidates"][cand]["dimensions"]["quality"]
        lo, hi = dim["interval"]
        assert 0 <= lo <= dim["estimate"] <= hi <= 1
        assert dim["labels_used"] <= 20
        assert {"human_only", "ppi", "judge_only"} <= set(dim)
    assert "Against the full human labels" in out and "full-human win rate" in out
    html = (run / "decision" / "report.html").read_text()
    assert 'id="verdicts"' in html and 'id="forest-plot"' in html and "<svg" in html
    # Self-contained: nothing is loaded from elsewhere (segment names may be URLs: PandaLM's apps are).
    assert not any(f'{attr}="{scheme}' in html for attr in ("src", "href") for scheme in ("http:", "https:", "//"))
    for dim in (d for c in decision["candidates"].values() for d in c["dimensions"].values()):
        for seg in dim["segments"].values():
            assert 0 <= seg["interval"][0] <= seg["interval"][1] <= 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["sample"]["rows"] + manifest["stages"]["sample"]["quarantined"] == 120
    assert manifest["stages"]["score"]["embedded"] > 0
