"""Contract tests of the trtllm-pytorch stack: LLM-API option keys, model.yaml, trtllm-serve and
hf_ptq.py flags against the pinned TensorRT-LLM / ModelOpt versions, lm-eval commands against the
installed harness's own parser, plan-time rules, and the emitted scripts (shellcheck, gates)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest

from enginesweep.build_configs import rules
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Accuracy, Build, Stack
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.llmapi.commands import (
    check_lm_eval,
    lm_eval_command,
    quantize_command,
    serve_command,
)
from enginesweep.engines.llmapi.options import check_model_yaml, check_options, llm_api_options, model_yaml
from enginesweep.engines.quantize.recipes import QuantRecipe, modelopt_config
from enginesweep.engines.trtllm.contract import ContractError, check_command, contract_for

pytestmark = pytest.mark.unit

CONTRACT = contract_for("1.2.0")


def _cfg(quant=QuantFormat.FP8, kv=KVCacheFormat.FP8, tp=2, batch=64) -> TrialConfig:
    return TrialConfig(
        quant=quant, kv_cache=kv, tp=tp, pp=1, max_batch_size=batch, max_num_tokens=8192, max_seq_len=4096
    )


def test_generated_options_keep_the_contract_and_say_what_they_set():
    options = llm_api_options(_cfg(), Build(cuda_graph_batch_sizes=[1, 8, 64, 128]))
    check_options(CONTRACT, options)
    assert options["tensor_parallel_size"] == 2 and options["kv_cache_config"]["dtype"] == "fp8"
    # Sizes above the trial's batch limit are dropped (the LLM API requires max = its largest).
    assert options["cuda_graph_config"] == {"batch_sizes": [1, 8, 64], "enable_padding": True}
    assert llm_api_options(_cfg(kv=KVCacheFormat.AUTO), Build())["cuda_graph_config"] == {
        "max_batch_size": 64,
        "enable_padding": True,
    }


def test_the_moe_options_of_the_1_2_line_pass_the_contract():
    """What a MoE trial will write (issue 20): expert and attention data parallelism and the MoE
    backend, as top-level keys and the `moe_config` section (1.2.0's MoeConfig)."""
    check_options(
        CONTRACT,
        {
            "tensor_parallel_size": 8,
            "moe_expert_parallel_size": 8,
            "moe_tensor_parallel_size": 1,
            "enable_attention_dp": True,
            "attention_dp_config": {"enable_balance": True},
            "moe_config": {"backend": "CUTLASS", "max_num_tokens": 8192},
        },
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"moe_expert_paralel_size": 8}, "'moe_expert_paralel_size' is not an LLM-API option"),
        ({"enable_attention_data_parallel": True}, "'enable_attention_data_parallel' is not an LLM-API"),
        ({"moe_config": {"backnd": "CUTLASS"}}, "moe_config.backnd is not accepted"),
        ({"moe_config": {"backend": "AUTO"}}, "moe_config.backend 'AUTO' is not one of CUTLASS"),  # post-1.2
        ({"attention_dp_config": {"balance": True}}, "attention_dp_config.balance is not accepted"),
    ],
)
def test_a_misspelt_moe_option_fails(options, message):
    with pytest.raises(ContractError, match=message):
        check_options(CONTRACT, options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tensor_parallel_size": 1, "max_num_seqs": 8}, "'max_num_seqs' is not an LLM-API option"),
        (
            {"kv_cache_config": {"free_gpu_mem_fraction": 0.9}},
            "kv_cache_config.free_gpu_mem_fraction is not accepted",
        ),
        ({"kv_cache_config": {"dtype": "int8"}}, "kv_cache_config.dtype 'int8' is not one of auto, fp8"),
        (
            {"scheduler_config": {"capacity_scheduler_policy": "MAX_UTILIZATION"}},
            "no key list for the 'scheduler_config'",
        ),
        (
            {"build_config": {"max_batch_size": 8}},
            "'build_config' is not an LLM-API option",
        ),  # TRT backend only
    ],
)
def test_a_deliberately_unknown_llm_api_key_fails(options, message):
    with pytest.raises(ContractError, match=message):
        check_options(CONTRACT, options)


def test_int8_kv_cannot_even_be_written():
    with pytest.raises(ContractError, match="kv_cache int8"):
        llm_api_options(_cfg(kv=KVCacheFormat.INT8), Build())


def test_model_yaml_is_options_plus_model_and_triton_config():
    body = model_yaml(CONTRACT, llm_api_options(_cfg(), Build()), model="/w/ckpt")
    assert body["model"] == "/w/ckpt" and body["backend"] == "pytorch"
    assert body["triton_config"] == {"max_batch_size": 0, "decoupled": True}
    with pytest.raises(ContractError, match="triton_config.max_queue_delay is not read"):
        check_model_yaml(CONTRACT, {**body, "triton_config": {"max_queue_delay": 1}})
    with pytest.raises(ContractError, match="model.yaml: 'engine_dir' is not an LLM-API option"):
        check_model_yaml(CONTRACT, {**body, "engine_dir": "/e"})


def test_serve_command_keeps_the_contract_and_an_unknown_flag_fails():
    command = serve_command(CONTRACT, model_dir="/w/ckpt", options_file="/w/o.yaml", port=8123)
    assert command.argv[:3] == ["trtllm-serve", "serve", "/w/ckpt"]
    assert command.argv[command.argv.index("--extra_llm_api_options") + 1] == "/w/o.yaml"
    check_command(CONTRACT, "trtllm-serve serve", command.argv[3:])
    # --served_model_name came to trtllm-serve after the 1.2 line (PR #11711, 2026-02).
    with pytest.raises(ContractError, match="does not accept --served_model_name"):
        check_command(CONTRACT, "trtllm-serve serve", ["--served_model_name", "m"])
    with pytest.raises(ContractError, match="'vllm' is not one of"):
        check_command(CONTRACT, "trtllm-serve serve", ["--backend", "vllm"])


def test_quantize_command_per_format_is_the_cli_verb_and_its_refusals():
    """The scripts quantize with `enginesweep quantize` (the stack's own export, offline on the
    calibration folder); its flags are the verb's (parsed by the CLI itself), calibration sizes
    the GPU defaults (AWQ: 32)."""
    import typer.main

    from enginesweep.flows.cli import app

    paths = dict(
        hf_checkpoint=PurePosixPath("/m"),
        export_dir=PurePosixPath("/w/out"),
        calib_dataset=PurePosixPath("/data/calib"),
    )
    awq = quantize_command(
        CONTRACT, _cfg(QuantFormat.INT4_AWQ, KVCacheFormat.AUTO), Build(awq_block_size=64), **paths
    )
    assert awq.argv[:2] == ["enginesweep", "quantize"]
    flags = dict(zip(awq.argv[2::2], awq.argv[3::2]))
    assert flags == {
        "--model": "/m",
        "--quant": "int4_awq",
        "--kv-cache": "auto",
        "--calib-dataset": "/data/calib",
        "--calib-size": "32",
        "--calib-seq-len": "512",
        "--export-dir": "/w/out",
        "--awq-block-size": "64",
    }
    fp8 = quantize_command(CONTRACT, _cfg(), Build(calib_size=100), **paths)
    fp8_flags = dict(zip(fp8.argv[2::2], fp8.argv[3::2]))
    assert fp8_flags["--kv-cache"] == "fp8" and fp8_flags["--calib-size"] == "100"
    verb = typer.main.get_command(app).commands["quantize"]
    for command in (awq, fp8):
        parsed = verb.make_context("quantize", command.argv[2:]).params
        assert str(parsed["export_dir"]) == "/w/out" and str(parsed["model"]) == "/m"
    for quant in (QuantFormat.INT8_SQ, QuantFormat.INT8_WO):
        with pytest.raises(ContractError, match="not a unified-HF format"):
            quantize_command(CONTRACT, _cfg(quant, KVCacheFormat.AUTO), Build(), **paths)


def test_the_stacks_modelopt_configs_are_the_ones_hf_ptq_picks():
    """The stack quantizes in-process with the configs hf_ptq.py's --qformat names (per the
    contract), and the emitted scripts run the same code (`enginesweep quantize`)."""
    import modelopt.torch.quantization as mtq

    modelopt = CONTRACT.modelopt
    for qformat, name in modelopt["qformat_configs"].items():
        quant = next(q for q in QuantFormat if q.spec.trtllm_qformat == qformat)
        assert quant.spec.modelopt_config == name and hasattr(mtq, name)
    recipe = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.FP8)
    kv_entry = json.loads(json.dumps(modelopt_config(recipe)["quant_cfg"][-1]))
    assert kv_entry == json.loads(
        json.dumps(getattr(mtq, modelopt["kv_qformat_configs"]["fp8"])["quant_cfg"][0])
    )
    # The plan's rule and the contract agree on which quantized formats the stack cannot export.
    quantized = {q for q in QuantFormat if q.is_quantized}
    exportable = {q for q in quantized if q.spec.trtllm_qformat in modelopt["qformat_configs"]}
    assert exportable | set(rules._NOT_UNIFIED_HF) == quantized
    assert not exportable & set(rules._NOT_UNIFIED_HF)


def test_lm_eval_command_is_accepted_by_the_installed_harness():
    command = lm_eval_command(
        _cfg(),
        Accuracy(task_limit=50, batch_size=8),
        model_dir="/w/ckpt",
        tokenizer_dir="/w/ckpt",
        tasks=["enginesweep_cloze", "mmlu"],
        include_path="/tasks",
        output_path="/w/acc",
    )
    argv = command.argv
    assert argv[:4] == ["lm-eval", "run", "--model", "trtllm"]
    assert "model=/w/ckpt,tokenizer=/w/ckpt,tensor_parallel_size=2" in argv[argv.index("--model_args") + 1]
    assert "--log_samples" in argv and argv[argv.index("--limit") + 1] == "50"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "--model", "trtllm", "--model_args", "pretrained=/m", "--tasks", "t"],
            "takes no pretrained",
        ),
        (["run", "--model", "trtllm", "--tasks", "t", "--log-samples"], "unrecognized arguments"),
        (["run", "--model", "hf", "--tasks", "t"], "evaluate with 'trtllm'"),
        (
            ["run", "--model", "trtllm", "--tasks", "t", "--include_path", "/a", "--include_path", "/b"],
            "keeps only the last --include_path",
        ),
    ],
)
def test_lm_eval_refusals(argv, message):
    with pytest.raises(ContractError, match=message):
        check_lm_eval(argv)


def test_plan_rules_of_the_pytorch_stack():
    assert "hf_ptq.py exports int8_sq as a TensorRT-LLM checkpoint" in rules.quant_supported(
        QuantFormat.INT8_SQ, _h100(), Stack.TRTLLM_PYTORCH
    )
    assert rules.quant_supported(QuantFormat.INT8_SQ, _h100(), Stack.TRTLLM_ENGINE) is None
    assert "no format that leaves the weights unquantized" in rules.quant_kv_combination(
        QuantFormat.BF16, KVCacheFormat.FP8, Stack.TRTLLM_PYTORCH
    )
    assert rules.quant_kv_combination(QuantFormat.BF16, KVCacheFormat.FP8, Stack.TRTLLM_ENGINE) is None


def _h100():
    from enginesweep.build_configs.gpus import get_gpu

    return get_gpu("H100-SXM-80GB")


def test_the_both_stacks_config_plans_and_rejects_int8_kv_on_pytorch_at_plan_time(cli):
    result = cli("plan", "llama-3.1-8b-h100-both-stacks", "--json", "--predictor", "roofline")
    assert result.exit_code == 0, result.output
    trials = {t["slug"]: t for t in json.loads(result.stdout)["trials"]}
    assert len(trials) == 36 and {t["stack"] for t in trials.values()} == {"trtllm-engine", "trtllm-pytorch"}
    int8 = trials["llama-3.1-8b-instruct__fp8__kv-int8__tp1__trtllm-pytorch"]
    assert not int8["feasible"] and int8["predicted"] is None
    assert int8["reasons"] == [
        "kv_cache int8 is not supported by the trtllm-pytorch stack (ModelOpt's HF export has no INT8 KV)"
    ]
    assert trials["llama-3.1-8b-instruct__fp8__kv-int8__tp1__trtllm-engine"]["feasible"]
    assert not trials["llama-3.1-8b-instruct__bf16__kv-fp8__tp1__trtllm-pytorch"]["feasible"]
    same = [
        trials[f"llama-3.1-8b-instruct__fp8__kv-fp8__tp1__{s}"] for s in ("trtllm-engine", "trtllm-pytorch")
    ]
    assert all(t["feasible"] for t in same) and same[0]["config"] == same[1]["config"]


def test_a_spec_of_only_int8_kv_on_pytorch_is_a_spec_error(cli):
    result = cli(
        "plan",
        "llama-3.1-8b-h100-both-stacks",
        "--set",
        "stack=trtllm-pytorch",
        "--set",
        "axes.kv_cache=[int8]",
    )
    assert result.exit_code == 2
    assert "axes.kv_cache[0]: kv_cache int8 is not supported by the trtllm-pytorch stack" in result.stderr


def test_reference_cannot_be_compared_with_a_gpu_stack(cli):
    result = cli("plan", "smollm2-cpu-smoke", "--set", "stack=[reference,trtllm-pytorch]")
    assert result.exit_code == 2 and "one sweep cannot compare them" in result.stderr


@pytest.mark.parametrize("server", ["trtllm-serve", "triton"])
def test_emitted_scripts_for_both_stacks_are_shellcheck_clean_and_gated(cli, tmp_path, server):
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning import expand

    out = tmp_path / "scripts"
    overrides = ["--set", f"execution.pytorch_server={server}"]
    result = cli(
        "plan", "llama-3.1-8b-h100-both-stacks", *overrides, "--predictor", "roofline", "--emit-scripts", out
    )
    assert result.exit_code == 0, result.output
    scripts = sorted(out.glob("*.sh"))
    pytorch = [s for s in scripts if s.stem.endswith("__trtllm-pytorch")]
    assert len(scripts) == 28 and len(pytorch) == 10
    readme = (out / "README.md").read_text()
    assert "## trtllm-pytorch stack" in readme and "## trtllm-engine stack" in readme
    shellcheck = Path(sys.executable).with_name("shellcheck")
    done = subprocess.run(
        [str(shellcheck if shellcheck.is_file() else shutil.which("shellcheck")), *map(str, scripts)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    resolved = load_spec("llama-3.1-8b-h100-both-stacks", [f"execution.pytorch_server={server}"])
    trial = next(
        t
        for t in expand(resolved, predictor="roofline").feasible
        if t.slug == "llama-3.1-8b-instruct__fp8__kv-fp8__tp2__trtllm-pytorch"
    )
    text = (out / f"{trial.slug}.sh").read_text()
    flat = re.sub(r" \\\n\s+", " ", text)  # continued lines joined
    assert 'enginesweep quantize --model "$MODEL_DIR" --quant fp8 --kv-cache fp8' in flat
    assert '--calib-dataset "$CALIB_DATASET"' in flat and "dtype: fp8" in text
    assert "lm-eval run --model trtllm" in text
    assert "8000" not in text and "hf_ptq" not in text and "--dataset" not in text
    if server == "triton":
        from enginesweep.engines.llmapi.repository import decouple_shell

        assert 'cp -R "$TRITON_MODELS/llmapi"' in text
        assert decouple_shell(f"$WORK/trials/{trial.slug}/triton_repo/tensorrt_llm/config.pbtxt") in text
        assert 'SERVE=(python3 "$LAUNCH_TRITON_SERVER" --world_size 2' in text and "decoupled: true" in text
        assert "sampling_param_max_tokens" in text
    else:
        assert 'trtllm-serve serve "$WORK/checkpoints/fp8__kv-fp8"' in text
        assert "--endpoint-type completions" in text and "ignore_eos:true" in text
    env = {"PATH": os.environ["PATH"], "WORK": str(tmp_path / "w")}
    refused = subprocess.run(
        ["bash", str(out / f"{trial.slug}.sh")],
        env={**env, "MODEL_DIR": "/models/a,b"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "may not hold ','" in refused.stderr
    gated = subprocess.run(
        ["bash", str(out / f"{trial.slug}.sh")],
        env={**env, "MODEL_DIR": "/m"},
        capture_output=True,
        text=True,
    )
    assert gated.returncode != 0 and "No module named 'tensorrt_llm'" in gated.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "policy",
    [
        "# model_transaction_policy {\n#   decoupled: False\n# }\n",
        "model_transaction_policy {\n  decoupled: False\n}\n",
        "",
    ],
)
def test_the_scripts_decoupling_lines_make_a_decoupled_model(tmp_path, policy):
    """The very lines the scripts run, on the shipped layout (block commented out), an explicit
    `decoupled: False` and no block at all; the result parsed with Triton's schema."""
    from enginesweep.engines.llmapi.repository import decouple_shell
    from enginesweep.engines.trtllm.templates import parse_config

    config = tmp_path / "config.pbtxt"
    config.write_text(
        f'name: "tensorrt_llm"\nbackend: "python"\nmax_batch_size: 0\n{policy}'
        'input [ { name: "text_input" data_type: TYPE_STRING dims: [ -1 ] } ]\n'
    )
    done = subprocess.run(["bash", "-c", decouple_shell(str(config))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    parsed = parse_config(config.read_text(), model="tensorrt_llm")
    assert parsed.model_transaction_policy.decoupled
    uncommented = [line for line in config.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert sum("model_transaction_policy {" in line for line in uncommented) == 1


def test_a_bundles_store_key_names_the_options_it_holds():
    """Changing an LLM-API setting of the spec makes another bundle, not a reuse of the old one
    with stale options; the other stacks' keys do not depend on those settings."""
    from enginesweep.engines.stacks import BuildKnobs
    from enginesweep.engines.stacks.trtllm_pytorch import TrtllmPytorchStack
    from enginesweep.engines.store import bundle_key

    knobs = BuildKnobs(max_batch_size=8, max_num_tokens=512, max_seq_len=256)
    target = {"gpu": "H100-SXM-80GB", "sm": 90}

    def key(build: Build) -> str:
        return bundle_key(
            TrtllmPytorchStack(version="1.2.0", build=build, ports=(1, 2, 3)), "q", knobs, target
        )

    assert key(Build()) == key(Build(calib_size=99))  # calibration is the quantized key's business
    assert key(Build()) != key(Build(enable_block_reuse=False))
    assert key(Build()) != key(Build(cuda_graph_batch_sizes=[1, 8]))
    assert key(Build()) != key(Build(kv_cache_free_gpu_mem_fraction=0.8))
    engine = SimpleNamespace(name="trtllm-engine", bundle_settings=dict)  # a stack without bundle settings
    assert bundle_key(engine, "q", knobs, target) == bundle_key(engine, "q", knobs, target)
    assert bundle_key(engine, "q", knobs, target) != key(Build())


def test_a_bad_stack_is_named_where_it_was_written(cli):
    single = cli("plan", "smollm2-cpu-smoke", "--set", "stack=trtlm")
    assert single.exit_code == 2 and "  stack: Input should be 'reference'" in single.stderr
    listed = cli("plan", "smollm2-cpu-smoke", "--set", "stack=[trtllm-engine,foo]")
    assert listed.exit_code == 2 and "  stack[1]: Input should be 'reference'" in listed.stderr
    twice = cli("plan", "smollm2-cpu-smoke", "--set", "stack=[trtllm-engine,trtllm-engine]")
    assert twice.exit_code == 2 and "duplicate values" in twice.stderr
