"""Fill Triton `config.pbtxt` templates the way TensorRT-LLM's `tools/fill_template.py` does, and
check the result with Triton's own protobuf schema.

The `inflight_batcher_llm` templates ship with TensorRT-LLM (`triton_backend/all_models/`); we
never copy them: the stack reads them from the installed release at run time, and the tests use
placeholder templates written from the documented placeholder names. A template's placeholders
are `${name}`. Those that stand alone as a parameter's `string_value: "${name}"` are optional
(the backend treats an unfilled one as unset); every other one (a `data_type:`, `count:`,
`max_batch_size:`, `decoupled:` ...) must be filled or the file does not parse, so leaving one
empty is an error here, before Triton sees it.

`fill_template.py` takes `key:value` pairs joined by commas, so a value holding a comma (a list
of GPU ids, a path) is written with the comma escaped as `\\,`; `fill_args` does that, and the
emitted scripts pass exactly its output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import Template

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OPTIONAL = re.compile(r'string_value:\s*"\$\{([A-Za-z_][A-Za-z0-9_]*)\}"')


class TemplateError(ValueError):
    """A template that cannot be filled as asked, or a filled file Triton would refuse."""


def placeholders(text: str) -> list[str]:
    """Every `${name}` of a template, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def required_placeholders(text: str) -> list[str]:
    """The placeholders the file cannot parse without (anywhere but a lone `string_value`)."""
    optional_spans = [m.span(1) for m in _OPTIONAL.finditer(text)]
    required = []
    for match in PLACEHOLDER.finditer(text):
        if not any(start <= match.start(1) < end for start, end in optional_spans):
            required.append(match.group(1))
    return list(dict.fromkeys(required))


def fill_args(values: Mapping[str, object]) -> str:
    """The `key:value,...` argument of `fill_template.py`, commas in values escaped."""
    return ",".join(f"{key}:{str(value).replace(',', chr(92) + ',')}" for key, value in values.items())


def parse_fill_args(arg: str) -> dict[str, str]:
    """The inverse of `fill_args`: split on unescaped commas, then on the first colon."""
    pairs = re.split(r"(?<!\\),", arg) if arg else []
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep:
            raise TemplateError(f"{pair!r} is not key:value")
        out[key] = value.replace("\\,", ",")
    return out


def fill(text: str, values: Mapping[str, object], *, model: str) -> str:
    """`text` with `values` substituted. Like `fill_template.py`, a key the template does not
    have is an error; unlike it, a required placeholder left unfilled is an error too."""
    names = placeholders(text)
    unknown = [key for key in values if key not in names]
    if unknown:
        raise TemplateError(
            f"{model}/config.pbtxt has no placeholder {', '.join(unknown)} (it has: {', '.join(names)})"
        )
    empty = [key for key, value in values.items() if str(value) == ""]
    missing = [name for name in required_placeholders(text) if name not in values or name in empty]
    if missing:
        raise TemplateError(
            f"{model}/config.pbtxt: required placeholder(s) {', '.join(missing)} "
            "left unfilled (the file would not parse)"
        )
    return Template(text).safe_substitute({key: str(value) for key, value in values.items()})


def parse_config(text: str, *, model: str) -> mc.ModelConfig:
    """Parse a filled `config.pbtxt` with Triton's schema; TemplateError naming the model if not."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise TemplateError(f"{model}/config.pbtxt does not parse as a Triton ModelConfig: {exc}") from exc
