"""The trtllm-pytorch stack for real on a GPU: a tiny Llama exported by ModelOpt (FP8 weights and
KV cache), served by trtllm-serve and by Triton's llmapi model, benchmarked at one concurrency
level, and evaluated by lm-eval's trtllm model. Skipped without an NVIDIA GPU (SM89+) and
tensorrt_llm (run it inside NVIDIA's Triton + TensorRT-LLM container with TRTLLM_ROOT pointing at
its TensorRT-LLM tree)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import SLA, Accuracy, LengthDistribution, Workload
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.demo_model import build_tiny_llama, save_smollm2_tokenizer
from enginesweep.engines.llmapi.commands import lm_eval_command
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe
from enginesweep.engines.stacks import BuildKnobs
from enginesweep.engines.stacks.trtllm_pytorch import TrtllmPytorchStack
from enginesweep.evaluation.benchmark.aiperf_runner import run_aiperf
from enginesweep.evaluation.benchmark.results import parse_benchmark

pytestmark = pytest.mark.gpu

RECIPE = QuantRecipe(
    quant=QuantFormat.FP8,
    kv_cache=KVCacheFormat.FP8,
    calibration=CalibrationSpec(dataset="t", sha256="0" * 64, samples=2, seq_len=64),
)
KNOBS = BuildKnobs(max_batch_size=4, max_num_tokens=512, max_seq_len=256)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pytorch")
    tokenizer = save_smollm2_tokenizer(tmp / "tokenizer")
    model = build_tiny_llama(tmp / "tiny", tokenizer)
    stack = TrtllmPytorchStack()
    quantized = stack.quantize(
        model, RECIPE, tmp / "quantized", key="tiny", calibration_texts=["hello world " * 16] * 2, log=print
    )
    return tmp, stack.build(
        quantized, KNOBS, tmp / "bundle", slug="tiny", checkpoint={}, target={"gpu": "detected"}
    )


@pytest.mark.parametrize("server_kind", ["trtllm-serve", "triton"])
def test_tiny_llama_fp8_serves_and_benchmarks(bundle, server_kind):
    tmp, build = bundle
    stack = TrtllmPytorchStack(server_kind=server_kind)
    assert stack.host_mismatches(build.manifest) == []
    repo = stack.write_model_repository(build, tmp / f"repo-{server_kind}")
    workload = Workload(
        isl=LengthDistribution(mean=32), osl=LengthDistribution(mean=16), concurrency=[2], request_count=8
    )
    with stack.server(repo, tmp / f"server-{server_kind}") as server:
        artifacts = run_aiperf(
            url=server.url,
            model=server.model,
            workload=workload,
            tokenizer=stack.tokenizer_dir(build),
            endpoint=server.endpoint,
            artifact_dir=tmp / f"benchmark-{server_kind}",
        )
    (level,) = parse_benchmark(artifacts, workload, SLA(), hardware="gpu", gpus=1).levels
    assert level.request_count == 8 and level.error_count == 0 and level.output_tok_s > 0
    print(json.dumps({"server": server_kind, "output_tok_s": level.output_tok_s}))


def test_lm_eval_trtllm_model_evaluates_the_bundle(bundle):
    """An offline multiple-choice task written here (no download), every item logged."""
    tmp, build = bundle
    tasks = tmp / "tasks"
    tasks.mkdir()
    items = [{"context": f"Item {i}: the sky is", "choices": ["blue", "green"], "label": 0} for i in range(8)]
    (tasks / "tiny_mc.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    (tasks / "tiny_mc.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "tiny_mc",
                "dataset_path": "json",
                "test_split": "test",
                "dataset_kwargs": {"data_files": {"test": str(tasks / "tiny_mc.jsonl")}},
                "output_type": "multiple_choice",
                "doc_to_text": "{{context}}",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "label",
                "metric_list": [{"metric": "acc"}],
            }
        )
    )
    checkpoint = str(Path(build.bundle_dir) / "checkpoint")
    cfg = TrialConfig(
        quant=QuantFormat.FP8,
        kv_cache=KVCacheFormat.FP8,
        tp=1,
        pp=1,
        max_batch_size=4,
        max_num_tokens=512,
        max_seq_len=256,
    )
    command = lm_eval_command(
        cfg,
        Accuracy(task_limit=8, batch_size=4),
        model_dir=checkpoint,
        tokenizer_dir=checkpoint,
        tasks=["tiny_mc"],
        include_path=str(tasks),
        output_path=str(tmp / "accuracy"),
    )
    subprocess.run(command.argv, check=True)
    assert list((tmp / "accuracy").rglob("samples_*.jsonl"))
