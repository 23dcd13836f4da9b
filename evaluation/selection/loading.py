"""Reading trial records for selection: explicit files, or every trial of one sweep folder
(`<workspace>/sweeps/<sweep>/<slug>/record.json`, as `flows.trial.run_trial` writes them)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from enginesweep.evaluation.records import TrialRecord

RECORD_FILE = "record.json"


def load_records(paths: Iterable[Path]) -> list[TrialRecord]:
    """Each file validated as a TrialRecord, in the order given."""
    return [TrialRecord.load(Path(path)) for path in paths]


def load_sweep_records(sweep_dir: Path) -> list[TrialRecord]:
    """The record of every trial folder of one sweep, by slug; FileNotFoundError when none."""
    paths = sorted(Path(sweep_dir).glob(f"*/{RECORD_FILE}"))
    if not paths:
        raise FileNotFoundError(
            f"no */{RECORD_FILE} under {sweep_dir}: not a sweep folder, or no trial has run yet"
        )
    return load_records(paths)
