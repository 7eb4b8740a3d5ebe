"""Warm-started NUTS for a series of fits of one model shape (benchmarks fitting many label draws of one case).

NUTS spends its tuning on two things: a diagonal mass matrix (the posterior variance of each unconstrained
parameter, estimated in windows, the first with a unit matrix and long trajectories) and a step size (dual
averaging to the target acceptance). In ``calibration_real.py`` half of the iterations were tuning (400 + 400).
Successive fits of one (case, n) have the same parameters and posteriors of nearly the same shape: the label draws
differ, the model does not. So a fit can start where the last one ended: the mass matrix is the previous fit's
posterior variance, held fixed (no adaptation windows), each chain starts at a draw of the previous posterior, and
tuning only re-adapts the step size from the previous one (Hoffman & Gelman 2014, JMLR 15, sec. 3.2: dual
averaging). The posterior each fit targets is its own; only the sampler's starting state is borrowed, and each
fit's convergence is judged as before (calibration.diagnostics).

That holds only where a parameter's posterior scale does not change from one label draw to the next. On HANNA
(n = 50, 5 blocks) the posterior variances of two draws agreed within a factor of 3.4 and a warm fit (150 tuning
iterations) sampled in 25-32 s against 47-53 s cold, with the same intervals up to Monte Carlo error. On PandaLM
they differed by up to 376 times (a judge feature that is nearly constant within one draw's few labels leaves its
slope at the prior), the carried mass matrix was wrong for the next draw, and the warm fit took twice as long
(step size 0.01 against 0.05). So a fit starts warm only when the last two fits of its key had posterior variances
within :data:`STABLE_RATIO` of each other in every parameter; otherwise, and when the parameter vector differs from
the stored one (another case, fewer blocks), it starts cold.
"""
from __future__ import annotations

import numpy as np
import pymc as pm
from pymc.step_methods.hmc.quadpotential import QuadPotentialDiagAdapt

NEVER = 10 ** 9  # an adaptation window no fit reaches: the carried mass matrix stays as it is
STABLE_RATIO = 10.0


def stable(var_a: np.ndarray, var_b: np.ndarray, ratio: float = STABLE_RATIO) -> bool:
    """Whether two fits' posterior variances (unconstrained, per parameter) agree within ``ratio`` everywhere."""
    return var_a.shape == var_b.shape and bool(np.all(np.abs(np.log(var_a / var_b)) <= np.log(ratio)))


class WarmStart:
    """Sampler state carried between fits of one model shape, per ``key`` (e.g. the case and n).

    ``tune``: tuning iterations of a warm fit (step size only); a cold fit uses the caller's ``tune``."""

    def __init__(self, tune: int = 150):
        self.tune = tune
        self._state: dict = {}

    def sample(self, key, model: pm.Model, draws: int, tune: int, chains: int, cores: int, seed: int,
               target_accept: float):
        """``pm.sample`` of ``model``, warm when the state stored under ``key`` fits it; stores this fit's state."""
        point = model.initial_point()  # compiles a function: once
        names = list(point)
        size = sum(int(np.prod(v.shape)) for v in point.values())
        prev = self._state.get(key)
        kw = dict(draws=draws, chains=chains, cores=cores, random_seed=seed, progressbar=False,
                  compute_convergence_checks=False, idata_kwargs={"include_transformed": True})
        with model:
            if prev is None or prev["size"] != size or prev["names"] != names or not prev["stable"]:
                idata = pm.sample(tune=tune, target_accept=target_accept, **kw)
            else:
                pot = QuadPotentialDiagAdapt(size, prev["mean"], prev["var"], initial_weight=1,
                                             adaptation_window=NEVER)
                # BaseHMC starts at step_scale / size ** 0.25: start at the step the last fit ended with
                step = pm.NUTS(potential=pot, target_accept=target_accept, step_scale=prev["step"] * size ** 0.25)
                idata = pm.sample(tune=self.tune, step=step, initvals=prev["starts"][:chains], **kw)
        state = _state(model, idata, names, size, chains, seed)
        state["stable"] = prev is not None and prev["names"] == names and stable(prev["var"], state["var"])
        self._state[key] = state
        return idata


def _state(model: pm.Model, idata, names: list[str], size: int, chains: int, seed: int) -> dict:
    post = idata.posterior
    flat = np.concatenate([post[n].to_numpy().reshape(post.sizes["chain"] * post.sizes["draw"], -1)
                           for n in names], axis=1)
    rng = np.random.default_rng(seed)
    picks = rng.choice(flat.shape[0], chains, replace=False)
    free = [rv.name for rv in model.free_RVs]
    starts = []
    for i in picks:
        c, d = divmod(int(i), post.sizes["draw"])
        starts.append({n: post[n].to_numpy()[c, d] for n in free})
    return {"names": names, "size": size, "mean": flat.mean(axis=0), "var": np.maximum(flat.var(axis=0), 1e-8),
            "step": float(np.mean(idata.sample_stats["step_size"].to_numpy()[:, -1])), "starts": starts}
