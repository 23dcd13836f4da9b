"""Selection over trial records, against numbers checked by hand.

Fixtures are hand-made trial records (`tests/fixtures/records/`, see its README for each case and
its hand computation). Variants of a case are made with `model_copy`, never by mocking.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from enginesweep.build_configs.schema import SLA, Objective
from enginesweep.evaluation.records import PairedDelta, TrialRecord
from enginesweep.evaluation.selection import (
    MixedHardwareError,
    Selection,
    TrialSelection,
    accuracy_check,
    capacity_plan,
    dominates,
    load_records,
    load_sweep_records,
    pareto_front,
    rank_key,
    select,
    selection_table,
    selection_table_text,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "records"
GPU_SWEEP = FIXTURES / "h100_sweep"
CPU_SWEEP = FIXTURES / "cpu_sweep"

BF16 = "llama-3.1-8b__bf16__kv-auto__tp1"
FP8 = "llama-3.1-8b__fp8__kv-auto__tp1"
FP8_TP2 = "llama-3.1-8b__fp8__kv-auto__tp2"
INT4 = "llama-3.1-8b__int4_awq__kv-auto__tp1"
KV_FP8 = "llama-3.1-8b__fp8__kv-fp8__tp1"
FAILED = "llama-3.1-8b__int8_sq__kv-auto__tp1"

SLA_GPU = SLA(ttft_p99_ms=500, itl_p99_ms=30, max_accuracy_drop=0.02, accuracy_drop_mode="relative")
PRICE = 3.0


def gpu_records() -> dict[str, TrialRecord]:
    return {r.slug: r for r in load_records(sorted(GPU_SWEEP.glob("*.json")))}


def cpu_records() -> list[TrialRecord]:
    return load_records(sorted(CPU_SWEEP.glob("*.json")))


def run(records, sla: SLA = SLA_GPU, **kwargs) -> Selection:
    return select(list(records), sla, usd_per_gpu_hour=PRICE, **kwargs)


def with_level(record: TrialRecord, concurrency: int, **changes) -> TrialRecord:
    """The record with one benchmark level's fields changed."""
    levels = [
        level.model_copy(update=changes) if level.concurrency == concurrency else level
        for level in record.benchmark.levels
    ]
    return record.model_copy(update={"benchmark": record.benchmark.model_copy(update={"levels": levels})})


def renamed(record: TrialRecord, slug: str) -> TrialRecord:
    return record.model_copy(update={"slug": slug})


def delta(metric: str, baseline: float, variant: float, low: float, high: float) -> PairedDelta:
    return PairedDelta(
        metric=metric,
        baseline=baseline,
        variant=variant,
        delta=variant - baseline,
        ci_low=low,
        ci_high=high,
        confidence=0.95,
        resamples=2000,
    )


# --- fixtures are real records --------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*/*.json")), ids=lambda p: p.name)
def test_every_fixture_is_a_valid_trial_record(path: Path) -> None:
    record = TrialRecord.load(path)
    assert path.stem == record.slug
    assert record.hardware == ("H100-SXM-80GB" if path.parent == GPU_SWEEP else "cpu")


# --- operating point and cost ---------------------------------------------------------------


def test_cost_by_hand_two_gpus_at_3_dollars_and_1000_tok_s() -> None:
    row = run(gpu_records().values()).row(FP8_TP2)
    # 2 GPUs * $3/h / (1,000 tok/s * 3600 s/h) * 1e6 tokens = $1.6667 per 1M output tokens.
    assert row.usd_per_1m_output_tokens == pytest.approx(2 * 3.0 / (1000 * 3600) * 1e6)
    assert row.usd_per_1m_output_tokens == pytest.approx(1.6667, abs=1e-4)
    assert (row.gpus, row.operating_concurrency, row.goodput) == (2, 32, 4.0)
    assert (row.output_tok_s, row.good_output_tok_s, row.tok_s_per_gpu) == (1000.0, 1000.0, 500.0)
    assert row.goodput_per_gpu == 2.0
    assert row.ttft_p99_ms == 350.0 and row.itl_p99_ms == 18.0


def test_cost_is_charged_to_the_tokens_of_requests_meeting_the_sla() -> None:
    row = run(gpu_records().values()).row(FP8)
    # 3.0 of 3.2 req/s met the SLA: 800 tok/s * 3.0 / 3.2 = 750 good tok/s.
    assert row.output_tok_s == 800.0
    assert row.good_output_tok_s == pytest.approx(750.0)
    assert row.usd_per_1m_output_tokens == pytest.approx(3.0 / (750 * 3600) * 1e6)
    assert row.notes == []


def test_a_benchmark_without_goodput_counts_every_request_and_says_so() -> None:
    record = with_level(gpu_records()[FP8], 32, goodput=None, sla_attainment=None)
    row = run([record]).row(FP8)
    assert row.goodput == 3.2
    assert row.good_output_tok_s == 800.0
    assert row.usd_per_1m_output_tokens == pytest.approx(3.0 / (800 * 3600) * 1e6)
    assert "recorded no goodput" in row.notes[0]


def test_operating_point_is_the_highest_level_meeting_the_sla() -> None:
    records = gpu_records()
    # bf16 meets the SLA at c=1 and c=8; c=32 misses TTFT (900 ms) and ITL (45 ms).
    assert run(records.values()).row(BF16).operating_concurrency == 8
    looser = SLA_GPU.model_copy(update={"ttft_p99_ms": 1000.0, "itl_p99_ms": 50.0})
    assert run(records.values(), looser).row(BF16).operating_concurrency == 32


def test_an_unset_limit_is_unconstrained() -> None:
    records = gpu_records()
    ttft_only = SLA(ttft_p99_ms=1000)  # bf16 c=32: TTFT 900 ms passes, ITL 45 ms is not limited
    assert run(records.values(), ttft_only).row(BF16).operating_concurrency == 32
    no_limits = SLA()
    assert run(records.values(), no_limits).row(BF16).operating_concurrency == 32


def test_a_level_with_more_than_1_percent_failed_requests_does_not_meet_the_sla() -> None:
    record = with_level(gpu_records()[FP8], 32, error_count=2)  # 2 of 102 failed
    row = run([record]).row(FP8)
    assert row.operating_concurrency == 8
    one_failure = with_level(gpu_records()[FP8], 32, error_count=1)  # 1 of 101: within 1%
    assert run([one_failure]).row(FP8).operating_concurrency == 32


def test_a_trial_meeting_no_level_is_rejected_with_what_each_level_missed() -> None:
    row = run(gpu_records().values()).row(KV_FP8)
    assert not row.feasible and row.rank is None and row.operating_concurrency is None
    assert row.usd_per_1m_output_tokens is None
    (reason,) = row.reasons
    assert reason.startswith("latency SLA unmet at every level (c=1: TTFT p99 650 ms > 500 ms;")
    assert "c=32: TTFT p99 1500 ms > 500 ms, ITL p99 31 ms > 30 ms" in reason
    assert reason.endswith("goodput 0 (no request met the SLA))")


# --- accuracy gate --------------------------------------------------------------------------


def test_relative_gate_passes_what_the_absolute_gate_rejects() -> None:
    records = gpu_records()
    relative = run(records.values()).row(FP8)
    perplexity = relative.accuracy[0]
    assert perplexity.metric == "perplexity" and perplexity.mode == "relative"
    assert perplexity.drop == pytest.approx(0.08 / 8.0)  # 1% <= 2%
    assert (perplexity.drop_ci_low, perplexity.drop_ci_high) == pytest.approx((0.05 / 8, 0.11 / 8))
    assert relative.feasible and relative.accuracy_drop == pytest.approx(0.01)

    absolute = run(records.values(), SLA_GPU.model_copy(update={"accuracy_drop_mode": "absolute"}))
    row = absolute.row(FP8)
    assert not row.feasible
    assert row.reasons == [
        "accuracy drop perplexity 0.08 > allowed 0.02 (absolute) and significant (95% CI 0.05 .. 0.11)"
    ]
    assert row.operating_concurrency == 32  # rejected on accuracy alone: the numbers remain
    assert row.accuracy[1].passed  # top-1 fell by 0.003 <= 0.02


def test_a_top1_drop_is_baseline_minus_variant_with_the_interval_flipped() -> None:
    top1 = run(gpu_records().values()).row(FP8).accuracy[1]
    # top-1 0.6 -> 0.597: delta -0.003 (CI -0.006 .. 0), a drop of 0.003 (CI 0 .. 0.006) = 0.5%.
    assert top1.metric == "top1_accuracy"
    assert top1.drop == pytest.approx(0.005)
    assert (top1.drop_ci_low, top1.drop_ci_high) == pytest.approx((0.0, 0.01))


def test_a_drop_equal_to_the_allowance_passes_and_one_above_is_rejected() -> None:
    record = gpu_records()[FP8]
    lenient = SLA_GPU.model_copy(update={"accuracy_gate": "lenient"})
    at_limit = record.model_copy(
        update={"accuracy_deltas": [delta("perplexity", 8.0, 8.16, 0.1, 0.2)]}
    )  # 0.16 / 8 = exactly 2%
    assert run([at_limit], lenient).row(FP8).feasible
    above = record.model_copy(update={"accuracy_deltas": [delta("perplexity", 8.0, 8.17, 0.1, 0.2)]})
    assert run([above], lenient).row(FP8).reasons[0] == (
        "accuracy drop perplexity 2.12% > allowed 2.00% (relative) and significant (95% CI 1.25% .. 2.50%)"
    )
    # Strict: the interval's upper end (2.5%) exceeds the allowance, so even the drop at the
    # limit is rejected: the evaluation cannot rule out a 2.5% loss.
    assert run([at_limit]).row(FP8).reasons == [
        "accuracy drop perplexity 2.00%: the evaluation cannot rule out a drop > allowed 2.00% "
        "(relative) (95% CI 1.25% .. 2.50%); evaluate more items or set sla.accuracy_gate: "
        "lenient"
    ]


def test_accuracy_rejection_lists_every_failing_metric() -> None:
    row = run(gpu_records().values()).row(INT4)
    assert not row.feasible and row.operating_concurrency == 32
    assert row.reasons == [
        "accuracy drop perplexity 5.00% > allowed 2.00% (relative) and significant (95% CI 4.12% .. 5.88%)",
        "accuracy drop top1_accuracy 2.50% > allowed 2.00% (relative) and significant (95% CI "
        "1.50% .. 3.50%)",
    ]


def test_without_an_accuracy_limit_the_drop_is_recorded_but_not_gated() -> None:
    row = run(gpu_records().values(), SLA_GPU.model_copy(update={"max_accuracy_drop": None})).row(INT4)
    assert row.feasible and row.accuracy_drop == pytest.approx(0.05)
    assert all(check.passed and check.allowed is None for check in row.accuracy)


def test_the_unquantized_baseline_always_passes_the_accuracy_gate() -> None:
    noisy = gpu_records()[BF16].model_copy(
        update={"accuracy_deltas": [delta("perplexity", 8.0, 8.8, 0.7, 0.9)]}
    )  # 10% "worse": noise, still the reference
    row = run([noisy]).row(BF16)
    assert row.is_baseline and row.feasible and row.accuracy[0].passed
    assert row.accuracy_drop == pytest.approx(0.1)


def test_an_unmeasured_accuracy_rejects_a_quantized_trial_but_not_the_baseline() -> None:
    records = gpu_records()
    quantized = records[FP8].model_copy(update={"accuracy_deltas": []})
    baseline = records[BF16].model_copy(update={"accuracy_deltas": []})
    selection = run([quantized, baseline])
    assert selection.row(FP8).reasons == [
        "accuracy not measured against the baseline (no paired deltas), so the drop limit 0.02 "
        "cannot be checked"
    ]
    assert selection.row(BF16).feasible and selection.row(BF16).accuracy_drop == 0.0


def test_a_zero_baseline_gives_a_zero_relative_drop_when_nothing_got_worse() -> None:
    # top-1 of an untrained toy model can be 0: it cannot fall, so its relative drop is 0.
    check = accuracy_check(delta("top1_accuracy", 0.0, 0.01, 0.0, 0.02), SLA_GPU, baseline_trial=False)
    assert (check.drop, check.drop_ci_low, check.drop_ci_high) == (0.0, 0.0, 0.0)
    assert check.passed


def test_an_accuracy_metric_without_a_known_direction_is_an_error() -> None:
    record = gpu_records()[FP8].model_copy(
        update={"accuracy_deltas": [delta("bleu", 30.0, 29.0, -1.5, -0.5)]}
    )
    with pytest.raises(ValueError, match="'bleu' has no known direction"):
        run([record])


def test_a_failed_trial_is_rejected_with_its_error() -> None:
    row = run(gpu_records().values()).row(FAILED)
    assert (row.status, row.feasible, row.rank) == ("failed", False, None)
    assert not row.on_pareto_front
    assert row.reasons == [
        "trial failed: RuntimeError: trtllm-build exited with status 1: "
        "[TensorRT-LLM][ERROR] CUDA out of memory while building the engine"
    ]


# --- Pareto front and ranking ---------------------------------------------------------------


def test_pareto_front_of_the_fixture_sweep() -> None:
    selection = run(gpu_records().values())
    # bf16 (1.389 $, 0 %, 300 ms) dominates fp8 tp2 (1.667 $, 0.75 %, 350 ms); fp8 tp1 is the
    # cheapest; the rejected trials are never on the front.
    assert sorted(selection.pareto_front) == [BF16, FP8]


def make_row(
    slug: str,
    cost: float,
    drop: float | None,
    ttft: float,
    *,
    goodput: float = 1.0,
    tok_s: float = 100.0,
    gpus: int = 1,
    feasible: bool = True,
) -> TrialSelection:
    return TrialSelection(
        slug=slug,
        status="ok",
        is_baseline=False,
        gpus=gpus,
        feasible=feasible,
        reasons=[] if feasible else ["x"],
        notes=[],
        operating_concurrency=8,
        goodput=goodput,
        goodput_per_gpu=goodput / gpus,
        output_tok_s=tok_s,
        good_output_tok_s=tok_s,
        tok_s_per_gpu=tok_s / gpus,
        usd_per_1m_output_tokens=cost,
        ttft_p99_ms=ttft,
        itl_p99_ms=10.0,
        accuracy=[],
        accuracy_drop=drop,
        on_pareto_front=False,
        rank=None,
    )


def test_pareto_front_on_a_constructed_case() -> None:
    rows = [
        make_row("cheap", 1.0, 0.03, 400),
        make_row("accurate", 2.0, 0.00, 400),
        make_row("fast", 3.0, 0.03, 100),
        make_row("dominated", 2.0, 0.03, 400),  # no better than "accurate" anywhere
        make_row("twin-a", 1.5, 0.01, 300),  # identical twins dominate neither other
        make_row("twin-b", 1.5, 0.01, 300),
        make_row("unmeasured", 1.0, None, 400),  # unknown drop counts as the worst
        make_row("rejected", 0.1, 0.0, 10, feasible=False),
    ]
    assert pareto_front(rows) == {"cheap", "accurate", "fast", "twin-a", "twin-b"}
    assert dominates((1, 1, 1), (1, 1, 2)) and not dominates((1, 1, 1), (1, 1, 1))


@pytest.mark.parametrize(
    ("objective", "order"),
    [
        (Objective.MIN_COST_PER_1M_TOKENS, [FP8, BF16, FP8_TP2]),  # $1.111, $1.389, $1.667
        (Objective.MAX_GOODPUT_PER_GPU, [FP8, BF16, FP8_TP2]),  # 3.0, 2.4, 2.0 req/s per GPU
        (Objective.MAX_THROUGHPUT, [FP8_TP2, FP8, BF16]),  # 1000, 750, 600 good tok/s
        (Objective.MIN_TTFT, [BF16, FP8_TP2, FP8]),  # 300, 350, 480 ms
    ],
)
def test_each_objective_ranks_the_feasible_trials(objective: Objective, order: list[str]) -> None:
    selection = run(gpu_records().values(), SLA_GPU.model_copy(update={"objective": objective}))
    assert [row.slug for row in selection.feasible] == order
    assert [row.rank for row in selection.feasible] == [1, 2, 3]
    assert selection.champion == order[0] and selection.objective is objective
    # Rejected trials follow the ranked ones, by slug.
    assert [row.slug for row in selection.rows[3:]] == sorted([FAILED, INT4, KV_FP8])


def test_objective_ties_are_broken_by_cost_then_slug() -> None:
    rows = [
        make_row("b", cost=2.0, drop=0, ttft=100),
        make_row("c", cost=1.0, drop=0, ttft=100),
        make_row("a", cost=2.0, drop=0, ttft=100),
    ]
    ordered = sorted(rows, key=lambda row: rank_key(row, Objective.MIN_TTFT))
    assert [row.slug for row in ordered] == ["c", "a", "b"]
    equal = [make_row(s, cost=1.0, drop=0, ttft=100, goodput=2.0, tok_s=50) for s in "zyx"]
    for objective in Objective:
        ordered = sorted(equal, key=lambda row: rank_key(row, objective))
        assert [row.slug for row in ordered] == ["x", "y", "z"]


def test_a_tie_between_records_picks_the_lower_slug_deterministically() -> None:
    records = gpu_records()
    twin = renamed(records[FP8], "llama-3.1-8b__fp8__kv-auto__tp1-a-twin")
    forward = run([records[FP8], twin])
    backward = run([twin, records[FP8]])
    assert forward == backward
    assert forward.champion == FP8 and forward.row(twin.slug).rank == 2
    assert sorted(forward.pareto_front) == sorted([FP8, twin.slug])


def test_ranking_a_rejected_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="only feasible trials are ranked"):
        rank_key(make_row("r", 1.0, 0.0, 1.0, feasible=False), Objective.MIN_TTFT)


def test_nothing_feasible_gives_no_champion_and_says_why() -> None:
    impossible = SLA_GPU.model_copy(update={"ttft_p99_ms": 10.0})
    selection = run(gpu_records().values(), impossible, target_request_rate=10.0)
    assert selection.champion is None and selection.capacity is None
    assert selection.champion_reason == (
        "no feasible trial: all 6 trial(s) were rejected (each row says why)"
    )
    assert selection.feasible == [] and selection.pareto_front == []


def test_champion_reason_names_the_objective_and_its_value() -> None:
    selection = run(gpu_records().values())
    assert selection.champion == FP8
    assert selection.champion_reason == (
        "lowest cost per 1M output tokens ($1.1111 per 1M output tokens) of 3 feasible trial(s); "
        "ties broken by cost, then slug"
    )


# --- refusing what must not be compared -----------------------------------------------------


def test_cpu_and_gpu_records_are_never_ranked_together() -> None:
    with pytest.raises(MixedHardwareError) as error:
        run([*gpu_records().values(), *cpu_records()])
    message = str(error.value)
    assert "different hardware" in message and "CPU numbers are never ranked against GPU" in message
    assert "cpu: smollm2-135m-instruct__bf16__kv-auto__tp1" in message
    assert f"H100-SXM-80GB: {BF16}" in message


def test_a_record_whose_benchmark_ran_elsewhere_is_refused() -> None:
    record = gpu_records()[FP8]
    moved = record.model_copy(update={"benchmark": record.benchmark.model_copy(update={"hardware": "cpu"})})
    with pytest.raises(MixedHardwareError, match=r"cpu: .*tp1 \(BenchmarkResult\)"):
        run([moved])


def test_records_from_other_hardware_than_the_target_are_refused() -> None:
    with pytest.raises(
        MixedHardwareError,
        match="selecting for H100-SXM-80GB, but some records were measured on other hardware: cpu: smollm2",
    ):
        run(cpu_records(), hardware="H100-SXM-80GB")
    assert run(gpu_records().values(), hardware="H100-SXM-80GB").champion == FP8


def test_no_records_is_an_error_unless_the_hardware_is_known() -> None:
    with pytest.raises(ValueError, match="no trial records"):
        run([])
    selection = run([], hardware="H100-SXM-80GB", target_request_rate=1.0)
    assert (selection.rows, selection.champion, selection.capacity) == ([], None, None)
    assert selection.champion_reason == "no trial records: no trial of the sweep has run"


def test_other_incomparable_inputs_are_refused() -> None:
    records = gpu_records()
    with pytest.raises(ValueError, match=f"share a slug \\({FP8}\\)"):
        run([records[FP8], records[FP8]])
    other = records[BF16].model_copy(
        update={"benchmark": records[BF16].benchmark.model_copy(update={"osl": 128})}
    )
    with pytest.raises(ValueError, match="different workloads .*1024/128, 1024/256"):
        run([records[FP8], other])


# --- capacity plan --------------------------------------------------------------------------


def test_capacity_plan_of_the_cheapest_champion() -> None:
    plan = run(gpu_records().values(), target_request_rate=10.0).capacity
    # ceil(10 / 3.0 req/s per replica) = 4 replicas of 1 GPU at $3/h.
    assert plan.slug == FP8 and plan.operating_concurrency == 32
    assert (plan.replicas, plan.gpus_per_replica, plan.total_gpus) == (4, 1, 4)
    assert plan.usd_per_hour == pytest.approx(12.0)


def test_capacity_plan_of_a_two_gpu_champion() -> None:
    sla = SLA_GPU.model_copy(update={"objective": Objective.MAX_THROUGHPUT})
    plan = run(gpu_records().values(), sla, target_request_rate=10.0).capacity
    # ceil(10 / 4.0) = 3 replicas * 2 GPUs = 6 GPUs, $18/h.
    assert (plan.slug, plan.replicas, plan.total_gpus) == (FP8_TP2, 3, 6)
    assert plan.usd_per_hour == pytest.approx(18.0)


def test_an_exact_fit_never_asks_for_one_replica_more() -> None:
    row = run(gpu_records().values()).row(FP8)
    assert capacity_plan(row, 9.0, PRICE).replicas == 3  # 9 / 3.0 = 3 exactly
    assert capacity_plan(row, 9.0001, PRICE).replicas == 4
    slow = make_row("slow", 1.0, 0.0, 100, goodput=0.1)
    assert 0.3 / 0.1 != 3.0  # float noise, absorbed
    assert capacity_plan(slow, 0.3, PRICE).replicas == 3
    assert capacity_plan(slow, 0.01, PRICE).replicas == 1


def test_no_capacity_plan_for_a_rejected_trial_or_a_bad_rate() -> None:
    selection = run(gpu_records().values())
    with pytest.raises(ValueError, match="is not feasible"):
        capacity_plan(selection.row(INT4), 10.0, PRICE)
    with pytest.raises(ValueError, match="must be positive"):
        run(gpu_records().values(), target_request_rate=0.0)
    assert selection.capacity is None


# --- the record and its renderings ----------------------------------------------------------


def test_selection_round_trips_through_json() -> None:
    selection = run(gpu_records().values(), target_request_rate=10.0)
    assert Selection.model_validate_json(selection.model_dump_json()) == selection
    assert selection.source == "measured" and selection.hardware == "H100-SXM-80GB"
    assert selection.sla == SLA_GPU and selection.usd_per_gpu_hour == PRICE


def render(selection: Selection) -> str:
    console = Console(record=True, width=400)
    console.print(selection_table(selection))
    return " ".join(console.export_text().split())  # the caption wraps: compare words


def test_table_caption_names_the_hardware_and_rows_carry_reasons() -> None:
    text = render(run(gpu_records().values(), target_request_rate=10.0))
    assert f"champion: {FP8}" in text
    assert "measured on H100-SXM-80GB;" in text and "not GPU figures" not in text
    assert "Capacity for 10 req/s: 4 x 1 GPU = 4 GPUs, $12.00/hour" in text
    assert f"{BF16} *" in text and f"{FP8_TP2} *" not in text
    assert "trial failed: RuntimeError" in text
    assert "1.6667" in text


def test_cpu_numbers_are_captioned_as_cpu() -> None:
    sla = SLA(ttft_p99_ms=5000, itl_p99_ms=1000, max_accuracy_drop=0.05)
    selection = select(cpu_records(), sla, usd_per_gpu_hour=0.10)
    assert selection.hardware == "cpu"
    assert "measured on cpu (CPU reference stack: not GPU figures)" in render(selection)


def test_no_champion_table_says_why() -> None:
    selection = run(gpu_records().values(), SLA_GPU.model_copy(update={"ttft_p99_ms": 10.0}))
    assert "no champion: no feasible trial" in render(selection)


def test_plain_text_table_keeps_each_row_on_one_line() -> None:
    text = selection_table_text(run(gpu_records().values()))
    line = next(line for line in text.splitlines() if FAILED in line)
    assert "trial failed: RuntimeError: trtllm-build exited with status 1" in line
    assert "measured on H100-SXM-80GB" in text


def test_sweep_records_load_from_trial_folders(tmp_path: Path) -> None:
    for path in sorted(GPU_SWEEP.glob("*.json")):
        (tmp_path / path.stem).mkdir()
        shutil.copy(path, tmp_path / path.stem / "record.json")
    records = load_sweep_records(tmp_path)
    assert [r.slug for r in records] == sorted(gpu_records())
    with pytest.raises(FileNotFoundError, match="no \\*/record.json"):
        load_sweep_records(tmp_path / FP8)
    assert math.isclose(run(records).row(FP8).good_output_tok_s, 750.0)
