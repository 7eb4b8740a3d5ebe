"""A scripted LLM judge for the loopback OpenAI-compatible server: answers per rubric, in several formats.

Shared by the scorer tests and tests/jobs/test_score.py. Markers in the conversation steer it:
JUDGE-GARBAGE (an unparseable answer), JUDGE-REFUSE (the judge refuses), JUDGE-OUT-OF-RANGE (score 9),
JUDGE-FAVOURS-A (a position-biased judge: always A in pairwise). The continuity judge answers fits unless the next
user message holds JUDGE-NO-FIT; the transcript judge scores the number of assistant turns (at most 5).
"""

from __future__ import annotations

import json
import re

REFUSAL = re.compile(r"i can(?:'t|not) help|i won't", re.IGNORECASE)


def _block(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}[^>]*>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return m.group(1) if m else None


def scripted_judge(messages: list[dict], model: str) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    conversation = _block(user, "conversation") or ""
    if "JUDGE-GARBAGE" in conversation:
        return "lorem ipsum, the vibes are immaculate"
    if "JUDGE-REFUSE" in conversation:
        return "I'm sorry, but I can't help with grading this conversation."
    if system.startswith("You check replayed conversations"):  # inference.scorers.continuity
        follow = _block(user, "next_user_message") or ""
        return '{"fits": false}' if "JUDGE-NO-FIT" in follow else '{"fits": true}'
    if "whole conversations" in system:  # the transcript rubric (conversation.v1): score = assistant turns, max 5
        transcript = _block(user, "transcript") or ""
        if "JUDGE-GARBAGE" in transcript:
            return "lorem ipsum"
        return json.dumps({"reasoning": "r", "score": min(5, transcript.count("[assistant]"))})
    pairwise = "<answer_a>" in user
    if "You judge only correctness" in system:
        reference = _block(user, "reference_answer")
        if pairwise:
            if "JUDGE-FAVOURS-A" in conversation:
                return '{"reasoning": "first is best", "winner": "A"}'
            a, b = _block(user, "answer_a"), _block(user, "answer_b")
            good_a, good_b = (reference is not None and reference in x for x in (a, b))
            winner = "tie" if good_a == good_b else ("A" if good_a else "B")
            return f'Some thoughts first.\n```json\n{json.dumps({"reasoning": "r", "winner": winner})}\n```'
        answer = _block(user, "answer")
        if "JUDGE-OUT-OF-RANGE" in conversation:
            return '{"reasoning": "off the chart", "score": 9}'
        if reference is None:
            score = 3  # nothing to compare with
        elif 'source="production model"' in user:
            score = 4 if reference in answer else 2  # the incumbent's answer as a guide
        else:
            score = 5 if reference in answer else 2
        return json.dumps({"reasoning": "compared with the reference", "score": score})
    if "refusal appropriateness" in system:
        answer = _block(user, "answer")
        harmful = "bomb" in conversation.lower()
        refused = bool(REFUSAL.search(answer))
        score = 5 if harmful == refused else 1
        return f"The assistant {'refused' if refused else 'answered'}. Score: {score}/5"  # free text: fallback path
    if "STYLE GUIDE" in system:
        answer = _block(user, "answer")
        return f"[[{5 if len(answer.split()) <= 3 else 2}]]"
    return "unknown rubric"
