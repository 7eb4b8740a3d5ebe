"""Sampling designs: inclusion probabilities checked by repeated draws, estimators by seeded coverage."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.design import (active_design, active_probabilities, bernoulli_sd, combine_inclusion,
                                difference_estimate, fit_logistic, hajek_estimate, ht_mean, kish_n_eff, ht_weights,
                                predict_logistic, random_design, stratified_allocation, stratified_design,
                                systematic_pps)


def test_ht_weights_rejects_impossible_probabilities():
    assert np.allclose(ht_weights([0.5, 1.0]), [2.0, 1.0])
    with pytest.raises(ValueError, match="position 1"):
        ht_weights([0.5, 0.0])
    with pytest.raises(ValueError, match="position 0"):
        ht_weights([1.5])


def test_random_design_size_and_probability():
    idx, pi = random_design(50, 10, seed=1)
    assert len(idx) == 10 and len(np.unique(idx)) == 10
    assert np.allclose(pi, 0.2)
    with pytest.raises(ValueError, match="n=60"):
        random_design(50, 60)


def test_active_probabilities_sum_floor_cap_and_order():
    u = np.r_[np.zeros(50), np.linspace(0.01, 0.5, 50), np.full(3, 50.0)]
    pi = active_probabilities(u, 20, tau=0.2)
    assert pi.sum() == pytest.approx(20)
    assert pi.min() >= 0.2 * 20 / len(u) - 1e-12  # the floor
    assert pi.max() <= 1.0 and np.allclose(pi[-3:], 1.0)  # capped units
    free = slice(50, 100)
    assert np.all(np.diff(pi[free]) > 0)  # monotone in the uncertainty
    with pytest.raises(ValueError, match="position 2"):
        active_probabilities(np.array([0.1, 0.2, -1.0]), 1)
    with pytest.raises(ValueError, match="tau"):
        active_probabilities(u, 5, tau=0.0)


def test_systematic_pps_realises_the_inclusion_probabilities():
    rng = np.random.default_rng(3)
    pi = active_probabilities(rng.uniform(0, 1, 40) ** 2, 8, tau=0.2)
    reps = 4000
    hits = np.zeros(len(pi))
    for r in range(reps):
        idx = systematic_pps(pi, rng)
        assert len(idx) == 8 and len(np.unique(idx)) == 8
        hits[idx] += 1
    freq = hits / reps
    sd = np.sqrt(pi * (1 - pi) / reps)
    assert np.all(np.abs(freq - pi) <= 4.5 * sd + 1e-9)
    with pytest.raises(ValueError, match="integer"):
        systematic_pps(np.array([0.3, 0.3]))


def test_stratified_allocation_proportional_neyman_and_caps():
    assert stratified_allocation(np.array([100, 300, 600]), 10).tolist() == [1, 3, 6]
    neyman = stratified_allocation(np.array([100, 100]), 10, sd=np.array([0.1, 0.4]))
    assert neyman.tolist() == [2, 8]
    capped = stratified_allocation(np.array([2, 1000]), 10, sd=np.array([10.0, 0.1]))
    assert capped.tolist() == [2, 8] and capped.sum() == 10
    small = stratified_allocation(np.array([1, 1, 1000]), 3)
    assert small.tolist() == [1, 1, 1]  # every stratum gets a chance


def test_stratified_design_probabilities_match_frequencies():
    strata = np.array(["a"] * 20 + ["b"] * 80)
    reps, hits = 2000, np.zeros(100)
    for r in range(reps):
        idx, pi = stratified_design(strata, 10, seed=r)
        hits[idx] += 1
    assert np.allclose(pi[:20], 2 / 20) and np.allclose(pi[20:], 8 / 80)
    assert abs(hits[:20].mean() / reps - 0.1) < 0.01 and abs(hits[20:].mean() / reps - 0.1) < 0.005


def test_combine_inclusion_and_ht_hajek():
    assert np.allclose(combine_inclusion([np.array([0.5, 0.0]), np.array([0.5, 0.2])]), [0.75, 0.2])
    y, pi = np.array([1.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.25])
    assert ht_mean(y, pi, 10) == pytest.approx((2 + 4) / 10)
    assert hajek_estimate(y, pi)["estimate"] == pytest.approx(6 / 8)
    assert kish_n_eff(np.full(7, 3.0)) == pytest.approx(7) and kish_n_eff([1.0, 3.0]) == pytest.approx(16 / 10)
    # under simple random sampling its variance is the textbook (1 - n/N) s^2 / n
    y = np.random.default_rng(0).normal(size=40)
    r = hajek_estimate(y, np.full(40, 40 / 400))
    assert r["estimate"] == pytest.approx(y.mean())
    assert r["se"] ** 2 == pytest.approx((1 - 40 / 400) * y.var(ddof=1) / 40)


def _population(rng, n_pop=2000):
    eta = rng.normal(0.0, 3.0, n_pop)
    y = (rng.uniform(size=n_pop) < 1 / (1 + np.exp(-eta))).astype(float)
    f = 1 / (1 + np.exp(-(0.8 * eta + 0.3 + rng.normal(0, 0.6, n_pop))))
    return y, f


@pytest.mark.parametrize("design", ["random", "stratified", "active"])
def test_difference_estimator_covers_at_nominal_rate(design):
    """Seeded repeated simulation: the 90% interval covers the population mean about 90% of the time."""
    rng = np.random.default_rng({"random": 11, "stratified": 12, "active": 13}[design])
    reps, cover, errors = 300, 0, []
    for _ in range(reps):
        y, f = _population(rng)
        if design == "random":
            idx, pi = random_design(len(y), 150, rng)
        elif design == "stratified":
            idx, pi = stratified_design(np.digitize(f, [0.2, 0.8]), 150, rng)
        else:
            idx, pi = active_design(bernoulli_sd(f), 150, rng, tau=0.2)
        res = difference_estimate(f, y[idx], f[idx], pi[idx], confidence=0.9)
        lo, hi = res["interval"]
        cover += lo <= y.mean() <= hi
        errors.append(res["estimate"] - y.mean())
    assert 0.85 <= cover / reps <= 0.95
    assert abs(np.mean(errors)) < 3 * np.std(errors) / np.sqrt(reps)  # no detectable bias


def test_weights_undo_the_active_selection_bias():
    """The active design over-samples close calls; the plain label mean is biased, the weighted one is not."""
    rng = np.random.default_rng(5)
    naive, weighted, truth = [], [], []
    for _ in range(300):
        y, f = _population(rng)
        idx, pi = active_design(bernoulli_sd(f), 100, rng, tau=0.1)
        naive.append(y[idx].mean())
        weighted.append(difference_estimate(np.zeros(len(y)), y[idx], np.zeros(len(idx)), pi[idx])["estimate"])
        truth.append(y.mean())
    bias_naive = np.mean(np.array(naive) - truth)
    bias_weighted = np.mean(np.array(weighted) - truth)
    se = np.std(np.array(weighted) - truth) / np.sqrt(300)
    assert abs(bias_weighted) < 3 * se
    assert abs(bias_naive) > 5 * se  # about 6 se at this seed


def test_srs_variance_is_the_textbook_formula():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    idx, pi = random_design(500, 50, rng)
    res = difference_estimate(np.zeros(500), y[idx], np.zeros(50), pi[idx])
    assert res["se"] ** 2 == pytest.approx((1 - 50 / 500) * np.var(y[idx], ddof=1) / 50, rel=1e-9)


def test_fit_logistic_recovers_coefficients_and_handles_ties():
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    p = 1 / (1 + np.exp(-(0.5 + 2.0 * x)))
    y = (rng.uniform(size=4000) < p).astype(float)
    beta = fit_logistic(x, y, ridge=0.0)
    assert beta == pytest.approx([0.5, 2.0], abs=0.15)
    frac = fit_logistic(x, p, ridge=0.0)  # fractional outcomes: the expected values themselves
    assert frac == pytest.approx([0.5, 2.0], abs=1e-4)
    assert np.allclose(predict_logistic(frac, x), p, atol=1e-4)
