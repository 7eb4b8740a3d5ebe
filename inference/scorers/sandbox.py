"""Run untrusted Python (a candidate's code answer) against tests in a sandbox it cannot escape on a worker.

One answer = one short-lived process tree, contained by (docs/code-tasks.md says what this does NOT stop):

- **Kernel namespaces** (``isolation="namespace"``, the default when ``unshare`` works here; no root needed):
  a new user, mount, network and PID namespace via util-linux ``unshare``. The network namespace has only a
  down loopback (no route anywhere, not even to the worker's 127.0.0.1); the whole file tree is bind-mounted
  read-only, with private tmpfs over /tmp, /var/tmp and /dev/shm and only the scratch folder writable; the PID
  namespace dies with its first process, so a forked child that left the process group dies with it. A nested
  user+mount namespace then locks those mounts (the answer holds no capability that could remount them) and
  ``no_new_privs`` stops setuid binaries.
- **An unprivileged user**: a worker running as root drops the answer to ``nobody`` (65534) before anything else,
  because root is exempt from RLIMIT_NPROC and owns every root-owned file.
- **Resource limits** (``resource.setrlimit``): CPU seconds, address space, file size, process count, open files,
  no core dumps.
- **A wall-clock timeout** that SIGKILLs the whole process group (and with it the PID namespace).
- **A Python audit hook** (both modes; the only network guard in ``isolation="rlimits"``): socket creation,
  ctypes, and exec/spawn of programs raise PermissionError.
- **A fresh scratch folder** as the working directory, removed afterwards.

Results come back as JSON lines on a pipe, one per test as it finishes, so a run cut short still reports
the tests it got through.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

NOBODY = 65534
_UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child"]


@dataclass(frozen=True)
class Limits:
    """Per-answer limits (see CodeExecConfig for their meaning)."""

    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 8
    max_procs: int = 16
    wall_s: float = 10.0
    open_files: int = 64


@dataclass
class ExecResult:
    """What happened to one answer: tests passed, how it ended, and a short detail for humans."""

    total: int
    passed: int = 0
    loaded: bool = False
    load_error: str | None = None  # kind, when the answer itself failed to load (syntax, error, resource)
    test_kinds: list[str] = field(default_factory=list)  # kind of each finished test ("" = passed)
    timed_out: bool = False
    returncode: int | None = None
    signal: int = 0  # the signal that ended the harness, 0 if none
    detail: str = ""
    isolation: str = ""
    wall_s: float = 0.0


# --- the code that runs inside --------------------------------------------------------------------------------
# Boot: first Python in the sandbox (pid 1 of the PID namespace in namespace mode). Builds the read-only root,
# locks it behind a nested user namespace, then execs the harness. Stdlib only (run with -I -S).
_BOOT = r'''
import ctypes, json, os, sys
p = json.loads(sys.stdin.buffer.read())  # on stdin: an argument holds at most 128 KiB
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} -> {dst}: {os.strerror(e)}")
root, work = p["root"], p["work"]
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("/", root, None, MS_BIND | MS_REC)
for line in open("/proc/self/mountinfo"):
    parts = line.split()
    mp = parts[4].replace("\\040", " ")
    if mp != root and not mp.startswith(root + "/"):
        continue
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for opt in parts[5].split(","):
        flags |= KEEP.get(opt, 0)
    try:
        mount(None, mp, None, flags)
    except OSError:
        fstype = parts[parts.index("-") + 1]
        if fstype not in ("proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "bpf", "tracefs", "debugfs", "securityfs", "pstore", "fusectl", "configfs", "hugetlbfs"):
            raise
for tmp in ("/tmp", "/var/tmp", "/dev/shm"):
    if os.path.isdir(root + tmp):
        mount("tmpfs", root + tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"size={p['tmpfs_mb']}m,mode=1777")
os.makedirs(root + work, exist_ok=True)
mount(work, root + work, None, MS_BIND)
try:
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this PID namespace's processes only
except OSError:
    pass
uid, gid = os.getuid(), os.getgid()
# A nested user+mount namespace: its mounts are locked (read-only cannot be undone), and after exec as a non-root
# uid of that namespace the answer holds no capability at all (so it cannot leave the chroot either). The kernel
# refuses a new user namespace to a chrooted process, hence this order.
if libc.unshare(0x10000000 | 0x00020000) != 0:
    raise OSError(ctypes.get_errno(), "nested unshare")
with open("/proc/self/setgroups", "w") as f:
    f.write("deny")
with open("/proc/self/uid_map", "w") as f:
    f.write(f"1000 {uid} 1")
with open("/proc/self/gid_map", "w") as f:
    f.write(f"1000 {gid} 1")
os.chroot(root)
os.chdir(work)
# Stay as the namespace's init: its death takes every process of the answer with it, and it tells how the harness
# ended (unshare itself cannot pass on a death by signal).
hr, hw = os.pipe()
child = os.fork()
if child == 0:
    os.close(hw)
    os.dup2(hr, 0)
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", p["harness"]])
os.close(hr)
try:
    with os.fdopen(hw, "wb") as f:
        f.write(json.dumps(p).encode())
except BrokenPipeError:
    pass
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        os._exit(0)
    if pid == child:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        os.write(p["fd"], (json.dumps({"event": "exit", "signal": sig}) + "\n").encode())
        os._exit(0)
'''

# Harness: sets the limits, the audit hook, loads the answer, runs each test; reports on fd 3.
_HARNESS = r'''
import errno, json, os, resource, signal, sys
p = json.loads(sys.stdin.buffer.read())
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the answer reads nothing
out = os.fdopen(p["fd"], "w", buffering=1)
def report(**kw):
    try:
        out.write(json.dumps(kw) + "\n")
    except Exception:
        pass
L = p["limits"]
for res, val in ((resource.RLIMIT_CPU, (L["cpu_s"], L["cpu_s"] + 1)), (resource.RLIMIT_AS, (L["memory_mb"] << 20,) * 2),
                 (resource.RLIMIT_FSIZE, (L["file_mb"] << 20,) * 2), (resource.RLIMIT_NPROC, (L["max_procs"],) * 2),
                 (resource.RLIMIT_NOFILE, (L["open_files"],) * 2), (resource.RLIMIT_CORE, (0, 0))):
    resource.setrlimit(res, val)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead of killing us unreported
try:
    import ctypes
    ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid programs gain nothing
except Exception:
    pass
DENY = ("socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo", "ctypes.dlopen",
        "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "os.system", "os.exec", "os.posix_spawn",
        "os.spawn", "subprocess.Popen", "os.startfile", "pty.spawn")
if p["audit_hook"]:
    def hook(event, args):
        if event in DENY:
            raise PermissionError(f"sandbox: {event} is not allowed")
    sys.addaudithook(hook)
RESOURCE_ERRNOS = {errno.EFBIG, errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENOSPC, errno.EDQUOT}
def kind(exc, test):
    if isinstance(exc, MemoryError) or isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        return "resource"
    if isinstance(exc, SyntaxError):
        return "syntax"
    if test and isinstance(exc, AssertionError):
        return "wrong"
    return "error"
def brief(exc):
    return (type(exc).__name__ + ": " + str(exc))[:300]
sys.setrecursionlimit(10000)
ns = {"__name__": "__answer__"}
try:
    exec(compile(p["answer"], "answer.py", "exec"), ns)
except BaseException as exc:
    report(event="load", ok=False, kind=kind(exc, False), detail=brief(exc))
    os._exit(0)
report(event="load", ok=True)
for i, src in enumerate(p["tests"]):
    env = dict(ns)
    try:
        code = compile(src, f"test_{i}.py", "exec")
        exec(code, env)
        for name, fn in list(env.items()):
            if name.startswith("test") and callable(fn) and name not in ns and getattr(fn, "__module__", None) == "__answer__":
                fn()
        report(event="test", i=i, ok=True)
    except BaseException as exc:
        report(event="test", i=i, ok=False, kind=kind(exc, True), detail=brief(exc))
report(event="done")
os._exit(0)
'''


# --- the worker side ------------------------------------------------------------------------------------------
def _drop_uid() -> int | None:
    """The uid the answer runs as: nobody when the worker is root (root ignores RLIMIT_NPROC), else the worker's."""
    return NOBODY if os.geteuid() == 0 else None


def _world_usable(path: str) -> bool:
    """Whether `nobody` can reach and run `path` (every folder above it searchable, the file executable by all)."""
    real = os.path.realpath(path)
    if not os.stat(real).st_mode & stat.S_IXOTH:
        return False
    parent = os.path.dirname(real)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def resolve_interpreter(configured: str | None = None) -> str:
    """The Python that runs answers: the configured one, else this worker's, else a system python3 that `nobody`
    can run (a root worker's interpreter often lives under a private /root)."""
    if configured:
        return configured
    if _drop_uid() is None or _world_usable(sys.executable):
        return sys.executable
    for cand in (shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if cand and os.path.exists(cand) and _world_usable(cand):
            return cand
    raise RuntimeError("code sandbox: the worker runs as root and no Python interpreter is usable by user nobody; "
                       "set scoring.code.interpreter to a python3 every user can run")


@lru_cache(maxsize=8)
def namespaces_available(interpreter: str) -> bool:
    """Whether unprivileged user+mount+net+pid namespaces work here (probed once per worker process)."""
    if shutil.which("unshare") is None:
        return False
    scratch = tempfile.mkdtemp(prefix="baton-exec-probe-")
    try:
        res = _launch(interpreter, "pass", ["pass"], Limits(wall_s=20), "namespace", True, scratch)
        return res.passed == 1
    except Exception:  # noqa: BLE001 - any failure means: not available here
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_answer(answer: str, tests: list[str], limits: Limits, isolation: str = "auto",
               interpreter: str | None = None, audit_hook: bool = True, scratch_root: str | None = None) -> ExecResult:
    """Run one answer against its tests in a fresh sandbox; the scratch folder is removed afterwards."""
    interp = resolve_interpreter(interpreter)
    if isolation == "auto":
        isolation = "namespace" if namespaces_available(interp) else "rlimits"
    base = tempfile.mkdtemp(prefix="baton-exec-", dir=scratch_root)
    try:
        return _launch(interp, answer, tests, limits, isolation, audit_hook, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _launch(interp: str, answer: str, tests: list[str], limits: Limits, isolation: str, audit_hook: bool,
            base: str) -> ExecResult:
    uid = _drop_uid()
    work, root = os.path.join(base, "work"), os.path.join(base, "root")
    os.mkdir(work, 0o700)
    os.mkdir(root, 0o700)
    if uid is not None:
        os.chown(work, uid, uid)
        os.chown(root, uid, uid)
        os.chmod(base, 0o711)  # nobody may pass through to its own folders, not list them
    r, w = os.pipe()
    params = {"fd": w, "limits": limits.__dict__, "answer": answer, "tests": tests, "audit_hook": audit_hook,
              "root": root, "work": work, "tmpfs_mb": max(limits.file_mb, 1), "harness": _HARNESS}
    if isolation == "namespace":
        cmd = [*_UNSHARE, interp, "-I", "-S", "-c", _BOOT]
    elif isolation == "rlimits":
        cmd = [interp, "-I", "-S", "-c", _HARNESS]
    else:
        raise ValueError(f"code sandbox: unknown isolation {isolation!r} (auto, namespace, rlimits)")
    res = ExecResult(total=len(tests), isolation=isolation)
    chunks: list[bytes] = []
    err = tempfile.TemporaryFile()  # the answer's stderr: bounded by its file-size limit, never held in memory
    started = time.monotonic()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "PYTHONDONTWRITEBYTECODE": "1"}
    drop = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    try:
        # No preexec_fn (unsafe with the scorer's threads): Popen sets the session and the ids itself.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, cwd=work,
                                env=env, pass_fds=(w,), close_fds=True, start_new_session=True, **drop)
    except BaseException:
        os.close(r)
        os.close(w)
        err.close()
        raise
    os.close(w)
    reader = threading.Thread(target=_drain, args=(r, chunks, 1 << 20), daemon=True)
    reader.start()
    threading.Thread(target=_feed, args=(proc.stdin, json.dumps(params).encode()), daemon=True).start()
    res.timed_out = not _exited_unreaped(proc.pid, started + limits.wall_s)
    # Always, not only at the timeout: the harness may end (its CPU limit, os._exit) while children it forked live
    # on in its group, each with a fresh CPU allowance, holding the result pipe open.
    _kill_group(proc)
    reader.join(timeout=5)
    res.wall_s = round(time.monotonic() - started, 3)
    res.returncode = proc.returncode
    _parse(b"".join(chunks), res)
    if res.signal == 0 and res.returncode is not None and res.returncode < 0:
        res.signal = -res.returncode
    if res.signal == signal.SIGXCPU:  # out of CPU seconds: a timeout that the wall clock did not see first
        res.timed_out = True
    err.seek(0)
    tail = err.read()[-2000:].decode("utf-8", "replace").strip()
    err.close()
    if not res.detail and tail:
        res.detail = tail.splitlines()[-1][:300]
    return res


def _exited_unreaped(pid: int, deadline: float) -> bool:
    """Wait until the leader exits or the deadline passes, without reaping it (WNOWAIT): while it is a zombie its
    pid, the group's id, cannot be handed to another process, so the kill that follows reaches only the sandbox."""
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(0.02, left))


def _kill_group(proc: subprocess.Popen, settle_s: float = 3.0) -> None:
    """SIGKILL the sandbox's process group (its leader not yet reaped), reap the leader, then wait (at most
    `settle_s`) until init has reaped the rest: a zombie still counts against the sandbox user's RLIMIT_NPROC, so
    the next answer would otherwise start short of processes."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _feed(pipe, data: bytes) -> None:
    """Hand the sandbox its parameters on stdin (in a thread: a child that dies unread must not block us)."""
    try:
        pipe.write(data)
    except (OSError, ValueError):  # it died unread (BrokenPipeError): its result says so
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _drain(fd: int, chunks: list[bytes], cap: int) -> None:
    """Read the result pipe to its end, keeping at most `cap` bytes (a hostile answer may flood it)."""
    kept = 0
    with os.fdopen(fd, "rb", buffering=0) as f:
        while True:
            data = f.read(65536)
            if not data:
                return
            if kept < cap:
                chunks.append(data[: cap - kept])
                kept += len(data)


def _parse(raw: bytes, res: ExecResult) -> None:
    kinds: dict[int, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        if ev.get("event") == "load":
            res.loaded = bool(ev.get("ok"))
            if not res.loaded:
                res.load_error = str(ev.get("kind") or "error")
                res.detail = str(ev.get("detail") or "")[:300]
        elif ev.get("event") == "exit" and isinstance(ev.get("signal"), int):
            res.signal = ev["signal"]
        elif ev.get("event") == "test" and isinstance(ev.get("i"), int) and 0 <= ev["i"] < res.total:
            kinds.setdefault(ev["i"], "" if ev.get("ok") else str(ev.get("kind") or "error"))
            if not ev.get("ok") and not res.detail:
                res.detail = str(ev.get("detail") or "")[:300]
    res.test_kinds = [kinds[i] for i in sorted(kinds)]
    res.passed = sum(1 for k in kinds.values() if k == "")
