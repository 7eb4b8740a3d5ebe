"""LLM-as-judge: versioned rubrics per dimension, absolute scores and position-swapped pairwise verdicts.

The judge model runs through the same engines as the candidates (``inference.engines.make_engine``): an API
judge through the rate-limited actors, or vLLM on GPUs. Each answer is parsed by ``verdicts``; an unparseable
answer (or an engine error) becomes a row with ``value`` NaN and ``error`` naming the reason plus the raw answer
truncated, never a guessed score. ``split_failures`` separates them for the quarantine table.

Metrics: ``judge.abs.<dim>`` (rubric scale, e.g. 1-5) for every response, the incumbent's included;
``judge.pairwise.<dim>.ab`` (candidate shown as A) and ``.ba`` (incumbent shown as A) for candidate rows with an
incumbent answer, oriented candidate-better: 1 candidate better, 0.5 tie, 0 incumbent better.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from inference.scorers.base import INPUT_COLUMNS, require, text_series
from inference.scorers.config import JudgeConfig
from inference.scorers.rubrics import Rubric, load_rubric, render
from inference.scorers.verdicts import parse_score, parse_winner, verdict_value

JUDGE_COLUMNS = ["request_id", "model", "metric", "value", "error", "raw"]
_NO_REFERENCE = "(No reference answer is available: rely on your own knowledge.)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[... cut: {len(text) - limit} more characters]"


def render_conversation(messages: object, limit: int) -> str:
    """A transcript of the conversation being answered (roles kept, so a system prompt reads as one)."""
    if messages is None:
        return ""
    if isinstance(messages, np.ndarray):
        messages = messages.tolist()
    lines = []
    for m in messages or []:
        role = str(m.get("role", "user")) if isinstance(m, dict) else "user"
        content = str(m.get("content", "")) if isinstance(m, dict) else str(m)
        lines.append(f"[{role}]\n{content}")
    return _cut("\n\n".join(lines), limit)


def _reference_block(reference: str | None, incumbent: str | None, limit: int) -> str:
    if reference is not None:
        return ("<reference_answer>\n" + _cut(reference, limit) + "\n</reference_answer>\n"
                "The reference answer is correct: grade against it.")
    if incumbent is not None:
        return ("<reference_answer source=\"production model\">\n" + _cut(incumbent, limit) + "\n</reference_answer>\n"
                "This reference comes from the production model and may itself contain mistakes: use it as a guide, "
                "not as ground truth.")
    return _NO_REFERENCE


def build_judge_engine(engine, structured_output: bool = True) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A judge's engine (an openai or vllm engine config) through the candidates' engines, built once per actor."""
    from inference.engines import make_engine

    if structured_output and engine.kind == "openai" and engine.response_format is None:
        # JSON mode where the API has it; the judges' prompts ask for JSON either way.
        engine = engine.model_copy(update={"response_format": {"type": "json_object"}})
    return make_engine(engine)


class Judge:
    """Ray Data stage: the joined batch in, judge score rows out (with ``error``/``raw`` set on failures)."""

    required = INPUT_COLUMNS

    def __init__(self, config: JudgeConfig, engine: Callable[[pd.DataFrame], pd.DataFrame] | None = None):
        self.config = config
        self.rubrics: dict[str, Rubric] = {
            d.name: load_rubric(d.name, d.version, config.rubrics_dir) for d in config.dimensions
        }
        self._engine = engine

    # -- records -----------------------------------------------------------------------------------------
    def versions(self) -> dict[str, dict]:
        """Rubric versions used, for the stage stats and the run manifest."""
        return {name: {"rubric": r.id, "sha256": r.sha256} for name, r in self.rubrics.items()}

    @property
    def engine(self) -> Callable[[pd.DataFrame], pd.DataFrame]:
        if self._engine is None:
            if self.config.engine is None:
                raise ValueError("judge.engine is not configured")
            self._engine = build_judge_engine(self.config.engine, self.config.structured_output)
        return self._engine

    # -- prompts -----------------------------------------------------------------------------------------
    def prompts(self, batch: pd.DataFrame) -> pd.DataFrame:
        """One row per judge call: key (unique in the batch), request_id, model, metric, candidate_first, messages."""
        require(batch, self.required, "judge")
        cfg, limit = self.config, self.config.max_answer_chars
        resp, inc, ref = (text_series(batch, c) for c in ("response", "incumbent_response", "reference"))
        rows: list[dict] = []
        for pos in range(len(batch)):
            answer = resp.iat[pos]
            if answer is None:
                continue
            rid, model = str(batch["request_id"].iat[pos]), str(batch["model"].iat[pos])
            conversation = render_conversation(batch["messages"].iat[pos], 2 * limit)
            values = {
                "conversation": conversation, "answer": _cut(answer, limit),
                "style_guide": cfg.style_guide or "", "reference_block": "",
            }
            for dim in cfg.dimensions:
                rubric = self.rubrics[dim.name]
                system = render(rubric.system, values)
                if dim.absolute:
                    values["reference_block"] = _reference_block(ref.iat[pos], inc.iat[pos], limit)
                    rows.append(self._row(pos, rid, model, f"judge.abs.{dim.name}", None, system,
                                          render(rubric.absolute, values)))
                if dim.pairwise and inc.iat[pos] is not None:
                    values["reference_block"] = _reference_block(ref.iat[pos], None, limit)
                    for suffix, first in (("ab", True), ("ba", False)):
                        a, b = (answer, inc.iat[pos]) if first else (inc.iat[pos], answer)
                        pair = {**values, "answer_a": _cut(a, limit), "answer_b": _cut(b, limit)}
                        rows.append(self._row(pos, rid, model, f"judge.pairwise.{dim.name}.{suffix}", first, system,
                                              render(rubric.pairwise, pair)))
        return pd.DataFrame(rows, columns=["key", "request_id", "model", "metric", "candidate_first", "messages"])

    @staticmethod
    def _row(pos: int, rid: str, model: str, metric: str, first: bool | None, system: str, user: str) -> dict:
        return {"key": f"{pos}:{metric}", "request_id": rid, "model": model, "metric": metric,
                "candidate_first": first, "messages": [{"role": "system", "content": system},
                                                      {"role": "user", "content": user}]}

    # -- the stage ---------------------------------------------------------------------------------------
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        prompts = self.prompts(batch)
        if prompts.empty:
            return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else object) for c in JUDGE_COLUMNS})
        answers = self.engine(pd.DataFrame({"request_id": prompts["key"], "messages": prompts["messages"]}))
        require(answers, ["request_id", "response"], "judge engine output")
        answers = answers.drop_duplicates("request_id").set_index("request_id")
        texts = answers["response"].reindex(prompts["key"]).astype(object).to_numpy()
        errors = (answers["error"].reindex(prompts["key"]).astype(object).to_numpy()
                  if "error" in answers.columns else np.full(len(prompts), None, dtype=object))
        return self.parse(prompts, texts, errors)

    def parse(self, prompts: pd.DataFrame, texts: np.ndarray, errors: np.ndarray) -> pd.DataFrame:
        """Judge answers (aligned with ``prompts``) to score rows; failures keep the reason and the raw answer."""
        values = np.full(len(prompts), np.nan)
        reasons: list[str | None] = [None] * len(prompts)
        raws: list[str | None] = [None] * len(prompts)
        keep = self.config.raw_chars
        for i, (metric, first, text, err) in enumerate(zip(prompts["metric"], prompts["candidate_first"], texts, errors)):
            text = None if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
            if err is not None and not (isinstance(err, float) and np.isnan(err)):
                reasons[i], raws[i] = f"engine error: {str(err)[:300]}", None if text is None else text[:keep]
                continue
            if metric.startswith("judge.abs."):
                rubric = self.rubrics[metric.split(".", 2)[2]]
                score, reason = parse_score(text, rubric.scale_min, rubric.scale_max)
                if score is not None:
                    values[i] = score
            else:
                side, reason = parse_winner(text)
                if side is not None:
                    values[i] = verdict_value(side, bool(first))
            if reason is not None:
                reasons[i], raws[i] = reason, None if text is None else text[:keep]
        return pd.DataFrame({
            "request_id": prompts["request_id"].to_numpy(dtype=object), "model": prompts["model"].to_numpy(dtype=object),
            "metric": prompts["metric"].to_numpy(dtype=object), "value": values,
            "error": pd.Series(reasons, dtype=object), "raw": pd.Series(raws, dtype=object),
        })


def split_failures(judged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(score rows, failure rows): failures are the rows with an error; scores drop ``error`` and ``raw``."""
    failed = judged["error"].notna().to_numpy()
    scores = judged.loc[~failed, ["request_id", "model", "metric", "value"]].reset_index(drop=True)
    return scores, judged.loc[failed].reset_index(drop=True)
