"""Find processes by their command line, read from /proc.

pgrep is not used: a pattern that starts with '-' (`--port 5000`, `-m x.janitor`) is parsed as
an option, pgrep exits 2 with nothing on stdout, and a leftover check built on it always passes.
"""

from __future__ import annotations

import os
from pathlib import Path

from enginesweep.engines.processes import command_line


def processes_matching(text: str, cwd: Path | None = None) -> list[str]:
    """`pid command line` of every process but this one whose command line contains `text`
    (and, when `cwd` is given, whose working directory is `cwd`: so that a test sees only the
    processes its own runs started, not those of a test running beside it)."""
    me, found = os.getpid(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        line = command_line(int(proc.name)).strip()  # '' once it has ended
        if text not in line:
            continue
        try:
            if cwd is not None and Path(os.readlink(proc / "cwd")) != cwd.resolve():
                continue
        except OSError:  # it ended while we looked
            continue
        found.append(f"{proc.name} {line}")
    return found
