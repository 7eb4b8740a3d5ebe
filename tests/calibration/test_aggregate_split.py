"""The estimand aggregation as sums of per-request sufficient statistics (calibration.estimands.chunk_sums) and a
finish on the totals: any partition of the requests (chunks here, shards on Ray workers in jobs.decide_aggregate)
gives the same draws as the one-shot aggregation, to float32 precision. Posterior draws are synthetic (no
sampler): the split is arithmetic, the model's values do not matter."""
import numpy as np
import pytest

from calibration.data import prepare
from calibration.estimands import (AggregateSums, aggregate, aggregation_model, chunk_sums, finish, local_sums,
                                   observed_cells)
from tests.support.simulate import simulate_binary, simulate_pairwise


def _params(d, D=40, seed=0, with_req_effect=False):
    rng = np.random.default_rng(seed)
    M, F, S, K = d.n_models, d.X.shape[2], len(d.segment_names), d.n_cat
    p = {"cut": np.sort(rng.normal(0, 1, (D, K - 1)), axis=1), "alpha": rng.normal(0, 0.3, (D, M)),
         "beta": rng.normal(0.8, 0.2, (D, M, F)), "seg_effect": rng.normal(0, 0.2, (D, M, S)),
         "beta_seg": rng.normal(0, 0.1, (D, S, F)), "item_icc": rng.uniform(0.2, 0.6, D)}
    if with_req_effect:
        p["req_sigma"] = np.abs(rng.normal(0.6, 0.1, D))
        p["req_effect"] = rng.normal(0, 0.6, (D, len(np.unique(d.lab_req))))
    return p


@pytest.fixture(scope="module")
def pairwise():
    t = simulate_pairwise(3, n_requests=700, n_labels=80)
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, ["region"])
    return d, _params(d)


@pytest.fixture(scope="module")
def paired_binary():
    t = simulate_binary(4, n_requests=600, n_labels=90)
    d = prepare(t.scores, t.labels, "incumbent", None, "correctness", "binary", t.traffic, ["region"])
    return d, _params(d, with_req_effect=True)


def _close(a: AggregateSums, b: AggregateSums):
    for f in ("s1", "s2", "nv", "n_seg"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-6, err_msg=f)


@pytest.mark.parametrize("case", ["pairwise", "paired_binary"])
@pytest.mark.parametrize("chunk", [256, 300, 1000])
def test_chunked_sums_equal_one_shot(case, chunk, request):
    d, p = request.getfixturevalue(case)
    one = local_sums(d, p, chunk=10_000)
    _close(local_sums(d, p, chunk=chunk), one)
    assert one.n_seg.sum() == d.estimand_mask().sum()
    assert one.s1.shape == (p["cut"].shape[0], len(d.candidates), len(d.segment_names))


@pytest.mark.parametrize("case", ["pairwise", "paired_binary"])
def test_sums_over_any_partition_of_the_requests_add_up(case, request):
    """Shards need not be contiguous or ordered: a random partition into uneven parts gives the same totals."""
    d, p = request.getfixturevalue(case)
    model, drawn = aggregation_model(d, p)
    obs, emask, S = observed_cells(d), d.estimand_mask().astype(np.float32), len(d.segment_names)
    rng = np.random.default_rng(1)
    part = rng.integers(0, 5, d.n_req)
    total = AggregateSums.zeros(p["cut"].shape[0], len(d.candidates), S)
    for k in range(5):
        rows = np.flatnonzero(part == k)
        local = None
        if drawn is not None:  # labelled requests of this part, as rows of the part, with their drawn effects
            reqs, v = drawn
            at = np.flatnonzero(np.isin(reqs, rows))
            local = (np.searchsorted(rows, reqs[at]), v[:, at])
        total.add(chunk_sums(model, d.X[rows], d.seg_idx[rows], d.seg_idx[rows], emask[rows], obs[rows], S, local))
    _close(total, local_sums(d, p))


def test_aggregate_is_local_sums_then_finish(paired_binary):
    d, p = paired_binary
    a = aggregate(d, p, np.random.default_rng(7))
    b = finish(local_sums(d, p), np.random.default_rng(7), d.kind, d.cat_values)
    for f in ("fp", "pop", "fp_seg", "pop_seg", "n_seg"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
