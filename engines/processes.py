"""Stopping what we start: every long-lived child (tritonserver, aiperf) runs in a session of
its own, is waited for until it answers (`wait_ready`), and is stopped as a whole process group,
so its helpers (Python-backend stubs, aiperf's services) never outlive it.

When we cannot stop them (the sweep was SIGKILLed), two guards remain: the child is started with
`kill_with_parent` (Linux PR_SET_PDEATHSIG: the kernel SIGKILLs it when its parent dies), and its
session id is written to a pidfile that the next start reads (`reap_stale_session`) to kill any
helper left of that session before it binds ports or writes the same folder again."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

STOP_GRACE_S = 10.0


def stop_process_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by `process`, SIGKILL it if the leader has not exited after
    `grace_s`; then wait for the members that outlive their leader (aiperf's services), SIGKILLing
    what is left of its session after another `grace_s`. Returns when none of it runs. Safe to
    call on a group whose leader already exited (its members still get it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
    deadline = time.monotonic() + grace_s
    while session_pids(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_pids(process.pid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while left and session_pids(process.pid) and time.monotonic() < end:
        time.sleep(0.1)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when `url` answers 200 now; any connection error or other status is False."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    process: subprocess.Popen,
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    log_tail: Callable[[], str],
    error: type[Exception] = RuntimeError,
) -> None:
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


_PR_SET_PDEATHSIG = 1
try:  # loaded here, in the parent: dlopen between fork and exec can deadlock a threaded parent
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def kill_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` for Popen: the child gets `sig` (SIGKILL; SIGTERM for a child that must
    clean up) from the kernel when the thread that started it exits (Linux prctl
    PR_SET_PDEATHSIG), so a SIGKILLed sweep leaves no server behind. A child whose parent died
    before the prctl took effect exits at once. A no-op where prctl is missing."""
    parent = os.getpid()

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


STAT_PPID, STAT_SESSION = 1, 3
"""Fields of /proc/PID/stat after the command name: state ppid pgrp session ..."""


def pids_where(field: int, value: int) -> list[int]:
    """Every live (not zombie) process whose /proc stat `field` (STAT_PPID, STAT_SESSION) is
    `value`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[field]) == value and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (from /proc): mpirun's ranks call
    setpgid(), so a process group is not enough, but they stay in the launcher's session."""
    return pids_where(STAT_SESSION, sid)


def session_of(pid: int) -> int | None:
    """The session id of `pid` (from /proc), None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[STAT_SESSION])
    except (OSError, IndexError, ValueError):
        return None


def listening_pids(port: int) -> set[int]:
    """The processes holding a TCP socket that listens on `port` (IPv4 or IPv6, any address),
    found through /proc: the socket's inode in /proc/net/tcp*, then the process whose file
    descriptors name it. Sockets of other users' processes cannot be seen (their fds are
    closed to us): they are simply not in the set."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # fields: sl local_address rem_address st ... inode; 0A is TCP_LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    if not inodes:
        return pids
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pids.add(int(fd_dir.parent.name))
        except OSError:
            continue  # gone meanwhile, or another user's
    return pids


def foreign_listener(port: int, *, session: int) -> str | None:
    """Why the server listening on `port` is not one of session `session` (None when a process
    of that session holds the listening socket)."""
    pids = listening_pids(port)
    if any(session_of(pid) == session for pid in pids):
        return None
    if not pids:
        return (
            f"no process of this user listens on port {port} (another user's server, or "
            "another network namespace, answers there)"
        )
    others = ", ".join(f"pid {pid} ({' '.join(command_line(pid).split())[:120]})" for pid in sorted(pids))
    return f"port {port} is held by {others}, outside the trial's server session {session}"


def command_line(pid: int) -> str:
    """The process's command line, arguments joined by spaces ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_stale_session(pidfile: Path, marker: str, grace_s: float = 10.0) -> list[int]:
    """Kill what is left of the session recorded in `pidfile` by an earlier run that could not
    clean up (SIGKILL, power loss), and remove the file. Returns the pids it signalled.

    A pid that was reused is never touched: when the session's leader (pid == sid) is alive it
    must be ours (`marker`, a path of this trial, in its command line); when it is dead, the
    processes still in that session are its leftovers, because Linux does not hand out a pid
    that is still some process's session id."""
    try:
        sid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return []
    members = session_pids(sid)
    leader_alive = sid in members
    stale = [] if leader_alive and marker not in command_line(sid) else members
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in stale:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(p in session_pids(sid) for p in stale):
            time.sleep(0.2)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    return stale


def kill_marked(marker: str, grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM, then after `grace_s` SIGKILL, every process (but this one) whose command line
    contains `marker` (a folder of this trial): helpers that left their parent's session, such
    as aiperf's subprocess runners, which neither a process-group kill nor the session reaches.
    Returns the pids signalled."""
    me = os.getpid()

    def marked() -> list[int]:
        return [
            int(p.parent.name)
            for p in Path("/proc").glob("[0-9]*/cmdline")
            if int(p.parent.name) != me and marker in command_line(int(p.parent.name))
        ]

    found = marked()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in marked():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while marked() and time.monotonic() < deadline:
            time.sleep(0.1)
    return found
