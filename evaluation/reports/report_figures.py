"""The report's figures as data (`report_model.Figure`), one function per plot.

Measured figures place every successful trial (status ok, benchmarked) that has the numbers: the
Pareto plots take them at its operating point, so a trial with none (no concurrency level met the
latency SLA) is left off them and named in its section; a trial missing one number (no accuracy
measured, no engine size) is named in the figure's notes with the reason.
Predicted numbers get figures of their own, titled with their source: a figure never mixes
measured and predicted points under one unlabelled axis.
"""

from __future__ import annotations

from collections.abc import Callable

from enginesweep.build_configs.schema import SLA
from enginesweep.evaluation.provenance import predicted_label
from enginesweep.evaluation.reports.report_model import Figure, ReferenceLine, Series
from enginesweep.evaluation.reports.report_trials import (
    NO_OPERATING_POINT,
    UNJUDGED,
    MeasuredPoint,
    TrialView,
    measured_point,
    without_operating_point,
)
from enginesweep.evaluation.selection.headline import engine_size_gb

GROUP_SYMBOLS = {
    "champion": "star",
    "feasible, Pareto front": "diamond",
    "feasible": "circle",
    "rejected: accuracy gate": "x",
    UNJUDGED: "circle",
}


def _grouped(points: list[tuple[TrialView, MeasuredPoint, float, float, str]]) -> list[Series]:
    """One series per outcome group, in GROUP_SYMBOLS order (the legend reads best to worst)."""
    series = []
    for group, symbol in GROUP_SYMBOLS.items():
        chosen = [p for p in points if p[1].group == group]
        if chosen:
            series.append(
                Series(
                    name=group,
                    x=[p[2] for p in chosen],
                    y=[p[3] for p in chosen],
                    slugs=[p[0].slug for p in chosen],
                    hover=[p[4] for p in chosen],
                    symbol=symbol,
                )
            )
    return series


def _where(point: MeasuredPoint) -> str:
    if point.at_sla:
        return f"at c={point.concurrency} (operating point)"
    return f"at c={point.concurrency}: not judged (no selection)"


def _pareto(
    views: list[TrialView],
    *,
    figure_id: str,
    title: str,
    measured: str,
    x_title: str,
    y_title: str,
    usd_per_gpu_hour: float | None,
    champion: str | None,
    values: Callable[[TrialView, MeasuredPoint], tuple[float | None, float | None, str]],
    lines: list[ReferenceLine] | None = None,
) -> Figure:
    """One point per successful trial with an operating point: `values` reads (x, y,
    why-missing) at it. Trials without one are named by `pareto_section`, once for all plots."""
    points, notes = [], []
    for view in views:
        point = measured_point(view, view.config.world_size, usd_per_gpu_hour, champion)
        if point is None:  # not benchmarked, or no operating point: said in the section
            continue
        x, y, missing = values(view, point)
        if x is None or y is None:
            notes.append(f"{view.slug} not plotted: {missing}")
            continue
        points.append((view, point, x, y, f"{view.slug}<br>{_where(point)}"))
    if not any(view.ok for view in views):
        empty = "no trial of this sweep run was benchmarked successfully"
    elif not points and len(without_operating_point(views)) == sum(view.ok for view in views):
        empty = f"no successful trial has an operating point ({NO_OPERATING_POINT})"
    elif not points:
        empty = "no successful trial has both numbers (see the notes)"
    else:
        empty = None
    if UNJUDGED in {p[1].group for p in points}:
        notes.append(
            "without a selection no operating point is known: trials are shown at their lowest concurrency"
        )
    series = _grouped(points)
    shown, off = on_chart(lines or [], series)
    return Figure(
        id=figure_id,
        title=title,
        provenance=measured,
        x_title=x_title,
        y_title=y_title,
        series=series,
        reference_lines=shown,
        empty_reason=empty,
        notes=notes + off,
    )


def on_chart(lines: list[ReferenceLine], series: list[Series]) -> tuple[list[ReferenceLine], list[str]]:
    """The limits worth drawing, and a note for each left out: one more than twice as far from
    zero as every point would squash the points into a corner, so it is named instead."""
    shown, notes = [], []
    for line in lines:
        values = [
            abs(v) for s in series for v in (s.x if line.axis == "x" else s.y) if isinstance(v, (int, float))
        ]
        reach = max(values, default=0.0)
        if reach > 0 and abs(line.value) > 2 * reach:
            notes.append(f"{line.label} ({line.value:g}) is off the chart: every point is well inside it")
        else:
            shown.append(line)
    return shown, notes


def pareto_figures(
    views: list[TrialView],
    *,
    measured: str,
    sla: SLA | None,
    usd_per_gpu_hour: float | None,
    champion: str | None,
) -> list[Figure]:
    """Goodput per GPU vs TTFT p99; $ per 1M tokens vs accuracy delta; engine size vs throughput."""
    ttft_line = (
        [ReferenceLine(axis="x", value=sla.ttft_p99_ms, label="SLA TTFT p99")]
        if sla is not None and sla.ttft_p99_ms
        else []
    )
    accuracy_line = (
        [
            ReferenceLine(
                axis="x",
                value=-sla.max_accuracy_drop,
                label=f"SLA: largest allowed drop ({sla.accuracy_drop_mode})",
            )
        ]
        if sla is not None and sla.max_accuracy_drop is not None
        else []
    )
    mode = sla.accuracy_drop_mode if sla is not None else "relative"
    common = {"measured": measured, "usd_per_gpu_hour": usd_per_gpu_hour, "champion": champion}
    return [
        _pareto(
            views,
            figure_id="pareto-goodput-ttft",
            title="Goodput per GPU vs TTFT p99",
            x_title="TTFT p99 (ms)",
            y_title="goodput per GPU (requests/s meeting the SLA)",
            values=lambda v, p: (p.ttft_p99_ms, p.goodput_per_gpu, ""),
            lines=ttft_line,
            **common,
        ),
        _pareto(
            views,
            figure_id="pareto-cost-accuracy",
            title="$ per 1M output tokens vs accuracy delta",
            x_title="accuracy delta vs the unquantized baseline ("
            + ("fraction of the baseline" if mode == "relative" else "absolute")
            + "; negative = worse)",
            y_title="$ per 1M good output tokens",
            values=lambda v, p: (
                p.accuracy_delta,
                p.usd_per_1m_tokens,
                "no accuracy measured against the baseline"
                if p.accuracy_delta is None
                else "no request met the SLA, so no cost per good token",
            ),
            lines=accuracy_line,
            **common,
        ),
        _pareto(
            views,
            figure_id="pareto-size-throughput",
            title="Engine size vs throughput",
            x_title="engine size (GB, 1e9 bytes)",
            y_title="output tok/s per GPU at the operating point",
            values=lambda v, p: (engine_size_gb(v.record), p.tok_s_per_gpu, "no engine size recorded"),
            **common,
        ),
    ]


def latency_figures(views: list[TrialView], *, measured: str, sla: SLA | None) -> list[Figure]:
    """TTFT p99 and ITL p99 against output tok/s per GPU, one curve per trial across its
    concurrency levels."""
    figures = []
    for figure_id, name, read, limit in (
        ("latency-ttft", "TTFT p99", lambda level: level.ttft_ms.p99, sla and sla.ttft_p99_ms),
        ("latency-itl", "ITL p99", lambda level: level.itl_ms.p99, sla and sla.itl_p99_ms),
    ):
        series = [
            Series(
                name=view.slug,
                mode="lines+markers",
                x=[level.output_tok_s_per_gpu for level in view.levels],
                y=[read(level) for level in view.levels],
                slugs=[view.slug] * len(view.levels),
                hover=[f"{view.slug}<br>{level.label}" for level in view.levels],
            )
            for view in views
            if view.ok
        ]
        lines = [ReferenceLine(axis="y", value=limit, label=f"SLA {name}")] if limit else []
        lines, off = on_chart(lines, series)
        figures.append(
            Figure(
                id=figure_id,
                title=f"{name} vs throughput across load levels",
                provenance=measured,
                x_title="output tok/s per GPU",
                y_title=f"{name} (ms)",
                series=series,
                reference_lines=lines,
                notes=off,
                empty_reason=None if series else "no trial of this sweep run was benchmarked successfully",
            )
        )
    return figures


def _error_pct(predicted: float, measured: float) -> float | None:
    return (predicted - measured) / measured * 100 if measured else None


PREDICTED_PAIRS = (
    # (name, predicted field, measured reader): TTFT and ITL against the measured p50, as
    # evaluation.tracking's pred_error_* metrics do (the predictors model a typical request).
    ("TTFT", "ttft_ms", lambda level: level.ttft_ms.p50),
    ("ITL", "itl_ms", lambda level: level.itl_ms.p50),
    ("output tok/s", "output_tok_s", lambda level: level.output_tok_s),
)


def prediction_rows(views: list[TrialView]) -> list[tuple[TrialView, str, int, str, float, float]]:
    """(trial, source, concurrency, metric, predicted, measured) for every level a successful
    trial has both a prediction and a measurement of."""
    rows = []
    for view in views:
        predicted = view.record.predicted if view.ok else None
        if not predicted:
            continue
        # The planner predicts closed-loop levels: open-loop ones have nothing to compare with.
        measured = {level.concurrency: level for level in view.levels if level.pacing == "concurrency"}
        for level in predicted.per_concurrency:
            got = measured.get(level.concurrency)
            if got is None:
                continue
            for metric, field, read in PREDICTED_PAIRS:
                rows.append(
                    (
                        view,
                        predicted.source,
                        level.concurrency,
                        metric,
                        float(getattr(level, field)),
                        float(read(got)),
                    )
                )
    return rows


def prediction_figure(views: list[TrialView], *, measured: str) -> Figure:
    """(predicted - measured) / measured per trial and concurrency, one series per metric and
    prediction source."""
    rows = prediction_rows(views)
    sources = {source for _, source, *_ in rows}
    series = []
    for source in sorted(sources):
        for metric, _, _ in PREDICTED_PAIRS:
            chosen = [
                r for r in rows if r[1] == source and r[3] == metric and _error_pct(r[4], r[5]) is not None
            ]
            if chosen:
                series.append(
                    Series(
                        name=f"{metric} ({source})",
                        x=[f"{r[0].slug} c={r[2]}" for r in chosen],
                        y=[_error_pct(r[4], r[5]) for r in chosen],
                        slugs=[r[0].slug for r in chosen],
                        hover=[
                            f"{r[0].slug} c={r[2]}: predicted {r[4]:.4g}, measured {r[5]:.4g}" for r in chosen
                        ],
                    )
                )
    unpredicted = [view.slug for view in views if view.ok and not view.record.predicted]
    return Figure(
        id="predicted-vs-measured",
        title="Prediction error by trial and concurrency",
        provenance=f"{predicted_label(sources)} vs {measured}",
        x_title="trial and concurrency",
        y_title="(predicted - measured) / measured (%)",
        series=series,
        reference_lines=[ReferenceLine(axis="y", value=0.0, label="exact")],
        empty_reason=None
        if series
        else "no successful trial has a prediction and a measurement at the same concurrency",
        notes=[f"{slug}: no prediction recorded" for slug in unpredicted],
    )


MEMORY_PARTS = (
    ("weights", lambda m: m.weights_bytes_per_gpu),
    ("runtime reserve", lambda m: m.runtime_reserve_bytes_per_gpu),
    ("activations", lambda m: m.activation_bytes_per_gpu),
    ("KV cache budget", lambda m: m.kv_budget_bytes_per_gpu),
    (
        "left free",
        lambda m: max(
            0,
            m.gpu_memory_bytes
            - m.weights_bytes_per_gpu
            - m.runtime_reserve_bytes_per_gpu
            - m.activation_bytes_per_gpu
            - m.kv_budget_bytes_per_gpu,
        ),
    ),
)


def memory_figure(views: list[TrialView]) -> Figure:
    """The planner's memory breakdown of the fullest GPU, one stacked bar per planned trial."""
    planned = [view for view in views if view.planned is not None]
    series = (
        [
            Series(
                name=name,
                mode="bar",
                x=[view.slug for view in planned],
                y=[read(view.planned.memory) / 1e9 for view in planned],
                slugs=[view.slug for view in planned],
                hover=[
                    f"{view.slug}: {name} {read(view.planned.memory) / 1e9:.3g} GB ({view.outcome})"
                    for view in planned
                ],
            )
            for name, read in MEMORY_PARTS
        ]
        if planned
        else []
    )
    return Figure(
        id="memory-breakdown",
        title="Memory of the fullest GPU per trial",
        provenance="predicted: the planner's memory model (not measured)",
        x_title="trial",
        y_title="GB (1e9 bytes)",
        series=series,
        stacked=True,
        empty_reason=None if planned else "the sweep run has no plan.json",
    )
