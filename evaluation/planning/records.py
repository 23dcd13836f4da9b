"""Typed records of a plan: one `PlannedTrial` per point of the sweep space.

These are the stable JSON schema of `enginesweep plan --json` (`{"trials": [...]}`) and
`enginesweep size --json` (one trial); docs/json-output.md documents each field. Byte counts are
integers; times are milliseconds; throughputs are output tokens per second.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from build_configs.quant import KVCacheFormat, QuantFormat


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialConfig(_Record):
    """One point of the sweep space."""

    quant: QuantFormat
    kv_cache: KVCacheFormat
    tp: int
    pp: int
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int

    @property
    def world_size(self) -> int:
        return self.tp * self.pp


class MemoryBreakdown(_Record):
    """Where one GPU's memory goes (the fullest GPU of the trial)."""

    gpu_memory_bytes: int
    weights_bytes_total: int = Field(description="All weights of the model in this format.")
    weights_bytes_per_gpu: int = Field(description="Weights on the fullest GPU (TP and PP split).")
    runtime_reserve_bytes_per_gpu: int = Field(description="CUDA context, runtime, comm buffers.")
    activation_bytes_per_gpu: int = Field(description="Activations for max_num_tokens and logits.")
    kv_bytes_per_token: int = Field(
        description="KV cache for one token, whole model summed over layers, before the TP split.")
    kv_bytes_per_token_per_gpu: int
    kv_budget_bytes_per_gpu: int = Field(description="Free memory times the KV free fraction.")
    kv_capacity_tokens: int = Field(description="Tokens the deployment's KV cache holds.")
    kv_limited_sequences: int = Field(description="ISL+OSL sequences the KV cache holds at once.")
    max_concurrent_sequences: int = Field(
        description="Sequences in flight: the KV limit, capped by max_batch_size.")


class ConcurrencyPrediction(_Record):
    """Predicted steady-state behaviour at one concurrency level of the workload."""

    concurrency: int
    ttft_ms: float
    itl_ms: float
    output_tok_s: float
    meets_sla: bool | None = Field(description="None when the spec sets no latency SLA.")


class Prediction(_Record):
    """Predicted performance and cost of one trial; never a measurement."""

    source: Literal["predicted:roofline"]
    hardware: str
    ttft_ms: float = Field(description="Time to first token of a lone request (concurrency 1).")
    itl_ms: float = Field(description="Inter-token latency of a lone request (concurrency 1).")
    output_tok_s: float = Field(description="Saturated output tokens/s of the whole deployment.")
    output_tok_s_per_gpu: float
    saturation_concurrency: int = Field(description="Sequences in flight at saturation.")
    usd_per_1m_output_tokens: float = Field(description="At saturated throughput.")
    per_concurrency: list[ConcurrencyPrediction]
    max_concurrency_meeting_sla: int | None = Field(
        description="Highest workload concurrency predicted to meet the latency SLA.")
    usd_per_1m_output_tokens_at_sla: float | None


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
