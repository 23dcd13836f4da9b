"""The operating point of one benchmark under a latency SLA, and the throughput and cost there.

A level meets the SLA when its measured TTFT p99 <= `sla.ttft_p99_ms` and its ITL p99 (the 99th
percentile over requests of each request's mean inter-token latency, as the benchmark records it)
<= `sla.itl_p99_ms`, an unset limit being unconstrained, and when at most 1% of its requests failed:
a failed request misses every bound, so more than 1% failures means no p99 bound can hold even if
the successful requests' p99 does. The operating point is the highest such level: by
concurrency, or by request rate for open-loop levels.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginesweep.build_configs.schema import SLA
from enginesweep.evaluation.planning.prediction import usd_per_1m_tokens
from enginesweep.evaluation.records import BenchmarkResult, ConcurrencyResult

MAX_ERROR_SHARE = 0.01
"""Failed requests a level may have and still meet a p99 bound (the 1% tail the p99 leaves)."""


def level_misses(level: ConcurrencyResult, sla: SLA) -> list[str]:
    """Why one level misses the latency SLA; empty when it meets it."""
    misses = []
    if sla.ttft_p99_ms is not None and level.ttft_ms.p99 > sla.ttft_p99_ms:
        misses.append(f"TTFT p99 {level.ttft_ms.p99:g} ms > {sla.ttft_p99_ms:g} ms")
    if sla.itl_p99_ms is not None and level.itl_ms.p99 > sla.itl_p99_ms:
        misses.append(f"ITL p99 {level.itl_ms.p99:g} ms > {sla.itl_p99_ms:g} ms")
    total = level.request_count + level.error_count
    if level.error_count > MAX_ERROR_SHARE * total:
        misses.append(f"{level.error_count} of {total} requests failed (> {MAX_ERROR_SHARE:.0%})")
    if level.goodput is not None and level.goodput <= 0:
        # Goodput is counted per request at benchmark time; none counted means none met the SLA.
        misses.append("goodput 0 (no request met the SLA)")
    return misses


def operating_point(benchmark: BenchmarkResult, sla: SLA) -> tuple[ConcurrencyResult | None, str | None]:
    """The highest concurrency level meeting the latency SLA, or None and a reason naming what
    each level missed."""
    levels = sorted(benchmark.levels, key=lambda level: level.load_value)
    if not levels:
        return None, "the benchmark recorded no concurrency level"
    meeting = [level for level in levels if not level_misses(level, sla)]
    if meeting:
        return meeting[-1], None
    detail = "; ".join(f"{level.label}: {', '.join(level_misses(level, sla))}" for level in levels)
    return None, f"latency SLA unmet at every level ({detail})"


@dataclass(frozen=True)
class PointMetrics:
    """Throughput and cost at an operating point (see `point_metrics`)."""

    goodput: float
    goodput_per_gpu: float
    output_tok_s: float
    good_output_tok_s: float
    tok_s_per_gpu: float
    usd_per_1m_output_tokens: float
    notes: tuple[str, ...]


def point_metrics(level: ConcurrencyResult, gpus: int, usd_per_gpu_hour: float) -> PointMetrics:
    """Goodput, throughputs and cost at one level.

    Cost is charged to the tokens of requests that met the SLA: good_output_tok_s =
    output_tok_s * goodput / request_rate (the share of completed requests meeting the SLA,
    assuming they have the mean output length), and $/1M = gpus * usd_per_gpu_hour /
    (good_output_tok_s * 3600) * 1e6. A benchmark run without an SLA recorded no goodput; then
    every completed request counts, and a note says so.
    """
    notes: list[str] = []
    goodput = level.goodput
    if goodput is None:
        goodput = level.request_rate
        notes.append(
            f"{level.label}: the benchmark recorded no goodput (run without an "
            "SLA); every completed request counted as good"
        )
    if goodput <= 0 or level.request_rate <= 0 or level.output_tok_s <= 0:
        raise ValueError(
            f"{level.label}: no good output to charge the cost to "
            f"(goodput {goodput}, {level.output_tok_s} tok/s); not an operating point"
        )
    good_tok_s = level.output_tok_s * goodput / level.request_rate
    cost = usd_per_1m_tokens(gpus, usd_per_gpu_hour, good_tok_s)
    return PointMetrics(
        goodput=goodput,
        goodput_per_gpu=goodput / gpus,
        output_tok_s=level.output_tok_s,
        good_output_tok_s=good_tok_s,
        tok_s_per_gpu=level.output_tok_s_per_gpu,
        usd_per_1m_output_tokens=cost,
        notes=tuple(notes),
    )
