"""Console rendering of one trial's record: measured numbers labelled with their hardware,
predictions labelled as such, accuracy deltas with their confidence intervals."""

from __future__ import annotations

from rich.table import Table

from enginesweep.evaluation.benchmark.knee import describe
from enginesweep.evaluation.records import TrialRecord


def trial_table(record: TrialRecord) -> Table:
    """The record of one trial as label/value rows, then one row per concurrency level."""
    table = Table(
        title=f"{record.slug}: {record.status}",
        show_header=False,
        caption=f"measured on {record.hardware} (not GPU figures); pred = predicted:roofline",
    )
    table.add_column("what")
    table.add_column("value")
    rows = [
        (
            "bundle",
            f"{record.bundle_dir} ({(record.engine_bytes or 0) / 1e6:.1f} MB, "
            f"hash {(record.content_hash or '')[:12]})",
        )
    ]
    quant = (record.trtllm_checkpoint or {}).get("quantization") or {}
    rows.append(
        (
            "TRT-LLM checkpoint",
            f"quant_algo={quant.get('quant_algo')} "
            f"kv_cache_quant_algo={quant.get('kv_cache_quant_algo')} "
            f"group_size={quant.get('group_size')} "
            f"rotary_base={(record.trtllm_checkpoint or {}).get('rotary_base')}",
        )
    )
    if record.benchmark:
        for level in record.benchmark.levels:
            rows.append(
                (
                    f"measured {level.label} ({record.hardware})",
                    f"TTFT p50/p99 {level.ttft_ms.p50:.0f}/{level.ttft_ms.p99:.0f} ms, "
                    f"ITL p50/p99 {level.itl_ms.p50:.1f}/{level.itl_ms.p99:.1f} ms, "
                    f"{level.output_tok_s:.1f} tok/s, goodput "
                    + (f"{level.goodput:.2f} req/s" if level.goodput is not None else "n/a"),
                )
            )
    if record.benchmark and record.benchmark.knee:
        rates = any(level.pacing == "request_rate" for level in record.benchmark.levels)
        rows.append(("knee search", describe(record.benchmark.knee, " req/s" if rates else "")))
    if record.predicted:
        pred = record.predicted
        rows.append(
            (
                "pred (cpu roofline)",
                f"TTFT {pred.ttft_ms:.0f} ms, ITL {pred.itl_ms:.1f} ms, "
                f"{pred.output_tok_s:.1f} tok/s saturated",
            )
        )
    if record.accuracy and record.accuracy.perplexity is not None:
        rows.append(
            (
                "accuracy",
                f"perplexity {record.accuracy.perplexity:.2f}, top-1 "
                f"{record.accuracy.top1_accuracy:.3f} on {record.accuracy.dataset}",
            )
        )
    if record.accuracy:
        for task in record.accuracy.tasks:
            rows.append(
                (
                    f"task {task.task}",
                    f"{task.metric} {task.score:.3f} ({len(task.item_values)} items, {task.tool})",
                )
            )
    for delta in record.accuracy_deltas:
        rows.append(
            (
                f"vs baseline: {delta.metric}",
                f"{delta.delta:+.4f} ({delta.confidence:.0%} CI {delta.ci_low:+.4f} .. {delta.ci_high:+.4f})",
            )
        )
    if record.error:
        rows.append(("error", record.error))
    for name, seconds in record.stage_seconds.items():
        rows.append((f"time: {name}", f"{seconds:.1f} s"))
    for label, value in rows:
        table.add_row(label, value)
    return table
