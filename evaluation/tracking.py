"""MLflow tracking of a sweep: one parent run per sweep, one nested child run per trial.

Everything goes through `MlflowClient` with explicit run ids (not `mlflow.start_run`'s
thread-local stack), so trials may run in Prefect worker threads. Names keep provenance apart:

* measured per-level metrics are `by_concurrency/<name>` (`by_concurrency/ttft_p99_ms`,
  `.../output_tok_s`, `.../goodput_req_s`, ...), logged with `step=concurrency` so MLflow's
  charts draw latency/throughput curves; the run's `provenance.measured_on` tag says on what
  hardware (`cpu` on the reference stack);
* predictions carry `pred_` (`pred_ttft_ms`, `pred_itl_ms`, ...) and the tag
  `provenance.predicted_by` (`predicted:roofline`);
* where both exist for a concurrency level, `pred_error_itl_pct` / `pred_error_ttft_pct` /
  `pred_error_output_tok_s_pct` = (predicted - measured) / measured * 100 (TTFT and ITL against
  the measured p50);
* a calibrated prediction says so: tag and param `predicted_by` end in `+calibrated`, and params
  `calibration.factor.<metric>` hold the factors applied (`enginesweep calibrate` divides them out);
* the headline metrics of `evaluation.selection.headline` (`goodput_rps_at_sla`, `ttft_p99_ms`,
  `itl_p99_ms`, `output_tok_s_per_gpu`, `usd_per_1m_tokens`, `accuracy_delta`, `engine_size_gb`):
  one value each, at the operating point: the size with the trial, the rest once selection has
  judged every trial (`log_headline_metrics`); tags `provenance` (`cpu-measured` / `gpu-measured`), `stack`,
  `hardware` and `status` on every trial run.

Params are flat strings (quant, kv_cache, tp, pp, knobs, stack, versions, hardware). Artifacts:
the manifest, the trial record, aiperf's per-level exports; the spec, plan and selection tables on
the parent, and the sweep report under `report/` (`evaluation.reports.sweep_report`). A failed
trial is a FAILED child run with the reason in a tag and its error log.
"""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enginesweep.evaluation.provenance import provenance_tag
from enginesweep.evaluation.records import ConcurrencyResult, TrialRecord
from enginesweep.evaluation.selection.headline import engine_size_gb, selection_headlines

if TYPE_CHECKING:
    from enginesweep.build_configs.loading import ResolvedSpec
    from enginesweep.evaluation.planning import Plan

CURVE = "by_concurrency/"
"""Prefix of the metrics logged once per concurrency level (step = concurrency): MLflow's charts
draw them as curves, grouped under this name. The unprefixed headline names hold one value, at
the operating point, so the runs table and compare view line up numbers taken at the same point."""
RATE_CURVE = "by_request_rate/"
"""Open-loop levels: MLflow steps are integers, so the step is the rate in milli-requests/s."""
REPLAY_CURVE = "replay/"


def curve_key(level: ConcurrencyResult) -> tuple[str, int]:
    """The metric prefix and step one measured level is logged at: by concurrency (step = the
    concurrency), by request rate (step = round(req/s x 1000)), or the replay (step 0)."""
    if level.pacing == "request_rate":
        return RATE_CURVE, round((level.target_request_rate or 0.0) * 1000)
    if level.pacing == "schedule":
        return REPLAY_CURVE, 0
    return CURVE, level.concurrency


_LEVEL_METRICS = {
    "ttft_p50_ms": lambda level: level.ttft_ms.p50,
    "ttft_p90_ms": lambda level: level.ttft_ms.p90,
    "ttft_p99_ms": lambda level: level.ttft_ms.p99,
    "itl_p50_ms": lambda level: level.itl_ms.p50,
    "itl_p99_ms": lambda level: level.itl_ms.p99,
    "e2e_p50_ms": lambda level: level.e2e_ms.p50,
    "e2e_p99_ms": lambda level: level.e2e_ms.p99,
    "output_tok_s": lambda level: level.output_tok_s,
    "output_tok_s_per_gpu": lambda level: level.output_tok_s_per_gpu,
    "output_tok_s_per_user": lambda level: level.output_tok_s_per_user,
    "request_rate": lambda level: level.request_rate,
    "goodput_req_s": lambda level: level.goodput,
    "sla_attainment": lambda level: level.sla_attainment,
    "error_count": lambda level: level.error_count,
}


def store_init_lock(tracking_uri: str) -> AbstractContextManager[None]:
    """An exclusive lock beside a sqlite store (`<db>.lock`) for the first use of it, which
    creates or migrates its schema; nothing for a tracking server (it serializes itself)."""
    if not tracking_uri.startswith("sqlite:///"):
        return nullcontext()
    from enginesweep.engines.locks import key_lock

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    lock = db.with_name(db.name + ".lock")
    if not os.access(lock.parent if lock.parent.exists() else lock.parent.parent, os.W_OK):
        return nullcontext()  # a read-only store (reading someone's results): nothing to migrate
    return key_lock(lock, f"the MLflow store {db}", log=lambda _: None)


def open_client(tracking_uri: str):
    """An MlflowClient for `tracking_uri` (tracking and registry). Its construction creates or
    migrates a sqlite store's schema: done under `store_init_lock`, because two processes
    doing it at once on a new store fail half-way (two sweeps started together)."""
    from mlflow.tracking import MlflowClient  # heavy; only when tracking

    with store_init_lock(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_tracking_server(tracking_uri: str) -> bool:
    """True for an MLflow tracking server (http/https), False for a store the client opens
    itself (sqlite, PostgreSQL and other databases, file)."""
    return tracking_uri.split(":", 1)[0].lower() in ("http", "https")


class SweepTracker:
    """Writes one sweep into an MLflow experiment.

    `artifact_root` is where a new experiment keeps its artifacts when the client opens the
    store itself (sqlite or a database: `<workspace>/mlruns`). A tracking server chooses for
    itself (`mlflow server --artifacts-destination s3://...`): there `artifact_root` is not used."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.client = open_client(tracking_uri)
        # Two sweeps starting at once would both create the experiment.
        with store_init_lock(tracking_uri):
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                # A file:// location on a server's experiment would have every client write
                # into a folder of its own machine, bypassing the server's shared store.
                local = artifact_root is not None and not is_tracking_server(tracking_uri)
                location = artifact_root.resolve().as_uri() if local else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    # -- parent run --------------------------------------------------------------------------
    def start_sweep(
        self,
        sweep: str,
        *,
        spec_yaml: str,
        plan_json: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create the parent run with the spec and the plan as artifacts; returns its id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep,
            tags={"enginesweep.kind": "sweep", "enginesweep.sweep": sweep, **(tags or {})},
        )
        run_id = run.info.run_id
        for key, value in params.items():
            self.client.log_param(run_id, key, str(value))
        self.client.log_text(run_id, spec_yaml, "spec.yaml")
        self.client.log_text(run_id, plan_json, "plan.json")
        return run_id

    def unfinished_sweeps(self, sweep: str) -> list[Any]:
        """Parent runs of `sweep` still marked RUNNING (live, or left by a killed process),
        newest first."""
        return self.client.search_runs(
            [self.experiment_id],
            f"tags.`enginesweep.kind` = 'sweep' AND tags.`enginesweep.sweep` = '{sweep}' "
            "AND attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
        )

    def trial_runs_of(self, parent_id: str) -> dict[str, list[Any]]:
        """slug -> the child runs a parent run already holds (a resumed sweep's)."""
        found: dict[str, list[Any]] = {}
        for run in self.client.search_runs(
            [self.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
        ):
            found.setdefault(run.data.tags.get("enginesweep.slug", run.info.run_name), []).append(run)
        return found

    def finish_sweep(self, run_id: str, *, status: str, tables: dict[str, str], tags: dict[str, str]) -> None:
        """Attach the final tables (name -> text) and tags, and close the parent run."""
        for name, text in tables.items():
            self.client.log_text(run_id, text, name)
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status=status)

    def log_accuracy_gate(self, trial_runs: dict[str, str], rows: list) -> None:
        """The selection's accuracy verdicts on each trial's run (after the sweep chose): the
        worst drop as `accuracy_drop`, `accuracy_gate_passed` 1/0, and one tag per metric with
        the verdict in words (`accuracy.verdict.<metric>`)."""
        for row in rows:
            run_id = trial_runs.get(row.slug)
            if run_id is None or not row.accuracy:
                continue
            passed = all(check.passed for check in row.accuracy)
            self.client.log_metric(run_id, "accuracy_gate_passed", 1.0 if passed else 0.0)
            if row.accuracy_drop is not None:
                self.client.log_metric(run_id, "accuracy_drop", float(row.accuracy_drop))
            self.client.set_tag(
                run_id,
                "enginesweep.accuracy_gate",
                f"{'pass' if passed else 'reject'} ({row.accuracy[0].gate})",
            )
            for check in row.accuracy:
                self.client.set_tag(run_id, f"accuracy.verdict.{check.metric}", check.verdict[:5000])

    def log_headline_metrics(self, trial_runs: dict[str, str], rows: list) -> None:
        """The headline numbers selection derives (`evaluation.selection.headline`) on each
        trial's run: `goodput_rps_at_sla`, `usd_per_1m_tokens`, `accuracy_delta` and the
        `operating_concurrency` they were taken at, where the trial has them."""
        for row in rows:
            run_id = trial_runs.get(row.slug)
            if run_id is None:
                continue
            for name, value in selection_headlines(row).items():
                self.client.log_metric(run_id, name, value)

    # -- child runs --------------------------------------------------------------------------
    def log_trial(self, parent_id: str, record: TrialRecord, trial_dir: Path) -> str:
        """One nested run for one trial (FINISHED or FAILED); returns its id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=record.slug,
            tags={
                "mlflow.parentRunId": parent_id,
                "enginesweep.kind": "trial",
                "enginesweep.slug": record.slug,
                "enginesweep.sweep": record.sweep,
                "enginesweep.status": record.status,
                "provenance.measured_on": record.hardware,
                "provenance.predicted_by": record.predicted.source if record.predicted else "none",
                "enginesweep.executed_stages": ",".join(record.executed_stages) or "none (reused)",
                # Short names the runs table filters on (the dotted ones above stay for readers).
                "provenance": provenance_tag(record.hardware),
                "stack": record.stack,
                "hardware": record.hardware,
                "status": record.status,
            },
        )
        run_id = run.info.run_id
        self._params(run_id, record)
        self._metrics(run_id, record)
        self._artifacts(run_id, record, trial_dir)
        if record.status != "ok":
            self.client.set_tag(run_id, "enginesweep.error", (record.error or "")[:5000])
        self.client.set_terminated(run_id, status="FINISHED" if record.status == "ok" else "FAILED")
        return run_id

    def log_trial_once(
        self, parent_id: str, record: TrialRecord, trial_dir: Path, existing: list[Any]
    ) -> str:
        """`log_trial`, for a parent run that may already hold runs of this trial (a sweep
        resumed after its process was killed): a finished run of a trial that was reused
        unchanged is kept; any other (failed, or cut off while it was being written) is deleted
        and the trial logged again, so the parent holds each trial exactly once."""
        if (
            record.status == "ok"
            and not record.executed_stages
            and len(existing) == 1
            and existing[0].info.status == "FINISHED"
        ):
            return existing[0].info.run_id
        for run in existing:
            self.client.delete_run(run.info.run_id)
        return self.log_trial(parent_id, record, trial_dir)

    def _params(self, run_id: str, record: TrialRecord) -> None:
        params = {**record.config.model_dump(mode="json"), "stack": record.stack, "hardware": record.hardware}
        if record.model:
            params["model"] = record.model
        if record.benchmark:
            params["workload"] = f"{record.benchmark.isl}/{record.benchmark.osl}"
        if record.content_hash:
            params["content_hash"] = record.content_hash
        if record.bundle_dir:
            params["bundle_dir"] = record.bundle_dir  # what `enginesweep promote RUN_ID` registers
        calibration = record.predicted.calibration if record.predicted else None
        if calibration:  # so the closed loop can divide a calibrated prediction back to raw
            params.update({f"calibration.factor.{k}": f"{v:.6g}" for k, v in calibration.factors.items()})
            params["calibration.key"] = calibration.key
        if record.predicted:
            params["predicted_by"] = record.predicted.source
        manifest = _manifest(record)
        if manifest:
            params.update({f"version.{k}": v for k, v in manifest.get("versions", {}).items()})
        for key, value in params.items():
            self.client.log_param(run_id, key, str(value))

    def _metrics(self, run_id: str, record: TrialRecord) -> None:
        log = self.client.log_metric
        if record.benchmark:
            for level in record.benchmark.levels:
                prefix, step = curve_key(level)
                for name, read in _LEVEL_METRICS.items():
                    value = read(level)
                    if value is not None:
                        log(run_id, prefix + name, float(value), step=step)
        predicted = record.predicted
        measured = {
            lvl.concurrency: lvl
            for lvl in (record.benchmark.levels if record.benchmark else [])
            if lvl.pacing == "concurrency"  # the planner predicts closed-loop levels only
        }
        for level in predicted.per_concurrency if predicted else []:
            step = level.concurrency
            log(run_id, "pred_ttft_ms", level.ttft_ms, step=step)
            log(run_id, "pred_itl_ms", level.itl_ms, step=step)
            log(run_id, "pred_output_tok_s", level.output_tok_s, step=step)
            if step in measured:
                got = measured[step]
                log(run_id, "pred_error_ttft_pct", _error_pct(level.ttft_ms, got.ttft_ms.p50), step=step)
                log(run_id, "pred_error_itl_pct", _error_pct(level.itl_ms, got.itl_ms.p50), step=step)
                log(
                    run_id,
                    "pred_error_output_tok_s_pct",
                    _error_pct(level.output_tok_s, got.output_tok_s),
                    step=step,
                )
        if predicted:
            log(run_id, "pred_saturated_output_tok_s", predicted.output_tok_s)
            log(run_id, "pred_usd_per_1m_output_tokens", predicted.usd_per_1m_output_tokens)
        if record.accuracy:
            if record.accuracy.perplexity is not None:
                log(run_id, "perplexity", record.accuracy.perplexity)
                log(run_id, "top1_accuracy", record.accuracy.top1_accuracy)
            for task in record.accuracy.tasks:
                log(run_id, f"{task.task}.{task.metric}", task.score)
            for task, reason in record.accuracy.skipped_tasks.items():
                # Not measured, and said so where the scores are read (served engines: no
                # log-likelihoods for multiple-choice tasks).
                self.client.set_tag(run_id, f"accuracy.skipped.{task}", reason[:5000])
        for delta in record.accuracy_deltas:
            log(run_id, f"{delta.metric}_delta", delta.delta)
            log(run_id, f"{delta.metric}_delta_ci_low", delta.ci_low)
            log(run_id, f"{delta.metric}_delta_ci_high", delta.ci_high)
            if delta.p_value is not None:
                log(run_id, f"{delta.metric}_mcnemar_p", delta.p_value)
        size = engine_size_gb(record)
        if size is not None:  # a headline metric (evaluation.selection.headline)
            log(run_id, "engine_size_gb", size)
        for name, value in (
            ("engine_bytes", record.engine_bytes),
            ("build_seconds", record.build_seconds),
            ("quantize_seconds", record.quantize_seconds),
        ):
            if value is not None:
                log(run_id, name, float(value))
        for name, value in (record.server_metrics or {}).items():
            log(run_id, name, float(value))
        if record.host_load:
            log(run_id, "host_load_before_benchmark", record.host_load[0])
            log(run_id, "host_load_after_benchmark", record.host_load[1])
        for stage, seconds in record.stage_seconds.items():
            log(run_id, f"stage_seconds.{stage.replace('+', '_')}", seconds)

    def _artifacts(self, run_id: str, record: TrialRecord, trial_dir: Path) -> None:
        # The record in memory, not trial_dir/record.json: a reused trial's file is not
        # rewritten, while its record here was judged again under this sweep's SLA.
        self.client.log_text(run_id, record.model_dump_json(indent=2) + "\n", "record.json")
        manifest_path = Path(record.bundle_dir or trial_dir / "missing") / "manifest.json"
        if manifest_path.exists():
            self.client.log_artifact(run_id, str(manifest_path))
        for export in sorted((trial_dir / "benchmark").glob("**/profile_export_aiperf.json")):
            folder = export.parent.relative_to(trial_dir / "benchmark").as_posix()
            self.client.log_artifact(run_id, str(export), f"aiperf/{folder}".rstrip("/."))
        for log_file in (
            "error.log",
            "quantize.log",
            "build.log",
            "repository.log",
            "serve.log",
            "triton_repo.log",
            "server/server.log",
            "benchmark/aiperf.log",
        ):
            if (trial_dir / log_file).exists() and record.status != "ok":
                self.client.log_artifact(run_id, str(trial_dir / log_file), "logs")


def log_plan(tracking_uri: str, resolved: ResolvedSpec, plan: Plan) -> str:
    """Log a plan (`enginesweep plan --log`) as a run of its own in the spec's experiment: counts
    as params, the plan JSON and its table as artifacts. Returns the run id."""
    from enginesweep.evaluation.reports.plan_tables import plan_report_text

    spec = resolved.spec
    tracker = SweepTracker(
        tracking_uri, spec.tracking.experiment, artifact_root=spec.workspace.resolve() / "mlruns"
    )
    run = tracker.client.create_run(
        tracker.experiment_id,
        run_name=f"plan-{plan.sweep}",
        tags={"enginesweep.kind": "plan", "enginesweep.sweep": plan.sweep},
    )
    run_id = run.info.run_id
    params = {
        "gpus": ",".join(plan.gpus),
        "trials": len(plan.trials),
        "feasible": len(plan.feasible),
        "rejected": len(plan.rejected),
        "pruned": len(plan.pruned),
        "top_k": plan.top_k,
        "kept": len([t for t in plan.feasible if t.pruned is None]),
        "to_run": len(plan.to_run),
        "sweep_gpu": plan.sweep_gpu,
        "target_request_rate": plan.target_request_rate,
    }
    for key, value in params.items():
        tracker.client.log_param(run_id, key, str(value))
    tracker.client.log_text(run_id, plan.model_dump_json(indent=2), "plan.json")
    tracker.client.log_text(run_id, plan_report_text(plan, spec.sla.objective), "plan.txt")
    tracker.client.set_terminated(run_id, status="FINISHED")
    return run_id


def _error_pct(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured * 100 if measured else float("nan")


def _manifest(record: TrialRecord) -> dict[str, Any] | None:
    if not record.bundle_dir:
        return None
    path = Path(record.bundle_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None
