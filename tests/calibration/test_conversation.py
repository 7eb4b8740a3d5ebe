"""Conversations: clustered turns, tested as statistics (coverage over seeded worlds) and on their plumbing.

The worlds are tests.support.simulate_conversations' (a conversation effect on the human label and on the judge);
benchmarks/conversation_coverage.py runs the 200-replicate version.
"""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from calibration.baselines import human_only
from calibration.clustered import _cluster_var, aggregate_clustered, human_only_cluster_robust
from calibration.data import prepare
from tests.support.simulate_conversations import conversation_coverage_study, simulate_conversations
from tests.calibration.test_coverage import honest_band


def _prepare(t, **kw):
    return prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, **kw)


def test_prepare_reads_conversations_and_a_missing_one_is_its_own():
    t = simulate_conversations(1, n_conversations=6, n_label_conversations=3)
    traffic = t.traffic.copy()
    traffic.loc[0, "conversation_id"] = None
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", traffic, cluster_col="conversation_id")
    assert len(d.cluster_names) == 7 and any("own conversation" in w for w in d.warnings)
    conv_of = dict(zip(traffic.request_id, traffic.conversation_id))
    for r, code in zip(d.request_ids, d.cluster_idx):  # every turn of one conversation shares its code
        if isinstance(conv_of[r], str):
            assert d.cluster_names[code] == conv_of[r]
    assert _prepare(t).cluster_idx is None  # existing calls unchanged


def test_cluster_robust_se_matches_statsmodels():
    t = simulate_conversations(2)
    d = _prepare(t, cluster_col="conversation_id")
    res = human_only_cluster_robust(d, 0, 0.1)
    lab = t.labels[t.labels.model == "cand-a"]
    groups = pd.factorize(lab.request_id.str[:5])[0]
    ols = sm.OLS(lab.value.to_numpy(), np.ones((len(lab), 1))).fit(cov_type="cluster", cov_kwds={"groups": groups})
    # statsmodels' CR1: G / (G - 1) times (n - 1) / (n - k), which is 1 for a mean (k = 1)
    assert res["se_population"] == pytest.approx(float(ols.bse[0]), rel=1e-6)
    assert res["estimate"] == pytest.approx(lab.value.mean())


def test_cluster_var_is_the_ratio_estimator_variance():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, 30).astype(float)
    totals = rng.normal(0, 1, (1, 30)) + sizes
    ybar = totals.sum() / sizes.sum()
    direct = np.var(totals[0] - ybar * sizes, ddof=1) * 30 / sizes.sum() ** 2
    assert _cluster_var(totals, sizes)[0] == pytest.approx(direct)


def test_cluster_robust_baseline_covers_where_the_per_turn_clt_does_not():
    """Labels alone over 250 seeded worlds (500 intervals): per-turn CLT under-covers, CR1 covers."""
    cov = {"human": [], "cr": []}
    for seed in range(250):
        t = simulate_conversations(10_000 + seed)
        d = _prepare(t, cluster_col="conversation_id")
        for ci, c in enumerate(d.candidates):
            for name, res in (("human", human_only(d, ci, 0.1)), ("cr", human_only_cluster_robust(d, ci, 0.1))):
                lo, hi = res["interval"]
                cov[name].append(lo <= t.truth[c] <= hi)
    lo, hi = honest_band(500)
    assert lo <= np.mean(cov["cr"]) <= hi, np.mean(cov["cr"])
    assert np.mean(cov["human"]) < lo, np.mean(cov["human"])


@pytest.fixture(scope="module")
def nuts_study():
    return conversation_coverage_study(12, seed0=700, draws=150, tune=150, blocks_per_fit=12)


@pytest.mark.slow
def test_baton_covers_and_independent_turns_do_not(nuts_study):
    """Real NUTS fits of 12 worlds, with and without the conversation effect: Baton's intervals (scored turns and
    traffic, 48 in all) cover within the honest band; the independent-turn ones are narrower and cover less."""
    df = nuts_study
    cov = np.r_[df.clustered_fp_covered, df.clustered_pop_covered].mean()
    lo, hi = honest_band(2 * len(df))
    assert lo <= cov <= hi, cov
    flat = np.r_[df.unclustered_fp_covered, df.unclustered_pop_covered].mean()
    assert flat <= cov, (flat, cov)
    assert df.unclustered_pop_width.mean() < 0.9 * df.clustered_pop_width.mean()
    assert df.unclustered_fp_width.mean() < 0.95 * df.clustered_fp_width.mean()
    assert abs((df.estimate - df.truth).mean()) < 0.03


def test_clustered_aggregate_needs_conversations():
    t = simulate_conversations(3, n_conversations=5, n_label_conversations=2)
    d = dataclasses.replace(_prepare(t, cluster_col="conversation_id"), cluster_idx=None)
    with pytest.raises(ValueError, match="cluster_col"):
        aggregate_clustered(d, {"cut": np.zeros((2, 2))}, np.random.default_rng(0))


def test_pipeline_uses_the_clustered_estimands_and_reports_the_cluster_robust_baseline():
    from calibration.pipeline import SamplerSettings, calibrate_dimension

    t = simulate_conversations(4, n_conversations=30, n_label_conversations=10, candidates=("cand-a",),
                               cand_effect=(0.3,), judge_bias=(0.8,))
    d = _prepare(t, cluster_col="conversation_id")
    out = calibrate_dimension(d, 0.05, 0.9, settings=SamplerSettings(draws=150, tune=150, retry_unconverged=False))
    entry = out["cand-a"]
    cr = entry["human_only"]["cluster_robust"]
    assert cr["method"] == "cluster-robust CR1" and cr["conversations"] == 10
    assert entry["interval_population"][0] < entry["estimate"] < entry["interval_population"][1]
    assert entry["verdict"] in ("migrate", "more_labels", "reject")


@pytest.mark.parametrize("kind", ["pairwise", "binary"])
def test_singleton_conversations_reduce_to_the_independent_estimands(kind):
    """With every conversation a single turn and no conversation effect, the clustered draws are the independent
    ones (calibration.estimands.aggregate): same centre, same spread, scored and population (no NUTS: fixed
    posterior draws)."""
    from calibration.estimands import aggregate
    from tests.support.simulate import simulate_absolute, simulate_pairwise

    t = simulate_pairwise(5) if kind == "pairwise" else simulate_absolute(5, "binary")
    traffic = t.traffic.assign(conv=t.traffic.request_id)
    dim = "quality" if kind == "pairwise" else "correctness"
    d = prepare(t.scores, t.labels, "incumbent", None, dim, kind, traffic, cluster_col="conv")
    rng = np.random.default_rng(0)
    D, M, F, S, K = 4000, d.n_models, d.X.shape[2], len(d.segment_names), d.n_cat
    p = {"cut": np.sort(rng.normal(0, 0.1, (D, K - 1)), axis=1), "alpha": np.zeros((D, M)),
         "beta": np.full((D, M, F), 0.6) + rng.normal(0, 0.05, (D, M, F)), "seg_effect": np.zeros((D, M, S)),
         "beta_seg": np.zeros((D, S, F)), "item_icc": np.full(D, 0.3), "req_sigma": np.full(D, 0.5),
         "req_effect": np.zeros((D, 0)), "conv_sigma": np.zeros(D)}
    flat = aggregate(dataclasses.replace(d, cluster_idx=None, cluster_names=None), p, np.random.default_rng(1))
    clus = aggregate_clustered(d, p, np.random.default_rng(2))
    for a, b in ((flat.fp, clus.fp), (flat.pop, clus.pop)):
        assert abs(a.mean() - b.mean()) < 0.1 * a.std()
        assert b.std() == pytest.approx(a.std(), rel=0.08)
