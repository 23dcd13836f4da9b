"""The served-engine lm-eval model (`evaluation.accuracy.served`) against a tiny HTTP server on
127.0.0.1 written here: the request body of each shape, the answer read back and cut at the
first stop string, order kept under concurrency, failures naming the URL and what came back,
and which tasks are skipped and why."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lm_eval.api.instance import Instance

from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, triton_endpoint
from enginesweep.engines.triton.server import free_port
from enginesweep.evaluation.accuracy.harness import TaskError
from enginesweep.evaluation.accuracy.served import (
    ServedEndpoint,
    ServedError,
    ServedLM,
    served_endpoint,
    split_generative,
    truncate_at_stop,
)
from enginesweep.evaluation.records import AccuracyResult

pytestmark = pytest.mark.unit

Answer = Callable[[str, dict], tuple[int, str, str]]  # (path, body) -> (status, content type, body)


class Recorder:
    """What the server saw: every (path, body), and the most requests it had in flight at once."""

    def __init__(self, answer: Answer) -> None:
        self.answer, self.seen, self.lock = answer, [], threading.Lock()
        self.in_flight = self.most_in_flight = 0


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], tuple[str, Recorder]]]:
    servers = []

    def start(answer: Answer) -> tuple[str, Recorder]:
        recorder = Recorder(answer)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with recorder.lock:
                    recorder.seen.append((self.path, body))
                    recorder.in_flight += 1
                    recorder.most_in_flight = max(recorder.most_in_flight, recorder.in_flight)
                try:
                    status, kind, text = recorder.answer(self.path, body)
                finally:
                    with recorder.lock:
                        recorder.in_flight -= 1
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Quiet."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", recorder

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def request(context: str, **gen_kwargs: object) -> Instance:
    return Instance(
        request_type="generate_until",
        doc={},
        arguments=(context, gen_kwargs),
        idx=0,
        metadata=("some_task", 0, 1),
    )


def sse(*pieces: str) -> str:
    return "".join(f"data: {json.dumps({'model_name': 'ensemble', 'text_output': p})}\n\n" for p in pieces)


def test_triton_body_and_streamed_events_cut_at_the_first_stop(serve) -> None:
    url, seen = serve(lambda path, body: (200, "text/event-stream", sse(" alpha", "\nbeta", " gamma")))
    lm = ServedLM(ServedEndpoint("triton", url, "ensemble"))
    out = lm.generate_until(
        [request("k ->", until=["\n"], max_gen_toks=8, do_sample=False), request("no limit given", until=[])]
    )
    assert out == [" alpha", " alpha\nbeta gamma"]
    assert sorted(seen.seen, key=lambda seen_request: seen_request[1]["text_input"]) == [
        ("/v2/models/ensemble/generate_stream", {"text_input": "k ->", "max_tokens": 8, "stream": False}),
        # lm-eval's own default length when the task names none; stops stay client-side.
        (
            "/v2/models/ensemble/generate_stream",
            {"text_input": "no limit given", "max_tokens": 256, "stream": False},
        ),
    ]  # sent at once: they may arrive in either order


def test_openai_body_takes_the_stops_and_the_answer_is_cut_at_the_earliest(serve) -> None:
    url, seen = serve(
        lambda path, body: (
            200,
            "application/json",
            json.dumps({"choices": [{"index": 0, "text": "x###y\nz", "finish_reason": "length"}]}),
        )
    )
    lm = ServedLM(ServedEndpoint("openai", url, "/engines/e1"))
    assert lm.generate_until([request("p", until=["\n", "###", ""], max_gen_toks=5)]) == ["x"]
    assert seen.seen == [
        (
            "/v1/completions",
            {"model": "/engines/e1", "prompt": "p", "max_tokens": 5, "temperature": 0, "stop": ["\n", "###"]},
        )
    ]


def test_requests_run_concurrently_on_a_bounded_pool_and_come_back_in_order(serve) -> None:
    def echo(path: str, body: dict) -> tuple[int, str, str]:
        number = int(body["text_input"])
        time.sleep(0.02 * (number % 3))  # later requests often finish first
        return 200, "text/event-stream", sse(f"answer {number}")

    url, seen = serve(echo)
    lm = ServedLM(ServedEndpoint("triton", url, "m"), concurrency=3)
    assert lm.generate_until([request(str(i), until=[]) for i in range(12)]) == [
        f"answer {i}" for i in range(12)
    ]
    assert 1 < seen.most_in_flight <= 3


def test_failures_name_the_url_and_what_the_server_said(serve) -> None:
    url, _ = serve(lambda path, body: (500, "text/plain", "engine exploded"))
    with pytest.raises(
        ServedError, match=rf"{url}/v2/models/m/generate_stream answered HTTP 500: engine exploded"
    ):
        ServedLM(ServedEndpoint("triton", url, "m")).generate_until([request("x", until=[])])
    # A decoupled model answers 200 and puts its error in the event.
    url, _ = serve(
        lambda path, body: (200, "text/event-stream", 'data: {"error": "input exceeds max_seq_len 64"}\n\n')
    )
    with pytest.raises(
        ServedError, match="generate_stream answered no text_output: input exceeds max_seq_len 64"
    ):
        ServedLM(ServedEndpoint("triton", url, "m")).generate_until([request("x", until=[])])
    url, _ = serve(lambda path, body: (200, "application/json", '{"object": "error"}'))
    with pytest.raises(ServedError, match=rf"{url}/v1/completions answered no completion: .*error"):
        ServedLM(ServedEndpoint("openai", url, "m")).generate_until([request("x", until=[])])
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServedError, match=rf"{closed}/v1/completions could not be asked"):
        ServedLM(ServedEndpoint("openai", closed, "m")).generate_until([request("x", until=[])])


def test_log_likelihood_requests_are_refused_with_the_reason() -> None:
    lm = ServedLM(ServedEndpoint("openai", "http://127.0.0.1:9", "m"))
    for method in (lm.loglikelihood, lm.loglikelihood_rolling):
        with pytest.raises(TaskError, match="no prompt log-probabilities; only generate_until tasks"):
            method([])


def test_generative_tasks_are_kept_and_the_others_skipped_with_their_reason() -> None:
    kept, skipped = split_generative(
        {
            "enginesweep_cloze": {"multiple_choice"},
            "enginesweep_recall": {"generate_until"},
            "gsm8k": {"generate_until"},
            "mixed_group": {"generate_until", "loglikelihood"},
        }
    )
    assert kept == ["enginesweep_recall", "gsm8k"]
    assert list(skipped) == ["enginesweep_cloze", "mixed_group"]
    assert skipped["enginesweep_cloze"].startswith(
        "a multiple_choice task, scored by log-likelihoods that a served endpoint does not return"
    )
    assert skipped["mixed_group"].startswith("a group with loglikelihood subtasks")


def test_endpoints_follow_what_the_server_yields_and_stops_cut_at_the_earliest() -> None:
    url = "http://127.0.0.1:8000"
    assert served_endpoint(url, "ensemble", None).route == f"{url}/v2/models/ensemble/generate_stream"
    assert served_endpoint(url, "tensorrt_llm", triton_endpoint("tensorrt_llm")) == ServedEndpoint(
        "triton", url, "tensorrt_llm", "/v2/models/tensorrt_llm/generate_stream"
    )
    assert served_endpoint(url, "/e", OPENAI_COMPLETIONS).route == f"{url}/v1/completions"
    with pytest.raises(ValueError, match="takes other inputs than text_input/max_tokens/stream"):
        served_endpoint(
            url, "tensorrt_llm", triton_endpoint("tensorrt_llm", '{"sampling_param_max_tokens": 1}')
        )
    assert truncate_at_stop("a.b\nc", ["\n", "."]) == "a" and truncate_at_stop("abc", ["", "z"]) == "abc"


def test_an_accuracy_record_without_skipped_tasks_still_loads() -> None:
    old = {
        "hardware": "cpu",
        "dataset": "d",
        "dataset_sha256": "0" * 64,
        "window_tokens": 0,
        "perplexity": None,
        "top1_accuracy": None,
        "tasks": [],
    }
    assert AccuracyResult.model_validate(old).skipped_tasks == {}
