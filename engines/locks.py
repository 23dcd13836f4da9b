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


@contextmanager
def key_lock(path: Path, what: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the exclusive lock `path` (created if missing) for the block. When another process
    holds it, say so (`what` names the guarded thing) and wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            log(f"  waiting for {what}: another run (pid {holder}) holds {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
