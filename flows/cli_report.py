"""The `report` verb: the sweep report of one sweep run (`latest` by default), read back from the
spec's MLflow store, written as `report.html`, `report.md` and `figures/*.png` and attached to the
sweep's parent run under `report/`. Every sweep writes its own at the end; this verb rebuilds one
(a report of an older run, into another folder, or after the report code changed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from enginesweep.build_configs.loading import ResolvedSpec, SpecError, load_spec
from enginesweep.flows.cli_common import ConfigArg, SetOpt, _fail, app, out

if TYPE_CHECKING:
    from enginesweep.evaluation.reports.sweep_report import ReportFiles


def _store_uri(resolved: ResolvedSpec, config: str) -> str:
    """The spec's tracking URI; fail (exit 1) when its SQLite store does not exist yet."""
    from enginesweep.flows.sweep_settings import tracking_uri

    uri = tracking_uri(resolved)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # Opening it would create an empty store where the user expected results.
        raise _fail(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: run the sweep first "
            f"(enginesweep run {config})",
            code=1,
        )
    return uri


def _write_report(
    uri: str, resolved: ResolvedSpec, run_id: str, out_dir: Path | None, no_log: bool
) -> tuple[str, ReportFiles]:
    """Resolve `latest` to a run id and write that run's report; the run id and the files."""
    from enginesweep.evaluation.reports.sweep_report import report_sweep_run
    from enginesweep.evaluation.reports.sweep_source import LATEST, latest_sweep_run
    from enginesweep.evaluation.tracking import open_client

    client = open_client(uri)
    spec = resolved.spec
    if run_id == LATEST:
        try:
            run_id = latest_sweep_run(client, spec.tracking.experiment, spec.name)
        except LookupError as exc:
            raise _fail(str(exc), code=1) from None
    try:
        files = report_sweep_run(
            client,
            run_id,
            workspace=spec.workspace.resolve(),
            folder=out_dir.resolve() if out_dir else None,
            log=not no_log,
        )
    except LookupError as exc:
        raise _fail(str(exc)) from None
    return run_id, files


def _print_written(config: str, run_id: str, files: ReportFiles, no_log: bool) -> None:
    """Say where the report went (and that it is attached to the run, unless --no-log)."""
    from enginesweep.evaluation.reports.sweep_report import ARTIFACT_PATH

    out.print(
        f"report of run {run_id}: {files.html}\n  markdown: {files.markdown}\n  figures: "
        f"{len(files.figures)} PNGs in {files.html.parent / 'figures'}",
        highlight=False,
    )
    if not no_log:
        out.print(
            f"attached to the run under {ARTIFACT_PATH}/ (MLflow UI: enginesweep ui {config})",
            highlight=False,
        )


@app.command()
def report(
    config: ConfigArg,
    run_id: Annotated[
        str,
        typer.Argument(
            help="The sweep's parent MLflow run id, or `latest`: the newest run of the spec's sweep."
        ),
    ] = "latest",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the report (default <workspace>/reports/<sweep>/<run id>/)."),
    ] = None,
    no_log: Annotated[
        bool,
        typer.Option(
            "--no-log", help="Only write the files; attach nothing to the run (a store you may only read)."
        ),
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Write the report of one sweep run: trials (feasible, failed, rejected with reasons), the
    champion and why, Pareto plots, latency curves, predicted vs measured, memory and capacity.
    Exit 1 when the spec's store holds no sweep run yet."""
    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    uri = _store_uri(resolved, config)
    run_id, files = _write_report(uri, resolved, run_id, out_dir, no_log)
    _print_written(config, run_id, files, no_log)
