"""Typed records of the measure side, saved as JSON beside the artifacts they describe.

Every measured number carries its provenance: `hardware` says what it was measured on (`cpu` for
the reference stack, a GPU catalog name otherwise) and `source` is always `measured` here.
Predictions live in `evaluation.planning.records` and never in these records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def save(self, path: Path) -> Path:
        """Write the record as indented JSON (parents created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path):
        return cls.model_validate_json(path.read_text())


class Percentiles(_Record):
    """Summary of one latency metric over the requests of one concurrency level (ms)."""

    avg: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float


class ConcurrencyResult(_Record):
    """What one concurrency level measured."""

    concurrency: int
    request_count: int = Field(description="Requests that completed successfully.")
    error_count: int
    duration_s: float = Field(description="From the first request sent to the last response.")
    ttft_ms: Percentiles
    itl_ms: Percentiles
    e2e_ms: Percentiles
    output_tok_s: float = Field(description="Output tokens per second, whole deployment.")
    output_tok_s_per_gpu: float = Field(description="Per GPU; per CPU socket on the cpu target.")
    output_tok_s_per_user: float = Field(description="Per request: 1 / mean ITL (aiperf's definition).")
    request_rate: float = Field(description="Completed requests per second.")
    goodput: float | None = Field(
        description="Requests per second meeting the SLA (TTFT and mean ITL); None without an SLA.")
    sla_attainment: float | None = Field(description="Share of requests meeting the SLA.")


class BenchmarkResult(_Record):
    """One benchmark of one served engine: every concurrency level of the workload."""

    source: Literal["measured"] = "measured"
    hardware: str
    tool: str = Field(description="Load generator and version, e.g. aiperf 0.13.0.")
    endpoint: str
    isl: int
    osl: int
    levels: list[ConcurrencyResult]
    artifact_dir: str


class AccuracyResult(_Record):
    """Accuracy of one variant on held-out text, per window (kept for paired statistics)."""

    source: Literal["measured"] = "measured"
    hardware: str
    dataset: str
    dataset_sha256: str
    window_tokens: int
    perplexity: float
    top1_accuracy: float
    window_nll: list[float] = Field(description="Mean negative log-likelihood per window.")
    window_top1: list[float] = Field(description="Next-token top-1 accuracy per window.")


class PairedDelta(_Record):
    """Variant minus baseline over paired windows, with a bootstrap confidence interval."""

    metric: str
    baseline: float
    variant: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int


class TrialRecord(_Record):
    """Everything one trial produced, saved as `record.json` in the trial's folder. Measured
    numbers (benchmark, accuracy) and the plan's prediction sit side by side, each labelled."""

    slug: str
    sweep: str
    stack: str
    model: str | None = Field(default=None, description="The model architecture's name.")
    hardware: str = Field(description="What the measurements were taken on (`cpu` here).")
    status: Literal["ok", "failed"]
    error: str | None = None
    config: dict = Field(description="The trial's point in the sweep space (TrialConfig).")
    predicted: dict | None = Field(description="The plan's prediction (predicted:roofline).")
    bundle_dir: str | None = None
    content_hash: str | None = None
    engine_bytes: int | None = None
    trtllm_checkpoint: dict | None = None
    quantize_seconds: float | None = None
    build_seconds: float | None = None
    benchmark: BenchmarkResult | None = None
    accuracy: AccuracyResult | None = None
    baseline_accuracy: AccuracyResult | None = None
    accuracy_deltas: list[PairedDelta] = []
    stage_seconds: dict[str, float] = {}
    server_metrics: dict[str, float] | None = Field(
        default=None, description="From the server's metrics during the benchmark (TensorRT-LLM: "
                                  "KV-cache block use); None where the server exports none.")
    host_load: list[float] | None = Field(
        default=None, description="1-minute load average of the host before and after the "
        "benchmark: CPU measurements taken beside other work are noisy, and this says so.")
