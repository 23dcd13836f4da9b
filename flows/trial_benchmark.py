"""The serve-and-benchmark stage of a trial: the bundle served on this host (its runtime checked
first), a discarded warm-up (`evaluation.benchmark.warmup`), the workload's requests built where
they are not aiperf's synthetic ones (`evaluation.benchmark.traffic`), aiperf at every
concurrency of the workload (or the log's own timing) against it, the server's metrics sampled,
and the served accuracy scored on the same server when the stack measures it that way."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from enginesweep.build_configs.schema import Workload
from enginesweep.engines import textdata
from enginesweep.engines.compat import refuse_mismatch
from enginesweep.engines.stacks import BuildResult
from enginesweep.engines.stacks.base import Server
from enginesweep.evaluation.benchmark.aiperf_runner import run_aiperf
from enginesweep.evaluation.benchmark.knee import search
from enginesweep.evaluation.benchmark.results import TRAFFIC_SUMMARY, BenchmarkResult, parse_benchmark
from enginesweep.evaluation.benchmark.server_metrics import MetricsSampler
from enginesweep.evaluation.benchmark.traffic import TrafficDataset, build_traffic
from enginesweep.evaluation.benchmark.warmup import warm_up
from enginesweep.evaluation.planning.records import Prediction
from enginesweep.evaluation.records import TrafficSummary
from enginesweep.evaluation.selection.operating_point import level_misses
from enginesweep.flows.served_accuracy import ServedAccuracy
from enginesweep.flows.trial_run import TrialRun


class ServerDied(RuntimeError):
    """The inference server exited while it was being benchmarked."""


@dataclass(frozen=True)
class Benchmarked:
    """What serve-and-benchmark measured, and the host's load average before it."""

    benchmark: BenchmarkResult
    server_metrics: dict[str, Any] | None
    load_before: float


def serve_and_benchmark(run: TrialRun, build: BuildResult, served: ServedAccuracy | None) -> Benchmarked:
    """Serve the bundle and run aiperf at every concurrency of the workload (and the served
    accuracy, on the same server)."""
    spec, stack, trial_dir = run.resolved.spec, run.stack, run.trial_dir
    load_before = os.getloadavg()[0]
    if load_before > (os.cpu_count() or 1) / 2:
        run.log(
            f"  warning: the host's load average is {load_before:.1f} before the benchmark; "
            "other work on this machine makes these CPU measurements noisy"
        )
    with run.clock.stage("serve+benchmark"):
        refuse_mismatch(build.bundle_dir, stack.host_mismatches(build.manifest))
        repo = stack.write_model_repository(build, trial_dir / "triton_repo")
        with stack.server(repo, trial_dir / "server") as server:
            workload = spec.workload
            warm = warm_up(
                server.url,
                server.endpoint,
                server.model,
                wave=workload.peak_concurrency,
                prompt_tokens=workload.isl.mean,  # type: ignore[union-attr]
                max_tokens=min(workload.osl.mean, 8),  # type: ignore[union-attr]
            )
            run.log(f"  warm-up at server start: {warm.requests} request(s) discarded ({warm.seconds:.1f} s)")
            traffic = build_traffic(
                spec.workload,
                stack.tokenizer_dir(build),
                prompt_text(spec.workload),
                trial_dir / "benchmark",
            )
            run.log(
                f"  serving {server.model} at {server.url}; aiperf {_load_words(spec.workload, traffic)} "
                f"(progress: {trial_dir / 'benchmark' / 'aiperf.log'})"
            )
            aiperf = partial(
                run_aiperf,
                url=server.url,
                model=server.model,
                tokenizer=stack.tokenizer_dir(build),
                endpoint=server.endpoint,
                input_file=None if traffic is None else traffic.path,
                fixed_schedule=traffic is not None and traffic.fixed_schedule,
            )
            parse = partial(
                parse_benchmark,
                sla=spec.sla,
                hardware=run.record.hardware,
                gpus=run.planned.config.world_size,
            )
            bench_dir = trial_dir / "benchmark"
            with MetricsSampler(server.metrics_url, bench_dir / "metrics") as sampler:
                if workload.knee is None:
                    aiperf(workload=workload, artifact_dir=bench_dir)
                    _check_alive(server, trial_dir)
                    benchmark = parse(bench_dir, workload)
                else:
                    benchmark = knee_benchmark(
                        run, aiperf, parse, bench_dir, check=lambda: _check_alive(server, trial_dir)
                    )
            _check_alive(server, trial_dir)
            if served is not None:  # the very engine benchmarked, on its GPUs
                served.evaluate_variant(server)
        benchmark.save(bench_dir / "benchmark.json")
    return Benchmarked(benchmark, sampler.summary(), load_before)


def _check_alive(server: Server, trial_dir: Path) -> None:
    """Raise ServerDied when the server exited: its failed requests would otherwise pass for a
    slow engine's numbers (or for a parse error)."""
    if not server.alive():
        raise ServerDied(f"the server died during the benchmark; its log: {trial_dir / 'server'}")


def knee_benchmark(
    run: TrialRun,
    aiperf: Callable[..., Path],
    parse: Callable[[Path, Workload], BenchmarkResult],
    bench_dir: Path,
    check: Callable[[], None] = lambda: None,
) -> BenchmarkResult:
    """The knee search (`evaluation.benchmark.knee`): one aiperf run per level, each in a folder
    of its own (`knee_c<N>/`, `knee_r<rate>/`), judged against the SLA as soon as it is measured;
    every measured level goes into the one result, with the search's trail."""
    workload, sla = run.resolved.spec.workload, run.resolved.spec.sla
    assert workload.knee is not None  # the caller checked
    for stale in bench_dir.glob("knee_*"):  # an earlier search's levels are not this one's
        shutil.rmtree(stale, ignore_errors=True)
    by_rate = workload.pacing == "request_rate"
    measured: list[BenchmarkResult] = []

    def measure(value: float) -> tuple[bool, str]:
        update = {"request_rate": [value]} if by_rate else {"concurrency": [int(value)]}
        level_workload = workload.model_copy(update=update)
        folder = bench_dir / (f"knee_r{value:g}" if by_rate else f"knee_c{int(value)}")
        aiperf(workload=level_workload, artifact_dir=folder)
        check()  # a dead server's level is not a level that missed the SLA
        result = parse(folder, level_workload)
        measured.append(result)
        misses = level_misses(result.levels[0], sla)
        return not misses, ", ".join(misses)

    seed, source = knee_seed(workload, run.planned.predicted)
    trail = search(
        measure, seed=seed, seed_source=source, knee=workload.knee, integer=not by_rate, log=run.log
    )
    run.log(f"  knee search: {trail.stopped}; {len(trail.steps)} level(s) measured")
    first = measured[0]
    traffic = bench_dir / TRAFFIC_SUMMARY
    return first.model_copy(
        update={
            "levels": sorted((r.levels[0] for r in measured), key=lambda level: level.load_value),
            "artifact_dir": str(bench_dir),
            "knee": trail,
            "traffic": TrafficSummary.load(traffic) if traffic.is_file() else None,
        }
    )


def knee_seed(workload: Workload, predicted: Prediction | None) -> tuple[float, str]:
    """Where the knee search starts: the plan's predicted knee where it has one (the highest
    listed concurrency predicted to meet the SLA, or the goodput there as a rate), else the
    workload's highest listed level."""
    if workload.pacing == "request_rate":
        if predicted is not None and predicted.goodput_req_s_at_sla:
            return predicted.goodput_req_s_at_sla, f"{predicted.source}: goodput at the SLA"
        return max(workload.request_rate or [1.0]), "the workload's highest request_rate"
    if predicted is not None and predicted.max_concurrency_meeting_sla:
        return float(
            predicted.max_concurrency_meeting_sla
        ), f"{predicted.source}: concurrency meeting the SLA"
    return float(max(workload.concurrency)), "the workload's highest concurrency"


def prompt_text(workload: Workload) -> str:
    """The running text prompts are cut from; none needed for aiperf's own synthetic prompts
    (the corpus is then not even looked for)."""
    if workload.source == "synthetic" and workload.shared_prefix is None:
        return ""
    return textdata.prompt_text(textdata.corpus_path())


def _load_words(workload: Workload, traffic: TrafficDataset | None) -> str:
    """How the benchmark will load the server, for the log."""
    levels = (
        f"at concurrency {workload.concurrency}"
        if workload.request_rate is None
        else f"at {', '.join(f'{r:g}' for r in workload.request_rate)} req/s ({workload.arrival} arrivals"
        + (f", at most {workload.max_concurrency} in flight)" if workload.max_concurrency else ")")
    )
    if traffic is None:
        return levels
    what = f"{traffic.summary.requests} requests ({workload.source}"
    what += f", {traffic.summary.prefix_reuse_ratio:.0%} of input tokens in shared prefixes)"
    if traffic.fixed_schedule:
        return f"replaying {what} at their logged times over {traffic.summary.recorded_duration_s:.1f} s"
    return f"sending {what} {levels}"
