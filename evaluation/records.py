"""Typed records of the measure side, saved as JSON beside the artifacts they describe.

Every measured number carries its provenance: `hardware` says what it was measured on (`cpu` for
the reference stack, a GPU catalog name otherwise) and `source` is always `measured` here. A
trial record keeps the plan's prediction it ran with beside its measurements, in its own field
(`predicted`, typed by `evaluation.planning.records`, its `source` naming the predictor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.files import write_atomic
from enginesweep.evaluation.planning.records import ConcurrencyPrediction, Prediction


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def save(self, path: Path) -> Path:
        """Write the record as indented JSON (parents created), atomically."""
        return write_atomic(path, self.model_dump_json(indent=2) + "\n")

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
    """What one load level measured: a fixed concurrency (closed loop), or a recorded replay of a
    request log (open loop, each request at its logged time)."""

    concurrency: int = Field(
        description="The concurrency of a closed-loop level; for a replay, the most requests "
        "that were in flight at once (measured)."
    )
    pacing: Literal["concurrency", "request_rate", "schedule"] = Field(
        default="concurrency",
        description="concurrency: closed loop; request_rate: open loop at `target_request_rate`; "
        "schedule: a recorded replay.",
    )
    target_request_rate: float | None = Field(
        default=None, description="The request rate asked for (req/s), at a request_rate level."
    )
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
        description="Requests per second meeting the SLA (TTFT and mean ITL); None without an SLA."
    )
    sla_attainment: float | None = Field(description="Share of requests meeting the SLA.")

    @property
    def label(self) -> str:
        """The level as people read it: `c=4`, `2.5 req/s`, or `replay (peak 6 in flight)`."""
        if self.pacing == "schedule":
            return f"replay (peak {self.concurrency} in flight)"
        if self.pacing == "request_rate":
            return f"{self.target_request_rate:g} req/s"
        return f"c={self.concurrency}"

    @property
    def key(self) -> str:
        """A stable short name of the level, the same in every run of the same workload: `c4`,
        `r2.5` (the rate asked for), or `replay` (a peak in flight varies between runs)."""
        if self.pacing == "schedule":
            return "replay"
        if self.pacing == "request_rate":
            return f"r{self.target_request_rate:g}"
        return f"c{self.concurrency}"

    @property
    def load_value(self) -> float:
        """What orders the levels of one benchmark: the concurrency, or the rate asked for."""
        if self.pacing == "request_rate":
            return float(self.target_request_rate or 0.0)
        return float(self.concurrency)


class Histogram(_Record):
    """Counts in bins: bin i holds values in [edges[i], edges[i+1]) (the last one closed)."""

    edges: list[float]
    counts: list[int]


class LengthSummary(_Record):
    """Token lengths of the requests sent (counted with the model's tokenizer)."""

    mean: float
    stddev: float
    min: int
    max: int
    histogram: Histogram


class TrafficSummary(_Record):
    """The requests a benchmark sent when enginesweep built them (every workload but plain
    synthetic lengths, which aiperf draws itself)."""

    source: Literal["synthetic", "mixture", "request_log"]
    replay: Literal["recorded", "resample"] | None = None
    requests: int
    input_tokens: LengthSummary
    output_tokens: LengthSummary
    prefix_reuse_ratio: float = Field(
        description="Share of input tokens a perfect prefix cache could serve, in send order."
    )
    request_log_sha256: str | None = None
    recorded_duration_s: float | None = Field(
        default=None, description="A recorded replay: first to last logged arrival."
    )


class KneeStep(_Record):
    """One level the knee search measured, in the order measured."""

    value: float = Field(description="The concurrency or request rate measured.")
    meets: bool
    why: str = Field(default="", description="What it missed of the SLA.")


class KneeResult(_Record):
    """How the knee search went: where it started, what it measured, where it stopped."""

    seed: float
    seed_source: str = Field(description="The prediction that seeded it, or the workload's level.")
    steps: list[KneeStep]
    knee: float | None = Field(description="The highest measured level meeting the SLA.")
    first_miss: float | None = Field(description="The lowest level above the knee that missed it.")
    stopped: str = Field(description="Why the search stopped.")


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
    traffic: TrafficSummary | None = Field(
        default=None, description="The requests sent, where enginesweep built them (not plain synthetic)."
    )
    knee: KneeResult | None = Field(default=None, description="The knee search, where one ran.")


class TaskResult(_Record):
    """One lm-evaluation-harness task scored on one variant, per item (kept for paired tests).

    `item_ids[i]` is the task's document id of item i and `item_values[i]` its score under
    `metric` (0/1 for `acc` and `exact_match`). `items_sha256` hashes the items' document hashes
    in id order, so two results pair only when they scored the very same items."""

    source: Literal["measured"] = "measured"
    hardware: str
    task: str
    metric: str
    higher_is_better: bool = True
    num_fewshot: int = 0
    tool: str = Field(description="The harness and its version, e.g. lm_eval 0.4.13.")
    items_sha256: str
    score: float
    item_ids: list[int]
    item_values: list[float]

    @property
    def binary(self) -> bool:
        """Every item scored 0 or 1: accuracy-like, so McNemar's test applies."""
        return all(value in (0.0, 1.0) for value in self.item_values)


class AccuracyResult(_Record):
    """Accuracy of one variant on held-out text, per window, and on the evaluation tasks, per
    item (both kept for paired statistics)."""

    source: Literal["measured"] = "measured"
    hardware: str
    dataset: str
    dataset_sha256: str
    window_tokens: int = Field(description="0 when no perplexity was measured.")
    perplexity: float | None = Field(
        description="None where the evaluator measures tasks only (the GPU stacks' lm-eval run)."
    )
    top1_accuracy: float | None
    window_nll: list[float] = Field(default=[], description="Mean negative log-likelihood per window.")
    window_top1: list[float] = Field(default=[], description="Next-token top-1 accuracy per window.")
    tasks: list[TaskResult] = Field(default=[], description="Task evaluations (lm-eval), per item.")
    skipped_tasks: dict[str, str] = Field(
        default={},
        description="Tasks of the spec this evaluator could not score, each with the "
        "reason (a served engine answers generative tasks only: no prompt log-probabilities).",
    )


class PairedDelta(_Record):
    """Variant minus baseline over paired windows or items, with a bootstrap confidence interval
    and, for 0/1 item scores, McNemar's exact test of the discordant pairs."""

    metric: str
    baseline: float
    variant: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    higher_is_better: bool | None = Field(
        default=None,
        description="Direction of the metric; None for the built-in ones (the gate "
        "knows perplexity and top-1).",
    )
    n: int | None = Field(default=None, description="Paired windows or items.")
    test: Literal["bootstrap", "mcnemar-exact"] = "bootstrap"
    p_value: float | None = Field(
        default=None, description="Two-sided p-value of McNemar's exact test (binary items only)."
    )
    discordant: tuple[int, int] | None = Field(
        default=None, description="(baseline right & variant wrong, baseline wrong & variant right)."
    )


class RecordedLevelPrediction(ConcurrencyPrediction):
    """One level of a recorded prediction (see `RecordedPrediction`)."""

    in_flight: int | None = Field(default=None, description="None: the record predates this field.")
    request_rate: float | None = Field(default=None, description="None: the record predates this field.")


class RecordedPrediction(Prediction):
    """The plan's prediction as a trial record keeps it. A record written before a field of
    `Prediction` existed still reads: that field is None (not recorded), never filled in."""

    source_version: str | None = Field(default=None, description="None: the record predates this field.")
    per_concurrency: list[RecordedLevelPrediction]
    output_tok_s_at_sla: float | None = Field(
        default=None, description="None: the record predates this field."
    )
    goodput_req_s_at_sla: float | None = Field(
        default=None, description="None: the record predates this field."
    )


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
    config: TrialConfig = Field(description="The trial's point in the sweep space.")
    predicted: RecordedPrediction | None = Field(
        description="The plan's prediction the trial ran with (its source names the predictor)."
    )
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
    quantized_dir: str | None = Field(
        default=None,
        description="The store entry of the quantized checkpoint the bundle was built "
        "from (`enginesweep gc` keeps what a record names).",
    )
    trial_key: str | None = Field(
        default=None, description="Content key of every input of the trial (flows.trial.trial_key)."
    )
    gpu_devices: list[int] | None = Field(
        default=None,
        description="The GPUs (indices on its machine) the trial ran on, lent by the "
        "GPU-slot allocator; None for a CPU trial.",
    )
    executed_stages: list[str] = Field(
        default=[],
        description="Stages that did work in this run: quantize, build, serve+benchmark, "
        "accuracy; empty when a previous result was reused.",
    )
    server_metrics: dict[str, float] | None = Field(
        default=None,
        description="From the server's metrics during the benchmark (TensorRT-LLM: "
        "KV-cache block use); None where the server exports none.",
    )
    host_load: list[float] | None = Field(
        default=None,
        description="1-minute load average of the host before and after the "
        "benchmark: CPU measurements taken beside other work are noisy, and this says so.",
    )
