"""MLflow on a real PostgreSQL backend store, the team deployment's database (see
docs/team-deployment.md): a reduced sweep through the `enginesweep run` CLI with
`tracking.mlflow_uri=postgresql+psycopg2://...` tracks, selects and promotes into a throw-away
PostgreSQL server (`postgres_server.py`), and the database itself is checked with SQL, so the
test cannot pass against a sqlite store by accident.

The sweep runs the bf16 trial alone (`axes.quant=[bf16]`) at one concurrency level: what is
under test is the store, not the selection between formats nor the latency curves
(test_sweep_flow.py covers those), and one trial with one aiperf run keeps the test short.

Then the team set-up's other half: an `mlflow server` on the same PostgreSQL with a proxied
artifact store (a local folder standing in for the S3 bucket; no MinIO server can be installed
here), through which the tracker logs and promotes that trial: its artifacts must land in the
server's store, not in the client's workspace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from enginesweep.engines.processes import http_ok, stop_process_group, wait_ready
from enginesweep.engines.triton.server import free_port
from testkit.postgres_server import PostgresServer, postgres_server, require_postgres  # noqa: F401 - fixture
from testkit.tiny_sweep import write_tiny_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "enginesweep"
SLUG = "tiny__bf16__kv-auto__tp1"
MODEL = "tiny-engine"  # the registry name write_tiny_sweep's spec sets
HEADLINE = (
    "ttft_p99_ms",
    "itl_p99_ms",
    "output_tok_s_per_gpu",
    "goodput_rps_at_sla",
    "by_concurrency/output_tok_s",
    "by_concurrency/goodput_req_s",
)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, postgres_server: PostgresServer):  # noqa: F811 - the fixture imported above
    """The one-trial sweep, run by the CLI into the PostgreSQL store: (workspace root, result)."""
    root = tmp_path_factory.mktemp("pg_sweep")
    spec = write_tiny_sweep(root, tiny_llama_dir, name="pg-sweep")
    done = subprocess.run(
        [
            str(SCRIPT),
            "run",
            str(spec),
            "--set",
            "axes.quant=[bf16]",
            "--set",
            "workload.concurrency=[1]",
            "--set",
            f"tracking.mlflow_uri={postgres_server.sqlalchemy_uri}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done


@pytest.fixture(scope="module")
def client(postgres_server: PostgresServer):  # noqa: F811
    from mlflow.tracking import MlflowClient

    uri = postgres_server.sqlalchemy_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_missing_postgres_is_an_error_naming_the_setup_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without server binaries the fixture fails with the fix, it does not skip."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no initdb on PATH either
    with pytest.raises(RuntimeError, match="run scripts/setup-test-services"):
        require_postgres(search=(tmp_path,))


def test_the_sweep_runs_and_promotes_into_postgres(swept):
    _, done = swept
    assert f"champion: {SLUG}" in done.stdout
    assert "postgresql+psycopg2://" in done.stdout  # the CLI names the store it tracked in


def test_runs_and_metrics_through_mlflow(swept, client):
    experiment = client.get_experiment_by_name("enginesweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("enginesweep.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("enginesweep.kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [c.info.run_name for c in children] == [SLUG]
    child = children[0]
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert set(HEADLINE) <= set(child.data.metrics)
    # metrics are stepped by concurrency (the one level this sweep measured)
    assert [m.step for m in client.get_metric_history(child.info.run_id, "by_concurrency/ttft_p99_ms")] == [1]


def test_the_rows_are_in_the_postgres_database(swept, postgres_server):  # noqa: F811
    """Straight SQL on MLflow's tables, no MLflow in between."""
    rows = postgres_server.query(
        "SELECT r.run_uuid, r.name, r.status, kind.value FROM runs r "
        "JOIN experiments e ON e.experiment_id = r.experiment_id "
        "JOIN tags kind ON kind.run_uuid = r.run_uuid AND kind.key = 'enginesweep.kind' "
        "WHERE e.name = 'enginesweep' AND r.lifecycle_stage = 'active' ORDER BY kind.value"
    )
    assert [(name, status, kind) for _, name, status, kind in rows] == [
        ("pg-sweep", "FINISHED", "sweep"),
        (SLUG, "FINISHED", "trial"),
    ]
    trial_run = rows[1][0]
    metrics = dict(
        postgres_server.query("SELECT key, value FROM latest_metrics WHERE run_uuid = %s", (trial_run,))
    )
    assert set(HEADLINE) <= set(metrics) and metrics["by_concurrency/output_tok_s"] > 0
    aliases = postgres_server.query(
        "SELECT a.alias, v.version, v.run_id FROM registered_model_aliases a "
        "JOIN model_versions v ON v.name = a.name AND v.version = a.version WHERE a.name = %s",
        (MODEL,),
    )
    assert aliases == [("champion", 1, trial_run)]


def test_champion_version_and_artifacts_under_the_workspace(swept, client):
    """With a database URI the artifacts go to `<workspace>/mlruns` (the tracker's artifact
    root), the registered engine among them; no sqlite store is written anywhere."""
    root, _ = swept
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1" and version.tags["slug"] == SLUG
    assert version.source == f"runs:/{version.run_id}/engine"
    experiment = client.get_experiment_by_name("enginesweep")
    mlruns = (root / "ws" / "mlruns").resolve()
    assert experiment.artifact_location == mlruns.as_uri()
    run_artifacts = mlruns / version.run_id / "artifacts"  # MLflow 3's layout on a SQL store
    assert client.get_run(version.run_id).info.artifact_uri == run_artifacts.as_uri()
    assert (run_artifacts / "record.json").is_file()
    assert (run_artifacts / "engine" / "manifest.json").is_file()
    assert {a.path for a in client.list_artifacts(version.run_id)} >= {"record.json", "engine"}
    assert list(root.rglob("mlflow.db")) == []


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer):  # noqa: F811
    """`mlflow server` on database `team` of the PostgreSQL server, serving artifacts from a local
    folder (where a team points --artifacts-destination at s3://...): (its URL, that folder)."""
    postgres_server.create_database("team")
    workdir = tmp_path_factory.mktemp("tracking_server")
    store = workdir / "artifact-store"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Job execution off: with it on, `mlflow server` can leave orphaned consumer processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = workdir / "mlflow-server.log"
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                postgres_server.uri_for("team"),
                "--artifacts-destination",
                store.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(
            server,
            lambda: http_ok(f"{url}/health"),
            timeout_s=180,
            what="mlflow server",
            log_tail=lambda: log_path.read_text(errors="replace")[-3000:],
        )
        yield url, store
    finally:
        stop_process_group(server)  # its uvicorn worker too


def test_a_tracking_server_keeps_artifacts_in_its_own_store(swept, tracking_server, postgres_server):  # noqa: F811
    """What the sweep does through `tracking.mlflow_uri: http://...`: the runs and the registry
    rows go to PostgreSQL through the server, every artifact (records, the promoted engine) to
    the server's artifact store, none to the client's workspace."""
    from enginesweep.engines.registry import promote
    from enginesweep.evaluation.records import TrialRecord
    from enginesweep.evaluation.tracking import SweepTracker

    url, store = tracking_server
    root, _ = swept
    mlruns = root / "ws" / "mlruns"
    before = sorted(p for p in mlruns.rglob("*"))
    trial_dir = root / "ws" / "sweeps" / "pg-sweep" / SLUG
    record = TrialRecord.load(trial_dir / "record.json")

    tracker = SweepTracker(url, "enginesweep", artifact_root=mlruns)
    parent = tracker.start_sweep("pg-sweep", spec_yaml="name: pg-sweep\n", plan_json="{}", params={})
    child = tracker.log_trial(parent, record, trial_dir)
    promotion = promote(tracker.client, model_name=MODEL, run_id=child, bundle_dir=Path(record.bundle_dir))

    assert tracker.client.get_experiment(tracker.experiment_id).artifact_location.startswith(
        "mlflow-artifacts:"
    )
    assert promotion.version == "1"
    served = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    assert any(path.endswith(f"{parent}/artifacts/spec.yaml") for path in served), served
    assert any(path.endswith(f"{child}/artifacts/record.json") for path in served), served
    assert any(path.endswith(f"{child}/artifacts/engine/manifest.json") for path in served), served
    assert sorted(p for p in mlruns.rglob("*")) == before  # nothing written beside the client
    rows = postgres_server.query(
        "SELECT r.name, a.alias FROM runs r JOIN registered_model_aliases a ON a.name = %s "
        "JOIN model_versions v ON v.name = a.name AND v.version = a.version "
        "AND v.run_id = r.run_uuid",
        (MODEL,),
        database="team",
    )
    assert rows == [(SLUG, "champion")]
