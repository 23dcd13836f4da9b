"""One variant's whole accuracy evaluation (perplexity + tasks) and its comparison with the
baseline: the accuracy stage of a reference-stack trial, in one place.

Perplexity windows and task items are scored on one loaded model; `compare_variant` pairs the
result with the baseline's (bootstrap intervals for every metric, McNemar for 0/1 task items).
`tasks_fingerprint` hashes everything that decides the task items (the task files and the
harness version), so a cached baseline is reused only for the very same items.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from enginesweep.build_configs.schema import Accuracy
from enginesweep.evaluation.accuracy.harness import check_tasks, evaluate_tasks, harness_version
from enginesweep.evaluation.accuracy.paired import compare_accuracy, compare_tasks
from enginesweep.evaluation.accuracy.perplexity import evaluate_perplexity
from enginesweep.evaluation.accuracy.tasks import builtin_tasks_dir
from enginesweep.evaluation.records import AccuracyResult, PairedDelta


def task_include_paths(cfg: Accuracy, workspace: Path, corpus: Path) -> list[Path]:
    """Where lm-eval looks for the spec's tasks: the built-in tasks (written on first use) and
    `accuracy.task_paths`."""
    return [builtin_tasks_dir(workspace, corpus), *(Path(p).resolve() for p in cfg.task_paths)]


def preflight_tasks(cfg: Accuracy, workspace: Path, corpus: Path) -> list[Path]:
    """The include paths, after checking that every task of the spec can be found there."""
    include = task_include_paths(cfg, workspace, corpus)
    check_tasks(cfg.tasks, include, workspace / "cache" / "datasets")
    return include


def tasks_fingerprint(include_paths: list[Path]) -> str:
    """sha256 over the task files under the include paths (names and bytes; Python caches
    aside, which lm-eval's `!function` loader writes there), every local data file their YAMLs
    name, and the harness version: what decides the task items and how they are scored."""
    digest = hashlib.sha256(harness_version().encode())
    for root in include_paths:
        files = (
            [root]
            if root.is_file()
            else sorted(
                p
                for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            )
        )
        for path in files:
            digest.update(f"\0{path.name}\0".encode())
            digest.update(path.read_bytes())
            if path.suffix in (".yaml", ".yml"):
                for data in _data_files(path):
                    digest.update(f"\0{data}\0".encode())
                    digest.update(data.read_bytes())
    return digest.hexdigest()


class _AnyTagLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs, whose `!function module.name` tags SafeLoader refuses."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _data_files(yaml_path: Path) -> list[Path]:
    """Local files a task YAML names under `dataset_kwargs.data_files` (outside the folder
    too), resolved against the YAML's folder when relative."""
    try:
        config = yaml.load(yaml_path.read_text(), Loader=_AnyTagLoader) or {}
    except yaml.YAMLError:
        return []
    found = (config.get("dataset_kwargs") or {}).get("data_files") if isinstance(config, dict) else None
    values = (
        list(found.values())
        if isinstance(found, dict)
        else [found]
        if isinstance(found, str)
        else list(found or [])
    )
    paths = []
    for value in values:
        for item in [value] if isinstance(value, str) else value or []:
            path = Path(item) if Path(item).is_absolute() else yaml_path.parent / item
            if path.is_file():
                paths.append(path)
    return paths


def evaluate_model(
    model: Any,
    tokenizer: Any,
    *,
    text: str,
    dataset_name: str,
    cfg: Accuracy,
    include_paths: list[Path],
    cache_dir: Path,
    hardware: str,
    log_file: Path | None = None,
) -> AccuracyResult:
    """Perplexity on `text` and the spec's tasks, on one loaded model."""
    result = evaluate_perplexity(
        model,
        tokenizer,
        text,
        window_tokens=cfg.window_tokens,
        max_windows=cfg.max_windows,
        hardware=hardware,
        dataset_name=dataset_name,
    )
    tasks = evaluate_tasks(
        model,
        tokenizer,
        tasks=cfg.tasks,
        include_paths=include_paths,
        limit=cfg.task_limit,
        hardware=hardware,
        cache_dir=cache_dir,
        batch_size=cfg.batch_size,
        log_file=log_file,
    )
    return result.model_copy(update={"tasks": tasks})


def compare_variant(
    baseline: AccuracyResult, variant: AccuracyResult, *, confidence: float
) -> list[PairedDelta]:
    """Every paired delta of a variant: perplexity and top-1, then one per task."""
    return [
        *compare_accuracy(baseline, variant, confidence=confidence),
        *compare_tasks(baseline.tasks, variant.tasks, confidence=confidence),
    ]


def describe_deltas(deltas: list[PairedDelta]) -> list[str]:
    """One line per delta for the trial log: value, baseline, interval and test."""
    lines = []
    for d in deltas:
        test = (
            f", McNemar p={d.p_value:.3g} (b={d.discordant[0]}, c={d.discordant[1]})"
            if d.p_value is not None and d.discordant
            else ""
        )
        lines.append(
            f"{d.metric}: {d.variant:.4g} vs baseline {d.baseline:.4g}, delta "
            f"{d.delta:+.4g} ({d.confidence:.0%} CI {d.ci_low:+.4g} .. {d.ci_high:+.4g}, "
            f"n={d.n}{test})"
        )
    return lines
