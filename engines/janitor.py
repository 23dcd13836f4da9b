"""A janitor for children this process does not start itself, so cannot tie to its own life
with `kill_with_parent`: Prefect's ephemeral API server (uvicorn), which Prefect starts and
stops at exit (atexit) but leaves running when the sweep is SIGKILLed.

The janitor is a small process of its own (its own session: Ctrl-C does not reach it) that reads
`pid starttime` lines on stdin. Its stdin is the only writer end of a pipe held by the sweep, so
it sees end-of-file when the sweep ends in any way, SIGKILL included; it then SIGTERMs (and
after a grace, SIGKILLs) every registered process that is still the same process (same start
time: a reused pid is never touched), and exits.

Run as `python -m engines.janitor`; use `watch_children(marker)` from the sweep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from enginesweep.engines.processes import command_line

_GRACE_S = 5.0
_janitor: subprocess.Popen | None = None


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def children_with(marker: str) -> list[int]:
    """This process's direct children whose command line contains `marker`."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and marker in command_line(int(stat.parent.name)):
            found.append(int(stat.parent.name))
    return found


def watch_children(marker: str) -> list[int]:
    """Hand this process's children matching `marker` to the janitor (started on first use);
    returns their pids."""
    global _janitor
    pids = children_with(marker)
    if not pids:
        return []
    if _janitor is None or _janitor.poll() is not None:
        # Its own output goes nowhere: a reader of the sweep's output (`| tee`) must not wait
        # for the janitor's end too.
        _janitor = subprocess.Popen(
            [sys.executable, "-m", "enginesweep.engines.janitor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    assert _janitor.stdin is not None
    lines = "".join(f"{pid} {started}\n" for pid in pids if (started := start_time(pid)) is not None)
    try:
        _janitor.stdin.write(lines)
        _janitor.stdin.flush()
    except BrokenPipeError:  # it died at start: Prefect still stops its server at a normal exit
        return []
    return pids


def _same(pid: int, started: str) -> bool:
    return start_time(pid) == started


def main() -> None:
    """Read targets until end-of-file (the sweep ended), then stop those still running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    targets = []
    for line in sys.stdin:
        pid, started = line.split()
        targets.append((int(pid), started))
    for sig, wait_s in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, 2.0)):
        alive = [(pid, started) for pid, started in targets if _same(pid, started)]
        for pid, _ in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_same(p, s) for p, s in alive):
            time.sleep(0.1)


if __name__ == "__main__":
    main()
