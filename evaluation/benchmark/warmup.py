"""A warm-up at each server start, sent and thrown away before the load generator runs.

A freshly started server pays once for what later requests get for free (first-call
initialisation, allocator growth, caches of the runtime, pages of the weights). Without a warm-up
that cost lands on the first measured level of the first trial, which then looks slower than the
same engine's later requests. The warm-up sends one wave of concurrent requests, as many as the
workload's largest concurrency (at most `MAX_WAVE`), through the very route and payload the
benchmark uses, reads each stream to its end and keeps nothing but the time it took. aiperf's own
per-level warm-up (`workload.warmup_request_count`) still runs after it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from enginesweep.engines.endpoints import Endpoint

MAX_WAVE = 8
WARMUP_TEXT = "The quick brown fox jumps over the lazy dog. "  # about ten tokens for BPE tokenizers
DEFAULT_TIMEOUT_S = 600.0


class WarmupError(RuntimeError):
    """The server did not answer a warm-up request: it would fail the benchmark too."""


@dataclass(frozen=True)
class Warmup:
    """What the warm-up did: how many requests, and how long the wave took."""

    requests: int
    seconds: float


def request_body(endpoint: Endpoint, model: str, text: str, max_tokens: int) -> bytes:
    """The body the benchmark would send for `text`: the endpoint's payload template rendered as
    aiperf renders it (Jinja2, autoescaped, values through `tojson`), or an OpenAI completions
    request with the endpoint's extra inputs."""
    if endpoint.kind == "template":
        import jinja2  # aiperf's renderer; a dependency of MLflow here, of aiperf in the images

        assert endpoint.payload is not None  # a template endpoint always has its payload
        rendered = (
            jinja2.Environment(autoescape=True)
            .from_string(endpoint.payload)
            .render(text=text, max_tokens=max_tokens, stream=True)
        )
        return rendered.encode()
    body: dict[str, object] = {"model": model, "prompt": text, "max_tokens": max_tokens, "stream": True}
    for pair in endpoint.extra_inputs:
        key, _, value = pair.partition(":")
        body[key] = json.loads(value) if value in ("true", "false") or value.isdigit() else value
    return json.dumps(body).encode()


def route(endpoint: Endpoint) -> str:
    """The path the benchmark posts to."""
    return endpoint.path or "/v1/completions"


def warm_up(
    url: str,
    endpoint: Endpoint,
    model: str,
    *,
    wave: int,
    prompt_tokens: int,
    max_tokens: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Warmup:
    """Send `wave` (1..MAX_WAVE) concurrent requests of about `prompt_tokens` prompt tokens and
    `max_tokens` output tokens, read every stream to its end, and discard the answers. Raises
    `WarmupError` naming the server's answer when a request fails."""
    wave = max(1, min(wave, MAX_WAVE))
    text = WARMUP_TEXT * max(1, prompt_tokens // 10)
    body = request_body(endpoint, model, text, max(1, max_tokens))
    target = url.rstrip("/") + route(endpoint)

    def one(_: int) -> None:
        request = urllib.request.Request(
            target, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                streamed = answer.read()
        except OSError as exc:  # URLError and HTTPError are OSErrors
            detail = exc.read().decode(errors="replace")[:500] if hasattr(exc, "read") else ""
            raise WarmupError(f"the warm-up request to {target} failed: {exc} {detail}".rstrip()) from None
        # Triton reports a failure inside a 200 stream, as an event carrying "error".
        for line in streamed.decode(errors="replace").splitlines():
            if line.startswith("data:") and '"error"' in line:
                raise WarmupError(f"the warm-up request to {target} failed: {line[5:].strip()[:500]}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=wave) as pool:
        list(pool.map(one, range(wave)))
    return Warmup(requests=wave, seconds=time.monotonic() - started)
