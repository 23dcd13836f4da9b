"""The reduced sweep the flow tests run: two tiny-Llama trials (bf16 and fp8) on the reference
stack, small enough to run in about two minutes on two cores."""

from __future__ import annotations

from pathlib import Path

import yaml

TRIALS = ("tiny__bf16__kv-auto__tp1", "tiny__fp8__kv-auto__tp1")


def write_tiny_sweep(root: Path, model_dir: Path, name: str = "tiny-sweep") -> Path:
    """Write the spec (workspace `root/ws`) and return its path."""
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
            "concurrency": [1, 2],
            "request_count": 4,
            "warmup_request_count": 1,
        },
        "sla": {"ttft_p99_ms": 60000, "itl_p99_ms": 10000, "max_accuracy_drop": 0.5},
        "accuracy": {"window_tokens": 32, "max_windows": 4, "task_limit": 10},
        "registry": {"model_name": "tiny-engine"},
        "workspace": str(root / "ws"),
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
