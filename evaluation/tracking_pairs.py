"""Read predicted/measured pairs back from MLflow for the closed loop (`enginesweep calibrate`).

Every FINISHED trial run of the experiment (tag `enginesweep.kind=trial`, status ok) holds its
measured metrics (no prefix) and the plan's prediction (`pred_` prefix) stepped by concurrency;
this pairs them level by level:

    ttft_ms      <- pred_ttft_ms       vs ttft_p99_ms
    itl_ms       <- pred_itl_ms        vs itl_p99_ms
    output_tok_s <- pred_output_tok_s  vs output_tok_s

TTFT and ITL are paired with the measured p99, because the SLA judges p99s: a calibrated
prediction is then a p99 prediction, and the SLA verdict on it is no longer optimistic by the
tail. A calibrated prediction (params `calibration.factor.<metric>`) is divided back to the raw
one first, so factors always correct the raw predictor. Each pair carries the trial's model
(param `model`), workload (`workload`, ISL/OSL) and the run's start time.
The runtime version comes from the trial's `version.*` params: torch on the reference stack
(its Python backend runs the model), tensorrt_llm on the GPU stacks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from enginesweep.evaluation.planning.calibration import Pair
from enginesweep.evaluation.tracking import CURVE

PAIRED_METRICS = {
    "ttft_ms": ("pred_ttft_ms", CURVE + "ttft_p99_ms"),
    "itl_ms": ("pred_itl_ms", CURVE + "itl_p99_ms"),
    "output_tok_s": ("pred_output_tok_s", CURVE + "output_tok_s"),
}
RUNTIME_PARAM = {
    "reference": "version.torch",
    "trtllm-engine": "version.tensorrt_llm",
    "trtllm-pytorch": "version.tensorrt_llm",
}


def _steps(client: Any, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric)}


def read_pairs(client: Any, experiment: str) -> list[Pair]:
    """Every predicted/measured pair of the experiment's finished trial runs (an `MlflowClient`
    and an experiment name); raises LookupError when the experiment does not exist."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment named '{experiment}' (run a sweep first)")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="tags.`enginesweep.kind` = 'trial' and tags.`enginesweep.status` = 'ok'",
        max_results=10_000,
    )
    pairs = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        predictor = tags.get("provenance.predicted_by", "none").removesuffix("+calibrated")
        if predictor == "none":
            continue
        # A calibrated prediction is divided back to the raw one: factors fit raw predictions.
        undo = {metric: float(params.get(f"calibration.factor.{metric}", 1.0)) for metric in PAIRED_METRICS}
        stack = params.get("stack", "unknown")
        runtime = params.get(RUNTIME_PARAM.get(stack, ""), "unknown")
        started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
        common = {
            "trial": tags.get("enginesweep.slug", run.info.run_name),
            "model": params.get("model", "unknown"),
            "workload": params.get("workload", "unknown"),
            "measured_at": started.isoformat(timespec="seconds"),
            "hardware": params.get("hardware", "unknown"),
            "stack": stack,
            "runtime": runtime,
            "predictor": predictor,
        }
        for metric, (predicted_name, measured_name) in PAIRED_METRICS.items():
            predicted = _steps(client, run.info.run_id, predicted_name)
            measured = _steps(client, run.info.run_id, measured_name)
            for step in sorted(predicted.keys() & measured.keys()):
                raw = predicted[step] / undo[metric]
                if raw > 0 and measured[step] > 0:
                    pairs.append(
                        Pair(
                            **common, metric=metric, concurrency=step, predicted=raw, measured=measured[step]
                        )
                    )
    return pairs
