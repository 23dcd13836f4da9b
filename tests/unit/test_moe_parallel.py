"""Expert parallelism and attention-DP as sweep axes: the rules TensorRT-LLM's PyTorch backend
imposes (expert TP x EP = TP, EP divides the expert count, attention-DP needs TP > 1), which stack
runs which layout, the slugs, the spec errors at their YAML paths, `size --ep/--attention-dp`, and
what the roofline makes of them."""

from __future__ import annotations

import json

import pytest

from enginesweep.build_configs import rules
from enginesweep.build_configs.architectures import shipped_architecture
from enginesweep.build_configs.gpus import get_gpu
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import SLA, Stack, Workload
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.expand import plan_trial, trial_slug

pytestmark = pytest.mark.unit

H100 = get_gpu("H100-SXM-80GB")
QWEN_235B, MIXTRAL, DEEPSEEK = (
    shipped_architecture(n) for n in ("qwen3-235b-a22b", "mixtral-8x7b", "deepseek-v3")
)
LLAMA_8B = shipped_architecture("llama-3.1-8b")


def cfg(tp: int = 8, ep: int = 1, adp: bool = False, quant: str = "fp8") -> TrialConfig:
    return TrialConfig(
        quant=QuantFormat(quant),
        kv_cache=KVCacheFormat.AUTO,
        tp=tp,
        pp=1,
        ep=ep,
        attention_dp=adp,
        max_batch_size=256,
        max_num_tokens=8192,
        max_seq_len=2048,
    )


def plan(arch, config: TrialConfig, stack: Stack = Stack.TRTLLM_PYTORCH, concurrency=(1, 64)):
    return plan_trial(
        arch,
        H100,
        config,
        workload=Workload.model_validate(
            {"isl": {"mean": 1024}, "osl": {"mean": 512}, "concurrency": list(concurrency)}
        ),
        sla=SLA(),
        gpus_available=8,
        usd_per_gpu_hour=3.0,
        stack=stack,
    )


@pytest.mark.parametrize(
    ("arch", "tp", "ep", "reason"),
    [
        (QWEN_235B, 4, 8, "ep=8 does not divide tp=4: the experts are split within the TP group"),
        (MIXTRAL, 6, 3, "ep=3 does not divide the 8 experts of Mixtral-8x7B-v0.1 (valid ep: [1, 2, 4, 8])"),
        (LLAMA_8B, 2, 2, "ep=2 needs a mixture-of-experts model; Llama-3.1-8B has no experts"),
    ],
)
def test_expert_parallel_sizes_that_cannot_split_the_experts_are_refused(arch, tp, ep, reason):
    assert reason in rules.expert_parallel(arch, tp, ep)


@pytest.mark.parametrize(
    ("arch", "tp", "ep"), [(QWEN_235B, 8, 8), (QWEN_235B, 8, 4), (MIXTRAL, 8, 8), (MIXTRAL, 2, 1)]
)
def test_expert_parallel_sizes_within_tp_that_divide_the_experts_pass(arch, tp, ep):
    assert rules.expert_parallel(arch, tp, ep) is None


def test_attention_dp_needs_tp_above_one_and_a_moe_model():
    assert "attention_dp needs tp > 1" in rules.attention_dp_fits(QWEN_235B, 1, True)
    assert "a dense model" in rules.attention_dp_fits(LLAMA_8B, 2, True)
    assert rules.attention_dp_fits(QWEN_235B, 8, True) is None
    assert rules.attention_dp_fits(LLAMA_8B, 1, False) is None


def test_kv_heads_fewer_than_tp_are_copied_so_tp8_serves_qwen3_235b_with_4_kv_heads():
    assert rules.tp_divides_heads(QWEN_235B, 8) is None  # 64 heads, 4 KV heads: each copied to 2 ranks
    refused = rules.tp_divides_heads(QWEN_235B, 3)
    assert "tp=3 does not split num_attention_heads=64 and num_key_value_heads=4" in refused
    assert "(valid tp: [1, 2, 4, 8, 16, 32, 64])" in refused
    assert rules.tp_divides_heads(QWEN_235B, 3, attention_dp=True) is None  # attention stays whole


@pytest.mark.parametrize(
    ("stack", "arch", "ep", "adp", "reason"),
    [
        (Stack.TRTLLM_ENGINE, DEEPSEEK, 1, False, "the trtllm-engine stack cannot build DeepSeek-V3"),
        (Stack.TRTLLM_ENGINE, QWEN_235B, 1, False, "use stack trtllm-pytorch"),
        (Stack.TRTLLM_ENGINE, MIXTRAL, 2, True, "attention_dp is a PyTorch-backend option"),
        (Stack.REFERENCE, MIXTRAL, 2, False, "the reference stack serves from one CPU process"),
    ],
)
def test_each_stack_refuses_what_it_cannot_run(stack, arch, ep, adp, reason):
    found = [rules.stack_runs_model(stack, arch), rules.stack_parallelism(stack, ep, adp)]
    assert any(r and reason in r for r in found), found


def test_the_engine_stack_builds_mixtral_with_expert_parallelism():
    assert rules.stack_runs_model(Stack.TRTLLM_ENGINE, MIXTRAL) is None
    assert rules.stack_parallelism(Stack.TRTLLM_ENGINE, 2, False) is None
    assert rules.stack_parallelism(Stack.TRTLLM_PYTORCH, 8, True) is None


def test_slugs_name_ep_and_attention_dp_only_when_set():
    assert trial_slug("m", cfg(tp=8)) == "m__fp8__kv-auto__tp8"
    assert trial_slug("m", cfg(tp=8, ep=8, adp=True)) == "m__fp8__kv-auto__tp8__ep8__adp"
    assert trial_slug("m", cfg(tp=4, ep=4)) == "m__fp8__kv-auto__tp4__ep4"


def test_cache_keys_of_trials_without_ep_or_attention_dp_are_those_made_before_they_existed():
    before = {
        "quant": "fp8",
        "kv_cache": "auto",
        "tp": 8,
        "pp": 1,
        "max_batch_size": 256,
        "max_num_tokens": 8192,
        "max_seq_len": 2048,
    }
    assert cfg(tp=8).identity() == before
    assert cfg(tp=8, ep=4, adp=True).identity() == {**before, "ep": 4, "attention_dp": True}


def test_rejected_layouts_keep_their_reasons_and_a_memory_breakdown():
    trial = plan(QWEN_235B, cfg(tp=4, ep=8, adp=False))
    assert not trial.feasible and trial.predicted is None
    assert any("ep=8 does not divide tp=4" in r for r in trial.reasons)
    assert trial.memory.weights_bytes_per_gpu > 0


def test_attention_dp_holds_more_sequences_when_tp_copies_kv_heads():
    """TP8 over 4 KV heads keeps every head twice; with attention-DP each rank caches its own
    sequences' 4 heads once, so the group holds about twice the tokens (less the attention
    weights every rank now keeps whole)."""
    plain, adp = plan(QWEN_235B, cfg(tp=8)), plan(QWEN_235B, cfg(tp=8, adp=True))
    assert plain.feasible and adp.feasible
    assert adp.memory.weights_bytes_per_gpu > plain.memory.weights_bytes_per_gpu
    assert 1.5 < adp.memory.kv_capacity_tokens / plain.memory.kv_capacity_tokens < 2


def test_roofline_attention_dp_costs_a_lone_request_and_ep_is_said_to_be_unmodelled():
    plain, adp, ep = (plan(QWEN_235B, c) for c in (cfg(tp=8), cfg(tp=8, adp=True), cfg(tp=8, ep=8)))
    lone = {name: t.predicted.per_concurrency[0] for name, t in (("plain", plain), ("adp", adp), ("ep", ep))}
    # a lone request's attention and dense parts run on one rank instead of eight
    assert lone["adp"].ttft_ms > lone["plain"].ttft_ms
    assert lone["adp"].itl_ms > lone["plain"].itl_ms  # every rank reads the whole attention
    assert lone["ep"].ttft_ms == pytest.approx(lone["plain"].ttft_ms)
    assert any("expert parallelism: same bytes" in n for n in ep.predicted.notes)
    assert not any("expert parallelism" in n for n in plain.predicted.notes)


# --- through the CLI ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["axes.tp=[2]", "axes.ep=[4]", "target.gpus_available=2"], "axes.ep[0]: ep=4 does not divide tp=2"),
        (["axes.attention_dp=[false,true]"], "axes.attention_dp[1]: attention_dp needs tp > 1"),
        (["stack=trtllm-engine"], "stack: the trtllm-engine stack cannot build Qwen3-30B-A3B"),
        (
            ["axes.tp=[2]", "axes.ep=[2]", "target.gpus_available=2", "stack=reference", "target.gpu=cpu"],
            "axes.ep[0]: the reference stack serves from one CPU process",
        ),
    ],
)
def test_spec_values_no_trial_can_use_are_errors_at_their_yaml_path(cli, overrides, expected):
    argv = ["validate", "qwen3-30b-a3b-h100"]
    for item in overrides:
        argv += ["--set", item]
    result = cli(*argv)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr


def test_a_dense_spec_refuses_ep_at_its_path(cli):
    result = cli("validate", "llama-3.1-8b-h100", "--set", "axes.ep=[1,2]")
    assert result.exit_code == 2
    assert "axes.ep[1]: ep=2 needs a mixture-of-experts model" in result.stderr


def test_size_compares_tp8_with_ep_and_attention_dp(cli):
    result = cli(
        "size",
        "--model",
        "qwen3-235b-a22b",
        "--gpu",
        "H100-SXM-80GB",
        "--quant",
        "fp8",
        "--tp",
        "4,8",
        "--ep",
        "1,8",
        "--attention-dp",
        "off,on",
        "--json",
    )
    assert result.exit_code == 0, result.output
    trials = {t["slug"]: t for t in json.loads(result.stdout)["trials"]}
    assert trials["qwen3-235b-a22b__fp8__kv-auto__tp8__ep8__adp"]["feasible"]
    assert trials["qwen3-235b-a22b__fp8__kv-auto__tp8__ep8__adp"]["stack"] == "trtllm-pytorch"
    assert not trials["qwen3-235b-a22b__fp8__kv-auto__tp4__ep8"]["feasible"]
    assert trials["qwen3-235b-a22b__fp8__kv-auto__tp4__adp"]["config"]["attention_dp"] is True


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--attention-dp", "yes"], "--attention-dp: 'yes' is not off, on, or off,on"),
        (["--ep", "0"], "--ep: give positive integers"),
    ],
)
def test_size_bad_parallel_options_name_the_option(cli, args, expected):
    result = cli("size", "--model", "qwen3-30b-a3b", "--gpu", "H100-SXM-80GB", *args)
    assert result.exit_code == 2
    assert expected in result.output


# --- what the stacks write ----------------------------------------------------------------------


def test_the_pytorch_stack_writes_the_expert_layout_of_a_moe_model_and_the_contract_accepts_it():
    from enginesweep.build_configs.schema import Build
    from enginesweep.engines.llmapi.options import check_options, llm_api_options
    from enginesweep.engines.trtllm.contract import contract_for

    options = llm_api_options(cfg(tp=8, ep=4, adp=True), Build(moe_backend="TRITON"), moe=True)
    check_options(contract_for("1.2.0"), options)
    assert options["moe_expert_parallel_size"] == 4
    assert options["moe_tensor_parallel_size"] == 2  # expert TP x EP = TP
    assert options["enable_attention_dp"] is True
    assert options["moe_config"] == {"backend": "TRITON"}
    # a MoE trial without EP says so explicitly (defaults move between releases)
    plain = llm_api_options(cfg(tp=8), Build(), moe=True)
    assert (plain["moe_expert_parallel_size"], plain["moe_tensor_parallel_size"]) == (1, 8)
    assert "moe_config" not in plain
    # a dense model gets no MoE keys, and refuses a layout it cannot have
    assert "moe_expert_parallel_size" not in llm_api_options(cfg(tp=2), Build())


def test_a_dense_trial_with_an_expert_layout_is_refused_by_the_options():
    from enginesweep.build_configs.schema import Build
    from enginesweep.engines.llmapi.options import llm_api_options
    from enginesweep.engines.trtllm.contract import ContractError

    with pytest.raises(ContractError, match="mixture-of-experts models only"):
        llm_api_options(cfg(tp=2, ep=2), Build())


def test_a_moe_backend_outside_the_1_2_list_is_a_spec_error(cli):
    result = cli("validate", "qwen3-30b-a3b-h100", "--set", "build.moe_backend=AUTO")
    assert result.exit_code == 2
    assert "build.moe_backend: Input should be 'CUTLASS'" in result.stderr


def test_the_engine_stack_cuts_mixtral_for_ep_in_convert_checkpoint_and_refuses_quantize_py_ep():
    from pathlib import PurePosixPath

    from enginesweep.build_configs.schema import Build
    from enginesweep.engines.trtllm.commands import (
        ContractError,
        TrialPaths,
        checkpoint_command,
        checkpoint_key,
    )
    from enginesweep.engines.trtllm.contract import contract_for
    from enginesweep.engines.trtllm.layout import SCRIPT_TOOLS

    paths = TrialPaths(
        tools=SCRIPT_TOOLS,
        hf_checkpoint=PurePosixPath("/models/mixtral"),
        checkpoint_dir=PurePosixPath("/w/ckpt"),
        engine_dir=PurePosixPath("/w/engine"),
        repo_dir=PurePosixPath("/w/repo"),
        timing_cache=PurePosixPath("/w/timing.cache"),
    )
    contract = contract_for("1.2.0")
    command = checkpoint_command(contract, cfg(tp=4, ep=2, quant="bf16"), Build(), paths)
    argv = command.argv
    assert command.tool == "convert_checkpoint.py"
    assert argv[argv.index("--moe_tp_size") + 1] == "2" and argv[argv.index("--moe_ep_size") + 1] == "2"
    assert checkpoint_key(cfg(tp=4, ep=2, quant="bf16")).endswith("__tp4__pp1__ep2")
    assert checkpoint_key(cfg(tp=4, quant="bf16")).endswith("__tp4__pp1")  # keys made before ep
    with pytest.raises(ContractError, match="quantize.py has no expert-parallel option"):
        checkpoint_command(contract, cfg(tp=4, ep=2, quant="fp8"), Build(), paths)
    reason = rules.engine_expert_checkpoint(Stack.TRTLLM_ENGINE, QuantFormat.FP8, KVCacheFormat.AUTO, 2)
    assert "quantize.py has no expert-parallel option" in reason
    assert (
        rules.engine_expert_checkpoint(Stack.TRTLLM_PYTORCH, QuantFormat.FP8, KVCacheFormat.AUTO, 2) is None
    )


def test_quantized_checkpoint_keys_are_unchanged_without_ep():
    """The key a recipe had before `ep` existed: the same JSON without it."""
    import hashlib

    from enginesweep.engines.quantize.recipes import QuantRecipe

    recipe = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.AUTO, tp=2)
    before = {
        "quant": "fp8",
        "kv_cache": "auto",
        "tp": 2,
        "pp": 1,
        "awq_block_size": 128,
        "calibration": None,
    }
    payload = json.dumps({"checkpoint": "ckpt", "recipe": before}, sort_keys=True)
    assert recipe.key("ckpt") == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert recipe.key("ckpt") != recipe.model_copy(update={"ep": 2}).key("ckpt")
    assert recipe.slug == "fp8__kv-auto__tp2__pp1"


def test_build_settings_enter_keys_as_before_unless_a_moe_backend_is_set():
    from enginesweep.build_configs.schema import Build

    assert "moe_backend" not in Build().key_fields()
    assert set(Build().key_fields()) == set(Build.model_fields) - {"moe_backend"}
    assert Build(moe_backend="TRITON").key_fields()["moe_backend"] == "TRITON"


def test_the_shipped_qwen3_235b_spec_compares_tp8_tp4_with_ep_and_attention_dp():
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning.expand import expand

    plan = expand(load_spec("qwen3-235b-a22b-h100"))
    feasible = {t.slug for t in plan.feasible}
    for slug in ("tp8", "tp4__ep4", "tp8__ep8__adp", "tp4__ep4__adp"):
        assert f"qwen3-235b-a22b__fp8__kv-fp8__{slug}" in feasible
    bf16_tp4 = next(t for t in plan.trials if t.slug == "qwen3-235b-a22b__bf16__kv-auto__tp4")
    assert not bf16_tp4.feasible and "memory" in bf16_tp4.reasons[0]  # 470 GB over 4 x 80 GB
    assert all(t.predicted.source == "predicted:roofline" for t in plan.feasible)


def test_aiconfigurator_is_asked_with_the_trials_expert_layout_and_shipped_expert_formats():
    from enginesweep.evaluation.planning.aiconfigurator import coverage_gap, moe_layout

    assert moe_layout(QWEN_235B, cfg(tp=8, ep=4), "fp8_static") == {
        "tp": 8,
        "dp": 1,
        "gemm": "fp8_static",
        "moe_tp": 2,
        "moe_ep": 4,
        "moe": "fp8",
    }
    # attention-DP: attention TP 1 on 8 data-parallel ranks
    assert moe_layout(QWEN_235B, cfg(tp=8, ep=8, adp=True), "fp8_static")["tp"] == 1
    assert moe_layout(QWEN_235B, cfg(tp=8, ep=8, adp=True), "fp8_static")["dp"] == 8
    # DeepSeek ships FP8 block-scaled weights; gpt-oss MXFP4 experts run as W4A16 on Hopper
    assert moe_layout(DEEPSEEK, cfg(tp=8), "fp8_static")["gemm"] == "fp8_block"
    gpt_oss = shipped_architecture("gpt-oss-120b")
    assert moe_layout(gpt_oss, cfg(tp=1, quant="bf16"), "bfloat16")["moe"] == "w4a16_mxfp4"
    assert moe_layout(LLAMA_8B, cfg(tp=2), "fp8_static") == {"tp": 2, "dp": 1, "gemm": "fp8_static"}
    # Mixtral is not in its support matrix: the roofline, with the reason
    assert "MixtralForCausalLM" in coverage_gap(MIXTRAL, H100, cfg(tp=2), Stack.TRTLLM_PYTORCH, 128)
    assert coverage_gap(QWEN_235B, H100, cfg(tp=8, ep=8, adp=True), Stack.TRTLLM_PYTORCH, 128) is None


def test_shipped_fp8_block_and_mxfp4_weights_need_the_sms_that_run_them(cli):
    a100, l40s, b200 = (get_gpu(n) for n in ("A100-SXM-80GB", "L40S", "B200"))
    gpt_oss = shipped_architecture("gpt-oss-120b")
    assert "ships fp8_block weights" in rules.shipped_format_runs(DEEPSEEK, a100)
    assert "ships mxfp4 weights" in rules.shipped_format_runs(gpt_oss, l40s)
    assert (
        rules.shipped_format_runs(DEEPSEEK, H100) is None and rules.shipped_format_runs(gpt_oss, b200) is None
    )
    assert rules.shipped_format_runs(QWEN_235B, a100) is None  # bf16 as shipped
    assert rules.shipped_format_runs(DEEPSEEK, get_gpu("cpu")) is None
    result = cli("validate", "deepseek-v3-h200", "--set", "target.gpu=A100-SXM-80GB")
    assert result.exit_code == 2
    assert "target.gpu: DeepSeek-V3 ships fp8_block weights" in result.stderr


def test_emitted_scripts_carry_the_expert_layout_on_both_stacks(cli, tmp_path):
    """`plan --emit-scripts`: the PyTorch backend's options file sets the MoE layout; the engine
    path cuts Mixtral for EP in convert_checkpoint.py, both checked against the 1.2 contract."""
    pytorch = tmp_path / "pytorch"
    result = cli(
        "plan",
        "qwen3-235b-a22b-h100",
        "--emit-scripts",
        pytorch,
        *("--set", "axes.quant=[fp8]", "--set", "axes.exclude=[]", "--set", "axes.kv_cache=[fp8]"),
        *("--set", "axes.tp=[8]", "--set", "axes.ep=[8]", "--set", "axes.attention_dp=[true]"),
    )
    assert result.exit_code == 0, result.output
    script = (pytorch / "qwen3-235b-a22b__fp8__kv-fp8__tp8__ep8__adp.sh").read_text()
    for line in ("moe_expert_parallel_size: 8", "moe_tensor_parallel_size: 1", "enable_attention_dp: true"):
        assert line in script
    engine = tmp_path / "engine"
    result = cli(
        "plan",
        "llama-3.1-8b-h100",
        "--emit-scripts",
        engine,
        *("--set", "model.architecture=mixtral-8x7b", "--set", "axes.quant=[bf16]"),
        *("--set", "axes.kv_cache=[auto]", "--set", "axes.tp=[2]", "--set", "axes.ep=[2]"),
    )
    assert result.exit_code == 0, result.output
    (script_path,) = engine.glob("*__ep2.sh")
    assert "--moe_tp_size 1 --moe_ep_size 2" in script_path.read_text()
