"""Task evaluations through EleutherAI's lm-evaluation-harness, in-process and offline.

The model is any Hugging Face causal LM object (a ModelOpt fake-quantized one included) wrapped
in lm-eval's `HFLM`; tasks come from task YAMLs in local folders (`include_paths`: the built-in
tasks of `evaluation.accuracy.tasks` and the spec's `accuracy.task_paths`). Every item's score is
kept (`log_samples`), because the comparison with the baseline is paired, item by item.

Offline by construction: the harness and the `datasets` library run with HF_HUB_OFFLINE and
HF_DATASETS_OFFLINE set and their cache inside the workspace, so a task whose data is not on
disk fails with the library's offline error instead of downloading. Progress bars are silenced
(TQDM_DISABLE) and the harness's own log goes to `log_file` when given.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

from evaluation.records import TaskResult

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class TaskError(ValueError):
    """A task the harness cannot find or score, with what to change."""


@contextmanager
def offline_harness(cache_dir: Path) -> Iterator[None]:
    """Environment for one evaluation: hub and datasets offline, the datasets cache under
    `cache_dir`, no progress bars. Restored afterwards. Libraries that read these settings at
    import time and were already imported get their module constants set too."""
    names = (*_OFFLINE_ENV, "HF_DATASETS_CACHE", "TQDM_DISABLE")
    saved = {name: os.environ.get(name) for name in names}
    patched: list[tuple[Any, str, Any]] = []
    try:
        os.environ.update({name: "1" for name in _OFFLINE_ENV})
        os.environ["HF_DATASETS_CACHE"] = str(cache_dir)
        os.environ["TQDM_DISABLE"] = "1"
        for module, attr, value in (("datasets.config", "HF_DATASETS_OFFLINE", True),
                                    ("datasets.config", "HF_HUB_OFFLINE", True),
                                    ("huggingface_hub.constants", "HF_HUB_OFFLINE", True)):
            loaded = sys.modules.get(module)
            if loaded is not None and hasattr(loaded, attr):
                patched.append((loaded, attr, getattr(loaded, attr)))
                setattr(loaded, attr, value)
        yield
    finally:
        for loaded, attr, value in reversed(patched):
            setattr(loaded, attr, value)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def harness_version() -> str:
    """`lm_eval <version>`, the tool label of every task result."""
    from importlib.metadata import version

    return f"lm_eval {version('lm_eval')}"


def _task_manager(tasks: list[str], include_paths: list[Path]) -> Any:
    """A TaskManager that knows `tasks`: the include paths alone when they hold them all (fast:
    lm-eval's thousands of own tasks are not indexed), else with lm-eval's own tasks too (their
    data must then be in the local datasets cache). Unknown names raise TaskError."""
    from lm_eval.tasks import TaskManager

    for path in include_paths:
        if not path.exists():
            raise TaskError(f"accuracy.task_paths: {path} does not exist; point it at a folder "
                            "of lm-eval task YAMLs (or a YAML file)")
    paths = [str(p) for p in include_paths]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=paths, include_defaults=True)
    unknown = sorted(set(tasks) - set(manager.all_tasks))
    if unknown:
        raise TaskError(f"accuracy.tasks: unknown task(s) {', '.join(unknown)}: neither in "
                        f"{', '.join(paths) or 'no task_paths'} nor among lm-eval's own tasks; "
                        "add the folder of their YAMLs to accuracy.task_paths")
    return manager


def check_tasks(tasks: list[str], include_paths: list[Path], cache_dir: Path) -> None:
    """Fail before any trial runs when a task name or task path is wrong (TaskError naming it),
    instead of after the first trial's benchmark."""
    if not tasks:
        return
    with offline_harness(cache_dir), _harness_output(None):
        _task_manager(tasks, include_paths)


def evaluate_tasks(model: Any, tokenizer: Any, *, tasks: list[str], include_paths: list[Path],
                   limit: int | None, hardware: str, cache_dir: Path, batch_size: int = 16,
                   log_file: Path | None = None) -> list[TaskResult]:
    """Score `model` on `tasks` (lm-eval names; groups expand to their subtasks) and return one
    TaskResult per task with every item's score. `limit` keeps the first N items of each task
    (None: all). The same items, seeds and batch size give the same per-item scores."""
    if not tasks:
        return []
    if limit is not None and limit < 2:
        raise TaskError(f"accuracy.task_limit must be at least 2 (a paired test needs two items), "
                        f"got {limit}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with offline_harness(cache_dir), _harness_output(log_file):
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        manager = _task_manager(tasks, include_paths)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                  device=str(next(model.parameters()).device))
        results = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=True,
            bootstrap_iters=0, random_seed=0, numpy_random_seed=1234, torch_random_seed=1234,
            fewshot_random_seed=1234)
    if results is None:  # only on non-zero ranks of a distributed run, which this never is
        raise TaskError("lm-eval returned no results")
    return task_results(results, hardware=hardware, tool=harness_version())


def task_results(results: dict, *, hardware: str, tool: str) -> list[TaskResult]:
    """TaskResults from `simple_evaluate`'s output (its `samples` and `higher_is_better`).

    Each task's metric is the first one its items were scored by; items are ordered by doc id
    and hashed with their document hashes, so pairing is exact."""
    out = []
    for task, samples in sorted(results.get("samples", {}).items()):
        if not samples:
            raise TaskError(f"task {task} produced no items (empty test split or limit 0)")
        metric = samples[0]["metrics"][0]
        ordered = sorted(samples, key=lambda s: s["doc_id"])
        digest = hashlib.sha256()
        for sample in ordered:
            digest.update(f"{sample['doc_id']}:{sample['doc_hash']}\n".encode())
        values = [float(sample[metric]) for sample in ordered]
        higher = results.get("higher_is_better", {}).get(task, {}).get(metric, True)
        out.append(TaskResult(
            hardware=hardware, task=task, metric=metric, higher_is_better=bool(higher),
            num_fewshot=int(results.get("n-shot", {}).get(task, 0) or 0), tool=tool,
            items_sha256=digest.hexdigest(), score=sum(values) / len(values),
            item_ids=[int(sample["doc_id"]) for sample in ordered], item_values=values))
    return out


@contextmanager
def _harness_output(log_file: Path | None) -> Iterator[None]:
    """The harness's prints and log records into `log_file` (appended), not the sweep's output."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval")]
    saved = [(lg, lg.propagate) for lg in loggers]
    with log_file.open("a") as stream, redirect_stdout(stream), redirect_stderr(stream):
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False
        try:
            yield
        finally:
            for lg, propagate in saved:
                lg.removeHandler(handler)
                lg.propagate = propagate
            handler.close()
