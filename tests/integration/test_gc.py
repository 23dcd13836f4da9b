"""`enginesweep gc` on a workspace laid out as sweeps leave it, with a real MLflow registry on
sqlite: referenced entries and registered bundles stay, the rest and crash leftovers go, an
entry whose lock is held is skipped, and --dry-run removes nothing."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enginesweep.engines.manifest import write_manifest
from testkit.records import ok_record

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "enginesweep"


def bundle(root: Path, name: str, payload: bytes) -> Path:
    entry = root / "bundles" / name
    (entry / "model").mkdir(parents=True)
    (entry / "model" / "w.bin").write_bytes(payload)
    write_manifest(
        entry,
        slug=name,
        stack="reference",
        inputs={"n": name},
        versions={},
        target={"gpu": "cpu"},
        trtllm_checkpoint={},
    )
    return entry


def record(ws: Path, slug: str, bundle_dir: Path, quantized: Path) -> None:
    ok_record(slug, bundle_dir=str(bundle_dir), quantized_dir=str(quantized)).save(
        ws / "sweeps" / "s" / slug / "record.json"
    )


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    used = bundle(ws, "used", b"u" * 1000)
    bundle(ws, "orphan", b"o" * 2000)
    registered = bundle(ws, "registered", b"r" * 3000)
    bundle(ws, "busy", b"b" * 10)
    (ws / "bundles" / "crashed.tmp" / "model").mkdir(parents=True)
    (ws / "bundles" / "crashed.tmp" / "model" / "half.bin").write_bytes(b"h" * 500)
    for name in ("q-used", "q-orphan"):
        (ws / "quantized" / name).mkdir(parents=True)
        (ws / "quantized" / name / "quantize.json").write_text("{}")
    record(ws, "t1", used, ws / "quantized" / "q-used")
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    from enginesweep.engines.manifest import Manifest

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    run = client.create_run(client.create_experiment("e"))
    client.create_model_version(
        "m",
        source="runs:/x/engine",
        run_id=run.info.run_id,
        tags={"content_hash": Manifest.load(registered).content_hash},
    )
    spec = {
        "name": "gc-test",
        "model": {"repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "architecture": "smollm2-135m"},
        "stack": "reference",
        "target": {"gpu": "cpu"},
        "axes": {"quant": ["bf16"], "kv_cache": ["auto"]},
        "workload": {"isl": {"mean": 8}, "osl": {"mean": 2}},
        "workspace": str(ws),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return ws, path


def gc(spec: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "gc", str(spec), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_gc_keeps_what_records_and_the_registry_name_and_removes_the_rest(workspace) -> None:
    ws, spec = workspace
    lock = ws / "bundles" / ".locks" / "busy.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as held:  # another run is building "busy" right now
        fcntl.flock(held, fcntl.LOCK_EX)
        dry = gc(spec, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would remove 3 entries" in dry.stdout
        assert (ws / "bundles" / "orphan").exists() and (ws / "bundles" / "crashed.tmp").exists()

        done = gc(spec)
    assert done.returncode == 0, done.stderr
    remaining = {p.name for store in ("bundles", "quantized") for p in (ws / store).iterdir()}
    assert remaining == {".locks", "used", "registered", "busy", "q-used"}
    assert "removed 3 entries (0.0 MB)" in done.stdout  # orphan 2000 B + crashed 500 B + q-orphan
    assert "removed bundles/orphan" in done.stdout and "removed quantized/q-orphan" in done.stdout
    assert "skipped" in done.stderr and "busy" in done.stderr and "lock is held" in done.stderr


def test_gc_keeps_everything_when_a_record_cannot_be_read(workspace) -> None:
    ws, spec = workspace
    broken = ws / "sweeps" / "s" / "t2" / "record.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{ not json")
    done = gc(spec)
    assert done.returncode == 0, done.stderr
    assert "removed 0 entries" in done.stdout and "unreadable record" in done.stderr
    assert (ws / "bundles" / "orphan").exists()


def test_gc_refuses_while_a_trial_runs_on_the_workspace(workspace) -> None:
    ws, spec = workspace
    with (ws / ".gc.lock").open("a+") as running:  # what run_trial holds, shared
        fcntl.flock(running, fcntl.LOCK_SH)
        done = gc(spec)
    assert done.returncode == 1
    assert "a sweep or trial is running on" in " ".join(done.stderr.split())
    assert (ws / "bundles" / "orphan").exists()
