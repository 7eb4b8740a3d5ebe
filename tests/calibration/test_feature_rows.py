"""A dimension's features for any subset of the scored requests (calibration.data.FeatureSpec.rows, used by the
per-shard aggregation on Ray workers) are exactly the rows prepare computed on all of them: imputation means,
indicators, standardisation, duplicates and principal axes all come from the fitted transform, not the subset."""
import numpy as np
import pytest

from calibration.data import prepare
from tests.support.simulate import simulate_binary, simulate_design, simulate_pairwise


def _subset_matches(t, d, rows, design=None):
    keep = t.scores[t.scores["request_id"].isin(d.request_ids[rows])]
    ids, X, present = d.features.rows(keep, design)
    np.testing.assert_array_equal(ids, d.request_ids[rows])
    np.testing.assert_array_equal(present, d.present[rows])
    np.testing.assert_allclose(X, d.X[rows], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("max_features", [8, 1], ids=["standardised", "pca"])
@pytest.mark.parametrize("kind", ["pairwise", "binary"])
def test_rows_of_a_subset_are_the_rows_of_the_whole(kind, max_features):
    if kind == "pairwise":
        t, dim = simulate_pairwise(3, n_requests=500, n_labels=60), "quality"
    else:
        t, dim = simulate_binary(4, n_requests=500, n_labels=60), "correctness"
    d = prepare(t.scores, t.labels, "incumbent", None, dim, kind, t.traffic, ["region"], max_features=max_features)
    assert any(n.endswith("[missing]") for n in d.feature_names) or max_features == 1 or kind == "binary"
    rng = np.random.default_rng(0)
    _subset_matches(t, d, np.sort(rng.choice(d.n_req, 37, replace=False)))
    _subset_matches(t, d, np.arange(d.n_req)[d.n_req // 2:])


def test_log_pi_covariate_rows_use_the_design():
    t = simulate_design(2, "active", n_requests=400, n_labels=50)
    d = prepare(t.scores, t.labels, "incumbent", ["cand-a"], "quality", "pairwise", t.traffic, ["region"],
                design=t.design, design_adjustment="covariate")
    assert "design.log_pi" in d.feature_names
    _subset_matches(t, d, np.arange(0, d.n_req, 7), design=t.design)
    with pytest.raises(ValueError, match="design"):
        d.features.rows(t.scores)
