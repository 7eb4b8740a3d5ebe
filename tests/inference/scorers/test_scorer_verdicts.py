"""Parsing judge answers: JSON first, tolerant fallbacks, and named failures instead of guesses."""

from __future__ import annotations

import pytest

from inference.scorers import parse_score, parse_winner, verdict_value


@pytest.mark.parametrize("text, expected", [
    ('{"reasoning": "fine", "score": 4}', 4.0),
    ('Here you go:\n```json\n{"reasoning": "x", "score": "5"}\n```', 5.0),
    ('Preamble {"Score": 2, "reasoning": "meh"} trailing', 2.0),
    ("Score: 3/5", 3.0),
    ("Rating: **4**", 4.0),
    ("My verdict is [[2]].", 2.0),
    ("It deserves 4 out of 5.", 4.0),
    ("5", 5.0),
    ('{"score": 4.5}', 4.5),
])
def test_scores_parsed(text, expected):
    assert parse_score(text, 1, 5) == (expected, None)


@pytest.mark.parametrize("text, reason", [
    ("", "empty answer"),
    (None, "empty answer"),
    ("The answer looks good to me.", "no score found"),
    ("I'm sorry, but I can't evaluate this content.", "no score found"),
    ("Score: 7", "outside the scale 1-5"),
    ('{"score": 0}', "outside the scale 1-5"),
    ('{"reasoning": "good"}', "no score key"),
    ('{"score": "high"}', "not a number"),
    ('{"score": null}', "not a number"),
    ('{"score": true}', "not a number"),
    ("Score: 2. On reflection, score: 4.", "ambiguous"),
])
def test_score_failures_are_named(text, reason):
    value, why = parse_score(text, 1, 5)
    assert value is None and reason in why


@pytest.mark.parametrize("text, side", [
    ('{"reasoning": "A is right", "winner": "A"}', "A"),
    ('{"winner": "Answer B"}', "B"),
    ('{"winner": "tie"}', "tie"),
    ('```json\n{"verdict": "b"}\n```', "B"),
    ("[[A]]", "A"),
    ("[[C]]", "tie"),
    ("Winner: B", "B"),
    ("After comparing, Response A is clearly better.", "A"),
    ("B", "B"),
    ("Both answers are equally good.", "tie"),
])
def test_winners_parsed(text, side):
    assert parse_winner(text) == (side, None)


@pytest.mark.parametrize("text, reason", [
    ("", "empty answer"),
    ("I refuse to compare these.", "no verdict"),
    ('{"winner": "C++"}', "not A, B or tie"),
    ('{"reason": "x"}', "no winner key"),
    ("Answer A is better. No wait, Answer B is better.", "ambiguous"),
])
def test_winner_failures_are_named(text, reason):
    side, why = parse_winner(text)
    assert side is None and reason in why


def test_orientation_is_candidate_better():
    # .ab shows the candidate as A; .ba shows the incumbent as A.
    assert verdict_value("A", candidate_first=True) == 1.0
    assert verdict_value("B", candidate_first=True) == 0.0
    assert verdict_value("A", candidate_first=False) == 0.0
    assert verdict_value("B", candidate_first=False) == 1.0
    assert verdict_value("tie", candidate_first=False) == 0.5
