"""Rubric files and judge prompts: versions recorded, placeholders filled, references chosen as the issue says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from inference.scorers import Judge, JudgeConfig, JudgeDimension, RubricError, ScoringConfig, load_rubric
from inference.scorers.rubrics import BUILTIN_DIR


def test_builtin_rubrics_load_with_versions():
    for name in ("correctness", "refusal", "style", "quality"):
        r = load_rubric(name, 1)
        assert r.id == f"{name}.v1" and (r.scale_min, r.scale_max) == (1, 5) and len(r.sha256) == 64
        assert "{{" in r.absolute and "{{answer_a}}" in r.pairwise
    with pytest.raises(RubricError, match="correctness.v9"):
        load_rubric("correctness", 9)


def test_rubrics_dir_overrides_and_malformed(tmp_path):
    text = (BUILTIN_DIR / "correctness.v1.md").read_text().replace("version: 1", "version: 2")
    (tmp_path / "correctness.v2.md").write_text(text)
    assert load_rubric("correctness", 2, str(tmp_path)).version == 2
    (tmp_path / "broken.v1.md").write_text("---\nname: broken\nversion: 1\nscale_min: 1\nscale_max: 5\n---\n=== system ===\nx\n")
    with pytest.raises(RubricError, match="broken.v1.md: missing section '=== absolute ==='"):
        load_rubric("broken", 1, str(tmp_path))


def test_config_defaults_and_errors():
    cfg = JudgeConfig(style_guide="Be brief.")
    assert [d.name for d in cfg.dimensions] == ["correctness", "refusal", "style"]
    with pytest.raises(ValidationError, match="style_guide"):
        JudgeConfig(dimensions=[JudgeDimension(name="style")])
    with pytest.raises(ValidationError, match="judge.engine"):
        JudgeConfig(enabled=True)
    with pytest.raises(ValidationError, match="extra"):
        ScoringConfig.model_validate({"judge": {"dimensons": []}})
    with pytest.raises(ValidationError, match="lowercase"):
        JudgeDimension(name="Bad Name")


def _batch():
    msgs = [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "What is 2+2?"}]
    return pd.DataFrame({
        "request_id": ["q1", "q2", "q3"], "model": ["cand", "cand", "inc"],
        "response": ["4", "Five {{answer}}", "4"],
        "incumbent_response": ["four", "4", None],
        "reference": ["4", None, None],
        "messages": [msgs, np.array(msgs, dtype=object), msgs],
    })


def test_prompts_cover_dimensions_orders_and_references():
    judge = Judge(JudgeConfig(style_guide="Answer in one word.", dimensions=[
        JudgeDimension(name="correctness", pairwise=True), JudgeDimension(name="style", pairwise=True)]))
    p = judge.prompts(_batch())
    by = {(r.request_id, r.metric): r for r in p.itertuples()}
    # Candidate rows: absolute + both pairwise orders per dimension; the incumbent's row: absolute only.
    assert sorted(m for rid, m in by if rid == "q1") == sorted([
        "judge.abs.correctness", "judge.abs.style", "judge.pairwise.correctness.ab", "judge.pairwise.correctness.ba",
        "judge.pairwise.style.ab", "judge.pairwise.style.ba"])
    assert sorted(m for rid, m in by if rid == "q3") == ["judge.abs.correctness", "judge.abs.style"]
    assert p["key"].is_unique
    user = lambda rid, m: by[(rid, m)].messages[1]["content"]  # noqa: E731
    system = lambda rid, m: by[(rid, m)].messages[0]["content"]  # noqa: E731
    # Reference answer when the traffic has one, else the incumbent's answer, else none.
    assert "The reference answer is correct" in user("q1", "judge.abs.correctness")
    assert 'source="production model"' in user("q2", "judge.abs.correctness") and "\n4\n" in user("q2", "judge.abs.correctness")
    assert "No reference answer" in user("q3", "judge.abs.correctness")
    # Position swap: the candidate's answer is A in .ab and B in .ba.
    ab, ba = user("q2", "judge.pairwise.correctness.ab"), user("q2", "judge.pairwise.correctness.ba")
    assert "<answer_a>\nFive {{answer}}\n</answer_a>" in ab and "<answer_b>\nFive {{answer}}\n</answer_b>" in ba
    assert by[("q2", "judge.pairwise.correctness.ab")].candidate_first is True
    assert by[("q2", "judge.pairwise.correctness.ba")].candidate_first is False
    # Placeholders inside answers are data: not expanded. The style guide reaches the system prompt.
    assert "{{" not in system("q1", "judge.abs.style") and "Answer in one word." in system("q1", "judge.abs.style")
    assert "[system]\nBe helpful." in user("q1", "judge.abs.correctness")
    assert judge.versions()["style"]["rubric"] == "style.v1"


def test_long_answers_are_cut_and_marked():
    judge = Judge(JudgeConfig(max_answer_chars=100, dimensions=[JudgeDimension(name="refusal")]))
    batch = _batch().iloc[:1].assign(response="y" * 1000)
    content = judge.prompts(batch)["messages"].iat[0][1]["content"]
    assert "y" * 100 in content and "y" * 101 not in content and "900 more characters" in content


def test_parse_records_failures_with_raw_and_orientation():
    judge = Judge(JudgeConfig(raw_chars=30, dimensions=[JudgeDimension(name="correctness", pairwise=True)]))
    p = judge.prompts(_batch().iloc[:1])
    answers = {"judge.abs.correctness": '{"score": 5}', "judge.pairwise.correctness.ab": '{"winner": "A"}',
               "judge.pairwise.correctness.ba": "blah " * 40}
    texts = np.array([answers[m] for m in p["metric"]], dtype=object)
    out = judge.parse(p, texts, np.full(len(p), None, dtype=object)).set_index("metric")
    assert out.loc["judge.abs.correctness", "value"] == 5.0
    assert out.loc["judge.pairwise.correctness.ab", "value"] == 1.0
    failed = out.loc["judge.pairwise.correctness.ba"]
    assert np.isnan(failed["value"]) and "no verdict" in failed["error"] and failed["raw"] == ("blah " * 40)[:30]
    errs = np.array(["HTTP 500 after 6 attempts", None, None], dtype=object)
    out2 = judge.parse(p, np.array([None, '{"winner": "B"}', '{"winner": "B"}'], dtype=object), errs)
    assert out2["error"].iat[0].startswith("engine error: HTTP 500")
    # .ab with B winning: incumbent better (0); .ba with B winning: candidate better (1).
    assert list(out2["value"].iloc[1:]) == [0.0, 1.0]
