"""The report's sections, one function each: summary, champion, trials, Pareto plots, latency
curves, predicted vs measured, memory breakdown, capacity plan. A section without data says why
in words (no capacity plan without `planner.target_request_rate`, no accuracy on a stack that
measures none) instead of being left out."""

from __future__ import annotations

from enginesweep.build_configs.schema import Workload
from enginesweep.evaluation.benchmark.knee import describe
from enginesweep.evaluation.provenance import predicted_label
from enginesweep.evaluation.records import Histogram
from enginesweep.evaluation.reports.report_figures import (
    latency_figures,
    memory_figure,
    pareto_figures,
    prediction_figure,
    prediction_rows,
)
from enginesweep.evaluation.reports.report_model import Section, Table
from enginesweep.evaluation.reports.report_trials import (
    NO_OPERATING_POINT,
    OUTCOMES,
    TrialView,
    prediction_source,
    sla_of,
    without_operating_point,
)
from enginesweep.evaluation.reports.sweep_source import SweepSource
from enginesweep.evaluation.selection.accuracy_gate import format_drop
from enginesweep.evaluation.selection.headline import accuracy_delta, engine_size_gb
from enginesweep.evaluation.selection.render import selection_caption


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def summary_section(source: SweepSource, views: list[TrialView], measured: str) -> Section:
    """What was swept, where it was measured, under which SLA, and what could not be read."""
    spec, plan, selection = source.spec, source.plan, source.selection
    counts = {outcome: sum(1 for view in views if view.outcome == outcome) for outcome in OUTCOMES}
    paragraphs = [
        f"Sweep {source.sweep}, MLflow parent run {source.run_id or '-'} "
        f"({source.run_status or 'status unknown'}, outcome {source.outcome or 'unknown'}), "
        f"started {source.started or '-'}.",
        "Provenance: every measured number is " + measured + "; every predicted number names "
        "its predictor (predicted:roofline, predicted:aiconfigurator, +calibrated when fitted to "
        "measurements). Measured and predicted numbers are never shown unlabelled side by side.",
        "Trials: " + (", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n) or "none") + ".",
    ]
    if spec is not None:
        paragraphs.append(
            f"Model {spec.model.slug}, stack {', '.join(s.value for s in spec.stack)}; workload "
            + workload_words(spec.workload)
            + "."
        )
    if selection is not None:
        paragraphs.append("Selection: " + selection_caption(selection) + ".")
    if plan is not None and plan.notes:
        paragraphs.append("Planner notes: " + "; ".join(plan.notes) + ".")
    if source.run_status == "RUNNING":
        paragraphs.append(
            "This sweep run is still running (or its process was killed): the "
            "report shows what it had logged so far."
        )
    if source.problems:
        paragraphs.append("Missing from the run's artifacts: " + "; ".join(source.problems) + ".")
    return Section(id="summary", heading="Summary", paragraphs=paragraphs)


def workload_words(workload: Workload) -> str:
    """The workload in one phrase: where its requests come from and how they were paced."""
    lengths = f"ISL {workload.isl.mean} / OSL {workload.osl.mean} tokens"  # type: ignore[union-attr]
    if workload.request_log is not None:
        source = f"request log {workload.request_log.path.name} (mean {lengths})"
    elif workload.mixture is not None:
        source = f"a mixture of {len(workload.mixture)} ISL/OSL kinds (mean {lengths})"
    else:
        source = lengths
    if workload.shared_prefix is not None:
        prefix = workload.shared_prefix
        source += (
            f", each prompt opening with one of {prefix.pool_size} shared {prefix.tokens}-token prefixes"
        )
    if workload.replay == "recorded":
        return source + ", replayed once at its logged arrival times"
    return (
        f"{source}, concurrency {', '.join(str(c) for c in workload.concurrency)}; "
        f"{workload.request_count} requests per level"
    )


def traffic_section(views: list[TrialView]) -> Section:
    """What the benchmark sent, where enginesweep built the requests: lengths as counted by the
    model's tokenizer (histograms), and the share a prefix cache could serve."""
    traffic = next(
        (
            v.record.benchmark.traffic
            for v in views
            if v.record and v.record.benchmark and v.record.benchmark.traffic
        ),
        None,
    )
    if traffic is None:
        return Section(
            id="traffic",
            heading="Traffic",
            paragraphs=[
                "The requests were aiperf's synthetic ones (random text of the workload's lengths): "
                "no request log, mixture or shared prefix to summarise."
            ],
        )
    what = {
        "request_log": "a request log",
        "mixture": "an ISL/OSL mixture",
        "synthetic": "shared-prefix prompts",
    }
    paragraphs = [
        f"{traffic.requests} requests built from {what[traffic.source]}"
        + (f", replayed {traffic.replay}" if traffic.replay else "")
        + (
            f" over {traffic.recorded_duration_s:.1f} s as logged"
            if traffic.recorded_duration_s is not None
            else ""
        )
        + f". Input tokens: mean {traffic.input_tokens.mean:.1f} (sd {traffic.input_tokens.stddev:.1f}, "
        f"{traffic.input_tokens.min}-{traffic.input_tokens.max}); output tokens: mean "
        f"{traffic.output_tokens.mean:.1f} (sd {traffic.output_tokens.stddev:.1f}, "
        f"{traffic.output_tokens.min}-{traffic.output_tokens.max}).",
        f"Prefix reuse: {traffic.prefix_reuse_ratio:.1%} of input tokens are a prefix an earlier "
        "request already sent (what a perfect prefix cache could skip, in send order).",
    ]
    if traffic.request_log_sha256:
        paragraphs.append(f"Request log sha256 {traffic.request_log_sha256} (part of every trial's key).")
    tables = [
        Table(
            headers=["tokens", "requests", ""],
            rows=_histogram_rows(summary.histogram),
            caption=f"{name} lengths of the requests sent, counted with the model's tokenizer",
        )
        for name, summary in (("Input", traffic.input_tokens), ("Output", traffic.output_tokens))
    ]
    return Section(id="traffic", heading="Traffic", paragraphs=paragraphs, tables=tables)


def _histogram_rows(histogram: Histogram) -> list[list[str]]:
    peak = max(histogram.counts) or 1
    rows = []
    for i, count in enumerate(histogram.counts):
        low, high = histogram.edges[i], histogram.edges[i + 1]
        closing = "]" if i == len(histogram.counts) - 1 else ")"
        rows.append([f"[{low:.0f}, {high:.0f}{closing}", str(count), "#" * round(20 * count / peak)])
    return rows


def champion_section(source: SweepSource, measured: str) -> Section:
    """The champion, why it won, its numbers at the operating point and its accuracy verdicts."""
    selection = source.selection
    if selection is None:
        return Section(
            id="champion",
            heading="Champion",
            paragraphs=["No champion: the sweep run logged no selection (it stopped before selecting)."],
        )
    if selection.champion is None:
        return Section(
            id="champion", heading="Champion", paragraphs=[f"No champion: {selection.champion_reason}."]
        )
    row = selection.row(selection.champion)
    mode = selection.sla.accuracy_drop_mode
    rows = [
        ["operating point", row.operating_level or f"c={row.operating_concurrency}"],
        ["goodput (req/s meeting the SLA)", _num(row.goodput, ".4g")],
        ["goodput per GPU", _num(row.goodput_per_gpu, ".4g")],
        ["output tok/s per GPU", _num(row.tok_s_per_gpu, ".4g")],
        ["$ per 1M good output tokens", _num(row.usd_per_1m_output_tokens, ".4g")],
        ["TTFT p99 (ms)", _num(row.ttft_p99_ms, ".4g")],
        ["ITL p99 (ms)", _num(row.itl_p99_ms, ".4g")],
        ["accuracy delta", "-" if row.accuracy_drop is None else format_drop(accuracy_delta(row), mode)],
    ]
    rows += [[f"accuracy: {check.metric}", check.verdict] for check in row.accuracy]
    front = ", ".join(selection.pareto_front) or "none"
    return Section(
        id="champion",
        heading="Champion",
        paragraphs=[
            f"Champion: {selection.champion}. Why: {selection.champion_reason}.",
            f"Pareto front (cost, accuracy drop, TTFT p99): {front}.",
        ],
        tables=[Table(headers=["what", "value"], rows=rows, caption=f"{measured}, at the operating point")],
    )


TRIAL_HEADERS = [
    "trial",
    "outcome",
    "why",
    "quant",
    "kv",
    "tp",
    "pp",
    "c",
    "goodput/GPU req/s",
    "tok/s/GPU",
    "$/1M tok",
    "TTFT p99 ms",
    "ITL p99 ms",
    "acc delta",
    "engine GB",
    "predicted by",
]


def trials_section(source: SweepSource, views: list[TrialView], measured: str) -> Section:
    """Every trial: feasible, failed with its error, rejected at plan or selection with reasons."""
    mode = source.selection.sla.accuracy_drop_mode if source.selection else "relative"
    rows = []
    for view in views:
        cfg, row, record = view.config, view.row, view.record
        rows.append(
            [
                view.slug,
                view.outcome,
                _one_line(view.why),
                cfg.quant.value,
                cfg.kv_cache.value,
                str(cfg.tp),
                str(cfg.pp),
                _num(row.operating_concurrency if row else None, "d"),
                _num(row.goodput_per_gpu if row else None, ".4g"),
                _num(row.tok_s_per_gpu if row else None, ".4g"),
                _num(row.usd_per_1m_output_tokens if row else None, ".4g"),
                _num(row.ttft_p99_ms if row else None, ".4g"),
                _num(row.itl_p99_ms if row else None, ".4g"),
                "-" if row is None or row.accuracy_drop is None else format_drop(accuracy_delta(row), mode),
                _num(engine_size_gb(record) if record else None, ".3g"),
                prediction_source(view) or "-",
            ]
        )
    caption = (
        f"Numbers {measured}, at the operating point c (the highest concurrency meeting the "
        "latency SLA); '-' where the trial has none. $/1M is charged to good output tokens; "
        "acc delta is the worst accuracy change vs the unquantized baseline (negative = "
        "worse). 'predicted by' names the predictor of the prediction the trial ran with (its "
        "record's; the plan's for a trial that did not run); its numbers are in 'Predicted "
        "vs measured'."
    )
    paragraphs = [] if views else ["The sweep run holds no trials (no plan.json and no trial run)."]
    return Section(
        id="trials",
        heading="Trials",
        paragraphs=paragraphs,
        tables=[Table(headers=TRIAL_HEADERS, rows=rows, caption=caption)],
    )


def pareto_section(source: SweepSource, views: list[TrialView], measured: str) -> Section:
    """The three trade-off plots at each trial's operating point."""
    selection = source.selection
    figures = pareto_figures(
        views,
        measured=measured,
        sla=sla_of(source),
        usd_per_gpu_hour=selection.usd_per_gpu_hour if selection else None,
        champion=selection.champion if selection else None,
    )
    paragraphs = [
        "Each successful trial at its operating point; markers say how selection judged it (the "
        "Pareto front is selection's, over cost, accuracy drop and TTFT p99)."
    ]
    left_off = without_operating_point(views)
    if left_off:
        paragraphs.append(
            f"Not plotted: {', '.join(left_off)}: {NO_OPERATING_POINT}, so "
            "selection gave no operating point and no at-SLA numbers (the trial "
            "table shows '-')."
        )
    return Section(id="pareto", heading="Pareto plots", paragraphs=paragraphs, figures=figures)


def latency_section(source: SweepSource, views: list[TrialView], measured: str) -> Section:
    """Latency against throughput across the workload's load levels, per trial, and how each
    trial's knee search went where one ran."""
    paragraphs = ["One curve per successful trial through its measured load levels (hover: the level)."]
    for view in views:
        benchmark = view.record.benchmark if view.ok and view.record else None
        if benchmark is not None and benchmark.knee is not None:
            rates = any(level.pacing == "request_rate" for level in benchmark.levels)
            paragraphs.append(
                f"Knee search, {view.slug}: {describe(benchmark.knee, ' req/s' if rates else '')}."
            )
    return Section(
        id="latency-curves",
        heading="Latency vs throughput",
        paragraphs=paragraphs,
        figures=latency_figures(views, measured=measured, sla=sla_of(source)),
    )


def prediction_section(views: list[TrialView], measured: str) -> Section:
    """Each prediction next to its measurement, and the error between them."""
    rows = prediction_rows(views)
    table = Table(
        headers=["trial", "c", "metric", "predicted", "predicted by", "measured", "error %"],
        rows=[
            [
                view.slug,
                str(c),
                metric,
                f"{pred:.4g}",
                source,
                f"{got:.4g}",
                _num((pred - got) / got * 100 if got else None, "+.1f"),
            ]
            for view, source, c, metric, pred, got in rows
        ],
        caption=f"measured: {measured}; TTFT and ITL against the measured p50 (the predictors "
        "model a typical request), output tok/s of the whole deployment",
    )
    paragraphs = (
        []
        if rows
        else [
            "No prediction to compare: no successful trial has a prediction and a measurement at "
            "the same concurrency."
        ]
    )
    return Section(
        id="predicted-vs-measured",
        heading="Predicted vs measured",
        paragraphs=paragraphs,
        tables=[table] if rows else [],
        figures=[prediction_figure(views, measured=measured)],
    )


def memory_section(views: list[TrialView]) -> Section:
    """The planner's memory breakdown per trial (predicted, never measured)."""
    planned = [view for view in views if view.planned is not None]
    rows = [
        [
            view.slug,
            view.outcome,
            f"{m.weights_bytes_per_gpu / 1e9:.3g}",
            f"{m.kv_budget_bytes_per_gpu / 1e9:.3g}",
            f"{m.kv_bytes_per_token_per_gpu:,}",
            f"{m.kv_capacity_tokens:,}",
            str(m.max_concurrent_sequences),
        ]
        for view in planned
        for m in [view.planned.memory]
    ]
    table = Table(
        headers=[
            "trial",
            "outcome",
            "weights GB/GPU",
            "KV budget GB/GPU",
            "KV bytes/token/GPU",
            "KV capacity tokens",
            "max sequences",
        ],
        rows=rows,
        caption="predicted by the planner's memory model, not measured",
    )
    paragraphs = [] if planned else ["No memory breakdown: the sweep run has no plan.json."]
    return Section(
        id="memory",
        heading="Memory breakdown",
        paragraphs=paragraphs,
        tables=[table] if rows else [],
        figures=[memory_figure(views)],
    )


def _target_rate(source: SweepSource) -> float | None:
    """The requests/s to size for: the plan's, else the selection's capacity plan's, else the
    spec's (a run whose plan.json is missing still has the other two)."""
    capacity = source.selection.capacity if source.selection is not None else None
    rates = (
        source.plan.target_request_rate if source.plan is not None else None,
        capacity.target_request_rate if capacity is not None else None,
        source.spec.planner.target_request_rate if source.spec is not None else None,
    )
    return next((rate for rate in rates if rate is not None), None)


def capacity_section(source: SweepSource, views: list[TrialView], measured: str) -> Section:
    """Replicas for the target request rate: from the champion's measurements, and per trial as
    the plan predicted them."""
    plan, selection = source.plan, source.selection
    rate = _target_rate(source)
    if rate is None and plan is None and source.spec is None:
        return Section(
            id="capacity",
            heading="Capacity plan",
            paragraphs=[
                "No capacity plan: the target request rate is unknown (the sweep run logged neither "
                "plan.json nor spec.yaml, and its selection has no capacity plan)."
            ],
        )
    if rate is None:
        return Section(
            id="capacity",
            heading="Capacity plan",
            paragraphs=[
                "No capacity plan: planner.target_request_rate is not set in the spec (set it to the "
                "requests/s to serve, and the plan and the selection size replicas for it)."
            ],
        )
    paragraphs, tables = [], []
    capacity = selection.capacity if selection else None
    if capacity is not None:
        tables.append(
            Table(
                headers=[
                    "trial",
                    "target req/s",
                    "goodput/replica req/s",
                    "c",
                    "replicas",
                    "GPUs/replica",
                    "GPUs",
                    "$/hour",
                ],
                rows=[
                    [
                        capacity.slug,
                        f"{capacity.target_request_rate:g}",
                        f"{capacity.goodput_per_replica:.4g}",
                        str(capacity.operating_concurrency),
                        str(capacity.replicas),
                        str(capacity.gpus_per_replica),
                        str(capacity.total_gpus),
                        f"{capacity.usd_per_hour:,.2f}",
                    ]
                ],
                caption=f"the champion, from goodput {measured}",
            )
        )
        check = selection.capacity_check if selection else None
        paragraphs.append(
            "Capacity replay (Poisson arrivals at the per-replica rate against one replica, "
            + (f"{measured}): {check.verdict}." if check else "not run): planner.verify_capacity is off.")
        )
    else:
        paragraphs.append(
            f"No measured capacity plan for {rate:g} req/s: "
            + ("the sweep has no champion." if selection else "the sweep run logged no selection.")
        )
    predicted = [view for view in views if view.planned and view.planned.capacity]
    # The plan's sizing comes from the plan's prediction, so each row names that one; a reused
    # trial may have run with another (its record's, named in the trial table).
    sources = {view.planned.predicted.source for view in predicted if view.planned.predicted}
    if predicted:
        tables.append(
            Table(
                headers=[
                    "trial",
                    "target req/s",
                    "goodput/replica req/s",
                    "c",
                    "replicas",
                    "GPUs",
                    "$/hour",
                    "$/1M tok",
                    "sized from",
                ],
                rows=[
                    [
                        view.slug,
                        f"{c.target_request_rate:g}",
                        f"{c.goodput_req_s_per_replica:.4g}",
                        str(c.max_concurrency_meeting_sla),
                        str(c.replicas),
                        str(c.total_gpus),
                        f"{c.usd_per_hour:,.2f}",
                        f"{c.usd_per_1m_output_tokens:.4g}",
                        view.planned.predicted.source if view.planned.predicted else "-",
                    ]
                    for view in predicted
                    for c in [view.planned.capacity]
                ],
                caption=f"{predicted_label(sources)}: the plan's sizing of each trial, from this "
                "plan's prediction ('sized from'), not measured",
            )
        )
    elif plan is None:
        paragraphs.append("No predicted capacity plan: the sweep run has no plan.json.")
    else:
        paragraphs.append(
            "No predicted capacity plan: no planned trial was predicted to meet the latency SLA."
        )
    return Section(id="capacity", heading="Capacity plan", paragraphs=paragraphs, tables=tables)
