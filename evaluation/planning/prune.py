"""`plan --top-k N`: keep the N best feasible trials per GPU by the predicted objective, plus the
best unquantized baseline (bf16 weights, 16-bit KV cache) that accuracy is measured against.

The predicted objective follows `sla.objective`, read at the SLA operating point (the highest
workload concurrency predicted to meet the SLA); without a latency SLA, at saturation. A trial
predicted to miss the SLA at every workload concurrency ranks after every trial that meets it.
Pruned trials stay in the plan with the reason, like rejected ones: nothing is silently dropped.
Ties break on the slug, so the same plan always prunes the same trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import NamedTuple

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Objective
from enginesweep.evaluation.planning.records import PlannedTrial, Prediction

_WORDS = {
    Objective.MIN_COST_PER_1M_TOKENS: "$ per 1M output tokens",
    Objective.MAX_GOODPUT_PER_GPU: "goodput per GPU",
    Objective.MAX_THROUGHPUT: "output tok/s",
    Objective.MIN_TTFT: "TTFT",
}


class Score(NamedTuple):
    """A trial's predicted objective: sorts best first (SLA met, then value ascending)."""

    misses_sla: bool
    value: float
    shown: str


def predicted_objective(trial: PlannedTrial, objective: Objective) -> Score | None:
    """The predicted objective of a feasible trial, at the SLA operating point (or, when no level
    meets the SLA or there is none, at saturation), with its unit and where it was read."""
    pred: Prediction | None = trial.predicted
    if pred is None:
        return None
    at_sla = pred.max_concurrency_meeting_sla is not None
    no_sla = all(level.meets_sla is None for level in pred.per_concurrency)
    gpus = trial.config.world_size
    if at_sla:
        point = next(
            level for level in pred.per_concurrency if level.concurrency == pred.max_concurrency_meeting_sla
        )
        where = f"at the SLA, c={point.concurrency}"
        values = {
            Objective.MIN_COST_PER_1M_TOKENS: (
                pred.usd_per_1m_output_tokens_at_sla or 0.0,
                f"${pred.usd_per_1m_output_tokens_at_sla:,.4f} per 1M output tokens",
            ),
            Objective.MAX_GOODPUT_PER_GPU: (
                -point.request_rate / gpus,
                f"{point.request_rate / gpus:,.3f} req/s per GPU",
            ),
            Objective.MAX_THROUGHPUT: (-point.output_tok_s, f"{point.output_tok_s:,.0f} output tok/s"),
            Objective.MIN_TTFT: (point.ttft_ms, f"TTFT {point.ttft_ms:,.1f} ms"),
        }
    else:
        # Every trial of a sweep has the same OSL, so tok/s per GPU ranks like req/s per GPU.
        where = "at saturation" + ("" if no_sla else ", SLA missed at every workload concurrency")
        values = {
            Objective.MIN_COST_PER_1M_TOKENS: (
                pred.usd_per_1m_output_tokens,
                f"${pred.usd_per_1m_output_tokens:,.4f} per 1M output tokens",
            ),
            Objective.MAX_GOODPUT_PER_GPU: (
                -pred.output_tok_s_per_gpu,
                f"{pred.output_tok_s_per_gpu:,.0f} output tok/s per GPU",
            ),
            Objective.MAX_THROUGHPUT: (-pred.output_tok_s, f"{pred.output_tok_s:,.0f} output tok/s"),
            Objective.MIN_TTFT: (pred.ttft_ms, f"TTFT {pred.ttft_ms:,.1f} ms (lone request)"),
        }
    value, text = values[objective]
    return Score(misses_sla=not (at_sla or no_sla), value=float(value), shown=f"{where}: {text}")


def is_baseline(trial: PlannedTrial) -> bool:
    """The unquantized reference that accuracy deltas are measured against."""
    return trial.config.quant is QuantFormat.BF16 and trial.config.kv_cache is KVCacheFormat.AUTO


def prune(trials: Sequence[PlannedTrial], top_k: int, objective: Objective) -> list[PlannedTrial]:
    """`trials` in their order, feasible ones beyond the top `top_k` per GPU marked `pruned`."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    reasons: dict[str, str] = {}
    feasible = sorted((t for t in trials if t.feasible), key=lambda t: t.gpu)
    for gpu, group in groupby(feasible, key=lambda t: t.gpu):
        scored = []
        for trial in group:
            score = predicted_objective(trial, objective)
            if score is not None:
                scored.append((score, trial))
        scored.sort(key=lambda item: (item[0].misses_sla, item[0].value, item[1].slug))
        kept = {trial.slug for _, trial in scored[:top_k]}
        baselines = [trial for _, trial in scored if is_baseline(trial)]
        if baselines and not kept & {b.slug for b in baselines}:
            kept.add(baselines[0].slug)  # accuracy needs its reference, whatever its rank
        for rank, (score, trial) in enumerate(scored, start=1):
            if trial.slug not in kept:
                reasons[trial.slug] = (
                    f"pruned by top-k {top_k}: rank {rank} of {len(scored)} on "
                    f"{gpu} by predicted {_WORDS[objective]} ({score.shown})"
                )
    return [t.model_copy(update={"pruned": reasons[t.slug]}) if t.slug in reasons else t for t in trials]
