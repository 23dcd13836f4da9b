"""The sweep report: one sweep run's trials, champion, trade-offs, predictions, memory and
capacity, as `report.html` (self-contained, interactive plotly), `report.md` and
`figures/<id>.png` (matplotlib), logged to the sweep's parent MLflow run under `report/`.

Built from what the run logged (`sweep_source.load_sweep_source`): the spec, the plan, the
selection and every trial's record. `build_sweep_report` is pure (source -> `SweepReport`); the
renderers add nothing to it. Measured numbers say on what they were measured and predicted ones by
what, on every table and figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginesweep.engines.files import write_atomic
from enginesweep.evaluation.provenance import measured_label
from enginesweep.evaluation.reports.report_html import render_html
from enginesweep.evaluation.reports.report_markdown import render_markdown
from enginesweep.evaluation.reports.report_model import SweepReport
from enginesweep.evaluation.reports.report_png import render_png
from enginesweep.evaluation.reports.report_sections import (
    capacity_section,
    champion_section,
    latency_section,
    memory_section,
    pareto_section,
    prediction_section,
    summary_section,
    traffic_section,
    trials_section,
)
from enginesweep.evaluation.reports.report_trials import trial_views
from enginesweep.evaluation.reports.sweep_source import SweepSource, load_sweep_source

ARTIFACT_PATH = "report"
"""Where the report lies in the parent run's artifacts."""


def measured_provenance(source: SweepSource) -> str:
    """The label of the run's measured numbers: the selection's hardware, else the records'."""
    if source.selection is not None:
        return measured_label(source.selection.hardware)
    hardware = sorted({record.hardware for record in source.records})
    if not hardware and source.plan is not None and source.plan.sweep_gpu:
        hardware = [source.plan.sweep_gpu]
    return ", ".join(measured_label(h) for h in hardware) or "measured (hardware unknown)"


def build_sweep_report(source: SweepSource) -> SweepReport:
    """Every section of the report, in reading order."""
    views = trial_views(source)
    measured = measured_provenance(source)
    sections = [
        summary_section(source, views, measured),
        traffic_section(views),
        champion_section(source, measured),
        trials_section(source, views, measured),
        pareto_section(source, views, measured),
        latency_section(source, views, measured),
        prediction_section(views, measured),
        memory_section(views),
        capacity_section(source, views, measured),
    ]
    run = f" (run {source.run_id})" if source.run_id else ""
    return SweepReport(
        title=f"Sweep report: {source.sweep}{run}",
        sweep=source.sweep,
        run_id=source.run_id,
        sections=sections,
    )


@dataclass(frozen=True)
class ReportFiles:
    """What `write_sweep_report` wrote."""

    folder: Path
    html: Path
    markdown: Path
    figures: list[Path]


def write_sweep_report(report: SweepReport, folder: Path) -> ReportFiles:
    """`report.html`, `report.md` and `figures/<id>.png` (figures with points) into `folder`.
    PNGs of an earlier report in the same folder are removed first, so none outlives its figure."""
    folder.mkdir(parents=True, exist_ok=True)
    figures_dir = folder / "figures"
    for stale in figures_dir.glob("*.png"):
        stale.unlink()
    pngs = [
        render_png(figure, figures_dir / f"{figure.id}.png") for figure in report.figures if figure.has_points
    ]
    markdown = write_atomic(folder / "report.md", render_markdown(report, figures_dir.name))
    page = write_atomic(folder / "report.html", render_html(report))
    return ReportFiles(folder=folder, html=page, markdown=markdown, figures=pngs)


def log_report(client: Any, run_id: str, files: ReportFiles) -> None:
    """The report's files on the parent run: `report/report.html`, `report/report.md`,
    `report/figures/<id>.png` (only these, whatever else the folder holds)."""
    client.log_artifact(run_id, str(files.html), ARTIFACT_PATH)
    client.log_artifact(run_id, str(files.markdown), ARTIFACT_PATH)
    for png in files.figures:
        client.log_artifact(run_id, str(png), f"{ARTIFACT_PATH}/figures")


def report_folder(workspace: Path, sweep: str, run_id: str) -> Path:
    """The default folder of a run's report: `<workspace>/reports/<sweep>/<run id>/`."""
    return workspace / "reports" / sweep / run_id


def report_sweep_run(
    client: Any, run_id: str, *, workspace: Path, folder: Path | None = None, log: bool = True
) -> ReportFiles:
    """Read parent run `run_id` back from MLflow, write its report into `folder` (default
    `report_folder` under `workspace`) and (`log`) attach it to the run. LookupError when
    `run_id` is not a sweep's parent run."""
    source = load_sweep_source(client, run_id)
    folder = folder or report_folder(workspace, source.sweep, run_id)
    files = write_sweep_report(build_sweep_report(source), folder)
    if log:
        log_report(client, run_id, files)
    return files
