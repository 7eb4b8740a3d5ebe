"""Seeded world of multi-turn conversations with correlated turns, and the coverage study over it.

Pairwise world (as tests.support.simulate.simulate_pairwise, one annotator): ``n_conversations`` conversations of
``1..max_turns`` turns (uniform). For candidate c, turn t of conversation g has a latent human preference
``l = a_c + u_{c,g} + e`` with ``u_{c,g} ~ N(0, conv_sd)`` shared by the turns of g (the user, topic and history
make a whole conversation go well or badly) and ``e ~ N(0, 1)``; the annotator labels 1 / 0.5 / 0 from
``l + logistic noise`` cut at +-``tie``. The LLM judge, in two position orders, sees
``l + bias_c +- position + j_{c,g} + N(0, noise)`` with its own conversation effect ``j_{c,g} ~ N(0, judge_conv_sd)``
(a judge misreading a conversation misreads all its turns). Labels: every turn of ``n_label_conversations``
conversations drawn at random per candidate (labels per conversation, the usual way conversations are annotated).

Truths: the finite-population one (mean label over every turn) and the population one (the expected label of a
turn, by quadrature over ``l ~ N(a_c, sqrt(1 + conv_sd^2))``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.special import expit

from tests.support.simulate import SimTables, _ordinal3


def population_win_rate(mu: float, sd: float, tie: float = 0.8) -> float:
    """E[label] when ``l ~ N(mu, sd)`` and the label is ``l + logistic noise`` cut at +-tie (Gauss-Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    lat = mu + sd * x
    return float(np.sum(w * (0.5 + 0.5 * (expit(lat - tie) - expit(-tie - lat)))))


def _conversations(rng: np.random.Generator, n_conversations: int, max_turns: int, prefix: str):
    """1..max_turns turns per conversation: (conversation index per turn, request ids, traffic with
    ``conversation_id`` and ``turn``); ids ``<prefix>0007-t03`` and ``<prefix>0007``."""
    turns = rng.integers(1, max_turns + 1, n_conversations)
    conv = np.repeat(np.arange(n_conversations), turns)
    turn = np.concatenate([np.arange(1, k + 1) for k in turns])
    rid = np.array([f"{prefix}{g:04d}-t{t:02d}" for g, t in zip(conv, turn)], dtype=object)
    cid = np.array([f"{prefix}{g:04d}" for g in range(n_conversations)], dtype=object)
    return conv, rid, pd.DataFrame({"request_id": rid, "conversation_id": cid[conv], "turn": turn})


def simulate_conversations(seed: int, n_conversations: int = 60, max_turns: int = 10, n_label_conversations: int = 15,
                           candidates=("cand-a", "cand-b"), cand_effect=(0.3, -0.1), judge_bias=(0.8, 0.0),
                           conv_sd: float = 1.0, judge_conv_sd: float = 1.0, position_bias: float = 0.5,
                           judge_noise: float = 0.7, tie: float = 0.8) -> SimTables:
    """Module docstring. Traffic carries ``conversation_id`` and ``turn``; ``truth`` is the finite-population truth
    and ``truth_seg['population']`` the population one."""
    rng = np.random.default_rng(seed)
    conv, rid, traffic = _conversations(rng, n_conversations, max_turns, "c")
    N = len(rid)
    score_parts, label_parts, truth, truth_pop = [], [], {}, {}
    for ci, c in enumerate(candidates):
        lat = cand_effect[ci] + rng.normal(0, conv_sd, n_conversations)[conv] + rng.normal(0, 1, N)
        lab = _ordinal3(lat[:, None], tie, rng)[:, 0]
        truth[c] = float(lab.mean())
        truth_pop[c] = population_win_rate(cand_effect[ci], float(np.hypot(1.0, conv_sd)), tie)
        jconv = rng.normal(0, judge_conv_sd, n_conversations)[conv]
        for name, pos in (("judge.pairwise.quality.ab", position_bias), ("judge.pairwise.quality.ba", -position_bias)):
            jl = lat + judge_bias[ci] + pos + jconv + rng.normal(0, judge_noise, N)
            v = np.where(jl > tie, 1.0, np.where(jl < -tie, 0.0, 0.5))
            score_parts.append(pd.DataFrame({"request_id": rid, "model": c, "metric": name, "value": v}))
        picked = np.isin(conv, rng.choice(n_conversations, n_label_conversations, replace=False))
        label_parts.append(pd.DataFrame({"request_id": rid[picked], "model": c, "dimension": "quality",
                                         "value": lab[picked], "annotator": "a0"}))
    return SimTables(pd.concat(score_parts, ignore_index=True), pd.concat(label_parts, ignore_index=True),
                     traffic, truth, {"population": truth_pop})


def _covers(interval, truth: float) -> bool:
    return interval is not None and bool(interval[0] <= truth <= interval[1])


def _width(interval) -> float:
    return float(interval[1] - interval[0]) if interval is not None else float("nan")


def conversation_coverage_study(n_reps: int, seed0: int = 0, confidence: float = 0.9, draws: int = 300,
                                tune: int = 300, blocks_per_fit: int = 25, on_fit=None,
                                **sim_kwargs) -> pd.DataFrame:
    """One row per (replicate, candidate): coverage and width of the nominal ``confidence`` intervals of

    - ``clustered``: Baton with the conversation effect (calibration.models) and calibration.clustered's estimands;
    - ``unclustered``: Baton fitted and aggregated as if the turns were independent requests;
    - ``human``: labels only, per-turn CLT (calibration.baselines.human_only), and ``human_cr``: cluster-robust;
    each for the scored turns (``*_fp``, against the finite-population truth) and for the traffic (``*_pop``,
    against the population truth). Replicates are independent blocks of vectorised NUTS fits, one fit with the
    conversation effect and one without."""
    from calibration.baselines import human_only
    from calibration.clustered import aggregate_clustered, human_only_cluster_robust
    from calibration.data import prepare
    from calibration.estimands import aggregate, thin_params
    from calibration.models import fit

    a = (1 - confidence) / 2
    rows = []
    for start in range(0, n_reps, blocks_per_fit):
        reps = list(range(start, min(n_reps, start + blocks_per_fit)))
        tabs = [simulate_conversations(seed0 + r, **sim_kwargs) for r in reps]
        blocks = [prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic,
                          cluster_col="conversation_id") for t in tabs]
        flat = [dataclasses.replace(d, cluster_idx=None, cluster_names=None) for d in blocks]
        idata_c, par_c = fit(blocks, draws=draws, tune=tune, seed=seed0 + start)
        idata_u, par_u = fit(flat, draws=draws, tune=tune, seed=seed0 + start)
        div = int(idata_c.sample_stats["diverging"].to_numpy().sum())
        rng = np.random.default_rng(seed0 + start)
        for b, (r, t, d) in enumerate(zip(reps, tabs, blocks)):
            est_c = aggregate_clustered(d, thin_params(par_c, b, 1000, rng), rng)
            est_u = aggregate(flat[b], thin_params(par_u, b, 1000, rng), rng)
            for ci, c in enumerate(d.candidates):
                tf, tp = t.truth[c], t.truth_seg["population"][c]
                row = {"rep": r, "candidate": c, "truth": tf, "truth_population": tp, "fit_divergences": div,
                       "estimate": float(est_c.fp[:, ci].mean()), "estimate_unclustered": float(est_u.fp[:, ci].mean())}
                for name, est in (("clustered", est_c), ("unclustered", est_u)):
                    for scope, dr, truth in (("fp", est.fp, tf), ("pop", est.pop, tp)):
                        iv = np.quantile(dr[:, ci], [a, 1 - a])
                        row[f"{name}_{scope}_covered"], row[f"{name}_{scope}_width"] = _covers(iv, truth), _width(iv)
                ho, cr = human_only(d, ci, 1 - confidence), human_only_cluster_robust(d, ci, 1 - confidence)
                for name, res in (("human", ho), ("human_cr", cr)):
                    for scope, key, truth in (("fp", "interval", tf), ("pop", "interval_population", tp)):
                        row[f"{name}_{scope}_covered"] = _covers(res.get(key), truth)
                        row[f"{name}_{scope}_width"] = _width(res.get(key))
                rows.append(row)
        if on_fit is not None:
            on_fit(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def simulate_conversation_labels(seed: int, n_conversations: int = 60, max_turns: int = 6,
                                 n_label_conversations: int = 20, candidates=("cand-a", "cand-b"),
                                 cand_effect=(0.4, -0.2), judge_bias=(0.6, 0.0), conv_sd: float = 1.0,
                                 turn_sd: float = 0.7, judge_noise: float = 0.8, tie: float = 0.8,
                                 turn_labels: bool = False) -> SimTables:
    """A world whose labels judge whole conversations (dimension ``goal``, pairwise: did the candidate's
    conversation go better than the incumbent's), for the conversation-level estimand.

    Conversation g of candidate c has a latent quality ``q = a_c + u_{c,g}``, ``u ~ N(0, conv_sd)``; each turn a
    judge verdict from ``q + bias_c + N(0, turn_sd) + N(0, judge_noise)`` (``judge.pairwise.quality``), and the last
    turn a transcript judge's verdict from ``q + bias_c + N(0, judge_noise)`` (``judge.transcript.goal``). The label
    of a conversation is ``q + logistic noise`` cut at +-tie, keyed by its last turn's request_id. Truths: the mean
    label over all conversations (``truth``) and over the traffic's conversations (``truth_seg['population']``).
    ``turn_labels``: every turn of the labelled conversations also gets a per-turn label (dimension ``quality``,
    from the turn's latent ``q + N(0, turn_sd)``, the one its judge reads)."""
    rng = np.random.default_rng(seed)
    conv, rid, traffic = _conversations(rng, n_conversations, max_turns, "g")
    last = np.flatnonzero(np.r_[conv[1:] != conv[:-1], True])  # each conversation's last turn

    def cut(x):
        return np.where(x > tie, 1.0, np.where(x < -tie, 0.0, 0.5))

    score_parts, label_parts, truth, truth_pop = [], [], {}, {}
    for ci, c in enumerate(candidates):
        q = cand_effect[ci] + rng.normal(0, conv_sd, n_conversations)
        lab = _ordinal3(q[:, None], tie, rng)[:, 0]
        truth[c] = float(lab.mean())
        truth_pop[c] = population_win_rate(cand_effect[ci], conv_sd, tie)
        turn_lat = q[conv] + rng.normal(0, turn_sd, len(rid))
        turn_j = turn_lat + judge_bias[ci] + rng.normal(0, judge_noise, len(rid))
        score_parts.append(pd.DataFrame({"request_id": rid, "model": c, "metric": "judge.pairwise.quality",
                                         "value": cut(turn_j)}))
        tj = q + judge_bias[ci] + rng.normal(0, judge_noise, n_conversations)
        score_parts.append(pd.DataFrame({"request_id": rid[last], "model": c, "metric": "judge.transcript.goal",
                                         "value": cut(tj)}))
        picked = rng.choice(n_conversations, n_label_conversations, replace=False)
        label_parts.append(pd.DataFrame({"request_id": rid[last][picked], "model": c, "dimension": "goal",
                                         "value": lab[picked], "annotator": "a0"}))
        if turn_labels:
            on = np.isin(conv, picked)
            label_parts.append(pd.DataFrame({"request_id": rid[on], "model": c, "dimension": "quality",
                                             "value": _ordinal3(turn_lat[on][:, None], tie, rng)[:, 0],
                                             "annotator": "a0"}))
    return SimTables(pd.concat(score_parts, ignore_index=True), pd.concat(label_parts, ignore_index=True),
                     traffic, truth, {"population": truth_pop})
