"""Cheap deterministic checks: values on hand-made rows, null handling, config errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.scorers import Checks, ChecksConfig, MissingColumn, detect_language


def _batch(responses, incumbents=None):
    n = len(responses)
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)], "model": "cand",
        "response": responses, "incumbent_response": incumbents if incumbents is not None else ["x" * 10] * n,
    })


def _value(out: pd.DataFrame, rid: str, metric: str) -> float | None:
    hit = out[(out["request_id"] == rid) & (out["metric"] == metric)]
    assert len(hit) <= 1
    return None if hit.empty else float(hit["value"].iat[0])


def test_refusal_detection_on_openings_only():
    responses = [
        "I'm sorry, but I can't help with that request.",
        "I cannot assist with creating malware.",
        "As an AI language model, I cannot browse the internet.",
        "Sure! Here is the recipe: mix flour and water.",
        "Paris is the capital of France.",
        # The phrase deep inside a long helpful answer is not a refusal (window is 400 chars).
        "Here is a long explanation. " * 20 + "Some assistants say 'I can't help with that' when unsure.",
        "I\u2019m sorry, but I won\u2019t write that.",  # curly apostrophes
    ]
    out = Checks()(_batch(responses))
    got = [_value(out, f"r{i}", "check.refusal") for i in range(len(responses))]
    assert got == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_custom_refusal_pattern_and_bad_pattern():
    out = Checks(ChecksConfig(refusal_patterns=[r"computer says no"]))(_batch(["Computer says no.", "Yes."]))
    assert _value(out, "r0", "check.refusal") == 1.0 and _value(out, "r1", "check.refusal") == 0.0
    with pytest.raises(Exception, match="unterminated|missing"):
        Checks(ChecksConfig(refusal_patterns=["(unclosed"]))


def test_lengths_ratio_and_nulls():
    out = Checks()(_batch(["abcd", None, "", "abcdef"], ["ab", "xyz", "abc", None]))
    assert _value(out, "r0", "check.length_chars") == 4.0
    assert _value(out, "r0", "check.length_ratio") == pytest.approx(2.0)
    # A failed response (null) gets no check rows at all, rather than zeros that look like an answer.
    assert out[out["request_id"] == "r1"].empty
    assert _value(out, "r2", "check.empty") == 1.0 and _value(out, "r2", "check.length_ratio") == 0.0
    # No incumbent answer: no ratio row (the incumbent's own rows look like this).
    assert _value(out, "r3", "check.length_ratio") is None and _value(out, "r3", "check.length_chars") == 6.0
    assert list(out.columns) == ["request_id", "model", "metric", "value"] and out["value"].dtype == np.float64


def test_markdown_format_and_language():
    responses = ["# Title\n\n- one\n- two", "Plain prose that is the answer to the question.", "Use **bold** here",
                 "El perro de la casa es grande y la casa es de ellos", "x" * 50]
    cfg = ChecksConfig(markdown="forbid", language="en", max_chars=40)
    out = Checks(cfg)(_batch(responses))
    assert [_value(out, f"r{i}", "check.markdown") for i in range(5)] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert [_value(out, f"r{i}", "check.format_ok") for i in range(5)] == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert [_value(out, f"r{i}", "check.language") for i in range(5)] == [0.0, 1.0, 0.0, 0.0, 0.0]
    required = Checks(ChecksConfig(markdown="require"))(_batch(responses))
    assert _value(required, "r0", "check.format_ok") == 1.0 and _value(required, "r1", "check.format_ok") == 0.0
    ignored = Checks(ChecksConfig(markdown="ignore"))(_batch(responses))
    assert "check.markdown" not in set(ignored["metric"]) and "check.format_ok" not in set(ignored["metric"])


def test_detect_language_heuristic():
    texts = pd.Series(["The cat is on the mat and it is happy.", "Le chat est dans la maison avec les enfants.",
                       "Der Hund ist nicht mit dem Kind auf der Straße.", "El gato está en la casa con los niños.",
                       "Привет, как дела?", "これは日本語の文です。", "12345 !!!", None])
    assert list(detect_language(texts)) == ["en", "fr", "de", "es", "cyrillic", "cjk", "unknown", "unknown"]
    with pytest.raises(ValueError, match="klingon"):
        Checks(ChecksConfig(language="klingon"))


def test_missing_column_is_named_before_work():
    batch = _batch(["a"]).drop(columns=["incumbent_response"])
    with pytest.raises(MissingColumn, match="'incumbent_response'"):
        Checks()(batch)


def test_empty_batch_and_disabled():
    out = Checks()(_batch([]))
    assert out.empty and list(out.columns) == ["request_id", "model", "metric", "value"]
    assert Checks(ChecksConfig(enabled=False))(_batch(["a"])).empty
