"""Cross-process locks on content keys, so concurrent sweeps on one workspace build a key once.

A lock is an advisory `flock` on a small file beside what it guards. The kernel drops it when
the holder exits in any way (SIGKILL included), so a crashed sweep never leaves a stale lock;
the file itself is left in place (deleting a lock file while another process waits on it would
let a third one take a fresh lock on a new file).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

GC_LOCK = ".gc.lock"
"""Workspace lock: every running trial holds it shared, `enginesweep gc` exclusively."""


@contextmanager
def key_lock(
    path: Path, what: str, log: Callable[[str], None] = print, *, shared: bool = False
) -> Iterator[None]:
    """Hold the lock `path` (created if missing) for the block: exclusive, or `shared` with
    other shared holders. When it is taken the other way, say so (`what` names the guarded
    thing) and wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            log(f"  waiting for {what}: another run (pid {holder}) holds {path}")
            fcntl.flock(handle, mode)
        if not shared:  # the holder's pid, for the message above
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Take the exclusive lock `path` without waiting; yield whether it was taken (and hold it
    for the block). A lock file that does not exist is free."""
    if not path.exists():
        yield True
        return
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
