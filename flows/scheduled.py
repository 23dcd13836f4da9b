"""The scheduled sweep: one Prefect flow a schedule runs (`enginesweep schedule`, `enginesweep
deploy`), re-running only what changed and watching the champion.

Each run resolves the model revision (to a commit sha; see `flows.schedule_state`) and the
runtime version, and compares them and the spec with what the last settled scheduled run
recorded. Nothing changed and a champion exists: a drift check, `watch.repeats` benchmarks of
the champion alone (`sweep_flow(only=[champion], rebenchmark=True, promote=False)`, one MLflow
parent run each). Otherwise a sweep through the content-addressed cache (unchanged trials are
reused, only new work runs), which promotes only when there is no champion yet. Every sweep of a
run is pinned to the commit resolved at its start. Then the champion watch (`flows.champion_watch`)
judges, records and, under `watch.policy: auto`, promotes a dominating trial. The run settles
(its inputs become the next run's reference) only when its sweeps completed.
Call `configure_prefect` before importing.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from enginesweep.build_configs.loading import ResolvedSpec, load_spec
from enginesweep.evaluation.planning import expand
from enginesweep.evaluation.tracking import SweepTracker
from enginesweep.flows.champion_watch import (
    Champion,
    WatchReport,
    current_champion,
    judge,
    now_iso,
    promote_dominating,
    record_report,
    with_history,
)
from enginesweep.flows.schedule_state import (
    PREFIX,
    ScheduleInputs,
    changes,
    last_settled,
    pinned_overrides,
    resolve_inputs,
    settle,
)
from enginesweep.flows.sweep import SweepOutcome, sweep_flow
from enginesweep.flows.sweep_settings import registered_model_name, tracking_uri


@task(cache_policy=NO_CACHE)
def resolve_inputs_task(resolved: ResolvedSpec) -> ScheduleInputs:
    return resolve_inputs(resolved)


@flow(name="enginesweep-scheduled", flow_run_name="{config}", log_prints=True)
def scheduled_sweep_flow(config: str, overrides: list[str] | None = None) -> WatchReport:
    """One scheduled run of the spec `config` (see the module docstring); returns what it did
    and the watch's verdict, also recorded in MLflow."""
    overrides = list(overrides or [])
    resolved = load_spec(config, overrides)
    spec = resolved.spec
    log = get_run_logger().info
    inputs = resolve_inputs_task(resolved)
    log(f"model {inputs.revision} is {inputs.revision_sha}; runtime {inputs.runtime_version}")
    tracker = SweepTracker(
        tracking_uri(resolved), spec.tracking.experiment, artifact_root=spec.workspace.resolve() / "mlruns"
    )
    champion = current_champion(tracker.client, registered_model_name(resolved), spec.registry.alias)
    changed = changes(last_settled(tracker, spec.name), inputs)
    if champion is not None and champion.slug not in {p.slug for p in expand(resolved).to_run}:
        changed.append(f"the champion {champion.slug} is not among the trials this spec runs")
    pinned = [*overrides, *pinned_overrides(resolved, inputs)]
    outcomes: list[SweepOutcome] = []
    if champion is not None and not changed:
        mode = "drift-check"
        log(
            f"nothing changed since the last scheduled run: drift check, the champion "
            f"{champion.slug} (version {champion.version}) benchmarked {spec.watch.repeats} time(s)"
        )
        for repeat in range(1, spec.watch.repeats + 1):
            outcomes.append(sweep_flow(config, pinned, rebenchmark=True, only=[champion.slug], promote=False))
            tracker.client.set_tag(
                outcomes[-1].parent_run_id, PREFIX + "repeat", f"{repeat}/{spec.watch.repeats}"
            )
    else:
        mode = "sweep"
        log(f"changed: {'; '.join(changed)}: sweeping (unchanged trials are reused)")
        outcomes.append(sweep_flow(config, pinned, promote=champion is None))
    for outcome in outcomes:
        tracker.client.set_tag(outcome.parent_run_id, PREFIX + "mode", mode)
        tracker.client.set_tag(outcome.parent_run_id, PREFIX + "flow_run", str(flow_run.id))
    report = _watch(resolved, tracker, champion, outcomes, mode, inputs, changed)
    record_report(tracker.client, report, champion)
    log(
        f"watch: {report.verdict.summary if report.verdict else 'no champion before this run'}; "
        f"action: {report.action}"
    )
    if all(outcome.status == "complete" for outcome in outcomes):
        settle(tracker, outcomes[-1].parent_run_id, inputs)
    else:
        log("a trial failed: this run is not settled, the next one compares with the last settled run again")
    return report


def _watch(
    resolved: ResolvedSpec,
    tracker: SweepTracker,
    champion: Champion | None,
    outcomes: list[SweepOutcome],
    mode: str,
    inputs: ScheduleInputs,
    changed: list[str],
) -> WatchReport:
    """The verdict and the action the policy takes on it."""
    spec = resolved.spec
    last = outcomes[-1]
    report = WatchReport(
        sweep=spec.name,
        mode=mode,
        inputs=inputs,
        changes=changed,
        parent_run_ids=[o.parent_run_id for o in outcomes],
        policy=spec.watch.policy,
        champion=champion.slug if champion else None,
        champion_version=champion.version if champion else None,
        verdict=None,
        action="",
        checked_at=now_iso(),
    )
    if champion is None:
        action = (
            f"no champion before this run: {last.selection.champion} promoted as version "
            f"{last.promoted_version}"
            if last.promoted_version
            else f"no champion before this run, and none now: {last.selection.champion_reason}"
        )
        return report.model_copy(update={"action": action, "promoted_version": last.promoted_version})
    records = [record for outcome in outcomes for record in outcome.records]
    runs = {slug: run for outcome in outcomes for slug, run in outcome.trial_runs.items()}
    this_run = {run for outcome in outcomes for run in outcome.trial_runs.values()}
    champion = with_history(tracker.client, tracker.experiment_id, champion, exclude=this_run)
    verdict = judge(
        champion,
        records,
        [row.slug for row in last.selection.rows],
        resolved,
        drift_check=mode == "drift-check",
    )
    promoted = None
    if verdict.dominated_by and spec.watch.policy == "auto":
        promoted = promote_dominating(tracker.client, resolved, champion, verdict, records, runs)
        action = f"promoted {verdict.dominated_by} as version {promoted} (policy auto)"
    elif verdict.status == "unchecked":
        action = f"none: the champion was not checked ({verdict.unchecked_reason})"
    elif verdict.status != "ok":
        action = f"flagged only (policy {spec.watch.policy}): {verdict.status}"
    else:
        action = "none: the champion holds"
    return report.model_copy(update={"verdict": verdict, "action": action, "promoted_version": promoted})
