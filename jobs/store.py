"""The run store: one root URI (a local folder or s3://bucket/prefix), one folder per run.

Layout of a run (``runs/<run_id>/``)::

    manifest.json                      run-level metadata and per-stage statistics (written by the driver)
    <table>/part-<shard>-<token>.parquet   shard data, written whole under a unique name
    <table>/_commits/<shard>.json      the commit record of a shard: which data file, how many rows, its size and sha256
    <table>/_corrupt/<shard>-<token>.json   a shard set aside as corrupt (the record it had, and why)
    documents (decision.json, report.html, ...) under the table folder they belong to
    _lease/lease-<generation>.json     the run lease: which driver works on the run now (jobs.lease)

A shard is committed by creating its commit record *after* its data file is complete, with an exclusive create
(``O_EXCL``-style link locally, ``If-None-Match: *`` on S3). Readers read only shards that have a commit record,
so they never see half a shard; a rerun asks ``is_committed`` and skips committed shards, so it never writes a
row twice; a data file without a commit record (a crashed writer) is ignored and can be garbage-collected.
A committed shard changes only by ``supersede_shard`` (a retry's merged rows replace its commit record in one
atomic write, so every reader sees one version) or ``retract_shard`` (its stage redoes it), both by the run's
lease holder.

Integrity: the commit record holds the data file's size and sha256. Every read of a shard checks both (the bytes
are in memory by then; sha256 ran at ~300 MB/s on a busy 2-core test machine, a small cost beside the download
and the Parquet decode); ``verify`` checks every record parses and every data file has its recorded size from one
listing per table (cheap, no data read). A shard that fails is *set aside*: its record moves to ``_corrupt/``, so
the shard is no longer committed and the stage that wrote it redoes it, exactly once, on the next run
(``jobs.integrity`` also sets aside what was computed from it). Records written before checksums existed are
checked for readability only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.tables import frame_to_arrow, parquet_bytes_frame
from jobs.config import StoreConfig
from jobs.errors import CorruptShard, StoreError, storage_error

log = logging.getLogger(__name__)

TABLES = ("traffic", "responses", "scores", "embeddings", "labels", "calibration", "decision", "quarantine",
          "label_design")
_SHARD = re.compile(r"^[A-Za-z0-9._=-]{1,200}$")


def shard_id(*parts: object) -> str:
    """A filesystem- and S3-safe shard id from its parts (model names may hold '/' or ':')."""
    text = "-".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9._=-]", "_", text)[:200]


def storage_options(cfg: StoreConfig) -> dict:
    """fsspec options for the store; credentials are read from the env vars the config names, here and only here."""
    if not cfg.root.startswith("s3://"):
        return {}
    opts: dict = {}
    client_kwargs: dict = {}
    if cfg.endpoint_url:
        client_kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.region:
        client_kwargs["region_name"] = cfg.region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if cfg.profile:
        opts["profile"] = cfg.profile
    for field, key in (("access_key_id_env", "key"), ("secret_access_key_env", "secret"), ("session_token_env", "token")):
        name = getattr(cfg, field)
        if name:
            if name not in os.environ:
                raise StoreError(f"store.{field}: environment variable {name} is not set")
            opts[key] = os.environ[name]
    # Bounded retries, set here explicitly rather than left to botocore's and s3fs's defaults (docs/s3-faults.md).
    # botocore's client-config "max_attempts" counts retries only; "total_max_attempts" counts the first attempt too.
    opts["config_kwargs"] = {"retries": {"total_max_attempts": cfg.max_attempts, "mode": cfg.retry_mode},
                             "connect_timeout": cfg.connect_timeout_s, "read_timeout": cfg.read_timeout_s}
    # Fresh clients: s3fs caches instances by arguments, and a cached client can outlive a moto reset or a fork.
    opts["skip_instance_cache"] = True
    # No listings cache: other processes commit while this one runs, and a cached listing made exists/cat_file
    # of a file written after it answer "not there" (a good shard once set aside as missing).
    opts["use_listings_cache"] = False
    return opts


# s3fs repeats a whole call that still failed after botocore's attempts with a dropped connection or SlowDown (or
# a body cut mid-read, which botocore cannot retry) up to its `retries` times; its default, 5, multiplies botocore's
# attempts. Once more is enough: at most S3FS_CALLS * store.max_attempts attempts per call.
S3FS_CALLS = 2


class RunStore:
    """Tables and documents of one run. Picklable: Ray workers rebuild the filesystem from the config."""

    def __init__(self, cfg: StoreConfig, run_id: str):
        self.cfg = cfg
        self.run_id = run_id
        self.root = cfg.root.rstrip("/")
        self.run_uri = f"{self.root}/runs/{run_id}"
        self._fs = None

    # -- plumbing ---------------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fs"] = None  # never pickle a client holding credentials
        return state

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            protocol = "s3" if self.root.startswith("s3://") else "file"
            self._fs = fsspec.filesystem(protocol, **storage_options(self.cfg))
            if protocol == "s3":
                self._fs.retries = S3FS_CALLS
        return self._fs

    def path(self, *parts: str) -> str:
        """Filesystem path (no scheme) of a file of this run."""
        base = self.run_uri[len("s3://"):] if self.run_uri.startswith("s3://") else os.path.abspath(self.run_uri)
        return "/".join([base, *parts])

    def root_path(self, *parts: str) -> str:
        """Filesystem path of a file under the store root but outside any run (e.g. the nightly history)."""
        base = self.root[len("s3://"):] if self.root.startswith("s3://") else os.path.abspath(self.root)
        return "/".join([base, *parts])

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write (replace) a whole object at a filesystem path of this store, atomically."""
        self._write_bytes(path, data, exclusive=False)

    def uri(self, *parts: str) -> str:
        p = self.path(*parts)
        return f"s3://{p}" if self.root.startswith("s3://") else p

    def _guard(self, fn, what: str):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - translated in one place
            raise storage_error(exc, what) from None

    def check_access(self) -> None:
        """Fail fast (before compute) when the bucket is missing or the credentials are rejected."""
        if self.root.startswith("s3://"):
            bucket = self.root[len("s3://"):].split("/", 1)[0]
            self._guard(lambda: self.fs.ls(bucket, refresh=True), f"s3://{bucket}")
            # A write probe: listing can succeed where writing is denied.
            probe = self.path("_probe", uuid.uuid4().hex)
            self._guard(lambda: self.fs.pipe_file(probe, b""), self.uri("_probe"))
            self._guard(lambda: self.fs.rm_file(probe), self.uri("_probe"))
        else:
            os.makedirs(self.path(), exist_ok=True)

    # -- shards -----------------------------------------------------------------------------------------
    def _check_table(self, table: str) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables are {TABLES}")

    def commits(self, table: str) -> dict[str, dict]:
        """Commit records of a table, by shard id. A record that does not parse is set aside and raised as
        CorruptShard (naming table, shard and path)."""
        records, broken = self._scan_commits(table)
        errors = [self._corrupt(table, s, self.uri(table, "_commits", f"{s}.json"), why) for s, why in broken.items()]
        if errors:
            raise errors[0]
        return records

    def _scan_commits(self, table: str) -> tuple[dict[str, dict], dict[str, str]]:
        """(records by shard id, {shard id: why its record is unreadable})."""
        self._check_table(table)
        folder = self.path(table, "_commits")
        try:
            names = self.fs.ls(folder, detail=False, refresh=True)
        except FileNotFoundError:
            return {}, {}
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri(table, "_commits")) from None
        names = sorted(n for n in names if n.endswith(".json"))
        # One batched call: s3fs fetches the records concurrently (thousands of small GETs otherwise in series).
        raws = self._cat_many(names, self.uri(table, "_commits"))
        records: dict[str, dict] = {}
        broken: dict[str, str] = {}
        for name in names:
            shard = name.rsplit("/", 1)[-1][: -len(".json")]
            raw = raws.get(name, raws.get(self._strip(name)))
            if isinstance(raw, FileNotFoundError):
                continue  # set aside or removed between the listing and the read
            if isinstance(raw, BaseException):
                raise storage_error(raw, self.uri(table, "_commits", f"{shard}.json"))
            record, why = _parse_record(raw, shard)
            if record is None:
                broken[shard] = why
            else:
                records[shard] = record
        return records, broken

    def _cat_many(self, names: list[str], what: str) -> dict:
        """{path: bytes or the exception reading it}."""
        if not names:
            return {}
        try:
            return self.fs.cat(names, on_error="return")
        except FileNotFoundError:  # one vanished between listing and reading: read them one by one
            out: dict = {}
            for n in names:
                try:
                    out[n] = self.fs.cat_file(n)
                except Exception as exc:  # noqa: BLE001
                    out[n] = exc
            return out
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, what) from None

    def _strip(self, name: str) -> str:
        return name[len("s3://"):] if name.startswith("s3://") else name

    def verify(self, table: str) -> list[tuple[str, str, str]]:
        """Shards of a table that are not sound, as (shard, path, reason): a record that does not parse, a data
        file that is missing or not of its recorded size. Cheap: the records and one listing, no data read (the
        sha256 is checked whenever a shard is read)."""
        records, broken = self._scan_commits(table)
        bad = [(s, self.uri(table, "_commits", f"{s}.json"), why) for s, why in sorted(broken.items())]
        if not records:
            return bad
        try:
            listing = self.fs.ls(self.path(table), detail=True, refresh=True)
        except FileNotFoundError:
            listing = []
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri(table)) from None
        sizes = {e["name"].rsplit("/", 1)[-1]: int(e.get("size") or 0) for e in listing if e.get("type") != "directory"}
        for shard, rec in sorted(records.items()):
            size, uri = sizes.get(rec["file"]), self.uri(table, rec["file"])
            if size is None:
                bad.append((shard, uri, "the data file is missing"))
            elif "bytes" in rec and size != int(rec["bytes"]):
                bad.append((shard, uri, f"the data file has {size} bytes, its commit record says {rec['bytes']}"))
        return bad

    def set_aside(self, table: str, shard: str, reason: str) -> str:
        """Uncommit a corrupt shard so the stage that writes it redoes it: its commit record (whatever it holds)
        moves to ``<table>/_corrupt/``, with the reason. Returns the URI of that note."""
        record_path = self.path(table, "_commits", f"{shard}.json")
        try:
            raw = self.fs.cat_file(record_path)
        except FileNotFoundError:
            raw = b""
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri(table, "_commits", f"{shard}.json")) from None
        note = {"table": table, "shard": shard, "reason": reason, "set_aside_at": _now(), "cascaded": False,
                "record": raw.decode("utf-8", errors="replace")[:10_000]}
        name = self.uncommit(table, shard, "_corrupt", note)
        uri = self.uri(table, "_corrupt", name)
        log.warning("run store: table %s, shard %s set aside as corrupt (%s); see %s", table, shard, reason, uri)
        return uri

    def set_asides(self, table: str) -> list[tuple[str, dict]]:
        """Notes of the shards of a table set aside as corrupt, as (path, note)."""
        try:
            names = self.fs.ls(self.path(table, "_corrupt"), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(n for n in names if n.endswith(".json")):
            path = self._strip(name)
            out.append((path, json.loads(self._guard(lambda p=path: self.fs.cat_file(p), name))))
        return out

    def mark_cascaded(self, path: str, note: dict) -> None:
        """Record that what depends on a set-aside shard has been set aside too (driver only)."""
        self._write_bytes(path, json.dumps({**note, "cascaded": True}).encode(), exclusive=False)

    def _corrupt(self, table: str, shard: str, path: str, reason: str) -> CorruptShard:
        """Set a corrupt shard aside (best effort) and return the error that names it."""
        try:
            marker = self.set_aside(table, shard, reason)
        except Exception:  # noqa: BLE001 - the corruption is the error to report, not a failed clean-up
            log.exception("could not set aside table %s shard %s", table, shard)
            marker = None
        return CorruptShard(table, shard, path, reason, marker)

    def _read_data(self, table: str, shard: str, rec: dict) -> bytes:
        """The bytes of a committed shard's data file, checked against its commit record's size and sha256."""
        path, uri = self.path(table, rec["file"]), self.uri(table, rec["file"])
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            raise self._corrupt(table, shard, uri, "the data file is missing") from None
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, uri) from None
        if "bytes" in rec and len(raw) != int(rec["bytes"]):
            raise self._corrupt(table, shard, uri,
                                f"the data file has {len(raw)} bytes, its commit record says {rec['bytes']}")
        if "sha256" in rec and hashlib.sha256(raw).hexdigest() != rec["sha256"]:
            raise self._corrupt(table, shard, uri, "the data file's sha256 differs from its commit record")
        return raw

    def _parquet(self, table: str, shard: str, rec: dict, raw: bytes, **kwargs) -> pd.DataFrame:
        """Decode a shard; bytes that pass the checks but are not Parquet (a record without a checksum) are
        corruption too."""
        try:
            return parquet_bytes_frame(raw, **kwargs)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise self._corrupt(table, shard, self.uri(table, rec["file"]),
                                f"not readable as Parquet ({type(exc).__name__}: {str(exc)[:200]})") from None

    def is_committed(self, table: str, shard: str) -> bool:
        return self._guard(lambda: self.fs.exists(self.path(table, "_commits", f"{shard}.json")),
                           self.uri(table, "_commits", f"{shard}.json"))

    def _write_data(self, table: str, shard: str, df: pd.DataFrame, meta: dict | None) -> tuple[str, str, dict]:
        """Write a shard's data file whole under a unique name; returns (name, path, its commit record: rows,
        size, sha256, distinct requests, ``meta``). Every commit, first or superseding, is verified the same way."""
        token = f"{int(time.time())}-{secrets.token_hex(4)}"
        data_name = f"part-{shard}-{token}.parquet"
        data_path = self.path(table, data_name)
        buf = io.BytesIO()
        pq.write_table(frame_to_arrow(df), buf, compression="zstd")
        data = buf.getvalue()
        self._write_bytes(data_path, data, exclusive=False)
        record = {
            "shard": shard,
            "file": data_name,
            "rows": int(len(df)),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "committed_at": _now(),
            **(meta or {}),
        }
        if "request_id" in df.columns:  # the report's request counts come from the records, not a table scan
            key = ["model", "request_id"] if "model" in df.columns else ["request_id"]
            record.setdefault("distinct_requests", int(len(df[key].drop_duplicates())))
        return data_name, data_path, record

    def write_shard(self, table: str, shard: str, df: pd.DataFrame, meta: dict | None = None) -> bool:
        """Write one shard and commit it. Returns False (writing nothing) if the shard was already committed.

        Safe against a concurrent writer of the same shard: exactly one commit record is created; the loser
        removes its data file.
        """
        self._check_table(table)
        if not _SHARD.match(shard):
            raise ValueError(f"shard id {shard!r} must match {_SHARD.pattern}")
        if self.is_committed(table, shard):
            return False
        data_name, data_path, record = self._write_data(table, shard, df, meta)
        created = self._write_bytes(self.path(table, "_commits", f"{shard}.json"), json.dumps(record).encode(), exclusive=True)
        if not created:
            self._guard(lambda: self.fs.rm_file(data_path), data_path)
        return created

    def commit_record(self, table: str, shard: str) -> dict | None:
        """The commit record of one shard, or None when it is not committed."""
        path = self.path(table, "_commits", f"{shard}.json")
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri(table, "_commits", f"{shard}.json")) from None

    def supersede_shard(self, table: str, shard: str, df: pd.DataFrame, replaces: str, meta: dict | None = None) -> bool:
        """Replace a committed shard by a new version (e.g. its failed rows retried), for every reader at once.

        The new data file is written whole, then the commit record is overwritten in one atomic write (a local
        rename, a single S3 PUT): readers see the old version or the new, never both. Returns False (writing
        nothing) when the shard's data file is no longer ``replaces`` (another writer superseded it first). The
        old data file is left as garbage (see ``garbage``) so a reader holding the old record can still read it.
        """
        self._check_table(table)
        current = self.commit_record(table, shard)
        if current is None or current["file"] != replaces:
            return False
        _, _, record = self._write_data(table, shard, df, meta)
        record.update(supersedes=replaces, generation=int(current.get("generation", 0)) + 1)
        self._write_bytes(self.path(table, "_commits", f"{shard}.json"), json.dumps(record).encode(), exclusive=False)
        return True

    def retract_shard(self, table: str, shard: str) -> bool:
        """Withdraw a shard's commit so the stage that writes it redoes it (its input changed); its data file
        becomes garbage. Returns whether there was a commit to withdraw."""
        self._check_table(table)
        if not self.is_committed(table, shard):
            return False
        self.uncommit(table, shard)
        return True

    def uncommit(self, table: str, shard: str, keep_in: str | None = None, note: dict | None = None) -> str | None:
        """Remove a shard's commit record, so readers no longer see the shard and its stage may write it again
        (its data file stays, as garbage or history). With ``keep_in``, ``note`` is first written to
        ``<table>/<keep_in>/<shard>-<time>-<token>.json`` and that name returned: the one mechanism behind
        ``set_aside`` (``_corrupt/``), ``retract_shard`` (no note) and a retired labels import (``_retired/``).
        A record already gone is not an error (another reader removed it first)."""
        name = None
        if keep_in is not None:
            name = f"{shard}-{int(time.time())}-{secrets.token_hex(4)}.json"
            self._write_bytes(self.path(table, keep_in, name), json.dumps(note or {}).encode(), exclusive=False)
        try:
            self.fs.rm_file(self.path(table, "_commits", f"{shard}.json"))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri(table, "_commits", f"{shard}.json")) from None
        return name

    def lease(self, ttl_s: float = 60.0, heartbeat_s: float | None = None):
        """The run's lease (jobs.lease.Lease): ``with store.lease(ttl).acquire(wait_s):`` holds the run id."""
        from jobs.lease import Lease

        return Lease(self, ttl_s, heartbeat_s)

    def _write_bytes(self, path: str, data: bytes, exclusive: bool) -> bool:
        """Write a whole object atomically; with exclusive, only if it does not exist (returns whether written).

        Every exclusively created body is unique to its writer (a commit record names its data file's random
        token, a lease record its owner), which is what lets a retried create recognise its own first attempt."""
        if self.root.startswith("s3://"):
            try:
                # A single PUT is atomic on S3; If-None-Match: * makes the create exclusive.
                self.fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")
                return True
            except FileExistsError:
                return self._is_own_write(path, data)
            except Exception as exc:  # noqa: BLE001
                if exclusive and _error_is_precondition(exc):
                    return self._is_own_write(path, data)
                raise storage_error(exc, f"s3://{path}") from None
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            if exclusive:
                try:
                    os.link(tmp, path)  # fails if path exists: an atomic exclusive create of a complete file
                except FileExistsError:
                    return False
                return True
            os.replace(tmp, path)
            return True
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _is_own_write(self, path: str, data: bytes) -> bool:
        """After an exclusive create was refused (412): whether the object there is this very write. A PUT whose
        first attempt reached S3 but whose response was lost (a reset connection, a timeout) is retried, and the
        retry meets the object it created itself; treating that as another writer's would drop a commit (and
        delete its data file) that every reader already sees."""
        try:
            existing = self.fs.cat_file(path)
        except FileNotFoundError:
            return False  # removed since: not a commit that stands
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, f"s3://{path}") from None
        if existing != data:
            return False
        log.info("run store: s3://%s: an exclusive create was retried after its response was lost; it is this "
                 "writer's own object", path)
        return True

    def shard_paths(self, table: str) -> list[str]:
        """Paths of the committed data files of a table (for Ray Data's read_parquet with ``self.fs``), after
        ``verify`` (sizes only: these bytes are read elsewhere, unhashed)."""
        for shard, uri, reason in self.verify(table):
            raise self._corrupt(table, shard, uri, reason)
        return [self.path(table, rec["file"]) for _, rec in sorted(self.commits(table).items())]

    def iter_shards(self, table: str, columns: list[str] | None = None,
                    categorical: list[str] | None = None) -> Iterator[tuple[str, pd.DataFrame]]:
        """Committed shards one at a time, so a reader never holds more than one shard. Columns named in
        ``categorical`` come back as pandas categoricals straight from Parquet's dictionary pages (no string
        object per row)."""
        for shard, rec in sorted(self.commits(table).items()):
            raw = self._read_data(table, shard, rec)
            yield shard, self._parquet(table, shard, rec, raw, columns=columns, read_dictionary=categorical)

    def read_shard(self, table: str, shard: str, columns: list[str] | None = None,
                   ignore_missing: bool = False, categorical: list[str] | None = None) -> pd.DataFrame | None:
        """One committed shard, or None when it is not committed. With ``ignore_missing``, requested columns the
        shard lacks are left out instead of failing the read; ``categorical`` as in :meth:`iter_shards`."""
        path = self.path(table, "_commits", f"{shard}.json")
        try:
            raw_record = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri(table, "_commits", f"{shard}.json")) from None
        record, why = _parse_record(raw_record, shard)
        if record is None:
            raise self._corrupt(table, shard, self.uri(table, "_commits", f"{shard}.json"), why)
        raw = self._read_data(table, shard, record)
        if columns is not None and ignore_missing:
            try:
                present = set(pq.read_schema(pa.BufferReader(raw)).names)
            except (pa.ArrowInvalid, OSError) as exc:
                raise self._corrupt(table, shard, self.uri(table, record["file"]),
                                    f"not readable as Parquet ({type(exc).__name__}: {str(exc)[:200]})") from None
            columns = [c for c in columns if c in present]
        return self._parquet(table, shard, record, raw, columns=columns, read_dictionary=categorical)

    def read_table(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A whole table from its committed shards (for small tables: labels, decision inputs)."""
        frames = [df for _, df in self.iter_shards(table, columns)]
        if not frames:
            return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    def count_rows(self, table: str) -> int:
        return sum(int(r["rows"]) for r in self.commits(table).values())

    def garbage(self, table: str) -> list[str]:
        """Data files without a commit record (left by crashed writers)."""
        committed = {rec["file"] for rec in self.commits(table).values()}
        try:
            names = self.fs.ls(self.path(table), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [n for n in names if n.rsplit("/", 1)[-1].startswith("part-") and n.rsplit("/", 1)[-1] not in committed]

    # -- documents and manifest -------------------------------------------------------------------------
    def write_document(self, table: str, name: str, data: bytes | str) -> str:
        """Write (replace) a whole document such as decision.json or report.html; returns its URI."""
        self._check_table(table)
        payload = data.encode() if isinstance(data, str) else data
        self._write_bytes(self.path(table, name), payload, exclusive=False)
        return self.uri(table, name)

    def read_document(self, table: str, name: str) -> bytes:
        return self._guard(lambda: self.fs.cat_file(self.path(table, name)), self.uri(table, name))

    def has_document(self, table: str, name: str) -> bool:
        return self._guard(lambda: self.fs.exists(self.path(table, name)), self.uri(table, name))

    def manifest(self) -> dict:
        try:
            return json.loads(self.fs.cat_file(self.path("manifest.json")))
        except FileNotFoundError:
            return {}
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.uri("manifest.json")) from None

    def update_manifest(self, **fields: object) -> dict:
        """Merge fields into manifest.json (driver only: one writer per run)."""
        manifest = self.manifest() or {"run_id": self.run_id, "created_at": _now(), "stages": {}}
        for key, value in fields.items():
            if key == "stages" and isinstance(value, dict):
                for stage, stats in value.items():
                    manifest["stages"].setdefault(stage, {}).update(stats)
            else:
                manifest[key] = value
        manifest["updated_at"] = _now()
        self._write_bytes(self.path("manifest.json"), json.dumps(manifest, indent=2, default=str).encode(), exclusive=False)
        return manifest


def _parse_record(raw: bytes, shard: str) -> tuple[dict | None, str]:
    """A commit record, or (None, why it is not one): truncated JSON, or fields missing."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"the commit record does not parse ({len(raw)} bytes: {exc})"
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or "rows" not in record:
        return None, "the commit record lacks its 'file' or 'rows' field"
    if record.get("shard") != shard:
        return None, f"the commit record names shard {record.get('shard')!r}"
    return record, ""


def _error_is_precondition(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "PreconditionFailed" in text or "412" in text or "ConditionalRequestConflict" in text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
