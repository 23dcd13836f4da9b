"""Accuracy measured on what is served (`evaluation.accuracy.served`, `flows.served_accuracy`):
the real SmolLM2-135M answering the built-in recall task through the reference stack's real
Triton server and through the stand-ins of Triton's ensemble and trtllm-serve (both request
shapes), item for item equal to the in-process lm-eval run; then quantized trtllm-engine trials
through `run_trial` with the stand-ins, paired against the baseline engine served once.
No network, no downloads: SmolLM2 is converted from the GGUF its package ships."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from enginesweep.engines.quantize.modelopt_cpu import load_quantized_model
from enginesweep.engines.triton.repository import SERVED_MODEL, write_reference_repository
from enginesweep.engines.triton.server import TritonServer, free_port
from enginesweep.evaluation.accuracy.harness import evaluate_tasks
from enginesweep.evaluation.accuracy.served import ServedEndpoint, evaluate_served
from enginesweep.evaluation.accuracy.tasks import CLOZE, RECALL, builtin_tasks_dir
from enginesweep.evaluation.records import AccuracyResult, TaskResult
from testkit.standin_layouts import build_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).parents[1] / "fixtures"
STANDINS = FIXTURES / "trtllm_standins"
LIMIT = 24


@pytest.fixture(scope="module")
def smol_dir(smollm2_checkpoint: Path) -> Path:
    """The real SmolLM2-135M-Instruct as a Hugging Face checkpoint (converted once a session)."""
    return smollm2_checkpoint


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, corpus) -> Path:
    return builtin_tasks_dir(tmp_path_factory.mktemp("ws"), corpus)


@pytest.fixture(scope="module")
def in_process(smol_dir, tasks, tmp_path_factory) -> TaskResult:
    """lm-eval's own HF model on the same checkpoint, in this process (greedy, batch of one:
    each served request is decoded alone, unpadded)."""
    model, tokenizer = load_quantized_model(smol_dir)
    (result,) = evaluate_tasks(
        model,
        tokenizer,
        tasks=[RECALL],
        include_paths=[tasks],
        limit=LIMIT,
        hardware="cpu",
        cache_dir=tmp_path_factory.mktemp("datasets"),
        batch_size=1,
    )
    return result


def served(endpoint: ServedEndpoint, tasks: Path, tmp_path: Path) -> AccuracyResult:
    return evaluate_served(
        endpoint,
        tasks=[CLOZE, RECALL],
        include_paths=[tasks],
        limit=LIMIT,
        hardware="cpu",
        cache_dir=tmp_path / "datasets",
        concurrency=4,
        log_file=tmp_path / "lm_eval.log",
    )


def assert_same_items(result: AccuracyResult, in_process: TaskResult) -> None:
    """Paired-able (same items, same hashes) and, greedy on both sides, the same scores."""
    (recall,) = result.tasks
    assert (recall.task, recall.metric, recall.item_ids, recall.items_sha256) == (
        RECALL,
        "exact_match",
        in_process.item_ids,
        in_process.items_sha256,
    )
    assert recall.item_values == in_process.item_values
    assert 0 < recall.score < 1  # a working model on a task it neither always passes nor fails
    assert result.perplexity is None and list(result.skipped_tasks) == [CLOZE]
    assert "multiple_choice" in result.skipped_tasks[CLOZE]


def test_the_reference_triton_server_scores_as_the_in_process_harness(
    smol_dir, tasks, in_process, tmp_path
) -> None:
    repo = write_reference_repository(tmp_path / "repo", smol_dir, max_batch_size=4, max_seq_len=256)
    with TritonServer(repo, tmp_path / "work", models=(SERVED_MODEL,)) as server:
        result = served(ServedEndpoint("triton", server.url, SERVED_MODEL), tasks, tmp_path)
    assert_same_items(result, in_process)
    assert "skipping task enginesweep_cloze" in (tmp_path / "lm_eval.log").read_text()


@pytest.fixture
def standin(tmp_path) -> Iterator:
    """Start a stand-in server in a session of its own; stop that session afterwards."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], ready: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"server-{len(started)}.log"
        process = subprocess.Popen(
            argv,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        started.append(process)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(ready, timeout=1)
                return process, log
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"{argv[1]} did not start: {log.read_text()[-2000:]}")

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_the_standins_answer_from_the_real_model_in_both_request_shapes(
    smol_dir, tasks, in_process, standin, tmp_path
) -> None:
    env = {"STANDIN_HF_MODEL": str(smol_dir), "STANDIN_FIXTURES": str(FIXTURES / "trtllm")}
    http_port = free_port()
    _, triton_log = standin(
        [sys.executable, str(STANDINS / "fake_triton.py"), str(http_port), str(free_port())],
        f"http://127.0.0.1:{http_port}/v2/health/ready",
        env,
    )
    triton = served(
        ServedEndpoint("triton", f"http://127.0.0.1:{http_port}", "ensemble"), tasks, tmp_path / "triton"
    )
    assert_same_items(triton, in_process)
    requests = [line for line in triton_log.read_text().splitlines() if line.startswith("generate ")]
    assert len(requests) == LIMIT and all("model=ensemble max_tokens=8 " in line for line in requests)

    engine = tmp_path / "engine"  # trtllm-serve --backend tensorrt takes an engine folder
    engine.mkdir()
    (engine / "rank0.engine").write_bytes(b"stand-in engine")
    port = free_port()
    _, serve_log = standin(
        [
            sys.executable,
            str(STANDINS / "trtllm_serve.py"),
            "serve",
            str(engine),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend",
            "tensorrt",
            "--tokenizer",
            str(smol_dir),
            "--tp_size",
            "1",
            "--pp_size",
            "1",
            "--kv_cache_free_gpu_memory_fraction",
            "0.9",
            "--log_level",
            "info",
        ],
        f"http://127.0.0.1:{port}/health",
        env,
    )
    openai = served(
        ServedEndpoint("openai", f"http://127.0.0.1:{port}", str(engine)), tasks, tmp_path / "openai"
    )
    assert_same_items(openai, in_process)
    completions = [line for line in serve_log.read_text().splitlines() if line.startswith("completion ")]
    assert len(completions) == LIMIT and all("stop=['\\n']" in line for line in completions)


def test_engine_trials_are_paired_against_the_baseline_engine_served_once(
    tiny_llama_dir, corpus, tmp_path, monkeypatch
) -> None:
    """A quantized trtllm-engine trial through `run_trial` with the stand-ins (Triton's ensemble
    answering from the tiny Llama): its recall items scored on its own server after the
    benchmark, the baseline engine (bf16, from the store) built, served and scored once, the
    cloze task skipped with its reason, and the selection's gate judging the trial on the
    pairing. Then the sweep's bf16 trial: the same stored bundle, the cached baseline."""
    import yaml

    import enginesweep.engines.stacks.trtllm_engine as engine_module
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning import expand
    from enginesweep.evaluation.selection.choose import select
    from enginesweep.flows.trial import run_trial

    layout = build_layout(tmp_path, "checkout")
    layout.apply(monkeypatch)
    monkeypatch.setenv("STANDIN_HF_MODEL", str(tiny_llama_dir))
    monkeypatch.setattr(engine_module, "installed_version", lambda: "1.2.0rc8")
    spec = {
        "name": "engine-acc",
        "model": {"path": str(tiny_llama_dir), "name": "tiny"},
        "stack": "trtllm-engine",
        "target": {"gpu": "H100-SXM-80GB"},
        "axes": {
            "quant": ["bf16", "fp8"],
            "kv_cache": ["auto"],
            "tp": [1],
            "max_batch_size": [4],
            "max_num_tokens": [256],
            "max_seq_len": [256],
        },
        "build": {"calib_size": 2, "calib_max_seq_length": 32},
        "workload": {"isl": {"mean": 16}, "osl": {"mean": 4}, "concurrency": [2], "request_count": 4},
        "accuracy": {"tasks": [CLOZE, RECALL], "task_limit": 8, "batch_size": 4},
        "sla": {"max_accuracy_drop": 0.05, "accuracy_drop_mode": "absolute"},
        "execution": {"trtllm_root": str(layout.root)},
        "workspace": str(tmp_path / "ws"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    resolved = load_spec(tmp_path / "spec.yaml")
    slugs = {trial.config.quant.value: trial.slug for trial in expand(resolved).to_run}
    ws = tmp_path / "ws"

    lines: list[str] = []
    fp8 = run_trial(resolved, slugs["fp8"], log=lines.append)
    assert fp8.status == "ok", fp8.error
    assert [t.task for t in fp8.accuracy.tasks] == [RECALL] and fp8.accuracy.perplexity is None
    assert (
        list(fp8.accuracy.skipped_tasks) == [CLOZE] and "multiple_choice" in fp8.accuracy.skipped_tasks[CLOZE]
    )
    assert any(f"task {CLOZE} skipped: a multiple_choice task" in line for line in lines)
    (variant,), (baseline,) = fp8.accuracy.tasks, fp8.baseline_accuracy.tasks
    assert len(variant.item_ids) == 8 and (baseline.item_ids, baseline.items_sha256) == (
        variant.item_ids,
        variant.items_sha256,
    )
    (delta,) = fp8.accuracy_deltas
    assert (delta.metric, delta.n, delta.test) == (f"{RECALL}.exact_match", 8, "mcnemar-exact")
    assert "accuracy" in fp8.executed_stages and fp8.stage_seconds["accuracy"] > 0
    # The variant on the trial's own server, after aiperf's streamed requests.
    trial_log = (ws / "sweeps" / "engine-acc" / slugs["fp8"] / "server" / "server.log").read_text()
    assert trial_log.count("max_tokens=8 min_tokens=0 stream=False") == 8
    assert trial_log.index("stream=True") < trial_log.index("stream=False")
    # The baseline: the bf16 engine built through the store, served and scored once, cached.
    (cached,) = (ws / "accuracy").glob("served-baseline-*.json")
    assert AccuracyResult.load(cached) == fp8.baseline_accuracy
    baseline_log = cached.with_suffix("") / "server" / "server.log"
    assert baseline_log.read_text().count("generate model=ensemble") == 8
    bundles = sorted(p.name for p in (ws / "bundles").iterdir() if p.is_dir() and p.name[0] != ".")
    assert len(bundles) == 2 and any(name.startswith("bf16") for name in bundles), bundles

    sla = resolved.spec.sla
    row = {r.slug: r for r in select([fp8], sla, usd_per_gpu_hour=2.0).rows}[slugs["fp8"]]
    (check,) = row.accuracy
    assert check.metric == f"{RECALL}.exact_match" and check.verdict.startswith("accuracy drop")
    assert not any("accuracy not measured" in reason for reason in row.reasons)

    stamp = cached.stat().st_mtime_ns
    bf16 = run_trial(resolved, slugs["bf16"], log=lines.append)
    assert bf16.status == "ok", bf16.error
    assert "build" not in bf16.executed_stages and Path(bf16.bundle_dir).name in bundles  # the store's
    assert bf16.baseline_accuracy == fp8.baseline_accuracy and cached.stat().st_mtime_ns == stamp
    assert baseline_log.read_text().count("generate model=ensemble") == 8  # not served again
    assert [d.metric for d in bf16.accuracy_deltas] == [f"{RECALL}.exact_match"]


def test_skipped_tasks_are_tagged_on_the_trials_mlflow_run(tmp_path):
    """What served accuracy could not score is said where the scores are read: a tag per
    skipped task with the reason, on the trial's run (a sqlite MLflow store here)."""
    from enginesweep.evaluation.records import AccuracyResult, TrialRecord
    from enginesweep.evaluation.tracking import SweepTracker

    fixture = (
        Path(__file__).parents[1]
        / "fixtures"
        / "records"
        / "h100_sweep"
        / "llama-3.1-8b__fp8__kv-auto__tp1.json"
    )
    reason = "a multiple_choice task, scored by log-likelihoods that a served endpoint does not return"
    accuracy = AccuracyResult(
        hardware="H100-SXM-80GB",
        dataset="lm-eval tasks, served",
        dataset_sha256="0" * 64,
        window_tokens=0,
        perplexity=None,
        top1_accuracy=None,
        skipped_tasks={"enginesweep_cloze": reason},
    )
    record = TrialRecord.load(fixture).model_copy(update={"accuracy": accuracy})
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "skipped", tmp_path / "mlruns")
    parent = tracker.client.create_run(tracker.experiment_id, run_name="sweep").info.run_id
    run_id = tracker.log_trial(parent, record, tmp_path)
    tags = tracker.client.get_run(run_id).data.tags
    assert tags["accuracy.skipped.enginesweep_cloze"] == reason
