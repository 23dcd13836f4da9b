"""Turn what aiperf wrote into a `BenchmarkResult`, computed from the per-request records.

aiperf 0.13.0 writes, per concurrency level, a summary (`profile_export_aiperf.json`) and one
JSON line per request (`profile_export.jsonl`, warmup requests included and marked). A run with
several levels puts each in `concurrency_<N>/`; a run with one level writes into the artifact
folder itself. Latency percentiles, throughputs and goodput are computed here from the profiling
requests (linear interpolation, as aiperf does) so that the SLA can be applied per request; the
summary is used for provenance and as a consistency check (request and error counts must agree).
Failures are never dropped: failed requests are counted in `error_count`, and a level without a
single successful request, a missing file or a disagreement raises `BenchmarkParseError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from enginesweep.build_configs.schema import SLA, Workload
from enginesweep.evaluation.records import BenchmarkResult, ConcurrencyResult, Percentiles, TrafficSummary

SUMMARY_FILE = "profile_export_aiperf.json"
RECORDS_FILE = "profile_export.jsonl"
TRAFFIC_SUMMARY = "traffic.json"  # written by traffic.write_dataset where enginesweep built the requests
PROFILING_PHASE = "profiling"
FIXED_SCHEDULE = "fixed_schedule"
RATE_PHASES = ("poisson", "gamma", "constant")  # aiperf's phase types of a request rate


class BenchmarkParseError(RuntimeError):
    """aiperf's outputs are missing, inconsistent, or a level has no successful request."""


@dataclass(frozen=True)
class RequestTiming:
    """One successful profiling request, in the units of the records (ms, ns)."""

    ttft_ms: float
    itl_ms: float | None  # None when the request produced a single token
    e2e_ms: float
    output_tokens: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class LevelRecords:
    """The profiling requests of one level: successes, and the error of each failed one."""

    requests: list[RequestTiming]
    errors: list[str]
    start_ns: int
    end_ns: int
    error_starts: tuple[int, ...] = ()
    error_ends: tuple[int, ...] = ()


def percentiles(values: list[float]) -> Percentiles:
    """avg/p50/p90/p99/min/max with linear interpolation between order statistics."""
    if not values:
        raise ValueError("no values to summarise")
    ordered = sorted(values)

    def at(q: float) -> float:
        rank = q / 100 * (len(ordered) - 1)
        low, high = math.floor(rank), math.ceil(rank)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    return Percentiles(
        avg=sum(ordered) / len(ordered), p50=at(50), p90=at(90), p99=at(99), min=ordered[0], max=ordered[-1]
    )


def read_records(path: Path) -> LevelRecords:
    """The profiling-phase requests of one `profile_export.jsonl` (warmup requests skipped)."""
    if not path.is_file():
        raise BenchmarkParseError(f"aiperf wrote no per-request records: {path} is missing")
    requests: list[RequestTiming] = []
    errors: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    error_spans: list[tuple[int, int]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        meta = record["metadata"]
        if meta["benchmark_phase"] != PROFILING_PHASE:
            continue
        starts.append(meta["request_start_ns"])
        ends.append(meta["request_end_ns"])
        if record.get("error") is not None or meta.get("was_cancelled"):
            errors.append(_describe_error(record))
            error_spans.append((meta["request_start_ns"], meta["request_end_ns"]))
            continue
        requests.append(_timing(record, meta, f"{path}:{number}"))
    if not starts:
        raise BenchmarkParseError(f"{path} holds no profiling request")
    return LevelRecords(
        requests,
        errors,
        min(starts),
        max(ends),
        tuple(start for start, _ in error_spans),
        tuple(end for _, end in error_spans),
    )


def _timing(record: dict[str, Any], meta: dict[str, Any], where: str) -> RequestTiming:
    metrics = record["metrics"]
    missing = [
        m for m in ("time_to_first_token", "request_latency", "output_sequence_length") if m not in metrics
    ]
    if missing:
        raise BenchmarkParseError(
            f"{where}: a successful request lacks {', '.join(missing)} "
            "(was aiperf run with --streaming against a streaming route?)"
        )
    itl = metrics.get("inter_token_latency")
    return RequestTiming(
        ttft_ms=_ms(metrics["time_to_first_token"]),
        itl_ms=None if itl is None else _ms(itl),
        e2e_ms=_ms(metrics["request_latency"]),
        output_tokens=int(metrics["output_sequence_length"]["value"]),
        start_ns=meta["request_start_ns"],
        end_ns=meta["request_end_ns"],
    )


def _ms(metric: dict[str, Any]) -> float:
    if metric["unit"] != "ms":
        raise BenchmarkParseError(f"expected a latency in ms, got {metric}")
    return float(metric["value"])


def _describe_error(record: dict[str, Any]) -> str:
    error = record.get("error") or {}
    if not error:
        return "cancelled"
    return f"{error.get('code')} {error.get('type')}: {str(error.get('message', '')).strip()}"


def meets_sla(request: RequestTiming, sla: SLA) -> bool:
    """TTFT <= the TTFT bound and the request's mean ITL <= the ITL bound (each if set)."""
    if sla.ttft_p99_ms is not None and request.ttft_ms > sla.ttft_p99_ms:
        return False
    # A one-token request has no inter-token gap, so it cannot break the ITL bound.
    return sla.itl_p99_ms is None or request.itl_ms is None or request.itl_ms <= sla.itl_p99_ms


def peak_in_flight(records: LevelRecords) -> int:
    """The most requests in flight at once (every profiling request, failed ones included)."""
    events = sorted(
        [(r.start_ns, 1) for r in records.requests]
        + [(r.end_ns, -1) for r in records.requests]
        + [(start, 1) for start in records.error_starts]
        + [(end, -1) for end in records.error_ends],
        key=lambda event: (event[0], event[1]),  # an end before a start at the same instant
    )
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@dataclass(frozen=True)
class LoadLevel:
    """One load level as asked for: a concurrency, a request rate (req/s), or the recorded
    replay (no value)."""

    pacing: Literal["concurrency", "request_rate", "schedule"]
    value: float | None = None

    def __str__(self) -> str:
        if self.pacing == "concurrency":
            return f"concurrency {self.value:g}"
        if self.pacing == "request_rate":
            return f"request rate {self.value:g}/s"
        return "a recorded replay"


def workload_levels(workload: Workload) -> list[LoadLevel]:
    """The levels `workload` asks aiperf for, in order."""
    if workload.pacing == "schedule":
        return [LoadLevel("schedule")]
    if workload.pacing == "request_rate":
        return [LoadLevel("request_rate", float(r)) for r in workload.request_rate or []]
    return [LoadLevel("concurrency", c) for c in workload.concurrency]


def summarize_level(
    concurrency: int | LoadLevel, records: LevelRecords, sla: SLA, gpus: int
) -> ConcurrencyResult:
    """One `ConcurrencyResult` from the profiling requests of one level (a concurrency, or a
    `LoadLevel`: open-loop levels are keyed by the peak in flight, measured)."""
    level = concurrency if isinstance(concurrency, LoadLevel) else LoadLevel("concurrency", concurrency)
    if level.pacing == "concurrency":
        concurrency = int(level.value)  # type: ignore[arg-type]
    else:
        concurrency = peak_in_flight(records)
    ok = records.requests
    total = len(ok) + len(records.errors)
    if not ok:
        raise BenchmarkParseError(
            f"{level}: no successful request out of {total}; first error: "
            f"{records.errors[0] if records.errors else 'none recorded'}"
        )
    itls = [r.itl_ms for r in ok if r.itl_ms is not None]
    if not itls:
        raise BenchmarkParseError(
            f"{level}: every request produced one token, "
            "so there is no inter-token latency (use an OSL of 2 or more)"
        )
    duration_s = (records.end_ns - records.start_ns) / 1e9
    if duration_s <= 0:
        raise BenchmarkParseError(f"{level}: empty time span {duration_s} s")
    output_tok_s = sum(r.output_tokens for r in ok) / duration_s
    # A request whose tokens all arrived in one streamed chunk (e.g. text held back until a
    # multi-byte character completed) has a mean ITL of 0: no measurable decode speed, so it
    # stays in the ITL percentiles but not in the per-user speed.
    gaps = [itl for itl in itls if itl > 0]
    has_sla = sla.ttft_p99_ms is not None or sla.itl_p99_ms is not None
    good = sum(meets_sla(r, sla) for r in ok)
    return ConcurrencyResult(
        concurrency=concurrency,
        pacing=level.pacing,
        target_request_rate=level.value if level.pacing == "request_rate" else None,
        request_count=len(ok),
        error_count=len(records.errors),
        duration_s=duration_s,
        ttft_ms=percentiles([r.ttft_ms for r in ok]),
        itl_ms=percentiles(itls),
        e2e_ms=percentiles([r.e2e_ms for r in ok]),
        output_tok_s=output_tok_s,
        output_tok_s_per_gpu=output_tok_s / gpus,
        # Per user: the decode speed one client sees, 1 / its mean ITL (tokens after the first
        # over the time after the first), averaged over requests, as aiperf defines it.
        output_tok_s_per_user=sum(1000.0 / itl for itl in gaps) / len(gaps) if gaps else 0.0,
        request_rate=len(ok) / duration_s,
        goodput=good / duration_s if has_sla else None,
        # Failed requests count against attainment: they met no SLA.
        sla_attainment=good / total if has_sla else None,
    )


def level_dir(artifact_dir: Path, level: LoadLevel, levels: list[LoadLevel]) -> Path:
    """Where aiperf wrote one level: `concurrency_<N>/` or `rate_<R>/` in a sweep of several
    levels, the folder itself for a single level (decided by the levels asked for, never by what
    is on disk: a folder an earlier run left must not stand for this one's)."""
    if len(levels) == 1:
        return artifact_dir
    if level.pacing == "request_rate":
        return artifact_dir / f"rate_{float(level.value)}"  # type: ignore[arg-type]
    return artifact_dir / f"concurrency_{int(level.value)}"  # type: ignore[arg-type]


def read_summary(folder: Path) -> dict[str, Any]:
    """aiperf's own summary of one level."""
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise BenchmarkParseError(f"aiperf wrote no summary: {path} is missing")
    return json.loads(path.read_text())


def summary_level(summary: dict[str, Any]) -> LoadLevel:
    """The load level of the profiling phase that a summary describes."""
    phases = [p for p in summary["input_config"]["phases"] if p["kind"] == PROFILING_PHASE]
    if len(phases) != 1:
        raise BenchmarkParseError(f"expected one profiling phase in the summary, got {phases}")
    phase = phases[0]
    if phase.get("type") == FIXED_SCHEDULE:
        return LoadLevel("schedule")
    if phase.get("type") in RATE_PHASES:
        return LoadLevel("request_rate", float(phase["rate"]))
    return LoadLevel("concurrency", int(phase["concurrency"]))


# aiperf records no `path` when an endpoint type's default route was used.
_DEFAULT_ROUTES = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def summary_endpoint(summary: dict[str, Any]) -> str:
    """The URL and route that were benchmarked."""
    endpoint = summary["input_config"]["endpoint"]
    route = endpoint.get("path") or _DEFAULT_ROUTES.get(endpoint.get("type", ""), "")
    return ",".join(endpoint["urls"]) + route


def parse_level(folder: Path, level: LoadLevel, sla: SLA, gpus: int) -> ConcurrencyResult:
    """Parse one level's folder and check it against aiperf's summary of it."""
    records = read_records(folder / RECORDS_FILE)
    result = summarize_level(level, records, sla, gpus)
    summary = read_summary(folder)
    found = summary_level(summary)
    if found != level:
        raise BenchmarkParseError(f"{folder} holds {found}, expected {level}")
    if not summary.get("is_complete", False) or summary.get("was_cancelled", False):
        raise BenchmarkParseError(f"aiperf marked the run in {folder} as incomplete or cancelled")
    counted = (
        int(summary["request_count"]["avg"]),
        int(summary.get("error_request_count", {}).get("avg", 0)),
    )
    if counted != (result.request_count, result.error_count):
        raise BenchmarkParseError(
            f"{folder}: the records hold {result.request_count} successful and "
            f"{result.error_count} failed requests, the summary {counted[0]} and {counted[1]}"
        )
    return result


def parse_benchmark(
    artifact_dir: Path, workload: Workload, sla: SLA, *, hardware: str, gpus: int
) -> BenchmarkResult:
    """Every concurrency level of `workload` from one aiperf artifact folder.

    `gpus` divides the throughput per GPU (CPU sockets on the cpu target); `hardware` is recorded
    as given (`cpu`, or a GPU catalog name).
    """
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    artifact_dir = Path(artifact_dir)
    levels = workload_levels(workload)
    results = [parse_level(level_dir(artifact_dir, level, levels), level, sla, gpus) for level in levels]
    first = read_summary(level_dir(artifact_dir, levels[0], levels))
    # ISL/OSL are the workload's means: aiperf 0.13.0 cannot count the input tokens of a
    # `text_input` payload (its extraction knows only OpenAI-style keys), so it records no ISL.
    # Where enginesweep built the requests, their summary (lengths counted) is kept beside.
    traffic_file = artifact_dir / TRAFFIC_SUMMARY
    return BenchmarkResult(
        hardware=hardware,
        tool=f"aiperf {first['aiperf_version']}",
        endpoint=summary_endpoint(first),
        isl=workload.isl.mean,  # type: ignore[union-attr]
        osl=workload.osl.mean,  # type: ignore[union-attr]
        levels=results,
        artifact_dir=str(artifact_dir),
        traffic=TrafficSummary.load(traffic_file) if traffic_file.is_file() else None,
    )
