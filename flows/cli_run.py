"""Verbs that run things for real: `setup`, `trial`, `run`, `promote`, `rollback`, `ui`.
Heavy modules (torch, Prefect, MLflow) are imported inside each verb, after the environment
they read at import time has been set."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from enginesweep.build_configs.loading import ResolvedSpec, SpecError, load_spec
from enginesweep.flows.cli_common import ConfigArg, JsonOpt, SetOpt, _fail, app, err, handle_sigterm, out

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from enginesweep.engines.registry import Promotion
    from enginesweep.engines.stacks.base import Stack
    from enginesweep.flows.sweep import SweepOutcome


@app.command()
def setup() -> None:
    """Check the reference stack's components and fetch the text corpus (scripts/setup runs it)."""
    from enginesweep.engines.doctor import check_reference_stack

    checks = check_reference_stack()
    table = Table("component", "status", "detail", title="reference stack on this machine")
    for check in checks:
        table.add_row(check.component, "ok" if check.ok else "[red]missing[/]", escape(check.detail))
    out.print(table)
    if not all(check.ok for check in checks):
        raise _fail("the reference stack is incomplete (see the table)", code=1)


def _preflight_accuracy(resolved: ResolvedSpec, stacks: list[Stack]) -> None:
    """Unknown accuracy tasks or task paths are bad input: refused before any trial runs."""
    # Every stack scores the tasks its own way (`Stack.accuracy_mode`), so any stack needs them.
    if not stacks or not resolved.spec.accuracy.tasks:
        return
    from enginesweep.engines import textdata
    from enginesweep.evaluation.accuracy.harness import TaskError
    from enginesweep.evaluation.accuracy.variant import preflight_tasks

    try:
        preflight_tasks(
            resolved.spec.accuracy, resolved.spec.workspace.resolve(), textdata.corpus_path(download=False)
        )
    except TaskError as exc:
        raise _fail(str(exc)) from None


@app.command()
def trial(
    config: ConfigArg,
    slug: Annotated[str, typer.Option(help="The trial's slug (see `plan`).")],
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run ONE trial for real (quantize, build, serve, benchmark, accuracy) without Prefect or
    MLflow, and print its record: the tool for debugging one engine."""
    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    _quiet_libraries()
    from enginesweep.engines.stacks import StackUnavailable, get_stack
    from enginesweep.evaluation.reports.trial_tables import trial_table
    from enginesweep.flows.preflight import PreflightError, check_workspace
    from enginesweep.flows.trial import run_trial  # heavy imports only for this verb
    from enginesweep.flows.trial_inputs import TrialError

    try:
        check_workspace(resolved.spec.workspace.resolve())
        _preflight_accuracy(resolved, [get_stack(s.value, resolved.spec) for s in resolved.spec.stack])
    except StackUnavailable as exc:
        raise _fail(f"stack: {exc}") from None
    except PreflightError as exc:
        raise _fail(str(exc)) from None
    handle_sigterm()  # a scheduler's or `kill`'s SIGTERM unwinds like Ctrl-C
    log = (
        (lambda line: err.print(line, highlight=False, markup=False))
        if json_
        else (lambda line: out.print(line, highlight=False, markup=False))
    )
    # With --json, stdout carries the record alone: what libraries print while the trial runs
    # (ModelOpt announces its quantizers there) goes to stderr with the log.
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if json_ else contextlib.nullcontext()
    try:
        with quiet_stdout:
            record = run_trial(resolved, slug, log=log)
    except TrialError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted: every server and load generator was stopped")
        raise typer.Exit(130) from None
    except Exception as exc:
        raise _fail(f"trial {slug} failed: {type(exc).__name__}: {exc}", code=1) from None
    if json_:
        sys.stdout.write(record.model_dump_json(indent=2) + "\n")
    else:
        out.print(trial_table(record))


def _resolve_runnable(config: str, set_: list[str] | None) -> tuple[ResolvedSpec, list[Stack]]:
    """The spec and its stacks, once every check that can refuse before a trial starts passed."""
    try:
        resolved = load_spec(config, set_ or [])
        resolved.gpu  # noqa: B018 - several target GPUs and no run_on: refuse before starting
    except SpecError as exc:
        raise _fail(str(exc)) from None
    from enginesweep.engines.stacks import StackUnavailable, get_stack

    try:
        # Refuse before any trial starts.
        stacks = [get_stack(s.value, resolved.spec) for s in resolved.spec.stack]
    except StackUnavailable as exc:
        raise _fail(f"stack: {exc}") from None
    from enginesweep.engines.trtllm.layout import LayoutError
    from enginesweep.flows.preflight import PreflightError, check_stack_files, preflight

    try:
        preflight(resolved)
        check_stack_files(resolved, stacks)
    except (PreflightError, LayoutError) as exc:
        raise _fail(str(exc)) from None
    _preflight_accuracy(resolved, stacks)
    return resolved, stacks


def _run_sweep(
    config: str, set_: list[str] | None, resolved: ResolvedSpec, *, rerun: bool, rebenchmark: bool
) -> SweepOutcome:
    """Start Prefect's local API and run the sweep flow with live progress; Ctrl-C exits 130."""
    from enginesweep.flows.prefect_env import configure_prefect, start_ephemeral_api

    configure_prefect(resolved.spec.workspace)
    _quiet_libraries()
    handle_sigterm()
    start_ephemeral_api(resolved.spec.workspace)
    from enginesweep.flows.progress_view import SweepProgress
    from enginesweep.flows.sweep import sweep_flow

    try:
        # Live table on a terminal, one plain line per event in a log.
        with SweepProgress(out, warn=lambda message: err.print(message, markup=False, highlight=False)):
            return sweep_flow(config, set_ or [], rerun=rerun, rebenchmark=rebenchmark)
    except KeyboardInterrupt:
        err.print("interrupted: every server and load generator was stopped")
        raise typer.Exit(130) from None


def _print_sweep_outcome(config: str, resolved: ResolvedSpec, outcome: SweepOutcome) -> None:
    """The selection, the champion (or why none) and where MLflow keeps the run."""
    from enginesweep.evaluation.selection.render import selection_table

    out.print(selection_table(outcome.selection))
    if outcome.promoted_version:
        out.print(
            f"champion: {outcome.selection.champion} -> {outcome.registered_model} version "
            f"{outcome.promoted_version} (alias '{resolved.spec.registry.alias}')",
            highlight=False,
        )
    else:
        out.print(f"no champion: {outcome.selection.champion_reason}", highlight=False)
    out.print(
        f"MLflow: {outcome.tracking_uri}, experiment '{outcome.experiment}', run "
        f"{outcome.parent_run_id}\nopen the UI: enginesweep ui {config}",
        highlight=False,
    )


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    rebenchmark: Annotated[
        bool,
        typer.Option(
            "--rebenchmark", help="Benchmark unchanged trials again (their bundles and accuracy are kept)."
        ),
    ] = False,
    rerun: Annotated[
        bool,
        typer.Option("--rerun", help="Run every trial again, reusing nothing but quantized checkpoints."),
    ] = False,
) -> None:
    """Run the whole sweep as a Prefect flow: every feasible trial, MLflow tracking, selection
    under the SLA, promotion of the champion. Trials whose inputs are unchanged since a
    successful run are reused, not run again. Exit 0 complete, 3 partial (a trial failed)."""
    resolved, _ = _resolve_runnable(config, set_)
    outcome = _run_sweep(config, set_, resolved, rerun=rerun, rebenchmark=rebenchmark)
    _print_sweep_outcome(config, resolved, outcome)
    if outcome.status != "complete":
        err.print(f"sweep {outcome.status}: see the FAILED trial runs")
        raise typer.Exit(3)


def _registry_client(config: str, set_: list[str] | None) -> tuple[ResolvedSpec, MlflowClient, str]:
    """The spec, an MLflow client of its tracking store and its registered model's name."""
    resolved = load_spec(config, set_ or [])
    from enginesweep.evaluation.tracking import open_client
    from enginesweep.flows.sweep_settings import registered_model_name, tracking_uri

    return resolved, open_client(tracking_uri(resolved)), registered_model_name(resolved)


def _trial_bundle(client: MlflowClient, run_id: str) -> str:
    """The engine bundle folder of trial run `run_id`; fail when the run is unreadable or not a trial."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise _fail(f"run {run_id}: the tracking store cannot be read: {exc}", code=1) from None
        raise _fail(
            f"run {run_id}: not found in the spec's tracking store; `enginesweep ui` lists the runs"
        ) from None
    bundle = run.data.params.get("bundle_dir")
    if not bundle:
        raise _fail(f"run {run_id} has no bundle_dir param: is it an enginesweep trial run?")
    return bundle


def _promotion_tags(run_id: str, objections: list[str], force: bool) -> dict[str, str]:
    """The version's tags; refuse a trial with objections unless `force` (then they are tagged)."""
    tags = {"promoted_by": "hand"}
    if objections and not force:
        raise _fail(
            f"run {run_id} is not fit to promote: "
            + "; ".join(objections)
            + ". Pass --force to promote it anyway (recorded on the model version)."
        )
    if objections:
        tags.update({"forced": "true", "forced_over": "; ".join(objections)[:5000]})
    return tags


def _register(
    client: MlflowClient,
    name: str,
    run_id: str,
    bundle: str,
    resolved: ResolvedSpec,
    tags: dict[str, str],
    force: bool,
) -> Promotion:
    """Register the bundle as a version of `name` and point the spec's alias at it."""
    from enginesweep.engines.manifest import ManifestError
    from enginesweep.engines.registry import PromotionError
    from enginesweep.engines.registry import promote as promote_bundle

    try:
        return promote_bundle(
            client,
            model_name=name,
            run_id=run_id,
            bundle_dir=Path(bundle),
            alias=resolved.spec.registry.alias,
            tags=tags,
            allow_unfinished=force,
        )
    except (PromotionError, ManifestError) as exc:
        raise _fail(str(exc), code=1) from None


@app.command()
def promote(
    config: ConfigArg,
    run_id: Annotated[str, typer.Argument(help="The trial's MLflow run id.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote a failed or SLA-violating trial anyway; the version and the "
            "run are tagged with what was overridden.",
        ),
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Promote one trial's engine by hand: register it and point the spec's alias at it. A trial
    that failed, or misses the spec's SLA or accuracy gate, is refused unless --force."""
    from enginesweep.flows.prefect_env import configure_prefect

    try:
        resolved, client, name = _registry_client(config, set_)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    configure_prefect(resolved.spec.workspace)
    bundle = _trial_bundle(client, run_id)
    objections = _promotion_objections(client, run_id, resolved)
    tags = _promotion_tags(run_id, objections, force)
    done = _register(client, name, run_id, bundle, resolved, tags, force)
    if not done.registered:
        out.print(
            f"{name} version {done.version} is already '{done.alias}' (the same engine): nothing changed",
            highlight=False,
        )
        return
    overridden = "; ".join(objections)[:5000]
    if objections:  # recorded on the run only once the promotion happened
        client.set_tag(run_id, "enginesweep.forced_promotion", overridden)
    forced = f" (forced over: {overridden})" if objections else ""
    out.print(
        f"{name} version {done.version} is now '{done.alias}' (previous: {done.previous_version})" + forced,
        highlight=False,
    )


def _promotion_objections(client, run_id: str, resolved) -> list[str]:
    """Why the trial of `run_id` should not be promoted under the spec's SLA (empty when it may):
    it failed, was never benchmarked, misses the latency SLA or the accuracy gate."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from enginesweep.evaluation.records import TrialRecord
    from enginesweep.evaluation.selection.choose import judge_trial

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file
    with tempfile.TemporaryDirectory(prefix="enginesweep-promote-") as scratch:
        try:
            record = TrialRecord.load(Path(client.download_artifacts(run_id, "record.json", scratch)))
        except (MlflowException, OSError, ValueError) as exc:  # ValueError: pydantic's too
            return [f"its record.json cannot be read ({str(exc)[:300]}), so it cannot be judged"]
    row = judge_trial(record, resolved.spec.sla, resolved.usd_per_gpu_hour)
    return list(row.reasons)


@app.command()
def rollback(config: ConfigArg, set_: SetOpt = None) -> None:
    """Point the alias back at the previous champion."""
    from enginesweep.engines.registry import PromotionError
    from enginesweep.engines.registry import rollback as rollback_alias

    try:
        resolved, client, name = _registry_client(config, set_)
        done = rollback_alias(client, model_name=name, alias=resolved.spec.registry.alias)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    except PromotionError as exc:
        raise _fail(str(exc), code=1) from None
    out.print(f"{name}: '{done.alias}' -> version {done.version} (was {done.previous_version})")


def _runs_link(uri: str, experiment: str, port: int) -> str:
    """The page of the experiment's runs in MLflow's model-training view (its UI's `workflowType`
    parameter; without it, MLflow 3.17 opens every experiment on an empty GenAI overview), or the
    experiment list in that view before the first sweep made the experiment."""
    from enginesweep.evaluation.tracking import open_client

    base = f"http://127.0.0.1:{port}/#/experiments"
    found = open_client(uri).get_experiment_by_name(experiment)
    where = f"/{found.experiment_id}/runs" if found is not None else ""
    return f"{base}{where}?workflowType=machine_learning"


def _print_where(uri: str, experiment: str, port: int) -> None:
    """The UI's address, the link to the sweep's runs and how MLflow's view switch works."""
    out.print(
        f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C stops it)", highlight=False, soft_wrap=True
    )
    out.print(
        f"  the sweep's runs: {_runs_link(uri, experiment, port)}",
        highlight=False,
        soft_wrap=True,  # a link must stay on one line, in a log file too
    )
    out.print(
        "  MLflow opens an experiment in its GenAI view (traces) unless the switch at the top of its "
        "sidebar says 'Model training': choose it once in your browser, then a click on the "
        "experiment shows its runs",
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()  # the link must reach a log file now, not when the server exits


@app.command()
def ui(
    config: ConfigArg,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    set_: SetOpt = None,
) -> None:
    """Start the MLflow UI for a spec's tracking store on 127.0.0.1 (Ctrl-C stops it)."""
    import subprocess

    from enginesweep.engines.processes import stop_process_group

    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    from enginesweep.flows.sweep_settings import tracking_uri

    _check_port_free(port)
    uri = tracking_uri(resolved)
    _print_where(uri, resolved.spec.tracking.experiment, port)
    # Job execution off: with it on, `mlflow server` can leave orphaned consumer processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).parent / "mlflow"
    handle_sigterm()
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            uri,
        ],
        env=env,
        start_new_session=True,
    )
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        stop_process_group(server)  # its gunicorn/uvicorn workers too
    raise typer.Exit(code)


def _check_port_free(port: int) -> None:
    """Refuse a port something already listens on (the server would die with a less clear error)."""
    import socket

    with socket.socket() as sock:
        # As the server will: old connections in TIME_WAIT must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise _fail(
                f"--port: {port} on 127.0.0.1 cannot be used ({exc.strerror}); pick another with --port"
            ) from None


def _quiet_libraries() -> None:
    """Keep the trial's own progress lines readable: no per-tensor progress bars from
    transformers and no ModelOpt plugin-import warnings (the record and logs keep the facts)."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module=r"modelopt(\.|$)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
