"""Fixtures for the report renderer: a synthetic decision document and a headless Chromium."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess

import numpy as np
import pytest

EVIL = "<script>alert(1)</script>"
CHROMIUM = "/usr/bin/chromium"


def _dim(rng, kind, estimate, sd, verdict, *, margin=0.05, labels=100, needed=0, segment=None,
         converged=True, gating=True, segments=None, disagreement=None):
    sup = 0.5 if kind == "pairwise" else 0.0
    ni = sup - margin
    draws = rng.normal(estimate, sd, 2000)
    lo, hi = (float(x) for x in np.quantile(draws, [0.05, 0.95]))
    return {
        "kind": kind, "gating": gating, "n_scored": 1000, "estimate": estimate, "interval": [lo, hi],
        "interval_population": [lo - 0.01, hi + 0.01], "threshold_noninferior": ni, "threshold_superior": sup,
        "p_noninferior": float(np.mean(draws > ni)), "p_superior": float(np.mean(draws > sup)),
        "verdict": verdict, "verdict_unguarded": verdict, "basis": "population", "guards": [], "design_valid": {},
        "design": {"weighted": False, "adjustment": None},
        "labels_used": labels, "labels_needed": needed, "labels_needed_segment": segment,
        "human_only": {"estimate": estimate - 0.01, "interval": [lo - 0.05, hi + 0.05], "n": labels},
        "judge_only": {"estimate": estimate + 0.03, "interval": [lo + 0.02, hi + 0.02]},
        "ppi": {"estimate": estimate - 0.005, "interval": [lo - 0.02, hi + 0.02]},
        "disagreement": disagreement,
        "segments": segments if segments is not None else {
            "app=Grammarly": {"estimate": estimate + 0.02, "interval": [lo - 0.05, hi + 0.07], "p_noninferior": 0.9,
                              "p_superior": 0.6, "labels_used": labels // 2, "n_scored": 500},
            "region=$EU": {"estimate": estimate - 0.02, "interval": [lo - 0.08, hi + 0.04], "p_noninferior": 0.8,
                           "p_superior": 0.4, "labels_used": labels // 2, "n_scored": 500},
        },
        "diagnostics": {"r_hat_max": 1.003 if converged else 1.31, "ess_bulk_min": 812.0 if converged else 11.5,
                        "divergences": 0 if converged else 37, "converged": converged,
                        "ppc": {"heldout_log_score": -0.61, "heldout_accuracy": 0.71}},
        "calibration": {"judge.pairwise.quality.ab": {"mean": 1.2, "interval": [0.8, 1.6]}},
        "posterior_draws": [float(x) for x in draws[:1000]],
    }


def make_decision() -> dict:
    rng = np.random.default_rng(0)
    cands = {
        "cand-a": {
            "verdict": "migrate",
            "reasons": ["non-inferior on quality and correctness"],
            "dimensions": {
                "quality": _dim(rng, "pairwise", 0.57, 0.02, "migrate"),
                "correctness": _dim(rng, "binary", 0.01, 0.015, "migrate"),
                "style": _dim(rng, "ordinal", 0.05, 0.05, "migrate", gating=False),
            },
        },
        EVIL: {
            "verdict": "reject",
            "reasons": [f"{EVIL} is inferior on quality"],
            "dimensions": {
                "quality": _dim(rng, "pairwise", 0.38, 0.02, "reject", disagreement=f"judge says {EVIL} wins"),
                "correctness": _dim(rng, "binary", -0.02, 0.02, "more_labels"),
            },
        },
        "cand-c|pipe": {
            "verdict": "more_labels",
            "reasons": ["quality undecided", "style sampler did not converge"],
            "dimensions": {
                "quality": _dim(rng, "pairwise", 0.47, 0.03, "more_labels", labels=60, needed=140,
                                segment="app=Grammarly",
                                disagreement="PPI++ interval excludes the Bayesian estimate"),
                "correctness": _dim(rng, "binary", 0.02, 0.01, "migrate"),
                "style": _dim(rng, "ordinal", 0.0, 0.2, "more_labels", converged=False, segments={}),
            },
        },
    }
    results = [
        {"candidate": c, "dimension": d, "estimate": v["estimate"], "interval": v["interval"],
         "interval_population": v["interval_population"], "basis": v["basis"],
         "p_noninferior": v["p_noninferior"], "p_superior": v["p_superior"], "verdict": v["verdict"],
         "labels_used": v["labels_used"], "labels_needed": v["labels_needed"],
         "human_only": v["human_only"], "ppi": v["ppi"], "judge_only": v["judge_only"]}
        for c, cv in cands.items() for d, v in cv["dimensions"].items()
    ]
    return {
        "schema_version": 1, "created_at": "2026-11-25T17:30:00Z", "incumbent": "incumbent-model",
        "margin": 0.05, "confidence": 0.9, "seed": 0,
        "verdicts": {c: v["verdict"] for c, v in cands.items()}, "candidates": cands, "results": results,
    }


def make_extras() -> dict:
    return {
        "run_id": "run-2026-11-25-demo",
        "config_summary": {"incumbent": "incumbent-model", "margin": 0.05, "judge": "judge-7b", "segments": "app"},
        "label_budget": {"cand-a": {"quality": [
            {"n_labels": 25, "interval_width": 0.16}, {"n_labels": 50, "interval_width": 0.11},
            {"n_labels": 100, "interval_width": 0.075}]}},
        "cost": {
            "generate": {"cand-a": {"tokens_in": 120000, "tokens_out": 80000, "requests": 1000,
                                    "errors": {"timeout": 3, "http_5xx": 1}, "wall_s": 95.0, "est_cost_usd": 0.42},
                         EVIL: {"tokens_in": 120000, "tokens_out": 91000, "requests": 1000, "errors": {},
                                "wall_s": 101.0}},
            "judge": {"tokens_in": 900000, "tokens_out": 20000, "requests": 6000, "errors": {"parse": 12},
                      "wall_s": 300.0, "est_cost_usd": 1.9},
        },
        "calibration_table": {
            "judge.pairwise.quality.ab": {"correlation": {"estimate": 0.62, "interval": [0.5, 0.72]},
                                          "slope": {"mean": 1.2, "interval": [0.8, 1.6]}, "n": 100},
            "embed.sim_incumbent": {"correlation": 0.18, "n": 100},
        },
        "judge_bias": {"position": {"p_a_wins_ab": 0.58, "p_a_wins_ba": 0.47, "n": 400},
                       "length": {"correlation": 0.21, "interval": [0.12, 0.3], "n": 400}},
        "truth": {"cand-a": {"quality": 0.565, "correctness": {"estimate": 0.012}}},
    }


@pytest.fixture(scope="session")
def decision() -> dict:
    return make_decision()


@pytest.fixture(scope="session")
def extras() -> dict:
    return make_extras()


@pytest.fixture(scope="session")
def rendered(decision, extras):
    """(md, html) of the full synthetic decision; rendered once, the inputs copied so tests cannot mutate them."""
    from calibration.report import render_report

    return render_report(copy.deepcopy(decision), copy.deepcopy(extras))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium, installed with apt-get once if absent; skip when that is impossible."""
    if os.path.exists(CHROMIUM):
        return _warmed(CHROMIUM)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium absent and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "chromium"]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"chromium install failed: {' '.join(cmd)}: {e}")
        if r.returncode != 0:
            pytest.skip(f"chromium install failed: {' '.join(cmd)} exited {r.returncode}: {r.stderr[-500:]}")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"apt-get installed chromium but {CHROMIUM} is missing")
    return _warmed(CHROMIUM)


def _warmed(binary: str) -> str:
    """Launch the browser once on a blank page. A fresh machine's first launch builds the font cache and the
    profile, which under the suite's load took over 30 s in CI (a test's own launch then timed out)."""
    import tempfile
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--dump-dom", "about:blank"], capture_output=True, timeout=600)
    return binary


# ---------------------------------------------------------------- a small DOM for assertions (stdlib only)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], []

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs) -> list[Node]:
        """Descendants (self included) with this tag and these attributes; class_ matches one class."""
        out = []
        for n in self.iter():
            if tag is not None and n.tag != tag:
                continue
            ok = True
            for k, v in attrs.items():
                if k == "class_":
                    ok &= v in (n.attrs.get("class") or "").split()
                else:
                    ok &= n.attrs.get(k) == v
            if ok:
                out.append(n)
        return out

    def by_id(self, id_: str) -> Node:
        found = self.find_all(id=id_)
        assert len(found) == 1, f"expected one element with id={id_!r}, found {len(found)}"
        return found[0]

    def all_text(self) -> str:
        return "".join(t for n in self.iter() for t in n.text)


class _Builder:
    def __init__(self):
        from html.parser import HTMLParser

        builder = self
        self.root = Node("#root", {}, None)
        self.cur = self.root

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                node = Node(tag, dict(attrs), builder.cur)
                builder.cur.children.append(node)
                if tag not in VOID:
                    builder.cur = node

            def handle_startendtag(self, tag, attrs):
                builder.cur.children.append(Node(tag, dict(attrs), builder.cur))

            def handle_endtag(self, tag):
                n = builder.cur
                while n is not None and n.tag != tag:
                    n = n.parent
                if n is not None and n.parent is not None:
                    builder.cur = n.parent

            def handle_data(self, data):
                builder.cur.text.append(data)

        self.parser = P(convert_charrefs=True)


def parse(html_text: str) -> Node:
    b = _Builder()
    b.parser.feed(html_text)
    b.parser.close()
    return b.root


@pytest.fixture(scope="session")
def parse_html():
    return parse


@pytest.fixture(scope="session")
def decision_factory():
    return make_decision


@pytest.fixture(scope="session")
def extras_factory():
    return make_extras
