"""The capacity plan, measured: after selection, the champion is served again (one replica) and
sent Poisson arrivals at the plan's per-replica rate (target rate / replicas), and the plan says
whether the SLA held there.

The plan itself (`evaluation.selection.choose.capacity_plan`) divides the target rate by the
goodput the champion reached in its benchmark, which is measured at one load level and, for
closed-loop levels, without random arrivals: queueing under Poisson arrivals moves p99 TTFT. This
replay checks that. When the SLA is missed it estimates the replicas needed from the goodput
measured in the replay (requests/s that met the SLA at that offered rate), and says that this is
an estimate, not a second measurement.

It runs on the reference stack (in this process, on this CPU). On the GPU stacks it would need a
GPU lease in the sweep's process, which the sweep does not take yet: there the check is recorded
as not run, with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import SLA, Stack, Workload
from enginesweep.engines.manifest import verify_bundle
from enginesweep.engines.stacks import BuildResult, get_stack
from enginesweep.engines.store import Workspace, knobs_of
from enginesweep.evaluation.benchmark.aiperf_runner import run_aiperf
from enginesweep.evaluation.benchmark.results import parse_benchmark
from enginesweep.evaluation.benchmark.traffic import build_traffic
from enginesweep.evaluation.benchmark.warmup import warm_up
from enginesweep.evaluation.records import ConcurrencyResult, TrialRecord
from enginesweep.evaluation.selection.models import CapacityCheck, CapacityPlan
from enginesweep.evaluation.selection.operating_point import level_misses
from enginesweep.flows.trial_benchmark import prompt_text

FOLDER = "capacity"


def replay_workload(workload: Workload, rate: float) -> Workload:
    """The workload's requests (a log resampled, never replayed at its own times) sent as Poisson
    arrivals at `rate`, one level, no knee search."""
    update: dict = {
        "request_rate": [rate],
        "arrival": "poisson",
        "arrival_smoothness": None,
        "max_concurrency": None,
        "concurrency": [1],
        "knee": None,
    }
    if workload.request_log is not None:
        update["request_log"] = workload.request_log.model_copy(update={"replay": "resample"})
    return workload.model_copy(update=update)


def verify_capacity(
    resolved: ResolvedSpec, record: TrialRecord, plan: CapacityPlan, log: Callable[[str], None]
) -> CapacityCheck:
    """Serve the champion's bundle once more and replay its capacity plan (see the module
    docstring). Never raises for a missed SLA: the verdict says it."""
    per_replica = plan.target_request_rate / plan.replicas
    if record.stack != Stack.REFERENCE.value:
        return CapacityCheck(
            slug=record.slug,
            per_replica_rate=per_replica,
            ran=False,
            verdict=f"not measured: the capacity replay runs on the reference stack only for now "
            f"(a {record.stack} replica needs a GPU lease in the sweep's process)",
        )
    spec = resolved.spec
    workload = replay_workload(spec.workload, per_replica)
    stack = get_stack(record.stack, spec)
    bundle_dir = Path(record.bundle_dir or "")
    build = BuildResult(
        slug=record.slug,
        stack=stack.name,
        bundle_dir=str(bundle_dir),
        knobs=knobs_of(record.config),
        manifest=verify_bundle(bundle_dir),
        build_seconds=0.0,
    )
    folder = Workspace(spec.workspace.resolve()).trial_dir(spec.name, record.slug) / FOLDER
    log(
        f"capacity check: {record.slug}, one replica, Poisson arrivals at {per_replica:.4g} req/s "
        f"({plan.target_request_rate:g} req/s over {plan.replicas} replica(s))"
    )
    with stack.server(
        stack.write_model_repository(build, folder / "triton_repo"), folder / "server"
    ) as server:
        warm_up(
            server.url,
            server.endpoint,
            server.model,
            wave=1,
            prompt_tokens=workload.isl.mean,  # type: ignore[union-attr]
            max_tokens=min(workload.osl.mean, 8),  # type: ignore[union-attr]
        )
        traffic = build_traffic(
            workload, stack.tokenizer_dir(build), prompt_text(workload), folder / "benchmark"
        )
        artifacts = run_aiperf(
            url=server.url,
            model=server.model,
            workload=workload,
            tokenizer=stack.tokenizer_dir(build),
            artifact_dir=folder / "benchmark",
            endpoint=server.endpoint,
            input_file=None if traffic is None else traffic.path,
        )
    (level,) = parse_benchmark(
        artifacts, workload, spec.sla, hardware=record.hardware, gpus=record.config.world_size
    ).levels
    return judge_capacity(record.slug, plan, level, spec.sla)


def judge_capacity(slug: str, plan: CapacityPlan, level: ConcurrencyResult, sla: SLA) -> CapacityCheck:
    """The verdict on one measured replay level: the SLA held at the per-replica rate, or it did
    not, and how many replicas the goodput measured there suggests."""
    per_replica = plan.target_request_rate / plan.replicas
    misses = level_misses(level, sla)
    measured = (
        f"at {per_replica:.4g} req/s per replica TTFT p99 {level.ttft_ms.p99:.4g} ms, "
        f"ITL p99 {level.itl_ms.p99:.4g} ms"
    )
    goodput = level.goodput or 0.0
    if not misses:
        needed: int | None = plan.replicas
        verdict = f"planned {plan.replicas} replica(s); {measured}: the SLA holds"
    else:
        needed = math.ceil(plan.target_request_rate / goodput) if goodput > 0 else None
        need = (
            f"needs about {needed} (from the {goodput:.4g} req/s that met the SLA there; "
            "an estimate, not re-measured)"
            if needed is not None
            else "no request met the SLA there, so the replicas needed cannot be estimated"
        )
        verdict = f"planned {plan.replicas} replica(s); {measured}: {'; '.join(misses)}; {need}"
    return CapacityCheck(
        slug=slug,
        per_replica_rate=per_replica,
        ran=True,
        holds=not misses,
        ttft_p99_ms=level.ttft_ms.p99,
        itl_p99_ms=level.itl_ms.p99,
        goodput=level.goodput,
        replicas_needed=needed,
        verdict=verdict,
    )
