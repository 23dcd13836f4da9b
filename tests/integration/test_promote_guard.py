"""`enginesweep promote` by hand against a real MLflow registry on sqlite: a trial that meets
the spec's SLA is promoted; a failed or SLA-violating one is refused (exit 2, the reason, the
fix) unless --force, which is recorded on the version and the run; a bundle that no longer
matches its manifest is refused even with --force."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginesweep.engines.manifest import write_manifest
from enginesweep.evaluation.records import TrialRecord

pytestmark = pytest.mark.integration

RECORDS = Path(__file__).parent.parent / "fixtures" / "records" / "cpu_sweep"
SLUG = "smollm2-135m-instruct__fp8__kv-int8__tp1"


@pytest.fixture
def store(tmp_path: Path):
    """A workspace with one trial's bundle and its MLflow run (record.json as the sweep logs it)."""
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    bundle = ws / "bundles" / "b"
    (bundle / "model").mkdir(parents=True)
    (bundle / "model" / "w.bin").write_bytes(b"w" * 4096)
    write_manifest(
        bundle,
        slug=SLUG,
        stack="reference",
        inputs={"n": 1},
        versions={},
        target={"gpu": "cpu"},
        trtllm_checkpoint={},
    )
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        "smollm2-cpu-smoke", artifact_location=(ws / "mlruns").resolve().as_uri()
    )

    def trial_run(status: str = "ok") -> str:
        record = TrialRecord.load(RECORDS / f"{SLUG}.json").model_copy(
            update={
                "bundle_dir": str(bundle),
                "status": status,
                "error": "benchmark: server died" if status != "ok" else None,
            }
        )
        path = tmp_path / "record.json"
        record.save(path)
        run_id = client.create_run(experiment, run_name=SLUG).info.run_id
        client.log_param(run_id, "bundle_dir", str(bundle))
        client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, status="FINISHED" if status == "ok" else "FAILED")
        return run_id

    return client, ws, bundle, trial_run


def promote(cli, ws: Path, run_id: str, *args: str):
    return cli(
        "promote",
        "smollm2-cpu-smoke",
        run_id,
        *args,
        "--set",
        f"workspace={ws}",
        "--set",
        f"tracking.mlflow_uri=sqlite:///{ws / 'mlflow.db'}",
    )


def versions(client) -> list:
    return client.search_model_versions("name='smollm2-135m-cpu'")


def test_a_trial_meeting_the_sla_is_promoted(cli, store):
    client, ws, _, trial_run = store
    result = promote(cli, ws, trial_run())
    assert result.exit_code == 0, result.output
    assert "version 1 is now 'champion'" in result.stdout
    [version] = versions(client)
    assert "forced" not in version.tags


def test_an_sla_violating_trial_is_refused_then_forced_and_recorded(cli, store):
    client, ws, _, trial_run = store
    run_id = trial_run()
    result = promote(cli, ws, run_id, "--set", "sla.ttft_p99_ms=1")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"run {run_id} is not fit to promote: latency SLA unmet at every level (c=1: TTFT p99" in message
    assert "Pass --force to promote it anyway (recorded on the model version)" in message
    assert "Downloading artifacts" not in message  # no progress bar for one small file
    assert versions(client) == []

    forced = promote(cli, ws, run_id, "--set", "sla.ttft_p99_ms=1", "--force")
    assert forced.exit_code == 0, forced.output
    assert "(forced over: latency SLA unmet" in " ".join(forced.stdout.split())
    [version] = versions(client)
    assert version.tags["forced"] == "true"
    assert version.tags["forced_over"].startswith("latency SLA unmet")
    assert client.get_run(run_id).data.tags["enginesweep.forced_promotion"].startswith("latency SLA unmet")


def test_a_failed_trial_is_refused_unless_forced(cli, store):
    client, ws, _, trial_run = store
    run_id = trial_run(status="failed")
    result = promote(cli, ws, run_id)
    assert result.exit_code == 2, result.output
    assert "trial failed: benchmark: server died" in " ".join(result.stderr.split())
    assert versions(client) == []
    assert promote(cli, ws, run_id, "--force").exit_code == 0
    assert [v.tags["forced_over"] for v in versions(client)] == ["trial failed: benchmark: server died"]


def test_a_tampered_bundle_is_refused_even_when_forced(cli, store):
    client, ws, bundle, trial_run = store
    run_id = trial_run()
    (bundle / "model" / "w.bin").write_bytes(b"x" * 4096)  # same size, other bytes
    result = promote(cli, ws, run_id, "--force")
    assert result.exit_code == 1, result.output
    assert "content hash" in result.stderr and "does not match the manifest" in result.stderr
    assert versions(client) == []
    assert "enginesweep.forced_promotion" not in client.get_run(run_id).data.tags  # nothing forced


def test_an_unknown_run_is_named(cli, store):
    _, ws, _, _ = store
    result = promote(cli, ws, "0123456789abcdef")
    assert result.exit_code == 2, result.output
    assert "run 0123456789abcdef: not found" in " ".join(result.stderr.split())
