"""Shared test helpers: a valid base spec to mutate, a CLI runner, and the GPU skip logic."""

from __future__ import annotations

import copy
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from enginesweep.flows.cli import app

BASE_SPEC: dict[str, Any] = {
    "name": "test-sweep",
    "model": {"repo_id": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"},
    "stack": "trtllm-engine",
    "target": {"gpu": "H100-SXM-80GB", "gpus_available": 2},
    "axes": {"quant": ["bf16", "fp8"], "kv_cache": ["auto"], "tp": [1, 2], "pp": [1]},
    "workload": {"isl": {"mean": 1024}, "osl": {"mean": 256}, "concurrency": [1, 8]},
}


def has_gpus(count: int = 1) -> bool:
    """True when `count` NVIDIA GPUs and the tensorrt_llm package are present."""
    if importlib.util.find_spec("tensorrt_llm") is None or shutil.which("nvidia-smi") is None:
        return False
    import subprocess

    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listing.returncode == 0 and len(listing.stdout.strip().splitlines()) >= count


def requires_gpus(count: int = 1) -> pytest.MarkDecorator:
    """Skip unless `count` GPUs and tensorrt_llm are present."""
    return pytest.mark.skipif(not has_gpus(count), reason=f"needs {count} NVIDIA GPU(s) and tensorrt_llm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and tensorrt_llm")
    if not has_gpus(1):
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[..., Path]:
    """Write BASE_SPEC, changed by `edit(spec)` or replaced by raw `text`, to a YAML file."""

    def make(edit: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
        path = tmp_path / "spec.yaml"
        if text is None:
            spec = copy.deepcopy(BASE_SPEC)
            if edit:
                edit(spec)
            text = yaml.safe_dump(spec, sort_keys=False)
        path.write_text(text)
        return path

    return make


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke the `enginesweep` CLI in-process; returns click's Result (stdout/stderr apart)."""
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        # A wide terminal so that table cells are not wrapped mid-word.
        return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "240"})

    return invoke
