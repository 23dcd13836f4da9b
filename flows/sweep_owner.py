"""Which MLflow parent run a sweep writes into: a new one, or the one a killed run of the same
sweep left RUNNING.

Each sweep process holds an advisory lock on `<workspace>/sweeps/<name>/.owners/<run id>.lock`
while it runs; the kernel drops it when the process dies, SIGKILL included. So a RUNNING parent
run whose lock is free was left by a dead process: a new run of the same spec (same
fingerprint) resumes it, so the run still holds every trial exactly once; one of another spec
is marked KILLED. Only runs started from this host and workspace (the `enginesweep.owner` tag)
are considered: a shared tracking server holds other hosts' live sweeps too. Starts are
serialized by `.owners/.start.lock`, so two sweeps never adopt the same run.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from enginesweep.engines.locks import key_lock, try_lock
from enginesweep.evaluation.tracking import SweepTracker

FINGERPRINT_TAG = "enginesweep.spec_fingerprint"
OWNER_TAG = "enginesweep.owner"


def spec_fingerprint(spec_yaml: str, *, rerun: bool, rebenchmark: bool) -> str:
    """What must be equal for a sweep to resume another's parent run: the resolved spec and
    the reuse flags."""
    return hashlib.sha256(f"{spec_yaml}\nrerun={rerun}\nrebenchmark={rebenchmark}".encode()).hexdigest()[:16]


def own_parent_run(
    tracker: SweepTracker,
    sweep: str,
    owners: Path,
    fingerprint: str,
    start: Callable[[], str],
    held: ExitStack,
    log: Callable[[str], None],
) -> tuple[str, dict[str, list[Any]]]:
    """The parent run id this process now owns (its lock held in `held`), and the child runs it
    already holds by slug (empty for a new run). `start` creates a new parent run."""
    owners.mkdir(parents=True, exist_ok=True)
    me = owner_label(owners)
    with key_lock(owners / ".start.lock", f"another start of sweep {sweep}", log):
        adopted = None
        for run in tracker.unfinished_sweeps(sweep):
            if run.data.tags.get(OWNER_TAG) != me:
                continue  # another host's or workspace's sweep (a shared tracking server)
            run_id = run.info.run_id
            lock = owners / f"{run_id}.lock"
            lock.touch()
            with ExitStack() as probe:
                if not probe.enter_context(try_lock(lock)):
                    continue  # its process is alive: another sweep of this name is running now
                if adopted is None and run.data.tags.get(FINGERPRINT_TAG) == fingerprint:
                    adopted = run_id
                    held.enter_context(probe.pop_all())  # its lock stays held while we run
                    continue
                tracker.client.set_tag(run_id, "enginesweep.status", "killed")
                tracker.client.set_terminated(run_id, status="KILLED")
        if adopted is not None:
            children = tracker.trial_runs_of(adopted)
            log(
                f"resuming parent run {adopted}, left RUNNING by a sweep that was killed "
                f"({len(children)} trial(s) already logged)"
            )
            return adopted, children
        run_id = start()
        held.enter_context(key_lock(owners / f"{run_id}.lock", f"sweep run {run_id}", log))
        return run_id, {}


def owner_label(owners: Path) -> str:
    """Who may resume a parent run: this host and this workspace's owner folder."""
    return f"{socket.gethostname()}:{owners.resolve()}"
