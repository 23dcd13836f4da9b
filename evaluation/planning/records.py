"""Typed records of a plan: one `PlannedTrial` per point of the sweep space.

These are the stable JSON schema of `enginesweep plan --json` (`{"trials": [...]}`) and
`enginesweep size --json` (one trial); docs/json-output.md documents each field. Byte counts are
integers; times are milliseconds; throughputs are output tokens per second.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from enginesweep.build_configs.trial import TrialConfig


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryBreakdown(_Record):
    """Where one GPU's memory goes (the fullest GPU of the trial)."""

    gpu_memory_bytes: int
    weights_bytes_total: int = Field(description="All weights of the model in this format.")
    weights_bytes_per_gpu: int = Field(description="Weights on the fullest GPU (TP and PP split).")
    dense_bytes_per_gpu: int | None = Field(
        default=None,
        description="MoE models: attention, dense MLPs, shared experts, routers, embeddings and norms"
        " on the fullest GPU (None for dense models).",
    )
    expert_bytes_per_gpu: int | None = Field(
        default=None, description="MoE models: routed experts on the fullest GPU (None for dense models)."
    )
    dense_bytes_per_weight: float | None = Field(
        default=None, description="MoE models: bytes per attention/dense GEMM weight (scales included)."
    )
    expert_bytes_per_weight: float | None = Field(
        default=None,
        description="MoE models: bytes per expert weight, the checkpoint's own format where smaller.",
    )
    runtime_reserve_bytes_per_gpu: int = Field(description="CUDA context, runtime, comm buffers.")
    activation_bytes_per_gpu: int = Field(description="Activations for max_num_tokens and logits.")
    kv_bytes_per_token: int = Field(
        description="KV cache for one token, whole model summed over layers, before the TP split."
    )
    kv_bytes_per_token_per_gpu: int
    kv_budget_bytes_per_gpu: int = Field(description="Free memory times the KV free fraction.")
    kv_capacity_tokens: int = Field(description="Tokens the deployment's KV cache holds.")
    kv_limited_sequences: int = Field(description="ISL+OSL sequences the KV cache holds at once.")
    max_concurrent_sequences: int = Field(
        description="Sequences in flight: the KV limit, capped by max_batch_size."
    )


PREDICTION_SOURCE = r"^predicted:(roofline|aiconfigurator)(\+calibrated)?$"
"""`predicted:<model>`, with `+calibrated` when measured-vs-predicted factors were applied."""


class ConcurrencyPrediction(_Record):
    """Predicted steady-state behaviour at one concurrency level of the workload."""

    concurrency: int
    in_flight: int = Field(description="Sequences the deployment runs at once (KV/batch limit).")
    ttft_ms: float
    itl_ms: float
    output_tok_s: float
    request_rate: float = Field(description="Completed requests/s = output_tok_s / OSL.")
    meets_sla: bool | None = Field(description="None when the spec sets no latency SLA.")


class Calibration(_Record):
    """Correction factors applied to a prediction: predicted values are multiplied by them."""

    key: str = Field(description="hardware/stack/runtime the factors were fitted for.")
    factors: dict[str, float] = Field(description="Metric -> measured/predicted factor.")
    trials: int = Field(description="Measured trials the factors were fitted on.")
    mape_before_pct: dict[str, float]
    mape_after_pct: dict[str, float] = Field(description="In-sample, after the factors.")


class Prediction(_Record):
    """Predicted performance and cost of one trial; never a measurement."""

    source: str = Field(pattern=PREDICTION_SOURCE)
    source_version: str = Field(
        description="Model version (aiconfigurator and database, or the roofline's constants)."
    )
    hardware: str
    ttft_ms: float = Field(description="Time to first token of a lone request (concurrency 1).")
    itl_ms: float = Field(description="Inter-token latency of a lone request (concurrency 1).")
    output_tok_s: float = Field(description="Saturated output tokens/s of the whole deployment.")
    output_tok_s_per_gpu: float
    saturation_concurrency: int = Field(description="Sequences in flight at saturation.")
    usd_per_1m_output_tokens: float = Field(description="At saturated throughput.")
    per_concurrency: list[ConcurrencyPrediction]
    max_concurrency_meeting_sla: int | None = Field(
        description="Highest workload concurrency predicted to meet the latency SLA."
    )
    output_tok_s_at_sla: float | None = Field(description="At max_concurrency_meeting_sla.")
    goodput_req_s_at_sla: float | None = Field(description="Requests/s at max_concurrency_meeting_sla.")
    usd_per_1m_output_tokens_at_sla: float | None
    calibration: Calibration | None = None
    notes: list[str] = Field(default=[], description="Why this source was used, its caveats.")


class CapacityPrediction(_Record):
    """How many replicas of one trial serve a target request rate within the SLA (predicted)."""

    target_request_rate: float
    max_concurrency_meeting_sla: int
    goodput_req_s_per_replica: float
    replicas: int
    gpus_per_replica: int
    total_gpus: int
    usd_per_hour: float
    usd_per_1m_output_tokens: float = Field(
        description="usd_per_hour over the R*OSL tokens/s served: replicas sized from goodput at "
        "the SLA, not from peak throughput."
    )


class PlannedTrial(_Record):
    """One trial of a plan: feasible, or rejected with the reasons."""

    slug: str
    model: str
    stack: str
    gpu: str
    config: TrialConfig
    feasible: bool
    reasons: list[str] = Field(description="Why the trial is rejected; empty when feasible.")
    warnings: list[str]
    memory: MemoryBreakdown
    predicted: Prediction | None = Field(description="None for rejected trials.")
    capacity: CapacityPrediction | None = Field(
        default=None, description="With a target request rate, when the SLA is met at some level."
    )
    pruned: str | None = Field(
        default=None, description="Why `--top-k` pruned this feasible trial; None when kept."
    )
