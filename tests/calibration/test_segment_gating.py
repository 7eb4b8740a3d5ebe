"""The joint segment rule and labels_needed (pure functions on synthetic draws, seeded; no sampling)."""
import json

import numpy as np
import pytest

from calibration import decision as d
from calibration import segments as sg

THR, CONF = 0.45, 0.9
NAMES = [f"region={r}" for r in ("eu", "us", "apac", "latam", "mena", "africa")]


def _posterior(rng, truth, sd=0.04, shared=0.5, n_draws=1000):
    """Calibrated normal posterior draws of G segments (columns) whose true values are ``truth``: the posterior
    mean is truth + noise of the posterior's own sd, segments correlated by a shared component."""
    truth = np.asarray(truth, float)
    G = len(truth)
    cov = sd**2 * ((1 - shared) * np.eye(G) + shared)
    mean = rng.multivariate_normal(truth, cov)
    return rng.multivariate_normal(mean, cov, size=n_draws)


def test_clearly_bad_segment_blocks_and_is_named():
    rng = np.random.default_rng(0)
    truth = [0.55] * 6
    truth[2] = 0.25
    draws = _posterior(rng, truth)
    blocking, p_adj = sg.blocking_segments(draws, NAMES, THR, sg.family_level(CONF, 3))
    assert blocking == ["region=apac"]
    assert p_adj[2] < 0.01 and (np.delete(p_adj, 2) > 0.5).all()


def test_at_the_margin_everywhere_false_blocks_are_bounded():
    # 6 regions x 3 dimensions, every cell exactly at the threshold: the joint rule blocks in <= 1 - C of runs
    # (binomial slack of 3 sd over 300 runs); the 18 per-segment vetoes it replaces block most of the time.
    rng = np.random.default_rng(1)
    level = sg.family_level(CONF, 3)
    runs, joint, veto = 300, 0, 0
    for _ in range(runs):
        fams = [_posterior(rng, [THR] * 6, shared=0.3, n_draws=600) for _ in range(3)]
        joint += any(sg.blocking_segments(f, NAMES, THR, level)[0] for f in fams)
        veto += any((np.mean(f > THR, axis=0) <= 1 - CONF).any() for f in fams)
    assert joint / runs <= 0.10 + 3 * np.sqrt(0.09 / runs), joint / runs
    assert veto / runs > 0.5, veto / runs


def test_one_segment_is_the_marginal_rule_and_sidak_levels_multiply():
    rng = np.random.default_rng(2)
    one = rng.normal(0.47, 0.02, (4000, 1))
    p_adj = sg.adjusted_p_noninferior(one, THR)[0]
    assert abs(p_adj - d.prob_above(one[:, 0], THR)) < 0.01
    assert abs(sg.family_level(0.9, 3) ** 3 - 0.9) < 1e-12 and sg.family_level(0.9, 1) == 0.9
    # independent segments: the band's k is close to (not above) Bonferroni's
    ind = rng.normal(0, 1, (20000, 6))
    k = sg.band_multiplier(ind, 0.9)
    assert 1.28 < k <= sg.normal_band_multiplier(6, 0.9) + 0.05


def test_correlated_segments_get_a_looser_band():
    rng = np.random.default_rng(3)
    ind = rng.normal(0, 1, (20000, 6))
    common = rng.normal(0, 1, (20000, 1)) * np.sqrt(0.9) + ind * np.sqrt(0.1)
    assert sg.band_multiplier(common, 0.9) < sg.band_multiplier(ind, 0.9) - 0.3


def test_labels_needed_none_in_cold_start_zero_when_settled():
    rng = np.random.default_rng(4)
    assert d.labels_needed(rng.normal(0.47, 0.03, 2000), THR, CONF, 0, 500) is None
    assert d.labels_needed(rng.normal(0.60, 0.02, 2000), THR, CONF, 100, 900) == 0


def test_labels_needed_is_the_preposterior_80_percent_point_and_monotone():
    rng = np.random.default_rng(5)
    draws = rng.normal(0.47, 0.03, 4000)
    m = d.labels_needed(draws, THR, CONF, 100, 10**6)
    z = 1.2815515655446004
    kw = dict(thr=THR, z_up=z, z_lo=z, mu=float(draws.mean()), sd=float(draws.std()), n=100)
    assert d.p_decided(np.array([m]), **kw)[0] >= 0.8 > d.p_decided(np.array([m - 1]), **kw)[0]
    # Monte Carlo of the same preposterior: theta from the posterior, m new labels' mean, conjugate update
    mu, sd, n = kw["mu"], kw["sd"], 100
    s1 = sd * np.sqrt(n)
    theta = rng.normal(mu, sd, 200_000)
    ybar = rng.normal(theta, s1 / np.sqrt(m))
    post = (n * mu + m * ybar) / (n + m)
    sd_after = s1 / np.sqrt(n + m)
    mc = np.mean((post >= THR + z * sd_after) | (post <= THR - z * sd_after))
    assert abs(mc - d.p_decided(np.array([m]), **kw)[0]) < 0.01
    # nearer the threshold, or a wider posterior, needs more labels; capped at what is left to label
    nearer = d.labels_needed(rng.normal(0.46, 0.03, 4000), THR, CONF, 100, 10**6)
    assert 0 < m < nearer
    assert d.labels_needed(draws, THR, CONF, 100, 50) == 50


def test_segment_labels_needed_positive_when_the_model_blocks_on_few_labels():
    # the model places the segment at 0.33 +- 0.03 (judges and pooling); only 8 human labels there, of mean 0.38
    rng = np.random.default_rng(6)
    seg = rng.normal(0.33, 0.03, 2000)
    k = sg.normal_band_multiplier(18, 0.9)
    m = d.segment_labels_needed(seg, THR, CONF, k, 0.38, 8, 0.45, 400)
    assert 0 < m < 400
    # labels far below the threshold need fewer extra labels to confirm than labels that contradict the model
    assert d.segment_labels_needed(seg, THR, CONF, k, 0.20, 8, 0.45, 400) < m
    assert d.segment_labels_needed(seg, THR, CONF, k, None, 0, 0.45, 400) > 0


def test_label_export_reads_a_positive_need_and_its_segment(tmp_path):
    from jobs.errors import ContractError
    from jobs.labels.export import needs_from_decision
    from tests.calibration.test_decision_schema import _example

    doc = _example()  # the documented decision.json, two candidates with their needs
    a = doc["candidates"].pop("cand-a")
    a["dimensions"]["quality"].update(labels_needed=None, labels_needed_segment=None)
    b = json.loads(json.dumps(a))
    b["dimensions"]["quality"].update(labels_needed=37, labels_needed_segment="region=apac")
    doc["candidates"] = {"cand-a": a, "cand-b": b}
    p = tmp_path / "decision.json"
    p.write_text(json.dumps(doc))
    assert needs_from_decision(str(p)) == ({"cand-b": 37}, "region=apac")
    # read as the typed decision: a document off the schema is refused naming the field
    b["dimensions"]["quality"]["labels_needed"] = "lots"
    p.write_text(json.dumps(doc))
    with pytest.raises(ContractError, match=r"decision.json: not a decision document .*candidates.cand-b.dimensions"
                                            r".quality.labels_needed"):
        needs_from_decision(str(p))


@pytest.mark.parametrize("segments,expect", [(("eu",), False), (("eu", "us", "apac"), True)])
def test_segment_slopes_only_with_segments(segments, expect):
    from calibration.data import prepare
    from calibration.models import build_model
    from tests.support.simulate import simulate_pairwise

    sim = simulate_pairwise(0, n_requests=60, n_labels=20, n_annot=1, candidates=("cand-a",), cand_effect=(0.0,),
                            judge_bias=(0.0,), segments=segments)
    data = prepare(sim.scores, sim.labels, "incumbent", None, "quality", "pairwise", sim.traffic, ["region"])
    model = build_model([data])
    assert ("beta_seg" in model.named_vars) == expect


def test_pipeline_labels_needed_wiring():
    """calibration.pipeline._labels_needed: None in cold start, a positive need on the blocking segment."""
    from types import SimpleNamespace

    from calibration.pipeline import _labels_needed
    from calibration.segments import SegmentGate

    rng = np.random.default_rng(7)
    n = 600
    seg_idx = np.repeat(np.arange(3), n // 3)
    data = SimpleNamespace(segment_names=["region=eu", "region=us", "region=apac"], seg_idx=seg_idx)
    pop_seg = np.stack([rng.normal(0.55, 0.03, 1000), rng.normal(0.55, 0.03, 1000), rng.normal(0.33, 0.03, 1000)],
                       axis=1)[:, None, :]
    est = SimpleNamespace(pop_seg=pop_seg, n_seg=np.full((1, 3), n / 3))  # requests per segment in the estimand
    labelled = np.zeros(n, dtype=bool)
    labelled[rng.choice(n, 30, replace=False)] = True
    y = np.where(labelled, rng.choice([0.0, 0.5, 1.0], n), np.nan)
    gate = SegmentGate(blocking=["region=apac"], level=0.9, band_k=1.9, most_useful="region=eu")
    overall = rng.normal(0.5, 0.02, 1000)
    inside = np.ones(n, dtype=bool)
    need, seg = _labels_needed(data, overall, est, 0, labelled, inside, THR, CONF, d.MORE, True, gate, y, n, 30)
    assert need > 0 and seg == "region=apac"
    none = np.zeros(n, dtype=bool)
    assert _labels_needed(data, overall, est, 0, none, inside, THR, CONF, d.MORE, True, gate, y, n, 0) == (None, None)
