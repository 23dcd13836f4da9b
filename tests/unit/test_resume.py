"""When a previous trial result may stand for a new run (`flows.trial_inputs.reusable_record`): only a
successful record with the same key whose bundle still hashes to its manifest; anything else is
run again, saying why. And records are written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginesweep.engines.manifest import write_manifest
from enginesweep.engines.progress import StageClock
from enginesweep.evaluation.records import TrialRecord
from enginesweep.flows.trial_inputs import reusable_record
from testkit.records import ok_record

pytestmark = pytest.mark.unit

KEY = "k" * 64


def trial_folder(tmp_path: Path, **changes) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "model").mkdir(parents=True)
    (bundle / "model" / "weights.bin").write_bytes(b"\0" * 64)
    manifest = write_manifest(
        bundle,
        slug="t",
        stack="reference",
        inputs={"x": 1},
        versions={"stack": "reference"},
        target={"gpu": "cpu"},
        trtllm_checkpoint={},
    )
    record = ok_record(
        bundle_dir=str(bundle),
        content_hash=manifest.content_hash,
        trial_key=KEY,
        executed_stages=["quantize", "build", "serve+benchmark", "accuracy"],
    )
    record.model_copy(update=changes).save(tmp_path / "record.json")
    return tmp_path


def test_an_unchanged_successful_trial_is_reused(tmp_path: Path) -> None:
    lines: list[str] = []
    previous = reusable_record(trial_folder(tmp_path), KEY, lines.append)
    assert previous is not None and previous.trial_key == KEY and lines == []


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda d: None, None),  # control: reusable
        (lambda d: (d / "record.json").write_text("{ half a record"), "previous record unreadable"),
        (
            lambda d: (d / "bundle" / "model" / "weights.bin").write_bytes(b"\1" * 64),
            "previous bundle not reused",
        ),
        (lambda d: (d / "bundle" / "model" / "extra.bin").write_bytes(b"x"), "previous bundle not reused"),
        (lambda d: (d / "bundle" / "model" / "weights.bin").unlink(), "previous bundle not reused"),
    ],
)
def test_a_damaged_previous_result_is_run_again(tmp_path: Path, setup, why) -> None:
    folder = trial_folder(tmp_path)
    setup(folder)
    lines: list[str] = []
    previous = reusable_record(folder, KEY, lines.append)
    if why is None:
        assert previous is not None
    else:
        assert previous is None and any(why in line for line in lines), lines


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"status": "failed"}, "it failed"),
        ({"trial_key": "other"}, "its inputs changed"),
        ({"trial_key": None}, "its inputs changed"),
    ],
)
def test_a_failed_or_changed_trial_is_run_again(tmp_path: Path, changes, why) -> None:
    lines: list[str] = []
    assert reusable_record(trial_folder(tmp_path, **changes), KEY, lines.append) is None
    assert lines == [f"  previous result not reused: {why}"]


def test_no_previous_record_means_a_first_run(tmp_path: Path) -> None:
    assert reusable_record(tmp_path, KEY, print) is None


def _executed(timings: dict[str, float]) -> list[str]:
    clock = StageClock(print)
    clock.timings.update(timings)
    return clock.executed()


def test_executed_stages_leave_out_a_reused_checkpoint() -> None:
    assert _executed({"checkpoint": 0.1, "quantize": 0.0, "build": 1.0, "accuracy": 2.0}) == [
        "build",
        "accuracy",
    ]
    assert _executed({"checkpoint": 0.1, "quantize": 3.0}) == ["quantize"]
    assert _executed({"checkpoint": 0.1, "build": 0.0, "serve+benchmark": 9.0}) == ["serve+benchmark"]


def test_records_are_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "r" / "record.json"
    record = ok_record()
    record.save(path)
    assert TrialRecord.load(path) == record
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]  # no temp file left


def test_a_pinned_commit_keys_the_same_trials_as_the_branch_it_resolves_to(
    spec_file, tmp_path: Path, monkeypatch
) -> None:
    """A scheduled run pins `model.revision=<sha>`; `enginesweep run` names `main`: one commit,
    one checkpoint identity, so one trial key (else the pinned run rebuilds everything)."""
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.engines import checkpoints
    from enginesweep.evaluation.planning import expand
    from enginesweep.flows.trial_inputs import checkpoint_source, trial_key

    sha = "0123456789abcdef0123456789abcdef01234567"

    def fetch(repo_id, revision, **_):
        return checkpoints.FetchedCheckpoint(
            repo_id=repo_id,
            revision=revision,
            commit_sha=sha,
            local_dir=tmp_path,
            files={"model.safetensors": 8},
            config_sha256="c" * 64,
        )

    monkeypatch.setattr(checkpoints, "fetch_checkpoint", fetch)
    keys = set()
    for revision in ("main", sha):
        resolved = load_spec(spec_file(), [f"model.revision={revision}"])
        _, identity = checkpoint_source(resolved, tmp_path, print)
        assert identity["commit_sha"] == sha and "revision" not in identity
        keys.add(trial_key(resolved, expand(resolved).to_run[0], identity, "trtllm-engine", []))
    assert len(keys) == 1
