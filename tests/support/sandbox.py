"""Finding the code sandbox's processes from outside it (tests of inference.scorers.sandbox and of scoring on Ray)."""

from __future__ import annotations

import psutil

from inference.scorers import sandbox

SIGN = "p = json.loads(sys.stdin.buffer.read())"  # the first line of both the boot and the harness
assert SIGN in sandbox._HARNESS and SIGN in sandbox._BOOT


def sandbox_pids() -> set[int]:
    """Live processes of any sandbox: their command line holds the sandbox's own code (the answer travels on stdin,
    so it is not there). A zombie has no command line, so only processes still running count."""
    return {p.pid for p in psutil.process_iter(["cmdline"]) if SIGN in " ".join(p.info["cmdline"] or ())}
