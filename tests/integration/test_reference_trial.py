"""One trial end to end on the reference stack (tiny Llama): quantize -> build -> serve under the
real tritonserver -> aiperf at concurrency 1 and 4 -> accuracy vs the baseline; and an interrupted
trial leaves no process or port behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from enginesweep.build_configs.loading import load_spec
from enginesweep.build_configs.request_log import read_request_log
from enginesweep.engines.compat import BundleMismatch
from enginesweep.engines.manifest import verify_bundle
from enginesweep.evaluation.benchmark.results import RECORDS_FILE
from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.reports.report_sections import traffic_section
from enginesweep.evaluation.reports.report_trials import TrialView
from enginesweep.flows.trial import run_trial
from testkit.procs import processes_matching
from testkit.tiny_sweep import write_tiny_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_spec(tmp_path: Path, model_dir: Path, **workload) -> Path:
    spec = {
        "name": "tiny-trial",
        "model": {"path": str(model_dir), "name": "tiny"},
        "stack": "reference",
        "target": {"gpu": "cpu"},
        "axes": {
            "quant": ["bf16", "fp8"],
            "kv_cache": ["auto", "int8"],
            "max_batch_size": [4],
            "max_num_tokens": [512],
            "max_seq_len": [256],
        },
        "build": {"awq_block_size": 64, "calib_size": 4, "calib_max_seq_length": 64},
        "workload": {
            "isl": {"mean": 32},
            "osl": {"mean": 8},
            "concurrency": [1, 4],
            "request_count": 8,
            "warmup_request_count": 1,
            **workload,
        },
        "sla": {"ttft_p99_ms": 60000, "itl_p99_ms": 10000},
        "accuracy": {"window_tokens": 64, "max_windows": 8, "task_limit": 12},
        "workspace": str(tmp_path / "ws"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_fp8_int8kv_trial_end_to_end(tmp_path, tiny_llama_dir):
    resolved = load_spec(write_spec(tmp_path, tiny_llama_dir))
    lines: list[str] = []
    record = run_trial(resolved, "tiny__fp8__kv-int8__tp1", log=lines.append)

    assert record.status == "ok", record.error
    assert record.hardware == "cpu" and record.benchmark.hardware == "cpu"
    assert record.benchmark.source == "measured" and record.predicted.source == "predicted:roofline"
    # the bundle is intact and its TRT-LLM checkpoint is the real export
    manifest = verify_bundle(Path(record.bundle_dir))
    assert manifest.content_hash == record.content_hash
    assert manifest.trtllm_checkpoint["quantization"]["quant_algo"] == "FP8"
    assert manifest.trtllm_checkpoint["quantization"]["kv_cache_quant_algo"] == "INT8"
    assert manifest.trtllm_checkpoint["rotary_base"] == 100000.0
    assert manifest.inputs["calibration"]["samples"] == 4
    # benchmark numbers are consistent with themselves and with the workload
    assert [level.concurrency for level in record.benchmark.levels] == [1, 4]
    for level in record.benchmark.levels:
        assert level.request_count == 8 and level.error_count == 0
        assert level.ttft_ms.p50 <= level.ttft_ms.p99 and level.itl_ms.p50 <= level.itl_ms.p99
        assert level.e2e_ms.p50 >= level.ttft_ms.p50
        assert 0 < level.goodput <= level.request_rate + 1e-9
    # accuracy against the unquantized baseline on the same windows, with intervals
    assert len(record.accuracy.window_nll) == len(record.baseline_accuracy.window_nll) == 8
    perplexity = next(d for d in record.accuracy_deltas if d.metric == "perplexity")
    assert perplexity.ci_low <= perplexity.delta <= perplexity.ci_high
    assert perplexity.delta != 0  # FP8 weights + INT8 KV change the numbers
    # ...and on the same task items (lm-eval, the built-in tasks, the spec's limit)
    tasks = {d.metric: d for d in record.accuracy_deltas if "." in d.metric}
    assert set(tasks) == {"enginesweep_cloze.acc", "enginesweep_recall.exact_match"}
    for delta in tasks.values():
        assert delta.n == 12 and delta.test == "mcnemar-exact" and 0 <= delta.p_value <= 1
    assert [t.item_ids for t in record.accuracy.tasks] == [list(range(12))] * 2
    assert (trial_dir_of(tmp_path) / "accuracy" / "lm_eval.log").exists()
    trial_dir = tmp_path / "ws" / "sweeps" / "tiny-trial" / "tiny__fp8__kv-int8__tp1"
    assert json.loads((trial_dir / "record.json").read_text())["status"] == "ok"
    assert (trial_dir / "server" / "server.log").exists()
    assert (trial_dir / "benchmark" / "benchmark.json").exists() and (trial_dir / "accuracy.json").exists()
    assert set(record.stage_seconds) >= {"checkpoint", "quantize", "build", "serve+benchmark", "accuracy"}
    assert record.host_load is not None and len(record.host_load) == 2

    # a second trial with the same recipe but other knobs reuses the quantized checkpoint
    again = run_trial(
        load_spec(
            write_spec(tmp_path, tiny_llama_dir), ["axes.max_batch_size=[2]", "workload.concurrency=[1]"]
        ),
        "tiny__fp8__kv-int8__tp1",
        log=lines.append,
    )
    assert again.stage_seconds["quantize"] == 0.0
    assert any("reusing" in line for line in lines)

    # a bundle built under other runtime versions is refused before any server starts
    manifest_path = Path(record.bundle_dir) / "manifest.json"
    built = json.loads(manifest_path.read_text())
    built["versions"]["torch"] = "0.0.1"
    manifest_path.write_text(json.dumps(built))
    server_log = trial_dir / "server" / "server.log"
    log_size = server_log.stat().st_size
    with pytest.raises(BundleMismatch):
        run_trial(resolved, "tiny__fp8__kv-int8__tp1", log=lines.append, reuse=True, rebenchmark=True)
    refused = TrialRecord.load(trial_dir / "record.json")
    assert refused.status == "failed"
    assert f"refusing to serve {record.bundle_dir}: built with torch 0.0.1, this host has" in refused.error
    assert "enginesweep run SPEC --rerun" in refused.error
    assert server_log.stat().st_size == log_size  # no server was started


def trial_dir_of(tmp_path: Path) -> Path:
    return tmp_path / "ws" / "sweeps" / "tiny-trial" / "tiny__fp8__kv-int8__tp1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _trial_in_benchmark(
    tmp_path: Path, model_dir: Path, **workload
) -> tuple[subprocess.Popen, Path, list[str]]:
    """`enginesweep trial` on the bf16 tiny trial, returned once aiperf is profiling; with the
    trial folder and the command (to run it again)."""
    spec = write_spec(tmp_path, model_dir, request_count=400, **workload)
    script = Path(sys.executable).parent / "enginesweep"
    command = [str(script), "trial", str(spec), "--slug", "tiny__bf16__kv-auto__tp1"]
    # SIGINT back to its default in the child: a suite started in the background (`cmd &`)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    trial_dir = tmp_path / "ws" / "sweeps" / "tiny-trial" / "tiny__bf16__kv-auto__tp1"
    aiperf_log = trial_dir / "benchmark" / "aiperf.log"
    aiperf_pid = trial_dir / "benchmark" / "aiperf.pid"

    def profiling() -> bool:
        # aiperf's own output, past the command line the runner writes first (which says
        # `profile` before aiperf even starts), and its pidfile, written once it was started.
        if not (aiperf_log.exists() and aiperf_pid.exists()):
            return False
        _, _, output = aiperf_log.read_text(errors="replace").partition("\n")
        return "profil" in output.lower()

    # A bound, not a timing assert: on a loaded machine aiperf's dozen services start slowly.
    deadline = time.monotonic() + 600
    try:
        while not profiling():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the benchmark never started"
            time.sleep(0.5)
    except BaseException:
        proc.terminate()  # the trial stops its server and load generator on SIGTERM
        proc.communicate(timeout=120)
        raise
    return proc, trial_dir, command


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_trial_leaves_no_process_or_port(tmp_path, tiny_llama_dir, sig):
    proc, trial_dir, command = _trial_in_benchmark(tmp_path, tiny_llama_dir, osl={"mean": 64})
    server_pid = int((trial_dir / "server" / "server.pid").read_text())
    assert _alive(server_pid)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not _alive(server_pid)
    leftovers = processes_matching(str(trial_dir))
    assert leftovers == [], f"processes still running for this trial: {leftovers}"
    record = json.loads((trial_dir / "record.json").read_text())
    assert record["status"] == "failed"


def _session_leftovers(sid: int) -> list[int]:
    from enginesweep.engines.processes import session_pids

    return session_pids(sid)


def test_sigkill_mid_benchmark_leaves_no_server_and_the_rerun_completes(tmp_path, tiny_llama_dir):
    """SIGKILL cannot be caught: the kernel stops the server (PR_SET_PDEATHSIG), the next run
    reaps any helper left in the old sessions, and the trial completes on the same folder."""
    proc, trial_dir, command = _trial_in_benchmark(tmp_path, tiny_llama_dir)
    server_sid = int((trial_dir / "server" / "server.pid").read_text())
    aiperf_sid = int((trial_dir / "benchmark" / "aiperf.pid").read_text())
    proc.kill()
    proc.communicate(timeout=60)
    # The leaders die with their parent; helpers may linger until the next run reaps them.
    deadline = time.monotonic() + 30
    while server_sid in _session_leftovers(server_sid) or aiperf_sid in _session_leftovers(aiperf_sid):
        assert time.monotonic() < deadline, "tritonserver or aiperf outlived the SIGKILLed trial"
        time.sleep(0.5)

    done = subprocess.run(
        [*command, "--set", "workload.request_count=8", "--set", "workload.concurrency=[1]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _session_leftovers(server_sid) == [] and _session_leftovers(aiperf_sid) == []
    leftovers = processes_matching(str(trial_dir))
    assert leftovers == [], f"processes still running for this trial: {leftovers}"
    record = json.loads((trial_dir / "record.json").read_text())
    assert record["status"] == "ok" and record["benchmark"]["levels"][0]["request_count"] == 8
    assert not list(trial_dir.rglob("*.tmp")) and not list(trial_dir.rglob(".*.tmp"))


def test_two_sweeps_on_one_workspace_build_a_shared_trial_once(tmp_path, tiny_llama_dir):
    """Two sweeps (`enginesweep run` of two specs) on one workspace at the same time, both with
    the same FP8 trial: its quantized checkpoint and engine bundle are made by one and reused
    by the other (per-key locks on the content-addressed store), both sweeps finish with their
    MLflow runs in the one sqlite store (and Prefect's under the workspace), nothing
    half-written is left."""
    script = Path(sys.executable).parent / "enginesweep"
    shared = tmp_path / "shared-ws"
    procs = []
    for name in ("sweep-a", "sweep-b"):
        folder = tmp_path / name
        folder.mkdir()
        spec_path = write_tiny_sweep(folder, tiny_llama_dir, name=name)
        spec = yaml.safe_load(spec_path.read_text())
        spec["axes"]["quant"], spec["workspace"] = ["fp8"], str(shared)
        spec["workload"]["concurrency"] = [1]  # one level: what is shared is the store, not the load
        spec_path.write_text(yaml.safe_dump(spec))
        procs.append(
            subprocess.Popen(
                [str(script), "run", str(spec_path)],
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-4000:]
    records = [
        json.loads((shared / "sweeps" / name / "tiny__fp8__kv-auto__tp1" / "record.json").read_text())
        for name in ("sweep-a", "sweep-b")
    ]
    # One sweep quantized and built; the other waited on the lock and reused the stored bundle.
    assert sorted("quantize" in r["executed_stages"] for r in records) == [False, True]
    assert sorted("build" in r["executed_stages"] for r in records) == [False, True]
    assert records[0]["bundle_dir"] == records[1]["bundle_dir"]
    assert records[0]["content_hash"] == records[1]["content_hash"]
    # (the console wraps long lines: compare with whitespace collapsed)
    assert any("reusing the stored bundle" in " ".join(output.split()) for output in outputs)
    quantized = [p for p in (shared / "quantized").iterdir() if p.name != ".locks"]
    assert len(quantized) == 1 and (quantized[0] / "quantize.json").exists()
    assert not list(shared.rglob("*.tmp"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{shared / 'mlflow.db'}")
    parents = client.search_runs(
        [client.get_experiment_by_name("enginesweep").experiment_id], "tags.`enginesweep.kind` = 'sweep'"
    )
    assert sorted((p.info.run_name, p.info.status) for p in parents) == [
        ("sweep-a", "FINISHED"),
        ("sweep-b", "FINISHED"),
    ]


def test_a_server_killed_mid_benchmark_fails_the_trial_with_the_reason(tmp_path, tiny_llama_dir):
    proc, trial_dir, command = _trial_in_benchmark(tmp_path, tiny_llama_dir)
    os.kill(int((trial_dir / "server" / "server.pid").read_text()), signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, output
    record = json.loads((trial_dir / "record.json").read_text())
    assert record["status"] == "failed" and record["benchmark"] is None
    # Either aiperf reports the refused connections or the liveness check names the server.
    assert (
        "ServerDied: the server died during the benchmark" in record["error"]
        or "AiperfError" in record["error"]
    ), record["error"]
    assert "executed_stages" in record and "serve+benchmark" not in record["stage_seconds"]
    leftovers = processes_matching(str(trial_dir))
    assert leftovers == [], leftovers


REQUEST_LOG = Path(__file__).parent.parent / "fixtures" / "traffic" / "request_log.jsonl"


def test_a_request_log_replayed_as_recorded_drives_a_trial(tmp_path, tiny_llama_dir, smol_tokenizer_dir):
    """The shipped log (200 requests, two length clusters, shared prefixes) replayed on the
    reference stack: aiperf's per-request export shows the logged output lengths and arrival
    times, the prompts it sent are the logged lengths (within tokenizer rounding) and share
    their logged prefixes, and the trial's record carries the histogram the report shows."""
    spec = yaml.safe_load(write_spec(tmp_path, tiny_llama_dir).read_text())
    spec["workload"] = {
        "request_log": {"path": str(REQUEST_LOG), "replay": "recorded", "block_tokens": 16},
        "warmup_request_count": 1,
    }
    spec["accuracy"] = {"window_tokens": 32, "max_windows": 4, "tasks": []}
    path = tmp_path / "log-spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    lines: list[str] = []
    record = run_trial(load_spec(path), "tiny__bf16__kv-auto__tp1", log=lines.append)
    assert record.status == "ok", record.error
    assert any("warm-up at server start: 1 request(s) discarded" in line for line in lines), lines
    assert any("replaying 200 requests (request_log" in line for line in lines), lines

    log = read_request_log(REQUEST_LOG, block_tokens=16)
    (level,) = record.benchmark.levels
    assert level.pacing == "schedule" and (level.request_count, level.error_count) == (200, 0)
    bench = Path(record.benchmark.artifact_dir)
    records = [json.loads(line) for line in (bench / RECORDS_FILE).read_text().splitlines()]
    profiled = sorted(
        (r for r in records if r["metadata"]["benchmark_phase"] == "profiling"),
        key=lambda r: r["metadata"]["conversation_id"],
    )
    assert len(profiled) == 200
    # aiperf numbers the rows of the dataset in order: session_000000 is the log's first line.
    assert [r["metadata"]["conversation_id"] for r in profiled] == [f"session_{i:06d}" for i in range(200)]
    # Each request asked for its logged output length, and the server streamed about that many
    # pieces: one per decoded token, except that text is held back while a multi-byte character
    # is incomplete (two tokens then come as one piece). aiperf's own `output_sequence_length`
    # re-tokenizes the streamed text, which for this random-weight model merges pieces.
    sent = {
        s["session_id"]: s["payloads"][0] for s in json.loads((bench / "inputs.json").read_text())["data"]
    }
    asked = [sent[f"session_{i:06d}"] for i in range(200)]
    assert [p["max_tokens"] for p in asked] == [p["min_tokens"] for p in asked] == log.output_lengths()
    # Random weights emit bytes of incomplete characters now and then (189 of 200 requests had
    # exactly one piece per token in one fresh-clone run): so each request gets at most its
    # length in pieces, and all of them together at least 90% of the logged tokens. A server that
    # ignored max_tokens/min_tokens (more pieces, or stopping early) fails one or the other.
    chunks = [r["metrics"]["http_req_chunks_received"]["value"] for r in profiled]
    assert all(1 <= c <= n for c, n in zip(chunks, log.output_lengths(), strict=True)), chunks
    assert sum(chunks) >= 0.9 * sum(log.output_lengths()), (sum(chunks), sum(log.output_lengths()))
    starts = [r["metadata"]["request_start_ns"] for r in profiled]
    sent_ms = [(s - starts[0]) / 1e6 for s in starts]
    logged_ms = [r.timestamp_ms - log.requests[0].timestamp_ms for r in log.requests]
    lags = sorted(sent - logged for sent, logged in zip(sent_ms, logged_ms, strict=True))
    # Open loop at the logged times: a slow server does not delay the sending. The bounds allow
    # for a busy 2-core machine (aiperf's scheduler is one asyncio loop among the server's work).
    assert lags[len(lags) // 2] < 50 and lags[-1] < 1000, lags[-5:]

    # The prompts aiperf sent, counted with the model's tokenizer, are the logged lengths.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(smol_tokenizer_dir / "tokenizer.json"))
    texts = {session: payload["text_input"] for session, payload in sent.items()}
    counts = [
        len(tokenizer.encode(texts[f"session_{i:06d}"], add_special_tokens=False).ids) for i in range(200)
    ]
    assert max(abs(c - n) for c, n in zip(counts, log.input_lengths(), strict=True)) <= 3
    # Requests sharing their leading hash ids share that leading text.
    first_block = {}
    for i, logged in enumerate(log.requests):
        if logged.hash_ids[0] < 1000:  # a shared system prompt or document
            first_block.setdefault(logged.hash_ids[:2], set()).add(texts[f"session_{i:06d}"][:40])
    assert first_block and all(len(heads) == 1 for heads in first_block.values())

    traffic = record.benchmark.traffic
    assert traffic is not None and traffic.requests == 200 and traffic.replay == "recorded"
    assert traffic.request_log_sha256 == log.sha256 == record.benchmark.traffic.request_log_sha256
    assert traffic.prefix_reuse_ratio == pytest.approx(log.prefix_reuse_ratio(), rel=0.05)
    view = TrialView(slug=record.slug, planned=None, record=record, row=None, outcome="ok", why="")
    section = traffic_section([view])
    histogram_rows = section.tables[0].rows
    assert sum(int(row[1]) for row in histogram_rows) == 200
    # Two clusters: the bins between them (about 64-96 tokens) are empty, both ends are not.
    assert int(histogram_rows[0][1]) > 50 and int(histogram_rows[-1][1]) > 0
    assert any(int(row[1]) == 0 for row in histogram_rows[2:5])
