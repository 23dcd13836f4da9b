"""The main job: one Prefect flow per sweep.

plan -> fetch -> every trial to run (feasible, not pruned by `planner.top_k`, on the GPU the
sweep runs on) (quantize -> build -> serve + benchmark -> accuracy) ->
select -> promote -> report (headline metrics on each trial's run, the sweep report on the parent
run). Each task is a few lines around a library function (`flows.trial`,
`evaluation.selection`, `evaluation.tracking`, `engines.registry`). `reference` trials run one at
a time in this process (on the CPU); GPU trials run concurrently, each in its own process on GPUs
lent by the allocator (`flows.gpu_trials`), on this machine or a Dask cluster. Trials share
quantized checkpoints. A failing trial is recorded (FAILED child run, reason, logs) and
the sweep goes on; the outcome says `partial` then. Call `configure_prefect` before importing.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from enginesweep.build_configs.loading import ResolvedSpec, load_spec
from enginesweep.build_configs.schema import Stack
from enginesweep.engines import progress
from enginesweep.engines.interrupts import raise_if_stopped, request_stop
from enginesweep.engines.progress import ProgressEvent
from enginesweep.engines.registry import Promotion, promote
from enginesweep.evaluation.planning import Plan, PlannedTrial, expand
from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.reports.plan_tables import plan_report_text
from enginesweep.evaluation.selection import Selection, select
from enginesweep.evaluation.selection.models import CapacityCheck
from enginesweep.evaluation.selection.render import selection_table_text
from enginesweep.evaluation.tracking import SweepTracker
from enginesweep.flows.capacity_check import verify_capacity
from enginesweep.flows.gpu_trials import (
    check_cluster,
    check_gpus,
    failed_record,
    gpu_request,
    run_on_gpus,
    task_runner,
    trials_at_once,
)
from enginesweep.flows.sweep_owner import (
    FINGERPRINT_TAG,
    OWNER_TAG,
    own_parent_run,
    owner_label,
    spec_fingerprint,
)
from enginesweep.flows.sweep_reporting import report_sweep
from enginesweep.flows.sweep_settings import registered_model_name, tracking_uri
from enginesweep.flows.trial import run_trial
from enginesweep.flows.trial_inputs import checkpoint_source

# Inputs are specs and records, not hashable data: no task caching until the content-addressed
# store lands (the reliability issue).
_task = task(cache_policy=NO_CACHE)


class SweepOutcome(BaseModel):
    """What one sweep did, for the CLI and for tests."""

    model_config = ConfigDict(extra="forbid")

    sweep: str
    status: str  # complete | partial (a failure of the flow itself raises)
    tracking_uri: str
    experiment: str
    parent_run_id: str
    trial_runs: dict[str, str]
    records: list[TrialRecord]
    selection: Selection
    promoted_version: str | None
    registered_model: str | None


@_task
def plan_task(resolved: ResolvedSpec) -> Plan:
    return expand(resolved)


@_task
def fetch_task(resolved: ResolvedSpec) -> tuple[Path, dict]:
    logger = get_run_logger()
    return checkpoint_source(resolved, resolved.spec.workspace.resolve(), logger.info)


@_task(task_run_name="trial-{slug}")
def trial_task(
    resolved: ResolvedSpec,
    slug: str,
    checkpoint: tuple[Path, dict],
    planned: PlannedTrial,
    reuse: bool = True,
    rebenchmark: bool = False,
    cwd: str = ".",
    stop_file: str = "",
) -> TrialRecord:
    logger = get_run_logger()
    started = time.time()
    try:
        if planned.stack == Stack.REFERENCE.value:  # on the CPU, in this process
            return run_trial(
                resolved,
                slug,
                log=logger.info,
                checkpoint=checkpoint,
                planned=planned,
                reuse=reuse,
                rebenchmark=rebenchmark,
            )
        return run_on_gpus(
            resolved,
            planned,
            checkpoint,
            reuse=reuse,
            rebenchmark=rebenchmark,
            cwd=cwd,
            stop_file=stop_file,
            log=logger.info,
        )
    except Exception as exc:
        logger.error(f"trial {slug} failed: {type(exc).__name__}: {exc}")
        path = resolved.spec.workspace.resolve() / "sweeps" / resolved.spec.name / slug / "record.json"
        if path.is_file() and path.stat().st_mtime >= started:
            return TrialRecord.load(path)
        # It failed before recording anything: an older record is not this run's answer.
        record = failed_record(resolved, planned, f"{type(exc).__name__}: {exc}")
        record.save(path)
        return record


@_task
def track_trial_task(
    tracker: SweepTracker, parent_id: str, record: TrialRecord, resolved: ResolvedSpec, existing: list
) -> str:
    trial_dir = resolved.spec.workspace.resolve() / "sweeps" / resolved.spec.name / record.slug
    return tracker.log_trial_once(parent_id, record, trial_dir, existing)


@_task
def select_task(records: list[TrialRecord], resolved: ResolvedSpec) -> Selection:
    # The hardware the trials were measured on: records from anywhere else are refused.
    return select(
        records,
        resolved.spec.sla,
        usd_per_gpu_hour=resolved.usd_per_gpu_hour,
        target_request_rate=resolved.spec.planner.target_request_rate,
        hardware=resolved.hardware,
    )


@_task
@_task
def capacity_task(resolved: ResolvedSpec, selection: Selection, records: list[TrialRecord]) -> Selection:
    """The champion's capacity plan replayed (`flows.capacity_check`), its verdict added to the
    selection; a check that could not run says why and never fails the sweep."""
    plan = selection.capacity
    if plan is None or not resolved.spec.planner.verify_capacity:
        return selection
    logger = get_run_logger()
    champion = next(r for r in records if r.slug == plan.slug)
    try:
        check = verify_capacity(resolved, champion, plan, logger.info)
    except Exception as exc:  # the selection stands; the report says the check failed and why
        check = CapacityCheck(
            slug=plan.slug,
            per_replica_rate=plan.target_request_rate / plan.replicas,
            ran=False,
            verdict=f"not measured: the replay failed: {' '.join(str(exc).split())[:600]}",
        )
    logger.info(f"capacity check: {check.verdict}")
    return selection.model_copy(update={"capacity_check": check})


def promote_task(
    tracker: SweepTracker,
    resolved: ResolvedSpec,
    selection: Selection,
    trial_runs: dict[str, str],
    records: list[TrialRecord],
) -> Promotion:
    champion = next(r for r in records if r.slug == selection.champion)
    row = next(r for r in selection.rows if r.slug == selection.champion)
    tags = {
        "sweep": resolved.spec.name,
        "hardware": champion.hardware,
        "usd_per_1m_output_tokens": f"{row.usd_per_1m_output_tokens:.6g}",
        "operating_concurrency": str(row.operating_concurrency),
        "operating_point": row.operating_level or f"c={row.operating_concurrency}",
    }
    return promote(
        tracker.client,
        model_name=registered_model_name(resolved),
        run_id=trial_runs[champion.slug],
        bundle_dir=Path(champion.bundle_dir),
        alias=resolved.spec.registry.alias,
        tags=tags,
    )


@flow(name="enginesweep", flow_run_name="{config}", log_prints=True)
def sweep_flow(
    config: str,
    overrides: list[str] | None = None,
    rerun: bool = False,
    rebenchmark: bool = False,
    only: list[str] | None = None,
    promote: bool = True,
) -> SweepOutcome:
    """Run every feasible trial of a spec, track them in MLflow, select and promote.

    A trial whose inputs are unchanged since a successful run (same `trial_key`, bundle still
    verifying) is not run again: its record is reused (`rebenchmark`: its bundle and accuracy
    are, the benchmark runs again; `rerun`: nothing is reused). `only` restricts the sweep to
    these slugs (a drift check re-benchmarks the champion alone); `promote=False` selects without
    promoting."""
    resolved = load_spec(config, overrides or [])
    spec = resolved.spec
    workspace = spec.workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    plan = plan_task(resolved)
    tracker = SweepTracker(
        tracking_uri(resolved), spec.tracking.experiment, artifact_root=workspace / "mlruns"
    )
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    fingerprint = spec_fingerprint(spec_yaml, rerun=rerun, rebenchmark=rebenchmark)
    with ExitStack() as held:  # the lock that says this process owns its parent run
        owners = workspace / "sweeps" / spec.name / ".owners"
        parent_id, logged = own_parent_run(
            tracker,
            spec.name,
            owners,
            fingerprint,
            lambda: tracker.start_sweep(
                spec.name,
                spec_yaml=spec_yaml,
                plan_json=plan.model_dump_json(indent=2),
                params=_sweep_params(resolved, plan),
                tags={FINGERPRINT_TAG: fingerprint, OWNER_TAG: owner_label(owners)},
            ),
            held,
            get_run_logger().info,
        )
        return _sweep(
            resolved,
            plan,
            tracker,
            parent_id,
            logged,
            rerun=rerun,
            rebenchmark=rebenchmark,
            only=only,
            promote=promote,
        )


def _sweep_params(resolved: ResolvedSpec, plan: Plan) -> dict[str, object]:
    """The parent run's parameters: what was swept and how much of it runs."""
    return {
        "stack": ",".join(s.value for s in resolved.spec.stack),
        "gpu": resolved.gpu.name,
        "model": resolved.architecture.name,
        "trials": len(plan.trials),
        "feasible_trials": len(plan.feasible),
        "pruned_trials": len(plan.pruned),
        "trials_to_run": len(plan.to_run),
        "top_k": plan.top_k,
        "planned_gpus": ",".join(plan.gpus),
    }


def _trials_to_run(plan: Plan, only: list[str] | None) -> list[PlannedTrial]:
    """The plan's trials to run (feasible, not pruned), restricted to `only` when given."""
    to_run = plan.to_run
    if only is None:
        return to_run
    unknown = sorted(set(only) - {p.slug for p in to_run})
    if unknown:
        raise ValueError(f"only: {', '.join(unknown)} not among the trials this sweep runs")
    return [p for p in to_run if p.slug in set(only)]


def _run_trials(
    resolved: ResolvedSpec,
    to_run: list[PlannedTrial],
    tracker: SweepTracker,
    parent_id: str,
    logged: dict[str, list],
    *,
    reuse: bool,
    rebenchmark: bool,
) -> tuple[list[TrialRecord], dict[str, str]]:
    """Every trial run (or reused), each tracked as a child run as soon as it ends; the records in
    plan order and slug -> child run id."""
    on_gpus = [p for p in to_run if p.stack != Stack.REFERENCE.value]
    check_gpus(resolved, on_gpus)
    progress.emit(
        ProgressEvent(
            kind="planned",
            slugs=tuple(p.slug for p in to_run),
            concurrency=trials_at_once(resolved.spec.execution, on_gpus),
        )
    )
    checkpoint = fetch_task(resolved)  # once: every trial uses the same pinned snapshot
    runs: dict[str, str] = {}

    def track(record: TrialRecord) -> None:
        status = "reused" if record.status == "ok" and not record.executed_stages else record.status
        progress.emit(
            ProgressEvent(kind="finished", slug=record.slug, status=status, error=record.error or "")
        )
        runs[record.slug] = track_trial_task(
            tracker, parent_id, record, resolved, logged.pop(record.slug, [])
        )

    if on_gpus:
        return _gpu_trials(resolved, to_run, checkpoint, track, reuse=reuse, rebenchmark=rebenchmark), runs
    records = []
    for planned in to_run:  # feasible, not pruned, on the GPU this sweep runs on
        records.append(
            trial_task(resolved, planned.slug, checkpoint, planned, reuse=reuse, rebenchmark=rebenchmark)
        )
        track(records[-1])
    return records, runs


def _finish_parent(
    tracker: SweepTracker,
    parent_id: str,
    resolved: ResolvedSpec,
    plan: Plan,
    selection: Selection,
    records: list[TrialRecord],
) -> str:
    """Close the parent run with the plan and selection tables; returns the sweep's status."""
    failed = [r.slug for r in records if r.status != "ok"]
    status = "partial" if failed else "complete"
    tracker.finish_sweep(
        parent_id,
        status="FINISHED",
        tables={
            "plan.txt": plan_report_text(plan, resolved.spec.sla.objective),
            "selection.txt": selection_table_text(selection),
            "selection.json": selection.model_dump_json(indent=2),
        },
        tags={
            "enginesweep.status": status,
            "enginesweep.champion": selection.champion or "none",
            "enginesweep.failed_trials": ",".join(failed) or "none",
            **(
                {"enginesweep.capacity_check": selection.capacity_check.verdict[:5000]}
                if selection.capacity_check
                else {}
            ),
        },
    )
    return status


def _sweep(
    resolved: ResolvedSpec,
    plan: Plan,
    tracker: SweepTracker,
    parent_id: str,
    logged: dict[str, list],
    *,
    rerun: bool,
    rebenchmark: bool,
    only: list[str] | None = None,
    promote: bool = True,
) -> SweepOutcome:
    """The trials, selection and promotion of a sweep whose parent run is `parent_id` (`logged`:
    the child runs it already holds, when resumed)."""
    spec = resolved.spec
    try:
        to_run = _trials_to_run(plan, only)
        records, runs = _run_trials(
            resolved, to_run, tracker, parent_id, logged, reuse=not rerun, rebenchmark=rebenchmark
        )
        selection = select_task(records, resolved)
        selection = capacity_task(resolved, selection, records)
        tracker.log_accuracy_gate(runs, selection.rows)
        promotion = (
            promote_task(tracker, resolved, selection, runs, records)
            if selection.champion and promote
            else None
        )
    except BaseException:
        tracker.finish_sweep(parent_id, status="FAILED", tables={}, tags={"enginesweep.status": "failed"})
        raise
    status = _finish_parent(tracker, parent_id, resolved, plan, selection, records)
    report_sweep(
        tracker, parent_id, runs, selection, spec.workspace.resolve(), get_run_logger()
    )  # never raises
    reused = sum(1 for r in records if r.status == "ok" and not r.executed_stages)
    get_run_logger().info(f"{len(records)} trials: {reused} reused unchanged, {len(records) - reused} run")
    return SweepOutcome(
        sweep=spec.name,
        status=status,
        tracking_uri=tracker.tracking_uri,
        experiment=spec.tracking.experiment,
        parent_run_id=parent_id,
        trial_runs=runs,
        records=records,
        selection=selection,
        promoted_version=promotion.version if promotion else None,
        registered_model=promotion.model_name if promotion else None,
    )


def _gpu_trials(
    resolved: ResolvedSpec,
    to_run: list[PlannedTrial],
    checkpoint: tuple[Path, dict],
    track,
    *,
    reuse: bool,
    rebenchmark: bool,
) -> list[TrialRecord]:
    """Every GPU trial submitted at once to the spec's runner; each waits for its GPUs and is
    tracked as soon as it ends. The records come back in plan order."""
    execution = resolved.spec.execution
    # Trials may run in other processes and machines (Dask workers, whose working directory is
    # their own): the workspace goes with them as an absolute path.
    workspace = resolved.spec.workspace.resolve()
    resolved = replace(resolved, spec=resolved.spec.model_copy(update={"workspace": workspace}))
    # How a stop reaches every trial, wherever it runs: a file in the (shared) sweep folder, one
    # per sweep run so a later run does not read an old one.
    stop_file = workspace / "sweeps" / resolved.spec.name / f".stop-{uuid.uuid4().hex}"
    done: dict[str, TrialRecord] = {}
    parameters = {
        "resolved": resolved,
        "checkpoint": checkpoint,
        "reuse": reuse,
        "rebenchmark": rebenchmark,
        "cwd": os.getcwd(),
        "stop_file": str(stop_file),
    }
    with task_runner(execution, len(to_run)) as runner:
        try:
            check_cluster(runner, to_run)
            futures = {}
            for planned in to_run:
                with gpu_request(execution, planned):
                    task = {**parameters, "slug": planned.slug, "planned": planned}
                    futures[runner.submit(trial_task, parameters=task)] = planned
            _collect(futures, resolved, done, track)
        except BaseException as exc:
            # Before the runner's exit, which waits for its running tasks: tell them to stop
            # (trials waiting for GPUs give up, running ones stop their process, which saves
            # its record), here and on every Dask worker.
            request_stop(f"the sweep stopped: {type(exc).__name__}")
            stop_file.parent.mkdir(parents=True, exist_ok=True)
            stop_file.touch()
            raise
    stop_file.unlink(missing_ok=True)  # only after the runner waited for every task
    return [done[p.slug] for p in to_run]


def _collect(
    futures: dict, resolved: ResolvedSpec, done: dict[str, TrialRecord], track: Callable[[TrialRecord], None]
) -> None:
    """Wait for the submitted trials, tracking each as it ends; a task that crashed becomes a
    failed record (never an older one)."""
    while futures:
        # Short waits, not one long one: a signal's handler runs in this thread only
        # between them (Prefect's raises TerminationSignal here on SIGTERM).
        next(iter(futures)).wait(timeout=0.5)
        raise_if_stopped()
        for future in [f for f in futures if f.wrapped_future.done()]:
            planned = futures.pop(future)
            try:
                record = future.result()
            except Exception as exc:
                record = failed_record(resolved, planned, f"{type(exc).__name__}: {exc}")
                record.save(
                    resolved.spec.workspace / "sweeps" / resolved.spec.name / planned.slug / "record.json"
                )
            done[record.slug] = record
            track(record)
