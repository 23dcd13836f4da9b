"""The trtllm-pytorch stack for real on this CPU where it can be: ModelOpt's unified HF export of
a real (tiny) Llama, the bundle and its checked LLM-API options, Triton's llmapi repository
parsed with Triton's schema, and both servers' process handling with stand-ins for
`trtllm-serve` and `launch_triton_server.py` (tests/fixtures/trtllm_standins: NOT NVIDIA's code),
benchmarked by the real aiperf on the OpenAI completions route. The real servers run only on a
GPU machine (tests/gpu)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Build, Workload
from enginesweep.engines.manifest import verify_bundle
from enginesweep.engines.processes import session_pids
from enginesweep.engines.quantize.hf_export import quant_config_problems
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe
from enginesweep.engines.stacks import BuildKnobs
from enginesweep.engines.stacks.trtllm_engine import StepFailed
from enginesweep.engines.stacks.trtllm_pytorch import TrtllmPytorchStack
from enginesweep.engines.triton.server import free_port
from enginesweep.engines.trtllm.contract import ContractError
from enginesweep.engines.trtllm.templates import parse_config
from testkit.bench import benchmark
from testkit.standin_layouts import build_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).parents[1] / "fixtures"
STANDINS = FIXTURES / "trtllm_standins"
CALIBRATION = CalibrationSpec(dataset="test", sha256="0" * 64, samples=2, seq_len=32)
KNOBS = BuildKnobs(max_batch_size=8, max_num_tokens=512, max_seq_len=256)
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "To be, or not to be: that is the question. " * 4,
]


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A TensorRT-LLM source checkout of stand-ins, `trtllm-serve` and `tritonserver` on PATH."""
    layout = build_layout(tmp_path, "checkout")
    layout.apply(monkeypatch)
    return layout.root


def _stack(root: Path, server_kind: str, build: Build | None = None) -> TrtllmPytorchStack:
    return TrtllmPytorchStack(
        version="1.2.0",
        trtllm_root=str(root),
        server_kind=server_kind,
        build=build or Build(awq_block_size=64, calib_max_seq_length=32),
        ports=(free_port(), free_port(), free_port()),
    )


def _recipe(quant: QuantFormat, kv: KVCacheFormat, tp: int = 1) -> QuantRecipe:
    return QuantRecipe(quant=quant, kv_cache=kv, tp=tp, awq_block_size=64, calibration=CALIBRATION)


def _bundle(stack, tiny_llama_dir, tmp_path, recipe):
    quantized = stack.quantize(
        tiny_llama_dir, recipe, tmp_path / "quantized", key="k1", calibration_texts=TEXTS, log=lambda _: None
    )
    build = stack.build(
        quantized,
        KNOBS,
        tmp_path / "trial" / "bundle",
        slug="t1",
        checkpoint={"repo_id": "x/y", "sha": "0" * 40},
        target={"gpu": "H100-SXM-80GB", "sm": 90},
    )
    return quantized, build


@pytest.mark.container  # also with ModelOpt 0.37 + transformers 4.57.1 (TensorRT-LLM 1.2's)
@pytest.mark.parametrize(
    ("quant", "kv"),
    [
        (QuantFormat.FP8, KVCacheFormat.AUTO),
        (QuantFormat.FP8, KVCacheFormat.FP8),
        (QuantFormat.INT4_AWQ, KVCacheFormat.AUTO),
    ],
)
def test_a_real_unified_hf_export_is_recorded_in_the_bundle(root, tiny_llama_dir, tmp_path, quant, kv):
    stack = _stack(root, "triton")
    recipe = _recipe(quant, kv, tp=2)
    quantized, build = _bundle(stack, tiny_llama_dir, tmp_path, recipe)
    export = Path(quantized.trtllm_checkpoint_dir)
    written = json.loads((export / "hf_quant_config.json").read_text())
    assert quant_config_problems(written, recipe) == []
    assert written["quantization"]["quant_algo"] == quant.spec.trtllm_quant_algo
    assert (
        json.loads((export / "config.json").read_text())["quantization_config"]["quant_method"] == "modelopt"
    )
    assert (export / "tokenizer.json").is_file() and not (tmp_path / "quantized" / "checkpoint.tmp").exists()

    bundle = Path(build.bundle_dir)
    manifest = verify_bundle(bundle)  # content hash over the hard-linked checkpoint and options
    assert manifest.trtllm_checkpoint["hf_quant_config.json"] == written
    assert manifest.versions["llm_api_contract"] == "1.2" and "modelopt" in manifest.versions
    options = yaml.safe_load((bundle / "llm_api_options.yaml").read_text())
    assert options["tensor_parallel_size"] == 2 and options["max_batch_size"] == 8
    assert options["kv_cache_config"]["dtype"] == ("fp8" if kv is KVCacheFormat.FP8 else "auto")
    assert (bundle / "checkpoint" / "model.safetensors").stat().st_ino == (
        export / "model.safetensors"
    ).stat().st_ino  # linked, not copied


def test_the_unquantized_baseline_serves_the_source_checkpoint(root, tiny_llama_dir, tmp_path):
    stack = _stack(root, "trtllm-serve")
    quantized, build = _bundle(stack, tiny_llama_dir, tmp_path, _recipe(QuantFormat.BF16, KVCacheFormat.AUTO))
    assert quantized.model_dir == str(tiny_llama_dir) and quantized.trtllm_config == {}
    assert build.manifest.trtllm_checkpoint["format"] == "Hugging Face (unquantized)"
    with pytest.raises(ContractError, match="int8_sq: not a unified-HF format"):
        stack.quantize(
            tiny_llama_dir,
            _recipe(QuantFormat.INT8_SQ, KVCacheFormat.AUTO),
            tmp_path / "q2",
            key="k2",
            calibration_texts=TEXTS,
            log=lambda _: None,
        )


def test_triton_llmapi_repository_is_decoupled_parsed_and_served(root, tiny_llama_dir, tmp_path):
    stack = _stack(root, "triton")
    _, build = _bundle(stack, tiny_llama_dir, tmp_path, _recipe(QuantFormat.FP8, KVCacheFormat.AUTO))
    repo = stack.write_model_repository(build, tmp_path / "trial" / "triton_repo")
    config = parse_config((repo / "tensorrt_llm" / "config.pbtxt").read_text(), model="tensorrt_llm")
    assert config.model_transaction_policy.decoupled and config.backend == "python"
    body = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert body["model"] == str(Path(build.bundle_dir) / "checkpoint") and body["backend"] == "pytorch"
    assert body["triton_config"] == {"max_batch_size": 0, "decoupled": True}
    assert body["kv_cache_config"]["free_gpu_memory_fraction"] == 0.9
    with stack.server(repo, tmp_path / "trial" / "server") as server:
        assert urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5).status == 200
        assert (
            server.model == "tensorrt_llm"
            and server.endpoint.path == "/v2/models/tensorrt_llm/generate_stream"
        )
        assert "sampling_param_max_tokens" in server.endpoint.payload
        pid = server.process.pid
    assert session_pids(pid) == []


def test_trtllm_serve_is_benchmarked_by_aiperf_on_the_completions_route(root, tiny_llama_dir, tmp_path):
    stack = _stack(root, "trtllm-serve")
    _, build = _bundle(stack, tiny_llama_dir, tmp_path, _recipe(QuantFormat.FP8, KVCacheFormat.FP8))
    repo = stack.write_model_repository(build, tmp_path / "trial" / "repo")
    facts = json.loads((repo / "serve.json").read_text())
    assert facts["argv"][:3] == ["trtllm-serve", "serve", str(Path(build.bundle_dir) / "checkpoint")]
    workload = Workload(isl={"mean": 32}, osl={"mean": 8}, concurrency=[1, 2], request_count=6)
    with stack.server(repo, tmp_path / "trial" / "server") as server:
        assert server.metrics_url == f"{server.url}/metrics"  # JSON iteration stats, sampled as such
        result = benchmark(server, stack.tokenizer_dir(build), tmp_path / "bench", workload)
        pid = server.process.pid
    assert session_pids(pid) == []
    assert [level.concurrency for level in result.levels] == [1, 2]
    assert all(
        level.request_count == 6 and level.error_count == 0 and level.output_tok_s > 0
        for level in result.levels
    )
    assert result.endpoint.endswith("/v1/completions")


def test_a_server_that_dies_at_start_is_a_reason_with_its_log(root, tiny_llama_dir, tmp_path, monkeypatch):
    stack = _stack(root, "trtllm-serve")
    _, build = _bundle(stack, tiny_llama_dir, tmp_path, _recipe(QuantFormat.BF16, KVCacheFormat.AUTO))
    repo = stack.write_model_repository(build, tmp_path / "trial" / "repo")
    monkeypatch.setenv("STANDIN_FAIL", "serve")
    with pytest.raises(StepFailed, match="CUDA out of memory"):
        with stack.server(repo, tmp_path / "trial" / "server"):
            pytest.fail("a server whose process died at start was reported ready")


def test_a_sweep_trial_runs_the_pytorch_stack_end_to_end(root, tiny_llama_dir, tmp_path, monkeypatch):
    """run_trial drives the stack like the others: a real FP8 export, the bundle, the stand-in
    trtllm-serve benchmarked by the real aiperf with shared-prefix prompts, its KV-block reuse
    read from /metrics, a record measured on the sweep's GPU (a fake nvidia-smi says H100), the
    options and hf_quant_config in the manifest."""
    import enginesweep.engines.stacks.trtllm_pytorch as pytorch_module
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning import expand
    from enginesweep.evaluation.records import TrialRecord
    from enginesweep.flows.trial import run_trial

    monkeypatch.setattr(pytorch_module, "installed_version", lambda: "1.2.0")
    monkeypatch.setenv("TRTLLM_ROOT", str(root))
    lm_eval = tmp_path / "checkout-bin" / "lm-eval-trtllm"
    lm_eval.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDINS / "lm_eval_trtllm.py"} "$@"\n')
    lm_eval.chmod(0o755)
    monkeypatch.setenv("ENGINESWEEP_LM_EVAL", str(lm_eval))
    monkeypatch.setenv("STANDIN_HF_MODEL", str(tiny_llama_dir))
    smi = Path(os.environ["PATH"].split(os.pathsep)[0]) / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0'\n")
    smi.chmod(0o755)
    spec = {
        "name": "pytorch-e2e",
        "model": {"path": str(tiny_llama_dir)},
        "stack": "trtllm-pytorch",
        "target": {"gpu": "H100-SXM-80GB"},
        "axes": {
            "quant": ["fp8"],
            "kv_cache": ["fp8"],
            "tp": [1],
            "max_batch_size": [4],
            "max_num_tokens": [512],
            "max_seq_len": [256],
        },
        "build": {"calib_size": 2, "calib_max_seq_length": 32},
        "workload": {
            "isl": {"mean": 48},
            "osl": {"mean": 8},
            "concurrency": [2],
            "request_count": 8,
            "shared_prefix": {"pool_size": 2, "tokens": 32},
        },
        "accuracy": {"task_limit": 12, "batch_size": 4},
        "execution": {"pytorch_server": "trtllm-serve"},
        "workspace": str(tmp_path / "ws"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    resolved = load_spec(path)
    (trial,) = expand(resolved).to_run
    record = run_trial(resolved, trial.slug, log=lambda _: None)
    assert record.status == "ok" and record.stack == "trtllm-pytorch" and record.hardware == "H100-SXM-80GB"
    (level,) = record.benchmark.levels
    assert level.request_count == 8 and level.error_count == 0
    assert record.benchmark.endpoint.endswith("/v1/completions")
    # Two shared prefixes among 8 requests: from the benchmark's iteration statistics (the
    # warm-up before the first scrape left out), reused and missed blocks and their hit rate.
    traffic = record.benchmark.traffic
    assert traffic is not None and traffic.prefix_reuse_ratio > 0.4
    metrics = record.server_metrics
    assert metrics is not None and metrics["kv_reused_blocks"] > 0 and metrics["kv_missed_blocks"] > 0
    assert metrics["kv_cache_hit_rate"] == pytest.approx(
        metrics["kv_reused_blocks"] / (metrics["kv_reused_blocks"] + metrics["kv_missed_blocks"])
    )
    saved = TrialRecord.load(tmp_path / "ws" / "sweeps" / "pytorch-e2e" / trial.slug / "record.json")
    assert saved.benchmark == record.benchmark
    # Accuracy out of process: lm-eval's commands for the baseline and the variant, their files
    # read back item by item and paired (the stand-in scores the same model twice: zero deltas).
    assert record.accuracy.perplexity is None and record.baseline_accuracy.perplexity is None
    assert [t.task for t in record.accuracy.tasks] == ["enginesweep_cloze", "enginesweep_recall"]
    assert all(len(t.item_values) == 12 for t in record.accuracy.tasks)
    assert [d.metric for d in record.accuracy_deltas] == [
        "enginesweep_cloze.acc",
        "enginesweep_recall.exact_match",
    ]
    assert all(d.delta == 0 and d.n == 12 for d in record.accuracy_deltas)
    log = (tmp_path / "ws" / "sweeps" / "pytorch-e2e" / trial.slug / "accuracy" / "lm_eval.log").read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and all(
        "--model trtllm" in c and "tensor_parallel_size=1" in c for c in commands
    )
    assert f"model={tiny_llama_dir}," in commands[0]  # the baseline: the unquantized source
    assert f"model={record.bundle_dir}/checkpoint," in commands[1]  # the variant: the bundle


def test_a_server_left_by_a_killed_run_is_reaped_before_the_next_start(root, tiny_llama_dir, tmp_path):
    """SIGKILL of the flow leaves trtllm-serve running in its own session; its pidfile and its
    command line (which names the trial's repository folder) let the next start stop it."""
    import subprocess

    stack = _stack(root, "trtllm-serve")
    _, build = _bundle(stack, tiny_llama_dir, tmp_path, _recipe(QuantFormat.BF16, KVCacheFormat.AUTO))
    repo = stack.write_model_repository(build, tmp_path / "trial" / "repo")
    argv = json.loads((repo / "serve.json").read_text())["argv"]
    assert str(repo) in " ".join(argv)
    workdir = tmp_path / "trial" / "server"
    workdir.mkdir(parents=True)
    orphan = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL)
    (workdir / "server.pid").write_text(str(orphan.pid))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{stack.http_port}/health", timeout=1)
            break
        except OSError:
            import time

            time.sleep(0.1)
    with stack.server(repo, workdir) as server:  # not "a server already answers": it was reaped
        assert server.process.pid != orphan.pid
    assert orphan.wait(timeout=30) is not None
