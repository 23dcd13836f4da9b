"""The records selection produces: one `TrialSelection` row per trial record, the `Selection` of a
whole sweep (feasible set, Pareto front, ranking, champion, capacity plan) and the errors raised
for input that must not be ranked at all. All numbers are derived from measurements
(`source: measured`) on the one `hardware` named in the selection."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enginesweep.build_configs.schema import SLA, Objective


class MixedHardwareError(ValueError):
    """Records measured on different hardware (e.g. `cpu` and a GPU) were given to one selection."""


class _Record(BaseModel):
    # "Infinity" rather than null in JSON: an infinite relative drop must read back as one.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class AccuracyCheck(_Record):
    """One accuracy metric of one trial against the unquantized baseline, as the gate saw it.

    `drop` is "how much worse": variant - baseline for perplexity, baseline - variant for top-1
    accuracy; in `relative` mode divided by the baseline value. The interval is the paired
    bootstrap interval of the delta, mapped the same way (see `accuracy_gate` for the verdict)."""

    metric: str
    mode: Literal["absolute", "relative"]
    baseline: float
    variant: float
    drop: float
    drop_ci_low: float
    drop_ci_high: float
    confidence: float
    allowed: float | None = Field(description="sla.max_accuracy_drop; None = no accuracy gate.")
    gate: Literal["strict", "lenient"] = "strict"
    test: Literal["bootstrap", "mcnemar-exact"] = "bootstrap"
    p_value: float | None = Field(default=None, description="McNemar's exact test (0/1 items).")
    significant: bool = Field(
        default=False,
        description="The drop is distinguishable from none: McNemar p < 1 - "
        "confidence, or (no test) the whole interval is a drop.",
    )
    verdict: str = Field(default="", description="Why the check passed or failed, in words.")
    passed: bool


class TrialSelection(_Record):
    """One trial as selection judged it. Throughput fields are at the operating point; None when
    the trial has none (failed, or no level met the latency SLA)."""

    slug: str
    status: Literal["ok", "failed"]
    is_baseline: bool = Field(description="Unquantized weights (bf16/fp16) with the auto KV cache.")
    gpus: int = Field(description="TP * PP of the trial's config.")
    feasible: bool
    reasons: list[str] = Field(description="Why the trial is rejected; empty when feasible.")
    notes: list[str] = Field(description="Caveats on the numbers (never reasons to reject).")
    operating_concurrency: int | None = Field(
        description="Highest measured concurrency meeting the latency SLA (at an open-loop "
        "level: the most requests in flight there)."
    )
    operating_level: str | None = Field(
        default=None, description="The operating point's level as read: c=4, 2.5 req/s, replay."
    )
    operating_request_rate: float | None = Field(
        default=None, description="The request rate asked for at an open-loop operating point."
    )
    goodput: float | None = Field(description="Requests/s meeting the SLA at the operating point.")
    goodput_per_gpu: float | None
    output_tok_s: float | None = Field(description="Measured output tok/s, all completed requests.")
    good_output_tok_s: float | None = Field(
        description="Output tok/s of the requests meeting the SLA: output_tok_s * goodput / "
        "request_rate. Cost and max_throughput use this number."
    )
    tok_s_per_gpu: float | None = Field(description="Measured output tok/s per GPU.")
    usd_per_1m_output_tokens: float | None = Field(
        description="gpus * usd_per_gpu_hour / (good_output_tok_s * 3600) * 1e6."
    )
    ttft_p99_ms: float | None
    itl_p99_ms: float | None
    accuracy: list[AccuracyCheck]
    accuracy_drop: float | None = Field(
        description="The largest per-metric drop (the SLA's mode); None when not measured."
    )
    on_pareto_front: bool
    rank: int | None = Field(description="1 = champion; None for rejected trials.")


class CapacityPlan(_Record):
    """Replicas of the champion needed to serve a target request rate within the SLA."""

    slug: str
    target_request_rate: float = Field(description="Requests per second to serve.")
    goodput_per_replica: float = Field(description="Requests/s one replica serves within the SLA.")
    operating_concurrency: int
    replicas: int = Field(description="ceil(target_request_rate / goodput_per_replica).")
    gpus_per_replica: int
    total_gpus: int
    usd_per_gpu_hour: float
    usd_per_hour: float = Field(description="total_gpus * usd_per_gpu_hour.")


class CapacityCheck(_Record):
    """The capacity plan replayed: Poisson arrivals at the per-replica rate against one replica of
    the champion (`flows.capacity_check`), measured; or why it was not."""

    slug: str
    per_replica_rate: float = Field(description="target_request_rate / replicas, req/s.")
    ran: bool
    holds: bool | None = Field(default=None, description="The SLA held at that rate (None: not run).")
    ttft_p99_ms: float | None = None
    itl_p99_ms: float | None = None
    goodput: float | None = Field(default=None, description="Req/s meeting the SLA in the replay.")
    replicas_needed: int | None = Field(
        default=None, description="The plan's count when it holds; else estimated from the replay's goodput."
    )
    verdict: str


class Selection(_Record):
    """The outcome of selecting over one sweep's trial records."""

    source: Literal["measured"] = "measured"
    hardware: str = Field(description="What every ranked number was measured on.")
    sla: SLA
    objective: Objective
    usd_per_gpu_hour: float
    rows: list[TrialSelection] = Field(
        description="One per trial: ranked feasible trials first (by rank), then rejected ones by slug."
    )
    champion: str | None
    champion_reason: str = Field(description="Why the champion won, or why there is none.")
    capacity: CapacityPlan | None = Field(description="None without a target rate or champion.")
    capacity_check: CapacityCheck | None = Field(
        default=None, description="The capacity plan replayed against one replica, when it ran."
    )

    @property
    def feasible(self) -> list[TrialSelection]:
        return [row for row in self.rows if row.feasible]

    @property
    def pareto_front(self) -> list[str]:
        return [row.slug for row in self.rows if row.on_pareto_front]

    def row(self, slug: str) -> TrialSelection:
        """The row of trial `slug`; KeyError naming the known slugs otherwise."""
        for row in self.rows:
            if row.slug == slug:
                return row
        raise KeyError(f"no trial {slug} in this selection (trials: {', '.join(r.slug for r in self.rows)})")
