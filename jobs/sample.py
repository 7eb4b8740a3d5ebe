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
from jobs.contracts import QUARANTINE_COLUMNS, iter_table_chunks, validate_traffic
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


CHUNK_ROWS = 50_000


def run(cfg: RunConfig, store: RunStore) -> dict:
    """Commit the run's traffic table (and traffic quarantine). Idempotent: a finished stage is not redone.

    Streams the traffic twice: once for the ids (and strata) to draw the sample, once chunk by chunk to validate
    and shard the sampled rows; the driver never holds the whole table.
    """
    done = store.manifest().get("stages", {}).get(STAGE, {})
    if done.get("status") == "done":
        log.info("traffic sample already committed (%s rows); skipping", done.get("rows"))
        return done
    if cfg.replay.mode == "conversation":  # whole conversations per shard (docs/conversations.md)
        from jobs import sample_conversations

        return sample_conversations.run(cfg, store, STAGE)
    uri = cfg.traffic.path
    opts = storage_options(cfg.store) if uri.startswith("s3://") else {}
    strat_cols = cfg.traffic.sample.stratify_by
    keys = pd.concat([c for _, _, c in iter_table_chunks(uri, opts, CHUNK_ROWS, columns=["request_id", *strat_cols])],
                     ignore_index=True)
    for col in ["request_id", *strat_cols]:
        if col == "request_id" and col not in keys.columns:
            raise ContractError(f"{uri}: traffic table is missing column 'request_id' (present: {list(keys.columns)})")
        if col not in keys.columns:
            raise ContractError(f"{uri}: traffic.sample.stratify_by names column {col!r}, which the traffic table lacks")
    ids = keys["request_id"]
    strata = keys[strat_cols].astype(str).agg("|".join, axis=1) if strat_cols else None
    mask, prob = select(ids.astype(str), strata, cfg.traffic.sample)
    # Rows without an id cannot be sampled by id: they are always validated, so always quarantined.
    mask |= ids.isna().to_numpy()
    dup = (ids.duplicated(keep="first") & ids.notna()).to_numpy()
    first_at = pd.Series(np.arange(len(ids)), index=ids).groupby(level=0).min() if dup.any() else None
    del keys

    writer = _ShardWriter(store, cfg.execution.shard_rows)
    offset, n_in, n_quarantined = 0, 0, 0
    for source, start, chunk in iter_table_chunks(uri, opts, CHUNK_ROWS):
        n = len(chunk)
        sel = np.flatnonzero(mask[offset:offset + n])
        picked = chunk.iloc[sel].reset_index(drop=True)
        checked = validate_traffic(picked, source, segments=cfg.traffic.segments)
        q = checked.quarantine.copy()
        valid_pos = np.setdiff1d(np.arange(len(picked)), q["row"].to_numpy(dtype=int))
        q["row"] = start + sel[q["row"].to_numpy(dtype=int)]  # row number in the source file
        valid = checked.valid
        valid["inclusion_prob"] = prob[offset + sel[valid_pos]]
        if first_at is not None:
            # Duplicates across chunks: the validator only sees one chunk at a time.
            cross = dup[offset + sel[valid_pos]]
            if cross.any():
                extra = pd.DataFrame([{
                    "stage": "traffic", "source": source, "row": int(start + sel[valid_pos[i]]),
                    "request_id": str(valid["request_id"].iat[i]), "field": "request_id",
                    "reason": f"duplicate request_id {valid['request_id'].iat[i]!r} (first at row {int(first_at[valid['request_id'].iat[i]])})",
                    "raw": None} for i in np.flatnonzero(cross)])
                q = pd.concat([q, extra], ignore_index=True)
                valid = valid.loc[~cross].reset_index(drop=True)
        if not q.empty:
            store.write_shard("quarantine", shard_id("traffic", "q", f"{writer.chunks:06d}"), q[QUARANTINE_COLUMNS])
            n_quarantined += len(q)
            log.warning("%d traffic row(s) quarantined from %s; first: row %s: %s",
                        len(q), source, q["row"].iat[0], q["reason"].iat[0])
        writer.add(valid)
        offset += n
        n_in += n
    n_shards, n_rows = writer.close()
    stats = {"status": "done", "source": uri, "rows_in": int(n_in), "rows": int(n_rows),
             "quarantined": int(n_quarantined), "shards": n_shards}
    store.update_manifest(stages={STAGE: stats})
    return stats


class _ShardWriter:
    """Cuts a stream of frames into shards of exactly `rows` rows (the last may be short), committed in order."""

    def __init__(self, store: RunStore, rows: int):
        self.store, self.rows = store, rows
        self.buffer: list[pd.DataFrame] = []
        self.buffered = 0
        self.index = 0
        self.total = 0
        self.chunks = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.chunks += 1
        if len(frame):
            self.buffer.append(frame)
            self.buffered += len(frame)
        while self.buffered >= self.rows:
            self._flush(self.rows)

    def _flush(self, n: int) -> None:
        whole = pd.concat(self.buffer, ignore_index=True) if len(self.buffer) > 1 else self.buffer[0]
        part, rest = whole.iloc[:n], whole.iloc[n:]
        self.store.write_shard("traffic", f"traffic-{self.index:06d}", part)
        self.index += 1
        self.total += len(part)
        self.buffer = [rest.reset_index(drop=True)] if len(rest) else []
        self.buffered = len(rest)

    def close(self) -> tuple[int, int]:
        if self.buffered or self.index == 0:
            if not self.buffer:
                self.buffer = [pd.DataFrame(columns=["request_id", "messages", "response", "reference", "inclusion_prob"])]
            self._flush(max(self.buffered, 0))
        return self.index, self.total


def traffic_shards(store: RunStore) -> list[str]:
    """Committed traffic shard ids, in order."""
    return sorted(store.commits("traffic"))


# The stage's earlier name, kept so code written against it (other branches, scripts) still runs.
run_sample = run
