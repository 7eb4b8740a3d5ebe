"""docs/decision-schema.md and the typed decision (calibration.schema) say the same thing: the documented example
validates against the model, and every field of the model appears in it (so no field goes undocumented)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from calibration.decision import MIGRATE, MORE, REJECT, combine
from calibration.schema import CandidateDecision, Decision, DimensionResult, ResultRow, Verdict

DOC = Path(__file__).resolve().parents[2] / "docs" / "decision-schema.md"


def _example() -> dict:
    block = re.search(r"```json\n(.*?)\n```", DOC.read_text(), re.S)
    assert block, f"{DOC}: no ```json example"
    return json.loads(block.group(1))


def test_documented_example_validates_against_the_model():
    doc = Decision.model_validate(_example())  # extra="forbid": a documented field the model lacks fails here
    assert doc.as_dict() == _example()  # and nothing is lost or renamed on the way back


def test_every_model_field_is_documented():
    ex = _example()
    cand = next(iter(ex["candidates"].values()))
    dim = next(iter(cand["dimensions"].values()))
    for model, shown in ((Decision, ex), (CandidateDecision, cand), (DimensionResult, dim),
                         (ResultRow, ex["results"][0])):
        assert set(model.model_fields) == set(shown), model.__name__
    prose = DOC.read_text()
    for name in ("warnings", "candidate_order", "run_id", "drift", "turn_positions", "estimand"):
        assert f"`{name}`" in prose, f"{name} is not explained in {DOC.name}"


def test_verdict_names_are_the_rules():
    assert [v.value for v in Verdict] == ["migrate", "more_labels", "reject"]
    assert (MIGRATE, MORE, REJECT) == (Verdict.MIGRATE, Verdict.MORE_LABELS, Verdict.REJECT)
    assert combine([MIGRATE, REJECT]) is Verdict.REJECT and json.dumps(combine([])) == '"more_labels"'


def test_run_id_and_drift_only_when_set():
    ex = _example()
    ex.pop("run_id")
    ex.pop("drift")
    assert not {"run_id", "drift"} & set(Decision.model_validate(ex).as_dict())
