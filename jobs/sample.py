"""Stage 1, traffic -> the run's traffic table: read, validate, sample, shard.

The sample is a deterministic hash sample: request r is kept when u(seed, r) falls under its stratum's
threshold, where u is a uniform number derived from a hash of the seed and the request id. The same seed and
traffic give the same requests in the same shards, so a rerun resumes shard by shard, and a request's
inclusion does not depend on which other requests exist (nightly partitions sample consistently).
Each kept row records its inclusion probability (``inclusion_prob``) for estimates about the whole traffic.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from jobs.config import RunConfig, SampleConfig
from jobs.contracts import QUARANTINE_COLUMNS, read_table_file, validate_traffic
from jobs.errors import ContractError
from jobs.store import RunStore, shard_id, storage_options

log = logging.getLogger(__name__)
STAGE = "sample"


def uniform_hash(ids: pd.Series, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per id from a keyed hash (blake2b over the seed): stable across runs and machines."""
    key = str(seed).encode()
    out = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "big") for i in ids),
        dtype=np.uint64, count=len(ids),
    )
    return (out >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def select(ids: pd.Series, strata: pd.Series | None, sample: SampleConfig) -> tuple[np.ndarray, np.ndarray]:
    """(mask of selected rows, inclusion probability per row) for a sample config.

    With ``n``, each stratum gets round(n * N_h / N) rows (proportional allocation), taking the rows of lowest
    u; with ``fraction``, every row with u < fraction. Without either, every row (probability 1).
    """
    total = len(ids)
    if total == 0 or (sample.n is None and sample.fraction is None):
        return np.ones(total, dtype=bool), np.ones(total)
    u = uniform_hash(ids, sample.seed)
    groups = strata if strata is not None else pd.Series(np.zeros(total, dtype=int))
    mask = np.zeros(total, dtype=bool)
    prob = np.zeros(total)
    for _, idx in groups.groupby(groups.to_numpy(), sort=True).indices.items():
        n_h = len(idx)
        if sample.n is not None:
            k = min(n_h, int(round(sample.n * n_h / total)))
        else:
            k = int(np.sum(u[idx] < sample.fraction))
        chosen = idx[np.argsort(u[idx], kind="stable")[:k]]
        mask[chosen] = True
        prob[idx] = k / n_h
    return mask, prob


def run_sample(cfg: RunConfig, store: RunStore) -> dict:
    """Commit the run's traffic table (and traffic quarantine). Idempotent: a finished stage is not redone."""
    done = store.manifest().get("stages", {}).get(STAGE, {})
    if done.get("status") == "done":
        log.info("traffic sample already committed (%s rows); skipping", done.get("rows"))
        return done
    uri = cfg.traffic.path
    opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
    raw = read_table_file(uri, opts)
    for col in cfg.traffic.sample.stratify_by:
        if col not in raw.columns:
            raise ContractError(f"{uri}: traffic.sample.stratify_by names column {col!r}, which the table lacks (present: {list(raw.columns)})")
    if "request_id" not in raw.columns:
        raise ContractError(f"{uri}: traffic table is missing column 'request_id' (present: {list(raw.columns)})")

    strata = None
    if cfg.traffic.sample.stratify_by:
        strata = raw[cfg.traffic.sample.stratify_by].astype(str).agg("|".join, axis=1)
    mask, prob = select(raw["request_id"].astype(str), strata, cfg.traffic.sample)
    # Rows without an id cannot be sampled by id: they are always validated, so they are always quarantined.
    mask |= raw["request_id"].isna().to_numpy()
    picked = raw.loc[mask].reset_index()
    checked = validate_traffic(picked.drop(columns=["index"]), uri, segments=cfg.traffic.segments)
    # Report quarantined rows by their row number in the source file, not in the sample.
    q = checked.quarantine.copy()
    if not q.empty:
        q["row"] = picked["index"].to_numpy()[q["row"].to_numpy()]
    valid = checked.valid
    valid["inclusion_prob"] = prob[picked["index"].to_numpy()][_valid_positions(picked, checked)]

    n_shards = max(1, -(-len(valid) // cfg.execution.shard_rows))
    for i in range(n_shards):
        part = valid.iloc[i * cfg.execution.shard_rows:(i + 1) * cfg.execution.shard_rows]
        store.write_shard("traffic", f"traffic-{i:06d}", part)
    if not q.empty:
        store.write_shard("quarantine", shard_id("traffic", "quarantine"), q[QUARANTINE_COLUMNS])
    stats = {"status": "done", "source": uri, "rows_in": int(len(raw)), "rows": int(len(valid)),
             "quarantined": int(len(q)), "shards": n_shards}
    store.update_manifest(stages={STAGE: stats})
    if len(q):
        log.warning("%d traffic row(s) quarantined (see the quarantine table); first: row %s: %s",
                    len(q), q["row"].iat[0], q["reason"].iat[0])
    return stats


def _valid_positions(picked: pd.DataFrame, checked) -> np.ndarray:
    bad = set(checked.quarantine["row"].tolist())
    return np.array([i for i in range(len(picked)) if i not in bad], dtype=int)


def traffic_shards(store: RunStore) -> list[str]:
    """Committed traffic shard ids, in order."""
    return sorted(store.commits("traffic"))
