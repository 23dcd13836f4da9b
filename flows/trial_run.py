"""The state one trial's stages share (`TrialRun`), and how a failed trial is recorded: its
record with the error and how far it got, the traceback, and the failed step's log."""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.engines.files import disk_full, release_frames
from enginesweep.engines.progress import StageClock
from enginesweep.engines.stacks import Stack
from enginesweep.engines.store import Workspace
from enginesweep.evaluation.accuracy.trial_accuracy import AccuracyInputs
from enginesweep.evaluation.planning import PlannedTrial
from enginesweep.evaluation.records import TrialRecord


@dataclass
class TrialRun:
    """What the stages of one trial share. `record` grows as they finish, so that a failure's
    record says how far the trial got."""

    resolved: ResolvedSpec
    planned: PlannedTrial
    stack: Stack
    workspace: Workspace
    log: Callable[[str], None]
    record: TrialRecord
    clock: StageClock
    source: tuple[Path, dict[str, Any]] = field(default_factory=lambda: (Path(), {}))
    """The checkpoint's folder and its identity (what the keys hash); set by the prepare stage."""
    corpus: Path = Path()
    include: list[Path] = field(default_factory=list)
    """The accuracy tasks' files (empty when the trial measures no task)."""

    @property
    def trial_dir(self) -> Path:
        return self.workspace.trial_dir(self.resolved.spec.name, self.planned.slug)

    def accuracy_inputs(self) -> AccuracyInputs:
        """What the trial's accuracy is measured from."""
        return AccuracyInputs(
            self.resolved,
            self.source[0],
            self.source[1],
            self.include,
            self.workspace.root,
            self.record.hardware,
        )

    def update(self, **fields: Any) -> None:
        self.record = self.record.model_copy(update=fields)


def record_failure(run: TrialRun, exc: BaseException) -> Exception | None:
    """Save the failed record, the traceback and the failed step's log; returns the WorkspaceFull
    to raise instead of `exc` when the disk filled up."""
    full = disk_full(exc, run.workspace.root)
    trace = traceback.format_exc()
    if full:
        # The failed writer's open file lives on in the traceback's frames and holds the
        # space its removed file had: let it go, so that the logs and record can be written.
        release_frames(exc)
    run.update(
        error=str(full) if full else f"{type(exc).__name__}: {exc}",
        stage_seconds=run.clock.timings,
        executed_stages=run.clock.executed(),
    )
    with suppress(OSError):  # a full disk may refuse even these: the error still propagates
        (run.trial_dir / "error.log").write_text(trace)
        step, log_file = getattr(exc, "step", None), getattr(exc, "log", None)
        if step and log_file and Path(log_file).is_file():  # a failed step's log beside a store entry
            shutil.copyfile(log_file, run.trial_dir / f"{step}.log")
    with suppress(OSError):
        run.record.save(run.trial_dir / "record.json")
    return full
