"""Verbs that put a sweep on a schedule: `schedule` serves it from this process, `deploy`
registers it on a Prefect server for a work pool's workers. Both run `flows.scheduled`'s flow:
each run re-runs only what changed and watches the champion (the spec's `watch:` section).

Prefect is imported only after PREFECT_HOME and PREFECT_API_URL are set: it reads them then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from enginesweep.build_configs.loading import SpecError, load_spec
from enginesweep.flows.cli_common import ConfigArg, SetOpt, _fail, app, err, handle_sigterm, out

CronOpt = Annotated[
    str | None,
    typer.Option("--cron", help='When to run, as a cron expression (e.g. "0 3 * * *": daily at 03:00 UTC).'),
]
IntervalOpt = Annotated[
    float | None,
    typer.Option("--interval", min=1, help="Or: seconds between runs (short schedules, tests)."),
]


def _one_schedule(cron: str | None, interval: float | None) -> None:
    if (cron is None) == (interval is None):
        raise _fail("give exactly one of --cron or --interval")


def _check_cron(cron: str | None) -> None:
    """Prefect's own check of a cron string (needs PREFECT_* set: it imports Prefect)."""
    if cron is None:
        return
    from prefect._internal.schemas.validators import validate_cron_string

    try:
        validate_cron_string(cron)
    except ValueError as exc:
        raise _fail(
            f'--cron: {exc}; give five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"'
        ) from None


def _load(config: str, set_: list[str] | None):
    """The resolved spec; an invalid one is refused with every problem."""
    try:
        resolved = load_spec(config, set_ or [])
        resolved.gpu  # noqa: B018 - several target GPUs and no run_on: refuse before starting
    except SpecError as exc:
        raise _fail(str(exc)) from None
    return resolved


def _check_runnable(resolved) -> None:
    """Refuse, before anything starts, a spec whose stack, workspace, tracking store or
    accuracy tasks cannot work here (as `enginesweep run` does)."""
    from enginesweep.engines.stacks import StackUnavailable, get_stack
    from enginesweep.flows.cli_run import _preflight_accuracy
    from enginesweep.flows.preflight import PreflightError, preflight

    try:
        stacks = [get_stack(s.value, resolved.spec) for s in resolved.spec.stack]
        preflight(resolved)
    except StackUnavailable as exc:
        raise _fail(f"stack: {exc}") from None
    except PreflightError as exc:
        raise _fail(str(exc)) from None
    _preflight_accuracy(resolved, stacks)


def _config_for_runs(config: str) -> str:
    """A spec path made absolute (runs may start in another folder); a shipped name as is."""
    path = Path(config)
    return str(path.resolve()) if path.exists() else config


def _absolute_workspace(resolved) -> str:
    """A `--set` override naming the spec's workspace as an absolute path, resolved here: a
    process worker runs each flow run in a temporary folder it deletes afterwards, so a relative
    workspace (the default) would be made, and lost, there on every run."""
    return f"workspace={json.dumps(str(resolved.spec.workspace.resolve()))}"  # quoted: any path


def _deployment_kwargs(
    resolved,
    config: str,
    set_: list[str] | None,
    cron: str | None,
    interval: float | None,
    extra: Sequence[str] = (),
) -> dict:
    """What `serve` and `to_deployment` share: name, schedule, parameters (`extra`: overrides
    after the user's), one run at a time (a run due while another is running is cancelled, not
    queued: the next one catches up)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.flows import EntrypointType

    return dict(
        name=resolved.spec.name,
        cron=cron,
        interval=interval,
        parameters={"config": _config_for_runs(config), "overrides": [*(set_ or []), *extra]},
        description=f"enginesweep scheduled sweep of {resolved.spec.name}",
        tags=["enginesweep"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        limit_config=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
    )


@app.command()
def schedule(
    config: ConfigArg, cron: CronOpt = None, interval: IntervalOpt = None, set_: SetOpt = None
) -> None:
    """Run the sweep on a schedule, served from this process until Ctrl-C or SIGTERM.

    Each run re-runs only what changed: with the model revision, runtime and spec unchanged it
    only re-benchmarks the champion (drift check); the champion watch's verdict goes to MLflow.
    Without PREFECT_API_URL a Prefect server is started on 127.0.0.1 (the workspace's
    database) and stopped with it."""
    _one_schedule(cron, interval)
    resolved = _load(config, set_)
    from enginesweep.flows.cli_run import _quiet_libraries
    from enginesweep.flows.prefect_env import configure_prefect
    from enginesweep.flows.prefect_server import PrefectServer, PrefectServerError

    configure_prefect(resolved.spec.workspace)
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = PrefectServer(Path(os.environ["PREFECT_HOME"]))
        os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect is imported: it reads it then
    _check_cron(cron)
    _check_runnable(resolved)
    _quiet_libraries()
    handle_sigterm()  # until the Runner installs its own: a stop while starting unwinds cleanly
    try:
        if server is not None:
            out.print(
                f"starting a Prefect server at {server.api_url} (log: {server.log_path})", highlight=False
            )
            server.start()
        _serve(resolved, config, set_, cron, interval)
    except PrefectServerError as exc:
        raise _fail(str(exc), code=1) from None
    except KeyboardInterrupt:
        pass  # a stop asked for (SIGTERM, Ctrl-C) is how serving ends: exit 0 once cleaned up
    finally:
        if server is not None:
            server.stop()
    stopped = ", the Prefect server stopped" if server is not None else ""
    err.print(f"schedule stopped: a run in progress was cancelled{stopped}", highlight=False)


def _serve(resolved, config: str, set_: list[str] | None, cron: str | None, interval: float | None) -> None:
    """`flow.serve` of the scheduled sweep; returns once the Runner has stopped (SIGTERM,
    Ctrl-C), its flow runs cancelled and their processes ended."""
    from enginesweep.flows.scheduled import scheduled_sweep_flow

    kwargs = _deployment_kwargs(resolved, config, set_, cron, interval)
    when = f"cron '{cron}'" if cron else f"every {interval:g} s"
    out.print(
        f"serving '{scheduled_sweep_flow.name}/{kwargs['name']}' ({when}); SIGTERM or Ctrl-C stops it",
        highlight=False,
    )
    scheduled_sweep_flow.serve(
        global_limit=kwargs.pop("limit_config"),
        pause_on_shutdown=True,
        print_starting_message=False,
        **kwargs,
    )


@app.command()
def deploy(
    config: ConfigArg,
    pool: Annotated[
        str,
        typer.Option(
            "--pool",
            help="The work pool whose workers run it (prefect work-pool create NAME --type process).",
        ),
    ],
    cron: CronOpt = None,
    interval: IntervalOpt = None,
    set_: SetOpt = None,
) -> None:
    """Register the scheduled sweep on a Prefect server (PREFECT_API_URL) for a work pool.

    The pool's workers (`prefect worker start --pool POOL`) need enginesweep installed and the
    spec's workspace at the same path: the deployment names it as an absolute path, resolved
    here (a worker runs each flow run in a temporary folder). prefect.yaml at the repository root
    is the same deployment for `prefect deploy`."""
    _one_schedule(cron, interval)
    if not os.environ.get("PREFECT_API_URL"):
        raise _fail(
            "deploy needs a Prefect server: export PREFECT_API_URL=http://HOST:4200/api "
            "(`prefect server start`); or serve the schedule from this machine with "
            "`enginesweep schedule`"
        )
    resolved = _load(config, set_)
    from enginesweep.flows.prefect_env import configure_prefect

    configure_prefect(resolved.spec.workspace)
    _check_cron(cron)
    # No stack or workspace check here: those must hold on the workers (a GPU stack is deployed
    # from a machine without one); a run where they do not fails its trials with the reason.
    from enginesweep.flows.scheduled import scheduled_sweep_flow

    kwargs = _deployment_kwargs(resolved, config, set_, cron, interval, extra=[_absolute_workspace(resolved)])
    deployment = scheduled_sweep_flow.to_deployment(
        concurrency_limit=kwargs.pop("limit_config"), work_pool_name=pool, **kwargs
    )
    api = os.environ["PREFECT_API_URL"]
    try:
        deployment_id = deployment.apply()
    except Exception as exc:
        if f'work pool "{pool.lower()}" not found' in str(exc).lower():
            raise _fail(
                f"--pool: no work pool '{pool}' on {api}; create it: prefect work-pool "
                f"create {pool} --type process"
            ) from None
        raise _fail(
            f"the deployment could not be registered on the Prefect server at {api}: "
            f"{type(exc).__name__}: {exc}",
            code=1,
        ) from None
    out.print(
        f"deployment '{scheduled_sweep_flow.name}/{kwargs['name']}' ({deployment_id}) on "
        f"work pool '{pool}'; start a worker: prefect worker start --pool {pool}",
        highlight=False,
    )
