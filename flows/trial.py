"""One trial end to end, without Prefect or MLflow, as a recipe of named stages: prepare (the
checkpoint and the trial's key) -> build or reuse (from the workspace's stores) -> serve and
benchmark -> accuracy -> record. `enginesweep trial` and the sweep's tasks call `run_trial`.

The trial's bundle, model repository, server log, aiperf exports and `record.json` land in
`<workspace>/sweeps/<sweep>/<slug>/` (`engines.store` has the layout). A failure is recorded in
`record.json` with its reason, and how far the trial got, before it is raised; the server is
stopped on success, failure and interrupt alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.engines import progress, textdata
from enginesweep.engines.files import write_atomic
from enginesweep.engines.locks import GC_LOCK, key_lock
from enginesweep.engines.manifest import verify_bundle
from enginesweep.engines.progress import StageClock
from enginesweep.engines.stacks import BuildResult, get_stack
from enginesweep.engines.stacks.base import preflight_stack
from enginesweep.engines.store import Workspace, get_or_build, knobs_of
from enginesweep.evaluation.accuracy.variant import task_include_paths
from enginesweep.evaluation.benchmark.results import parse_benchmark
from enginesweep.evaluation.planning import PlannedTrial
from enginesweep.evaluation.records import TrialRecord
from enginesweep.flows.trial_accuracy import measure_accuracy, served_accuracy
from enginesweep.flows.trial_benchmark import Benchmarked, serve_and_benchmark
from enginesweep.flows.trial_inputs import (
    checkpoint_source,
    find_trial,
    reusable_record,
    trial_key,
    with_mtimes,
)
from enginesweep.flows.trial_run import TrialRun, record_failure

KEPT_WITH_THE_BUNDLE = (
    "bundle_dir",
    "content_hash",
    "engine_bytes",
    "trtllm_checkpoint",
    "quantize_seconds",
    "build_seconds",
    "quantized_dir",
)
ACCURACY_FIELDS = ("accuracy", "baseline_accuracy", "accuracy_deltas")


def run_trial(
    resolved: ResolvedSpec,
    slug: str,
    *,
    log: Callable[[str], None] = print,
    checkpoint: tuple[Path, dict[str, Any]] | None = None,
    planned: PlannedTrial | None = None,
    reuse: bool = False,
    rebenchmark: bool = False,
) -> TrialRecord:
    """Run one trial of the spec for real and return (and save) its record, holding the trial
    folder's lock (a second run of it on this workspace waits, then may reuse the first's result).

    `checkpoint`: `checkpoint_source`'s result when the caller fetched it (a sweep does, once).
    `planned`: the plan's trial the caller logged, so the record carries that very prediction.
    `reuse`: a successful record with the same `trial_key` whose bundle still verifies stands for
    this run (nothing runs); with `rebenchmark`, its bundle and accuracy are kept and it is served
    and benchmarked again."""
    workspace = Workspace(resolved.spec.workspace.resolve())
    # Shared: any number of trials run at once; `enginesweep gc` takes it exclusively.
    with (
        key_lock(workspace.root / GC_LOCK, "a garbage collection of this workspace", log, shared=True),
        key_lock(workspace.trial_lock(resolved.spec.name, slug), f"trial {slug}", log),
        progress.trial(slug),
    ):
        if planned is None or planned.slug != slug:
            planned = find_trial(resolved, slug)
        run = _start(resolved, planned, workspace, log)
        try:
            _prepare(run, checkpoint)
            previous = reusable_record(run.trial_dir, run.record.trial_key or "", log) if reuse else None
            if previous is not None and not rebenchmark:
                return _reused(run, previous)
            build = _keep_bundle(run, previous) if previous is not None else _build_or_reuse(run)
            served = served_accuracy(run) if previous is None else None
            benchmarked = serve_and_benchmark(run, build, served)
            accuracy = (
                {k: getattr(previous, k) for k in ACCURACY_FIELDS}
                if previous
                else measure_accuracy(run, build, served)
            )
            _finish(run, benchmarked, accuracy)
        except BaseException as exc:  # interrupts too: the record says why the trial stopped
            full = record_failure(run, exc)
            if full:
                raise full from None
            raise
        run.record.save(run.trial_dir / "record.json")
        return run.record


def _start(
    resolved: ResolvedSpec, planned: PlannedTrial, workspace: Workspace, log: Callable[[str], None]
) -> TrialRun:
    stack = get_stack(planned.stack, resolved.spec)
    record = TrialRecord(
        slug=planned.slug,
        sweep=resolved.spec.name,
        stack=stack.name,
        model=resolved.architecture.name,
        hardware=resolved.hardware,
        status="failed",
        config=planned.config.model_dump(mode="json"),
        predicted=planned.predicted.model_dump(mode="json") if planned.predicted else None,
    )
    run = TrialRun(resolved, planned, stack, workspace, log, record, StageClock(log))
    run.trial_dir.mkdir(parents=True, exist_ok=True)
    return run


def _prepare(run: TrialRun, checkpoint: tuple[Path, dict[str, Any]] | None) -> None:
    """Every file this trial will use is on this host (or it fails now, naming them, not after an
    hour of quantizing); the checkpoint, the task files and the trial's key."""
    spec = run.resolved.spec
    preflight_stack(run.stack, [run.planned.config], accuracy=bool(spec.accuracy.tasks))
    with run.clock.stage("checkpoint"):
        source_dir, identity = checkpoint or checkpoint_source(run.resolved, run.workspace.root, run.log)
        run.source = (source_dir, with_mtimes(identity, source_dir))
        run.corpus = textdata.corpus_path(download=False)  # fetched by the set-up, never here
        if run.stack.accuracy_mode == "in_process" or spec.accuracy.tasks:
            run.include = task_include_paths(spec.accuracy, run.workspace.root, run.corpus)
        run.update(trial_key=trial_key(run.resolved, run.planned, run.source[1], run.stack.name, run.include))


def _reused(run: TrialRun, previous: TrialRecord) -> TrialRecord:
    """The previous record stands: nothing runs. The SLA is not in the key, so goodput and
    attainment are judged again under this spec's SLA from the kept aiperf exports."""
    spec, cfg = run.resolved.spec, run.planned.config
    run.log(
        f"[reuse] {run.planned.slug}: inputs unchanged (key {run.record.trial_key[:12]}) and the bundle "
        "verifies; nothing runs (enginesweep run --rebenchmark serves and measures it again)"
    )
    benchmark = parse_benchmark(
        run.trial_dir / "benchmark",
        spec.workload,
        spec.sla,
        hardware=run.record.hardware,
        gpus=cfg.world_size,
    )
    return previous.model_copy(update={"executed_stages": [], "benchmark": benchmark})


def _keep_bundle(run: TrialRun, previous: TrialRecord) -> BuildResult:
    run.log(
        f"[reuse] {run.planned.slug}: bundle and accuracy kept (key {run.record.trial_key[:12]}); "
        "benchmarking again"
    )
    bundle_dir = Path(previous.bundle_dir or "")
    run.update(**{k: getattr(previous, k) for k in KEPT_WITH_THE_BUNDLE})
    return BuildResult(
        slug=run.planned.slug,
        stack=run.stack.name,
        bundle_dir=str(bundle_dir),
        knobs=knobs_of(run.planned.config),
        manifest=verify_bundle(bundle_dir),
        build_seconds=previous.build_seconds or 0.0,
    )


def _build_or_reuse(run: TrialRun) -> BuildResult:
    stored = get_or_build(
        run.stack,
        run.resolved,
        run.planned.config,
        run.planned.slug,
        run.source,
        run.corpus,
        run.workspace,
        run.clock,
        run.log,
    )
    build, quantized = stored.build, stored.quantized
    write_atomic(run.trial_dir / "build.json", build.model_dump_json(indent=2) + "\n")
    run.update(
        quantized_dir=str(stored.quantized_dir),
        bundle_dir=build.bundle_dir,
        content_hash=build.manifest.content_hash,
        engine_bytes=build.manifest.total_bytes,
        trtllm_checkpoint=build.manifest.trtllm_checkpoint,
        build_seconds=build.build_seconds,
        quantize_seconds=quantized.quantize_seconds + quantized.export_seconds if quantized else None,
    )
    return build


def _finish(run: TrialRun, benchmarked: Benchmarked, accuracy: dict[str, Any]) -> None:
    run.update(
        host_load=[round(benchmarked.load_before, 2), round(os.getloadavg()[0], 2)],
        status="ok",
        benchmark=benchmarked.benchmark,
        server_metrics=benchmarked.server_metrics,
        stage_seconds=run.clock.timings,
        executed_stages=run.clock.executed(),
        **accuracy,
    )
