"""`select`: trial records + SLA -> feasible set, Pareto front, ranking, champion, capacity plan.

Each record is judged on its own (`judge_trial`), then the feasible ones are placed on the Pareto
front and ranked (`ranking`). Input that must not be compared raises before anything is judged:
records measured on different hardware (`MixedHardwareError`), benchmarks of different workloads
(ISL/OSL), and two records with one slug.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from enginesweep.build_configs.schema import SLA
from enginesweep.evaluation.planning.prediction import replicas_for
from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.selection.accuracy_gate import accuracy_gate, is_baseline
from enginesweep.evaluation.selection.models import (
    CapacityPlan,
    MixedHardwareError,
    Selection,
    TrialSelection,
)
from enginesweep.evaluation.selection.operating_point import operating_point, point_metrics
from enginesweep.evaluation.selection.ranking import OBJECTIVE_WORDS, objective_value, pareto_front, ranked


def _empty_row(record: TrialRecord, gpus: int, baseline: bool, reasons: list[str]) -> TrialSelection:
    return TrialSelection(
        slug=record.slug,
        status=record.status,
        is_baseline=baseline,
        gpus=gpus,
        feasible=False,
        reasons=reasons,
        notes=[],
        operating_concurrency=None,
        goodput=None,
        goodput_per_gpu=None,
        output_tok_s=None,
        good_output_tok_s=None,
        tok_s_per_gpu=None,
        usd_per_1m_output_tokens=None,
        ttft_p99_ms=None,
        itl_p99_ms=None,
        accuracy=[],
        accuracy_drop=None,
        on_pareto_front=False,
        rank=None,
    )


def judge_trial(record: TrialRecord, sla: SLA, usd_per_gpu_hour: float) -> TrialSelection:
    """One record's operating point, numbers there, accuracy checks and every reason to reject it
    (a trial missing the latency SLA and the accuracy limit gets both reasons)."""
    config = record.config
    gpus, baseline = config.world_size, is_baseline(config)
    if record.status == "failed":
        return _empty_row(
            record, gpus, baseline, [f"trial failed: {record.error or 'no error was recorded'}"]
        )
    if record.benchmark is None:
        return _empty_row(record, gpus, baseline, ["no benchmark was recorded"])
    checks, worst, reasons = accuracy_gate(record.accuracy_deltas, sla, baseline_trial=baseline)
    level, latency_reason = operating_point(record.benchmark, sla)
    row = _empty_row(record, gpus, baseline, [])
    if level is None:
        return row.model_copy(
            update={"reasons": [latency_reason, *reasons], "accuracy": checks, "accuracy_drop": worst}
        )
    point = point_metrics(level, gpus, usd_per_gpu_hour)
    return row.model_copy(
        update={
            "feasible": not reasons,
            "reasons": reasons,
            "notes": list(point.notes),
            "operating_concurrency": level.concurrency,
            "operating_level": level.label,
            "operating_request_rate": level.target_request_rate,
            "goodput": point.goodput,
            "goodput_per_gpu": point.goodput_per_gpu,
            "output_tok_s": point.output_tok_s,
            "good_output_tok_s": point.good_output_tok_s,
            "tok_s_per_gpu": point.tok_s_per_gpu,
            "usd_per_1m_output_tokens": point.usd_per_1m_output_tokens,
            "ttft_p99_ms": level.ttft_ms.p99,
            "itl_p99_ms": level.itl_ms.p99,
            "accuracy": checks,
            "accuracy_drop": worst,
        }
    )


def common_hardware(records: Sequence[TrialRecord], expected: str | None = None) -> str:
    """The one hardware every record (and its benchmark and accuracy results) was measured on,
    which must be `expected` when given.

    Raises MixedHardwareError otherwise: CPU numbers must never be ranked against GPU numbers,
    nor one GPU's against another's."""
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        seen[record.hardware].add(record.slug)
        for part in (record.benchmark, record.accuracy, record.baseline_accuracy):
            if part is not None:
                seen[part.hardware].add(f"{record.slug} ({type(part).__name__})")
    if expected is not None and set(seen) - {expected}:
        raise MixedHardwareError(
            f"selecting for {expected}, but some records were measured on "
            f"other hardware: {_listing(seen, skip=expected)}"
        )
    if expected is not None and not seen:
        return expected
    if len(seen) != 1:
        raise MixedHardwareError(
            "records measured on different hardware cannot be ranked together (CPU numbers are "
            "never ranked against GPU numbers); select each hardware separately. Found " + _listing(seen)
        )
    return next(iter(seen))


def _listing(seen: dict[str, set[str]], skip: str | None = None) -> str:
    return "; ".join(f"{hw}: {', '.join(sorted(slugs))}" for hw, slugs in sorted(seen.items()) if hw != skip)


def _check_comparable(records: Sequence[TrialRecord]) -> None:
    slugs = [record.slug for record in records]
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise ValueError(
            f"several records share a slug ({', '.join(duplicates)}); select over one sweep's records"
        )
    workloads = {(r.benchmark.isl, r.benchmark.osl) for r in records if r.benchmark is not None}
    if len(workloads) > 1:
        raise ValueError(
            "benchmarks of different workloads cannot be ranked together (ISL/OSL: "
            f"{', '.join(f'{i}/{o}' for i, o in sorted(workloads))})"
        )


def capacity_plan(row: TrialSelection, target_request_rate: float, usd_per_gpu_hour: float) -> CapacityPlan:
    """Replicas of a feasible trial for `target_request_rate` requests/s: ceil(rate / goodput at
    the operating point); GPUs = replicas * TP*PP; $/hour = GPUs * usd_per_gpu_hour."""
    if target_request_rate <= 0:
        raise ValueError(f"target_request_rate must be positive, got {target_request_rate}")
    if not row.feasible or row.goodput is None or row.operating_concurrency is None:
        raise ValueError(f"{row.slug} is not feasible: no capacity plan without an operating point")
    replicas = replicas_for(target_request_rate, row.goodput)
    total = replicas * row.gpus
    return CapacityPlan(
        slug=row.slug,
        target_request_rate=target_request_rate,
        goodput_per_replica=row.goodput,
        operating_concurrency=row.operating_concurrency,
        replicas=replicas,
        gpus_per_replica=row.gpus,
        total_gpus=total,
        usd_per_gpu_hour=usd_per_gpu_hour,
        usd_per_hour=total * usd_per_gpu_hour,
    )


def select(
    records: Sequence[TrialRecord],
    sla: SLA,
    *,
    usd_per_gpu_hour: float,
    target_request_rate: float | None = None,
    hardware: str | None = None,
) -> Selection:
    """Judge every record under `sla`, build the Pareto front, rank the feasible trials by
    `sla.objective` and size the champion for `target_request_rate` (requests/s) if given.

    `usd_per_gpu_hour` is the price of the hardware the records were measured on (the spec's
    `target.usd_per_gpu_hour`, else the GPU catalog's). `hardware`, when given, is what the sweep
    targeted: every record must have been measured on it, and no records at all then gives a
    selection without a champion instead of an error. Raises ValueError for no records (without
    `hardware`), duplicate slugs or different workloads, and MixedHardwareError for mixed hardware.
    """
    if not records and hardware is None:
        raise ValueError("no trial records to select from (pass hardware= to accept none)")
    if usd_per_gpu_hour < 0:
        raise ValueError(f"usd_per_gpu_hour must not be negative, got {usd_per_gpu_hour}")
    if target_request_rate is not None and target_request_rate <= 0:
        raise ValueError(f"target_request_rate must be positive, got {target_request_rate}")
    hardware = common_hardware(records, hardware)
    _check_comparable(records)
    rows = [judge_trial(record, sla, usd_per_gpu_hour) for record in records]
    front = pareto_front(rows)
    order = ranked(rows, sla.objective)
    ranks = {row.slug: position for position, row in enumerate(order, start=1)}
    rows = [
        row.model_copy(update={"on_pareto_front": row.slug in front, "rank": ranks.get(row.slug)})
        for row in rows
    ]
    rows.sort(key=lambda row: (row.rank is None, row.rank or 0, row.slug))
    if order:
        champion: TrialSelection | None = rows[0]
        reason = (
            f"{OBJECTIVE_WORDS[sla.objective]} ({objective_value(champion, sla.objective)}) "
            f"of {len(order)} feasible trial(s); ties broken by cost, then slug"
        )
    elif rows:
        champion = None
        reason = f"no feasible trial: all {len(rows)} trial(s) were rejected (each row says why)"
    else:
        champion, reason = None, "no trial records: no trial of the sweep has run"
    capacity = (
        capacity_plan(champion, target_request_rate, usd_per_gpu_hour)
        if champion is not None and target_request_rate is not None
        else None
    )
    return Selection(
        hardware=hardware,
        sla=sla,
        objective=sla.objective,
        usd_per_gpu_hour=usd_per_gpu_hour,
        rows=rows,
        champion=champion.slug if champion else None,
        champion_reason=reason,
        capacity=capacity,
    )
