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
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from enginesweep.evaluation.records import TaskResult

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class TaskError(ValueError):
    """A task the harness cannot find or score, with what to change."""


@contextmanager
def offline_harness(cache_dir: Path) -> Iterator[None]:
    """Environment for one evaluation: hub and datasets offline, the datasets cache under
    `cache_dir`, no progress bars; everything restored afterwards. The libraries that read these
    settings once, at import, are imported first and get their module constants set (and reset)
    too, so the rest of the process (a checkpoint download after the preflight) is online again."""
    import datasets.config
    import huggingface_hub.constants

    names = (*_OFFLINE_ENV, "HF_DATASETS_CACHE", "TQDM_DISABLE")
    saved = {name: os.environ.get(name) for name in names}
    constants = (
        (datasets.config, "HF_DATASETS_OFFLINE", True),
        (datasets.config, "HF_HUB_OFFLINE", True),
        (datasets.config, "HF_DATASETS_CACHE", Path(cache_dir)),
        (huggingface_hub.constants, "HF_HUB_OFFLINE", True),
    )
    patched: list[tuple[Any, str, Any]] = []
    try:
        os.environ.update({name: "1" for name in _OFFLINE_ENV})
        os.environ["HF_DATASETS_CACHE"] = str(cache_dir)
        os.environ["TQDM_DISABLE"] = "1"
        for module, attr, value in constants:
            if hasattr(module, attr):
                patched.append((module, attr, getattr(module, attr)))
                setattr(module, attr, value)
        yield
    finally:
        for module, attr, value in reversed(patched):
            setattr(module, attr, value)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def harness_version() -> str:
    """`lm_eval <version>`, the tool label of every task result."""
    from importlib.metadata import version

    return f"lm_eval {version('lm_eval')}"


def task_manager(tasks: list[str], include_paths: list[Path]) -> Any:
    """A TaskManager that knows `tasks`: the include paths alone when they hold them all (fast:
    lm-eval's thousands of own tasks are not indexed), else with lm-eval's own tasks too (their
    data must then be in the local datasets cache). Unknown names raise TaskError."""
    from lm_eval.tasks import TaskManager

    for path in include_paths:
        if not path.exists():
            raise TaskError(
                f"accuracy.task_paths: {path} does not exist; point it at a folder "
                "of lm-eval task YAMLs (or a YAML file)"
            )
    paths = [str(p) for p in include_paths]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=paths, include_defaults=True)
    unknown = sorted(set(tasks) - set(manager.all_tasks))
    if unknown:
        raise TaskError(
            f"accuracy.tasks: unknown task(s) {', '.join(unknown)}: neither in "
            f"{', '.join(paths) or 'no task_paths'} nor among lm-eval's own tasks; "
            "add the folder of their YAMLs to accuracy.task_paths"
        )
    return manager


def check_tasks(tasks: list[str], include_paths: list[Path], cache_dir: Path) -> None:
    """Fail before any trial runs when a task name or task path is wrong (TaskError naming it),
    instead of after the first trial's benchmark."""
    if not tasks:
        return
    with offline_harness(cache_dir), harness_output(None):
        task_manager(tasks, include_paths)


def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    *,
    tasks: list[str],
    include_paths: list[Path],
    limit: int | None,
    hardware: str,
    cache_dir: Path,
    batch_size: int = 16,
    log_file: Path | None = None,
) -> list[TaskResult]:
    """Score `model` on `tasks` (lm-eval names; groups expand to their subtasks) and return one
    TaskResult per task with every item's score. `limit` keeps the first N items of each task
    (None: all). The same items, seeds and batch size give the same per-item scores."""
    if not tasks:
        return []
    if limit is not None and limit < 2:
        raise TaskError(
            f"accuracy.task_limit must be at least 2 (a paired test needs two items), got {limit}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with offline_harness(cache_dir), harness_output(log_file):
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        _skip_environment_report()

        manager = task_manager(tasks, include_paths)
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            device=str(next(model.parameters()).device),
        )
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=manager,
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=0,
            numpy_random_seed=1234,
            torch_random_seed=1234,
            fewshot_random_seed=1234,
        )
    if results is None:  # only on non-zero ranks of a distributed run, which this never is
        raise TaskError("lm-eval returned no results")
    return task_results(results, hardware=hardware, tool=harness_version())


def _skip_environment_report() -> None:
    """Leave torch's environment report out of lm-eval's results, for this process.

    `simple_evaluate` ends with `add_env_info`, which calls torch's `collect_env`: it runs `pip
    list`, `cmake --version`, `nvidia-smi` and more as subprocesses, about 2.7 CPU-seconds per
    evaluation (two or three per trial), for a `pretty_env_info` string that nothing here reads
    (records name their own versions). The replacement keeps the other keys it sets. Where
    lm-eval has no such function the evaluation is left as it is."""
    import lm_eval.evaluator

    if getattr(lm_eval.evaluator, "add_env_info", None) in (None, _environment_without_report):
        return
    lm_eval.evaluator.add_env_info = _environment_without_report


def _environment_without_report(storage: dict[str, Any]) -> None:
    """lm-eval's `add_env_info` less torch's `collect_env` report."""
    from importlib.metadata import version

    import transformers

    storage["pretty_env_info"] = "not collected (enginesweep skips torch's collect_env)"
    storage["transformers_version"] = transformers.__version__
    storage["lm_eval_version"] = version("lm_eval")


def _leaves(name: str, groups: dict[str, list[str]]) -> list[str]:
    children = groups.get(name) or []
    return [leaf for child in children for leaf in _leaves(child, groups)] if children else [name]


def _first_filter(task: str, samples: list[dict]) -> list[dict]:
    """lm-eval logs one sample per (filter, document): keep the first filter's (GSM8K has
    `strict-match` and `flexible-extract`); a document twice under one filter is an error."""
    chosen = samples[0].get("filter", "none")
    kept = [s for s in samples if s.get("filter", "none") == chosen]
    ids = [s["doc_id"] for s in kept]
    if len(set(ids)) != len(ids):
        raise TaskError(
            f"task {task}: lm-eval logged some documents twice under filter "
            f"{chosen!r}; its items cannot be paired"
        )
    return kept


def task_results(results: dict, *, hardware: str, tool: str) -> list[TaskResult]:
    """TaskResults from `simple_evaluate`'s output (its `samples`, `group_subtasks` and
    `higher_is_better`): one per standalone task and one per top-level group, whose subtasks'
    items are pooled (MMLU is one metric over all its questions, not 57 separately gated ones,
    which would reject a lossless engine by chance alone).

    The metric is the first one the items were scored by (with its filter when not `none`);
    items are ordered by subtask and doc id and hashed with their document hashes, so pairing is
    exact; pooled items are numbered in that order."""
    samples_by_task = results.get("samples", {})
    groups = {g: list(subs or []) for g, subs in results.get("group_subtasks", {}).items()}
    inner = {child for subs in groups.values() for child in subs}
    tops = sorted(name for name in set(groups) | set(samples_by_task) if name not in inner)
    out = []
    for top in tops:
        leaves = [leaf for leaf in _leaves(top, groups) if leaf in samples_by_task]
        if not leaves:
            continue
        rows: list[tuple[str, dict]] = []
        metric = filter_name = None
        for leaf in sorted(leaves):
            samples = samples_by_task[leaf]
            if not samples:
                raise TaskError(f"task {leaf} produced no items (empty test split or limit 0)")
            kept = _first_filter(leaf, samples)
            leaf_metric = kept[0]["metrics"][0]
            if metric is None:
                metric, filter_name = leaf_metric, kept[0].get("filter", "none")
            elif leaf_metric != metric:
                raise TaskError(
                    f"group {top}: subtasks score by {metric} and {leaf_metric}; "
                    "list the subtasks in accuracy.tasks instead of the group"
                )
            rows.extend((leaf, sample) for sample in sorted(kept, key=lambda s: int(s["doc_id"])))
        digest = hashlib.sha256()
        values = []
        for leaf, sample in rows:
            digest.update(f"{leaf}:{sample['doc_id']}:{sample['doc_hash']}\n".encode())
            value = sample[metric]
            if not isinstance(value, (int, float)):
                raise TaskError(
                    f"task {leaf}: metric {metric} gives {type(value).__name__} per "
                    "item, not a number (corpus-level metrics such as BLEU cannot "
                    "be paired item by item); choose a task scored per item"
                )
            values.append(float(value))
        higher = results.get("higher_is_better", {}).get(leaves[0], {}).get(metric, True)
        pooled = len(leaves) > 1 or leaves[0] != top
        out.append(
            TaskResult(
                hardware=hardware,
                task=top,
                metric=metric if filter_name in (None, "none") else f"{metric},{filter_name}",
                higher_is_better=bool(higher),
                num_fewshot=int(results.get("n-shot", {}).get(leaves[0], 0) or 0),
                tool=tool,
                items_sha256=digest.hexdigest(),
                score=sum(values) / len(values),
                item_ids=(list(range(len(rows))) if pooled else [int(s["doc_id"]) for _, s in rows]),
                item_values=values,
            )
        )
    return out


@contextmanager
def harness_output(log_file: Path | None) -> Iterator[None]:
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
