"""The sweep report from hand-made trial records: a real plan of a small spec (feasible and
rejected-at-plan trials), records for the trials it runs (ok at several concurrency levels, ok but
missing the latency SLA, failed), the real selection over them; then the rendered HTML is parsed
and each section, table row and plotly figure's data checked, trial by trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginesweep.build_configs.loading import load_spec
from enginesweep.evaluation.planning import expand
from enginesweep.evaluation.planning.records import PlannedTrial
from enginesweep.evaluation.records import (
    BenchmarkResult,
    ConcurrencyResult,
    PairedDelta,
    Percentiles,
    TrialRecord,
)
from enginesweep.evaluation.reports.sweep_report import build_sweep_report, write_sweep_report
from enginesweep.evaluation.reports.sweep_source import SweepSource
from enginesweep.evaluation.selection import select
from enginesweep.evaluation.selection.headline import accuracy_delta, selection_headlines
from testkit.report_page import ONE_POINT_PER_TRIAL, SECTIONS, parse, point_of, points_by_trial

pytestmark = pytest.mark.unit


# --- hand-made records ----------------------------------------------------------------------


def level(
    c: int, *, ttft_p99: float, itl_p99: float, tok_s: float, rate: float, good: float, gpus: int
) -> ConcurrencyResult:
    def pct(p99: float) -> Percentiles:
        return Percentiles(avg=p99 * 0.6, p50=p99 * 0.5, p90=p99 * 0.8, p99=p99, min=p99 * 0.3, max=p99 * 1.1)

    return ConcurrencyResult(
        concurrency=c,
        request_count=100,
        error_count=0,
        duration_s=60.0,
        ttft_ms=pct(ttft_p99),
        itl_ms=pct(itl_p99),
        e2e_ms=pct(ttft_p99 + 256 * itl_p99),
        output_tok_s=tok_s,
        output_tok_s_per_gpu=tok_s / gpus,
        output_tok_s_per_user=1000 / itl_p99,
        request_rate=rate,
        goodput=good,
        sla_attainment=good / rate,
    )


def record(
    planned: PlannedTrial,
    levels: list[ConcurrencyResult] | None = None,
    deltas: list[PairedDelta] = (),
    error: str | None = None,
) -> TrialRecord:
    ok = error is None
    return TrialRecord(
        slug=planned.slug,
        sweep="test-sweep",
        stack=planned.stack,
        model=planned.model,
        hardware=planned.gpu,
        status="ok" if ok else "failed",
        error=error,
        config=planned.config.model_dump(mode="json"),
        predicted=planned.predicted.model_dump(mode="json"),
        engine_bytes=int(planned.memory.weights_bytes_total) if ok else None,
        benchmark=BenchmarkResult(
            hardware=planned.gpu,
            tool="aiperf 0.13.0",
            endpoint="grpc://127.0.0.1:8001",
            isl=1024,
            osl=256,
            levels=levels,
            artifact_dir="bench",
        )
        if ok
        else None,
        accuracy_deltas=list(deltas),
    )


def perplexity(variant: float) -> PairedDelta:
    return PairedDelta(
        metric="perplexity",
        baseline=8.0,
        variant=variant,
        delta=variant - 8.0,
        ci_low=variant - 8.05,
        ci_high=variant - 7.95,
        confidence=0.95,
        resamples=1000,
    )


@pytest.fixture
def gpu_source(spec_file) -> SweepSource:
    """bf16/fp8 x TP1/TP2/TP2xPP2 on 2 H100s: TP2xPP2 rejected at plan; bf16 TP1 (the baseline)
    and fp8 TP1 meet the SLA at c=1, 8 and 32; fp8 TP2 misses the TTFT limit at every level;
    bf16 TP2 failed."""

    def edit(spec):
        spec["axes"].update(tp=[1, 2], pp=[1, 2], exclude=[{"tp": 1, "pp": 2}])
        spec["workload"]["concurrency"] = [1, 8, 32]
        spec["sla"] = {"ttft_p99_ms": 500, "itl_p99_ms": 30, "max_accuracy_drop": 0.02}
        spec["planner"] = {"target_request_rate": 10}

    resolved = load_spec(spec_file(edit))
    plan = expand(resolved)
    trials = {t.slug.removeprefix("llama-3.1-8b-instruct__"): t for t in plan.trials}
    meets = [
        level(1, ttft_p99=80, itl_p99=8, tok_s=120, rate=0.5, good=0.5, gpus=1),
        level(8, ttft_p99=200, itl_p99=14, tok_s=700, rate=2.7, good=2.7, gpus=1),
        level(32, ttft_p99=450, itl_p99=25, tok_s=1500, rate=5.8, good=5.6, gpus=1),
    ]
    slow = [
        level(c, ttft_p99=900 + c, itl_p99=20, tok_s=100 * c, rate=0.4 * c, good=0.1 * c, gpus=2)
        for c in (1, 8, 32)
    ]
    records = [
        record(trials["bf16__kv-auto__tp1"], meets),
        record(trials["bf16__kv-auto__tp2"], error="BuildError: trtllm-build ran out of memory"),
        record(
            trials["fp8__kv-auto__tp1"],
            [
                lv.model_copy(
                    update={
                        "output_tok_s": lv.output_tok_s * 1.5,
                        "output_tok_s_per_gpu": lv.output_tok_s_per_gpu * 1.5,
                    }
                )
                for lv in meets
            ],
            [perplexity(8.08)],
        ),
        record(trials["fp8__kv-auto__tp2"], slow, [perplexity(8.04)]),
    ]
    selection = select(
        records,
        resolved.spec.sla,
        usd_per_gpu_hour=resolved.usd_per_gpu_hour,
        target_request_rate=10,
        hardware="H100-SXM-80GB",
    )
    return SweepSource(
        sweep="test-sweep",
        run_id="0123abcd",
        run_status="FINISHED",
        outcome="partial",
        spec=resolved.spec,
        plan=plan,
        selection=selection,
        records=records,
    )


def test_the_html_report_has_every_section_and_a_point_for_every_successful_trial(gpu_source, tmp_path):
    files = write_sweep_report(build_sweep_report(gpu_source), tmp_path / "report")
    page = parse(files.html.read_text())
    assert page.sections == SECTIONS
    assert page.external == []  # plotly.js inline: opens with no network

    ok = {r.slug for r in gpu_source.records if r.status == "ok"}
    levels = {r.slug: len(r.benchmark.levels) for r in gpu_source.records if r.status == "ok"}
    assert len(ok) == 3
    # fp8 TP2 meets the latency SLA at no level: selection gives it no operating point, so the
    # at-SLA plots leave it off and the section says so, instead of plotting another level.
    missed = "llama-3.1-8b-instruct__fp8__kv-auto__tp2"
    assert gpu_source.selection.row(missed).operating_concurrency is None
    for figure_id in ONE_POINT_PER_TRIAL:
        assert points_by_trial(page.figures[figure_id]) == {slug: 1 for slug in ok - {missed}}, figure_id
    assert (
        f"Not plotted: {missed}: no concurrency level met the latency SLA, so selection gave "
        "no operating point and no at-SLA numbers (the trial table shows '-')."
    ) in page.text
    for figure_id in ("latency-ttft", "latency-itl"):
        traces = page.figures[figure_id]["data"]
        assert {t["name"]: len(t["x"]) for t in traces} == levels
        assert all(set(t["customdata"]) == {t["name"]} for t in traces)
    # Three metrics at each level where the plan predicted and the benchmark measured.
    predicted = {
        r.slug: {p.concurrency for p in r.predicted.per_concurrency}
        & {lv.concurrency for lv in r.benchmark.levels}
        for r in gpu_source.records
        if r.status == "ok"
    }
    assert points_by_trial(page.figures["predicted-vs-measured"]) == {
        slug: 3 * len(cs) for slug, cs in predicted.items()
    }
    # The memory breakdown covers every planned trial, the rejected ones included.
    planned = [t.slug for t in gpu_source.plan.trials]
    for trace in page.figures["memory-breakdown"]["data"]:
        assert trace["x"] == planned and trace["customdata"] == planned


def test_the_plots_show_selection_numbers_and_the_curves_the_records_levels(gpu_source, tmp_path):
    """Each Pareto point is the trial's operating point as selection judged it; each latency
    curve point is a measured level of its record."""
    files = write_sweep_report(build_sweep_report(gpu_source), tmp_path / "report")
    page = parse(files.html.read_text())
    selection = gpu_source.selection
    for row in selection.rows:
        if row.operating_concurrency is None:
            continue
        assert point_of(page.figures["pareto-goodput-ttft"], row.slug) == (
            row.ttft_p99_ms,
            row.goodput_per_gpu,
        )
        assert point_of(page.figures["pareto-size-throughput"], row.slug)[1] == row.tok_s_per_gpu
        assert point_of(page.figures["pareto-cost-accuracy"], row.slug) == (
            accuracy_delta(row),
            row.usd_per_1m_output_tokens,
        )
    champion = selection.row(selection.champion)
    assert point_of(page.figures["pareto-goodput-ttft"], champion.slug) == (
        champion.ttft_p99_ms,
        champion.goodput_per_gpu,
    )
    record = next(r for r in gpu_source.records if r.slug == champion.slug)
    level = record.benchmark.levels[1]
    for figure_id, value in (("latency-ttft", level.ttft_ms.p99), ("latency-itl", level.itl_ms.p99)):
        trace = next(t for t in page.figures[figure_id]["data"] if t["name"] == record.slug)
        assert (trace["x"][1], trace["y"][1]) == (level.output_tok_s_per_gpu, value)
        assert trace["hovertext"][1].endswith(f"c={level.concurrency}")


def test_hostile_error_text_and_a_trial_without_prediction(gpu_source, tmp_path):
    """An error that looks like markup is shown as text; a successful trial run without a
    prediction is in every at-SLA plot and its 'predicted by' says '-'."""
    error = "BuildError: </script><b>bold</b> & more"
    records = [
        r.model_copy(update={"error": error})
        if r.status == "failed"
        else r.model_copy(update={"predicted": None})
        if r.slug == gpu_source.selection.champion
        else r
        for r in gpu_source.records
    ]
    source = gpu_source.model_copy(update={"records": records})
    files = write_sweep_report(build_sweep_report(source), tmp_path / "report")
    text = files.html.read_text()
    assert "<b>bold</b>" not in text and "</script><b>" not in text
    page = parse(text)
    assert page.sections == SECTIONS
    failed = next(r.slug for r in records if r.status == "failed")
    rows = {cells[0]: cells for section, cells in page.rows if section == "trials" and cells}
    assert rows[failed][1:3] == ["failed", error]
    champion = gpu_source.selection.champion
    assert rows[champion][-1] == "-"
    for figure_id in ONE_POINT_PER_TRIAL:
        assert points_by_trial(page.figures[figure_id])[champion] == 1, figure_id
    assert f"{champion}: no prediction recorded" in " ".join(page.text)


def test_reused_trials_are_labelled_with_the_prediction_they_ran_with(gpu_source, tmp_path):
    """A trial that ran is labelled with its record's predictor everywhere; the plan's only
    labels the trials that did not run."""
    champion = gpu_source.selection.champion
    failed = next(r.slug for r in gpu_source.records if r.status == "failed")
    records = [
        r.model_copy(
            update={"predicted": r.predicted.model_copy(update={"source": "predicted:aiconfigurator"})}
        )
        if r.slug == champion
        else r
        for r in gpu_source.records
        if r.slug != failed
    ]
    source = gpu_source.model_copy(update={"records": records})
    page = parse(write_sweep_report(build_sweep_report(source), tmp_path / "r").html.read_text())
    rows = {cells[0]: cells for section, cells in page.rows if section == "trials" and cells}
    assert rows[champion][-1] == "predicted:aiconfigurator"
    predictions = {
        cells[4]
        for section, cells in page.rows
        if section == "predicted-vs-measured" and cells and cells[0] == champion
    }
    assert predictions == {"predicted:aiconfigurator"}
    not_run = next(t for t in gpu_source.plan.trials if t.slug == failed)  # its record left out
    assert rows[failed][1] == "not run"
    assert rows[failed][-1] == not_run.predicted.source == "predicted:roofline"


def test_the_capacity_plan_without_plan_json_uses_the_selections_rate(gpu_source, tmp_path):
    source = gpu_source.model_copy(update={"plan": None, "problems": ["plan.json was not logged"]})
    page = parse(write_sweep_report(build_sweep_report(source), tmp_path / "r").html.read_text())
    text = " ".join(page.text)
    assert "planner.target_request_rate is not set" not in text
    assert "No predicted capacity plan: the sweep run has no plan.json." in text
    capacity = gpu_source.selection.capacity
    assert [capacity.slug, "10"] == next(
        cells[:2] for section, cells in page.rows if section == "capacity" and cells
    )


def test_every_figure_names_its_provenance(gpu_source, tmp_path):
    files = write_sweep_report(build_sweep_report(gpu_source), tmp_path / "report")
    page = parse(files.html.read_text())
    assert set(page.figures) == {
        *ONE_POINT_PER_TRIAL,
        "latency-ttft",
        "latency-itl",
        "predicted-vs-measured",
        "memory-breakdown",
    }
    for figure_id, figure in page.figures.items():
        title = figure["layout"]["title"]["text"]
        if figure_id == "memory-breakdown":
            assert "predicted: the planner's memory model" in title
        elif figure_id == "predicted-vs-measured":
            assert "predicted:roofline vs measured on H100-SXM-80GB (GPU)" in title
        else:
            assert "measured on H100-SXM-80GB (GPU)" in title and "predicted" not in title


def test_the_trial_table_names_each_outcome_and_its_reason(gpu_source, tmp_path):
    files = write_sweep_report(build_sweep_report(gpu_source), tmp_path / "report")
    rows = {
        cells[0]: cells
        for section, cells in parse(files.html.read_text()).rows
        if section == "trials" and cells
    }
    plan = {t.slug: t for t in gpu_source.plan.trials}
    selection = gpu_source.selection
    for slug, trial in plan.items():
        outcome, why = rows[slug][1], rows[slug][2]
        if not trial.feasible:
            assert outcome == "rejected at plan" and why == "; ".join(trial.reasons)
            assert "exceeds target.gpus_available=2" in why
            continue
        record = next(r for r in gpu_source.records if r.slug == slug)
        if record.status == "failed":
            assert outcome == "failed" and why == record.error
        elif slug == selection.champion:
            assert outcome == "champion"
        elif selection.row(slug).feasible:
            assert outcome == "feasible"
        else:
            assert outcome == "rejected by selection"
            assert why == "; ".join(selection.row(slug).reasons)
            assert "latency SLA unmet at every level" in why


def test_markdown_and_pngs_match_the_figures(gpu_source, tmp_path):
    report = build_sweep_report(gpu_source)
    files = write_sweep_report(report, tmp_path / "report")
    markdown = files.markdown.read_text()
    for heading in SECTIONS.values():
        assert f"\n## {heading}\n" in markdown
    assert sorted(p.name for p in files.figures) == sorted(f"{f.id}.png" for f in report.figures)
    for png in files.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"](figures/{png.name})" in markdown
    champion = gpu_source.selection.champion
    assert f"Champion: {champion}. Why: {gpu_source.selection.champion_reason}." in markdown
    # The capacity plan: measured (the champion's, from selection) and the plan's predictions.
    capacity = gpu_source.selection.capacity
    assert f"| {capacity.slug} | 10 | {capacity.goodput_per_replica:.4g} |" in markdown
    assert (
        "predicted:roofline: the plan's sizing of each trial, from this plan's prediction "
        "('sized from'), not measured"
    ) in markdown


def test_sections_without_data_say_why(tmp_path):
    """A CPU sweep with no target rate, no accuracy measured and a run that stopped before
    selecting: each section is there and says what is missing."""
    resolved = load_spec(
        "smollm2-cpu-smoke",
        [
            "axes.quant=[bf16, fp8]",
            "axes.kv_cache=[auto]",
            "axes.exclude=[]",
            "planner.target_request_rate=null",
        ],
    )
    plan = expand(resolved)
    records = [
        record(
            t,
            [
                level(c, ttft_p99=900, itl_p99=300, tok_s=3.0 * c, rate=0.2 * c, good=0.2 * c, gpus=1)
                for c in (1, 4)
            ],
        )
        for t in plan.to_run
    ]
    source = SweepSource(
        sweep=plan.sweep,
        run_id="feed",
        run_status="FAILED",
        outcome="failed",
        spec=resolved.spec,
        plan=plan,
        records=records,
        problems=["selection.json was not logged"],
    )
    files = write_sweep_report(build_sweep_report(source), tmp_path / "report")
    page = parse(files.html.read_text())
    assert page.sections == SECTIONS
    text = " ".join(page.text)
    assert "planner.target_request_rate is not set" in text
    assert "The requests were aiperf's synthetic ones" in text
    assert "the sweep run logged no selection" in text
    assert "Missing from the run's artifacts: selection.json was not logged." in text
    assert "measured on cpu (CPU reference stack: not GPU figures)" in text
    for slug in (r.slug for r in records):  # without a selection: plotted, marked unjudged
        assert points_by_trial(page.figures["pareto-goodput-ttft"])[slug] == 1
    # No selection, so no price was judged and no accuracy delta exists: that plot is empty.
    assert page.figures["pareto-cost-accuracy"] is None
    assert f"{records[1].slug} not plotted: no accuracy measured against the baseline" in text


def test_headline_accuracy_delta_is_the_negative_drop_and_zero_for_the_baseline(gpu_source):
    rows = {row.slug: row for row in gpu_source.selection.rows}
    for row in rows.values():
        headlines = selection_headlines(row)
        if row.accuracy_drop is None:
            assert "accuracy_delta" not in headlines
        else:
            assert headlines["accuracy_delta"] == accuracy_delta(row) == 0.0 - row.accuracy_drop
        at_point = {
            "goodput_rps_at_sla",
            "usd_per_1m_tokens",
            "ttft_p99_ms",
            "itl_p99_ms",
            "output_tok_s_per_gpu",
        }
        if row.operating_concurrency is None:  # no made-up numbers at an SLA never met
            assert not at_point & set(headlines)
        else:
            assert headlines["goodput_rps_at_sla"] == row.goodput
            assert headlines["usd_per_1m_tokens"] == row.usd_per_1m_output_tokens
            # the latency and throughput of that same operating point, not another level's
            assert (headlines["ttft_p99_ms"], headlines["itl_p99_ms"], headlines["output_tok_s_per_gpu"]) == (
                row.ttft_p99_ms,
                row.itl_p99_ms,
                row.tok_s_per_gpu,
            )
    baseline = next(row for row in rows.values() if row.is_baseline and row.status == "ok")
    assert str(selection_headlines(baseline)["accuracy_delta"]) == "0.0"  # not -0.0


def test_a_limit_far_beyond_every_point_is_named_instead_of_drawn():
    from enginesweep.evaluation.reports.report_figures import on_chart
    from enginesweep.evaluation.reports.report_model import ReferenceLine, Series

    points = [Series(name="t", x=[100.0, 400.0], y=[1.0, 2.0], slugs=["a", "b"], hover=["", ""])]
    near = ReferenceLine(axis="x", value=500, label="SLA TTFT p99")
    far = ReferenceLine(axis="x", value=60000, label="SLA TTFT p99")
    assert on_chart([near], points) == ([near], [])
    shown, notes = on_chart([far], points)
    assert shown == [] and notes == ["SLA TTFT p99 (60000) is off the chart: every point is well inside it"]


def test_report_without_a_tracking_store_asks_for_the_sweep_first(cli, tmp_path):
    result = cli("report", "smollm2-cpu-smoke", "--set", f"workspace={tmp_path / 'ws'}")
    assert result.exit_code == 1
    assert "no MLflow store at" in result.stderr and "enginesweep run smollm2-cpu-smoke" in result.stderr
    assert not (tmp_path / "ws" / "mlflow.db").exists()  # not created empty by looking


def test_the_trial_run_holds_the_record_in_memory_not_a_stale_file(gpu_source, tmp_path):
    """A reused trial's record.json in its folder is the old run's (judged under the old SLA);
    the run gets the record the sweep holds, which the report reads back."""
    from enginesweep.evaluation.records import TrialRecord
    from enginesweep.evaluation.tracking import SweepTracker

    current = gpu_source.records[0]
    trial_dir = tmp_path / "trial"
    current.model_copy(update={"executed_stages": ["build", "benchmark"]}).save(
        trial_dir / "record.json"
    )  # stale
    tracker = SweepTracker(
        f"sqlite:///{tmp_path / 'mlflow.db'}", "report-test", artifact_root=tmp_path / "mlruns"
    )
    parent = tracker.start_sweep("test-sweep", spec_yaml="", plan_json="{}", params={})
    run_id = tracker.log_trial(parent, current, trial_dir)
    logged = tracker.client.download_artifacts(run_id, "record.json", str(tmp_path / "down"))
    assert TrialRecord.load(Path(logged)) == current
