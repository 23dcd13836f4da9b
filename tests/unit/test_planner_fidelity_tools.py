"""The planner's decision tools: capacity plan, calibration (fit, store, rescale), top-k pruning,
several GPUs side by side, the KV-cache warning, and the roofline against NVIDIA's published rows."""

from __future__ import annotations

import json
import math

import pytest

from enginesweep.build_configs.loading import SpecError, load_spec
from enginesweep.build_configs.schema import SLA, Objective
from enginesweep.evaluation.planning import expand
from enginesweep.evaluation.planning.calibration import (
    STORE_NAME,
    CalibrationStore,
    Pair,
    fit,
    fit_factor,
    mape,
)
from enginesweep.evaluation.planning.fidelity import compare, mean_abs_error_pct, published_rows
from enginesweep.evaluation.planning.prediction import assemble, capacity, level, rescale
from enginesweep.evaluation.planning.prune import is_baseline

pytestmark = pytest.mark.unit

SLA_300_30 = SLA(ttft_p99_ms=300, itl_p99_ms=30)


def _prediction(levels, sla=SLA_300_30, osl=100, gpus=2, usd=2.0):
    made = [
        level(concurrency=c, in_flight=c, ttft_ms=t, itl_ms=i, output_tok_s=tok, osl=osl, sla=sla)
        for c, t, i, tok in levels
    ]
    return assemble(
        source="predicted:roofline",
        source_version="test",
        hardware="H100-SXM-80GB",
        gpus=gpus,
        usd_per_gpu_hour=usd,
        lone=made[0],
        saturated=made[-1],
        levels=made,
    )


def test_sla_operating_point_and_cost_come_from_the_highest_level_meeting_the_sla():
    pred = _prediction([(1, 50, 10, 100), (8, 120, 20, 700), (32, 400, 40, 2000)])
    assert pred.max_concurrency_meeting_sla == 8
    assert pred.goodput_req_s_at_sla == pytest.approx(7.0)  # 700 tok/s / OSL 100
    # 2 GPUs * $2/h / (700 tok/s * 3600) * 1e6
    assert pred.usd_per_1m_output_tokens_at_sla == pytest.approx(4 / (700 * 3600) * 1e6)
    assert pred.usd_per_1m_output_tokens == pytest.approx(4 / (2000 * 3600) * 1e6)  # peak: cheaper


def test_capacity_plan_sizes_replicas_from_goodput_at_the_sla():
    pred = _prediction([(1, 50, 10, 100), (8, 120, 20, 700), (32, 400, 40, 2000)])
    plan = capacity(pred, target_request_rate=20, osl=100, gpus=2, usd_per_gpu_hour=2.0)
    assert plan.replicas == 3  # ceil(20 / 7)
    assert plan.total_gpus == 6 and plan.usd_per_hour == pytest.approx(12.0)
    # $12/h over the 20 req/s * 100 tokens actually served
    assert plan.usd_per_1m_output_tokens == pytest.approx(12 / (2000 * 3600) * 1e6)
    exact = capacity(pred, target_request_rate=21, osl=100, gpus=2, usd_per_gpu_hour=2.0)
    assert exact.replicas == 3  # 21 / 7 = 3 exactly: no extra replica for float noise


def test_no_capacity_plan_when_no_level_meets_the_sla():
    pred = _prediction([(1, 500, 10, 100), (8, 900, 20, 700)])
    assert pred.max_concurrency_meeting_sla is None
    assert capacity(pred, target_request_rate=5, osl=100, gpus=2, usd_per_gpu_hour=2.0) is None
    with pytest.raises(ValueError, match="positive"):
        capacity(pred, target_request_rate=0, osl=100, gpus=2, usd_per_gpu_hour=2.0)


def _pair(metric, predicted, measured, trial="t1", concurrency=1, **key):
    fields = {
        "hardware": "cpu",
        "stack": "reference",
        "runtime": "2.13.0+cpu",
        "predictor": "predicted:roofline",
        "model": "SmolLM2-135M",
        "workload": "128/16",
        "measured_at": "2026-11-26T12:00:00+00:00",
        **key,
    }
    return Pair(
        trial=trial, metric=metric, concurrency=concurrency, predicted=predicted, measured=measured, **fields
    )


def test_mape_and_factor_on_known_values():
    pairs = [(10.0, 20.0), (5.0, 10.0), (2.0, 4.0)]  # measured = 2 x predicted
    assert mape(pairs) == pytest.approx(50.0)
    assert fit_factor(pairs) == pytest.approx(2.0)
    assert mape(pairs, 2.0) == pytest.approx(0.0)
    # The median of log ratios ignores one wild level.
    assert fit_factor([(1, 2), (1, 2), (1, 2), (1, 200)]) == pytest.approx(2.0)


def test_fit_groups_by_hardware_stack_runtime_predictor_and_model():
    pairs = [
        _pair("itl_ms", 10, 30, trial="a"),
        _pair("itl_ms", 10, 30, trial="b", concurrency=4),
        _pair("itl_ms", 10, 30, trial="b", concurrency=8),
        _pair("output_tok_s", 100, 50, trial="a"),
        *[
            _pair(
                "itl_ms",
                10,
                11,
                hardware="H100-SXM-80GB",
                stack="trtllm-engine",
                runtime="1.2.0",
                model="Llama-3.1-8B",
                trial=f"t{i}",
            )
            for i in range(3)
        ],
    ]
    fits = {f.key: f for f in fit(pairs)}
    cpu = fits["cpu/reference/2.13.0+cpu/predicted:roofline/SmolLM2-135M"]
    assert cpu.trials == 2 and cpu.pairs == {"itl_ms": 3, "output_tok_s": 1}
    assert cpu.factors == {"itl_ms": pytest.approx(3.0)}  # one throughput pair: reported, not fitted
    assert cpu.mape_before_pct == {"itl_ms": pytest.approx(200 / 3), "output_tok_s": pytest.approx(100.0)}
    assert cpu.mape_after_pct["itl_ms"] == pytest.approx(0.0)
    gpu = fits["H100-SXM-80GB/trtllm-engine/1.2.0/predicted:roofline/Llama-3.1-8B"]
    assert gpu.factors["itl_ms"] == pytest.approx(1.1) and gpu.workloads == ["128/16"]


def _three(metric, predicted, measured, **key):
    return [_pair(metric, predicted, measured, trial=f"t{i}", **key) for i in range(3)]


def test_calibration_rescales_rejudges_and_labels_the_prediction():
    pred = _prediction([(1, 50, 10, 100), (8, 120, 20, 700), (32, 250, 25, 2000)])
    assert pred.max_concurrency_meeting_sla == 32
    (group,) = fit(
        [*_three("ttft_ms", 100, 200), *_three("itl_ms", 10, 20), *_three("output_tok_s", 100, 50)]
    )
    calibrated = rescale(pred, group.calibration(), sla=SLA_300_30, osl=100, gpus=2, usd_per_gpu_hour=2.0)
    assert calibrated.source == "predicted:roofline+calibrated"
    assert calibrated.calibration.factors == {"ttft_ms": 2.0, "itl_ms": 2.0, "output_tok_s": 0.5}
    assert [lvl.ttft_ms for lvl in calibrated.per_concurrency] == [100, 240, 500]
    assert calibrated.output_tok_s == pytest.approx(1000)
    assert calibrated.max_concurrency_meeting_sla == 1  # c=8 now has TTFT 240 but ITL 40 > 30
    with pytest.raises(ValueError, match="already calibrated"):  # factors would compound
        rescale(calibrated, group.calibration(), sla=SLA_300_30, osl=100, gpus=2, usd_per_gpu_hour=2.0)


def test_store_replaces_a_group_and_lookup_takes_the_newest_measurements(tmp_path):
    older = fit(_three("itl_ms", 10, 20, runtime="2.9", measured_at="2026-01-01T00:00:00+00:00"))
    newer = fit(_three("itl_ms", 10, 30, runtime="2.10", measured_at="2026-02-01T00:00:00+00:00"))
    path = tmp_path / STORE_NAME
    CalibrationStore().update(newer).update(older).save(path)  # one fit time for both
    store = CalibrationStore.load(path)
    assert len(store.groups) == 2
    found = store.lookup("cpu", "reference", "predicted:roofline+calibrated", "SmolLM2-135M")
    assert found.runtime == "2.10" and found.factors["itl_ms"] == pytest.approx(3.0)
    assert store.lookup("cpu", "trtllm-engine", "predicted:roofline", "SmolLM2-135M") is None
    assert store.lookup("cpu", "reference", "predicted:roofline", "Llama-3.1-8B") is None
    refit = fit(_three("itl_ms", 10, 40, runtime="2.10", measured_at="2026-03-01T00:00:00+00:00"))
    assert len(store.update(refit).groups) == 2  # same key: replaced, not added
    assert not list(tmp_path.glob("*.partial"))


def test_plans_apply_a_stored_calibration_and_say_so(spec_file, tmp_path):
    def edit(spec):
        spec["workspace"] = str(tmp_path / "ws")

    resolved = load_spec(spec_file(edit))
    raw = expand(resolved).trials[0].predicted
    group = fit(
        _three(
            "itl_ms",
            1.0,
            1.5,
            hardware="H100-SXM-80GB",
            stack="trtllm-engine",
            runtime="1.2.0",
            model="Llama-3.1-8B",
        )
    )
    CalibrationStore().update(group).save(tmp_path / "ws" / STORE_NAME)
    calibrated = expand(resolved).trials[0].predicted
    assert calibrated.source == "predicted:roofline+calibrated"
    assert calibrated.itl_ms == pytest.approx(raw.itl_ms * 1.5)
    assert calibrated.ttft_ms == pytest.approx(raw.ttft_ms)  # no factor fitted for it
    assert expand(resolved, calibrated=False).trials[0].predicted == raw


def _sweep_with_sla(spec):
    spec["axes"].update(quant=["bf16", "fp8", "int4_awq"], kv_cache=["auto", "fp8"], tp=[1, 2])
    spec["workload"]["concurrency"] = [1, 8, 32]
    spec["sla"] = {"ttft_p99_ms": 500, "itl_p99_ms": 30}


def test_top_k_keeps_the_best_and_the_baseline_and_says_why_the_rest_went(spec_file):
    resolved = load_spec(spec_file(_sweep_with_sla))
    full = expand(resolved)
    pruned = expand(resolved, top_k=2)
    kept = [t for t in pruned.feasible if t.pruned is None]
    assert len(full.feasible) == 12 and len(pruned.trials) == 12  # nothing dropped from the plan
    costs = sorted((t.predicted.usd_per_1m_output_tokens_at_sla, t.slug) for t in full.feasible)
    best_two = {slug for _, slug in costs[:2]}
    assert best_two <= {t.slug for t in kept}
    assert any(is_baseline(t) for t in kept) and len(kept) == 3  # the best two + the baseline
    for trial in pruned.pruned:
        assert trial.pruned.startswith("pruned by top-k 2: rank ")
        assert "on H100-SXM-80GB by predicted $ per 1M output tokens (at the SLA, c=" in trial.pruned
        cost = trial.predicted.usd_per_1m_output_tokens_at_sla
        assert f"${cost:,.4f} per 1M output tokens)" in trial.pruned
    assert pruned.to_run == kept
    assert [t.slug for t in expand(resolved, top_k=2).pruned] == [t.slug for t in pruned.pruned]
    assert not expand(resolved, top_k=100).pruned


def test_top_k_follows_the_objective(spec_file):
    def edit(spec):
        _sweep_with_sla(spec)
        spec["sla"]["objective"] = Objective.MIN_TTFT.value

    plan = expand(load_spec(spec_file(edit)), top_k=1)
    kept = [t for t in plan.feasible if t.pruned is None and not is_baseline(t)]
    at_sla = {
        t.slug: next(
            level.ttft_ms
            for level in t.predicted.per_concurrency
            if level.concurrency == t.predicted.max_concurrency_meeting_sla
        )
        for t in plan.feasible
        if t.predicted.max_concurrency_meeting_sla
    }
    assert kept and kept[0].slug == min(at_sla, key=at_sla.get)


def test_plan_cli_top_k_prints_pruned_rows(cli):
    result = cli("plan", "llama-3.1-8b-h100", "--top-k", "3")
    assert result.exit_code == 0, result.output
    # 18 trials: the 3 best + the unquantized baseline are built, 14 pruned rows say why.
    assert "4 kept, 0 rejected, 14 pruned by top-k 3" in result.stdout
    assert result.stdout.count("pruned by top-k 3: rank") == 14


def test_several_gpus_are_planned_and_compared_but_a_sweep_needs_run_on(spec_file, cli):
    def edit(spec):
        _sweep_with_sla(spec)
        spec["target"].update(
            gpu=["H100-SXM-80GB", "A100-SXM-80GB"], usd_per_gpu_hour={"A100-SXM-80GB": 1.25}
        )

    path = spec_file(edit)
    resolved = load_spec(path)
    plan = expand(resolved)
    assert plan.gpus == ["H100-SXM-80GB", "A100-SXM-80GB"] and plan.sweep_gpu is None
    assert plan.trials[0].slug == "llama-3.1-8b-instruct__bf16__kv-auto__tp1__h100-sxm-80gb"
    a100 = [t for t in plan.trials if t.gpu == "A100-SXM-80GB"]
    assert {t.slug for t in a100 if not t.feasible} == {
        t.slug for t in a100 if t.config.quant.value == "fp8" or t.config.kv_cache.value == "fp8"
    }
    assert plan.to_run == []  # no run_on: nothing is built
    with pytest.raises(SpecError, match="target.run_on: target.gpu lists 2 GPUs"):
        resolved.gpu  # noqa: B018
    assert resolved.price(resolved.gpus[1]) == 1.25 and resolved.price(resolved.gpus[0]) == 3.0
    result = cli("plan", path)
    assert result.exit_code == 0, result.output
    assert "GPUs side by side" in result.stdout
    assert cli("run", path).exit_code == 2

    run_on = load_spec(path, ["target.run_on=A100-SXM-80GB"])
    assert {t.gpu for t in expand(run_on).to_run} == {"A100-SXM-80GB"}


def test_gpu_option_replaces_the_spec_targets(cli):
    result = cli("plan", "llama-3.1-8b-h100", "--gpu", "H100-SXM-80GB,H200-SXM-141GB", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["gpus"] == ["H100-SXM-80GB", "H200-SXM-141GB"] and len(plan["trials"]) == 36


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"gpu": ["H100-SXM-80GB", "H100-SXM-80GB"]}, "target.gpu: Value error, duplicate values"),
        (
            {"gpu": ["H100-SXM-80GB"], "run_on": "H200-SXM-141GB"},
            "run_on: 'H200-SXM-141GB' is not one of target.gpu",
        ),
        (
            {"gpu": ["H100-SXM-80GB", "L40S"], "usd_per_gpu_hour": 2.0},
            "one price for several GPUs is ambiguous",
        ),
        (
            {"gpu": ["H100-SXM-80GB"], "usd_per_gpu_hour": {"L40S": 1.0}},
            "usd_per_gpu_hour: L40S not in target.gpu",
        ),
    ],
)
def test_bad_multi_gpu_targets_are_refused(cli, spec_file, target, message):
    def edit(spec):
        spec["target"] = {**target, "gpus_available": 2}

    result = cli("validate", spec_file(edit))
    assert result.exit_code == 2
    assert message.replace("Value error, ", "") in result.stderr


def test_size_target_rps_prints_a_capacity_plan(cli):
    result = cli(
        "size",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "H100-SXM-80GB",
        "--quant",
        "fp8",
        "--tp",
        "1,2",
        "--isl",
        "1024",
        "--osl",
        "256",
        "--ttft-p99-ms",
        "500",
        "--itl-p99-ms",
        "30",
        "--target-rps",
        "50",
        "--json",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    for trial in plan["trials"]:
        cap, pred = trial["capacity"], trial["predicted"]
        assert cap["replicas"] == math.ceil(50 / pred["goodput_req_s_at_sla"] - 1e-9)
        assert cap["total_gpus"] == cap["replicas"] * trial["config"]["tp"]
        assert cap["usd_per_hour"] == pytest.approx(cap["total_gpus"] * 3.0)
    table = cli(
        "size",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "H100-SXM-80GB",
        "--quant",
        "fp8",
        "--tp",
        "1,2",
        "--ttft-p99-ms",
        "500",
        "--itl-p99-ms",
        "30",
        "--target-rps",
        "50",
    )
    assert "Capacity plan for 50 requests/s" in table.stdout


def test_kv_warning_names_the_concurrency_that_queues(cli):
    result = cli(
        "size",
        "--model",
        "llama-3.3-70b",
        "--gpu",
        "H100-SXM-80GB",
        "--quant",
        "fp8",
        "--kv-cache",
        "fp8",
        "--isl",
        "2048",
        "--osl",
        "2048",
        "--concurrency",
        "1,64",
        "--json",
    )
    trial = json.loads(result.stdout)
    assert trial["memory"]["kv_limited_sequences"] < 64
    assert (
        f"the KV cache fits {trial['memory']['max_concurrent_sequences']} sequences in flight; "
        "concurrency 64 queues" in trial["warnings"]
    )
    queued = trial["predicted"]["per_concurrency"][1]
    assert queued["in_flight"] == trial["memory"]["max_concurrent_sequences"]


def test_roofline_against_nvidias_published_rows():
    """The roofline's error on NVIDIA's perf-overview rows, as a regression guard: it is a
    first-order model (aiconfigurator, tested in integration, is what meets the 10% goal)."""
    rows = [row for row in published_rows() if not row.is_moe]
    assert len(rows) == 80
    headline = {r.name: r for r in rows}
    eight = headline["llama-3.1-8b fp8 H100-SXM-80GB tp1 128/128"]
    seventy = headline["llama-3.3-70b fp8 H100-SXM-80GB tp2 2048/2048"]
    assert (eight.output_tok_s, seventy.output_tok_s) == (28312, 3082)
    results = {c.row.name: c for c in compare(rows, predictor="roofline")}
    assert abs(results[eight.name].error_pct) < 20
    assert abs(results[seventy.name].error_pct) < 10
    hopper = [c for c in results.values() if c.row.quant == "fp8" and c.row.tp <= 2]
    assert mean_abs_error_pct(hopper) < 20
    assert mean_abs_error_pct(list(results.values())) < 40


def test_the_roofline_overpredicts_every_published_moe_row_as_docs_planner_fidelity_says():
    """No efficiency term for expert GEMMs or routing: above every one of NVIDIA's 37 MoE rows
    (docs/planner-fidelity.md; plans use aiconfigurator for these models where it covers them,
    and the roofline's MoE predictions carry a note saying this)."""
    moe = [row for row in published_rows() if row.is_moe]
    assert len(moe) == 37
    assert all(c.error_pct > 0 for c in compare(moe, predictor="roofline"))


@pytest.mark.parametrize(("gpu", "sequences"), [("H100-SXM-80GB", 12), ("H200-SXM-141GB", 100)])
def test_70b_fp8_tp1_fits_h200_with_a_large_kv_cache_but_h100_only_a_small_one(cli, gpu, sequences):
    """NVIDIA benchmarks Llama-3.3-70B FP8 at TP1 on H200 and at TP2 on H100: at TP1 an H100 has
    ~6 GB left for KV after 70.6 GB of FP8 weights (12 sequences of 2048+2048 tokens)."""
    result = cli(
        "size",
        "--model",
        "llama-3.3-70b",
        "--gpu",
        gpu,
        "--quant",
        "fp8",
        "--kv-cache",
        "fp8",
        "--isl",
        "2048",
        "--osl",
        "2048",
        "--json",
    )
    trial = json.loads(result.stdout)
    assert trial["feasible"] is True
    assert trial["memory"]["kv_limited_sequences"] == sequences


# --- consistency and edge cases ----------------------------------------------------------------


def test_roofline_latency_agrees_with_its_throughput_by_littles_law(cli):
    """A request's latency (TTFT + (OSL-1) * ITL) at B in flight must be what the throughput
    implies: B / request_rate. Otherwise SLA verdicts and capacity plans are optimistic."""
    trial = json.loads(
        cli(
            "size",
            "--model",
            "llama-3.1-8b",
            "--gpu",
            "H100-SXM-80GB",
            "--quant",
            "fp8",
            "--isl",
            "1024",
            "--osl",
            "256",
            "--concurrency",
            "1,8,32,128",
            "--json",
        ).stdout
    )
    for lvl in trial["predicted"]["per_concurrency"]:
        latency_s = (lvl["ttft_ms"] + 255 * lvl["itl_ms"]) / 1e3
        assert latency_s == pytest.approx(lvl["in_flight"] / lvl["request_rate"], rel=0.05), lvl


def test_top_k_prunes_per_gpu_and_keeps_a_baseline_on_each(spec_file):
    def edit(spec):
        _sweep_with_sla(spec)
        spec["target"].update(gpu=["H100-SXM-80GB", "H200-SXM-141GB"])

    plan = expand(load_spec(spec_file(edit)), top_k=1)
    for gpu in ("H100-SXM-80GB", "H200-SXM-141GB"):
        kept = [t for t in plan.feasible if t.gpu == gpu and t.pruned is None]
        assert len(kept) == 2 and any(is_baseline(t) for t in kept), [t.slug for t in kept]
        assert all(f"on {gpu} by predicted" in t.pruned for t in plan.pruned if t.gpu == gpu)


def test_gpu_comparison_lists_a_gpu_with_no_feasible_trial(cli):
    result = cli(
        "plan",
        "llama-3.3-70b-h100",
        "--gpu",
        "H200-SXM-141GB,L4",
        "--set",
        "axes.tp=[1]",
        "--set",
        "axes.quant=[fp8]",
    )
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("GPUs side by side") :]
    assert "L4" in table and "no feasible trial" in table


def test_osl_of_one_plans_without_dividing_by_zero(cli):
    result = cli(
        "size", "--model", "llama-3.1-8b", "--gpu", "H100-SXM-80GB", "--quant", "fp8", "--osl", "1", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["predicted"]["output_tok_s"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-rps", "0"], "must be a positive number of requests/s"),
        (
            ["--gpu", "H100-SXM-80GB,L40S", "--usd-per-gpu-hour", "2"],
            "--usd-per-gpu-hour: one price is for one GPU",
        ),
    ],
)
def test_size_refuses_bad_capacity_options(cli, args, message):
    argv = [
        "size",
        "--model",
        "llama-3.1-8b",
        *(["--gpu", "H100-SXM-80GB"] if "--gpu" not in args else []),
        *args,
    ]
    result = cli(*argv)
    assert result.exit_code == 2
    assert message in result.output


# --- aiconfigurator's answer, turned into a prediction (no worker: a recorded answer) ---------


def test_ctx_budgets_keep_up_with_the_batch_within_max_num_tokens():
    from enginesweep.evaluation.planning.aiconfigurator import ctx_options, ctx_tokens

    assert ctx_tokens(1, 1024, 256, 8192) == 1024  # a lone request: its own prefill
    assert ctx_tokens(128, 1024, 256, 8192) == 1024  # 128 // 256 + 1 = 1 prefill a step keeps up
    assert ctx_tokens(512, 128, 128, 8192) == 5 * 128  # 512 // 128 + 1
    assert ctx_tokens(4096, 128, 128, 8192) == 33 * 128
    assert ctx_tokens(4096, 1024, 2, 8192) == 8 * 1024  # capped by max_num_tokens
    assert ctx_tokens(8, 20000, 2000, 8192) == 20000  # ISL beyond max_num_tokens: one prefill
    assert ctx_options(512, 128, 8192) == [128 * k for k in (1, 2, 4, 8, 16, 32, 64)]
    assert ctx_options(3, 1024, 8192) == [1024, 2048]


def test_coverage_names_what_the_database_lacks():
    from enginesweep.build_configs.architectures import shipped_architecture
    from enginesweep.build_configs.gpus import get_gpu
    from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
    from enginesweep.build_configs.schema import Stack
    from enginesweep.build_configs.trial import TrialConfig
    from enginesweep.evaluation.planning.aiconfigurator import coverage_gap

    llama = shipped_architecture("llama-3.1-8b")

    def gap(quant="fp8", kv="auto", gpu="H100-SXM-80GB", arch=llama, osl=256):
        cfg = TrialConfig(
            quant=QuantFormat(quant),
            kv_cache=KVCacheFormat(kv),
            tp=1,
            pp=1,
            max_batch_size=64,
            max_num_tokens=8192,
            max_seq_len=4096,
        )
        return coverage_gap(arch, get_gpu(gpu), cfg, Stack.TRTLLM_ENGINE, osl)

    assert gap() is None and gap(kv="fp8") is None and gap(quant="bf16", gpu="A100-SXM-80GB") is None
    assert gap(quant="int4_awq") == "int4_awq weights on h100_sxm (no measured kernels)"
    assert gap(quant="int4_awq", gpu="A100-SXM-80GB") is None  # its int4 weight-only kernels
    assert gap(kv="int8") == "a int8 KV cache on h100_sxm (no measured kernels)"
    assert gap(gpu="L4") == "L4 (no measured database for it)"
    assert gap(arch=shipped_architecture("mistral-7b")) == "the MistralForCausalLM model family"
    assert gap(osl=1) == "an OSL of 1 (it counts the OSL-1 tokens after the first)"


def _row(batch, ttft, tpot, tok_s):
    return {"batch": batch, "ctx": 1024, "ttft_ms": ttft, "tpot_ms": tpot, "tok_s": tok_s, "memory_gb": 20.0}


def test_an_aiconfigurator_answer_becomes_a_labelled_prediction(spec_file, monkeypatch):
    import enginesweep.evaluation.planning.aiconfigurator as aic

    monkeypatch.setattr(aic, "version_label", lambda: "aiconfigurator 0.12.0 (core 0.12.0)")

    def edit(spec):
        spec["axes"].update(quant=["fp8"], kv_cache=["fp8"], tp=[1])
        spec["workload"].update(isl={"mean": 128}, osl={"mean": 256}, concurrency=[1, 8, 600])
        spec["axes"]["max_batch_size"] = [1024]
        spec["sla"] = {"ttft_p99_ms": 500, "itl_p99_ms": 30}

    resolved = load_spec(spec_file(edit))
    (trial,) = expand(resolved).trials
    assert trial.memory.max_concurrent_sequences == 1024 > 600
    answer = {
        "label": "h100_sxm / trtllm 1.3.0rc20 / SILICON",
        "points": {
            "1": _row(1, 30, 4, 255),
            "8": _row(8, 40, 5, 1600),
            "600": _row(400, 300, 25, 15000),
        },  # its memory model fits only 400
        "saturated": _row(400, 900, 26, 16000),
    }
    pred = aic.to_prediction(answer, trial, resolved, usd_per_gpu_hour=3.0)
    assert pred.source == "predicted:aiconfigurator"
    assert (
        pred.source_version == "aiconfigurator 0.12.0 (core 0.12.0) / h100_sxm / trtllm 1.3.0rc20 / SILICON"
    )
    lone, eight, queued = pred.per_concurrency
    assert lone.output_tok_s == pytest.approx(255 * 256 / 255)  # every token, not OSL-1
    assert (eight.ttft_ms, eight.itl_ms, eight.in_flight) == (40, 5, 8)
    # 600 asked, 400 fit: 200 wait one whole request (TTFT + OSL * TPOT) more.
    assert queued.in_flight == 400 and queued.ttft_ms == pytest.approx(300 + 300 + 256 * 25)
    assert pred.max_concurrency_meeting_sla == 8
    assert pred.saturation_concurrency == 400 and pred.output_tok_s == pytest.approx(16000 * 256 / 255)
    assert any("fits 400 sequences, not the planner's 1024" in note for note in pred.notes)
    assert any("PyTorch flow: an approximation of the TensorRT engine path" in note for note in pred.notes)
    big = dict(answer, saturated=_row(700, 900, 26, 17000))
    assert any(
        "beyond the 512 its database measures (extrapolated)" in note
        for note in aic.to_prediction(big, trial, resolved, usd_per_gpu_hour=3.0).notes
    )


def test_a_factor_that_does_not_lower_the_error_is_not_kept():
    # Ratios 1, 1, 10: the median factor (1) gains nothing. Ratios 2, 2, 0.1: the median (2)
    # fixes two pairs but makes the third 20x too high: MAPE 333% before, 633% after.
    flat = fit([_pair("itl_ms", 10, m, trial=f"t{i}") for i, m in enumerate((10, 10, 100))])[0]
    assert "itl_ms" not in flat.factors and flat.pairs == {"itl_ms": 3}
    skewed = [(10, 20), (10, 20), (10, 1)]
    from enginesweep.evaluation.planning.calibration import fit_factor as factor_of

    assert mape(skewed, factor_of(skewed)) > mape(skewed)
    assert (
        "itl_ms"
        not in fit([_pair("itl_ms", p, m, trial=f"s{i}") for i, (p, m) in enumerate(skewed)])[0].factors
    )


def test_an_unusable_aiconfigurator_answer_falls_back_to_the_roofline(spec_file, monkeypatch):
    import enginesweep.evaluation.planning.aiconfigurator as aic
    from enginesweep.build_configs.schema import Predictor

    monkeypatch.setattr(aic, "unavailable_reason", lambda: None)
    monkeypatch.setattr(aic, "version_label", lambda: "aiconfigurator test")
    monkeypatch.setattr(
        aic,
        "predict_batch",
        lambda requests: {
            r["id"]: {"label": "x", "points": {}, "saturated": _row(8, 1, 1, 10)} for r in requests
        },
    )
    plan = expand(load_spec(spec_file()))
    for trial in plan.feasible:
        assert trial.predicted.source == "predicted:roofline"
        assert "roofline: aiconfigurator failed (unusable answer (KeyError" in trial.predicted.notes[-1]
    with pytest.raises(Exception, match="aiconfigurator failed on .*unusable answer"):
        expand(load_spec(spec_file()), predictor=Predictor.AICONFIGURATOR)
