"""The decision's one entry point, :func:`decide` (tables in, typed ``Decision`` out), and its per-dimension step
(fit, aggregate, baselines, diagnostics, verdicts -> decision-schema entries).

The pipeline's decide stage (jobs.decide.run), `baton decide` (jobs.decide.main) and the nightly job (through the
pipeline) all call :func:`decide`."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from calibration import baselines, clustered, decision, design, dispersion, guards, segments
from calibration import conversation_units as units
from calibration.config import DecisionConfig
from calibration.data import CalibrationData, prepare
from calibration.scored import Predictors, local_scored_sums
from calibration.schema import CandidateDecision, Decision, DimensionResult, ResultRow
from calibration.diagnostics import DIVERGENT_SHARE_MAX, heldout_check, psis_loo, sampler_diagnostics
from calibration.estimands import aggregate, finish, thin_params
from calibration.models import fit


@dataclass
class SamplerSettings:
    draws: int = 500
    tune: int = 500
    chains: int = 2
    cores: int | None = None
    max_posterior_draws: int = 1000
    retry_unconverged: bool = True
    # A segment gates the verdict only from this many scored requests on: in a tiny segment the finite-population
    # value is just its few (often all labelled) requests, so one bad answer would look like a credible regression.
    min_segment_n: int = 20


def retry_sampler(diag: dict, st: SamplerSettings) -> dict:
    """NUTS settings for the one retry of a fit that failed its diagnostics (calibration.diagnostics).

    Divergences mean the step size is too large for the posterior's curvature: smaller steps (target_accept 0.99)
    and longer tuning (Betancourt 2017, "A conceptual introduction to Hamiltonian Monte Carlo", sec. 6.2). Without
    them, a low bulk ESS or high R-hat means the chains are too short for how slowly they mix (on HANNA's ordinal
    fits: cut points, intercepts and slope means that trade off): twice the draws and tuning. Smaller steps would
    make that worse, each draw more correlated with the last (benchmarks/sampler_retry.py measures both on the HANNA
    label draws whose first fit fails)."""
    if diag["divergences"] > DIVERGENT_SHARE_MAX * st.draws * st.chains:
        return {"draws": st.draws, "tune": 2 * st.tune, "target_accept": 0.99}
    return {"draws": 2 * st.draws, "tune": 2 * st.tune}


def _interval(draws: np.ndarray, confidence: float) -> list[float]:
    a = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return [float(lo), float(hi)]


def _r(x, nd=4):
    return None if x is None else round(float(x), nd)


BASES = ("population", "scored")


@dataclass
class Partial:
    """``scores`` holds only some of the scored requests (every labelled one and a sample; jobs.decide_scan): the
    names of every scored request's segment and how many have no segment value. Every sum over the scored requests
    then comes from ``aggregate_sums``."""

    segment_names: list[str]
    missing_segment: int = 0


def _check_basis(basis: str) -> None:
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")


def decide(scores: pd.DataFrame, labels: pd.DataFrame, traffic: pd.DataFrame | None, config: DecisionConfig,
           incumbent: str, candidates: list[str] | None = None, segments: list[str] | None = None,
           design: pd.DataFrame | None = None, run_id: str | None = None, aggregate_sums=None,
           partial: Partial | None = None) -> Decision:
    """The decision (docs/decision-schema.md) for the given tables. Raises calibration.data.InputError on bad input.

    ``config`` is the run config's decision section (or `baton decide`'s flags); ``incumbent``, ``candidates``
    (None or empty: every other model in scores) and ``segments`` (traffic columns) are facts of the run.
    ``design`` (request_id, model, inclusion_prob per candidate unit) is the labels' sampling design; without it
    the labels' own ``inclusion_prob`` column is used when present (calibration.data.prepare).
    ``aggregate_sums(data, p, predictors) -> (AggregateSums, ScoredSums) | None``: computes the estimands'
    per-draw sufficient statistics over all scored requests, and the baselines' sums over the unlabelled ones
    (calibration.scored), elsewhere (jobs.decide_aggregate: Ray tasks over the run's shards); None, or a None
    answer, sums them here (calibration.estimands.local_sums, calibration.scored.local_scored_sums). Used for
    request-level (turn) dimensions without conversations; the draws are finished here from the sums either way.
    ``partial``: ``scores`` and ``traffic`` hold only some of the scored requests (:class:`Partial`);
    ``aggregate_sums`` must then make every sum."""
    d = config
    settings = SamplerSettings(draws=d.draws, tune=d.tune, chains=d.chains, min_segment_n=d.min_segment_n)
    dims: dict[str, dict[str, DimensionResult]] = {}
    reasons: dict[str, list[str]] = {}
    warnings: list[str] = []
    cand_names = None
    conv_traffic = traffic is not None and units.CONVERSATION_COL in traffic.columns
    for dim in d.dimensions:
        positions_edges = d.turn_positions
        if dim.label_unit == "conversation":  # one unit per conversation (calibration.conversation_units)
            s_, l_, t_, w_ = units.conversation_tables(scores, labels, traffic, dim.name, segments)
            if design is not None:
                w_.append("the labels' design is per turn; this dimension's conversation labels count as a simple "
                          "random sample of conversations (or carry their own inclusion_prob)")
            data = prepare(s_, l_, incumbent, candidates or None, dim.name, dim.kind, traffic=t_,
                           segment_cols=segments or None, design=None, design_adjustment=d.design_adjustment,
                           metrics=dim.metrics, levels=dim.levels)
            data.warnings[:0] = w_
            positions_edges = []  # a conversation has no turn position
        else:
            data = prepare(scores, labels, incumbent, candidates or None, dim.name, dim.kind,
                           traffic=traffic, segment_cols=segments or None, design=design,
                           design_adjustment=d.design_adjustment, metrics=dim.metrics,
                           levels=dim.levels, cluster_col=units.CONVERSATION_COL if conv_traffic else None)
        if partial is not None:
            _widen_segments(data, partial)
        if units.TURN_COL in (segments or []):
            positions_edges = []  # the user made turn a segment: its results are the segments
        positions = units.turn_positions(traffic, data.request_ids, positions_edges)
        cand_names = data.candidates
        warnings += [f"{dim.name}: {w}" for w in data.warnings]
        entries = calibrate_dimension(data, d.margin, d.confidence, seed=d.seed, settings=settings,
                                      gating=dim.gating, basis=d.basis,
                                      gating_dimensions=sum(x.gating for x in d.dimensions),
                                      positions=positions, positions_gating=d.turn_positions_gating,
                                      aggregate_sums=aggregate_sums if dim.label_unit == "turn" else None)
        for cand, entry in entries.items():
            entry["estimand"] = dim.label_unit
            reasons.setdefault(cand, []).extend(f"{dim.name}: {r}" for r in entry.pop("reasons"))
            dims.setdefault(cand, {})[dim.name] = DimensionResult.model_validate(entry)
    cands = {cand: CandidateDecision(verdict=decision.combine([e.verdict for e in by_dim.values() if e.gating]),
                                     reasons=reasons[cand], dimensions=by_dim)
             for cand, by_dim in dims.items()}
    return Decision(
        created_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        incumbent=incumbent, margin=d.margin, confidence=d.confidence, seed=d.seed,
        verdicts={cand: c.verdict for cand, c in cands.items()}, candidates=cands,
        results=[ResultRow.of(cand, name, e) for cand, c in cands.items() for name, e in c.dimensions.items()],
        warnings=warnings, candidate_order=cand_names, run_id=run_id)


def _widen_segments(data: CalibrationData, partial: Partial) -> None:
    """Give ``data`` (some of the scored requests) the segments of all of them, and their missing-segment count."""
    if data.cluster_idx is not None:
        raise ValueError("conversations need every scored request in the driver (no Partial)")
    pos = pd.Index(partial.segment_names).get_indexer(pd.Index(data.segment_names))
    if (pos < 0).any():
        raise ValueError(f"segment {data.segment_names[int(np.flatnonzero(pos < 0)[0])]!r} of the driver's requests "
                         f"is not among all requests' segments")
    data.seg_idx = pos[np.asarray(data.seg_idx)]
    data.segment_names = list(partial.segment_names)
    data.warnings = [w for w in data.warnings if "have no segment value" not in w]
    if partial.missing_segment:
        data.warnings.append(f"traffic: {partial.missing_segment} scored request(s) have no segment value; put in "
                             f"segment '<missing>'")
    data.partial = True


def calibrate_dimension(data: CalibrationData, margin: float, confidence: float, seed: int = 0,
                        settings: SamplerSettings | None = None, gating: bool = True,
                        basis: str = "population", gating_dimensions: int = 1,
                        positions: tuple[np.ndarray, list[str]] | None = None,
                        positions_gating: bool = True, aggregate_sums=None) -> dict[str, dict]:
    """Decision-schema ``dimensions[<name>]`` entry for each candidate.

    ``basis``: which draws the verdict, P(non-inferior), P(superior) and labels_needed come from: ``population``
    (the future traffic the scored requests were sampled from; the default, since migrating is a decision about
    future traffic) or ``scored`` (the scored requests themselves, for a night judged as that night).
    ``gating_dimensions``: how many gating dimensions the candidate's verdict combines; the segment rule of each
    is set so that all of them together falsely block at most 1 - C (calibration.segments).
    ``positions`` (group code per request, names; calibration.conversation_units.turn_positions): per-turn-position
    entries (``turn_positions``), gating jointly with the segments when ``positions_gating``."""
    _check_basis(basis)
    st = settings or SamplerSettings()
    idata, params = fit([data], draws=st.draws, tune=st.tune, chains=st.chains, seed=seed, cores=st.cores)
    diag = sampler_diagnostics(idata)
    if not diag["converged"] and st.retry_unconverged:
        idata, params = fit([data], chains=st.chains, seed=seed + 1, cores=st.cores, **retry_sampler(diag, st))
        diag = sampler_diagnostics(idata)
        diag["retried"] = True
    calib = {}
    if "beta_mu" in idata.posterior:
        bm = idata.posterior["beta_mu"].to_numpy()[:, :, 0, :].reshape(-1, len(data.feature_names))
        for j, f in enumerate(data.feature_names):
            calib[f] = {"mean": _r(bm[:, j].mean()), "interval": [_r(v) for v in _interval(bm[:, j], confidence)]}
    rng = np.random.default_rng(seed)
    p = thin_params(params, 0, st.max_posterior_draws, rng)
    return summarise_dimension(data, p, diag, margin, confidence, seed, st, gating, basis, calib, rng,
                               gating_dimensions, positions, positions_gating, aggregate_sums)


def summarise_dimension(data: CalibrationData, p: dict[str, np.ndarray], diag: dict, margin: float,
                        confidence: float, seed: int, st: SamplerSettings, gating: bool = True,
                        basis: str = "population", calib: dict | None = None,
                        rng: np.random.Generator | None = None, gating_dimensions: int = 1,
                        positions: tuple[np.ndarray, list[str]] | None = None,
                        positions_gating: bool = True, aggregate_sums=None) -> dict[str, dict]:
    """The entries of :func:`calibrate_dimension` from one block's posterior draws ``p`` (so a benchmark can fit
    many replicates in one vectorised model and decide each). ``aggregate_sums``: see :func:`decide`."""
    _check_basis(basis)
    rng = rng or np.random.default_rng(seed)
    diag = dict(diag)
    loo = psis_loo(data, p)  # the held-out check's and the guards' predictor's, computed once
    diag["ppc"] = heldout_check(data, loo)
    # the unlabelled cells' noise as far as the labelled ones show it (its own stream: the other draws stay put)
    p, diag["dispersion"] = dispersion.pearson_dispersion(data, p, loo, rng=np.random.default_rng([seed, 1]))
    conversations = data.cluster_idx is not None  # turns of one conversation are correlated (calibration.clustered)
    agg = clustered.aggregate_clustered if conversations else aggregate
    # The baselines' and guards' predictors are fitted on the labelled requests; what they need of the others
    # is sums (calibration.scored), made with the estimand sums, here or on Ray.
    obs = baselines.cell_matrix(data)
    labelled_req = baselines.labelled_requests(data)
    lab_rows = np.flatnonzero(labelled_req)
    pred, ridge_w, ridge_const = baselines.crossfit(data, obs, seed, unlabelled=False)
    bayes_pred = guards.predictive_means(data, p, rows=lab_rows, loo=loo)
    predictors = Predictors.build(data.kind, len(data.candidates), data.n_models, data.cat_values, ridge_w,
                                  ridge_const, guards.thin_draws(p))
    sums = None if conversations or aggregate_sums is None else aggregate_sums(data, p, predictors)
    if sums is None and data.partial:
        raise ValueError("the driver holds only some of the scored requests: their sums must come from "
                         "aggregate_sums")
    if sums is None:
        est = agg(data, p, rng)
        present = data.present if data.present is not None else np.ones((data.n_req, data.n_models), bool)
        rest = local_scored_sums(data.X, np.asarray(data.seg_idx), present, data.judge_raw,
                                 np.flatnonzero(~labelled_req), predictors)
    else:
        est = finish(sums[0], rng, data.kind, data.cat_values)
        rest = sums[1]
    n_req_total = len(lab_rows) + rest.n_req
    grouping = None
    if positions is not None:  # the same posterior draws, summed by turn position instead of by segment
        idx, names = positions
        grouping = segments.Grouping(list(names), np.asarray(idx),
                                     agg(data, p, rng, groups=(np.asarray(idx), len(names))), positions_gating)
    alpha = 1 - confidence
    thr_ni, thr_sup = decision.thresholds(data.kind, margin)
    on_pop = basis == "population"
    calib = calib or {}
    out = {}
    emask = data.estimand_mask()
    for ci, cand in enumerate(data.candidates):
        n_scored = int(emask[lab_rows, ci].sum() + rest.ridge.n[ci])
        draws = est.fp[:, ci]
        basis_draws = est.pop[:, ci] if on_pop else draws  # the verdict's draws; `draws` stay the scored ones
        p_ni = decision.prob_above(basis_draws, thr_ni)
        p_sup = decision.prob_above(basis_draws, thr_sup)
        y, ok = baselines.target_values(data, obs, ci)
        labels_used = int(ok.sum()) if data.kind == "pairwise" else int(
            (np.isfinite(obs[:, ci + 1]) | np.isfinite(obs[:, 0])).sum())
        # Segments: one joint rule over the gating segments of all gating dimensions (calibration.segments), on
        # the decision's basis like the overall verdict.
        gate = segments.gate_segments(data, est, ci, ok, emask[:, ci], thr_ni, thr_sup, confidence,
                                      segments.family_level(confidence, gating_dimensions), st.min_segment_n,
                                      basis, grouping, n_req_total)
        segs, regress = gate.entries, gate.blocking
        ho = baselines.human_only(data, ci, alpha, n_scored=n_scored)
        pp = baselines.ppi(data, ci, alpha, pred, rest=rest.ridge.pick(ci))
        interval = _interval(draws, confidence)
        interval_pop = _interval(est.pop[:, ci], confidence)
        dv = guards.design_valid(data, ci, alpha, bayes_pred, rest=rest.bayes.pick(ci))
        checks = guards.evaluate(dv, diag["ppc"], interval_pop if on_pop else interval, pp, thr_ni, confidence,
                                 basis)
        unguarded, _ = decision.dimension_verdict(p_ni, confidence, diag["converged"], regress)
        verdict, reasons = decision.dimension_verdict(p_ni, confidence, diag["converged"], regress, checks)
        available = int(max(0, n_scored - labels_used))
        need, need_seg = _labels_needed(data, basis_draws, est, ci, ok, emask[:, ci], thr_ni, confidence, verdict,
                                        diag["converged"], gate, y, n_scored, labels_used, basis)
        if verdict == decision.MORE and unguarded == decision.MIGRATE and any(
                g["fired"] and g["name"] == "design_valid" for g in checks):
            need = max(need or 0, guards.labels_needed(dv, thr_ni, confidence, available, basis))
        if regress:
            reasons.append(f"segments judged jointly: simultaneous {gate.level:.3f} bound (k = {gate.band_k:.2f} sd)"
                           f" below the threshold in {', '.join(regress)}")
        if need:
            reasons.append(f"about {need} more labelled requests would likely (P >= {decision.SETTLE_PROBABILITY})"
                           f" settle it" + (f" (in segment {need_seg})" if need_seg else ""))
        disagreement = None
        if pp.get("interval") and (pp["interval"][1] < interval[0] or pp["interval"][0] > interval[1]):
            disagreement = (f"Bayesian interval {[_r(v) for v in interval]} and PPI++ interval "
                            f"{[_r(v) for v in pp['interval']]} do not overlap: check the calibration model")
            reasons.append(disagreement)
        thin = basis_draws if len(basis_draws) <= 1000 else basis_draws[:: int(np.ceil(len(basis_draws) / 1000))]
        des = _design_summary(data, ci, ok)
        out[cand] = {
            "kind": data.kind, "gating": gating, "n_scored": n_scored,
            "estimate": _r(draws.mean()), "interval": [_r(v) for v in interval],
            "interval_population": [_r(v) for v in interval_pop], "basis": basis,
            "threshold_noninferior": _r(thr_ni), "threshold_superior": _r(thr_sup),
            "p_noninferior": _r(p_ni), "p_superior": _r(p_sup), "verdict": verdict, "reasons": reasons,
            "verdict_unguarded": unguarded, "guards": checks, "design_valid": _round_dict(dv),
            "labels_used": labels_used, "labels_needed": need, "labels_needed_segment": need_seg,
            "human_only": _round_dict(ho), "judge_only": _round_dict(baselines.judge_only(data, ci, alpha,
                                                                                          data.judge_raw, rest.judge)),
            "ppi": _round_dict(pp), "disagreement": disagreement, "segments": segs,
            "turn_positions": gate.positions or None, "diagnostics": diag,
            "calibration": calib, "design": des, "posterior_draws": [round(float(v), 5) for v in thin],
        }
        if conversations:  # inside human_only (a free-form dict in the decision schema), beside the per-request CLT
            out[cand]["human_only"]["cluster_robust"] = _round_dict(clustered.human_only_cluster_robust(data, ci,
                                                                                                     alpha))
        if des["weighted"]:
            how = {"covariate": "the model conditions on log pi", "weights": "the model weights labels by 1/pi"}
            reasons.append(f"labels from an unequal-probability design (pi {des['pi_min']:.3g} to {des['pi_max']:.3g}):"
                           f" {how.get(des['adjustment'], 'the model ignores it')}; baselines weighted by 1/pi "
                           f"({labels_used} labels count as {des['labels_n_eff']:.0f} by Kish)")
    return out


def _labels_needed(data: CalibrationData, draws, est, c: int, labelled, in_estimand, thr: float,
                   confidence: float, verdict: str, converged: bool, gate, y, n_scored: int,
                   labels_used: int, basis: str = "population") -> tuple[int | None, str | None]:
    """(labels_needed, labels_needed_segment): None in cold start; for a blocking segment, the labels in it after
    which its own human labels would likely confirm or clear the block; for an undecided dimension, the labels after
    which it would likely be decided (preposterior analysis, calibration.decision)."""
    if labels_used == 0:
        return None, None
    if not converged:
        return 0, None
    if gate.blocking:
        name = gate.blocking[0]
        if name in gate.where:  # a segment or a turn position
            group, s = gate.where[name]
            idx, g_est = group.idx, group.est
        else:
            s, idx, g_est = list(data.segment_names).index(name), data.seg_idx, est
        in_s = (idx == s) & in_estimand
        ys = y[labelled & in_s]
        label_sd = float(np.std(y[labelled], ddof=1)) if labelled.sum() >= 2 else 0.5
        need = decision.segment_labels_needed(
            (g_est.pop_seg if basis == "population" else g_est.fp_seg)[:, c, s], thr, confidence, gate.band_k,
            float(ys.mean()) if len(ys) else None, len(ys),
            max(label_sd, 1e-6), int(round(float(g_est.n_seg[c, s]))) - len(ys))
        return need, name
    if verdict != decision.MORE:
        return 0, None
    need = decision.labels_needed(draws, thr, confidence, labels_used, max(0, n_scored - labels_used))
    return need, (gate.most_useful if need else None)


def _design_summary(data: CalibrationData, c: int, labelled: np.ndarray) -> dict:
    """How the labels' sampling design entered: whether the probabilities differ (baselines weighted), the model's
    adjustment (calibration.design), the range of pi and Kish's effective n of the weighted baselines."""
    if not data.design_weighted or not labelled.any():
        return {"weighted": False, "adjustment": None}
    pi = data.target_pi(c)[labelled]
    return {"weighted": True, "adjustment": data.design_adjustment, "pi_min": _r(pi.min(), 6),
            "pi_max": _r(pi.max(), 6), "labels_n_eff": _r(design.kish_n_eff(1.0 / pi), 1)}


def _round_dict(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            out[k] = None if not np.isfinite(v) else round(v, 4)
        elif isinstance(v, list):
            out[k] = [round(float(x), 4) for x in v]
        else:
            out[k] = v
    return out
