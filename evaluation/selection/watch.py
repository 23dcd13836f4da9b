"""The champion watch: has the champion regressed, or does a new trial dominate it? Pure
functions over numbers, so that every threshold can be checked by hand.

Each metric is compared as reference (the champion's measurement when it was registered: n
values, usually 1) against current (the new measurements: m values). "Worse by" is current -
reference for a lower-is-better metric (latency, cost, perplexity) and reference - current for a
higher-is-better one (goodput, throughput, accuracy), means on both sides; positive is worse. A
change counts when it exceeds

    threshold = max(noise_k * s_p * sqrt(1/n + 1/m),  floor * |reference mean|)

where s_p is the pooled standard deviation of every group of measurements of one engine,
sqrt((sum of squared deviations from each group's own mean) / (sum of (group size - 1))): the
reference, the current side, and the champion's later re-measurements (`history`: earlier drift
checks, h values). The history sets the spread only, never the reference mean: a regression
measured by an earlier check must not become the baseline that the next check compares with.
With one value on each side and no history there is no spread to pool: the floor alone applies and
the check says so. The champion regressed when any metric is worse by more than its threshold, or
when no current measurement meets the SLA at all; a candidate dominates the champion when it is
worse by more than the threshold on no metric and better by more than it on at least one. A check
that measured nothing of the champion and compared no candidate is `unchecked`, never `ok`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Direction(str, Enum):
    """Which way a metric improves."""

    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class Samples(_Record):
    """One metric measured on both sides, and the floor its threshold never goes below."""

    metric: str
    direction: Direction
    reference: list[float] = Field(
        min_length=1, description="The champion's values when it was registered: the reference mean."
    )
    current: list[float] = Field(min_length=1, description="The new measurement(s).")
    history: list[float] = Field(
        default=[], description="Later re-measurements of the reference engine: the spread (noise) only."
    )
    floor: float = Field(ge=0, description="Smallest change that counts, as a share of the reference mean.")


class MetricCheck(_Record):
    """One metric compared: how much worse the current side is, against which threshold."""

    metric: str
    direction: Direction
    reference_mean: float
    current_mean: float
    n_reference: int
    n_current: int
    n_history: int = Field(default=0, description="Re-measurements pooled into the spread only.")
    worse_by: float = Field(
        description="Positive: the current side is worse, in the metric's unit; negative: better."
    )
    threshold: float = Field(description="The change that counts (see the module docstring).")
    pooled_std: float | None = Field(description="None when no spread could be estimated.")
    basis: Literal["noise", "floor"] = Field(description="Which term set the threshold.")
    note: str = ""

    @property
    def worse(self) -> bool:
        """Worse by more than the threshold."""
        return self.worse_by > self.threshold

    @property
    def better(self) -> bool:
        """Better by more than the threshold."""
        return -self.worse_by > self.threshold

    def describe(self) -> str:
        """One line: the means, the change and the threshold, with its basis."""
        change = f"worse by {self.worse_by:.4g}" if self.worse_by >= 0 else f"better by {-self.worse_by:.4g}"
        verdict = " (counts)" if self.worse or self.better else " (within threshold)"
        history = f", +{self.n_history} for the noise" if self.n_history else ""
        return (
            f"{self.metric}: {self.reference_mean:.4g} -> {self.current_mean:.4g} "
            f"(n={self.n_reference}, m={self.n_current}{history}), {change}{verdict}; threshold "
            f"{self.threshold:.4g} ({self.basis}){'; ' + self.note if self.note else ''}"
        )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def pooled_std(*groups: Sequence[float]) -> float | None:
    """sqrt(sum of SS_g / sum of (size_g - 1)) over the non-empty groups, SS_g being the squared
    deviations from the group's own mean (two groups: (SS_reference + SS_current) / (n + m - 2));
    None when no group has two values."""
    groups = tuple(g for g in groups if g)
    dof = sum(len(g) - 1 for g in groups)
    if dof <= 0:
        return None
    squares = sum(sum((v - _mean(g)) ** 2 for v in g) for g in groups)
    return math.sqrt(squares / dof)


def compare(samples: Samples, noise_k: float) -> MetricCheck:
    """The check of one metric (see the module docstring for the threshold)."""
    ref, cur = _mean(samples.reference), _mean(samples.current)
    n, m = len(samples.reference), len(samples.current)
    worse_by = cur - ref if samples.direction is Direction.LOWER_IS_BETTER else ref - cur
    # The history widens the spread estimate only: n stays the reference's own count.
    spread = pooled_std(samples.reference, samples.history, samples.current)
    floor = samples.floor * abs(ref)
    if spread is None:
        threshold, basis = floor, "floor"
        note = "one measurement on each side: no noise estimate, the floor alone applies"
    else:
        noise = noise_k * spread * math.sqrt(1 / n + 1 / m)
        threshold, basis = (noise, "noise") if noise > floor else (floor, "floor")
        note = ""
    return MetricCheck(
        metric=samples.metric,
        direction=samples.direction,
        reference_mean=ref,
        current_mean=cur,
        n_reference=n,
        n_current=m,
        n_history=len(samples.history),
        worse_by=worse_by,
        threshold=threshold,
        pooled_std=spread,
        basis=basis,
        note=note,
    )


def dominates(checks: Sequence[MetricCheck]) -> bool:
    """The current side (a candidate) is worse beyond the threshold on no metric and better
    beyond it on at least one (the champion being the reference side)."""
    return bool(checks) and not any(c.worse for c in checks) and any(c.better for c in checks)


class Candidate(_Record):
    """A new trial's metrics compared with the champion's (the candidate is the current side)."""

    slug: str
    checks: list[MetricCheck]

    @property
    def dominates(self) -> bool:
        return dominates(self.checks)


class Verdict(_Record):
    """What the watch concluded about the champion after one scheduled run."""

    champion: str
    status: Literal["ok", "regressed", "dominated", "unchecked"] = Field(
        description="dominated when a candidate dominates the champion (whether or not it also "
        "regressed), else regressed, else unchecked when the check measured nothing "
        "of the champion that it had to (`unchecked_reason`), else ok."
    )
    regressed: bool
    regressions: list[str] = Field(description="Each metric (or SLA miss) that regressed, in words.")
    dominated_by: str | None
    checks: list[MetricCheck] = Field(description="The champion's new measurements vs its reference.")
    candidates: list[Candidate] = Field(description="New trials vs the champion, best-ranked first.")
    unchecked_reason: str | None = Field(
        default=None, description="Why the champion was not checked (status unchecked)."
    )
    notes: list[str]
    summary: str


def watch_verdict(
    champion: str,
    champion_samples: Sequence[Samples],
    candidate_samples: Sequence[tuple[str, Sequence[Samples]]],
    *,
    noise_k: float,
    sla_misses: Sequence[str] = (),
    notes: Sequence[str] = (),
    unchecked: str | None = None,
) -> Verdict:
    """The verdict on `champion` from its re-measured metrics (`champion_samples`, maybe none),
    the new trials' metrics against its own (`candidate_samples`, in rank order: the first that
    dominates is named) and the SLA misses of its new measurements (`sla_misses`: given only
    when no new measurement met the SLA). `unchecked`: why the champion was not measured when it
    should have been (a drift check's failed or missing re-benchmark); with nothing compared at
    all the verdict is unchecked too. Unchecked is never ok: nothing says the champion holds."""
    checks = [compare(s, noise_k) for s in champion_samples]
    regressions = [c.describe() for c in checks if c.worse] + [f"SLA: {m}" for m in sla_misses]
    candidates = [
        Candidate(slug=slug, checks=[compare(s, noise_k) for s in samples])
        for slug, samples in candidate_samples
    ]
    dominated_by = next((c.slug for c in candidates if c.dominates), None)
    regressed = bool(regressions)
    if unchecked is None and not checks and not candidates and not regressions:
        unchecked = "nothing new was measured to compare"
    status = "dominated" if dominated_by else "regressed" if regressed else "unchecked" if unchecked else "ok"
    all_notes = list(notes) + sorted({f"{c.metric}: {c.note}" for c in checks if c.note})
    parts = [f"champion {champion}: {status}"]
    if unchecked:
        parts.append(f"not checked: {unchecked}")
    if regressed:
        parts.append("regressed on " + "; ".join(regressions))
    if dominated_by:
        winner = next(c for c in candidates if c.slug == dominated_by)
        parts.append(
            f"dominated by {dominated_by} (better on "
            + ", ".join(c.metric for c in winner.checks if c.better)
            + ")"
        )
    elif candidates:
        parts.append(f"{len(candidates)} new trial(s) compared, none dominates")
    return Verdict(
        champion=champion,
        status=status,
        regressed=regressed,
        regressions=regressions,
        dominated_by=dominated_by,
        checks=checks,
        candidates=candidates,
        unchecked_reason=unchecked,
        notes=all_notes,
        summary="; ".join(parts),
    )
