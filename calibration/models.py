"""PyMC calibration model: human label given automated metrics (ordered logistic).

For a labelled cell (request r, row model m, segment s) with standardised metric vector x:

    eta = x . beta[m] + alpha[m] + u[m, s]
    alpha[m] = gamma . xbar[m] + sigma_alpha * t3[m]     with >= 3 row models: intercepts pooled around the models'
                                                     mean features (contextual effect); alpha[0] = 0 and the
                                                     others free with fewer
    P(label <= k) = logistic(c_k - eta)              (ordered logistic; binary is the K = 2 case)
    beta[m] = beta_mu + tau * z[m]                   per-model slopes, partially pooled (non-centred)
    u[m, s] = sigma_seg * w[m, s]                    segment offsets per model, partially pooled
    + x . b[s],  b[s] = tau_seg * v[s]               segment-varying slopes, partially pooled (only with segments)
    counts[cell] ~ DirMult(kappa * P(label | eta))   annotators of one request agree beyond chance,
                                                     kappa = 1 / icc - 1 (only with >= 2 labels on some cell)
    + v[r] ~ N(0, sigma_req)                         absolute dimensions: shared by the row models of request r,
                                                     sigma_req ~ HalfNormal(0.3) (REQ_SIGMA_PRIOR_SD: why)

Every annotator's label is a likelihood term (counts per cell and category), so disagreement between annotators
informs the cut-points (how often a request draws a tie, a 4 instead of a 5...). This is the "calibration" direction
of Angelopoulos et al. and of the framework paper: P(human | metrics), with the ordered-logistic link of McCullagh
(1980) and hierarchical pooling as in Gelman & Hill (2007).

The model is written over independent *blocks* (leading ``block`` dim): a real run has one block; the coverage
simulation fits hundreds of independent replicates in one vectorised NUTS run.
"""
from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from calibration.data import CalibrationData
from calibration.design import LOG_PI, kish_n_eff


def _cells(blocks: list[CalibrationData]):
    """Labelled cells of all blocks, with per-category annotation counts."""
    out = {k: [] for k in ("block", "model", "seg", "x", "counts", "req", "weight")}
    for b, d in enumerate(blocks):
        req, mod, counts, first = d.cell_counts()
        out["block"].append(np.full(len(req), b))
        out["model"].append(mod)
        out["seg"].append(d.seg_idx[req])
        out["x"].append(d.X[req, mod, :])
        out["counts"].append(counts)
        out["req"].append(req)
        out["weight"].append(cell_weights(d, first))
    return {k: np.concatenate(v) for k, v in out.items()}


def cell_weights(d: CalibrationData, first_row: np.ndarray) -> np.ndarray:
    """Pseudo-likelihood weight of each labelled cell under the ``weights`` design adjustment: ``1 / pi`` scaled
    to sum to Kish's effective sample size (all 1 otherwise; calibration.design).

    Weighting each cell's log-likelihood by its inverse inclusion probability makes the fit design-consistent under
    an informative design even when the model is misspecified (the survey-weighted pseudo-posterior of Savitsky &
    Toth 2016, EJS 10(1)); with an intercept per model and canonical link the weighted score equations match the
    Horvitz-Thompson estimate of each category's share (Firth & Bennett 1998, JRSS B 60(1)), which is what keeps the
    aggregated estimand unbiased. Scaling the sum to Kish's ``n_eff`` rather than ``n`` widens the pseudo-posterior
    by the information the unequal weights cost.
    """
    if d.design_adjustment != "weights" or not d.design_weighted:
        return np.ones(len(first_row))
    w = 1.0 / d.lab_pi[first_row]
    return w * (kish_n_eff(w) / w.sum())


def paired_requests(blocks: list[CalibrationData]) -> bool:
    """Whether the shared request effect is identified: an absolute dimension with some request labelled for two
    or more row models (the incumbent's and a candidate's answers to the same request)."""
    for d in blocks:
        if d.kind == "pairwise" or d.n_models < 2 or len(d.lab_req) == 0:
            continue
        if np.bincount(d.labelled_cells()[0]).max() >= 2:
            return True
    return False


# Row models from which the intercepts are partially pooled around a between-model regression (_pooled_intercepts).
# With two, that regression has two points: its slope and the spread around it cannot be told apart, so the prior
# would decide how far the labels may move a candidate's intercept away from the judge's between-model difference,
# which is what a judge that favours one model's style gets wrong; two row models keep free intercepts.
POOLED_INTERCEPT_MIN_MODELS = 3


def contextual_means(blocks: list[CalibrationData]) -> np.ndarray:
    """(block, model, feature) each row model's mean feature vector over the requests it was scored on, centred
    across the row models. A driver that holds only a sample of the scored requests (``partial``) takes the
    means over what it holds: the labelled requests and a large hash sample. The design covariate
    (calibration.design.LOG_PI) gets zeros: how likely a model's requests were to be labelled says nothing of its
    quality, and that column stays the one design term decision.json reports."""
    out = []
    for d in blocks:
        pres = d.present if d.present is not None else np.ones(d.X.shape[:2], bool)
        xb = np.stack([d.X[pres[:, m], m, :].astype(np.float64).mean(axis=0) if pres[:, m].any()
                       else np.zeros(d.X.shape[2]) for m in range(d.n_models)])
        xb = xb - xb.mean(axis=0)
        xb[:, [f == LOG_PI for f in d.feature_names]] = 0.0
        out.append(xb)
    return np.stack(out)


def _pooled_intercepts(model: pm.Model, blocks: list[CalibrationData], beta_mu):
    """Row-model intercepts ``alpha[m] = gamma . xbar[m] + sigma_alpha * z[m]``, ``z ~ Student-t(3)``, with
    ``xbar[m]`` the model's mean features (:func:`contextual_means`) and ``beta_mu`` the model's mean within slopes
    (None without features). Returns the (block, model) intercepts.

    One judge slope cannot serve both directions a judge predicts: within a model (this request's verdict against
    that one's) and between models (a model's share of favourable verdicts against its human win rate). On PandaLM
    the second is about twice the first, and with a few labels per model pair each free intercept stayed near its
    prior, so every pair was pulled towards the reference pair and one half: the per-pair errors were 1.25 times
    as spread as the intervals claimed (docs/calibration.md). The between-model term is the contextual effect of
    Mundlak (1978, Econometrica 46:69-85), here as a group-level predictor of partially pooled intercepts (Gelman &
    Hill 2007, section 12.6), so a model with few labels is shrunk towards what its judge scores say of models
    like it rather than towards the others. Student-t(3) deviations (robust group effects, Gelman et al. 2013,
    Bayesian Data Analysis 3rd ed., ch. 17) let a model the judges misread by much (one whose style they favour)
    keep its own intercept from its labels instead of being pulled onto the line. The cut-points carry the overall
    level, so ``xbar`` is centred and no model is the reference. Non-centred deviations.

    The sampler draws the between-model slope ``beta_mu + gamma`` (``~ N(beta_mu, 1.5)``, the same joint prior as
    ``gamma ~ N(0, 1.5)`` independent of ``beta_mu``) rather than ``gamma``: between-model differences identify only
    that sum, so ``gamma`` and ``beta_mu`` were strongly anti-correlated and NUTS took shorter steps (one HANNA
    5-block fit: step size 0.036 -> 0.068; docs/calibration.md)."""
    B = len(blocks)
    xbar = contextual_means(blocks)
    sigma = pm.HalfNormal("alpha_sigma", 1.0, dims="block")
    z = pm.StudentT("alpha_z", nu=3.0, mu=0.0, sigma=1.0, dims=("block", "model"))
    mean = 0.0
    if xbar.shape[2]:
        between = pm.Normal("alpha_between", beta_mu, 1.5, dims=("block", "feature"))
        gamma = pm.Deterministic("alpha_gamma", between - beta_mu, dims=("block", "feature"))
        mean = pt.sum(gamma[:, None, :] * xbar, axis=2)
    return pm.Deterministic("alpha", mean + sigma.reshape((B, 1)) * z, dims=("block", "model"))


# Scale of the HalfNormal prior on sigma_req (logit scale). The interval of a difference narrows as sigma_req grows,
# and one binary label per cell barely identifies it (only how often a request's two labels agree beyond what the
# judges predict), so there the prior decides: it must not supply sharing the labels cannot show. Understating it
# costs width (sigma_req = 0 is the unpaired model), overstating it costs coverage. Measured in
# docs/calibration.md ("The request effect's prior"): with HalfNormal(1) the binary paired world's posterior mean
# was about 0.7 against a true residual sharing of about 0.3, and coverage 0.848 against the unpaired 0.875 over
# 400 replicates; at 0.3, 0.875. Where labels do identify it (HANNA: 3 raters, 11 models per request) the
# posterior is the same under scales 1, 0.5 and 0.3.
REQ_SIGMA_PRIOR_SD = 0.3


def _request_effect(model: pm.Model, c: dict, B: int):
    """Per-request effect shared by the row models of one request (absolute dimensions): ``v[r] ~ N(0, sigma_req)``.

    Incumbent and candidate answer the same requests, so a hard request lowers both labels; without this term the
    two cells of a request count as independent and the paired difference is as uncertain as an unpaired one. One
    ``v`` per labelled request (every labelled request, so a request with one model labelled informs the other's
    prediction through it, calibration.estimands); ``sigma_req`` is identified by requests labelled for both.
    Non-centred. Returns the (cell,) term to add to the linear predictor."""
    key = c["block"].astype(np.int64) * (int(c["req"].max()) + 1) + c["req"]
    uniq, inv = np.unique(key, return_inverse=True)
    model.add_coord("labelled_request", np.arange(len(uniq)))
    sig = pm.HalfNormal("req_sigma", REQ_SIGMA_PRIOR_SD, dims="block")
    z = pm.Normal("req_z", 0.0, 1.0, dims="labelled_request")
    return sig[c["block"]] * z[inv]


def _conversation_effect(model: pm.Model, c: dict, blocks: list[CalibrationData]):
    """Per-(row model, conversation) effect ``w[m, g] ~ N(0, sigma_conv)`` shared by the turns of one conversation.

    Turns of one conversation share its user, topic and history, so their labels (and the judge's errors) move
    together; without this term they count as independent requests and every interval is too narrow (Gelman & Hill
    2007 ch. 12; calibration.clustered). One ``w`` per labelled (model, conversation); the unlabelled ones are drawn
    from the prior in calibration.clustered. Non-centred. Returns the (cell,) term to add to the linear predictor."""
    G = max(len(d.cluster_names) for d in blocks)
    M = blocks[0].n_models
    conv = np.concatenate([d.cluster_idx[c["req"][c["block"] == b]] for b, d in enumerate(blocks)])
    uniq, inv = np.unique((c["block"].astype(np.int64) * M + c["model"]) * G + conv, return_inverse=True)
    model.add_coord("labelled_conversation", np.arange(len(uniq)))
    sig = pm.HalfNormal("conv_sigma", 1.0, dims="block")
    z = pm.Normal("conv_z", 0.0, 1.0, dims="labelled_conversation")
    return sig[c["block"]] * z[inv]


def request_effects(idata, blocks: list[CalibrationData]) -> np.ndarray:
    """(draw, block, max labelled requests) posterior draws of the shared request effect ``v``, in the order of
    ``np.unique(block.lab_req)`` per block (zero-padded; an empty last axis without the effect)."""
    post = idata.posterior
    n = post["cut"].shape[0] * post["cut"].shape[1]
    sizes = [len(np.unique(d.lab_req)) for d in blocks]
    out = np.zeros((n, len(blocks), max(sizes) if "req_z" in post else 0), dtype=np.float32)
    if "req_z" not in post:
        return out
    z = post["req_z"].to_numpy().reshape(n, -1)
    sig = post["req_sigma"].to_numpy().reshape(n, -1)
    start = 0
    for b, k in enumerate(sizes):  # labelled requests are numbered block by block, in request order
        out[:, b, :k] = z[:, start:start + k] * sig[:, b, None]
        start += k
    return out


def label_pairs(counts: np.ndarray):
    """``(cell, category, count)`` of the (cell, category) pairs that hold annotations, grouped by cell in cell
    order. A cell's likelihood involves only the categories its annotations fall in (about 2 of 5 per HANNA cell, 1
    of 3 per PandaLM cell), so both the model and the held-out check work on these pairs alone."""
    cell, cat = np.nonzero(counts)
    return cell, cat, counts[cell, cat]


def rising_log_factorial(a, n, log, max_n: int):
    """``log(a (a + 1) ... (a + n - 1)) = log Gamma(a + n) - log Gamma(a)`` for whole ``n`` in ``[0, max_n]``.

    The Dirichlet-multinomial (Mosimann 1962, Biometrika 49(1/2)) of one cell's annotations, ``counts[k]`` per
    category and ``n`` in all, when its category probabilities are ``Dirichlet(kappa * p)`` around the model's
    ``p``, is ``sum_k rising(kappa p_k, counts[k]) - rising(kappa, n)`` (of the annotations in their order, without
    the multinomial coefficient). ``kappa = 1 / icc - 1``: two annotators of one cell agree beyond chance with
    intra-cell correlation ``icc``. Unlike a logit-normal request effect, this overdispersion leaves the cell's
    *expected* label at ``p``, so the fixed effects and their priors act on the scale of the estimand: with
    PandaLM's strong annotator agreement a normal effect (sd about 6 on the logit scale) shrank every pair's win
    rate towards one half under its priors.

    Counts are whole numbers, so the ratio of gamma functions is a sum of ``max_n`` masked logs (``max_n``: the most
    annotations any cell has, known before sampling) instead of gammaln and, in the gradient, digamma, which cost
    about 18 times as much per element. ``log``: ``pytensor.tensor.log`` in the model, ``numpy.log`` on posterior
    draws."""
    out = 0.0
    for j in range(int(max_n)):
        # masks as floats: PyTensor's rewrites fail on bool factors of a product (logged on every compile)
        out = out + (n > j).astype("float64") * log(a + j)
    return out


def _label_loglik(eta, cut_flat, c: dict, K: int, icc, weight):
    """Sum over labelled cells of (weight x) the log-probability of their annotations under the ordered logistic
    (``icc`` None: independent annotations) or the Dirichlet-multinomial around it, on :func:`label_pairs`."""
    cell, cat, n_k = label_pairs(c["counts"])
    e = eta[cell]
    g = c["block"][cell] * (K - 1)
    # P(category k) = logistic(c_k - eta) - logistic(c_{k-1} - eta), with c_{-1} = -inf and c_{K-1} = +inf
    upper = pt.where(cat == K - 1, 1.0, pt.sigmoid(cut_flat[g + np.minimum(cat, K - 2)] - e))
    lower = pt.where(cat == 0, 0.0, pt.sigmoid(cut_flat[g + np.maximum(cat - 1, 0)] - e))
    pr = pt.clip(upper - lower, 1e-12, 1.0)
    w_pair = 1.0 if weight is None else weight[cell]
    if icc is None:
        return pt.sum(w_pair * n_k * pt.log(pr))
    n = c["counts"].sum(axis=1)
    kappa = 1.0 / icc[c["block"]] - 1.0
    terms = rising_log_factorial(kappa[cell] * pr, n_k, pt.log, n_k.max())
    norm = rising_log_factorial(kappa, n, pt.log, n.max())
    return pt.sum(w_pair * terms) - pt.sum((1.0 if weight is None else weight) * norm)


def build_model(blocks: list[CalibrationData], paired: bool = True) -> pm.Model:
    """Ordered-logistic calibration model over independent blocks sharing shapes (models, features, segments).

    ``paired``: add the shared request effect of absolute dimensions when identified (:func:`paired_requests`)."""
    d0 = blocks[0]
    B, M, F, S, K = len(blocks), d0.n_models, d0.X.shape[2], len(d0.segment_names), d0.n_cat
    for d in blocks:
        if (d.n_models, d.X.shape[2], len(d.segment_names), d.n_cat) != (M, F, S, K):
            raise ValueError("all blocks must share models, features, segments and categories")
    c = _cells(blocks)
    coords = {
        "block": np.arange(B), "model": d0.row_models, "feature": d0.feature_names,
        "segment": d0.segment_names, "threshold": np.arange(K - 1), "cell": np.arange(len(c["block"])),
    }
    with pm.Model(coords=coords) as model:
        x = pm.Data("x", c["x"].astype(float), dims=("cell", "feature"))
        weight = pm.Data("weight", c["weight"], dims="cell") if not np.allclose(c["weight"], 1.0) else None
        blk, mod, seg = c["block"], c["model"], c["seg"]
        init = np.tile(np.linspace(-1.0, 1.0, K - 1) if K > 2 else np.zeros(1), (B, 1))
        cut = pm.Normal("cut", 0.0, 3.0, dims=("block", "threshold"),
                        transform=pm.distributions.transforms.ordered, initval=init)
        # 1-D gathers on flattened parameters: the gradient of a gather (AdvancedIncSubtensor1) has C code for
        # vectors only; on rows of a matrix it runs np.add.at in Python (a third of the gradient's time before).
        g_bm = blk * M + mod
        n_cells = len(blk)

        def rows(flat, group, width):  # flat[group * width + j] for j < width, as one 1-D gather per cell and column
            return flat[(group[:, None] * width + np.arange(width)).ravel()].reshape((n_cells, width))

        eta = pt.zeros(n_cells)
        beta_mu = pm.Normal("beta_mu", 0.0, 1.5, dims=("block", "feature")) if F > 0 else None
        if M >= POOLED_INTERCEPT_MIN_MODELS:
            eta = eta + _pooled_intercepts(model, blocks, beta_mu).reshape((B * M,))[g_bm]
        elif M > 1:
            a_free = pm.Normal("alpha_free", 0.0, 2.0, shape=(B, M - 1))
            alpha = pm.Deterministic("alpha", pt.concatenate([pt.zeros((B, 1)), a_free], axis=1),
                                     dims=("block", "model"))
            eta = eta + alpha.reshape((B * M,))[g_bm]
        if F > 0:
            if M > 1:
                tau = pm.HalfNormal("beta_tau", 0.5, dims="block")
                z = pm.Normal("beta_z", 0.0, 1.0, dims=("block", "model", "feature"))
                beta = pm.Deterministic("beta", beta_mu[:, None, :] + tau[:, None, None] * z,
                                        dims=("block", "model", "feature"))
            else:
                beta = pm.Deterministic("beta", beta_mu[:, None, :], dims=("block", "model", "feature"))
            eta = eta + pt.sum(x * rows(beta.reshape((-1,)), g_bm, F), axis=1)
        if S > 1:
            sig = pm.HalfNormal("seg_sigma", 0.5, dims="block")
            w = pm.Normal("seg_z", 0.0, 1.0, dims=("block", "model", "segment"))
            u = pm.Deterministic("seg_effect", sig[:, None, None] * w, dims=("block", "model", "segment"))
            eta = eta + u.reshape((B * M * S,))[g_bm * S + seg]
        if S > 1 and F > 0:
            # segment-varying slopes: a judge may read one region differently (language, topic), so its calibration
            # bends per segment, partially pooled towards the shared slopes (non-centred; Gelman & Hill 2007 ch. 13)
            bs_tau = pm.HalfNormal("beta_seg_tau", 0.25, dims="block")
            bs_z = pm.Normal("beta_seg_z", 0.0, 1.0, dims=("block", "segment", "feature"))
            beta_seg = pm.Deterministic("beta_seg", bs_tau[:, None, None] * bs_z, dims=("block", "segment", "feature"))
            eta = eta + pt.sum(x * rows(beta_seg.reshape((-1,)), blk * S + seg, F), axis=1)
        icc = None
        if c["counts"].sum(axis=1).max() > 1:
            # annotators of one request share that request's quirks: a cell's category probabilities are drawn
            # around the model's, so three agreeing annotators do not count as three independent requests (only
            # identified when cells have >= 2 labels); see rising_log_factorial
            icc = pm.Beta("item_icc", 1.0, 1.0, dims="block")
        if paired and paired_requests(blocks):
            eta = eta + _request_effect(model, c, B)
        if blocks[0].cluster_idx is not None:  # conversations: turns share an effect (calibration.clustered)
            eta = eta + _conversation_effect(model, c, blocks)
        pm.Potential("labels", _label_loglik(eta, cut.reshape((-1,)), c, K, icc, weight))
    return model


def fit(blocks: list[CalibrationData], draws: int = 500, tune: int = 500, chains: int = 2, seed: int = 0,
        cores: int | None = None, target_accept: float = 0.95, paired: bool = True, warm=None, warm_key=None):
    """NUTS fit; returns (idata, params) with params as numpy arrays (draw, block, ...), chains stacked.

    ``warm``: a calibration.warm.WarmStart, to start from the state of its last fit under ``warm_key`` (a series
    of fits of one model shape)."""
    model = build_model(blocks, paired=paired)
    if warm is not None:
        idata = warm.sample(warm_key, model, draws, tune, chains, cores or min(chains, 2), seed, target_accept)
        return idata, extract_params(idata, blocks)
    with model:
        idata = pm.sample(draws=draws, tune=tune, chains=chains, cores=cores or min(chains, 2), random_seed=seed,
                          progressbar=False, compute_convergence_checks=False, target_accept=target_accept)
    return idata, extract_params(idata, blocks)


def extract_params(idata, blocks: list[CalibrationData]) -> dict[str, np.ndarray]:
    d0 = blocks[0]
    B, M, F, S = len(blocks), d0.n_models, d0.X.shape[2], len(d0.segment_names)
    post = idata.posterior

    def get(name, shape_tail):
        if name in post:
            a = post[name].to_numpy()
            return a.reshape((-1,) + a.shape[2:])
        n = post["cut"].shape[0] * post["cut"].shape[1]
        return np.zeros((n,) + shape_tail)

    return {
        "cut": get("cut", (B, d0.n_cat - 1)),
        "alpha": get("alpha", (B, M)),
        "beta": get("beta", (B, M, F)),
        "seg_effect": get("seg_effect", (B, M, S)),
        "beta_seg": get("beta_seg", (B, S, F)),
        "item_icc": get("item_icc", (B,)),
        "req_sigma": get("req_sigma", (B,)),
        "req_effect": request_effects(idata, blocks),
        **_conversation_params(idata, blocks),
    }


def _conversation_params(idata, blocks: list[CalibrationData]) -> dict[str, np.ndarray]:
    if "conv_z" not in idata.posterior:
        return {}
    from calibration.clustered import conversation_effects  # noqa: PLC0415

    return conversation_effects(idata, blocks)
