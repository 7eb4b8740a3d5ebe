"""Statistics tested as statistics: coverage over seeded repeated simulation (real NUTS fits).

The full 200-replicate study is benchmarks/calibration_coverage.py (about 20 minutes here); this module runs as
many replicates as fit the CI budget, with a band of about 3 binomial standard deviations around 0.90.
"""
import pytest

from calibration.simulate import coverage_study

REPS = 24  # x 2 candidates = 48 intervals; two vectorised NUTS fits of 12 replicates


@pytest.fixture(scope="module")
def pairwise_study():
    # judges with known bias (+0.8 towards cand-a), noise, position bias between the two orders, 3 segments
    return coverage_study(REPS, seed0=100, kind="pairwise", blocks_per_fit=12, draws=400, tune=400)


def test_pairwise_coverage_and_width(pairwise_study):
    df = pairwise_study
    assert len(df) == 2 * REPS
    cov = df["covered"].mean()
    assert 0.78 <= cov <= 1.0, f"coverage {cov:.3f} of nominal 0.90 over {len(df)} intervals"
    assert df["width"].mean() <= df["human_width"].mean(), (df["width"].mean(), df["human_width"].mean())
    # the judge favours cand-a: its raw win rate is biased, the calibrated estimate is not
    err = (df["estimate"] - df["truth"]).groupby(df["candidate"]).mean()
    assert abs(err["cand-a"]) < 0.03 and abs(err["cand-b"]) < 0.03, err.to_dict()
