"""Finding the code sandbox's processes from outside it (tests of inference.scorers.sandbox and of scoring on Ray)."""

from __future__ import annotations

import os
from pathlib import Path

from inference.scorers import sandbox


def sandbox_pids() -> set[int]:
    """Live processes of any sandbox: their command line holds the sandbox's own code (the answer travels on stdin,
    so it is not there)."""
    sign = b"p = json.loads(sys.stdin.buffer.read())"  # the first line of both the boot and the harness
    assert sign.decode() in sandbox._HARNESS and sign.decode() in sandbox._BOOT
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if sign in cmd:
            found.add(int(pid))
    return found
