"""Choose each trial's predictor and apply calibration.

`plan_trial` always predicts with the roofline (it is instant and covers everything). Here, for
`planner.predictor` auto or aiconfigurator, every feasible trial that aiconfigurator covers (GPU,
model family, quantization, KV format; see `evaluation.planning.aiconfigurator`) is predicted
again by it, in ONE worker call for the whole plan; the others keep the roofline with a note
saying why. Then, where `enginesweep calibrate` has fitted factors for the trial's hardware,
stack and predictor, the prediction is rescaled and labelled `+calibrated`.
"""

from __future__ import annotations

from collections.abc import Sequence

import enginesweep.evaluation.planning.aiconfigurator as aic
from enginesweep.build_configs.gpus import get_gpu
from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Predictor, Stack
from enginesweep.evaluation.planning.calibration import CalibrationStore
from enginesweep.evaluation.planning.prediction import rescale
from enginesweep.evaluation.planning.records import PlannedTrial


class PredictorError(RuntimeError):
    """`planner.predictor: aiconfigurator` asked for a prediction it cannot give."""


def refine_predictions(
    trials: Sequence[PlannedTrial],
    resolved: ResolvedSpec,
    predictor: Predictor,
    calibrations: CalibrationStore | None,
) -> tuple[list[PlannedTrial], list[str]]:
    """`trials` with aiconfigurator and calibrated predictions where they apply, and plan notes."""
    notes: list[str] = []
    out = list(trials)
    if predictor is not Predictor.ROOFLINE:
        out, notes = _aiconfigurator(out, resolved, required=predictor is Predictor.AICONFIGURATOR)
    if calibrations is not None:
        out = [_calibrated(trial, resolved, calibrations) for trial in out]
    return out, notes


def _aiconfigurator(
    trials: list[PlannedTrial], resolved: ResolvedSpec, *, required: bool
) -> tuple[list[PlannedTrial], list[str]]:
    spec = resolved.spec
    feasible = [t for t in trials if t.feasible]
    if not feasible:
        return trials, []
    unavailable = aic.unavailable_reason()
    if unavailable:
        if required:
            raise PredictorError(f"planner.predictor is aiconfigurator but {unavailable}")
        return [_note(t, f"roofline: {unavailable}") for t in trials], [f"roofline only: {unavailable}"]
    requests, uncovered = [], {}
    for trial in feasible:
        why = aic.coverage_gap(
            resolved.architecture,
            get_gpu(trial.gpu),
            trial.config,
            Stack(trial.stack),
            spec.workload.osl.mean,
        )
        if why:
            uncovered[trial.slug] = why
        else:
            requests.append(aic.request_for(trial, resolved))
    if required and uncovered:
        raise PredictorError(
            "planner.predictor is aiconfigurator but it does not cover: "
            + "; ".join(f"{slug} ({why})" for slug, why in uncovered.items())
        )
    try:
        results = aic.predict_batch(requests) if requests else {}
    except aic.AiconfiguratorError as exc:
        if required:
            raise PredictorError(f"planner.predictor is aiconfigurator but it failed: {exc}") from exc
        return [_note(t, f"roofline: aiconfigurator failed ({exc})") for t in trials], [
            f"roofline only: aiconfigurator failed ({exc})"
        ]
    out = []
    for trial in trials:
        if trial.slug in results:
            got = results[trial.slug]
            if not isinstance(got, str):
                try:
                    trial = trial.model_copy(
                        update={
                            "predicted": aic.to_prediction(
                                got, trial, resolved, usd_per_gpu_hour=resolved.price(get_gpu(trial.gpu))
                            )
                        }
                    )
                except (KeyError, ValueError) as exc:  # an answer we cannot use: say so, keep going
                    got = f"unusable answer ({type(exc).__name__}: {exc})"
                    results[trial.slug] = got
            if isinstance(got, str):  # the worker's own refusal, or an unusable answer
                if required:
                    raise PredictorError(f"aiconfigurator failed on {trial.slug}: {got}")
                trial = _note(trial, f"roofline: aiconfigurator failed ({got})")
        elif trial.slug in uncovered:
            trial = _note(trial, f"roofline: aiconfigurator does not cover {uncovered[trial.slug]}")
        out.append(trial)
    done = sum(1 for r in results.values() if not isinstance(r, str))
    if not done:
        return out, [
            f"aiconfigurator covers none of the {len(feasible)} feasible trial(s): roofline "
            "(each prediction's notes say why)"
        ]
    others = "; the others: roofline, their notes say why" if done < len(feasible) else ""
    return out, [
        f"aiconfigurator predicted {done} of {len(feasible)} feasible trial(s) "
        f"({aic.version_label()}){others}"
    ]


def _note(trial: PlannedTrial, note: str) -> PlannedTrial:
    pred = trial.predicted
    if pred is None:
        return trial
    return trial.model_copy(update={"predicted": pred.model_copy(update={"notes": [*pred.notes, note]})})


def _calibrated(trial: PlannedTrial, resolved: ResolvedSpec, store: CalibrationStore) -> PlannedTrial:
    pred = trial.predicted
    if pred is None:
        return trial
    found = store.lookup(trial.gpu, trial.stack, pred.source, resolved.architecture.name)
    if found is None:
        return trial
    gpu = get_gpu(trial.gpu)
    return trial.model_copy(
        update={
            "predicted": rescale(
                pred,
                found.calibration(),
                sla=resolved.spec.sla,
                osl=resolved.spec.workload.osl.mean,
                gpus=trial.config.world_size,
                usd_per_gpu_hour=resolved.price(gpu),
            )
        }
    )
