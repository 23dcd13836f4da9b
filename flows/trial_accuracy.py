"""The accuracy stage of a trial, measured the stack's way (`Stack.accuracy_mode`): in this
process on the bundle's model, by the stack's lm-eval command, or on the served engine (scored
during serve-and-benchmark, paired here); each paired against its unquantized baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginesweep.engines import textdata
from enginesweep.engines.stacks import BuildResult
from enginesweep.evaluation.accuracy import trial_accuracy
from enginesweep.flows.served_accuracy import ServedAccuracy
from enginesweep.flows.trial_run import TrialRun


def served_accuracy(run: TrialRun) -> ServedAccuracy | None:
    """Scoring on the served engine (trtllm-engine's way), when the spec names tasks."""
    if run.stack.accuracy_mode != "served" or not run.resolved.spec.accuracy.tasks:
        return None
    return ServedAccuracy.for_trial(
        run.stack,
        run.resolved,
        run.planned,
        run.accuracy_inputs(),
        run.corpus,
        run.workspace,
        run.log,
    )


def measure_accuracy(run: TrialRun, build: BuildResult, served: ServedAccuracy | None) -> dict[str, Any]:
    """The trial's accuracy paired against its baseline's, measured the stack's way."""
    spec, trial_dir, inputs = run.resolved.spec, run.trial_dir, run.accuracy_inputs()
    confidence, mode = spec.accuracy.confidence, run.stack.accuracy_mode
    if mode == "in_process":
        with run.clock.stage("accuracy"):
            log_file = trial_dir / "accuracy" / "lm_eval.log"
            run.log(
                f"  perplexity ({spec.accuracy.max_windows} windows) and tasks "
                f"{', '.join(spec.accuracy.tasks) or 'none'} (limit {spec.accuracy.task_limit}; "
                f"lm-eval log: {log_file})"
            )
            text = textdata.evaluation_text(run.corpus)
            baseline = trial_accuracy.baseline_in_process(text, inputs, log_file)
            variant = trial_accuracy.in_process(Path(build.bundle_dir) / "model", text, inputs, log_file)
            return trial_accuracy.paired(baseline, variant, trial_dir, confidence, run.log)
    if mode == "command" and spec.accuracy.tasks:
        with run.clock.stage("accuracy"):
            run.log(
                f"  tasks {', '.join(spec.accuracy.tasks)} (limit {spec.accuracy.task_limit}) with "
                f"lm-eval, out of process (log: {trial_dir / 'accuracy' / 'lm_eval.log'})"
            )
            baseline, variant = trial_accuracy.by_command(
                run.stack, build, run.planned.config, inputs, trial_dir
            )
            return trial_accuracy.paired(baseline, variant, trial_dir, confidence, run.log)
    if served is not None:
        with run.clock.stage("accuracy"):
            variant, baseline = served.variant, served.baseline()
            accuracy = (
                trial_accuracy.paired(baseline, variant, trial_dir, confidence, run.log)
                if baseline is not None
                else {"accuracy": variant}
            )
        # The variant was scored on the benchmark's server: its time is the accuracy stage's.
        run.clock.move(served.variant_seconds, "serve+benchmark", "accuracy")
        return accuracy
    run.log(
        f"  accuracy: not measured on the {run.stack.name} stack (the selection rejects a quantized trial "
        "without it when the spec sets sla.max_accuracy_drop)"
    )
    return {}
