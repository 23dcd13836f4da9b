"""Task results from what the lm-eval command line wrote (`--output_path DIR --log_samples`): the
GPU stacks' accuracy runs there, out of process (`lm-eval run --model trtllm`).

lm-eval writes `results_<stamp>.json` (per-task metrics, `group_subtasks`, `higher_is_better`,
`n-shot`) and one `samples_<task>_<stamp>.jsonl` per task under `DIR/<model name>/`: the same
dictionaries `simple_evaluate` returns in-process, so `harness.task_results` turns them into the
same per-item TaskResults, paired with the baseline's item by item.
"""

from __future__ import annotations

import json
from pathlib import Path

from enginesweep.evaluation.accuracy.harness import TaskError, task_results
from enginesweep.evaluation.records import TaskResult


def read_cli_output(output_path: Path, *, hardware: str, tool: str) -> list[TaskResult]:
    """The TaskResults of the newest lm-eval run written under `output_path`."""
    # The stamp in the name (results_<ISO time>.json), not the file's time, orders the runs.
    found = sorted(output_path.rglob("results_*.json"), key=lambda p: p.name)
    if not found:
        raise TaskError(f"lm-eval wrote no results_*.json under {output_path}")
    latest = found[-1]
    results = json.loads(latest.read_text())
    stamp = latest.stem.removeprefix("results_")
    samples: dict[str, list[dict]] = {}
    for path in sorted(latest.parent.glob(f"samples_*_{stamp}.jsonl")):
        task = path.name[len("samples_") : -len(f"_{stamp}.jsonl")]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not samples:
        raise TaskError(f"lm-eval logged no items beside {latest} (was --log_samples given?)")
    results["samples"] = samples
    return task_results(results, hardware=hardware, tool=tool)
