"""Versioned rubric files: ``rubrics/<name>.v<version>.md`` hold the whole judge prompt of one dimension.

A file is YAML front matter (name, version, scale_min, scale_max, description) and three sections introduced by
``=== system ===``, ``=== absolute ===`` and ``=== pairwise ===``. Placeholders are ``{{conversation}}``,
``{{answer}}``, ``{{answer_a}}``, ``{{answer_b}}``, ``{{reference_block}}`` and ``{{style_guide}}``. A run
records the file id (``correctness.v1``) and the SHA-256 of its bytes, so an edited file is never mistaken for
the version it replaced.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

BUILTIN_DIR = Path(__file__).with_name("rubrics")
_SECTION = re.compile(r"^=== (system|absolute|pairwise) ===[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class RubricError(ValueError):
    """A rubric file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    scale_min: int
    scale_max: int
    description: str
    system: str
    absolute: str
    pairwise: str
    sha256: str
    path: str

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"


def load_rubric(name: str, version: int, rubrics_dir: str | None = None) -> Rubric:
    """Load ``<name>.v<version>.md`` from ``rubrics_dir`` if it holds it, else from the built-in folder."""
    candidates = ([Path(rubrics_dir)] if rubrics_dir else []) + [BUILTIN_DIR]
    for folder in candidates:
        path = folder / f"{name}.v{version}.md"
        if path.is_file():
            return parse_rubric(path.read_bytes(), str(path))
    tried = ", ".join(str(f / f"{name}.v{version}.md") for f in candidates)
    raise RubricError(f"rubric {name}.v{version} not found (looked for {tried})")


def parse_rubric(raw: bytes, source: str) -> Rubric:
    text = raw.decode("utf-8")
    if not text.startswith("---\n"):
        raise RubricError(f"{source}: must start with YAML front matter between '---' lines")
    try:
        _, front, body = text.split("---\n", 2)
        meta = yaml.safe_load(front) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise RubricError(f"{source}: unreadable front matter ({exc})") from None
    for key in ("name", "version", "scale_min", "scale_max"):
        if key not in meta:
            raise RubricError(f"{source}: front matter is missing {key!r}")
    parts = _SECTION.split(body)
    sections = {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}
    for key in ("system", "absolute", "pairwise"):
        if key not in sections:
            raise RubricError(f"{source}: missing section '=== {key} ==='")
    if not int(meta["scale_min"]) < int(meta["scale_max"]):
        raise RubricError(f"{source}: scale_min must be below scale_max")
    return Rubric(
        name=str(meta["name"]), version=int(meta["version"]), scale_min=int(meta["scale_min"]),
        scale_max=int(meta["scale_max"]), description=str(meta.get("description", "")),
        system=sections["system"], absolute=sections["absolute"], pairwise=sections["pairwise"],
        sha256=hashlib.sha256(raw).hexdigest(), path=source,
    )


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{{key}}`` placeholders in one pass (so text inside a value is never expanded again)."""

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise RubricError(f"placeholder {{{{{key}}}}} has no value (known: {sorted(values)})")
        return values[key]

    return _PLACEHOLDER.sub(sub, template)
