"""Seeded simulators of scored traffic with human labels, for coverage tests and benchmarks.

It lives in tests/support (moved from calibration/, which holds only what a run uses): tests import it as
``tests.support.simulate`` and the benchmarks the same way (each benchmark already puts the repository root on
sys.path), so one copy serves both and nothing in calibration/, inference/ or jobs/ can depend on it.

Pairwise world: each (request, candidate) has a latent human preference ``l = a_c + u_{c,s} + e`` (e ~ N(0,1)).
Each annotator labels ``1`` (candidate better), ``0.5`` (tie), ``0`` from ``l + logistic noise`` cut at +-``tie``.
Two position orders of one LLM judge see ``l + bias_c +- position + N(0, noise)`` and answer 1/0.5/0 the same way
(``bias_c`` > 0 = the judge favours candidate c; the position term favours the response shown first, which the
ab order shows the candidate first); a garbage share of verdicts is missing. A similarity metric is
``0.3 l + N(0, 1)``. The finite-population truth is the mean over all requests of the mean of all ``n_annot``
annotators' labels, of which only ``n_labels`` requests per candidate are revealed.

Absolute (binary, ordinal) worlds: per (request, model) a latent quality ``q = a_m + u_{m,s} + d_r + e`` whose
request difficulty ``d_r`` is shared by the incumbent's and the candidates' answers (paired), annotator labels
``q + logistic noise`` cut at 0 (binary) or at four cut-points (ordinal 1..5), a judge score ``q + bias_m + N(0,
noise)`` (less the share of ``d_r`` it misses, ``judge_sees_difficulty``) and a length ratio only for candidates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit


@dataclass
class SimTables:
    scores: pd.DataFrame
    labels: pd.DataFrame
    traffic: pd.DataFrame
    truth: dict[str, float]  # candidate -> finite-population truth
    truth_seg: dict[str, dict[str, float]]
    design: pd.DataFrame | None = None  # request_id, model, inclusion_prob of every unit the design could choose


def _ordinal3(latent: np.ndarray, tie: float, rng: np.random.Generator) -> np.ndarray:
    z = latent + rng.logistic(size=latent.shape)
    return np.where(z > tie, 1.0, np.where(z < -tie, 0.0, 0.5))


def _traffic(rng: np.random.Generator, n_requests: int, regions) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Request ids, each request's region index (uniform) and the traffic table with its ``region`` column."""
    rid = np.array([f"r{i:06d}" for i in range(n_requests)], dtype=object)
    seg = rng.integers(0, len(regions), n_requests)
    return rid, seg, pd.DataFrame({"request_id": rid, "region": np.array(regions, dtype=object)[seg]})


def _labels(rng: np.random.Generator, rid: np.ndarray, ann: np.ndarray, n_labels: int, model: str,
            dimension: str) -> pd.DataFrame:
    """Labels of ``n_labels`` requests drawn without replacement: every annotator's value ``ann[request, a]``."""
    pick = rng.choice(len(rid), n_labels, replace=False)
    n_annot = ann.shape[1]
    return pd.DataFrame({"request_id": np.repeat(rid[pick], n_annot), "model": model, "dimension": dimension,
                         "value": ann[pick].ravel(), "annotator": np.tile([f"a{j}" for j in range(n_annot)], n_labels)})


def simulate_pairwise(seed: int, n_requests: int = 400, n_labels: int = 60, n_annot: int = 3,
                      candidates=("cand-a", "cand-b"), cand_effect=(0.3, -0.1), judge_bias=(0.8, 0.0),
                      position_bias: float = 0.5, judge_noise: float = 0.7, segments=("eu", "us", "apac"),
                      seg_sd: float = 0.3, tie: float = 0.8, garbage: float = 0.05,
                      incumbent: str = "incumbent", seg_effects=None) -> SimTables:
    """``seg_effects`` (per segment) fixes the segment offsets instead of drawing them (same for all candidates)."""
    rng = np.random.default_rng(seed)
    rid, seg, traffic = _traffic(rng, n_requests, segments)
    score_parts, label_parts, truth, truth_seg = [], [], {}, {}
    for ci, c in enumerate(candidates):
        u = rng.normal(0, seg_sd, len(segments)) if seg_effects is None else np.asarray(seg_effects, float)
        lat = cand_effect[ci] + u[seg] + rng.normal(0, 1, n_requests)
        ann = _ordinal3(np.repeat(lat[:, None], n_annot, axis=1), tie, rng)  # (N, A)
        per_req = ann.mean(axis=1)
        truth[c] = float(per_req.mean())
        truth_seg[c] = {f"region={s}": float(per_req[seg == k].mean()) for k, s in enumerate(segments)
                        if (seg == k).any()}
        for name, pos in (("judge.pairwise.quality.ab", position_bias), ("judge.pairwise.quality.ba", -position_bias)):
            jl = lat + judge_bias[ci] + pos + rng.normal(0, judge_noise, n_requests)
            v = np.where(jl > tie, 1.0, np.where(jl < -tie, 0.0, 0.5))
            v[rng.random(n_requests) < garbage] = np.nan
            score_parts.append(pd.DataFrame({"request_id": rid, "model": c, "metric": name, "value": v}))
        score_parts.append(pd.DataFrame({"request_id": rid, "model": c, "metric": "embed.sim_incumbent",
                                         "value": 0.3 * lat + rng.normal(0, 1, n_requests)}))
        label_parts.append(_labels(rng, rid, ann, n_labels, c, "quality"))
    return SimTables(pd.concat(score_parts, ignore_index=True), pd.concat(label_parts, ignore_index=True),
                     traffic, truth, truth_seg)


ORDINAL_CUTS = (-2.0, -0.7, 0.7, 2.0)  # latent cut-points of the ordinal world's 1..5 scale
ABSOLUTE_DIMENSION = {"binary": "correctness", "ordinal": "style"}


def simulate_absolute(seed: int, kind: str = "binary", n_requests: int = 400, n_labels: int = 60, n_annot: int = 1,
                      candidates=("cand-a",), model_effect=(0.0, 0.2), judge_bias=(0.0, 0.6), judge_noise=0.8,
                      segments=("eu", "us"), seg_sd=0.3, shared_sd: float = 1.0, cell_sd: float = 0.7,
                      cuts=ORDINAL_CUTS, incumbent: str = "incumbent", judge_sees_difficulty: float = 1.0) -> SimTables:
    """Absolute dimension (``binary`` correctness or ``ordinal`` 1..5 style) where incumbent and candidates answer
    the same requests: quality ``q = a_m + u_{m,s} + d_r + N(0, cell_sd)`` with a request difficulty
    ``d_r ~ N(0, shared_sd)`` shared by every model's answer. Annotators label ``q + logistic noise`` cut at 0
    (binary) or at ``cuts`` (ordinal, 1 + number of cuts exceeded). A judge scores
    ``q - (1 - judge_sees_difficulty) d_r + bias_m + N(0, noise)``: with ``judge_sees_difficulty`` below 1 part of
    the shared difficulty is invisible to the judge (a hard question both models fail in a way the judge does not
    notice), which only the labels of a request's two answers can show. A length ratio exists only for candidates.
    ``n_labels`` requests are labelled for every model (paired)."""
    rng = np.random.default_rng(seed)
    rid, seg, traffic = _traffic(rng, n_requests, segments)
    difficulty = rng.normal(0, shared_sd, n_requests)
    models = [incumbent, *candidates]
    dim = ABSOLUTE_DIMENSION[kind]
    score_parts, label_parts, means = [], [], {}
    pick = rng.choice(n_requests, n_labels, replace=False)
    for mi, m in enumerate(models):
        u = rng.normal(0, seg_sd, len(segments))
        q = model_effect[mi] + u[seg] + difficulty + cell_sd * rng.normal(0, 1, n_requests)
        z = q[:, None] + rng.logistic(size=(n_requests, n_annot))
        ann = (z > 0).astype(float) if kind == "binary" else 1.0 + (z[:, :, None] > np.asarray(cuts)).sum(axis=2)
        means[m] = ann.mean(axis=1)
        js = q - (1.0 - judge_sees_difficulty) * difficulty + judge_bias[mi] + rng.normal(0, judge_noise, n_requests)
        score_parts.append(pd.DataFrame({"request_id": rid, "model": m, "metric": f"judge.abs.{dim}", "value": js}))
        if mi > 0:
            score_parts.append(pd.DataFrame({"request_id": rid, "model": m, "metric": "check.length_ratio",
                                             "value": rng.lognormal(0, 0.3, n_requests)}))
        label_parts.append(pd.DataFrame({
            "request_id": np.repeat(rid[pick], n_annot), "model": m, "dimension": dim,
            "value": ann[pick].ravel(), "annotator": np.tile([f"a{j}" for j in range(n_annot)], n_labels)}))
    truth, truth_seg = {}, {}
    for c in candidates:
        d = means[c] - means[incumbent]
        truth[c] = float(d.mean())
        truth_seg[c] = {f"region={s}": float(d[seg == k].mean()) for k, s in enumerate(segments) if (seg == k).any()}
    return SimTables(pd.concat(score_parts, ignore_index=True), pd.concat(label_parts, ignore_index=True),
                     traffic, truth, truth_seg)


def simulate_binary(seed: int, **kwargs) -> SimTables:
    """Binary absolute dimension ``correctness`` (:func:`simulate_absolute`); model 0 of the effects is the
    incumbent."""
    return simulate_absolute(seed, "binary", **kwargs)


def simulate_ordinal(seed: int, **kwargs) -> SimTables:
    """Ordinal absolute dimension ``style`` on a 1..5 scale (:func:`simulate_absolute`)."""
    return simulate_absolute(seed, "ordinal", **kwargs)


def coverage_study(n_reps: int, seed0: int = 0, confidence: float = 0.9, kind: str = "pairwise",
                   draws: int = 500, tune: int = 500, blocks_per_fit: int = 25, paired: bool = True,
                   on_fit=None, **sim_kwargs) -> pd.DataFrame:
    """Seeded repeated simulation: one row per (replicate, candidate) with coverage and widths.

    Replicates are fitted as independent blocks of one vectorised model (``blocks_per_fit`` per NUTS run), which
    is exactly the per-replicate posterior because the blocks share no parameter. ``paired=False`` fits absolute
    dimensions without the shared request effect (for comparison). The human-only interval beside it carries the
    finite-population correction, so both target the scored requests' value (``human_fpc_*``; ``human_*`` is the
    plain population interval). ``on_fit(rows so far)`` is called after each vectorised fit.
    """
    from calibration.baselines import human_only
    from calibration.data import prepare
    from calibration.dispersion import pearson_dispersion
    from calibration.estimands import aggregate, thin_params
    from calibration.models import fit

    sim = {"pairwise": simulate_pairwise, "binary": simulate_binary, "ordinal": simulate_ordinal}[kind]
    dim = "quality" if kind == "pairwise" else ABSOLUTE_DIMENSION[kind]
    levels = [1, 2, 3, 4, 5] if kind == "ordinal" else None
    rows = []
    a = (1 - confidence) / 2
    for start in range(0, n_reps, blocks_per_fit):
        reps = list(range(start, min(n_reps, start + blocks_per_fit)))
        tabs = [sim(seed0 + r, **sim_kwargs) for r in reps]
        blocks = [prepare(t.scores, t.labels, "incumbent", None, dim, kind, t.traffic, ["region"], levels=levels)
                  for t in tabs]
        idata, params = fit(blocks, draws=draws, tune=tune, seed=seed0 + start, paired=paired)
        div = int(idata.sample_stats["diverging"].to_numpy().sum())
        rng = np.random.default_rng(seed0 + start)
        for b, (r, t, d) in enumerate(zip(reps, tabs, blocks)):
            p = thin_params(params, b, 1000, rng)
            # as calibration.pipeline.summarise_dimension does
            p, disp = pearson_dispersion(d, p, rng=np.random.default_rng([seed0 + r, 1]))
            est = aggregate(d, p, rng)
            for ci, c in enumerate(d.candidates):
                lo, hi = np.quantile(est.fp[:, ci], [a, 1 - a])
                plo, phi = np.quantile(est.pop[:, ci], [a, 1 - a])
                # like with like: human_only's `interval` is for the scored requests (finite-population correction)
                ho = human_only(d, ci, 1 - confidence)
                hp = ho.get("interval_population") or ho["interval"]
                hf = ho["interval"]  # already for the scored requests: baselines.human_only applies sqrt(1 - n/N)
                truth = t.truth[c]
                rows.append({"rep": r, "candidate": c, "truth": truth, "estimate": float(est.fp[:, ci].mean()),
                             "covered": bool(lo <= truth <= hi), "width": float(hi - lo),
                             "human_covered": bool(ho["interval"][0] <= truth <= ho["interval"][1]),
                             "human_width": float(ho["interval"][1] - ho["interval"][0]),
                             "width_population": float(phi - plo), "human_width_population": float(hp[1] - hp[0]),
                             "human_fpc_covered": bool(hf[0] <= truth <= hf[1]), "human_fpc_width": hf[1] - hf[0],
                             "fit_divergences": div, "dispersion": disp.get("per_model", {}).get(c, np.nan)})
        if on_fit is not None:  # progress: the rows so far, after each vectorised fit
            on_fit(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def simulate_design(seed: int, design_name: str = "active", n_requests: int = 600, n_labels: int = 60,
                    candidate: str = "cand-a", incumbent: str = "incumbent", tau: float = 0.1) -> SimTables:
    """Pairwise world where the calibration model is misspecified and the labels come from an informative design.

    A judge score ``x ~ N(0, 1)`` drives the human preference through a step, not the model's logistic:
    ``P(candidate better) = 0.35`` below ``x = 0`` and ``0.8`` above (ties with probability 0.15 throughout).
    The ``active`` design labels where a naive predictor ``logistic(1.5 x)`` is least sure (near ``x = 0``),
    floored at ``tau n / N``; ``stratified`` splits the traffic at ``x = 0`` into two regions and takes 3/4 of the
    labels from the upper one. Labels carry their ``inclusion_prob`` and ``batch``; ``design`` holds every unit's.
    A linear ordered logistic fitted to such labels as if they were a random sample mis-predicts the under-sampled
    units; with ``log pi`` as a covariate or ``1 / pi`` weights it does not (calibration.design)."""
    from calibration import design

    rng = np.random.default_rng(seed)
    rid = np.array([f"r{i:06d}" for i in range(n_requests)], dtype=object)
    x = rng.normal(0, 1, n_requests)
    upper = x > 0
    p_win = np.where(upper, 0.8, 0.35)
    u = rng.random(n_requests)
    label = np.where(u < 0.15, 0.5, np.where(u < 0.15 + 0.85 * p_win, 1.0, 0.0))
    region = np.where(upper, "high", "low").astype(object)
    if design_name == "active":
        idx, pi = design.active_design(design.bernoulli_sd(expit(1.5 * x)) ** 2, n_labels, rng, tau=tau)
    elif design_name == "stratified":
        n_hi = int(round(0.75 * n_labels))
        alloc = {"high": n_hi, "low": n_labels - n_hi}
        pi = np.where(upper, alloc["high"] / max(upper.sum(), 1), alloc["low"] / max((~upper).sum(), 1))
        idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(region == r), alloc[r], replace=False)
                                      for r in ("high", "low")]))
    else:
        idx, pi = design.random_design(n_requests, n_labels, rng)
    scores = pd.DataFrame({"request_id": rid, "model": candidate, "metric": "judge.pairwise.quality", "value": x})
    labels = pd.DataFrame({"request_id": rid[idx], "model": candidate, "dimension": "quality", "value": label[idx],
                           "annotator": "a0", "inclusion_prob": pi[idx], "batch": design_name})
    traffic = pd.DataFrame({"request_id": rid, "region": region})
    return SimTables(scores, labels, traffic, {candidate: float(label.mean())},
                     {candidate: {f"region={r}": float(label[region == r].mean()) for r in ("high", "low")}},
                     pd.DataFrame({"request_id": rid, "model": candidate, "inclusion_prob": pi}))


MISSPEC_WORLDS = ("well_specified", "segment_judge", "nonlinear", "style")


def simulate_misspec(seed: int, world: str = "well_specified", n_requests: int = 400, n_labels: int = 50,
                     n_annot: int = 3, candidates=("cand-inferior", "cand-ok"), cand_effect=(-0.4, 0.2),
                     segments=("eu", "us", "apac"), seg_sd: float = 0.2, tie: float = 0.8, judge_noise: float = 0.3,
                     position_bias: float = 0.3) -> SimTables:
    """Pairwise worlds for the guards benchmark: the human side is :func:`simulate_pairwise`'s (latent preference
    ``l = a_c + u_{c,s} + e``, three annotators), the judge is misspecified for the calibration model.

    With the default effects the human win rate is about 0.43 for ``cand-inferior`` (inferior beyond a 0.05 margin)
    and 0.54 for ``cand-ok``. Worlds (``jl`` is the judge's latent, cut at +-``tie`` into 1 / 0.5 / 0 like the
    humans, in two position orders):
    - ``well_specified``: ``jl = l + N(0, judge_noise)``, what the model assumes (a linear logit relation);
    - ``segment_judge``: judge quality differs by segment: in the last segment the judge does not see the answer's
      quality and prefers the candidate (``jl = 1.5 + N(0, judge_noise)``), elsewhere as well_specified;
    - ``nonlinear``: a continuous judge score, a non-linear (cubic, saturating) function of the preference:
      ``x = tanh(l^3 / 2) + N(0, 0.15)``, plus a 3-level verdict of ``sign(l) l^2``;
    - ``style``: the judge favours the candidate's style: on a random half of the requests the candidate answers in
      a style the humans mildly dislike (``l -= 0.3``) and the judge likes (``jl += 2``); the style is not a metric.
    """
    if world not in MISSPEC_WORLDS:
        raise ValueError(f"world must be one of {MISSPEC_WORLDS}, got {world!r}")
    rng = np.random.default_rng(seed)
    rid, seg, traffic = _traffic(rng, n_requests, segments)
    score_parts, label_parts, truth, truth_seg = [], [], {}, {}
    for ci, c in enumerate(candidates):
        u = rng.normal(0, seg_sd, len(segments))
        lat = cand_effect[ci] + u[seg] + rng.normal(0, 1, n_requests)
        judge_lat = lat.copy()
        if world == "style":
            styled = rng.random(n_requests) < 0.5
            lat = lat - 0.3 * styled
            judge_lat = lat + 2.0 * styled
        ann = _ordinal3(np.repeat(lat[:, None], n_annot, axis=1), tie, rng)
        per_req = ann.mean(axis=1)
        truth[c] = float(per_req.mean())
        truth_seg[c] = {f"region={s}": float(per_req[seg == k].mean()) for k, s in enumerate(segments)
                        if (seg == k).any()}
        if world == "segment_judge":
            blind = seg == len(segments) - 1
            judge_lat = np.where(blind, 1.5, judge_lat)
        if world == "nonlinear":
            judge_lat = np.sign(lat) * lat**2
            x = np.tanh(lat**3 / 2) + rng.normal(0, 0.15, n_requests)
            score_parts.append(pd.DataFrame({"request_id": rid, "model": c, "metric": "judge.score.quality",
                                             "value": x}))
        for name, pos in (("judge.pairwise.quality.ab", position_bias), ("judge.pairwise.quality.ba", -position_bias)):
            jl = judge_lat + pos + rng.normal(0, judge_noise, n_requests)
            v = np.where(jl > tie, 1.0, np.where(jl < -tie, 0.0, 0.5))
            score_parts.append(pd.DataFrame({"request_id": rid, "model": c, "metric": name, "value": v}))
        label_parts.append(_labels(rng, rid, ann, n_labels, c, "quality"))
    return SimTables(pd.concat(score_parts, ignore_index=True), pd.concat(label_parts, ignore_index=True),
                     traffic, truth, truth_seg)


def latent_for_win_rate(target: float, tie: float = 0.8) -> float:
    """Latent offset ``mu`` at which the pairwise world's expected label is ``target``: with
    ``l = mu + N(0, 1)`` and logistic annotator noise, E[label] = 1/2 + (P(z > tie) - P(z < -tie)) / 2."""
    from scipy.optimize import brentq

    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()

    def mean_label(mu):
        return float(np.sum(w * (0.5 + 0.5 * (expit(mu + x - tie) - expit(-tie - mu - x)))))

    return float(brentq(lambda mu: mean_label(mu) - target, -10, 10))


def simulate_segment_world(seed: int, win_rate, n_requests: int = 1200, n_labels: int = 300, n_annot: int = 1,
                           regions=("eu", "us", "apac", "latam", "mena", "africa"),
                           dimensions=("quality", "safety", "style"), position_bias: float = 0.5,
                           judge_noise: float = 0.7, tie: float = 0.8, candidate: str = "cand-a",
                           incumbent: str = "incumbent") -> dict[str, SimTables]:
    """Pairwise world with fixed population win rates per dimension and region (``win_rate``: dimensions x
    regions), one table set per dimension on shared traffic (requests assigned to regions uniformly).

    Each cell's latent offset is :func:`latent_for_win_rate` of its target, so the *population* truth of every
    region is exactly ``win_rate`` (``truth_seg`` holds it; the finite sample's value differs by sampling noise).
    Per dimension an LLM judge in two position orders sees ``l +- position_bias + N(0, judge_noise)``; labels of
    ``n_labels`` random requests."""
    rng = np.random.default_rng(seed)
    wr = np.asarray(win_rate, dtype=float)
    if wr.shape != (len(dimensions), len(regions)):
        raise ValueError(f"win_rate must be {len(dimensions)} x {len(regions)}")
    mu = np.vectorize(lambda t: latent_for_win_rate(t, tie))(wr)
    rid, seg, traffic = _traffic(rng, n_requests, regions)
    out = {}
    for di, dim in enumerate(dimensions):
        lat = mu[di, seg] + rng.normal(0, 1, n_requests)
        ann = _ordinal3(np.repeat(lat[:, None], n_annot, axis=1), tie, rng)
        parts = []
        for name, pos in ((f"judge.pairwise.{dim}.ab", position_bias), (f"judge.pairwise.{dim}.ba", -position_bias)):
            jl = lat + pos + rng.normal(0, judge_noise, n_requests)
            parts.append(pd.DataFrame({"request_id": rid, "model": candidate, "metric": name,
                                       "value": np.where(jl > tie, 1.0, np.where(jl < -tie, 0.0, 0.5))}))
        labels = _labels(rng, rid, ann, n_labels, candidate, dim)
        per_req = ann.mean(axis=1)
        out[dim] = SimTables(pd.concat(parts, ignore_index=True), labels, traffic, {candidate: float(per_req.mean())},
                             {candidate: {f"region={r}": float(wr[di, k]) for k, r in enumerate(regions)}})
    return out
