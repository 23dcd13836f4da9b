"""What a sweep report is built from, read back from MLflow: the parent run's artifacts (`spec.yaml`
and `plan.json` from `SweepTracker.start_sweep`, `selection.json` from `finish_sweep`) and each
child run's `record.json`.

MLflow, not the workspace, because the report belongs to one sweep *run*: a later sweep of the
same spec rewrites `<workspace>/sweeps/<name>/<slug>/record.json`, while a run's artifacts stay as
they were; and a team's store may be a tracking server whose workspace is on another machine.
Whatever cannot be read is listed in `problems` (the report says so) instead of failing the report:
a sweep that failed before selecting has no `selection.json`, and its report still shows the rest.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from enginesweep.build_configs.schema import SweepSpec
from enginesweep.evaluation.planning import Plan
from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.selection.models import Selection

LATEST = "latest"


class SweepSource(BaseModel):
    """One sweep run's inputs to its report; None where an artifact is missing or unreadable."""

    model_config = ConfigDict(extra="forbid")

    sweep: str
    run_id: str | None = None
    run_status: str | None = None
    outcome: str | None = None
    started: str | None = None
    spec: SweepSpec | None = None
    plan: Plan | None = None
    selection: Selection | None = None
    records: list[TrialRecord] = []
    problems: list[str] = []


def latest_sweep_run(client: Any, experiment: str, sweep: str) -> str:
    """The id of the newest parent run of `sweep` in `experiment` (running or not); LookupError
    when there is none."""
    if "'" in sweep or "\\" in sweep:  # spec names are slug-safe; this one would break the filter
        raise LookupError(f"sweep name {sweep!r} holds a quote or backslash: not a sweep name")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment named '{experiment}': run the sweep first")
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.`enginesweep.kind` = 'sweep' AND tags.`enginesweep.sweep` = '{sweep}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError(f"no sweep run of '{sweep}' in experiment '{experiment}': run the sweep first")
    return runs[0].info.run_id


def _download(client: Any, run_id: str, path: str, scratch: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, str(scratch)))
    except (MlflowException, OSError):
        return None


def _read(problems: list[str], what: str, path: Path | None, parse):
    if path is None or not path.is_file():
        problems.append(f"{what} was not logged")
        return None
    try:
        return parse(path.read_text())
    except (ValidationError, ValueError, yaml.YAMLError) as exc:  # a file of an older schema
        problems.append(f"{what} could not be read: {str(exc).splitlines()[0][:300]}")
        return None


def load_sweep_source(client: Any, run_id: str) -> SweepSource:
    """Everything the report of parent run `run_id` needs; LookupError when the run does not
    exist or is not an enginesweep sweep run."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise LookupError(f"run {run_id}: not found in the tracking store ({str(exc)[:200]})") from None
    tags = run.data.tags
    if tags.get("enginesweep.kind") != "sweep":
        raise LookupError(
            f"run {run_id} is not a sweep's parent run (tag enginesweep.kind is "
            f"{tags.get('enginesweep.kind', 'unset')!r})"
        )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="enginesweep-report-") as scratch:
        root = Path(scratch)
        spec = _read(
            problems,
            "spec.yaml",
            _download(client, run_id, "spec.yaml", root),
            lambda text: SweepSpec.model_validate(yaml.safe_load(text)),
        )
        plan = _read(
            problems, "plan.json", _download(client, run_id, "plan.json", root), Plan.model_validate_json
        )
        selection = _read(
            problems,
            "selection.json",
            _download(client, run_id, "selection.json", root),
            Selection.model_validate_json,
        )
        records = []
        children = client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10_000
        )
        for child in children:
            slug = child.data.tags.get("enginesweep.slug", child.info.run_name)
            folder = root / "trials" / child.info.run_id
            folder.mkdir(parents=True)
            record = _read(
                problems,
                f"record.json of trial {slug} (run {child.info.run_id})",
                _download(client, child.info.run_id, "record.json", folder),
                TrialRecord.model_validate_json,
            )
            if record is not None:
                records.append(record)
    order = {trial.slug: i for i, trial in enumerate(plan.trials)} if plan else {}
    records.sort(key=lambda r: (order.get(r.slug, len(order)), r.slug))
    started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
    return SweepSource(
        sweep=tags.get("enginesweep.sweep", run.info.run_name),
        run_id=run_id,
        run_status=run.info.status,
        outcome=tags.get("enginesweep.status"),
        started=started.isoformat(timespec="seconds"),
        spec=spec,
        plan=plan,
        selection=selection,
        records=records,
        problems=problems,
    )
