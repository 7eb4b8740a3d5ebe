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
from dataclasses import dataclass

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
    codes = pd.factorize(strata.to_numpy())[0] if strata is not None else np.zeros(total, dtype=np.int64)
    return select_codes(uniform_hash(ids, sample.seed), codes, sample)


def select_codes(u: np.ndarray, strata: np.ndarray, sample: SampleConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select` from each row's uniform number ``u`` and integer stratum code (numbers only, so a large
    traffic table's ids need not be held)."""
    total = len(u)
    if total == 0 or (sample.n is None and sample.fraction is None):
        return np.ones(total, dtype=bool), np.ones(total)
    mask = np.zeros(total, dtype=bool)
    prob = np.zeros(total)
    order = np.argsort(strata, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(strata[order]) != 0]) if total else np.zeros(0, dtype=int)
    for idx in np.split(order, starts[1:]):
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
    keys = _scan_keys(uri, opts, strat_cols, cfg.traffic.sample)
    mask, prob = keys.mask, keys.prob
    dup = keys.dup
    first_ids: dict[int, str] = {}  # first occurrence's id of each duplicated hash, filled in the pass below

    writer = _ShardWriter(store, cfg.execution.shard_rows)
    offset, n_in, n_quarantined = 0, 0, 0
    for source, start, chunk in iter_table_chunks(uri, opts, CHUNK_ROWS, arrow_lists=True):
        n = len(chunk)
        sel = np.flatnonzero(mask[offset:offset + n])
        picked = chunk.iloc[sel].reset_index(drop=True)
        checked = validate_traffic(picked, source, segments=cfg.traffic.segments)
        q = checked.quarantine.copy()
        valid_pos = np.setdiff1d(np.arange(len(picked)), q["row"].to_numpy(dtype=int))
        q["row"] = start + sel[q["row"].to_numpy(dtype=int)]  # row number in the source file
        valid = checked.valid
        valid["inclusion_prob"] = prob[offset + sel[valid_pos]]
        if keys.first_at:
            # Duplicates across chunks: the validator only sees one chunk at a time. Found by a 64-bit hash of
            # the id; the ids themselves are compared, so a hash collision is not taken for a duplicate.
            for i in np.flatnonzero(np.isin(keys.hashes_of(offset, n), list(keys.first_at))):
                h = int(keys.hashes_of(offset + i, 1)[0])
                if keys.first_at[h] == offset + i:
                    first_ids[h] = str(chunk["request_id"].iat[i])
            rows = offset + sel[valid_pos]
            cross = dup[rows].copy()
            for j in np.flatnonzero(cross):
                h = int(keys.hashes_of(int(rows[j]), 1)[0])
                cross[j] = first_ids.get(h) == str(valid["request_id"].iat[j])
            if cross.any():
                extra = pd.DataFrame([{
                    "stage": "traffic", "source": source, "row": int(start + sel[valid_pos[i]]),
                    "request_id": str(valid["request_id"].iat[i]), "field": "request_id",
                    "reason": f"duplicate request_id {valid['request_id'].iat[i]!r} (first at row "
                              f"{int(keys.first_at[int(keys.hashes_of(int(rows[i]), 1)[0])])})",
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


@dataclass
class _Keys:
    """What the sample needs of every traffic row, as numbers (the ids are not held): the selection and inclusion
    probabilities, duplicate flags (a 64-bit hash of the id seen at an earlier row), and for each duplicated hash
    the row of its first occurrence."""

    mask: np.ndarray
    prob: np.ndarray | _Ones
    dup: np.ndarray
    hashes: np.ndarray
    first_at: dict[int, int]

    def hashes_of(self, start: int, n: int) -> np.ndarray:
        return self.hashes[start:start + n]


def _scan_keys(uri: str, opts: dict, strat_cols: list[str], sample: SampleConfig) -> _Keys:
    """One streamed pass over the traffic's ids and strata: 8 bytes of hash per row (16 more with a sample, for
    its uniform numbers and strata), never the ids as strings, so a 10M-row table needs ~0.1 GiB, not ~1.5."""
    hashes, isna, us, codes = [], [], [], []
    strata_codes: dict[str, int] = {}
    sampling = sample.n is not None or sample.fraction is not None
    checked = False
    for _, _, c in iter_table_chunks(uri, opts, CHUNK_ROWS, columns=["request_id", *strat_cols]):
        if not checked:
            if "request_id" not in c.columns:
                raise ContractError(f"{uri}: traffic table is missing column 'request_id' (present: {list(c.columns)})")
            for col in strat_cols:
                if col not in c.columns:
                    raise ContractError(f"{uri}: traffic.sample.stratify_by names column {col!r}, which the traffic "
                                        f"table lacks")
            checked = True
        ids = c["request_id"]
        isna.append(ids.isna().to_numpy())
        text = ids.astype(str)
        hashes.append(pd.util.hash_array(text.to_numpy(dtype=object)))
        if sampling:
            us.append(uniform_hash(text, sample.seed))
            if strat_cols:
                names = c[strat_cols].astype(str).agg("|".join, axis=1)
                codes.append(np.asarray([strata_codes.setdefault(v, len(strata_codes)) for v in names],
                                        dtype=np.int32))
    h = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    na = np.concatenate(isna) if isna else np.zeros(0, dtype=bool)
    del hashes, isna  # the parts: another 8 bytes a row while the duplicates are sought
    total = len(h)
    if sampling and total:
        mask, prob = select_codes(np.concatenate(us), np.concatenate(codes) if codes else np.zeros(total, np.int32),
                                  sample)
    else:
        mask, prob = np.ones(total, dtype=bool), _Ones(total)
    del us, codes
    # Rows without an id cannot be sampled by id: they are always validated, so always quarantined.
    mask |= na
    first_at: dict[int, int] = {}
    dup = np.zeros(total, dtype=bool)
    keyed_h = h[~na] if na.any() else h
    ordered = np.sort(keyed_h)  # the usual case, no repeated hash, costs this one sorted copy
    if (ordered[1:] == ordered[:-1]).any():
        del ordered
        keyed = np.flatnonzero(~na)
        uniq, first = np.unique(keyed_h, return_index=True)
        dup[keyed] = True
        dup[keyed[first]] = False
        dh = np.unique(h[dup])
        pos = keyed[first[np.searchsorted(uniq, dh)]]
        first_at = dict(zip(dh.tolist(), pos.tolist()))
    return _Keys(mask, prob, dup, h if first_at else h[:0], first_at)  # the hashes are kept for duplicates only


class _Ones:
    """Inclusion probabilities of a run without a sample: 1 for every row, without 8 bytes a row (80 MB at 10M)."""

    def __init__(self, n: int):
        self.n = n

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return np.ones(len(rows))


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
