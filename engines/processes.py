"""Stopping what we start: every long-lived child (tritonserver, aiperf) runs in a session of
its own, is waited for until it answers (`wait_ready`), and is stopped as a whole process group,
so its helpers (Python-backend stubs, aiperf's services) never outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

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


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when `url` answers 200 now; any connection error or other status is False."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(process: subprocess.Popen, ready: Callable[[], bool], *, timeout_s: float,
               what: str, log_tail: Callable[[], str], error: type[Exception] = RuntimeError) -> None:
    """Poll `ready()` until it holds; raise `error` (with the log tail) if `process` exits first
    or `timeout_s` passes. The caller stops the process on failure."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(f"{what} exited with code {process.returncode} before it was ready:\n{log_tail()}")
        if ready():
            return
        time.sleep(0.25)
    raise error(f"{what} was not ready after {timeout_s:.0f} s:\n{log_tail()}")
