"""The end of a sweep, after its parent run is closed: the headline metrics selection derived on
each trial's run, then the sweep report on the parent run. Neither may fail a sweep whose trials,
selection and promotion are done: a problem here is logged as a warning, and `enginesweep report`
can write the report again later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginesweep.evaluation.selection import Selection
from enginesweep.evaluation.tracking import SweepTracker


def report_sweep(
    tracker: SweepTracker,
    parent_id: str,
    trial_runs: dict[str, str],
    selection: Selection,
    workspace: Path,
    logger: Any,
) -> Path | None:
    """Log the headline metrics and write + attach the report; returns the report's HTML path,
    or None when it could not be written (the warning says why)."""
    try:
        tracker.log_headline_metrics(trial_runs, selection.rows)
    except Exception as exc:
        logger.warning(f"headline metrics not logged: {type(exc).__name__}: {exc}")
    try:
        from enginesweep.evaluation.reports.sweep_report import report_sweep_run

        files = report_sweep_run(tracker.client, parent_id, workspace=workspace)
    except Exception as exc:
        logger.warning(
            f"sweep report not written: {type(exc).__name__}: {exc} "
            f"(enginesweep report SPEC {parent_id} retries)"
        )
        return None
    logger.info(f"sweep report: {files.html} (and on run {parent_id} under report/)")
    return files.html
