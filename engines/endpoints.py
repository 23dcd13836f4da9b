"""How a load generator or an accuracy client talks to a served model: Triton's `generate_stream`
through a payload template, or an OpenAI-compatible completions route (trtllm-serve). Defined with
the servers (the stacks choose one per trial); the measure side (aiperf, served accuracy) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# aiperf renders this with `jinja2.Environment(autoescape=True)`: every value goes through
# `tojson`, which quotes and escapes it as JSON (a bare `{{ text }}` would be HTML-escaped and
# break on quotes). `max_tokens` is the per-request OSL aiperf drew; `stream` follows --streaming.
# aiperf still warns "Using --osl without ignore_eos or min_tokens in --extra-inputs": it does not
# look inside templates.
PAYLOAD_TEMPLATE = (
    '{"text_input": {{ text|tojson }}, "max_tokens": {{ max_tokens|tojson }}, '
    '"min_tokens": {{ max_tokens|tojson }}, "stream": {{ stream|tojson }}}\n'
)


def generate_stream_path(model: str) -> str:
    """Triton's streaming generate route for `model` (SSE, needs a decoupled model)."""
    return f"/v2/models/{model}/generate_stream"


@dataclass(frozen=True)
class Endpoint:
    """How aiperf talks to one server: Triton's generate_stream through a payload template, or
    an OpenAI-compatible completions route (trtllm-serve)."""

    kind: Literal["template", "completions"]
    path: str | None = None
    """The route for `template` (`--custom-endpoint`); None uses aiperf's default route."""
    payload: str | None = None
    """The Jinja2 payload template for `template`, written beside the results."""
    extra_inputs: tuple[str, ...] = ()
    """More `--extra-inputs` `key:value` pairs, sent in every request."""


def triton_endpoint(model: str, payload: str = PAYLOAD_TEMPLATE) -> Endpoint:
    """Triton's `generate_stream` of `model`, requests rendered from `payload`."""
    return Endpoint("template", generate_stream_path(model), payload)


OPENAI_COMPLETIONS = Endpoint("completions", extra_inputs=("ignore_eos:true",))
"""`/v1/completions`, streamed; `ignore_eos` so that every request decodes the whole OSL (an
extension field of vLLM-style servers, trtllm-serve's included)."""
