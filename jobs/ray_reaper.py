"""A local Ray started by a driver dies with the driver, however the driver ends.

``ray.init()`` makes its GCS and raylet share the driver's fate (PR_SET_PDEATHSIG) and turns SIGTERM into
``sys.exit`` (its atexit hook then stops Ray), but a SIGKILLed driver (or one ended by SIGHUP, or crashed) left
``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` running for a minute or more (Ray 2.60: they notice that the
raylet is gone, then wait on the dead GCS to report it). Nothing runs in a SIGKILLed process, so ``fate_share()``
starts a small watchdog process (this module's ``main``) that holds the pids of the driver's descendants (the Ray
processes it started) and a pipe from the driver; when the pipe closes (the driver ended, however) it sends
SIGTERM to those still alive and SIGKILL a few seconds later.

Linux only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

GRACE_S = 3.0  # between SIGTERM and SIGKILL: enough for Ray's processes to flush their logs
_started: subprocess.Popen | None = None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces and parentheses
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every living descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        if start is not None:
            out.append((pid, start))
        todo.extend(children.get(pid, []))
    return out


def fate_share() -> None:
    """Tie the Ray processes this driver started to its life (see the module docstring). Idempotent."""
    global _started
    if _started is not None or not sys.platform.startswith("linux"):
        return
    ours = descendants(os.getpid())
    if not ours:
        return  # joined a cluster started elsewhere: not ours to stop
    args = [sys.executable, "-m", "jobs.ray_reaper", *(f"{pid}:{start}" for pid, start in ours)]
    # Its stdin is the pipe: EOF when this process is gone. Its own signals are ignored in main(), so a Ctrl-C
    # or a SIGTERM sent to the whole process group leaves it there to clean up.
    try:
        _started = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, close_fds=True)
    except OSError as exc:  # the run goes on; only a SIGKILLed driver would leave Ray's agents behind
        logging.getLogger(__name__).warning("cannot start the Ray watchdog (%s): a killed driver may leave "
                                            "Ray processes behind", exc)


def _alive(pids: list[tuple[int, str]]) -> list[int]:
    return [pid for pid, start in pids if _start_time(pid) == start]


def reap(pids: list[tuple[int, str]], grace_s: float = GRACE_S) -> None:
    """SIGTERM the processes still alive (same pid and start time), then SIGKILL what remains after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 1.0)):
        for pid in _alive(pids):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    pids = [(int(p), s) for p, s in (a.split(":", 1) for a in argv)]
    while sys.stdin.buffer.read(65536):
        pass
    reap(pids)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
