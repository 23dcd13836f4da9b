"""A mixture-of-experts model through what this CPU can run (issue 20): a tiny random-weight
Qwen3-MoE made by the test (`testkit/tiny_moe.py`: 2 layers, 4 experts, 2 per token) is read as a
MoE architecture, quantized to FP8 by the real ModelOpt and exported as a unified HF checkpoint,
the export checked against the source config (expert count, top-k, every expert's shapes), built
into a trtllm-pytorch bundle whose LLM-API options carry its expert layout (checked against the 1.2
contract), served by the `trtllm-serve` stand-in (NOT NVIDIA's code) and benchmarked by the real
aiperf. Its numbers are a random-weight model's on a CPU: the test checks that they exist, not
what they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Build, Workload
from enginesweep.engines.quantize.hf_export import ExportError
from enginesweep.engines.quantize.moe_export_check import moe_export_problems
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe
from enginesweep.engines.stacks import BuildKnobs
from enginesweep.engines.stacks.trtllm_pytorch import TrtllmPytorchStack
from enginesweep.engines.triton.server import free_port
from testkit.bench import benchmark
from testkit.standin_layouts import build_layout
from testkit.tiny_moe import EXPERTS, TOP_K, build_tiny_moe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALIBRATION = CalibrationSpec(dataset="test", sha256="0" * 64, samples=2, seq_len=32)
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "To be, or not to be: that is the question. " * 4,
]


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer_dir: Path) -> Path:
    return build_tiny_moe(tmp_path_factory.mktemp("tiny_moe"), smol_tokenizer_dir)


def test_the_checkpoint_reads_as_a_mixture_of_experts(tiny_moe_dir):
    arch = ModelArchitecture.from_file(tiny_moe_dir)
    assert arch.is_moe and (arch.num_experts, arch.experts_per_token) == (EXPERTS, TOP_K)
    assert arch.active_params < arch.total_params  # 2 of 4 experts per token


def test_fp8_export_checked_bundled_with_its_expert_layout_served_and_benchmarked(
    tiny_moe_dir, tmp_path, monkeypatch
):
    layout = build_layout(tmp_path, "checkout")
    layout.apply(monkeypatch)
    stack = TrtllmPytorchStack(
        version="1.2.0",
        trtllm_root=str(layout.root),
        server_kind="trtllm-serve",
        build=Build(calib_max_seq_length=32, moe_backend="CUTLASS"),
        ports=(free_port(), free_port(), free_port()),
    )
    recipe = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.AUTO, tp=2, calibration=CALIBRATION)
    quantized = stack.quantize(
        tiny_moe_dir, recipe, tmp_path / "quantized", key="k1", calibration_texts=TEXTS, log=lambda _: None
    )
    export = Path(quantized.trtllm_checkpoint_dir)
    source = json.loads((tiny_moe_dir / "config.json").read_text())
    assert moe_export_problems(export, source) == []  # what quantize checked already, read again

    knobs = BuildKnobs(max_batch_size=4, max_num_tokens=256, max_seq_len=128, ep=2, attention_dp=True)
    build = stack.build(
        quantized,
        knobs,
        tmp_path / "trial" / "bundle",
        slug="tiny-moe__fp8__tp2__ep2__adp",
        checkpoint={"repo_id": "test/tiny-random-qwen3-moe", "sha": "0" * 40},
        target={"gpu": "H100-SXM-80GB", "sm": 90},
    )
    options = yaml.safe_load((Path(build.bundle_dir) / "llm_api_options.yaml").read_text())
    assert options["moe_expert_parallel_size"] == 2 and options["moe_tensor_parallel_size"] == 1
    assert options["enable_attention_dp"] is True and options["moe_config"] == {"backend": "CUTLASS"}

    repo = stack.write_model_repository(build, tmp_path / "trial" / "repo")
    workload = Workload(isl={"mean": 16}, osl={"mean": 4}, concurrency=[2], request_count=4)
    with stack.server(repo, tmp_path / "trial" / "server") as server:
        (level,) = benchmark(server, stack.tokenizer_dir(build), tmp_path / "bench", workload).levels
    assert level.request_count == 4 and level.error_count == 0 and level.output_tok_s > 0


@pytest.mark.container  # also with ModelOpt 0.37 + transformers 4.57 (TensorRT-LLM 1.2's: unfused experts)
def test_an_export_that_lost_experts_or_changed_top_k_is_refused(tiny_moe_dir, tmp_path):
    stack = TrtllmPytorchStack(version="1.2.0", build=Build(calib_max_seq_length=32))
    recipe = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.AUTO, calibration=CALIBRATION)
    quantized = stack.quantize(
        tiny_moe_dir, recipe, tmp_path / "quantized", key="k2", calibration_texts=TEXTS, log=lambda _: None
    )
    export = Path(quantized.trtllm_checkpoint_dir)
    source = json.loads((tiny_moe_dir / "config.json").read_text())
    count_key = next(k for k in ("num_local_experts", "num_experts") if k in source)  # per transformers
    wider = {**source, count_key: EXPERTS * 2, "num_experts_per_tok": TOP_K + 1}
    problems = moe_export_problems(export, wider)
    assert any(f"{EXPERTS} experts per layer, source {EXPERTS * 2}" in p for p in problems)
    assert any(f"top-k {TOP_K}, source {TOP_K + 1}" in p for p in problems)
    assert any("layer 0: experts [4, 5, 6, 7] missing" in p for p in problems)
    narrower = {**source, "moe_intermediate_size": 32}
    assert any("expected [32, 64]" in p for p in moe_export_problems(export, narrower))


def test_the_stack_stops_on_a_moe_export_its_check_refuses(tiny_moe_dir, tmp_path, monkeypatch):
    """quantize runs the check on every MoE export and raises on what it finds (the exporter
    itself cannot be made to drop an expert here, so the check's answer is replaced)."""
    from enginesweep.engines.quantize import hf_export

    monkeypatch.setattr(
        hf_export, "moe_export_problems", lambda export, source: ["layer 1: experts [3] missing"]
    )
    stack = TrtllmPytorchStack(version="1.2.0", build=Build(calib_max_seq_length=32))
    recipe = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.AUTO, calibration=CALIBRATION)
    with pytest.raises(ExportError, match="MoE export of .* disagrees with its source: layer 1: experts"):
        stack.quantize(
            tiny_moe_dir,
            recipe,
            tmp_path / "quantized",
            key="k3",
            calibration_texts=TEXTS,
            log=lambda _: None,
        )


def test_the_reference_stack_quantizes_exports_serves_and_benchmarks_it_under_triton(tiny_moe_dir, tmp_path):
    """ModelOpt FP8 on the CPU, the unified HF export checked against the source's experts (the
    TRT-LLM checkpoint exporter does not take fused experts), the real tritonserver serving the
    fake-quantized model and the real aiperf measuring it: a random-weight model's CPU numbers."""
    from enginesweep.engines.stacks.reference import ReferenceStack

    stack = ReferenceStack()
    recipe = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.AUTO, calibration=CALIBRATION)
    quantized = stack.quantize(
        tiny_moe_dir, recipe, tmp_path / "quantized", key="k4", calibration_texts=TEXTS, log=lambda _: None
    )
    assert quantized.export_format == "unified-hf"
    assert quantized.trtllm_config["quantization"]["quant_algo"] == "FP8"
    source = json.loads((tiny_moe_dir / "config.json").read_text())
    assert moe_export_problems(Path(quantized.trtllm_checkpoint_dir), source) == []
    build = stack.build(
        quantized,
        BuildKnobs(max_batch_size=4, max_num_tokens=256, max_seq_len=128),
        tmp_path / "trial" / "bundle",
        slug="tiny-random-qwen3-moe__fp8__kv-auto__tp1",
        checkpoint={"repo_id": "test/tiny-random-qwen3-moe", "sha": "0" * 40},
        target={"gpu": "cpu"},
    )
    assert build.manifest.trtllm_checkpoint["format"] == "unified-hf"
    repo = stack.write_model_repository(build, tmp_path / "trial" / "repo")
    workload = Workload(isl={"mean": 16}, osl={"mean": 4}, concurrency=[2], request_count=4)
    with stack.server(repo, tmp_path / "trial" / "server") as server:
        (level,) = benchmark(server, tiny_moe_dir, tmp_path / "bench", workload).levels
    assert level.request_count == 4 and level.error_count == 0 and level.output_tok_s > 0


def test_an_export_that_renames_the_expert_count_key_is_refused(tiny_moe_dir, tmp_path):
    """transformers 5 writes Qwen3-MoE's expert count as `num_local_experts`; the hub's configs
    and transformers 4.57 (TensorRT-LLM 1.2's) use `num_experts`, and 4.57 would build 128."""
    export = tmp_path / "export"
    export.mkdir()
    source = json.loads((tiny_moe_dir / "config.json").read_text())
    written = {k: v for k, v in source.items() if k not in ("num_experts", "num_local_experts")}
    (export / "config.json").write_text(json.dumps({**written, "num_local_experts": EXPERTS}))
    hub_style = {**written, "num_experts": EXPERTS}
    problems = moe_export_problems(export, hub_style)
    assert any("num_experts is None, source 4" in p for p in problems)
