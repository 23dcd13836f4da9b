"""Pareto front and ranking of the feasible trials.

Pareto axes, all lower-is-better: cost per 1M output tokens, accuracy drop (an unmeasured drop
counts as the worst possible) and TTFT p99 at the operating point. A trial is on the front when no
other feasible trial is at least as good on every axis and strictly better on one; identical
trials are both on it. Ranking sorts by the objective's key, then cost, then slug, so the order is
total and deterministic:
min_cost_per_1m_tokens -> cost; max_goodput_per_gpu -> -goodput/GPU (requests/s meeting the SLA
per GPU); max_throughput -> -good output tok/s; min_ttft -> TTFT p99 at the operating point.
"""

from __future__ import annotations

import math

from enginesweep.build_configs.schema import Objective
from enginesweep.evaluation.selection.models import TrialSelection

OBJECTIVE_WORDS: dict[Objective, str] = {
    Objective.MIN_COST_PER_1M_TOKENS: "lowest cost per 1M output tokens",
    Objective.MAX_GOODPUT_PER_GPU: "highest goodput per GPU",
    Objective.MAX_THROUGHPUT: "highest output throughput within the SLA",
    Objective.MIN_TTFT: "lowest TTFT p99 at the operating point",
}


def _required(row: TrialSelection, value: float | None) -> float:
    if not row.feasible or value is None:
        raise ValueError(f"{row.slug} has no operating point: only feasible trials are ranked")
    return value


def pareto_axes(row: TrialSelection) -> tuple[float, float, float]:
    """(cost, accuracy drop, TTFT p99) of a feasible trial, each lower-is-better."""
    drop = math.inf if row.accuracy_drop is None else row.accuracy_drop
    return (_required(row, row.usd_per_1m_output_tokens), drop, _required(row, row.ttft_p99_ms))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """a is no worse than b everywhere and better somewhere (all axes lower-is-better)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(rows: list[TrialSelection]) -> set[str]:
    """Slugs of the feasible rows that no other feasible row dominates."""
    points = {row.slug: pareto_axes(row) for row in rows if row.feasible}
    return {
        slug
        for slug, axes in points.items()
        if not any(dominates(other, axes) for name, other in points.items() if name != slug)
    }


def rank_key(row: TrialSelection, objective: Objective) -> tuple[float, float, str]:
    """Sort key of a feasible row: the objective (negated when maximised), then cost, then slug."""
    cost = _required(row, row.usd_per_1m_output_tokens)
    primary = {
        Objective.MIN_COST_PER_1M_TOKENS: lambda: cost,
        Objective.MAX_GOODPUT_PER_GPU: lambda: -_required(row, row.goodput_per_gpu),
        Objective.MAX_THROUGHPUT: lambda: -_required(row, row.good_output_tok_s),
        Objective.MIN_TTFT: lambda: _required(row, row.ttft_p99_ms),
    }[objective]()
    return (primary, cost, row.slug)


def objective_value(row: TrialSelection, objective: Objective) -> str:
    """The number a feasible row is ranked by, with its unit, for reasons and captions."""
    return {
        Objective.MIN_COST_PER_1M_TOKENS: f"${row.usd_per_1m_output_tokens:,.4f} per 1M output tokens",
        Objective.MAX_GOODPUT_PER_GPU: f"{row.goodput_per_gpu:,.3f} req/s per GPU",
        Objective.MAX_THROUGHPUT: f"{row.good_output_tok_s:,.1f} good output tok/s",
        Objective.MIN_TTFT: f"TTFT p99 {row.ttft_p99_ms:,.0f} ms",
    }[objective]


def ranked(rows: list[TrialSelection], objective: Objective) -> list[TrialSelection]:
    """The feasible rows in rank order, best first."""
    return sorted((row for row in rows if row.feasible), key=lambda row: rank_key(row, objective))
