"""The champion watch around a scheduled run: who the champion is, what this run measured of it
and of new trials, the verdict, and where it is recorded.

The champion is the registered version the spec's alias points to. Its reference is the
`record.json` logged on that version's run (the trial folder's copy is overwritten by later
benchmarks): the promotion-time measurement alone sets the reference values. Its earlier
re-measurements (trial runs of the same slug and content hash that benchmarked, oldest first, at
most `HISTORY`) only widen the noise estimate: measurements taken on other days carry the noise
between runs, which the repeats of one check cannot show, but a regression they measured must not
become the baseline (it would clear itself one run later). A record of this run counts as a new
measurement only when it benchmarked (`serve+benchmark` among its executed stages) on the
hardware the sweep runs on: of the champion when it is the champion's engine (same slug and
content hash), else of a candidate. The verdict goes on the scheduled run's MLflow parent run
(tags `enginesweep.watch.*` and `verdict.json`) and, unless the champion went unchecked, on the
champion's registered version (tags; an unchecked run only adds `enginesweep.watch.unchecked_*`
there, so the last real verdict stays); under `watch.policy: auto` a dominating candidate is
promoted, tagged with why.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.engines.registry import promote
from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.selection.choose import MixedHardwareError, common_hardware
from enginesweep.evaluation.selection.watch import Samples, Verdict, watch_verdict
from enginesweep.evaluation.selection.watch_metrics import candidate_samples, champion_samples
from enginesweep.flows.schedule_state import ScheduleInputs

TAG = "enginesweep.watch."
HISTORY = 20


class Champion(BaseModel):
    """The registered version the alias points to, and its reference record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    version: str
    run_id: str
    slug: str
    content_hash: str
    record: TrialRecord
    history: list[TrialRecord] = []
    """Earlier re-measurements of this engine, oldest first: the noise only (see the module
    docstring)."""

    @property
    def reference(self) -> list[TrialRecord]:
        """The registered measurement (the reference values), then the history (the spread)."""
        return [self.record, *self.history]


class WatchReport(BaseModel):
    """What one scheduled run did and concluded (`verdict.json` on its parent run)."""

    model_config = ConfigDict(extra="forbid")

    sweep: str
    mode: str  # sweep | drift-check
    inputs: ScheduleInputs
    changes: list[str]
    parent_run_ids: list[str]
    policy: str
    champion: str | None
    champion_version: str | None
    verdict: Verdict | None
    action: str
    promoted_version: str | None = None
    checked_at: str


def current_champion(client, model_name: str, alias: str) -> Champion | None:
    """The champion, or None when the alias points nowhere yet (no scheduled run promoted one)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(exc).lower():
            raise
        return None
    try:
        record = _record_of(client, version.run_id)
    except (MlflowException, OSError, ValueError) as exc:  # ValueError: pydantic's too
        raise RuntimeError(
            f"{model_name} version {version.version} (alias '{alias}'): the record.json of its run "
            f"{version.run_id} cannot be read ({str(exc)[:300]}), so the watch has no reference; "
            "point the alias at a version registered from a sweep's trial run (they log one)"
        ) from exc
    return Champion(
        model_name=model_name,
        version=str(version.version),
        run_id=version.run_id,
        slug=version.tags.get("slug", record.slug),
        content_hash=version.tags.get("content_hash", record.content_hash or ""),
        record=record,
    )


def _record_of(client, run_id: str) -> TrialRecord:
    """The `record.json` logged on a trial run."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file
    with tempfile.TemporaryDirectory(prefix="enginesweep-watch-") as scratch:
        return TrialRecord.load(Path(client.download_artifacts(run_id, "record.json", scratch)))


def with_history(client, experiment_id: str, champion: Champion, exclude: set[str]) -> Champion:
    """`champion` with its earlier re-measurements (trial runs of its slug and engine that
    benchmarked, but its own run and those in `exclude`: this run's), oldest first."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`enginesweep.slug` = '{champion.slug}' AND params.content_hash = "
        f"'{champion.content_hash}' AND tags.`enginesweep.executed_stages` LIKE '%serve+benchmark%' "
        "AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=HISTORY + len(exclude) + 1,
    )
    history: list[TrialRecord] = []
    for run in runs:
        if run.info.run_id in exclude | {champion.run_id} or len(history) == HISTORY:
            continue
        record = _record_of(client, run.info.run_id)
        # The registered run may hold a reused record: its measurement is already the reference.
        if record.benchmark != champion.record.benchmark:
            history.append(record)
    return champion.model_copy(update={"history": history})


def _measured(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.status == "ok" and "serve+benchmark" in r.executed_stages]


def _measured_on(record: TrialRecord, hardware: str) -> bool:
    """Whether the record and its benchmark and accuracy results were all measured on `hardware`."""
    try:
        common_hardware([record], expected=hardware)
    except MixedHardwareError:
        return False
    return True


def _not_measured(champion: Champion, records: Sequence[TrialRecord]) -> str:
    """Why this run has no measurement of the champion's engine (a drift check's reason)."""
    failed = [r for r in records if r.slug == champion.slug and r.status != "ok"]
    if failed:
        return f"the re-benchmark of the champion {champion.slug} failed: " + "; ".join(
            (r.error or "no reason recorded")[:300] for r in failed
        )
    return (
        f"no record of this run measured the champion's engine ({champion.slug}, content hash "
        f"{champion.content_hash[:12]})"
    )


def _comparable(record: TrialRecord, workload: tuple[int, int], hardware: str) -> bool:
    """Whether `record` benchmarked this spec's workload (ISL/OSL) on `hardware`."""
    return (
        record.benchmark is not None
        and (record.benchmark.isl, record.benchmark.osl) == workload
        and _measured_on(record, hardware)
    )


def _incomparable_verdict(
    champion: Champion, workload: tuple[int, int], hardware: str, noise_k: float
) -> Verdict:
    """The `unchecked` verdict when the champion's own measurement cannot be compared."""
    measured = (
        (champion.record.benchmark.isl, champion.record.benchmark.osl) if champion.record.benchmark else None
    )
    why = (
        f"the champion was measured on {champion.record.hardware}, this sweep runs on {hardware}"
        if measured == workload
        else f"the champion was measured under another workload than ISL/OSL {workload[0]}/{workload[1]}"
    )
    return watch_verdict(
        champion.slug,
        [],
        [],
        noise_k=noise_k,
        notes=[f"{why}: nothing compared; promote a trial of this workload and hardware to watch it"],
        unchecked=f"{why}: its numbers are not comparable",
    )


def _comparable_history(
    champion: Champion, workload: tuple[int, int], hardware: str, notes: list[str]
) -> Champion:
    """`champion` with only the re-measurements comparable to this run (a note says how many left)."""
    history = [r for r in champion.history if _comparable(r, workload, hardware)]
    if len(history) < len(champion.history):
        notes.append(
            f"{len(champion.history) - len(history)} earlier re-measurement(s) of the "
            "champion left out: another workload or hardware"
        )
    return champion.model_copy(update={"history": history})


def _split_measured(
    champion: Champion,
    records: Sequence[TrialRecord],
    ranking: Sequence[str],
    hardware: str,
    notes: list[str],
) -> tuple[list[TrialRecord], dict[str, list[TrialRecord]]]:
    """This run's measurements on `hardware`: the champion engine's, and the others by slug in rank order."""
    measured = _measured(records)
    elsewhere = sorted({f"{r.slug} ({r.hardware})" for r in measured if not _measured_on(r, hardware)})
    if elsewhere:
        notes.append(f"left out, not measured on {hardware}: {', '.join(elsewhere)}")
    measured = [r for r in measured if _measured_on(r, hardware)]
    same = [r for r in measured if r.slug == champion.slug and r.content_hash == champion.content_hash]
    others: dict[str, list[TrialRecord]] = {}
    rank = {slug: i for i, slug in enumerate(ranking)}
    for record in sorted(
        (r for r in measured if r not in same), key=lambda r: (rank.get(r.slug, len(ranking)), r.slug)
    ):
        others.setdefault(record.slug, []).append(record)
    if champion.slug in others:
        built = (others[champion.slug][0].content_hash or "?")[:12]
        notes.append(
            f"{champion.slug} now builds another engine than the champion's (content hash "
            f"{champion.content_hash[:12]} -> {built}): it was measured as a candidate; "
            "the champion itself was not"
        )
    return same, others


def _candidates(
    champion: Champion,
    others: dict[str, list[TrialRecord]],
    resolved: ResolvedSpec,
    notes: list[str],
) -> list[tuple[str, list[Samples]]]:
    """The candidates' samples that meet the SLA, by slug; a note for each that does not."""
    spec = resolved.spec
    candidates: list[tuple[str, list[Samples]]] = []
    for slug, group in others.items():
        found = candidate_samples(champion.reference, group, spec.sla, resolved.usd_per_gpu_hour, spec.watch)
        if found:
            candidates.append((slug, found))
        else:
            notes.append(f"{slug}: does not meet the SLA, so it cannot dominate")
    return candidates


def judge(
    champion: Champion,
    records: Sequence[TrialRecord],
    ranking: Sequence[str],
    resolved: ResolvedSpec,
    *,
    drift_check: bool = False,
) -> Verdict:
    """The verdict on `champion` from this run's `records` (every sweep of the run, in order);
    `ranking`: the slugs in the selection's order, so the best-ranked dominating trial is named.
    `drift_check`: the run was meant to re-measure the champion, so a run that did not (a failed
    re-benchmark, another engine built) is `unchecked`, never `ok`. Only numbers of this spec's
    workload (ISL/OSL) and of the hardware the sweep runs on are compared: others are left out,
    and the verdict's notes say which."""
    spec = resolved.spec
    hardware = resolved.hardware
    workload = (spec.workload.isl.mean, spec.workload.osl.mean)
    if not _comparable(champion.record, workload, hardware):
        return _incomparable_verdict(champion, workload, hardware, spec.watch.noise_k)
    # The notes keep the order the checks run in: history, hardware, engine, reference, SLA.
    notes: list[str] = []
    champion = _comparable_history(champion, workload, hardware, notes)
    same, others = _split_measured(champion, records, ranking, hardware, notes)
    samples, misses, more = (
        champion_samples(champion.reference, same, spec.sla, resolved.usd_per_gpu_hour, spec.watch)
        if same
        else ([], [], [])
    )
    if same and not champion.history:
        notes.append(
            "the reference is the champion's one measurement at its sweep: the noise "
            "between runs is not known yet (later checks add theirs to the spread)"
        )
    candidates = _candidates(champion, others, resolved, notes)
    unchecked = _not_measured(champion, records) if drift_check and not same else None
    return watch_verdict(
        champion.slug,
        samples,
        candidates,
        noise_k=spec.watch.noise_k,
        sla_misses=misses,
        notes=[*notes, *more],
        unchecked=unchecked,
    )


def promote_dominating(
    client,
    resolved: ResolvedSpec,
    champion: Champion,
    verdict: Verdict,
    records: Sequence[TrialRecord],
    trial_runs: dict[str, str],
) -> str:
    """Register the dominating trial's engine and move the alias to it (policy auto); returns
    the new version. The version is tagged with why and with the version it replaced."""
    slug = verdict.dominated_by or ""
    record = [r for r in records if r.slug == slug][-1]
    done = promote(
        client,
        model_name=champion.model_name,
        run_id=trial_runs[slug],
        bundle_dir=Path(record.bundle_dir or ""),
        alias=resolved.spec.registry.alias,
        tags={
            "sweep": resolved.spec.name,
            "hardware": record.hardware,
            "promoted_by": "watch (policy auto)",
            "replaces_version": champion.version,
            "promotion_reason": verdict.summary[:5000],
        },
    )
    return done.version


def record_report(client, report: WatchReport, champion: Champion | None) -> None:
    """Tags and `verdict.json` on the run's last parent run; tags on the champion's version."""
    run_id = report.parent_run_ids[-1]
    verdict = report.verdict
    tags = {
        TAG + "mode": report.mode,
        TAG + "policy": report.policy,
        TAG + "action": report.action,
        TAG + "changes": "; ".join(report.changes) or "none",
        TAG + "verdict": verdict.status if verdict else "no_champion",
        TAG + "summary": verdict.summary if verdict else report.action,
        TAG + "dominated_by": (verdict.dominated_by if verdict else None) or "none",
        TAG + "regressed": str(bool(verdict and verdict.regressed)).lower(),
    }
    if verdict is not None and verdict.unchecked_reason:
        tags[TAG + "unchecked_reason"] = verdict.unchecked_reason
    for key, value in tags.items():
        client.set_tag(run_id, key, value[:5000])
    client.log_text(run_id, report.model_dump_json(indent=2), "verdict.json")
    if champion is None or verdict is None:
        return
    if verdict.status == "unchecked":
        # Nothing was measured of the champion: its last real verdict (maybe a regression) stays.
        version_tags = {
            TAG + "unchecked_run": run_id,
            TAG + "unchecked_at": report.checked_at,
            TAG + "unchecked_reason": verdict.unchecked_reason or "",
        }
    else:
        version_tags = {
            TAG + "verdict": verdict.status,
            TAG + "summary": verdict.summary,
            TAG + "regressed": str(verdict.regressed).lower(),
            TAG + "dominated_by": verdict.dominated_by or "none",
            TAG + "checked_run": run_id,
            TAG + "checked_at": report.checked_at,
        }
    for key, value in version_tags.items():
        client.set_model_version_tag(champion.model_name, champion.version, key, value[:5000])


def now_iso() -> str:
    """UTC now, for `checked_at`."""
    return datetime.now(UTC).isoformat(timespec="seconds")
