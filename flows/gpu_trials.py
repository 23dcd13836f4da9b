"""GPU trials of a sweep, as many at once as the GPUs allow, none sharing a GPU.

The runner (`execution.runner`) decides where a trial's task runs: `local` on a thread of this
process, `dask` on a Dask worker (prefect-dask), asking for TP*PP of the workers' `GPU`
resource. Either way, on the machine it lands on, the trial takes its GPUs from that machine's
GPU-slot allocator (`engines.gpu_slots`) and runs in a process of its own that sees only them.
The allocator, not the runner's bookkeeping, is what guarantees no GPU is shared: two sweeps on
one machine, or a Dask worker declared with more GPUs than it has, still cannot oversubscribe.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Execution
from enginesweep.engines.gpu_slots import GpuSlots, NoGpus, detect_gpus
from enginesweep.evaluation.planning import PlannedTrial
from enginesweep.evaluation.records import TrialRecord
from enginesweep.flows.trial_process import TrialJob, TrialProcessFailed, run_trial_process


class RunnerError(RuntimeError):
    """The runner cannot work as configured (named field, and the fix)."""


def machine_gpus(execution: Execution) -> list[int]:
    """The GPUs trials may use on this machine: the spec's `execution.gpus`, else detected."""
    return list(execution.gpus) if execution.gpus is not None else detect_gpus()


def check_gpus(resolved: ResolvedSpec, to_run: list[PlannedTrial]) -> None:
    """Refuse, before any trial starts, a sweep whose trials cannot get their GPUs: on this
    machine (the local runner, or the local Dask cluster, which holds this machine's GPUs);
    a remote Dask cluster is checked by `check_cluster` once connected."""
    execution = resolved.spec.execution
    if not to_run:
        return
    if execution.dask_address:
        if not resolved.spec.workspace.is_absolute():
            raise RunnerError(
                f"workspace: {resolved.spec.workspace} is relative; with "
                "execution.dask_address the trials run on other machines: give an "
                "absolute path on a filesystem every Dask worker mounts"
            )
        return
    devices = machine_gpus(execution)
    if not devices:
        raise NoGpus(
            "execution: no GPU to run the trials on here (none in CUDA_VISIBLE_DEVICES, "
            "NVML or nvidia-smi): run on a GPU machine, or list them in execution.gpus"
        )
    widest = max(to_run, key=lambda p: p.config.world_size)
    if widest.config.world_size > len(devices):
        raise NoGpus(
            f"execution.gpus: trial {widest.slug} needs {widest.config.world_size} GPUs "
            f"(TP*PP); this machine lends {len(devices)} ({devices}): add GPUs to "
            "execution.gpus or lower axes.tp / axes.pp"
        )


def check_cluster(runner: Any, to_run: list[PlannedTrial]) -> None:
    """A remote Dask cluster must have a worker with enough `GPU` resource for the widest trial:
    a task no worker can take waits for ever (Dask has no timeout for it)."""
    client = getattr(runner, "client", None)
    if client is None or not to_run:
        return
    workers = client.scheduler_info().get("workers", {}).values()
    most = max((w.get("resources", {}).get("GPU", 0) for w in workers), default=0)
    widest = max(to_run, key=lambda p: p.config.world_size)
    if most < widest.config.world_size:
        raise RunnerError(
            f"execution.dask_address: trial {widest.slug} needs "
            f"{widest.config.world_size} GPUs and the cluster's largest worker "
            f"declares {most:g}: start workers with `dask worker SCHEDULER "
            f"--resources GPU=N` (N = that machine's GPUs)"
        )


def run_on_gpus(
    resolved: ResolvedSpec,
    planned: PlannedTrial,
    checkpoint: tuple[Path, dict[str, Any]],
    *,
    reuse: bool,
    rebenchmark: bool,
    cwd: str,
    stop_file: str,
    log: Callable[[str], None],
) -> TrialRecord:
    """Wait for TP*PP free GPUs of this machine, then run the trial in its own process on them.
    The process gets the spec itself (as validated when the sweep started, not the file again)."""
    slots = GpuSlots(machine_gpus(resolved.spec.execution))
    trial_dir = resolved.spec.workspace / "sweeps" / resolved.spec.name / planned.slug
    job = TrialJob(
        spec=resolved.spec.model_dump(mode="json"),
        source=resolved.source,
        cwd=cwd,
        slug=planned.slug,
        checkpoint_dir=str(checkpoint[0]),
        checkpoint=checkpoint[1],
        planned=planned.model_dump(mode="json"),
        reuse=reuse,
        rebenchmark=rebenchmark,
        # One result file per run: two sweeps of one spec may run this trial in turn.
        result_path=str(trial_dir / f".result-{uuid.uuid4().hex}.json"),
        stop_file=stop_file,
    )
    try:
        with slots.hold(
            planned.config.world_size, what=f"trial {planned.slug}", log=log, stop_file=Path(stop_file)
        ) as lease:
            log(f"trial {planned.slug} on GPUs {lease.visible}")
            return run_trial_process(job, lease, log)
    except (NoGpus, TrialProcessFailed) as exc:
        # Failed outside run_trial (no GPUs on this worker, a process that died without a word):
        # recorded here, so the sweep tracks it as failed instead of reading an older record.
        log(f"trial {planned.slug} failed: {exc}")
        record = failed_record(resolved, planned, f"{type(exc).__name__}: {exc}")
        record.save(trial_dir / "record.json")
        return record


def failed_record(resolved: ResolvedSpec, planned: PlannedTrial, error: str) -> TrialRecord:
    """The record of a trial that failed before it could record anything itself."""

    return TrialRecord(
        slug=planned.slug,
        sweep=resolved.spec.name,
        stack=planned.stack,
        model=resolved.architecture.name,
        hardware=resolved.hardware,
        status="failed",
        error=error,
        config=planned.config.model_dump(mode="json"),
        predicted=planned.predicted.model_dump(mode="json") if planned.predicted else None,
    )


def task_runner(execution: Execution, trials: int):
    """The Prefect task runner the GPU trials are submitted to: threads here (the allocator
    bounds how many run at once) or a Dask cluster (the scheduler's `GPU` resource bounds it;
    a local cluster of one worker holding this machine's GPUs when no address is given)."""
    if execution.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, trials))
    from prefect_dask import DaskTaskRunner

    _share_prefect_api(execution)
    if execution.dask_address:
        return DaskTaskRunner(address=execution.dask_address)
    gpus = machine_gpus(execution)
    # One worker process with a thread per GPU: the `GPU` resource lets TP2 trials on four GPUs
    # run two at a time; the allocator inside the worker picks which GPUs.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 1,
            "threads_per_worker": max(1, len(gpus)),
            "processes": True,
            "resources": {"GPU": len(gpus)},
            "dashboard_address": None,
            "host": "127.0.0.1",
        }
    )


def _share_prefect_api(execution: Execution) -> None:
    """Dask workers report their task runs to this flow's Prefect API: without PREFECT_API_URL
    each worker process would start an ephemeral API of its own (and leave it running). The
    local cluster's workers inherit this process's environment; a remote cluster's workers need a
    Prefect server they can reach, which an ephemeral API on loopback is not."""
    import os

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    if execution.dask_address and _loopback(url) and not _loopback(execution.dask_address):
        raise RunnerError(
            f"execution.dask_address: the cluster's workers cannot reach this sweep's "
            f"Prefect API at {url}; start a Prefect server they can reach (prefect "
            "server start --host 0.0.0.0) and set PREFECT_API_URL to it"
        )
    os.environ.setdefault("PREFECT_API_URL", url)


def _loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def gpu_request(execution: Execution, planned: PlannedTrial):
    """The Dask annotation a trial's task is submitted under (none for the local runner)."""
    if execution.runner != "dask":
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources={"GPU": planned.config.world_size})


def trials_at_once(execution: Execution, on_gpus: list[PlannedTrial]) -> int:
    """About how many of these trials run at once (the progress view's ETA divides by it): 1
    with none on GPUs (`reference` trials run one at a time); else this machine's GPUs over
    the narrowest trial's TP*PP. A remote Dask cluster's GPUs are not known here: 1, so its ETA
    errs long."""
    if not on_gpus or execution.dask_address:
        return 1
    narrowest = min(p.config.world_size for p in on_gpus)
    return max(1, min(len(on_gpus), len(machine_gpus(execution)) // narrowest))
