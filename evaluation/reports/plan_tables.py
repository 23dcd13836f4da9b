"""Console renderings of a plan and of one sized trial (rich tables).

Every predicted column is headed `pred` and every table is captioned with the prediction source,
so that a prediction is never mistaken for a measurement.
"""

from __future__ import annotations

from rich.table import Table

from evaluation.planning.expand import Plan
from evaluation.planning.records import PlannedTrial


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f}"


def plan_table(plan: Plan) -> Table:
    """One row per trial: memory, predictions, and the reason for each rejection."""
    table = Table(
        title=f"{plan.sweep}: {len(plan.feasible)} feasible, {len(plan.rejected)} rejected "
              f"({plan.architecture} on {plan.gpu})",
        caption="pred = predicted:roofline (not measured); GB = 1e9 bytes; KV seqs at ISL+OSL"
                + ("; cpu target: predictions are order-of-magnitude only" if plan.gpu == "cpu" else ""),
    )
    for column in ("trial", "weights GB/GPU", "KV tokens", "KV seqs", "pred TTFT ms",
                   "pred ITL ms", "pred tok/s", "pred $/1M tok", "status"):
        table.add_column(column, justify="left" if column in ("trial", "status") else "right",
                         overflow="fold")  # never truncate a slug or a reason
    for trial in plan.trials:
        mem, pred = trial.memory, trial.predicted
        status = "ok" if trial.feasible else "rejected: " + "; ".join(trial.reasons)
        if trial.feasible and trial.warnings:
            status = "ok (" + "; ".join(trial.warnings) + ")"
        table.add_row(
            trial.slug,
            _gb(mem.weights_bytes_per_gpu),
            f"{mem.kv_capacity_tokens:,}",
            f"{mem.kv_limited_sequences:,}",
            f"{pred.ttft_ms:.1f}" if pred else "-",
            f"{pred.itl_ms:.2f}" if pred else "-",
            f"{pred.output_tok_s:,.0f}" if pred else "-",
            f"{pred.usd_per_1m_output_tokens:.3f}" if pred else "-",
            status,
            style=None if trial.feasible else "dim",
        )
    return table


def size_table(trial: PlannedTrial) -> Table:
    """The sizing calculator's answer for one trial, as label/value rows."""
    mem, pred = trial.memory, trial.predicted
    table = Table(title=f"{trial.slug} on {trial.gpu}", show_header=False,
                  caption="predicted values come from the roofline model, not a measurement")
    table.add_column("what")
    table.add_column("value")
    rows = [
        ("feasible", "yes" if trial.feasible else "no: " + "; ".join(trial.reasons)),
        ("GPU memory", f"{_gb(mem.gpu_memory_bytes)} GB"),
        ("weights (whole model)", f"{_gb(mem.weights_bytes_total)} GB"),
        ("weights per GPU", f"{_gb(mem.weights_bytes_per_gpu)} GB"),
        ("runtime + activations per GPU",
         f"{_gb(mem.runtime_reserve_bytes_per_gpu + mem.activation_bytes_per_gpu)} GB"),
        ("KV bytes per token (whole model)", f"{mem.kv_bytes_per_token:,}"),
        ("KV budget per GPU", f"{_gb(mem.kv_budget_bytes_per_gpu)} GB"),
        ("KV capacity", f"{mem.kv_capacity_tokens:,} tokens"),
        ("max concurrent sequences", f"{mem.max_concurrent_sequences:,}"),
    ]
    if pred:
        rows += [
            ("pred TTFT (lone request)", f"{pred.ttft_ms:.1f} ms"),
            ("pred ITL (lone request)", f"{pred.itl_ms:.2f} ms"),
            ("pred saturated output", f"{pred.output_tok_s:,.0f} tok/s "
                                      f"({pred.output_tok_s_per_gpu:,.0f} per GPU)"),
            ("pred cost at saturation", f"${pred.usd_per_1m_output_tokens:.3f} per 1M output tokens"),
        ]
    rows += [("warning", warning) for warning in trial.warnings]
    for label, value in rows:
        table.add_row(label, value)
    return table
