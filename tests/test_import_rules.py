"""The house's import rules, read from the source with ast (so a lazy import inside a function counts too):

- common/ (the bottom: config base, column lists, the table reader) imports none of jobs/, inference/, calibration/;
- inference/ and calibration/ never import jobs/ or each other (jobs/ does all IO and orchestration above them);
- nobody imports the CLI (jobs.cli is the top: it loads the commands, no module loads it back).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "inference", "calibration", "jobs")
FORBIDDEN = {"common": {"jobs", "calibration", "inference"}, "inference": {"jobs", "calibration"},
             "calibration": {"jobs", "inference"}}


def _modules(path: Path) -> set[str]:
    """Every module named by an absolute import in the file (``from a.b import c`` gives a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _imports(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upwards_or_sideways(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert not {f: names for f, names in bad.items() if names}


def test_nobody_imports_the_cli():
    files = [f for p in PACKAGES for f in sorted((ROOT / p).rglob("*.py")) if f != ROOT / "jobs" / "cli.py"]
    bad = [str(f.relative_to(ROOT)) for f in files if "jobs.cli" in _modules(f)]
    assert not bad, f"import jobs.entry (the shared argument helpers) instead of jobs.cli in {bad}"


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_says_what_lives_there_and_what_it_may_import(package):
    for init in sorted((ROOT / package).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "may import" in doc.lower(), f"{init.relative_to(ROOT)}: docstring does not say what it may import"


def test_the_statistics_layer_names_no_command_line_flag():
    """calibration/ serves the run config and `baton decide` alike: its errors name fields, never flags (the CLI
    adds its flag names; jobs.decide._FLAG_HINTS)."""
    bad = []
    for f in sorted((ROOT / "calibration").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = " ".join(c.value for c in ast.walk(node.exc)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if " --" in f" {text}" and any(f"--{w}" in text for w in ("kind", "candidate", "segment", "traffic",
                                                                          "levels", "margin", "metric")):
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad
