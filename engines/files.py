"""Files written so that a crash (even SIGKILL) or a full disk never leaves half of one: the
runtime every layer above writes its records, manifests and reports with."""

from __future__ import annotations

import errno
import gc
import os
import shutil
import traceback
from pathlib import Path


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename, so a
    crash (even SIGKILL) leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a file beside the old one
        raise
    return path


class WorkspaceFull(RuntimeError):
    """The workspace's disk filled up during a trial (what was half-written is removed)."""


def disk_full(exc: BaseException, workspace: Path) -> WorkspaceFull | None:
    """A WorkspaceFull naming the disk and the fix when `exc` comes from a full disk: ENOSPC
    anywhere in its chain, or torch.save's own error for a short write ("unexpected pos")."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if not any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or (isinstance(e, RuntimeError) and "unexpected pos" in str(e))
        for e in chain
    ):
        return None
    try:
        free = f"{shutil.disk_usage(workspace).free / 2**20:.1f} MiB free now"
    except OSError:
        free = "free space unknown"
    return WorkspaceFull(
        f"no space left on the disk of the workspace {workspace} ({free}; "
        f"{type(exc).__name__}: {str(exc)[:200]}): free space there (`enginesweep gc "
        "SPEC` removes store entries nothing uses) or point `workspace` at a larger disk"
    )


def release_frames(exc: BaseException) -> None:
    """Clear the local variables of every frame in `exc`'s tracebacks (its whole chain), so that
    the objects only they held (open files of a failed writer) are closed now."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
    gc.collect()
