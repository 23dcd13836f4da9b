"""Console rendering of a `Selection`: one row per trial, champion first, rejected trials with
their reasons, and a caption that says what hardware the numbers were measured on; also as plain
text for files (MLflow artifacts)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from enginesweep.build_configs.gpus import gpu_catalog
from enginesweep.evaluation.selection.accuracy_gate import format_drop
from enginesweep.evaluation.selection.models import Selection


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _sla_words(selection: Selection) -> str:
    sla = selection.sla
    parts = [
        f"TTFT p99 <= {sla.ttft_p99_ms:g} ms" if sla.ttft_p99_ms else "TTFT unconstrained",
        f"ITL p99 <= {sla.itl_p99_ms:g} ms" if sla.itl_p99_ms else "ITL unconstrained",
    ]
    if sla.max_accuracy_drop is not None:
        mode = sla.accuracy_drop_mode
        parts.append(
            f"accuracy drop <= {format_drop(sla.max_accuracy_drop, mode)} ({mode}, {sla.accuracy_gate} gate)"
        )
    return ", ".join(parts)


def selection_caption(selection: Selection) -> str:
    """Where the numbers come from and under which SLA, price and objective they were ranked."""
    entry = gpu_catalog().get(selection.hardware)
    where = f"measured on {selection.hardware}"
    if entry is not None and entry.is_cpu:
        where += " (CPU reference stack: not GPU figures)"
    caption = (
        f"{where}; SLA: {_sla_words(selection)}; objective {selection.objective.value}; "
        f"${selection.usd_per_gpu_hour:g}/GPU-hour; numbers at the operating point c; "
        "$/1M is charged to good tok/s (tokens of requests meeting the SLA), tok/s counts "
        "every completed request; * = Pareto front"
    )
    if selection.capacity is not None:
        plan = selection.capacity
        caption += (
            f". Capacity for {plan.target_request_rate:g} req/s: {plan.replicas} x "
            f"{plan.gpus_per_replica} GPU = {plan.total_gpus} GPUs, "
            f"${plan.usd_per_hour:,.2f}/hour"
        )
    return caption


def selection_table(selection: Selection) -> Table:
    """The selection as a table: rank, numbers at the operating point, accuracy, reasons."""
    title = (
        f"champion: {selection.champion}"
        if selection.champion
        else f"no champion: {selection.champion_reason}"
    )
    table = Table(title=title, caption=selection_caption(selection))
    for name, justify in (
        ("#", "right"),
        ("trial", "left"),
        ("c", "right"),
        ("goodput req/s", "right"),
        ("good tok/s", "right"),
        ("tok/s", "right"),
        ("tok/s/GPU", "right"),
        ("$/1M out", "right"),
        ("TTFT p99 ms", "right"),
        ("ITL p99 ms", "right"),
        ("acc drop", "right"),
        ("why rejected", "left"),
    ):
        table.add_column(name, justify=justify)
    for row in selection.rows:
        mode = selection.sla.accuracy_drop_mode
        table.add_row(
            str(row.rank) if row.rank else "-",
            row.slug + (" *" if row.on_pareto_front else ""),
            _num(row.operating_concurrency, "d"),
            _num(row.goodput, ".2f"),
            _num(row.good_output_tok_s, ",.1f"),
            _num(row.output_tok_s, ",.1f"),
            _num(row.tok_s_per_gpu, ",.1f"),
            _num(row.usd_per_1m_output_tokens, ",.4f"),
            _num(row.ttft_p99_ms, ",.0f"),
            _num(row.itl_p99_ms, ".1f"),
            "-" if row.accuracy_drop is None else format_drop(row.accuracy_drop, mode),
            "; ".join(row.reasons),
            style="bold" if row.slug == selection.champion else None,
        )
    return table


def selection_table_text(selection: Selection, width: int = 240) -> str:
    """The table as plain text, wide enough that cells are not wrapped mid-word."""
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(selection_table(selection))
    return console.export_text()
