"""Accuracy of a GPU stack's model, out of process: the stack's lm-eval command (lm-eval's
`trtllm` model on the trtllm-pytorch stack) for the baseline and the variant, read back item by
item (`lm_eval_cli`) so the comparison is the same paired one as the reference stack's.

lm-eval takes one `--include_path`, so the spec's task folders become one folder of links; the
run is offline (hub and datasets switched off, the datasets cache in the workspace). These
results have tasks only: no perplexity windows (`AccuracyResult.perplexity` is None).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from engines.trtllm.commands import Command
from evaluation.accuracy.harness import TaskError
from evaluation.accuracy.lm_eval_cli import read_cli_output
from evaluation.benchmark.aiperf_runner import log_tail
from evaluation.records import AccuracyResult

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def merged_include(include_paths: list[Path], root: Path) -> Path:
    """One folder holding a link to every task YAML of `include_paths` (lm-eval keeps only the
    last `--include_path`); named by the paths, so trials share it."""
    key = hashlib.sha256("\n".join(str(p.resolve()) for p in include_paths).encode()).hexdigest()[:12]
    folder = root / f"merged-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(include_paths):
        files = [source] if source.is_file() else sorted(source.rglob("*.yaml"))
        for path in files:
            link = folder / f"{i}-{path.name}"
            if not link.is_symlink():
                link.symlink_to(path.resolve())
    return folder


def evaluate_external(command: Command, output_path: Path, *, hardware: str, tool: str,
                      tasks_sha256: str, cache_dir: Path, log_file: Path) -> AccuracyResult:
    """Run `command` (which writes under `output_path`) offline and read its items back."""
    output_path.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(cache_dir)}
    with log_file.open("a") as sink:
        sink.write(f"$ {command.shell()}\n")
        sink.flush()
        code = subprocess.run(command.argv, stdout=sink, stderr=subprocess.STDOUT, env=env,
                              check=False).returncode
    if code != 0:
        raise TaskError(f"lm-eval exited with code {code} (log: {log_file}):\n{log_tail(log_file)}")
    return AccuracyResult(hardware=hardware, dataset="lm-eval tasks (no perplexity)",
                          dataset_sha256=tasks_sha256, window_tokens=0, perplexity=None,
                          top1_accuracy=None,
                          tasks=read_cli_output(output_path, hardware=hardware, tool=tool))


def cached(path: Path, compute: Callable[[], AccuracyResult]) -> AccuracyResult:
    """`compute()` saved at `path`, or what an earlier call saved there."""
    if path.exists():
        return AccuracyResult.load(path)
    result = compute()
    result.save(path)
    return result
