"""Krippendorff's alpha against published values; the representativeness check against known selections."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.agreement import alpha_from_long, krippendorff_alpha, representativeness
from calibration.design import active_design, bernoulli_sd, ht_weights

NA = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units example with
# missing data; the paper reports alpha = 0.743 (nominal), 0.815 (ordinal), 0.849 (interval).
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NA, NA, NA],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NA, 3],
    [NA, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NA],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NA],
])


@pytest.mark.parametrize("level,published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorff_2011(level, published):
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)


def test_alpha_perfect_chance_and_degenerate():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, 200).astype(float)
    assert krippendorff_alpha(np.vstack([truth, truth, truth]), "ordinal") == pytest.approx(1.0)
    noise = rng.integers(1, 6, (3, 2000)).astype(float)  # annotators answering at random
    assert abs(krippendorff_alpha(noise, "nominal")) < 0.03
    assert np.isnan(krippendorff_alpha(np.ones((2, 5)), "nominal"))  # no variation
    assert np.isnan(krippendorff_alpha(np.array([[1.0, NA], [NA, 2.0]]), "nominal"))  # nothing pairable
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(KRIPPENDORFF_2011, "ratio-ish")


def test_alpha_from_long_rows():
    ann, unit = np.nonzero(np.isfinite(KRIPPENDORFF_2011))
    vals = KRIPPENDORFF_2011[ann, unit]
    res = alpha_from_long(np.array([f"u{u}" for u in unit]), np.array([f"a{a}" for a in ann]), vals, "interval")
    assert res["alpha"] == pytest.approx(0.849, abs=5e-4)
    assert res["items"] == 11 and res["annotators"] == 4 and res["pairable_values"] == 40


def _metrics(rng, n=3000):
    judge = rng.uniform(0, 1, n)
    length = rng.normal(0, 1, n)
    return np.column_stack([judge, length])


def test_random_labels_are_representative():
    rng = np.random.default_rng(1)
    m = _metrics(rng)
    idx = rng.choice(len(m), 150, replace=False)
    rows = representativeness(m, idx, names=["judge", "length"])
    assert [r["metric"] for r in rows] == ["judge", "length"]
    assert not any(r["warn"] for r in rows)
    assert all(abs(r["smd"]) < 0.25 for r in rows)


def test_biased_labels_warn_on_the_biased_metric_only():
    rng = np.random.default_rng(2)
    m = _metrics(rng)
    top = np.flatnonzero(m[:, 0] > 0.6)
    idx = rng.choice(top, 150, replace=False)  # someone labelled only requests the judge liked
    rows = {r["metric"]: r for r in representativeness(m, idx, names=["judge", "length"])}
    assert rows["judge"]["warn"] and rows["judge"]["smd"] > 1.0 and rows["judge"]["ks"] > 0.3
    assert not rows["length"]["warn"]


def test_design_weights_make_an_active_sample_representative():
    """An active sample over-represents close calls: unweighted it warns, weighted by 1/pi it does not."""
    rng = np.random.default_rng(3)
    m = _metrics(rng)
    idx, pi = active_design(bernoulli_sd(m[:, 0]) ** 3, 300, rng, tau=0.05)
    unweighted = representativeness(m, idx, names=["judge", "length"])[0]
    weighted = representativeness(m, idx, ht_weights(pi[idx]), names=["judge", "length"])[0]
    assert unweighted["warn"]
    assert not weighted["warn"] and weighted["n_eff"] < 300


def test_representativeness_handles_missing_values_and_bad_weights():
    m = np.array([[np.nan], [1.0], [2.0], [3.0]])
    rows = representativeness(m, np.array([0, 1]))
    assert rows[0]["warn"] is False and rows[0]["note"] == "fewer than two values"
    with pytest.raises(ValueError, match="weights has 1"):
        representativeness(m, np.array([0, 1]), np.array([1.0]))
