"""`enginesweep calibrate`: the planner's closed loop.

Reads every measured trial of the spec's MLflow experiment, pairs it with the plan's prediction,
prints the error (MAPE) per hardware / stack / runtime version / predictor / model, fits correction
factors and stores them in `<workspace>/calibration.json`, where later `plan`, `size` and sweeps
find them (their predictions are then labelled `+calibrated`). The fit is also logged to MLflow
as a run of its own. Measurements are only read, never changed.
"""

from __future__ import annotations

import re

from rich.table import Table

from enginesweep.build_configs.loading import SpecError, load_spec
from enginesweep.evaluation.planning.calibration import MIN_PAIRS, STORE_NAME, CalibrationStore, GroupFit, fit
from enginesweep.flows.cli_common import ConfigArg, SetOpt, _fail, app, err, out


def fit_table(fits: list[GroupFit]) -> Table:
    """One row per group and metric: pairs, MAPE before and after, the factor."""
    table = Table(
        title="Predicted vs measured (closed loop)",
        caption=f"MAPE = mean |pred - measured| / measured; 'after' is in-sample (optimistic); "
        f"TTFT/ITL against the measured p99 (what the SLA judges); no factor below "
        f"{MIN_PAIRS} pairs, nor one that does not lower the error",
    )
    numeric = ("trials", "pairs", "MAPE before %", "MAPE after %", "factor")
    for column in ("hardware", "stack", "runtime", "predictor", "model", "workloads", "metric", *numeric):
        table.add_column(column, justify="right" if column in numeric else "left", overflow="fold")
    for group in fits:
        for metric in sorted(group.pairs):
            fitted = metric in group.factors
            table.add_row(
                group.hardware,
                group.stack,
                group.runtime,
                group.predictor,
                group.model,
                ", ".join(group.workloads),
                metric,
                str(group.trials),
                str(group.pairs[metric]),
                f"{group.mape_before_pct[metric]:.1f}",
                f"{group.mape_after_pct[metric]:.1f}" if fitted else "-",
                f"{group.factors[metric]:.3f}"
                if fitted
                else "too few pairs"
                if group.pairs[metric] < MIN_PAIRS
                else "no gain: not kept",
            )
    return table


def _metric_name(*parts: str) -> str:
    """An MLflow metric name (letters, digits, '_', '-', '.', '/', ' ') from free-form parts."""
    return ".".join(re.sub(r"[^A-Za-z0-9_./ -]", "_", part) for part in parts)


@app.command()
def calibrate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Compare predictions with measured trials in MLflow, report the error and fit correction
    factors that later plans use (labelled calibrated)."""
    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    from enginesweep.evaluation.tracking import open_client  # heavy (MLflow): only here
    from enginesweep.evaluation.tracking_pairs import read_pairs
    from enginesweep.flows.sweep_settings import tracking_uri

    spec = resolved.spec
    uri = tracking_uri(resolved)
    client = open_client(uri)
    try:
        pairs = read_pairs(client, spec.tracking.experiment)
    except LookupError as exc:
        raise _fail(f"tracking.experiment: {exc}", code=1) from None
    if not pairs:
        raise _fail(
            f"no measured trial with a prediction in experiment '{spec.tracking.experiment}' "
            f"at {uri} (run a sweep first)",
            code=1,
        )
    fits = fit(pairs)
    out.print(fit_table(fits))
    path = spec.workspace / STORE_NAME
    CalibrationStore.load(path).update([f for f in fits if f.factors]).save(path)
    run = client.create_run(
        client.get_experiment_by_name(spec.tracking.experiment).experiment_id,
        run_name="calibration",
        tags={"enginesweep.kind": "calibration"},
    )
    for group in fits:
        key = (group.hardware, group.stack, group.runtime, group.predictor, group.model)
        for metric in group.pairs:
            client.log_metric(
                run.info.run_id,
                _metric_name("calib_mape_before_pct", *key, metric),
                group.mape_before_pct[metric],
            )
            client.log_metric(run.info.run_id, _metric_name("calib_pairs", *key, metric), group.pairs[metric])
        for metric, factor in group.factors.items():
            client.log_metric(run.info.run_id, _metric_name("calib_factor", *key, metric), factor)
            client.log_metric(
                run.info.run_id,
                _metric_name("calib_mape_after_pct", *key, metric),
                group.mape_after_pct[metric],
            )
    client.log_text(run.info.run_id, CalibrationStore(groups=fits).model_dump_json(indent=2), STORE_NAME)
    client.set_terminated(run.info.run_id)
    err.print(f"factors saved to {path} (used by later plans; --uncalibrated ignores them)", highlight=False)
