"""The run lease: at most one driver works on a run id at a time, on a local folder or on S3.

A lease is a small JSON object ``runs/<run_id>/_lease/lease-<generation>.json`` (holder host, pid, start,
heartbeat, expiry). The newest generation is the lease. Every change of holder is an *exclusive create* of the
next generation (``O_EXCL``-style link locally, ``PUT`` with ``If-None-Match: *`` on S3, as shard commits), so of
two drivers racing for a free or stale lease exactly one wins. Only the holder rewrites its own generation (its
heartbeat, every ``ttl/4``, and its release). A lease whose heartbeat is older than ``ttl`` (a killed driver) or
that was released is taken over by creating the next generation; a holder whose heartbeat finds a newer
generation has lost the lease and stops at the next stage boundary (``check``).

A holder known to be dead is taken over at once, before its ttl: a process of this host (same hostname and same
PID namespace) that no longer runs, or a lease this very process took and has ended (a run that failed while the
store was unreachable could not release it). Those are the reruns that follow an outage or a crash on the same
machine; a holder on another host is judged by its heartbeat only.

Expiry compares wall clocks of different hosts: keep ``ttl`` well above their skew (the default is 60 s).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from jobs.errors import EXIT_BAD_INPUT, BatonError, storage_error

log = logging.getLogger(__name__)
FOLDER = "_lease"
_ACTIVE: set[str] = set()  # owners of the leases this process holds right now
_NAME = re.compile(r"^lease-(\d{8})\.json$")


class LeaseHeld(BatonError):
    """Another live driver holds the run's lease (exit 2: the run id is in use)."""

    exit_code = EXIT_BAD_INPUT


class LeaseLost(BatonError):
    """This driver's lease was taken over (its heartbeat stalled past the ttl); it stops before the next stage."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def describe(rec: dict) -> str:
    """Who holds a lease, for error messages and logs."""
    return (f"host {rec.get('host')}, pid {rec.get('pid')}, started {rec.get('started')}, "
            f"last heartbeat {rec.get('heartbeat')}, expires {_iso(float(rec.get('expires_epoch', 0)))}")


def _pid_namespace() -> int | None:
    """The PID namespace of this process (Linux): two containers on one host may share a hostname, not this."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def holder_gone(rec: dict) -> bool:
    """Whether a lease's holder is known to be dead (see the module docstring). False whenever unsure: a holder on
    another host, in another PID namespace, a process that still runs (or a reused pid) or one we may not see."""
    ns = _pid_namespace()
    if rec.get("host") != socket.gethostname() or ns is None or rec.get("pid_ns") != ns:
        return False
    try:
        pid = int(rec.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        return rec.get("owner") not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: the process exists under another user
        return False
    return False


class Lease:
    """One driver's lease on one run. ``acquire()`` ... ``release()``, or ``with store.lease(...):``."""

    def __init__(self, store, ttl_s: float = 60.0, heartbeat_s: float | None = None):
        self.store = store
        self.ttl_s = float(ttl_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s is not None else self.ttl_s / 4
        self.owner = uuid.uuid4().hex
        self.generation: int | None = None
        self.record: dict = {}
        self.lost: str | None = None
        self.took_over: dict | None = None  # the stale lease this one replaced, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- storage ------------------------------------------------------------------------------------------
    def _path(self, generation: int) -> str:
        return self.store.path(FOLDER, f"lease-{generation:08d}.json")

    def _generations(self) -> list[int]:
        try:
            names = self.store.fs.ls(self.store.path(FOLDER), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - S3 unreachable after its retries: exit 4, naming the bucket
            raise storage_error(exc, self.store.uri(FOLDER)) from None
        gens = [int(m.group(1)) for n in names if (m := _NAME.match(n.rsplit("/", 1)[-1]))]
        return sorted(gens)

    def _read(self, generation: int) -> dict | None:
        try:
            return json.loads(self.store.fs.cat_file(self._path(generation)))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise storage_error(exc, self.store.uri(FOLDER, f"lease-{generation:08d}.json")) from None

    def latest(self) -> tuple[int, dict] | None:
        """The newest generation and its record (None when the run never had a lease)."""
        for _ in range(5):  # a generation removed between listing and reading: list again
            gens = self._generations()
            if not gens:
                return None
            rec = self._read(gens[-1])
            if rec is not None:
                return gens[-1], rec
        return None

    def _body(self, now: float, released: bool = False) -> bytes:
        self.record.update(heartbeat=_iso(now), heartbeat_epoch=now,
                           expires_epoch=now if released else now + self.ttl_s, released=released)
        return json.dumps(self.record).encode()

    # -- acquire and release --------------------------------------------------------------------------------
    @staticmethod
    def live(rec: dict, now: float | None = None) -> bool:
        return not rec.get("released") and float(rec.get("expires_epoch", 0)) > (now or time.time())

    def acquire(self, wait_s: float = 0.0, poll_s: float = 1.0) -> "Lease":
        """Take the lease, waiting up to ``wait_s`` for a live holder to finish; raises LeaseHeld naming it."""
        deadline = time.monotonic() + wait_s
        while True:
            latest = self.latest()
            if latest is not None and self.live(latest[1]) and not holder_gone(latest[1]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LeaseHeld(
                        f"run {self.store.run_id} is in use by another driver ({describe(latest[1])}; lease "
                        f"{self.store.uri(FOLDER)}). Wait for it to finish, or set execution.lease_wait_s to wait "
                        f"for it; a killed driver's lease is taken over {self.ttl_s:.0f} s after its last heartbeat.")
                time.sleep(min(poll_s, left))
                continue
            gen = 0 if latest is None else latest[0] + 1
            now = time.time()
            self.record = {"generation": gen, "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "pid_ns": _pid_namespace(), "started": _iso(now), "run_id": self.store.run_id}
            # Active from before its record exists until after it is marked released: a waiter in this process
            # must never read this lease as its own ended one (holder_gone).
            _ACTIVE.add(self.owner)
            if not self.store._write_bytes(self._path(gen), self._body(now), exclusive=True):
                _ACTIVE.discard(self.owner)
                continue  # another driver created this generation first: look again
            # A contender that listed long ago may create an old, cleaned-up generation: the newest one wins.
            newest = self._generations()
            if newest and newest[-1] != gen:
                self._remove(gen)
                _ACTIVE.discard(self.owner)
                continue
            self.generation = gen
            if latest is not None and not latest[1].get("released"):
                self.took_over = latest[1]
                why = "its holder is no longer running" if self.live(latest[1], now) else "stale"
                log.warning("run %s: took over a lease, %s (%s)", self.store.run_id, why, describe(latest[1]))
            for old in newest[:-1]:
                self._remove(old)
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"baton-lease-{self.store.run_id}", daemon=True)
            self._thread.start()
            return self

    def _remove(self, generation: int) -> None:
        try:
            self.store.fs.rm_file(self._path(generation))
        except Exception:  # noqa: BLE001 - an old generation left behind is harmless
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                gens = self._generations()
                if gens and gens[-1] > self.generation:
                    newer = self._read(gens[-1]) or {}
                    self.lost = f"taken over by another driver ({describe(newer)})"
                    return
                self.store._write_bytes(self._path(self.generation), self._body(time.time()), exclusive=False)
            except Exception as exc:  # noqa: BLE001 - a failed heartbeat is retried until the lease would expire
                log.warning("run %s: lease heartbeat failed (%s)", self.store.run_id, type(exc).__name__)
                if time.time() > float(self.record.get("expires_epoch", 0)):
                    self.lost = "its heartbeat could not be written before it expired"
                    return

    def check(self) -> None:
        """Raise LeaseLost if another driver took the lease over (called at stage boundaries)."""
        if self.lost:
            raise LeaseLost(f"run {self.store.run_id}: this driver's lease was lost: {self.lost}; it stops here so "
                            "two drivers never work on one run. Rerun the same run id once the other driver is done.")

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released, unless it was lost to another driver."""
        if self.generation is None:
            return
        self.stop_heartbeat()
        try:
            gens = self._generations()
            if not self.lost and gens and gens[-1] == self.generation:
                self.store._write_bytes(self._path(self.generation), self._body(time.time(), released=True),
                                        exclusive=False)
        except Exception as exc:  # noqa: BLE001 - an unreleased lease expires after ttl anyway
            log.warning("run %s: lease release failed (%s); it expires in %.0f s", self.store.run_id,
                        type(exc).__name__, self.ttl_s)
        finally:
            _ACTIVE.discard(self.owner)
        self.generation = None

    def __enter__(self) -> "Lease":
        return self if self.generation is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
