"""calibration.dispersion: the factor on the unlabelled cells' annotator noise, measured on labelled cells whose
annotations are drawn from a known model (no NUTS: a point posterior, tests.calibration.test_guards)."""
import numpy as np
import pandas as pd

from calibration.data import prepare
from calibration.diagnostics import category_probs, psis_loo
from calibration.dispersion import PHI_RANGE, _pool, pearson_dispersion
from calibration.estimands import aggregate, cell_moments
from tests.calibration.test_guards import point_posterior
from tests.support.simulate import simulate_pairwise


def _relabelled(seed: int, copies: bool, n_annot: int = 3):
    """A pairwise world whose labelled cells are relabelled from the point posterior's own category probabilities:
    ``n_annot`` independent annotations per cell (what the model with item_icc 0 says), or one draw copied
    ``n_annot`` times (annotators who always agree: the mean of three varies as much as one annotation)."""
    t = simulate_pairwise(seed, n_requests=300, n_labels=120, n_annot=n_annot)
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise")
    p = point_posterior(d, draws=100, spread=0.0)
    req, mod, _, _ = d.labelled_cells()
    probs = category_probs(d, p, req, mod)[0]  # (cell, K): every draw is the same
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(len(req)):
        draws = rng.choice(3, size=1 if copies else n_annot, p=probs[c])
        for a in range(n_annot):
            rows.append((d.request_ids[req[c]], d.row_models[mod[c]], "quality",
                         d.cat_values[draws[0 if copies else a]], f"ann{a}"))
    labels = pd.DataFrame(rows, columns=["request_id", "model", "dimension", "value", "annotator"])
    d2 = prepare(t.scores, labels, "incumbent", None, "quality", "pairwise")
    return d2, point_posterior(d2, draws=100, spread=0.0)


def test_dispersion_is_about_one_where_the_annotators_are_as_the_model_says():
    facs = []
    for seed in range(4):
        d, p = _relabelled(seed, copies=False)
        p2, s = pearson_dispersion(d, p, psis_loo(d, p), rng=np.random.default_rng(0))
        assert s["applied"], s
        assert s["cells"] == 240
        facs.append(s["pooled"])
        # never narrower than the model: the draws are floored at 1
        assert p2["noise_scale"].min() >= PHI_RANGE[0]
        assert p2["noise_scale"].shape == (100, d.n_models)
    # 240 cells: the estimate's sd is about sqrt(2 / 240) = 0.09 (more for the ordinal means' heavier tails)
    assert 0.75 < np.mean(facs) < 1.25, facs
    assert all(0.6 < f < 1.5 for f in facs), facs


def test_dispersion_widens_where_the_annotators_agree_more_than_the_model_says():
    d, p = _relabelled(1, copies=True)
    p2, s = pearson_dispersion(d, p, psis_loo(d, p), rng=np.random.default_rng(0))
    # three copies of one draw: the mean varies as one annotation does, 3 times the model's independent mean
    assert 2.2 < s["pooled"] < 4.0, s
    # a rerun of the same decision (same seed) gets the same factor draws: a resumed or repeated run is reproducible
    p3, s3 = pearson_dispersion(d, p, psis_loo(d, p), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(p3["noise_scale"], p2["noise_scale"])
    assert s3 == s
    rng = np.random.default_rng(5)
    narrow, wide = aggregate(d, p, rng), aggregate(d, p2, np.random.default_rng(5))
    w0, w1 = (np.quantile(e.fp[:, 0], 0.95) - np.quantile(e.fp[:, 0], 0.05) for e in (narrow, wide))
    assert w1 > 1.3 * w0, (w0, w1)
    assert abs(narrow.fp[:, 0].mean() - wide.fp[:, 0].mean()) < 0.01  # the noise widens, the estimate stays


def test_dispersion_is_not_applied_with_one_annotator_per_cell():
    t = simulate_pairwise(0, n_requests=300, n_labels=120, n_annot=1)
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise")
    p = point_posterior(d, draws=50)
    p2, s = pearson_dispersion(d, p, psis_loo(d, p), rng=np.random.default_rng(0))
    assert not s["applied"] and "noise_scale" not in p2
    assert "20" in s["reason"] or "one annotator" in s["reason"]


def test_noise_scale_multiplies_the_annotators_part_of_a_cells_variance():
    d, p = _relabelled(0, copies=False)
    e1, var, shared = cell_moments(d.X, d.seg_idx, p, d.cat_values, k=3.0, with_shared=True)
    p2 = {**p, "noise_scale": np.full((100, d.n_models), 2.5, np.float32)}
    e1b, var2 = cell_moments(d.X, d.seg_idx, p2, d.cat_values, k=3.0)
    np.testing.assert_allclose(e1b, e1)
    np.testing.assert_allclose(var2, shared ** 2 + 2.5 * (var - shared ** 2), rtol=1e-5)


def test_pooling_shrinks_a_noisy_model_and_keeps_a_sure_one():
    rng = np.random.default_rng(0)
    theta, mu, tau, mean = _pool(np.array([0.0, 0.0, 0.0]), np.array([0.1, 0.2, 0.1]), 4000, rng)
    assert abs(mu) < 0.05 and np.allclose(mean, 0.0, atol=0.05) and tau < 0.3
    y = np.array([0.0, 0.05, -0.05, 1.0, 1.0, np.nan])
    v = np.array([0.01, 0.01, 0.01, 0.0001, 4.0, np.nan])
    theta, mu, tau, mean = _pool(y, v, 4000, rng)
    assert theta.shape == (4000, 6) and tau > 0.2
    assert abs(mean[3] - 1.0) < 0.02 and theta[:, 3].std() < 0.02  # precise: keeps its own factor
    assert abs(mean[4] - mu) < abs(1.0 - mu) * 0.2  # noisy: near the pooled one
    # no estimate: drawn from the population, so as uncertain as the models' spread
    assert abs(mean[5] - mu) < 0.1 and theta[:, 5].std() > theta[:, 0].std()


def test_pooling_keeps_part_of_each_estimate_where_a_point_estimate_of_the_spread_would_pool_fully():
    """Ten models' log factors within their sampling noise (a spread DerSimonian-Laird puts at exactly 0): the
    posterior over the between-model sd still leaves the highest model above the pooled factor, by less than its
    own estimate; and the draws' spread of the pooled factor is at least its sampling variance's."""
    y = np.log(np.array([0.75, 1.0, 1.05, 1.35, 1.1, 1.2, 0.9, 1.15, 1.0, 0.95]))
    v = np.full(10, 0.1)
    theta, mu, tau, mean = _pool(y, v, 8000, np.random.default_rng(1))
    assert mean[3] > mu + 0.01 and mean[3] < y[3]
    assert mean[0] < mu - 0.01 and mean[0] > y[0]
    assert theta.mean(axis=1).std() >= np.sqrt(0.1 / 10) * 0.9
