"""Parsing a judge's answer into a score or a verdict, or into a named failure (never a guess).

Order: a JSON object (the whole answer, a fenced block, or the first ``{...}`` in it), then tolerant regexes for
the usual free-text forms (``Score: 4``, ``[[4]]``, ``4/5``, ``[[A]]``, ``Winner: B``). When the fallbacks find
conflicting values the answer is ambiguous and fails.
"""

from __future__ import annotations

import json
import math
import re

_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_NUM = r"(-?\d+(?:\.\d+)?)"
_ABS_PATTERNS = [
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),
    re.compile(r"\b(?:score|rating|grade)\b\s*(?:is|of|=|:|-)?\s*[*_`\"']*\s*" + _NUM + r"(?:\s*(?:/|out of)\s*\d+)?", re.IGNORECASE),
    re.compile(r"(?<![\d.])" + _NUM + r"\s*(?:/|out of)\s*(?:5|10|100)\b", re.IGNORECASE),
    re.compile(r"^\s*[*_`\"']*" + _NUM + r"[*_`\"']*\s*\.?\s*$"),
]
_SIDE = r"(?:answer|response|assistant|output)?\s*\(?([ab])\)?"
_PAIR_PATTERNS = [
    re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE),
    re.compile(r"\b(?:winner|verdict|better(?: answer| response)?|preferred(?: answer| response)?|choice)\b\s*(?:is|:|=|-)?\s*[*_`\"']*\s*"
               r"(?:answer|response|assistant|output)?\s*\(?(a|b|tie)\)?\b", re.IGNORECASE),
    re.compile(r"\b" + _SIDE + r"\s+is\s+(?:clearly\s+|slightly\s+|much\s+)?(?:better|more correct|preferable|superior)\b", re.IGNORECASE),
    re.compile(r"^\s*[*_`\"']*(?:answer|response)?\s*\(?(a|b|tie)\)?[*_`\"']*\s*\.?\s*$", re.IGNORECASE),
]
_TIE = re.compile(r"\b(?:it'?s a tie|(?:they|both)(?: answers)? are (?:equally (?:good|correct|bad)|equal)|equally (?:good|correct))\b", re.IGNORECASE)
_SCORE_KEYS = ("score", "rating", "grade")
_WINNER_KEYS = ("winner", "verdict", "better", "preferred", "choice")


def _json_object(text: str) -> dict | None:
    candidates = [text.strip()]
    candidates += [m.group(1) for m in _FENCE.finditer(text)]
    candidates += [m.group(0) for m in _OBJECT.finditer(text)]
    for cand in candidates:
        if not cand.startswith("{"):
            continue
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return {str(k).lower(): v for k, v in obj.items()}
    return None


def parse_score(text: str | None, lo: int, hi: int) -> tuple[float | None, str | None]:
    """(score, None) or (None, reason). A score outside [lo, hi] is a failure, not a clipped value."""
    if text is None or not str(text).strip():
        return None, "empty answer"
    text = str(text)
    obj = _json_object(text)
    value: object = None
    if obj is not None:
        key = next((k for k in _SCORE_KEYS if k in obj), None)
        if key is None:
            return None, f"JSON answer has no score key (keys: {sorted(obj)[:6]})"
        value = obj[key]
    else:
        for pattern in _ABS_PATTERNS:
            found = {float(m.group(1)) for m in pattern.finditer(text)}
            if len(found) > 1:
                return None, f"ambiguous answer: several scores {sorted(found)}"
            if found:
                value = found.pop()
                break
        if value is None:
            return None, "no score found in the answer"
    try:
        score = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        return None, f"score is not a number: {str(value)[:40]!r}"
    if not math.isfinite(score):
        return None, f"score is not a number: {str(value)[:40]!r}"
    if not lo <= score <= hi:
        return None, f"score {score:g} outside the scale {lo}-{hi}"
    return score, None


def _side(value: object, c_is_tie: bool = False) -> str | None:
    s = str(value).strip().lower()
    if re.search(r"[^a-z ()\[\]\"'.*_`]", s):
        return None  # 'C++', 'A/B', ... are not a side
    s = re.sub(r"[^a-z]", "", s)
    s = re.sub(r"^(answer|response|assistant|output)", "", s)
    if s in ("a", "b"):
        return s.upper()
    if s in ("tie", "draw", "equal", "neither", "both") or (c_is_tie and s == "c"):
        return "tie"
    return None


def parse_winner(text: str | None) -> tuple[str | None, str | None]:
    """('A' | 'B' | 'tie', None) or (None, reason)."""
    if text is None or not str(text).strip():
        return None, "empty answer"
    text = str(text)
    obj = _json_object(text)
    if obj is not None:
        raw = next((obj[k] for k in _WINNER_KEYS if k in obj), None)
        if raw is None:
            return None, f"JSON answer has no winner key (keys: {sorted(obj)[:6]})"
        side = _side(raw)
        return (side, None) if side else (None, f"winner is not A, B or tie: {str(raw)[:40]!r}")
    for pattern in _PAIR_PATTERNS:
        found = {_side(m.group(1), c_is_tie=True) for m in pattern.finditer(text)} - {None}
        if len(found) > 1:
            return None, f"ambiguous answer: several verdicts {sorted(found)}"
        if found:
            return found.pop(), None
    if _TIE.search(text):
        return "tie", None
    return None, "no verdict found in the answer"


def verdict_value(side: str, candidate_first: bool) -> float:
    """Orient a verdict candidate-better: 1 candidate better, 0.5 tie, 0 incumbent better."""
    if side == "tie":
        return 0.5
    candidate_won = (side == "A") == candidate_first
    return 1.0 if candidate_won else 0.0
