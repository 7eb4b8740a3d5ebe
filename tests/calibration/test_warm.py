"""Warm-started NUTS (calibration.warm): a fit that starts from the sampler state of the last fit of its shape
samples its own posterior, with less tuning; a fit of another shape starts cold."""
import numpy as np

from calibration.data import prepare
from calibration.models import fit
from calibration.warm import WarmStart, stable
from tests.support.simulate import ABSOLUTE_DIMENSION, simulate_binary


def _blocks(seeds):
    tabs = [simulate_binary(s) for s in seeds]
    return [prepare(t.scores, t.labels, "incumbent", None, ABSOLUTE_DIMENSION["binary"], "binary", t.traffic,
                    ["region"]) for t in tabs]


def test_a_warm_fit_samples_its_own_posterior_with_less_tuning():
    warm = WarmStart(tune=100)
    first, second = _blocks([1, 2]), _blocks([3, 4])
    # nothing stored yet, then one fit whose variances the next must confirm: both cold
    for seeds, seed in (([5, 6], 5), ([7, 8], 6)):
        idata0, _ = fit(_blocks(seeds), draws=300, tune=300, seed=seed, warm=warm, warm_key="binary")
        assert idata0.posterior.attrs["tuning_steps"] == 300
    idata0, _ = fit(first, draws=300, tune=300, seed=1, warm=warm, warm_key="binary")
    assert idata0.posterior.attrs["tuning_steps"] == 100
    idata1, p_warm = fit(second, draws=300, tune=300, seed=2, warm=warm, warm_key="binary")
    assert idata1.posterior.attrs["tuning_steps"] == 100
    _, p_cold = fit(second, draws=300, tune=300, seed=3)
    # the same posterior as a cold fit of the same labels, not the last fit's: every block's cut point and
    # intercepts agree within Monte Carlo error, and differ from the first fit's labels' posterior
    _, p_first = fit(first, draws=300, tune=300, seed=4)
    for name in ("cut", "alpha"):
        w, c = (p[name].reshape(p[name].shape[0], -1) for p in (p_warm, p_cold))
        free = c.std(axis=0) > 0  # the first row model's intercept is fixed at 0
        w, c = w[:, free], c[:, free]
        sd = c.std(axis=0)
        assert np.all(np.abs(w.mean(axis=0) - c.mean(axis=0)) < 0.35 * sd + 0.02), name
        assert np.all(np.abs(w.std(axis=0) / sd - 1) < 0.3), name
    moved = np.abs(p_first["alpha"].mean(axis=0) - p_cold["alpha"].mean(axis=0)).max()
    assert moved > 0.2  # the two label sets' posteriors do differ, so agreeing with the cold fit means something
    assert int(idata1.sample_stats["diverging"].sum()) == 0


def test_a_fit_of_another_shape_or_key_starts_cold():
    warm = WarmStart(tune=50)
    for s in (1, 2):
        fit(_blocks([s, s + 10]), draws=150, tune=120, seed=s, warm=warm, warm_key="k")
    idata, _ = fit(_blocks([3]), draws=150, tune=120, seed=3, warm=warm, warm_key="k")  # one block: other shape
    assert idata.posterior.attrs["tuning_steps"] == 120
    for s in (4, 5):
        idata, _ = fit(_blocks([s]), draws=150, tune=120, seed=s, warm=warm, warm_key="other")
        assert idata.posterior.attrs["tuning_steps"] == 120
    idata, _ = fit(_blocks([6]), draws=150, tune=120, seed=6, warm=warm, warm_key="other")
    assert idata.posterior.attrs["tuning_steps"] == 50


def test_posterior_scales_that_move_between_fits_keep_the_next_fit_cold():
    v = np.array([1.0, 0.5, 2.0])
    assert stable(v, v * np.array([3.0, 0.2, 9.0]))
    assert not stable(v, v * np.array([1.0, 1.0, 376.0]))  # PandaLM: a slope at its prior in one draw only
    assert not stable(v, v * np.array([1.0, 0.001, 1.0]))
    assert not stable(v, np.ones(4))
