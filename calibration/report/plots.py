"""The report's plots as inline SVG strings (matplotlib, no pyplot, no global backend change).

Each function returns an ``<svg>`` element ready to paste into HTML5: the XML prolog, DOCTYPE,
metadata and ``xmlns`` attributes are stripped so that the page holds no URL at all, and text stays
text (``svg.fonttype = none``) so the browser draws it with its own fonts, offline.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from calibration.schema import Verdict

from .view import BudgetCurve, Candidate, Dim, all_dims

COLORS = {Verdict.MIGRATE.value: "#1a7f37", Verdict.MORE_LABELS.value: "#b35900", Verdict.REJECT.value: "#c62828",
          "unknown": "#555555"}
BASELINES = (  # (attribute, label, marker, color)
    ("human_only", "human-only", "s", "#6a5acd"),
    ("judge_only", "judge-only", "^", "#00838f"),
    ("ppi", "PPI++", "D", "#8d6e63"),
)
NI_STYLE = {"color": "#c62828", "linestyle": "--", "linewidth": 1.2}
SUP_STYLE = {"color": "#222222", "linestyle": "-", "linewidth": 1.0}


def label(s: str, width: int = 40) -> str:
    """User text made safe for matplotlib: ``$`` would start mathtext, long names would crowd the axes."""
    s = s if len(s) <= width else s[: width - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def to_svg(fig: Figure, key: str) -> str:
    """Serialize ``fig`` as an inline ``<svg>``; ``key`` salts element ids so several SVGs share a page."""
    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": f"baton-{key}"}):
        FigureCanvasSVG(fig).print_svg(buf, metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    # matplotlib numbers its groups per figure (figure_1, axes_1, ...): prefix every id and every
    # reference to one so that several SVGs on one page keep their ids unique.
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", svg)
    return svg.strip()


def _axis_label(kind: str) -> str:
    if kind == "pairwise":
        return "win rate of candidate over incumbent (ties = 1/2)"
    if kind == "unknown":
        return "estimate"
    return "candidate mean − incumbent mean"


def _panels(cands: list[Candidate]) -> dict[tuple, list[Dim]]:
    """Dimensions grouped so that one panel shares one axis scale and one pair of threshold lines."""
    panels: dict[tuple, list[Dim]] = {}
    for d in all_dims(cands):
        panels.setdefault((d.name, d.kind, d.threshold_noninferior, d.threshold_superior), []).append(d)
    return panels


def forest_plot(cands: list[Candidate]) -> list[tuple[str, str]]:
    """One forest plot per dimension: [(dimension title, svg)].

    Rows per candidate: the Bayesian estimate (coloured by verdict, with the full-human truth as a
    star where given), the three baselines, then each segment. Lines: non-inferiority threshold
    (red dashed) and no difference (black).
    """
    out = []
    for i, ((dname, kind, ni, sup), dims) in enumerate(_panels(cands).items()):
        rows = []  # (text, estimate, interval, marker, color, size, bold)
        truths = []  # (row index, value)
        for d in dims:
            color = COLORS.get(d.verdict, COLORS["unknown"])
            b = d.bayes
            rows.append((f"{label(d.candidate)} · Bayesian", b and b.estimate, b and b.interval, "o", color, 7, True))
            if d.truth is not None and d.truth.estimate is not None:
                truths.append((len(rows) - 1, d.truth.estimate))
            for attr, name, marker, c in BASELINES:
                e = getattr(d, attr)
                rows.append((f"    {name}", e and e.estimate, e and e.interval, marker, c, 5, False))
            for s in d.segments:
                e = s.estimate
                rows.append((f"    {label(s.name, 32)}", e and e.estimate, e and e.interval, "o", "#777777", 4, False))
        height = 1.2 + 0.26 * len(rows)
        fig = Figure(figsize=(8.5, height), layout="constrained")
        ax = fig.add_subplot()
        ys = np.arange(len(rows))[::-1]
        for y, (_, est, iv, marker, color, size, _bold) in zip(ys, rows):
            if iv is not None:
                ax.plot(iv, [y, y], color=color, linewidth=2 if size >= 7 else 1.3, solid_capstyle="butt")
            if est is not None:
                ax.plot([est], [y], marker=marker, color=color, markersize=size, linestyle="none")
        for r, v in truths:
            ax.plot([v], [ys[r]], marker="*", color="#000000", markersize=10, linestyle="none",
                    label="full-human truth" if r == truths[0][0] else None)
        if ni is not None:
            ax.axvline(ni, label=f"non-inferiority margin ({ni:g})", **NI_STYLE)
        if sup is not None:
            ax.axvline(sup, label=f"no difference ({sup:g})", **SUP_STYLE)
        ax.set_yticks(ys, [r[0] for r in rows])
        for tick, r in zip(ax.get_yticklabels(), rows):
            if r[6]:
                tick.set_fontweight("bold")
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(_axis_label(kind))
        ax.set_title(f"{label(dname)} ({kind}): estimate and interval", loc="left", fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        fig.legend(loc="outside upper right", fontsize=8, ncols=4, frameon=False)
        out.append((f"{dname} ({kind})", to_svg(fig, f"forest-{i}")))
    return out


def _kde(draws: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density with Silverman's rule-of-thumb bandwidth (Silverman 1986, eq. 3.31)."""
    if draws.size > 4000:  # the curve does not change; the n x grid kernel matrix would
        draws = draws[:: math.ceil(draws.size / 4000)]
    n = draws.size
    sd = draws.std(ddof=1) if n > 1 else 0.0
    iqr = np.subtract(*np.percentile(draws, [75, 25]))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    h = 0.9 * spread * n ** (-0.2) if spread > 0 else 1e-3
    z = (grid[:, None] - draws[None, :]) / h
    return np.exp(-0.5 * z * z).sum(axis=1) / (n * h * math.sqrt(2 * math.pi))


def posterior_densities(cands: list[Candidate]) -> str | None:
    """Grid of posterior densities of the difference (rows candidates, columns dimensions), or None."""
    dims = [d for d in all_dims(cands) if len(d.draws) >= 2]
    if not dims:
        return None
    dim_names = list(dict.fromkeys(d.name for d in all_dims(cands)))
    cand_names = [c.name for c in cands if any(d.candidate == c.name for d in dims)]
    ncol, nrow = len(dim_names), len(cand_names)
    fig = Figure(figsize=(max(4.0, 3.4 * ncol), 2.5 * nrow + 0.4), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    lookup = {(d.candidate, d.name): d for d in dims}
    for r, cname in enumerate(cand_names):
        for c, dname in enumerate(dim_names):
            ax = axes[r][c]
            ax.set_title(f"{label(cname, 24)} · {label(dname, 20)}", fontsize=9, loc="left")
            d = lookup.get((cname, dname))
            if d is None:
                has_dim = any(x.candidate == cname and x.name == dname for x in all_dims(cands))
                ax.text(0.5, 0.5, "no posterior draws" if has_dim else "dimension not evaluated", ha="center",
                        va="center", transform=ax.transAxes, color="#777777")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            x = np.asarray(d.draws, dtype=float)
            lo, hi = np.percentile(x, [0.5, 99.5])
            pad = 0.15 * (hi - lo) if hi > lo else 0.05
            marks = [v for v in (d.threshold_noninferior, d.threshold_superior) if v is not None]
            grid = np.linspace(min([lo - pad, *marks]), max([hi + pad, *marks]), 256)
            dens = _kde(x, grid)
            color = COLORS.get(d.verdict, COLORS["unknown"])
            ax.plot(grid, dens, color=color, linewidth=1.5)
            if d.threshold_noninferior is not None:
                ax.fill_between(grid, dens, where=grid >= d.threshold_noninferior, color=color, alpha=0.2)
                ax.axvline(d.threshold_noninferior, **NI_STYLE)
            if d.threshold_superior is not None:
                ax.axvline(d.threshold_superior, **SUP_STYLE)
            p_ni, p_sup = d.p_noninferior, d.p_superior
            src = ""
            if p_ni is None and d.threshold_noninferior is not None:
                p_ni, src = float(np.mean(x > d.threshold_noninferior)), " (from draws)"
            if p_sup is None and d.threshold_superior is not None:
                p_sup, src = float(np.mean(x > d.threshold_superior)), " (from draws)"
            txt = "\n".join([
                f"P(non-inferior) = {p_ni:.3f}" if p_ni is not None else "P(non-inferior) n/a",
                f"P(superior) = {p_sup:.3f}" if p_sup is not None else "P(superior) n/a",
            ]) + src
            ax.text(0.02, 0.97, txt, transform=ax.transAxes, va="top", ha="left", fontsize=8,
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "#cccccc"})
            ax.set_yticks([])
            ax.set_ylim(0, dens.max() * 1.45 if dens.max() > 0 else 1)
            ax.tick_params(labelsize=8)
    fig.suptitle("Posterior of the difference (shaded: non-inferior; red dashed: margin; black: no difference)",
                 fontsize=10)
    return to_svg(fig, "posterior")


def label_budget_plot(curves: list[BudgetCurve], cands: list[Candidate]) -> str | None:
    """Interval width against the number of human labels, one line per candidate and dimension."""
    if not curves:
        return None
    dims = {(d.candidate, d.name): d for d in all_dims(cands)}
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, cv in enumerate(curves):
        n, w = zip(*cv.points)
        projected = cv.source.startswith("projected")
        line = ax.plot(n, w, linestyle="--" if projected else "-", marker=None if projected else "o", markersize=4,
                       label=f"{label(cv.candidate, 20)} · {label(cv.dimension, 16)}"
                             f"{' (projected)' if projected else ''}")[0]
        d = dims.get((cv.candidate, cv.dimension))
        if d is None or d.labels_used is None or d.bayes is None or d.bayes.interval is None:
            continue
        w0 = d.bayes.interval[1] - d.bayes.interval[0]
        ax.plot([d.labels_used], [w0], marker="o", color=line.get_color(), markersize=7, linestyle="none")
        if d.labels_needed:
            ax.axvline(d.labels_used + d.labels_needed, color=line.get_color(), linestyle=":", linewidth=1)
    # Log-log: a 1/sqrt(n) law is a straight line of slope -1/2 whatever the dimension's scale.
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("human labels (log scale)")
    ax.set_ylabel("interval width (log scale)")
    ax.set_title("Label budget: interval width against labels (dots: this run; dotted: labels asked for)",
                 loc="left", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncols=1 if len(curves) <= 12 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    return to_svg(fig, "budget")
