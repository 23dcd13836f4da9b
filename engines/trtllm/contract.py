"""The command-line contract of each supported TensorRT-LLM version, and the check that a
generated command keeps it.

`flags/trtllm-<line>.json` lists, per tool (`quantize.py`, `convert_checkpoint.py`,
`trtllm-build`, `launch_triton_server.py`, `trtllm-bench throughput`, `trtllm-serve serve`, and
ModelOpt's `hf_ptq.py` at the version the release pins), every option that version
accepts (derived from its argparse/click sources; the file records the repository, commit and
path it was read from), whether it takes a value, and its choices. Every command the
`trtllm-engine` stack runs or writes into a script passes `check_command` first, so a flag that
the pinned version does not know fails in our tests, not on a user's GPU machine.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


class ContractError(ValueError):
    """A command that the pinned TensorRT-LLM version would reject."""


class UnsupportedVersion(RuntimeError):
    """An installed TensorRT-LLM version this stack does not declare support for."""


@dataclass(frozen=True)
class Option:
    """One accepted option of one tool."""

    name: str
    takes_value: bool
    choices: tuple[str, ...] | None


@dataclass(frozen=True)
class ToolContract:
    """Every option one tool of one version accepts, and where that list was read."""

    tool: str
    source: str
    options: dict[str, Option]


@dataclass(frozen=True)
class VersionContract:
    """One supported TensorRT-LLM release line."""

    line: str
    versions: tuple[str, ...]
    source: str
    tools: dict[str, ToolContract]
    templates: dict[str, dict[str, list[str]]]
    """Per Triton model: its documented `structural`, `parameters` and `runtime_required` placeholders."""
    template_source: str
    container: dict[str, str]
    llm_api: dict[str, Any] | None = None
    """The LLM-API options (TorchLlmArgs) keys this version accepts: `keys` (top level),
    `sections` (keys of the nested configs enginesweep writes), `values` and `source`."""
    triton_llmapi: dict[str, Any] | None = None
    """Triton's `llmapi` Python model of this version: model name, model.yaml keys, inputs."""
    modelopt: dict[str, Any] | None = None
    """hf_ptq.py's `--qformat`/`--kv_cache_qformat` -> ModelOpt config names (unified HF export)."""

    def tool(self, name: str) -> ToolContract:
        if name not in self.tools:
            raise ContractError(
                f"no contract for {name!r} in TensorRT-LLM {self.line} (known: {', '.join(self.tools)})"
            )
        return self.tools[name]


def _load(text: str) -> VersionContract:
    raw: dict[str, Any] = json.loads(text)
    tools = {}
    for name, tool in raw["tools"].items():
        options = {
            flag: Option(
                flag,
                bool(spec["takes_value"]),
                tuple(str(c) for c in spec["choices"]) if spec.get("choices") else None,
            )
            for flag, spec in tool["options"].items()
        }
        repo = tool.get("repo", raw["repo"])
        tools[name] = ToolContract(name, f"{repo} {tool['path']} @ {tool['commit']}", options)
    templates = raw["triton_templates"]
    return VersionContract(
        raw["line"],
        tuple(raw["versions"]),
        raw["repo"],
        tools,
        templates["models"],
        templates["source"],
        raw["container"],
        raw.get("llm_api"),
        raw.get("triton_llmapi"),
        raw.get("modelopt"),
    )


@lru_cache(maxsize=1)
def contracts() -> dict[str, VersionContract]:
    """Every supported release line, by line (`1.2`)."""
    folder = resources.files("enginesweep.engines.trtllm").joinpath("flags")
    found = [
        _load(entry.read_text())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]
    return {contract.line: contract for contract in found}


def contract_for(version: str) -> VersionContract:
    """The contract of an installed `tensorrt_llm.__version__`; UnsupportedVersion otherwise."""
    for contract in contracts().values():
        if any(fnmatch.fnmatchcase(version, pattern) for pattern in contract.versions):
            return contract
    supported = "; ".join(f"{c.line} ({', '.join(c.versions)})" for c in contracts().values())
    raise UnsupportedVersion(
        f"TensorRT-LLM {version} is not supported by the trtllm-engine stack (supported: "
        f"{supported}); use a Triton TRT-LLM container with a supported release, or the "
        "trtllm-pytorch stack for releases without the TensorRT engine path"
    )


def check_command(contract: VersionContract, tool: str, args: Sequence[str]) -> None:
    """Raise ContractError unless every option of `args` (the tool's arguments, without the
    program itself) is accepted by `tool` in `contract`, with a value where it takes one and a
    value among its choices where it has them."""
    spec = contract.tool(tool)
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-"):
            raise ContractError(f"{tool} ({spec.source}): unexpected positional argument {token!r}")
        flag, has_inline, inline = token.partition("=")
        option = spec.options.get(flag)
        if option is None:
            raise ContractError(
                f"{tool} in TensorRT-LLM {contract.line} does not accept {flag} "
                f"(accepted options are listed from {spec.source})"
            )
        if option.takes_value:
            if has_inline:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise ContractError(f"{tool}: {flag} needs a value")
            if option.choices is not None and value not in option.choices:
                raise ContractError(f"{tool}: {flag} {value!r} is not one of {', '.join(option.choices)}")
        elif has_inline:
            raise ContractError(f"{tool}: {flag} is a switch and takes no value")
        i += 1
