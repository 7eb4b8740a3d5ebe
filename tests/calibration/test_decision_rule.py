"""Decision rule edges (pure functions, no sampling)."""
import numpy as np
import pytest

from calibration import decision as d


def test_thresholds():
    assert d.thresholds("pairwise", 0.05) == (0.45, 0.5)
    assert d.thresholds("binary", 0.05) == (-0.05, 0.0)
    assert d.thresholds("ordinal", 0.2) == (-0.2, 0.0)


def test_exactly_at_margin_is_undecided():
    draws = np.full(1000, 0.45)  # all mass exactly on the non-inferiority threshold
    p = d.prob_above(draws, 0.45)
    assert p == 0.5
    verdict, reasons = d.dimension_verdict(p, 0.9, True, [])
    assert verdict == d.MORE and "undecided" in reasons[0]
    # symmetric draws centred on the margin: also undecided
    rng = np.random.default_rng(0)
    p2 = d.prob_above(0.45 + rng.normal(0, 0.01, 4000), 0.45)
    assert 0.4 < p2 < 0.6


@pytest.mark.parametrize("p,expected", [(0.9, d.MIGRATE), (0.8999, d.MORE), (0.1, d.REJECT), (0.1001, d.MORE),
                                        (1.0, d.MIGRATE), (0.0, d.REJECT)])
def test_confidence_boundaries(p, expected):
    assert d.dimension_verdict(p, 0.9, True, [])[0] == expected


def test_unconverged_never_migrates():
    verdict, reasons = d.dimension_verdict(1.0, 0.9, False, [])
    assert verdict == d.MORE and "did not converge" in reasons[0]
    assert d.dimension_verdict(0.0, 0.9, False, [])[0] == d.MORE


def test_segment_regression_blocks_migrate_even_when_total_improves():
    verdict, reasons = d.dimension_verdict(0.999, 0.9, True, ["region=eu"])
    assert verdict == d.MORE and "region=eu" in reasons[0]


def test_labels_needed():
    rng = np.random.default_rng(1)
    thr = 0.45
    settled = rng.normal(0.6, 0.02, 2000)
    assert d.labels_needed(settled, thr, 0.9, 100, 900) == 0
    close = rng.normal(0.47, 0.03, 2000)
    closer = rng.normal(0.46, 0.03, 2000)
    n1 = d.labels_needed(close, thr, 0.9, 100, 10**6)
    n2 = d.labels_needed(closer, thr, 0.9, 100, 10**6)
    assert 0 < n1 < n2  # nearer the threshold needs more labels
    # "likely settles" (P(decided) >= 0.8, preposterior) asks for more than reaching the bound on average would:
    # sd * sqrt(100 / (100 + m)) * z = gap at m about 270 here
    sd, gap = close.std(), abs(close.mean() - thr)
    assert n1 > 100 * ((1.2816 * sd / gap) ** 2 - 1)
    assert d.labels_needed(np.full(10, thr) + rng.normal(0, 1e-3, 10) * 0 + 0.0, thr, 0.9, 50, 77) in (0, 77)
    assert d.labels_needed(rng.normal(0.4501, 0.05, 2000), thr, 0.9, 100, 300) == 300  # capped


def test_combine():
    assert d.combine([d.MIGRATE, d.MIGRATE]) == d.MIGRATE
    assert d.combine([d.MIGRATE, d.MORE]) == d.MORE
    assert d.combine([d.MORE, d.REJECT]) == d.REJECT
    assert d.combine([]) == d.MORE
