"""Each trial of a sweep as the report sees it: its plan entry, its record and its selection row
joined by slug, with one outcome in words, and the measured point the Pareto plots place it at.

Outcomes: `champion`, `feasible`, `rejected by selection` (measured, but misses the latency SLA
or the accuracy gate), `failed` (with its error), `rejected at plan` (a hard rule or memory, with
the reasons), `pruned at plan` (`planner.top_k`), `not run` (planned for another GPU, or not part
of this sweep run).
"""

from __future__ import annotations

from dataclasses import dataclass

from enginesweep.build_configs.schema import SLA
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.records import PlannedTrial
from enginesweep.evaluation.records import ConcurrencyResult, TrialRecord
from enginesweep.evaluation.reports.sweep_source import SweepSource
from enginesweep.evaluation.selection.headline import accuracy_delta
from enginesweep.evaluation.selection.models import TrialSelection
from enginesweep.evaluation.selection.operating_point import point_metrics

OUTCOMES = (
    "champion",
    "feasible",
    "rejected by selection",
    "not judged",
    "failed",
    "rejected at plan",
    "pruned at plan",
    "not run",
)


@dataclass(frozen=True)
class TrialView:
    """One trial: what was planned, what was measured, how selection judged it."""

    slug: str
    planned: PlannedTrial | None
    record: TrialRecord | None
    row: TrialSelection | None
    outcome: str
    why: str

    @property
    def ok(self) -> bool:
        """The trial ran to the end and was benchmarked: a successful trial."""
        return (
            self.record is not None
            and self.record.status == "ok"
            and self.record.benchmark is not None
            and bool(self.record.benchmark.levels)
        )

    @property
    def config(self) -> TrialConfig | None:
        if self.planned is not None:
            return self.planned.config
        return self.record.config if self.record else None

    @property
    def levels(self) -> list[ConcurrencyResult]:
        if not self.ok:
            return []
        return sorted(self.record.benchmark.levels, key=lambda level: level.load_value)


def _outcome(
    planned: PlannedTrial | None,
    record: TrialRecord | None,
    row: TrialSelection | None,
    champion: str | None,
    sweep_gpu: str | None,
) -> tuple[str, str]:
    if planned is not None and not planned.feasible:
        return "rejected at plan", "; ".join(planned.reasons)
    if planned is not None and planned.pruned is not None:
        return "pruned at plan", planned.pruned
    if record is None:
        if planned is not None and sweep_gpu is not None and planned.gpu != sweep_gpu:
            return "not run", f"planned for {planned.gpu}; this sweep ran on {sweep_gpu}"
        return "not run", "no trial run of this sweep run holds it"
    if record.status != "ok":
        return "failed", record.error or "no error was recorded"
    if row is None:
        return "not judged", "the sweep run has no selection (it stopped before selecting)"
    if row.slug == champion:
        return "champion", "rank 1 under the objective"
    if row.feasible:
        return "feasible", f"rank {row.rank}" + (", on the Pareto front" if row.on_pareto_front else "")
    return "rejected by selection", "; ".join(row.reasons)


def trial_views(source: SweepSource) -> list[TrialView]:
    """Every trial of the plan in plan order, then records the plan does not name (by slug)."""
    records = {record.slug: record for record in source.records}
    rows = {row.slug: row for row in source.selection.rows} if source.selection else {}
    champion = source.selection.champion if source.selection else None
    sweep_gpu = source.plan.sweep_gpu if source.plan else None
    planned = list(source.plan.trials) if source.plan else []
    slugs = [trial.slug for trial in planned]
    slugs += sorted(set(records) - set(slugs))
    by_slug = {trial.slug: trial for trial in planned}
    views = []
    for slug in slugs:
        plan_entry, record, row = by_slug.get(slug), records.get(slug), rows.get(slug)
        outcome, why = _outcome(plan_entry, record, row, champion, sweep_gpu)
        views.append(
            TrialView(slug=slug, planned=plan_entry, record=record, row=row, outcome=outcome, why=why)
        )
    return views


@dataclass(frozen=True)
class MeasuredPoint:
    """Where the Pareto plots place one successful trial: at its operating point (the highest
    concurrency meeting the latency SLA, selection's numbers), or, without a selection, at its
    lowest concurrency, which says so (`at_sla` False)."""

    concurrency: int
    at_sla: bool
    goodput_per_gpu: float
    ttft_p99_ms: float
    tok_s_per_gpu: float
    usd_per_1m_tokens: float | None
    accuracy_delta: float | None
    group: str


UNJUDGED = "not judged (no selection)"
NO_OPERATING_POINT = "no concurrency level met the latency SLA"


def _group(view: TrialView, champion: str | None) -> str:
    row = view.row
    if row is None:
        return UNJUDGED
    if view.slug == champion:
        return "champion"
    if row.feasible:
        return "feasible, Pareto front" if row.on_pareto_front else "feasible"
    return "rejected: accuracy gate"


def without_operating_point(views: list[TrialView]) -> list[str]:
    """Successful trials selection judged and found no operating point for (no concurrency
    level met the latency SLA): they have no at-SLA numbers, so the at-SLA plots leave them off."""
    return [
        view.slug
        for view in views
        if view.ok and view.row is not None and view.row.operating_concurrency is None
    ]


def measured_point(
    view: TrialView, gpus: int, usd_per_gpu_hour: float | None, champion: str | None
) -> MeasuredPoint | None:
    """The trial's point for the Pareto plots; None for a trial that was not benchmarked, or that
    has no operating point (`without_operating_point`: selection refused it any at-SLA number)."""
    if not view.ok:
        return None
    row = view.row
    group = _group(view, champion)
    delta = accuracy_delta(row) if row is not None else None
    if row is not None:
        if row.operating_concurrency is None:
            return None
        return MeasuredPoint(
            concurrency=row.operating_concurrency,
            at_sla=True,
            goodput_per_gpu=row.goodput_per_gpu,
            ttft_p99_ms=row.ttft_p99_ms,
            tok_s_per_gpu=row.tok_s_per_gpu,
            usd_per_1m_tokens=row.usd_per_1m_output_tokens,
            accuracy_delta=delta,
            group=group,
        )
    # No selection: no operating point is known; the figures say these are lowest-level numbers.
    level = view.levels[0]
    goodput = level.goodput if level.goodput is not None else level.request_rate
    cost = None
    if usd_per_gpu_hour is not None and goodput > 0 and level.output_tok_s > 0:
        cost = point_metrics(level, gpus, usd_per_gpu_hour).usd_per_1m_output_tokens
    return MeasuredPoint(
        concurrency=level.concurrency,
        at_sla=False,
        goodput_per_gpu=goodput / gpus,
        ttft_p99_ms=level.ttft_ms.p99,
        tok_s_per_gpu=level.output_tok_s_per_gpu,
        usd_per_1m_tokens=cost,
        accuracy_delta=delta,
        group=group,
    )


def prediction_source(view: TrialView) -> str | None:
    """The predictor of the prediction a trial ran with (its record's: a reused trial keeps the
    one of the run that measured it); the plan's only for a trial that did not run."""
    if view.record is not None:
        return view.record.predicted.source if view.record.predicted else None
    planned = view.planned
    return planned.predicted.source if planned is not None and planned.predicted else None


def sla_of(source: SweepSource) -> SLA | None:
    """The SLA the sweep was judged under: the selection's, else the spec's."""
    if source.selection is not None:
        return source.selection.sla
    return source.spec.sla if source.spec is not None else None
