"""Accuracy of a GPU stack's model, out of process: the stack's lm-eval command (lm-eval's
`trtllm` model on the trtllm-pytorch stack) for the baseline and the variant, read back item by
item (`lm_eval_cli`) so the comparison is the same paired one as the reference stack's.

lm-eval takes one `--include_path`, so the spec's task folders become one folder of links; the
run is offline (hub and datasets switched off, the datasets cache in the workspace). These
results have tasks only: no perplexity windows (`AccuracyResult.perplexity` is None).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from enginesweep.engines.processes import (
    kill_marked,
    kill_with_parent,
    reap_stale_session,
    stop_process_group,
)
from enginesweep.engines.trtllm.commands import Command
from enginesweep.evaluation.accuracy.harness import TaskError
from enginesweep.evaluation.accuracy.lm_eval_cli import read_cli_output
from enginesweep.evaluation.benchmark.aiperf_runner import log_tail, wait_stoppable
from enginesweep.evaluation.records import AccuracyResult

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TIMEOUT_S = 6 * 3600.0  # an MMLU-sized run of a large model takes hours; a hang must not last forever


def merged_include(include_paths: list[Path], root: Path) -> Path:
    """One folder mirroring every task YAML of `include_paths` as links, each path under its own
    numbered subfolder with its relative layout kept (lm-eval keeps only the last
    `--include_path`; exported task trees reuse file names across subfolders); named by the
    paths, so trials share it."""
    key = hashlib.sha256("\n".join(str(p.resolve()) for p in include_paths).encode()).hexdigest()[:12]
    folder = root / f"merged-{key}"
    for i, source in enumerate(include_paths):
        files = (
            [(source, Path(source.name))]
            if source.is_file()
            else [(path, path.relative_to(source)) for path in sorted(source.rglob("*.yaml"))]
        )
        for path, relative in files:
            link = folder / str(i) / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another trial linked it first
                link.symlink_to(path.resolve())
    return folder


def evaluate_external(
    command: Command,
    output_path: Path,
    *,
    hardware: str,
    tool: str,
    tasks_sha256: str,
    cache_dir: Path,
    log_file: Path,
    timeout_s: float = TIMEOUT_S,
) -> AccuracyResult:
    """Run `command` (which writes under `output_path`, emptied first) offline, as a process
    group of its own that dies with this process and is stopped whole on an interrupt or after
    `timeout_s`, then read its items back."""
    shutil.rmtree(output_path, ignore_errors=True)  # never read an earlier run's files
    output_path.mkdir(parents=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(cache_dir)}
    pidfile = output_path.with_name(output_path.name + ".pid")
    reap_stale_session(pidfile, str(output_path))  # left by a SIGKILLed run
    with log_file.open("a") as sink:
        sink.write(f"$ {command.shell()}\n")
        sink.flush()
        process = subprocess.Popen(
            command.argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=kill_with_parent(),
        )
        pidfile.write_text(str(process.pid))
        try:
            code = wait_stoppable(process, timeout_s)
        except subprocess.TimeoutExpired:
            raise TaskError(f"lm-eval did not finish within {timeout_s:.0f} s (log: {log_file})") from None
        finally:  # its workers too (they name the output folder), whatever happened
            stop_process_group(process)
            kill_marked(str(output_path))
            pidfile.unlink(missing_ok=True)
    if code != 0:
        raise TaskError(f"lm-eval exited with code {code} (log: {log_file}):\n{log_tail(log_file)}")
    return AccuracyResult(
        hardware=hardware,
        dataset="lm-eval tasks (no perplexity)",
        dataset_sha256=tasks_sha256,
        window_tokens=0,
        perplexity=None,
        top1_accuracy=None,
        tasks=read_cli_output(output_path, hardware=hardware, tool=tool),
    )


def cached(path: Path, compute: Callable[[], AccuracyResult]) -> AccuracyResult:
    """`compute()` saved at `path`, or what an earlier call saved there."""
    if path.exists():
        return AccuracyResult.load(path)
    result = compute()
    result.save(path)
    return result
