"""Planner speed: time to plan a 1,000-trial sweep in-process with the roofline (goal: under 2 s),
the wall time of a `enginesweep size --json` process, and of `enginesweep plan llama-3.1-8b-h100`
with aiconfigurator (start-up, its worker and database load included; goal: under 30 s).
Prints figures; asserts nothing.

Run: .venv/bin/python benchmarks/plan_speed.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from enginesweep.build_configs.loading import load_spec
from enginesweep.build_configs.schema import Predictor
from enginesweep.evaluation.planning import expand

SPEC = {
    "name": "plan-speed",
    "model": {"repo_id": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"},
    "stack": "trtllm-engine",
    "target": {"gpu": "H100-SXM-80GB", "gpus_available": 8},
    "axes": {
        "quant": ["bf16", "fp16", "fp8", "int4_awq", "w4a8_awq"],
        "kv_cache": ["auto", "fp8"],
        "tp": [1, 2, 4, 8],
        "pp": [1],
        "max_batch_size": [32, 64, 128, 256, 512],
        "max_num_tokens": [4096, 8192, 16384, 32768, 65536],
    },
    "workload": {"isl": {"mean": 1024}, "osl": {"mean": 256}, "concurrency": [1, 8, 32, 128]},
    "sla": {"ttft_p99_ms": 500, "itl_p99_ms": 30},
}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(SPEC))
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            plan = expand(load_spec(path), predictor=Predictor.ROOFLINE, calibrated=False)
            runs.append(time.perf_counter() - start)
        print(
            f"plan: {len(plan.trials)} trials ({len(plan.feasible)} feasible), "
            f"load+expand median {statistics.median(runs):.3f} s, best {min(runs):.3f} s"
        )

    script = Path(sys.executable).parent / "enginesweep"
    argv = [
        str(script),
        "size",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "H100-SXM-80GB",
        "--quant",
        "fp8",
        "--kv-cache",
        "fp8",
        "--tp",
        "1",
        "--isl",
        "1024",
        "--osl",
        "256",
        "--json",
    ]
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    print(f"size --json process: median {statistics.median(walls):.3f} s, best {min(walls):.3f} s")

    argv = [str(script), "plan", "llama-3.1-8b-h100", "--json", "--uncalibrated"]
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
    sources = [t["predicted"]["source"] for t in json.loads(done.stdout)["trials"]]
    print(
        f"plan llama-3.1-8b-h100 process ({sources.count('predicted:aiconfigurator')} of "
        f"{len(sources)} trials by aiconfigurator): median {statistics.median(walls):.2f} s, "
        f"best {min(walls):.2f} s"
    )


if __name__ == "__main__":
    main()
