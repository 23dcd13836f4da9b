"""Stopping what we start: every long-lived child (tritonserver, aiperf) runs in a session of
its own, and is stopped as a whole process group, so its helpers (Python-backend stubs, aiperf's
services) never outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

STOP_GRACE_S = 10.0


def stop_process_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by `process`, SIGKILL it if the leader has not exited after
    `grace_s`. Safe to call on a group whose leader already exited (its members still get it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
