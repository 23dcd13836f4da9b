"""Triton's `llmapi` model repository for one trial, from the installed release's own files.

TensorRT-LLM ships the model (`triton_backend/all_models/llmapi/tensorrt_llm/`: `config.pbtxt`
and `1/model.py`, a Python model around the LLM API); we never copy it into this project. The
repository is that folder copied, with `1/model.yaml` written from the trial's options, and
`model_transaction_policy { decoupled: true }` set in `config.pbtxt`: launch_triton_server.py
passes `--disable-auto-complete-config`, so model.yaml's `triton_config.decoupled` alone may never
reach Triton, and streaming needs a decoupled model. The result is parsed with Triton's schema
and must declare every input the benchmark payload sends.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import text_format

from enginesweep.engines.trtllm.contract import VersionContract
from enginesweep.engines.trtllm.templates import TemplateError, parse_config

TEMPLATE_DIR = "triton_backend/all_models/llmapi"

PAYLOAD_TEMPLATE = (
    '{"text_input": {{ text|tojson }}, "sampling_param_max_tokens": {{ max_tokens|tojson }}, '
    '"sampling_param_exclude_input_from_output": true, "streaming": {{ stream|tojson }}}\n'
)
"""aiperf's request body for the llmapi model (Jinja2, as `aiperf_runner.PAYLOAD_TEMPLATE`):
its inputs are `text_input` and `sampling_param_*`; the prompt is left out of `text_output`. The
model has no `min_tokens`/`ignore_eos` input, so a request may end before the workload's OSL:
aiperf reports the output lengths it measured."""

PAYLOAD_INPUTS = (
    "text_input",
    "sampling_param_max_tokens",
    "sampling_param_exclude_input_from_output",
    "streaming",
)


def decouple_shell(config: str) -> str:
    """Shell lines that make the model in `config` (a path, may use variables) decoupled, as
    `write_llmapi_repository` does with Triton's schema: a `decoupled: false` outside comments
    becomes true, and without an uncommented `decoupled: true` the policy block is appended
    (the shipped file has the block commented out)."""
    return (
        f"sed -i '/^[[:space:]]*#/!s/decoupled: *[Ff]alse/decoupled: true/' \"{config}\"\n"
        f"grep -q '^[^#]*decoupled: *[Tt]rue' \"{config}\" || "
        f"printf 'model_transaction_policy {{\\n  decoupled: true\\n}}\\n' >> \"{config}\""
    )


def write_llmapi_repository(
    contract: VersionContract, installed: Path, repo_dir: Path, body: Mapping[str, Any]
) -> Path:
    """Copy the installed `llmapi` folder into `repo_dir` (replaced whole), write `model.yaml`
    from `body` (see `options.model_yaml`), make the model decoupled and check the result."""
    llmapi = contract.triton_llmapi or {}
    model = llmapi.get("model", "tensorrt_llm")
    if not (installed / model / "config.pbtxt").is_file():
        raise TemplateError(
            f"{installed / model / 'config.pbtxt'} is missing: is TRTLLM_ROOT the "
            f"TensorRT-LLM tree of a release with the llmapi model?"
        )
    tmp = repo_dir.with_name(repo_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(installed, tmp)
        (tmp / llmapi.get("model_yaml", f"{model}/1/model.yaml")).write_text(
            yaml.safe_dump(dict(body), sort_keys=False)
        )
        config_path = tmp / model / "config.pbtxt"
        config = parse_config(config_path.read_text(), model=model)
        config.model_transaction_policy.decoupled = True
        config_path.write_text(text_format.MessageToString(config))
        verify_llmapi_repository(tmp, model)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    shutil.rmtree(repo_dir, ignore_errors=True)
    tmp.rename(repo_dir)
    return repo_dir


def verify_llmapi_repository(repo_dir: Path, model: str = "tensorrt_llm") -> None:
    """Parse the model's config.pbtxt; refuse one that is not decoupled or lacks an input the
    benchmark sends, and a model.yaml without the checkpoint it serves."""
    config = parse_config((repo_dir / model / "config.pbtxt").read_text(), model=model)
    if not config.model_transaction_policy.decoupled:
        raise TemplateError(f"{model}/config.pbtxt is not decoupled: generate_stream would refuse")
    declared = {tensor.name for tensor in config.input}
    missing = [name for name in PAYLOAD_INPUTS if name not in declared]
    if missing:
        raise TemplateError(
            f"{model}/config.pbtxt declares no input {', '.join(missing)} (the "
            "benchmark sends it): a different llmapi model version?"
        )
    body = yaml.safe_load((repo_dir / model / "1" / "model.yaml").read_text())
    if not isinstance(body, dict) or not Path(str(body.get("model", ""))).is_absolute():
        raise TemplateError(f"{model}/1/model.yaml must name the checkpoint folder (absolute path)")
