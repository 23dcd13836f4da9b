"""The crash guards on real processes: a per-key lock released by the kernel when its holder
is SIGKILLed, a child that dies with its SIGKILLed parent, and the reaping of a stale session
that never touches a pid some other program reuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enginesweep.engines.locks import key_lock
from enginesweep.engines.processes import reap_stale_session, session_pids

pytestmark = pytest.mark.integration

HOLD = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(300)
"""


def _wait_gone(pid: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while pid in session_pids(pid) or _running(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_lock_held_by_a_sigkilled_process_is_free_at_once(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "key.lock"
    lock.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lines: list[str] = []
    holder_pid = holder.pid

    def kill_soon() -> None:
        time.sleep(1.0)
        holder.kill()

    import threading

    threading.Thread(target=kill_soon, daemon=True).start()
    start = time.monotonic()
    with key_lock(lock, "the test key", lines.append):
        waited = time.monotonic() - start
        assert lock.read_text() == str(os.getpid())
    holder.wait(timeout=10)
    assert 0.5 < waited < 30
    assert lines and "waiting for the test key" in lines[0] and str(lock) in lines[0]
    assert holder_pid != os.getpid()


def test_a_child_started_with_kill_with_parent_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    parent_code = f"""
import subprocess, sys, time
from enginesweep.engines.processes import kill_with_parent
child = subprocess.Popen(["sleep", "300"], start_new_session=True, preexec_fn=kill_with_parent())
open({str(pidfile)!r}, "w").write(str(child.pid))
time.sleep(300)
"""
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    child = int(pidfile.read_text())
    assert _running(child)
    parent.kill()
    parent.wait(timeout=10)
    _wait_gone(child)


def test_reaping_kills_the_leftovers_of_a_dead_leader_and_spares_a_reused_pid(tmp_path: Path) -> None:
    marker = str(tmp_path / "trial-folder")
    # A session whose leader (bash) dies and leaves a helper (sleep) behind, like a server
    # killed by PDEATHSIG leaving a Python-backend stub.
    leader = subprocess.Popen(
        ["bash", "-c", f"sleep 300 & echo $!; exit 0 # {marker}"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    helper = int(leader.stdout.readline())
    leader.wait(timeout=10)
    assert helper in session_pids(leader.pid) and leader.pid not in session_pids(leader.pid)
    pidfile = tmp_path / "server.pid"
    pidfile.write_text(str(leader.pid))
    assert reap_stale_session(pidfile, marker) == [helper]
    _wait_gone(helper)
    assert not pidfile.exists()

    # A live session leader that is not ours (no marker in its command line): untouched.
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pidfile.write_text(str(other.pid))
        assert reap_stale_session(pidfile, marker) == []
        assert other.poll() is None
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait(timeout=10)
