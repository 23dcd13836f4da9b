"""lm-eval tasks answered by a served engine over HTTP, so that what is scored is what is served
(lm-eval's `trtllm` model loads checkpoints, not TensorRT engines).

`ServedLM` is an lm-eval `LM` answering `generate_until` requests in one of two request shapes:
Triton's `/v2/models/<model>/generate_stream` (a JSON body of `text_input`, `max_tokens` and
`stream`, answered by SSE events carrying `text_output`) or OpenAI's `/v1/completions`
(trtllm-serve: `prompt`, `max_tokens`, `temperature: 0`, `stop`). Decoding is greedy whatever a
task asks (both sides of a paired comparison decode alike; a task asking for sampling is named in
the lm-eval log). The answer is cut at the first `until` string client-side; only the OpenAI
route is also told the stops, because the ensemble matches `stop_words` on token ids of each
string alone (docs/research/gpu-hosts-containers.md, section 6). Requests go out concurrently
over a small bounded pool and come back in order; a failed one raises `ServedError` naming the
URL and what the server said. Served endpoints give no prompt log-probabilities that can be
relied on, so `loglikelihood*` raise and `evaluate_served` runs only the generative tasks of a
spec, recording every other one as skipped with its reason. Items and their hashes are those
of the in-process harness (`harness.task_results`), so a served result pairs item by item.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lm_eval.api.model import LM

from enginesweep.engines.endpoints import PAYLOAD_TEMPLATE, Endpoint
from enginesweep.engines.interrupts import raise_if_stopped
from enginesweep.evaluation.accuracy.harness import (
    TaskError,
    harness_output,
    harness_version,
    offline_harness,
    task_manager,
    task_results,
)
from enginesweep.evaluation.accuracy.variant import tasks_fingerprint
from enginesweep.evaluation.records import AccuracyResult

GENERATIVE = "generate_until"
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default when a task names no max_gen_toks
REQUEST_TIMEOUT_S = 600.0
# The stacks serve on loopback: a proxy from the environment must not carry these requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServedError(RuntimeError):
    """A request the served engine did not answer; the message names the URL and the answer."""


@dataclass(frozen=True)
class ServedEndpoint:
    """Where and how to ask one served model: `triton` (generate_stream) or `openai`
    (completions); `path` overrides the route's default."""

    kind: Literal["triton", "openai"]
    url: str
    model: str
    path: str | None = None

    @property
    def route(self) -> str:
        default = f"/v2/models/{self.model}/generate_stream" if self.kind == "triton" else "/v1/completions"
        return self.url.rstrip("/") + (self.path or default)


def served_endpoint(url: str, model: str, endpoint: Endpoint | None) -> ServedEndpoint:
    """The endpoint of a stack's server from what it yields (the benchmark's `Endpoint`; None is
    Triton's generate_stream of `model`). A Triton model whose benchmark payload uses other input
    names (the llmapi model's `sampling_param_*`) is refused: these requests would not fit it."""
    if endpoint is None:
        return ServedEndpoint("triton", url, model)
    if endpoint.kind == "completions":
        return ServedEndpoint("openai", url, model, endpoint.path)
    if endpoint.payload not in (None, PAYLOAD_TEMPLATE):
        raise ValueError(
            f"{url}{endpoint.path}: this Triton model takes other inputs than "
            "text_input/max_tokens/stream; accuracy by serving cannot ask it"
        )
    return ServedEndpoint("triton", url, model, endpoint.path)


def request_body(
    endpoint: ServedEndpoint, prompt: str, max_tokens: int, until: Sequence[str]
) -> dict[str, Any]:
    """One greedy request. Triton: not streamed, so the ensemble decodes the answer whole (its
    per-token stream can lose the spaces of SentencePiece tokenizers)."""
    if endpoint.kind == "triton":
        return {"text_input": prompt, "max_tokens": max_tokens, "stream": False}
    body: dict[str, Any] = {
        "model": endpoint.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    stops = [stop for stop in until if stop]
    if stops:
        body["stop"] = stops
    return body


def truncate_at_stop(text: str, until: Sequence[str]) -> str:
    """`text` up to the earliest occurrence of any non-empty stop string."""
    cuts = [text.find(stop) for stop in until if stop and stop in text]
    return text[: min(cuts)] if cuts else text


def _snippet(raw: bytes | str, limit: int = 500) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())[:limit] or "(empty body)"


def answer_text(endpoint: ServedEndpoint, raw: str) -> str:
    """The generated text of one response body: Triton's SSE events joined (one event, or one
    per token when streamed), or the first OpenAI choice. An error event or body raises."""
    route = endpoint.route
    if endpoint.kind == "triton":
        events = [json.loads(line[len("data:") :]) for line in raw.splitlines() if line.startswith("data:")]
        errors = [event["error"] for event in events if "error" in event]
        if errors or not events or not all("text_output" in event for event in events):
            # A decoupled model answers HTTP 200 and puts its error in the body.
            raise ServedError(f"{route} answered no text_output: {errors[0] if errors else _snippet(raw)}")
        return "".join(str(event["text_output"]) for event in events)
    try:
        body = json.loads(raw)
        return str(body["choices"][0]["text"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise ServedError(f"{route} answered no completion: {_snippet(raw)}") from None


@dataclass(frozen=True)
class _Job:
    prompt: str
    max_tokens: int
    until: tuple[str, ...]


class ServedLM(LM):
    """lm-eval's model interface over a served endpoint: `generate_until` only."""

    def __init__(
        self,
        endpoint: ServedEndpoint,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        super().__init__()
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.endpoint, self.concurrency, self.timeout_s = endpoint, concurrency, timeout_s

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise self._no_logprobs("loglikelihood")

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        raise self._no_logprobs("loglikelihood_rolling")

    def _no_logprobs(self, kind: str) -> TaskError:
        return TaskError(
            f"{kind} requests cannot be answered by the served endpoint "
            f"{self.endpoint.route}: it gives no prompt log-probabilities; only "
            "generate_until tasks are evaluated by serving"
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Each request's greedy answer, cut at its first stop string, in request order."""
        from lm_eval.models.utils import normalize_gen_kwargs

        jobs, sampled = [], set()
        for request in requests:
            prompt, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), DEFAULT_MAX_GEN_TOKS)
            if kwargs.get("do_sample"):
                sampled.add(getattr(request, "task_name", None) or "?")
            jobs.append(
                _Job(prompt, int(kwargs["max_gen_toks"]), tuple(stop for stop in kwargs["until"] if stop))
            )
        if sampled:
            logging.getLogger("lm_eval").warning(
                "task(s) %s ask for sampling; served accuracy decodes greedily", ", ".join(sorted(sampled))
            )
        return self._answer_all(jobs)

    def _answer_all(self, jobs: list[_Job]) -> list[str]:
        if not jobs:
            return []
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="served-lm"
        ) as pool:
            futures = [pool.submit(self._answer, job) for job in jobs]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:  # the first failure ends the batch
                    future.cancel()
                raise

    def _answer(self, job: _Job) -> str:
        raise_if_stopped()
        route = self.endpoint.route
        body = json.dumps(request_body(self.endpoint, job.prompt, job.max_tokens, job.until))
        request = urllib.request.Request(
            route, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                raw = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise ServedError(f"{route} answered HTTP {exc.code}: {_snippet(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServedError(f"{route} could not be asked: {reason}") from None
        return truncate_at_stop(answer_text(self.endpoint, raw), job.until)


def split_generative(output_types: dict[str, set[str]]) -> tuple[list[str], dict[str, str]]:
    """The tasks a served engine can answer (every subtask `generate_until`), in order, and the
    others with the reason each is skipped. A group is kept or skipped whole: its metric pools
    all its subtasks' items, which part of them would not measure."""
    kept: list[str] = []
    skipped: dict[str, str] = {}
    for name, types in output_types.items():
        others = sorted(types - {GENERATIVE})
        if not others:
            kept.append(name)
            continue
        what = (
            f"a group with {' and '.join(others)} subtasks"
            if GENERATIVE in types
            else f"a {' and '.join(others)} task"
        )
        skipped[name] = (
            f"{what}, scored by log-likelihoods that a served endpoint does not "
            "return (no prompt log-probabilities); only generate_until tasks are "
            "evaluated by serving"
        )
    return kept, skipped


def _output_types(manager: Any, tasks: list[str]) -> dict[str, set[str]]:
    """Each requested name's set of subtask output types (a task has one, a group or tag its
    subtasks')."""
    return {name: {task.OUTPUT_TYPE for task in manager.load([name])["tasks"].values()} for name in tasks}


def evaluate_served(
    endpoint: ServedEndpoint,
    *,
    tasks: list[str],
    include_paths: list[Path],
    limit: int | None,
    hardware: str,
    cache_dir: Path,
    concurrency: int = DEFAULT_CONCURRENCY,
    log_file: Path | None = None,
) -> AccuracyResult:
    """Score the served model on the generative tasks among `tasks` (offline, as in-process:
    `harness.offline_harness`) and return a tasks-only result (perplexity None) whose
    `skipped_tasks` names every other task with its reason. `limit` keeps the first N items of
    each task, the same items the in-process harness scores."""
    if limit is not None and limit < 2:
        raise TaskError(
            f"accuracy.task_limit must be at least 2 (a paired test needs two items), got {limit}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    scored = []
    with offline_harness(cache_dir), harness_output(log_file):
        import lm_eval

        manager = task_manager(tasks, include_paths)
        generative, skipped = split_generative(_output_types(manager, tasks))
        for name, reason in skipped.items():
            logging.getLogger("lm_eval").warning("skipping task %s: %s", name, reason)
        if generative:
            results = lm_eval.simple_evaluate(
                model=ServedLM(endpoint, concurrency=concurrency),
                tasks=generative,
                task_manager=manager,
                limit=limit,
                log_samples=True,
                bootstrap_iters=0,
                random_seed=0,
                numpy_random_seed=1234,
                torch_random_seed=1234,
                fewshot_random_seed=1234,
            )
            if results is None:  # only on non-zero ranks of a distributed run
                raise TaskError("lm-eval returned no results")
            scored = task_results(
                results, hardware=hardware, tool=f"{harness_version()} (served, {endpoint.kind})"
            )
    return AccuracyResult(
        hardware=hardware,
        dataset="lm-eval tasks, served (no perplexity)",
        dataset_sha256=tasks_fingerprint(include_paths),
        window_tokens=0,
        perplexity=None,
        top1_accuracy=None,
        tasks=scored,
        skipped_tasks=skipped,
    )
