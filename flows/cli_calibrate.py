"""`enginesweep calibrate`: the planner's closed loop.

Reads every measured trial of the spec's MLflow experiment, pairs it with the plan's prediction,
prints the error (MAPE) per hardware / stack / runtime version / predictor, fits correction
factors and stores them in `<workspace>/calibration.json`, where later `plan`, `size` and sweeps
find them (their predictions are then labelled `+calibrated`). The fit is also logged to MLflow
as a run of its own. Measurements are only read, never changed.
"""

from __future__ import annotations

from rich.table import Table

from build_configs.loading import SpecError, load_spec
from evaluation.planning.calibration import STORE_NAME, CalibrationStore, GroupFit, fit
from flows.cli_common import ConfigArg, SetOpt, _fail, app, err, out


def fit_table(fits: list[GroupFit]) -> Table:
    """One row per group and metric: pairs, MAPE before and after, the factor."""
    table = Table(title="Predicted vs measured (closed loop)",
                  caption="MAPE = mean |pred - measured| / measured; 'after' is in-sample (optimistic); "
                          "TTFT/ITL against measured p50")
    for column in ("hardware", "stack", "runtime", "predictor", "metric", "trials", "pairs",
                   "MAPE before %", "MAPE after %", "factor"):
        table.add_column(column, justify="right" if column in ("trials", "pairs", "MAPE before %",
                                                               "MAPE after %", "factor") else "left")
    for group in fits:
        for metric in sorted(group.factors):
            table.add_row(group.hardware, group.stack, group.runtime, group.predictor, metric,
                          str(group.trials), str(group.pairs[metric]),
                          f"{group.mape_before_pct[metric]:.1f}", f"{group.mape_after_pct[metric]:.1f}",
                          f"{group.factors[metric]:.3f}")
    return table


@app.command()
def calibrate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Compare predictions with measured trials in MLflow, report the error and fit correction
    factors that later plans use (labelled calibrated)."""
    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    from mlflow.tracking import MlflowClient  # heavy: only here

    from evaluation.tracking_pairs import read_pairs
    from flows.sweep_settings import tracking_uri

    spec = resolved.spec
    uri = tracking_uri(resolved)
    client = MlflowClient(tracking_uri=uri)
    try:
        pairs = read_pairs(client, spec.tracking.experiment)
    except LookupError as exc:
        raise _fail(f"tracking.experiment: {exc}", code=1) from None
    if not pairs:
        raise _fail(f"no measured trial with a prediction in experiment '{spec.tracking.experiment}' "
                    f"at {uri} (run a sweep first)", code=1)
    fits = fit(pairs)
    out.print(fit_table(fits))
    path = spec.workspace / STORE_NAME
    CalibrationStore.load(path).update(fits).save(path)
    run = client.create_run(client.get_experiment_by_name(spec.tracking.experiment).experiment_id,
                            run_name="calibration", tags={"enginesweep.kind": "calibration"})
    for group in fits:
        for metric in group.factors:
            prefix = f"{group.hardware}.{group.stack}.{metric}".replace("/", "_")
            client.log_metric(run.info.run_id, f"calib_mape_before_pct.{prefix}", group.mape_before_pct[metric])
            client.log_metric(run.info.run_id, f"calib_factor.{prefix}", group.factors[metric])
    client.log_text(run.info.run_id, CalibrationStore(groups=fits).model_dump_json(indent=2), STORE_NAME)
    client.set_terminated(run.info.run_id)
    err.print(f"factors saved to {path} (used by later plans; --uncalibrated ignores them)",
              highlight=False)
