"""Shared test helpers: a valid base spec to mutate, a CLI runner, and the GPU skip logic."""

from __future__ import annotations

import atexit
import copy
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores: torch's default of a thread per core in each would be four
    # spinning OpenMP threads, which has made an evaluation five times slower. Set before torch
    # is imported; the processes the tests start inherit it.
    if not os.environ.get("OMP_NUM_THREADS"):  # unset or empty (libgomp rejects "")
        os.environ["OMP_NUM_THREADS"] = "1"
    # A worker starts with COLUMNS=80 and LINES=24 in its environment (not the user's terminal):
    # rich would fix the CLI consoles' width at 80 when flows.cli_common is imported below.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
# GPU locks of the tests' fake GPUs go to a folder of this session (each worker its own), never
# to the machine's /tmp/enginesweep-gpu-slots-<uid> that a real sweep here would use.
if "ENGINESWEEP_GPU_LOCK_DIR" not in os.environ:
    os.environ["ENGINESWEEP_GPU_LOCK_DIR"] = tempfile.mkdtemp(prefix="enginesweep-test-gpu-locks-")
    atexit.register(shutil.rmtree, os.environ["ENGINESWEEP_GPU_LOCK_DIR"], True)

from enginesweep.flows.cli import app  # after the environment above
from testkit.cpu_ledger import ENV as CPU_LEDGER_ENV
from testkit.cpu_ledger import CpuLedger

# The modules that take longest, longest first (tests/README.md has their times). The suite runs
# them first so that the two workers finish together; a new slow module belongs here.
LONGEST_FIRST = (
    "test_reference_trial",
    "test_gpu_layouts",
    "test_accuracy_gate",
    "test_container_profile",
    "test_gpu_concurrency",
    "test_schedule",
    "test_mlflow_ui_browser",  # reads the shared tiny sweep: before test_sweep_flow writes to it
    "test_sweep_flow",
    "test_served_accuracy",
    "test_sweep_sigkill",
    "test_trtllm_pytorch_stack",
    "test_postgres_backend",
    "test_engine_ports",
    "test_aiconfigurator",
    "test_tiny_moe",
    "test_aiperf_against_triton",
)

# Modules that share a session fixture run as one unit on one xdist worker, so that the fixture
# is built once: the tiny sweep's readers (integration/conftest.py, `tiny_sweep_run`).
SHARED_MODULES = {"test_mlflow_ui_browser": "tiny-sweep", "test_sweep_flow": "tiny-sweep"}

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


def pytest_configure(config: pytest.Config) -> None:
    # Opt-in: each test's CPU seconds, to see where the suite's time goes (testkit/cpu_ledger.py).
    if os.environ.get(CPU_LEDGER_ENV):
        config.pluginmanager.register(CpuLedger(Path(os.environ[CPU_LEDGER_ENV])), "enginesweep-cpu-ledger")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and tensorrt_llm")
    if not has_gpus(1):
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    # xdist (--dist loadfile) hands out whole modules in this order.
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: files keep their order


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


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown when xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the modules of `SHARED_MODULES` as one unit. (xdist's own
    `loadgroup` would do this through marks, but it renames node ids through an attribute that
    pytest 9 no longer reads, so its groups are silently ignored.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedModules(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_MODULES.get(Path(module).stem, module)

    return SharedModules(config, log)
