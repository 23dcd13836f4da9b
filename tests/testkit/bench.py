"""One aiperf run against a server a test started, parsed: what the stack tests measure with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginesweep.build_configs.schema import SLA, Workload
from enginesweep.evaluation.benchmark.aiperf_runner import run_aiperf
from enginesweep.evaluation.benchmark.results import parse_benchmark
from enginesweep.evaluation.records import BenchmarkResult


def benchmark(server: Any, tokenizer: Path, artifact_dir: Path, workload: Workload) -> BenchmarkResult:
    """Run the real aiperf on `server` (a stack's running server) and parse its records."""
    artifacts = run_aiperf(
        url=server.url,
        model=server.model,
        workload=workload,
        tokenizer=tokenizer,
        artifact_dir=artifact_dir,
        endpoint=server.endpoint,
        timeout_s=600,
    )
    return parse_benchmark(artifacts, workload, SLA(), hardware="cpu", gpus=1)
