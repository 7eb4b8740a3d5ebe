"""Statistics tested as statistics: coverage over seeded repeated simulation (real NUTS fits).

The issue's band is coverage in [0.85, 0.95] at nominal 0.90; benchmarks/calibration_coverage.py checks it on
600 replicates per kind. This module runs as many replicates as fit the CI budget, so it checks the band widened
by the binomial noise of its own interval count (:func:`honest_band`): an observed coverage outside that wider
band is evidence that the true coverage is outside [0.85, 0.95]; inside it, the test has no evidence either way
(with 48 intervals it catches coverage below about 0.72, and cannot see over-coverage).
"""
import math

import pytest

from tests.support.simulate import coverage_study

REPS = 24  # x 2 candidates = 48 intervals; two vectorised NUTS fits of 12 independent replicates
BAND = (0.85, 0.95)


def honest_band(n: int, band=BAND, z: float = 2.58) -> tuple[float, float]:
    """[lo - z sd(lo), hi + z sd(hi)] with binomial sds at n intervals: about 0.5% one-sided false alarms when
    the true coverage sits at either end of ``band`` (intervals taken as independent)."""
    lo, hi = band
    return lo - z * math.sqrt(lo * (1 - lo) / n), hi + z * math.sqrt(hi * (1 - hi) / n)


def test_honest_band_tightens_to_the_issue_band():
    lo, hi = honest_band(48)
    assert 0.71 < lo < 0.72 and hi > 1.0  # what 48 intervals can tell
    lo, hi = honest_band(400)
    assert 0.80 < lo < 0.81 and 0.97 < hi < 0.98


@pytest.fixture(scope="module")
def pairwise_study():
    # judges with known bias (+0.8 towards cand-a), noise, position bias between the two orders, 3 segments
    return coverage_study(REPS, seed0=100, kind="pairwise", blocks_per_fit=12, draws=400, tune=400)


def test_pairwise_coverage_and_width(pairwise_study):
    df = pairwise_study
    assert len(df) == 2 * REPS
    cov = df["covered"].mean()
    lo, hi = honest_band(len(df))
    assert lo <= cov <= hi, f"coverage {cov:.3f} of nominal 0.90 over {len(df)} intervals, band [{lo:.3f}, {hi:.3f}]"
    # like for like: the human-only interval with the finite-population correction targets the same estimand
    assert df["width"].mean() <= df["human_fpc_width"].mean(), (df["width"].mean(), df["human_fpc_width"].mean())
    # the judge favours cand-a: its raw win rate is biased, the calibrated estimate is not
    err = (df["estimate"] - df["truth"]).groupby(df["candidate"]).mean()
    assert abs(err["cand-a"]) < 0.03 and abs(err["cand-b"]) < 0.03, err.to_dict()


@pytest.mark.slow
def test_paired_binary_coverage_and_width():
    # incumbent and two candidates share each request's difficulty; 60 requests labelled for all three
    df = coverage_study(REPS, seed0=300, kind="binary", blocks_per_fit=12, draws=300, tune=300,
                        candidates=("cand-a", "cand-b"), model_effect=(0.0, 0.2, -0.1), judge_bias=(0.0, 0.6, 0.0))
    cov = df["covered"].mean()
    lo, hi = honest_band(len(df))
    assert lo <= cov <= hi, f"coverage {cov:.3f} over {len(df)} intervals, band [{lo:.3f}, {hi:.3f}]"
    assert df["width"].mean() <= df["human_fpc_width"].mean(), (df["width"].mean(), df["human_fpc_width"].mean())
    assert abs((df["estimate"] - df["truth"]).mean()) < 0.03
