"""The label likelihood inside the PyMC model (calibration.models.build_model), evaluated at a fixed point against
scipy: the Dirichlet-multinomial of each cell's annotations."""
import numpy as np
import pytest
from scipy.special import expit, factorial, logit
from scipy.stats import dirichlet_multinomial

from calibration.models import build_model
from tests.calibration.test_diagnostics import _data


def test_labels_potential_is_the_dirichlet_multinomial_even_without_unanimous_cells():
    # Every cell has three annotations in three different categories: its largest category count is 1, but the
    # normaliser Gamma(kappa) / Gamma(kappa + 3) runs over all three (the model once looped only to the largest
    # count, which is wrong whenever no cell is unanimous).
    d = _data(6)
    d.lab_cat = np.tile([0, 1, 2], 6)
    model = build_model([d])
    assert {v.name for v in model.free_RVs} == {"cut", "beta_mu", "item_icc"}
    cut, icc = np.array([-1.0, 0.7]), 0.4
    point = {"cut_ordered__": np.array([[cut[0], np.log(cut[1] - cut[0])]]), "beta_mu": np.zeros((1, 2)),
             "item_icc_logodds__": np.array([logit(icc)])}
    labels = model.compile_logp(vars=model.potentials)(point)
    pr = np.diff(np.r_[0.0, expit(cut), 1.0])  # beta = 0: every cell's eta is 0
    counts = np.ones(3)
    one = dirichlet_multinomial.logpmf(counts, (1 / icc - 1) * pr, 3) - np.log(factorial(3))
    assert float(labels) == pytest.approx(6 * one, rel=1e-9)


def test_labels_potential_with_one_annotation_per_cell_is_the_ordered_logistic():
    # One annotation per cell: no intra-cell correlation to identify, so no item_icc; every category is seen,
    # the end categories included (their probability uses c_{-1} = -inf and c_{K-1} = +inf).
    d = _data(6)
    keep = np.arange(0, 18, 3)
    d.lab_req, d.lab_model, d.lab_annotator = d.lab_req[keep], d.lab_model[keep], d.lab_annotator[keep]
    d.lab_cat = np.array([0, 1, 2, 2, 0, 1])
    model = build_model([d])
    assert "item_icc" not in {v.name for v in model.free_RVs}
    cut, beta = np.array([-0.4, 1.1]), np.array([0.8, -0.5])
    point = {"cut_ordered__": np.array([[cut[0], np.log(cut[1] - cut[0])]]), "beta_mu": beta[None, :]}
    labels = model.compile_logp(vars=model.potentials)(point)
    eta = d.X[:, 0, :].astype(float) @ beta
    want = sum(np.log(np.diff(np.r_[0.0, expit(cut - eta[r]), 1.0])[k]) for r, k in enumerate(d.lab_cat))
    assert float(labels) == pytest.approx(want, rel=1e-6)
