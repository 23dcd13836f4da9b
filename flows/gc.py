"""`enginesweep gc`: remove what nothing references from a workspace's content-addressed store.

Kept: every engine bundle (`bundles/`) and quantized checkpoint (`quantized/`) that a trial
record of any sweep in the workspace names, and every bundle whose content hash a registered
model version carries (its `content_hash` tag), even when no record names it any more.
Removed: the other store entries, and what crashed runs left (`*.tmp` entries). An entry whose
lock another process holds is being built or read right now and is skipped. `dry_run` only
reports. It refuses to run while a trial runs on the workspace (trials hold its lock
shared). Bundles are hard links of their checkpoints' files on the reference stack, so the
bytes freed are counted per inode.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from enginesweep.engines.locks import try_lock
from enginesweep.engines.store import STORES, TMP_SUFFIX, Workspace, entry_lock
from enginesweep.evaluation.records import TrialRecord


class GcBusy(RuntimeError):
    """A trial is running on the workspace: collecting now could remove what it just built."""


@dataclass
class GcReport:
    """What gc removed (or would remove), what it kept and why it skipped anything."""

    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    freed_bytes: int = 0


def referenced_by_records(workspace: Path) -> tuple[set[Path], list[str]]:
    """Store entries named by the trial records of every sweep, and the records gc could not
    read (it then keeps everything: a record it cannot read might name anything)."""
    names: set[Path] = set()
    unreadable: list[str] = []
    for path in Workspace(workspace).records():
        try:
            record = TrialRecord.load(path)
        except (OSError, ValueError) as exc:
            unreadable.append(f"{path}: {str(exc).splitlines()[0]}")
            continue
        for entry in (record.bundle_dir, record.quantized_dir):
            if entry:
                names.add(Path(entry).resolve())
    return names, unreadable


def registered_hashes(tracking_uri: str) -> set[str]:
    """Content hashes of every registered model version in the tracking store."""
    from enginesweep.evaluation.tracking import open_client

    client = open_client(tracking_uri)
    return {v.tags["content_hash"] for v in client.search_model_versions() if v.tags.get("content_hash")}


def _bundle_hash(entry: Path) -> str | None:
    from enginesweep.engines.manifest import Manifest

    try:
        return Manifest.load(entry).content_hash
    except (OSError, ValueError):
        return None


def _size(paths: Iterable[Path], seen: set[tuple[int, int]], linked_elsewhere: set[tuple[int, int]]) -> int:
    total = 0
    for path in paths:
        for file in [path] if path.is_file() else path.rglob("*"):
            if file.is_file() and not file.is_symlink():
                stat = file.stat()
                inode = (stat.st_dev, stat.st_ino)
                if inode not in seen and inode not in linked_elsewhere:
                    seen.add(inode)
                    total += stat.st_size
    return total


def collect(workspace: Path, *, registered: set[str], dry_run: bool) -> GcReport:
    """Remove (or with `dry_run`, list) the unreferenced store entries of `workspace`."""
    report = GcReport()
    referenced, unreadable = referenced_by_records(workspace)
    if unreadable:
        report.skipped.extend(
            (Path(u.split(":")[0]), "unreadable record: gc keeps everything") for u in unreadable
        )
        return report
    doomed: list[Path] = []
    for store in STORES:
        root = Workspace(workspace).store(store)
        if not root.is_dir():
            continue
        for entry in sorted(p for p in root.iterdir() if p.name != ".locks"):
            crash_leftover = entry.name.endswith(TMP_SUFFIX)
            keep = not crash_leftover and (
                entry.resolve() in referenced
                or (store == "bundles" and _bundle_hash(entry) in registered)
                or entry.name.endswith(".log")
                and entry.with_name(entry.name.removesuffix("-build.log")).resolve() in referenced
            )
            if keep:
                report.kept.append(entry)
            else:
                doomed.append(entry)
    kept_inodes: set[tuple[int, int]] = set()
    for entry in report.kept:
        for file in [entry] if entry.is_file() else entry.rglob("*"):
            if file.is_file():
                stat = file.stat()
                kept_inodes.add((stat.st_dev, stat.st_ino))
    seen: set[tuple[int, int]] = set()
    for entry in doomed:
        # Held while deleting: a build that starts now waits, then finds nothing and rebuilds.
        with try_lock(entry_lock(entry)) as taken:
            if not taken:
                report.skipped.append((entry, "in use by another run (its lock is held)"))
                continue
            report.freed_bytes += _size([entry], seen, kept_inodes)
            if not dry_run:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            report.removed.append(entry)
    return report


def collect_exclusive(workspace: Path, gc_lock: Path, *, registered: set[str], dry_run: bool) -> GcReport:
    """`collect` while no trial runs on the workspace: trials hold `gc_lock` shared (from before
    they make a store entry until their record names it); GcBusy when one does."""
    with try_lock(gc_lock) as taken:
        if not taken:
            raise GcBusy(f"a sweep or trial is running on {workspace}; run gc when it has ended")
        return collect(workspace, registered=registered, dry_run=dry_run)
