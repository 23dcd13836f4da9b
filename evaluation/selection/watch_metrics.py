"""Trial records -> the samples the champion watch compares (`evaluation.selection.watch`).

Two views of a record, both judged under the spec's SLA with `judge_trial`:

* the champion's own re-measurements (`champion_samples`) are compared at ONE concurrency, the
  champion's operating point in its reference record, so that a shifted operating point cannot
  make latencies look better: `ttft_p99_ms@c<N>`, `itl_p99_ms@c<N>`, `e2e_p99_ms@c<N>` (lower is
  better), `output_tok_s@c<N>` (higher), `@r<rate>` at a request-rate level; plus `goodput_req_s`
  at the SLA (higher; 0 when no level meets the latency SLA);
* a new trial against the champion (`candidate_samples`) is compared where each is operated:
  `goodput_req_s`, `usd_per_1m_output_tokens` and `ttft_p99_ms` / `itl_p99_ms` at its own
  operating point.

Both add the accuracy metrics the records share: `perplexity` (lower), `top1_accuracy` and task
scores `<task>.<metric>` (their own direction). Latency/throughput/cost get the floor
`watch.min_relative_change`, accuracy `watch.accuracy_min_change`. The champion's reference
records are its registered measurement first, then its later re-measurements: the first sets the
reference values, the others only the spread (`Samples.history`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from enginesweep.build_configs.schema import SLA, Watch
from enginesweep.evaluation.records import ConcurrencyResult, TrialRecord
from enginesweep.evaluation.selection.choose import judge_trial
from enginesweep.evaluation.selection.models import TrialSelection
from enginesweep.evaluation.selection.operating_point import operating_point
from enginesweep.evaluation.selection.watch import Direction, Samples

_UP, _DOWN = Direction.HIGHER_IS_BETTER, Direction.LOWER_IS_BETTER
_AT_LEVEL: dict[str, tuple[Direction, Callable[[ConcurrencyResult], float]]] = {
    "ttft_p99_ms": (_DOWN, lambda level: level.ttft_ms.p99),
    "itl_p99_ms": (_DOWN, lambda level: level.itl_ms.p99),
    "e2e_p99_ms": (_DOWN, lambda level: level.e2e_ms.p99),
    "output_tok_s": (_UP, lambda level: level.output_tok_s),
}
_AT_OPERATING_POINT: dict[str, tuple[Direction, Callable[[TrialSelection], float | None]]] = {
    "goodput_req_s": (_UP, lambda row: row.goodput),
    "usd_per_1m_output_tokens": (_DOWN, lambda row: row.usd_per_1m_output_tokens),
    "ttft_p99_ms": (_DOWN, lambda row: row.ttft_p99_ms),
    "itl_p99_ms": (_DOWN, lambda row: row.itl_p99_ms),
}


class Value(NamedTuple):
    """One measured number, which way it improves, and whether it is an accuracy metric (its
    floor is `watch.accuracy_min_change`, else `watch.min_relative_change`)."""

    direction: Direction
    value: float
    accuracy: bool = False


Values = dict[str, Value]


def operating_key(record: TrialRecord, sla: SLA) -> str | None:
    """The key (`c4`, `r2.5`, `replay`) of the level at which `record` meets the latency SLA at
    its highest; None if none."""
    if record.benchmark is None:
        return None
    level, _ = operating_point(record.benchmark, sla)
    return None if level is None else level.key


def accuracy_values(record: TrialRecord) -> Values:
    """perplexity, top-1 and each task score of the record (what it measured of them)."""
    found: Values = {}
    accuracy = record.accuracy
    if accuracy is None:
        return found
    if accuracy.perplexity is not None:
        found["perplexity"] = Value(_DOWN, accuracy.perplexity, accuracy=True)
    if accuracy.top1_accuracy is not None:
        found["top1_accuracy"] = Value(_UP, accuracy.top1_accuracy, accuracy=True)
    for task in accuracy.tasks:
        found[f"{task.task}.{task.metric}"] = Value(
            _UP if task.higher_is_better else _DOWN, task.score, accuracy=True
        )
    return found


def level_values(record: TrialRecord, row: TrialSelection, level: int | str) -> Values:
    """Latencies and throughput at one level (a concurrency, or a level key such as `r2.5`;
    absent when the record did not measure it), and the goodput at the SLA (0 when no level
    meets the latency SLA)."""
    key = f"c{level}" if isinstance(level, int) else level
    found: Values = {"goodput_req_s": Value(_UP, row.goodput or 0.0)}
    levels = {lvl.key: lvl for lvl in (record.benchmark.levels if record.benchmark else [])}
    if key in levels:
        for name, (direction, read) in _AT_LEVEL.items():
            found[f"{name}@{key}"] = Value(direction, float(read(levels[key])))
    return found


def operating_values(row: TrialSelection) -> Values:
    """Goodput, cost and p99 latencies at the trial's own operating point (none if it has none)."""
    found: Values = {}
    for name, (direction, read) in _AT_OPERATING_POINT.items():
        value = read(row)
        if value is not None:
            label = name if name.startswith(("goodput", "usd")) else f"{name}@operating_point"
            found[label] = Value(direction, float(value))
    return found


def _samples(
    reference: Sequence[Values], current: Sequence[Values], watch: Watch, notes: list[str]
) -> list[Samples]:
    """One Samples per metric present in the registered measurement (`reference[0]`) and every
    current one; a metric missing on either side is named in `notes` rather than compared. The
    later re-measurements (`reference[1:]`) that have a metric add to its spread only."""
    registered, later = reference[0], reference[1:]
    names = [set(values) for values in (registered, *current)]
    common = set.intersection(*names)
    missing = sorted(set.union(*names) - common)
    if missing:
        notes.append("not compared (not measured on both sides): " + ", ".join(missing))
    out = []
    for name in sorted(common):
        first = registered[name]
        out.append(
            Samples(
                metric=name,
                direction=first.direction,
                reference=[first.value],
                history=[values[name].value for values in later if name in values],
                current=[values[name].value for values in current],
                floor=watch.accuracy_min_change if first.accuracy else watch.min_relative_change,
            )
        )
    return out


def champion_samples(
    reference: Sequence[TrialRecord],
    current: Sequence[TrialRecord],
    sla: SLA,
    usd_per_gpu_hour: float,
    watch: Watch,
) -> tuple[list[Samples], list[str], list[str]]:
    """The champion's re-measurements against its reference records (registered measurement
    first, then later re-measurements: see the module docstring): (samples, SLA misses, notes).
    SLA misses are returned only when NO current measurement meets the SLA (a single
    noisy repeat is not a regression by itself); they name what each one missed."""
    notes: list[str] = []
    concurrency = operating_key(reference[0], sla)
    if concurrency is None:
        notes.append(
            "the champion's reference record meets the latency SLA at no level: "
            "latencies compared at no fixed level"
        )
    rows = [judge_trial(r, sla, usd_per_gpu_hour) for r in (*reference, *current)]

    def values(record: TrialRecord, row: TrialSelection) -> Values:
        fixed = (
            level_values(record, row, concurrency)
            if concurrency is not None
            else {"goodput_req_s": Value(_UP, row.goodput or 0.0)}
        )
        return {**fixed, **accuracy_values(record)}

    ref_values = [values(r, row) for r, row in zip(reference, rows)]
    cur_rows = rows[len(reference) :]
    cur_values = [values(r, row) for r, row in zip(current, cur_rows)]
    misses = (
        []
        if any(row.feasible for row in cur_rows)
        else [
            f"{r.slug} measurement {i}: {'; '.join(row.reasons)}"
            for i, (r, row) in enumerate(zip(current, cur_rows), start=1)
        ]
    )
    return _samples(ref_values, cur_values, watch, notes), misses, notes


def candidate_samples(
    reference: Sequence[TrialRecord],
    candidate: Sequence[TrialRecord],
    sla: SLA,
    usd_per_gpu_hour: float,
    watch: Watch,
) -> list[Samples]:
    """A new trial (its records, all of one engine) against the champion's reference records
    (registered measurement first), each at its own operating point. A candidate that does not
    meet the SLA gives no samples: it cannot dominate."""
    rows = [judge_trial(r, sla, usd_per_gpu_hour) for r in candidate]
    if not all(row.feasible for row in rows):
        return []
    ref_rows = [judge_trial(r, sla, usd_per_gpu_hour) for r in reference]
    ref_values = [{**operating_values(row), **accuracy_values(r)} for r, row in zip(reference, ref_rows)]
    cur_values = [{**operating_values(row), **accuracy_values(r)} for r, row in zip(candidate, rows)]
    return _samples(ref_values, cur_values, watch, [])
