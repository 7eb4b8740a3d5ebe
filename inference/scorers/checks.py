"""Cheap deterministic checks, vectorised over the batch (pandas string ops and numpy, no per-row Python).

Metrics (see docs/metrics.md): check.refusal, check.empty, check.length_chars, check.length_ratio,
check.markdown, check.language, check.format_ok.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from inference.scorers.base import long_form, require, text_series
from inference.scorers.config import ChecksConfig

# Phrases that open a refusal. Searched in the first `refusal_window_chars` only: an answer that quotes such a
# phrase deep inside (e.g. explaining what an assistant cannot do) is not a refusal.
REFUSAL_PHRASES = [
    r"i(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:'t|not)|won't|am unable|will not|must decline)",
    r"i (?:can(?:'t|not)|won't|will not|am unable to|am not able to) (?:help|assist|comply|provide|do that|fulfil|fulfill|answer|support|create|generate|share|write)",
    r"i must (?:decline|refuse)",
    r"(?:as an ai(?: language model)?|as a language model),? i (?:can(?:'t|not)|do not|don't|am not)",
    r"i(?:'m| am) not (?:able|allowed|permitted) to",
    r"(?:sorry|apologies),? (?:but )?(?:i|we) (?:can(?:'t|not)|won't|am unable)",
    r"this (?:request|content) (?:violates|goes against)",
    r"i (?:do not|don't) (?:feel comfortable|think i (?:can|should))",
]

# Markdown constructs: headings, lists, fences, emphasis, links, tables, block quotes.
_MARKDOWN = re.compile(
    r"(?m)^\s{0,3}#{1,6}\s+\S|^\s*[-*+]\s+\S|^\s*\d+[.)]\s+\S|```|\*\*[^*\n]+\*\*|__[^_\n]+__|\[[^\]\n]+\]\([^)\s]+\)"
    r"|^\s*\|.+\|\s*$|^\s*>\s+\S"
)

# Language: stopword hits per language for Latin-script text; script share for the others.
_STOPWORDS = {
    "en": "the and is are of to in that it for with this was you have not be on",
    "es": "el la los las de que y en es por para una con del se lo como",
    "fr": "le la les des et est une que dans pour pas qui sur avec du au",
    "de": "der die das und ist nicht ein eine zu mit den von auf sich dem ich",
    "it": "il lo la gli le di che e è per una non con del della sono",
    "pt": "o a os as de que e é do da em um uma para com não por",
}
_SCRIPTS = {"cyrillic": r"[\u0400-\u04FF]", "cjk": r"[\u3040-\u30FF\u3400-\u9FFF\uAC00-\uD7AF]", "arabic": r"[\u0600-\u06FF]"}
LANGUAGES = sorted(_STOPWORDS) + sorted(_SCRIPTS)
# (word, language row in detect_language's score matrix): a word may belong to several languages.
_STOP_TABLE = pd.DataFrame([(w, len(_SCRIPTS) + i) for i, words in enumerate(_STOPWORDS.values()) for w in words.split()],
                           columns=["word", "lang_idx"])


class Checks:
    """Ray Data stage: the joined batch in, long-form check.* score rows out."""

    required = ["request_id", "model", "response", "incumbent_response"]

    def __init__(self, config: ChecksConfig | None = None):
        self.config = config or ChecksConfig()
        if self.config.language is not None and self.config.language not in LANGUAGES:
            raise ValueError(f"checks.language: {self.config.language!r} is not one of {LANGUAGES}")
        phrases = REFUSAL_PHRASES + list(self.config.refusal_patterns)
        for p in self.config.refusal_patterns:
            re.compile(p)  # a bad pattern fails here, naming itself, not mid-run
        self._refusal = re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require(batch, self.required, "checks")
        return long_form(batch, self.metrics(batch) if self.config.enabled else {})

    def metrics(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        cfg = self.config
        resp = text_series(batch, "response")
        has = resp.notna().to_numpy()
        text = resp.fillna("").astype(str)
        # Curly apostrophes are common in model output; normalise before matching.
        head = text.str.slice(0, cfg.refusal_window_chars).str.replace("\u2019", "'", regex=False)
        length = text.str.len().to_numpy(dtype="float64")
        inc = text_series(batch, "incumbent_response")
        inc_len = inc.fillna("").astype(str).str.len().to_numpy(dtype="float64")
        inc_ok = inc.notna().to_numpy() & (inc_len > 0)

        out: dict[str, np.ndarray] = {}
        out["check.refusal"] = _masked(head.str.contains(self._refusal, regex=True).to_numpy(dtype="float64"), has)
        out["check.empty"] = _masked((text.str.strip().str.len() == 0).to_numpy(dtype="float64"), has)
        out["check.length_chars"] = _masked(length, has)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["check.length_ratio"] = _masked(length / np.where(inc_ok, inc_len, np.nan), has & inc_ok)
        markdown = text.str.contains(_MARKDOWN, regex=True).to_numpy(dtype="float64")
        if cfg.markdown != "ignore":
            out["check.markdown"] = _masked(markdown, has)
        if cfg.language is not None:
            out["check.language"] = _masked((detect_language(text) == cfg.language).astype("float64"), has)
        format_ok = np.ones(len(batch))
        constrained = False
        if cfg.markdown in ("require", "forbid"):
            constrained = True
            format_ok *= markdown if cfg.markdown == "require" else 1.0 - markdown
        if cfg.max_chars is not None:
            constrained = True
            format_ok *= (length <= cfg.max_chars).astype("float64")
        if constrained:
            out["check.format_ok"] = _masked(format_ok, has)
        return out


def detect_language(text: pd.Series) -> np.ndarray:
    """Most likely language per text (a heuristic: script share, then stopword share); 'unknown' when no signal.

    Vectorised: the words of all rows are tokenised in one pass, exploded and joined with the stopword lists, and
    counted per (row, language); script shares are counted only on rows that are not pure ASCII. The first 600
    characters decide: enough for a language signal, and it bounds the cost per row.
    """
    lower = text.fillna("").astype(str).str.slice(0, 600).str.lower().reset_index(drop=True)
    n = len(lower)
    langs = list(_SCRIPTS) + list(_STOPWORDS)
    scores = np.zeros((len(langs), n))
    non_ascii = ~lower.str.isascii().to_numpy(dtype=bool)
    if non_ascii.any():
        sub = lower[non_ascii]
        letters = np.maximum(sub.str.count(r"[^\W\d_]").to_numpy(dtype="float64"), 1)
        for i, lang in enumerate(_SCRIPTS):
            share = sub.str.count(_SCRIPTS[lang]).to_numpy(dtype="float64") / letters
            scores[i, non_ascii] = np.where(share > 0.3, 1e6 * share, 0.0)  # a script beats any stopword share
    words = lower.str.findall(r"[^\W\d_]+")
    counts = words.str.len().fillna(0).to_numpy(dtype="float64")
    tokens = words.explode().dropna()
    if len(tokens):
        hits = pd.DataFrame({"row": tokens.index.to_numpy(), "word": tokens.to_numpy()}).merge(_STOP_TABLE, on="word")
        if len(hits):
            per = hits.groupby(["lang_idx", "row"]).size()
            li, rows = per.index.get_level_values(0).to_numpy(), per.index.get_level_values(1).to_numpy()
            scores[li, rows] = per.to_numpy() / np.maximum(counts[rows], 1)
    best = np.argmax(scores, axis=0)
    found = np.take_along_axis(scores, best[None, :], axis=0)[0] > 0
    return np.where(found, np.array(langs, dtype=object)[best], "unknown")


def _masked(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, values, np.nan)
