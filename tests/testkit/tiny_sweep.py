"""The reduced sweep the flow tests run: two tiny-Llama trials (bf16 and fp8) on the reference
stack, small enough to run in about two minutes on two cores; and the one run of it that the
modules reading a finished sweep share (`tiny_sweep_run` in integration/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

TRIALS = ("tiny__bf16__kv-auto__tp1", "tiny__fp8__kv-auto__tp1")
TARGET_REQUEST_RATE = 4.0  # req/s the shared sweep plans capacity for


def write_tiny_sweep(
    root: Path,
    model_dir: Path,
    name: str = "tiny-sweep",
    concurrency: tuple[int, ...] = (1, 2),
    target_request_rate: float | None = None,
) -> Path:
    """Write the spec (workspace `root/ws`) and return its path. Two concurrency levels by
    default (the flow tests read curves); one is enough where the load is not the subject. With
    `target_request_rate`, the selection plans capacity and the sweep replays the plan."""
    spec = {
        "name": name,
        "model": {"path": str(model_dir), "name": "tiny"},
        "stack": "reference",
        "target": {"gpu": "cpu"},
        "axes": {
            "quant": ["bf16", "fp8"],
            "kv_cache": ["auto"],
            "max_batch_size": [4],
            "max_num_tokens": [256],
            "max_seq_len": [128],
        },
        "build": {"calib_size": 2, "calib_max_seq_length": 32},
        "workload": {
            "isl": {"mean": 16},
            "osl": {"mean": 4},
            "concurrency": list(concurrency),
            "request_count": 4,
            "warmup_request_count": 1,
        },
        "sla": {"ttft_p99_ms": 60000, "itl_p99_ms": 10000, "max_accuracy_drop": 0.5},
        "accuracy": {"window_tokens": 32, "max_windows": 4, "task_limit": 10},
        "registry": {"model_name": "tiny-engine"},
        "workspace": str(root / "ws"),
    }
    if target_request_rate is not None:
        spec["planner"] = {"target_request_rate": target_request_rate}
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# Every `enginesweep` run on the shared sweep carries this token: it must reach nothing the sweep
# writes (test_sweep_flow checks the workspace and the output).
CANARY = "hf_canary_sweep_5d1e8a0c9b7f4e23"
SCRIPT = Path(sys.executable).parent / "enginesweep"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`enginesweep ARGS` in `cwd` with HF_TOKEN set to the canary; output captured."""
    env = {**os.environ, "HF_TOKEN": CANARY}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False, env=env
    )


@dataclass(frozen=True)
class SweepRun:
    """The tiny sweep, run once through `enginesweep run`: its spec, the folder holding the spec
    and the workspace (`root/ws`), and what the run printed."""

    spec: Path
    root: Path
    done: subprocess.CompletedProcess


def run_tiny_sweep(root: Path, model_dir: Path) -> SweepRun:
    """Write the tiny sweep under `root` and run it (cold: a new workspace), with a target rate:
    the shared run also replays the champion's capacity plan."""
    spec = write_tiny_sweep(root, model_dir, target_request_rate=TARGET_REQUEST_RATE)
    return SweepRun(spec, root, run_cli("run", str(spec), cwd=root))
