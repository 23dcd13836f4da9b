"""Console renderings of a plan and of one sized trial (rich tables).

Every predicted column is headed `pred`, and each row names its prediction source (`roofline`,
`aiconfigurator`, `+cal` when calibrated), so a prediction is never mistaken for a measurement.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from enginesweep.build_configs.schema import Objective
from enginesweep.evaluation.planning.expand import Plan
from enginesweep.evaluation.planning.prune import predicted_objective
from enginesweep.evaluation.planning.records import MemoryBreakdown, PlannedTrial, Prediction


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f}"


def source_tag(pred: Prediction | None) -> str:
    """`roofline`, `aiconfigurator`, with `+cal` when calibrated; `-` without a prediction."""
    if pred is None:
        return "-"
    return pred.source.removeprefix("predicted:").replace("+calibrated", "+cal")


def _status(trial: PlannedTrial) -> str:
    if not trial.feasible:
        return "rejected: " + "; ".join(trial.reasons)
    if trial.pruned:
        return trial.pruned
    return "ok" + (" (" + "; ".join(trial.warnings) + ")" if trial.warnings else "")


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def plan_table(plan: Plan) -> Table:
    """One row per trial: memory, predictions, and the reason for each rejection or pruning."""
    kept = len([t for t in plan.feasible if t.pruned is None])
    pruned = f", {len(plan.pruned)} pruned by top-k {plan.top_k}" if plan.top_k else ""
    builds = (
        f"; a sweep builds the {len(plan.to_run)} on {plan.sweep_gpu}"
        if len(plan.gpus) > 1 and plan.sweep_gpu
        else "; a sweep builds none until target.run_on names this machine's GPU"
        if len(plan.gpus) > 1
        else ""
    )
    table = Table(
        title=f"{plan.sweep}: {kept} kept, {len(plan.rejected)} rejected{pruned} "
        f"({plan.architecture} on {', '.join(plan.gpus)}){builds}",
        caption="pred = predicted (src says by what), not measured; GB = 1e9 bytes; KV seqs at "
        "ISL+OSL; SLA c = highest workload concurrency predicted to meet the SLA (raw TTFT/ITL "
        "are typical values, optimistic against p99 limits; +cal ones are fitted to measured p99s)"
        + ("; cpu target: predictions are order-of-magnitude only" if "cpu" in plan.gpus else ""),
    )
    for column in (
        "trial",
        "weights GB/GPU",
        "KV tokens",
        "KV seqs",
        "src",
        "pred TTFT ms",
        "pred ITL ms",
        "pred tok/s",
        "pred SLA c",
        "pred $/1M tok @SLA",
        "status",
    ):
        table.add_column(
            column, justify="left" if column in ("trial", "status", "src") else "right", overflow="fold"
        )  # never truncate a slug or a reason
    for trial in plan.trials:
        mem, pred = trial.memory, trial.predicted
        table.add_row(
            trial.slug,
            _gb(mem.weights_bytes_per_gpu),
            f"{mem.kv_capacity_tokens:,}",
            f"{mem.kv_limited_sequences:,}",
            source_tag(pred),
            f"{pred.ttft_ms:.1f}" if pred else "-",
            f"{pred.itl_ms:.2f}" if pred else "-",
            f"{pred.output_tok_s:,.0f}" if pred else "-",
            str(pred.max_concurrency_meeting_sla or "none") if pred else "-",
            _money(pred.usd_per_1m_output_tokens_at_sla if pred else None),
            _status(trial),
            style=None if trial.feasible and not trial.pruned else "dim",
        )
    return table


def gpu_comparison_table(plan: Plan, objective: Objective) -> Table:
    """Per listed GPU, its best feasible trial by the predicted objective, side by side."""
    best_by_gpu: dict[str, PlannedTrial | None] = {}
    for gpu in plan.gpus:
        scored = [(predicted_objective(t, objective), t) for t in plan.feasible if t.gpu == gpu]
        scored = [(score, t) for score, t in scored if score is not None]
        best_by_gpu[gpu] = (
            min(scored, key=lambda item: (item[0].misses_sla, item[0].value, item[1].slug))[1]
            if scored
            else None
        )
    sources = {t.predicted.source for t in best_by_gpu.values() if t and t.predicted}
    caption = "$/1M at SLA = from throughput at the SLA operating point, not peak"
    if len(sources) > 1:
        caption += (
            "; rows come from different predictors (see src): the roofline's error is far "
            "larger (docs/planner-fidelity.md)"
        )
    table = Table(title="GPUs side by side: the best trial on each (predicted)", caption=caption)
    for column in (
        "GPU",
        "best trial",
        "src",
        "GPUs",
        "pred SLA c",
        "pred tok/s/GPU @SLA",
        "pred $/1M tok @SLA",
        "pred $/1M tok peak",
        "$/GPU-h",
    ):
        table.add_column(
            column, justify="left" if column in ("GPU", "best trial", "src") else "right", overflow="fold"
        )

    def order(gpu: str) -> tuple:
        best = best_by_gpu[gpu]
        score = predicted_objective(best, objective) if best else None
        return (score is None, score.misses_sla if score else True, score.value if score else 0.0, gpu)

    for gpu in sorted(plan.gpus, key=order):
        best = best_by_gpu[gpu]
        if best is None or best.predicted is None:
            table.add_row(gpu, "no feasible trial", "-", "-", "-", "-", "-", "-", "-", style="dim")
            continue
        pred, gpus = best.predicted, best.config.world_size
        at_sla = (pred.output_tok_s_at_sla / gpus) if pred.output_tok_s_at_sla else None
        price = pred.usd_per_1m_output_tokens * pred.output_tok_s * 3600 / (gpus * 1e6)
        table.add_row(
            gpu,
            best.slug,
            source_tag(pred),
            str(gpus),
            str(pred.max_concurrency_meeting_sla or "none"),
            "-" if at_sla is None else f"{at_sla:,.0f}",
            _money(pred.usd_per_1m_output_tokens_at_sla),
            _money(pred.usd_per_1m_output_tokens),
            f"{price:.2f}",
        )
    return table


def capacity_table(plan: Plan) -> Table:
    """Replicas, GPUs and cost of each feasible trial for the plan's target request rate."""
    table = Table(
        title=f"Capacity plan for {plan.target_request_rate:g} requests/s (predicted)",
        caption="replicas = ceil(rate / goodput at the SLA operating point); $/1M = "
        "$/hour over the tokens actually served",
    )
    for column in (
        "trial",
        "src",
        "pred SLA c",
        "pred req/s per replica",
        "replicas",
        "GPUs",
        "$/hour",
        "$/1M output tok",
    ):
        table.add_column(column, justify="left" if column in ("trial", "src") else "right", overflow="fold")
    for trial in plan.feasible:
        cap, pred = trial.capacity, trial.predicted
        name = trial.slug + (" (pruned)" if trial.pruned else "")
        if cap is None:
            table.add_row(
                name,
                source_tag(pred),
                "none",
                "-",
                "-",
                "-",
                "-",
                "SLA not met at any workload concurrency",
                style="dim",
            )
            continue
        table.add_row(
            name,
            source_tag(pred),
            str(cap.max_concurrency_meeting_sla),
            f"{cap.goodput_req_s_per_replica:,.2f}",
            str(cap.replicas),
            str(cap.total_gpus),
            f"{cap.usd_per_hour:,.2f}",
            f"{cap.usd_per_1m_output_tokens:.3f}",
        )
    return table


def plan_report(plan: Plan, objective: Objective) -> list[Any]:
    """Everything `plan` prints: the trial table, the GPU comparison (several GPUs), the
    capacity plan (with a target rate) and the planner's notes."""
    out: list[Any] = [plan_table(plan)]
    if len(plan.gpus) > 1:
        out.append(gpu_comparison_table(plan, objective))
    if plan.target_request_rate is not None:
        out.append(capacity_table(plan))
    out += [Text(f"note: {note}") for note in plan.notes]
    return out


def plan_report_text(plan: Plan, objective: Objective) -> str:
    """`plan_report` as plain text (MLflow artifacts, logs)."""
    console = Console(width=220, record=True, file=io.StringIO())
    for renderable in plan_report(plan, objective):
        console.print(renderable)
    return console.export_text()


def _moe_weight_rows(mem: MemoryBreakdown) -> list[tuple[str, str]]:
    """A MoE model's weights per GPU in its two parts (and their bytes per weight)."""
    if mem.expert_bytes_per_gpu is None or mem.dense_bytes_per_gpu is None:
        return []
    return [
        (
            "  attention + dense per GPU",
            f"{_gb(mem.dense_bytes_per_gpu)} GB ({mem.dense_bytes_per_weight:.3g} bytes/weight;"
            " embeddings, norms, routers included)",
        ),
        (
            "  experts per GPU",
            f"{_gb(mem.expert_bytes_per_gpu)} GB ({mem.expert_bytes_per_weight:.3g} bytes/weight)",
        ),
    ]


def size_table(trial: PlannedTrial) -> Table:
    """The sizing calculator's answer for one trial, as label/value rows."""
    mem, pred = trial.memory, trial.predicted
    table = Table(
        title=f"{trial.slug} on {trial.gpu}",
        show_header=False,
        caption="pred = predicted, not a measurement"
        if pred
        else "no prediction for a rejected configuration",
    )
    table.add_column("what")
    table.add_column("value")
    rows = [
        ("feasible", "yes" if trial.feasible else "no: " + "; ".join(trial.reasons)),
        ("GPU memory", f"{_gb(mem.gpu_memory_bytes)} GB"),
        ("weights (whole model)", f"{_gb(mem.weights_bytes_total)} GB"),
        ("weights per GPU", f"{_gb(mem.weights_bytes_per_gpu)} GB"),
        *_moe_weight_rows(mem),
        (
            "runtime + activations per GPU",
            f"{_gb(mem.runtime_reserve_bytes_per_gpu + mem.activation_bytes_per_gpu)} GB",
        ),
        ("KV bytes per token (whole model)", f"{mem.kv_bytes_per_token:,}"),
        ("KV budget per GPU", f"{_gb(mem.kv_budget_bytes_per_gpu)} GB"),
        (
            "KV capacity",
            f"{mem.kv_capacity_tokens:,} tokens ({mem.kv_limited_sequences:,} sequences of ISL+OSL)",
        ),
        ("max concurrent sequences", f"{mem.max_concurrent_sequences:,}"),
    ]
    if pred:
        rows += [
            ("predicted by", f"{pred.source} ({pred.source_version})"),
            ("pred TTFT (lone request)", f"{pred.ttft_ms:.1f} ms"),
            ("pred ITL (lone request)", f"{pred.itl_ms:.2f} ms"),
            (
                "pred saturated output",
                f"{pred.output_tok_s:,.0f} tok/s ({pred.output_tok_s_per_gpu:,.0f} per GPU)",
            ),
            ("pred cost at saturation", f"${pred.usd_per_1m_output_tokens:.3f} per 1M output tokens"),
        ]
        rows += [
            (
                f"pred c={lvl.concurrency}",
                f"TTFT {lvl.ttft_ms:,.1f} ms, ITL {lvl.itl_ms:.2f} ms, {lvl.output_tok_s:,.0f} tok/s"
                + {True: ", meets SLA", False: ", misses SLA", None: ""}[lvl.meets_sla],
            )
            for lvl in pred.per_concurrency
        ]
        if pred.max_concurrency_meeting_sla is not None:
            rows.append(
                (
                    "pred at the SLA",
                    f"c={pred.max_concurrency_meeting_sla}: "
                    f"{pred.goodput_req_s_at_sla:,.2f} req/s, "
                    f"${pred.usd_per_1m_output_tokens_at_sla:.3f} per 1M output tokens",
                )
            )
        rows += [("note", note) for note in pred.notes]
    if trial.capacity:
        cap = trial.capacity
        rows += [
            (
                "capacity",
                f"{cap.target_request_rate:g} req/s -> {cap.replicas} replica(s) x "
                f"{cap.gpus_per_replica} GPU = {cap.total_gpus} GPUs, "
                f"${cap.usd_per_hour:,.2f}/hour, ${cap.usd_per_1m_output_tokens:.3f} "
                "per 1M output tokens",
            )
        ]
    rows += [("warning", warning) for warning in trial.warnings]
    for label, value in rows:
        table.add_row(label, value)
    return table
