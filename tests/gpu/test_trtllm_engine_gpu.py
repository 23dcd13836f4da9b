"""The trtllm-engine stack for real on a GPU: a tiny Llama converted, built with trtllm-build,
served by Triton's inflight_batcher_llm and benchmarked at one concurrency level. Skipped
without an NVIDIA GPU and tensorrt_llm (run it inside NVIDIA's Triton + TensorRT-LLM container
with TRTLLM_ROOT pointing at its TensorRT-LLM tree)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import SLA, LengthDistribution, Workload
from enginesweep.engines.demo_model import build_tiny_llama, save_smollm2_tokenizer
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.stacks import BuildKnobs, get_stack
from enginesweep.engines.trtllm.outputs import kv_cache_blocks
from enginesweep.evaluation.benchmark.aiperf_runner import run_aiperf
from enginesweep.evaluation.benchmark.results import parse_benchmark

pytestmark = pytest.mark.gpu


def test_tiny_llama_builds_serves_and_benchmarks(tmp_path: Path):
    tokenizer = save_smollm2_tokenizer(tmp_path / "tokenizer")
    model = build_tiny_llama(tmp_path / "tiny", tokenizer)
    stack = get_stack("trtllm-engine")
    recipe = QuantRecipe(quant=QuantFormat.BF16, kv_cache=KVCacheFormat.AUTO)
    quantized = stack.quantize(
        model, recipe, tmp_path / "quantized", key="tiny", calibration_texts=["hello"], log=print
    )
    knobs = BuildKnobs(max_batch_size=4, max_num_tokens=512, max_seq_len=256)
    build = stack.build(
        quantized,
        knobs,
        tmp_path / "trial" / "bundle",
        slug="tiny",
        checkpoint={},
        target={"gpu": "detected"},
    )
    assert build.manifest.trtllm_checkpoint["max_batch_size"] == 4
    repo = stack.write_model_repository(build, tmp_path / "trial" / "triton_repo")
    workload = Workload(
        isl=LengthDistribution(mean=32), osl=LengthDistribution(mean=16), concurrency=[2], request_count=8
    )
    with stack.server(repo, tmp_path / "trial" / "server") as server:
        artifacts = run_aiperf(
            url=server.url,
            model=stack.served_model,
            workload=workload,
            tokenizer=tokenizer,
            artifact_dir=tmp_path / "trial" / "benchmark",
        )
        blocks = kv_cache_blocks(urllib.request.urlopen(server.metrics_url, timeout=10).read().decode())
    result = parse_benchmark(artifacts, workload, SLA(), hardware="gpu", gpus=1)
    (level,) = result.levels
    assert level.request_count == 8 and level.error_count == 0 and level.output_tok_s > 0
    assert blocks["max"] > 0
    print(json.dumps({"output_tok_s": level.output_tok_s, "kv_blocks": blocks}))
