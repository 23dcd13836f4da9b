"""The trtllm-engine stack's orchestration, for real processes on this CPU, with stand-ins for
TensorRT-LLM's tools (tests/fixtures/trtllm_standins: NOT NVIDIA's code). The real tools run
only on a GPU machine (tests/gpu)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Build
from enginesweep.engines.processes import session_pids
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.stacks import BuildKnobs, StackUnavailable, get_stack
from enginesweep.engines.stacks.trtllm_engine import StepFailed, TrtllmEngineStack
from enginesweep.engines.triton.server import free_port
from enginesweep.engines.trtllm.contract import UnsupportedVersion
from enginesweep.engines.trtllm.outputs import kv_cache_blocks
from enginesweep.engines.trtllm.templates import TemplateError
from testkit.standin_layouts import build_layout

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures"
STANDINS = FIXTURES / "trtllm_standins"


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A TensorRT-LLM source checkout of stand-ins, `trtllm-build` and `tritonserver` on PATH."""
    layout = build_layout(tmp_path, "checkout")
    layout.apply(monkeypatch)
    return layout.root


def _stack(root: Path) -> TrtllmEngineStack:
    return TrtllmEngineStack(
        version="1.2.0rc8",
        trtllm_root=str(root),
        build=Build(calib_size=4),
        ports=(free_port(), free_port(), free_port()),
    )


RECIPE = QuantRecipe(quant=QuantFormat.FP8, kv_cache=KVCacheFormat.FP8, tp=2, pp=1)
KNOBS = BuildKnobs(max_batch_size=64, max_num_tokens=4096, max_seq_len=2048)


def _built(stack, tmp_path):
    quantized = stack.quantize(
        tmp_path / "hf",
        RECIPE,
        tmp_path / "quantized",
        key="k1",
        calibration_texts=["to be", "or not"],
        log=lambda _: None,
    )
    return quantized, stack.build(
        quantized,
        KNOBS,
        tmp_path / "trial" / "bundle",
        slug="t1",
        checkpoint={"repo_id": "x/y", "sha": "0" * 40},
        target={"gpu": "H100-SXM-80GB", "sm": 90},
    )


@pytest.mark.container  # also under TensorRT-LLM 1.2's package versions (.venv-trtllm)
def test_quantize_build_repository_and_serve_end_to_end(root, tmp_path):
    stack = _stack(root)
    quantized, build = _built(stack, tmp_path)
    checkpoint = json.loads((Path(quantized.trtllm_checkpoint_dir) / "config.json").read_text())
    assert (
        checkpoint["mapping"]["tp_size"] == 2 and checkpoint["quantization"]["kv_cache_quant_algo"] == "FP8"
    )
    calibration = (tmp_path / "quantized" / "calibration" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in calibration] == ["to be", "or not"]
    assert "--kv_cache_dtype fp8" in (tmp_path / "quantized" / "quantize.log").read_text()

    bundle = Path(build.bundle_dir)
    assert sorted(p.name for p in (bundle / "engine").glob("rank*.engine")) == [
        "rank0.engine",
        "rank1.engine",
    ]
    engine = build.manifest.trtllm_checkpoint
    assert (engine["quant_algo"], engine["tp_size"], engine["max_batch_size"], engine["kv_cache_type"]) == (
        "FP8",
        2,
        64,
        "paged",
    )
    assert build.manifest.versions["tensorrt_llm"] == "1.2.0rc8"
    assert not bundle.with_name("bundle.tmp").exists()

    repo = stack.write_model_repository(build, tmp_path / "trial" / "triton_repo")
    trt = (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert f'string_value: "{bundle / "engine"}"' in trt and 'string_value: "0,1"' in trt

    with stack.server(repo, tmp_path / "trial" / "server") as server:
        scrape = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        assert kv_cache_blocks(scrape)["max"] == 61440
        pid = server.process.pid
    # The stand-in server left the launcher's process group as mpirun's ranks do; the whole
    # session is gone all the same, and nothing answers any more.
    assert session_pids(pid) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=2)


def test_a_failed_build_is_a_reason_with_its_log_and_no_bundle(root, tmp_path, monkeypatch):
    stack = _stack(root)
    quantized = stack.quantize(
        tmp_path / "hf", RECIPE, tmp_path / "quantized", key="k1", calibration_texts=["x"], log=lambda _: None
    )
    monkeypatch.setenv("STANDIN_FAIL", "oom")
    with pytest.raises(StepFailed) as failed:
        stack.build(quantized, KNOBS, tmp_path / "trial" / "bundle", slug="t1", checkpoint={}, target={})
    assert failed.value.step == "build"
    assert failed.value.reason.startswith("out of GPU memory while building the engine: Error Code 2")
    assert "OutOfMemory" in failed.value.log.read_text()
    assert not (tmp_path / "trial" / "bundle").exists() and not (tmp_path / "trial" / "bundle.tmp").exists()


def test_a_failed_checkpoint_step_and_a_server_that_never_starts(root, tmp_path, monkeypatch):
    stack = _stack(root)
    quantized, build = _built(stack, tmp_path)
    repo = stack.write_model_repository(build, tmp_path / "trial" / "triton_repo")
    monkeypatch.setenv("STANDIN_FAIL", "serve")
    with pytest.raises(StepFailed, match="Triton did not become ready.*failed to load 'tensorrt_llm'"):
        with stack.server(repo, tmp_path / "trial" / "server"):
            pass
    monkeypatch.delenv("STANDIN_FAIL")
    with stack.server(repo, tmp_path / "trial" / "first"):  # a server left on the port is refused
        with pytest.raises(StepFailed, match="a server already answers at"):
            with stack.server(repo, tmp_path / "trial" / "second"):
                pass
    monkeypatch.setenv("STANDIN_FAIL", "quantize")
    with pytest.raises(StepFailed, match="quantize: RuntimeError: calibration dataset not found"):
        stack.quantize(
            tmp_path / "hf", RECIPE, tmp_path / "q2", key="k2", calibration_texts=["x"], log=lambda _: None
        )
    assert not (tmp_path / "q2" / "checkpoint").exists() and not (tmp_path / "q2" / "checkpoint.tmp").exists()


def test_a_repository_with_a_structural_placeholder_left_is_refused(root, tmp_path):
    stack = _stack(root)
    _, build = _built(stack, tmp_path)
    template = root / "triton_backend/all_models/inflight_batcher_llm/ensemble/config.pbtxt"
    template.write_text(template.read_text().replace("dims: [ 1 ] }", "dims: [ ${new_dims} ] }", 1))
    with pytest.raises(
        TemplateError, match=r"ensemble/config.pbtxt: required placeholder\(s\) new_dims left unfilled"
    ):
        stack.write_model_repository(build, tmp_path / "trial" / "triton_repo")


def test_without_tensorrt_llm_the_stack_says_where_it_runs():
    with pytest.raises(StackUnavailable, match="runs on a GPU machine with TensorRT-LLM 1.2"):
        get_stack("trtllm-engine")
    with pytest.raises(UnsupportedVersion, match="TensorRT-LLM 1.3.0 is not supported"):
        TrtllmEngineStack(version="1.3.0")


@pytest.mark.container  # also under TensorRT-LLM 1.2's package versions (.venv-trtllm)
def test_a_sweep_trial_whose_build_runs_out_of_memory_is_recorded_as_failed(root, tmp_path, monkeypatch):
    """run_trial drives the engine stack like the reference one: the failed build becomes a
    FAILED record with the reason, measured-on names the sweep's GPU, the build log is kept."""
    import yaml

    import enginesweep.engines.stacks.trtllm_engine as engine_module
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.records import TrialRecord
    from enginesweep.flows.trial import run_trial

    monkeypatch.setattr(engine_module, "installed_version", lambda: "1.2.0rc8")
    monkeypatch.setenv("TRTLLM_ROOT", str(root))
    monkeypatch.setenv("STANDIN_FAIL", "oom")
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(shipped_config()))
    spec = {
        "name": "engine-oom",
        "model": {"path": str(model), "architecture": "llama-3.1-8b"},
        "stack": "trtllm-engine",
        "target": {"gpu": "H100-SXM-80GB"},
        "axes": {"quant": ["fp8"], "kv_cache": ["fp8"], "tp": [1]},
        "workload": {"isl": {"mean": 128}, "osl": {"mean": 16}, "concurrency": [1]},
        "workspace": str(tmp_path / "ws"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    resolved = load_spec(path)
    slug = "hf__fp8__kv-fp8__tp1"
    with pytest.raises(StepFailed, match="build: out of GPU memory"):
        run_trial(resolved, slug, log=lambda _: None)
    trial_dir = tmp_path / "ws" / "sweeps" / "engine-oom" / slug
    record = TrialRecord.load(trial_dir / "record.json")
    assert record.status == "failed" and record.hardware == "H100-SXM-80GB"
    assert "out of GPU memory while building the engine: Error Code 2: OutOfMemory" in record.error
    assert "OutOfMemory" in (trial_dir / "build.log").read_text()  # copied from the store


def shipped_config() -> dict:
    from importlib import resources

    return json.loads(
        resources.files("enginesweep.build_configs").joinpath("architectures/llama-3.1-8b.json").read_text()
    )


def test_metrics_are_sampled_while_a_benchmark_runs(root, tmp_path):
    import time

    from enginesweep.evaluation.benchmark.server_metrics import MetricsSampler
    from enginesweep.evaluation.benchmark.warmup import WARMUP_TEXT, warm_up

    stack = _stack(root)
    _, build = _built(stack, tmp_path)
    repo = stack.write_model_repository(build, tmp_path / "trial" / "triton_repo")
    with stack.server(repo, tmp_path / "trial" / "server") as server:
        # Before the sampler: not counted (the backend's gauge counts since the server started).
        warm_up(server.url, server.endpoint, server.model, wave=1, prompt_tokens=40, max_tokens=2)
        with MetricsSampler(server.metrics_url, tmp_path / "metrics", interval_s=0.2) as sampler:
            time.sleep(0.5)
            # The same prompt twice more: every one of its 32-character blocks is reused.
            warm_up(server.url, server.endpoint, server.model, wave=1, prompt_tokens=40, max_tokens=2)
            warm_up(server.url, server.endpoint, server.model, wave=1, prompt_tokens=40, max_tokens=2)
            time.sleep(0.5)
    summary = sampler.summary()
    assert summary["metrics_samples"] >= 3 and summary["metrics_scrape_failures"] == 0
    assert summary["kv_cache_total_blocks"] == 61440 and summary["kv_cache_used_blocks_max"] == 1660
    blocks = len(WARMUP_TEXT * 4) // 32  # the warm-up's prompt of about 40 tokens, in blocks
    assert summary["kv_reused_blocks"] == 2 * blocks and summary["kv_reused_tokens"] == 2 * blocks * 32
    assert "kv_cache_hit_rate" not in summary  # the backend counts no misses: no rate to give
    assert len(list((tmp_path / "metrics").glob("scrape-*.txt"))) == summary["metrics_samples"]
    with MetricsSampler(None, tmp_path / "none") as nothing:
        pass
    assert nothing.summary() is None and not (tmp_path / "none").exists()
