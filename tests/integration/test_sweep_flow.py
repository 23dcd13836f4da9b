"""The main job's code path end to end on a reduced sweep: the `enginesweep run` CLI runs the
Prefect flow (ephemeral API under the workspace) over two tiny-Llama trials, tracks them in MLflow
on sqlite, selects and promotes; then a promotion by hand and a rollback move the aliases."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from enginesweep.evaluation.reports.report_figures import PREDICTED_PAIRS
from testkit.procs import processes_matching
from testkit.tiny_sweep import CANARY, TARGET_REQUEST_RATE, SweepRun
from testkit.tiny_sweep import run_cli as cli  # every run carries the canary token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "enginesweep"


@pytest.fixture(scope="module")
def swept(tiny_sweep_run: SweepRun):
    """The session's tiny sweep (integration/conftest.py): spec, folder, what the run printed."""
    return tiny_sweep_run.spec, tiny_sweep_run.root, tiny_sweep_run.done


@pytest.fixture(scope="module")
def client(swept):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{swept[1] / 'ws' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _paired_points(record) -> int:
    """The prediction-error points a trial has: each metric at each concurrency both predicted
    and measured, where the measurement is not 0 (an error relative to 0 is undefined: a tiny
    model's tokens can arrive in one chunk, a p50 inter-token latency of 0)."""
    measured = {level.concurrency: level for level in record.benchmark.levels}
    return sum(
        1
        for level in record.predicted.per_concurrency
        if level.concurrency in measured
        for _, _, read in PREDICTED_PAIRS
        if read(measured[level.concurrency])
    )


def test_sweep_completes_and_names_a_champion(swept):
    _, _, done = swept
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "champion: tiny__" in done.stdout
    assert "measured on cpu" in done.stdout


def test_a_log_reads_the_sweeps_progress_line_by_line(swept):
    """stdout is a pipe here, as in CI: no live table, one plain `[progress` line per stage of
    each trial and per finished trial, no carriage return or ANSI code, no endless line."""
    _, root, done = swept
    lines = [line for line in done.stdout.splitlines() if line.startswith("[progress ")]
    slugs = sorted(p.parent.name for p in (root / "ws" / "sweeps" / "tiny-sweep").glob("*/record.json"))
    assert len(slugs) == 2 and lines[0] == "[progress 0/2] sweep: 2 trials to run, 1 at a time"
    for slug in slugs:
        for stage in ("checkpoint", "quantize", "build", "serve+benchmark", "accuracy"):
            assert any(f"] {slug}: {stage} (elapsed " in line for line in lines), (slug, stage, lines)
        assert any(f"] {slug}: ok after " in line for line in lines), lines
    assert lines[-1].endswith("| done 2, failed 0, ETA 0:00"), lines
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) < 400


def test_the_token_never_reaches_anything_the_sweep_wrote(swept):
    """HF_TOKEN was set for the sweep: no file under the workspace (MLflow's sqlite store and
    artifacts, Prefect's database, records, logs, bundles) nor the CLI output contains it."""
    _, root, done = swept
    assert CANARY not in done.stdout + done.stderr
    files = [p for p in (root / "ws").rglob("*") if p.is_file()]
    assert len(files) > 50 and any(p.name == "mlflow.db" for p in files)
    leaked = [str(p) for p in files if CANARY.encode() in p.read_bytes()]
    assert leaked == []


def test_parent_and_child_runs_with_stepped_metrics(client):
    experiment = client.get_experiment_by_name("enginesweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("enginesweep.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("enginesweep.kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["enginesweep.status"] == "complete"
    assert {c.info.run_name for c in children} == {"tiny__bf16__kv-auto__tp1", "tiny__fp8__kv-auto__tp1"}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["provenance.measured_on"] == "cpu"
        assert child.data.params["quant"] in ("bf16", "fp8") and child.data.params["tp"] == "1"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "by_concurrency/ttft_p99_ms")]
        assert sorted(steps) == [1, 2]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "pred_itl_ms")] == [1, 2]
        assert "perplexity_delta" in child.data.metrics and "perplexity_delta_ci_high" in child.data.metrics
        # task scores, their paired deltas with McNemar's p, and the gate's verdict in words
        metrics, tags = child.data.metrics, child.data.tags
        for name in ("enginesweep_cloze.acc", "enginesweep_recall.exact_match"):
            assert {name, f"{name}_delta", f"{name}_delta_ci_low", f"{name}_mcnemar_p"} <= set(metrics)
            assert tags[f"accuracy.verdict.{name}"].startswith(f"accuracy drop {name}")
        verdict = tags["enginesweep.accuracy_gate"]
        assert verdict in ("pass (strict)", "reject (strict)")
        assert metrics["accuracy_gate_passed"] == (1.0 if verdict.startswith("pass") else 0.0)
        if child.data.params["quant"] == "bf16":  # the baseline always passes
            assert verdict == "pass (strict)"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"record.json", "manifest.json", "aiperf"} <= artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"spec.yaml", "plan.json", "selection.txt", "selection.json"} <= parent_artifacts
    # The champion's capacity plan was replayed against one replica, and the verdict is logged.
    selection = json.loads(
        Path(
            client.download_artifacts(parents[0].info.run_id, "selection.json", str(tempfile.mkdtemp()))
        ).read_text()
    )
    check = selection["capacity_check"]
    assert check["ran"] and check["slug"] == selection["champion"] and check["holds"] in (True, False)
    per_replica = TARGET_REQUEST_RATE / selection["capacity"]["replicas"]
    assert check["per_replica_rate"] == pytest.approx(per_replica)
    assert parents[0].data.tags["enginesweep.capacity_check"] == check["verdict"]
    assert check["verdict"].startswith(f"planned {selection['capacity']['replicas']} replica(s); at ")


def test_promotion_second_promotion_and_rollback(swept, client):
    path, root, _ = swept
    champion = client.get_model_version_by_alias("tiny-engine", "champion")
    assert str(champion.version) == "1" and champion.tags["content_hash"]
    children = client.search_runs(
        [client.get_experiment_by_name("enginesweep").experiment_id], "tags.`enginesweep.kind` = 'trial'"
    )
    other = next(r for r in children if r.info.run_id != champion.run_id)

    done = cli("promote", str(path), other.info.run_id, cwd=root)
    assert done.returncode == 0, done.stderr
    assert str(client.get_model_version_by_alias("tiny-engine", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("tiny-engine", "previous").version) == "1"

    done = cli("rollback", str(path), cwd=root)
    assert done.returncode == 0, done.stderr
    assert str(client.get_model_version_by_alias("tiny-engine", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("tiny-engine", "previous").version) == "2"


def test_ui_serves_the_sweeps_store_on_loopback_and_stops(swept):
    import signal
    import urllib.request

    from enginesweep.engines.processes import http_ok, wait_ready
    from enginesweep.engines.triton.server import free_port

    path, root, _ = swept
    port = free_port()
    proc = subprocess.Popen(
        [str(SCRIPT), "ui", str(path), "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(
            proc,
            lambda: http_ok(f"http://127.0.0.1:{port}/health"),
            timeout_s=120,
            what="the MLflow UI",
            log_tail=lambda: "",
        )
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=enginesweep"
        with urllib.request.urlopen(api, timeout=10) as answer:
            assert b'"name": "enginesweep"' in answer.read().replace(b'":"', b'": "')
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    leftovers = processes_matching(f"--port {port}")
    assert leftovers == [], leftovers


def _first_sweep(client):
    """The module's first sweep run and its trial runs (the re-run test adds a second, last)."""
    experiment = client.get_experiment_by_name("enginesweep").experiment_id
    parent = client.search_runs(
        [experiment], "tags.`enginesweep.kind` = 'sweep'", order_by=["start_time ASC"]
    )[0]
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


def test_trial_runs_carry_the_headline_metrics_and_tags(swept, client):
    """The same headline set on every trial run, equal to what selection judged (selection.json
    on the parent) and to the record's engine size; tags for provenance, stack, hardware, status."""
    from enginesweep.evaluation.records import TrialRecord
    from enginesweep.evaluation.selection import Selection
    from enginesweep.evaluation.selection.headline import HEADLINE_METRICS, accuracy_delta

    _, root, _ = swept
    parent, children = _first_sweep(client)
    selection = Selection.model_validate_json(
        Path(client.download_artifacts(parent.info.run_id, "selection.json", str(root))).read_text()
    )
    assert len(children) == len(selection.rows) == 2
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        assert {k: tags[k] for k in ("provenance", "stack", "hardware", "status")} == {
            "provenance": "cpu-measured",
            "stack": "reference",
            "hardware": "cpu",
            "status": "ok",
        }
        assert set(HEADLINE_METRICS) <= set(metrics), sorted(set(HEADLINE_METRICS) - set(metrics))
        row = selection.row(child.info.run_name)
        assert metrics["goodput_rps_at_sla"] == pytest.approx(row.goodput)
        assert metrics["usd_per_1m_tokens"] == pytest.approx(row.usd_per_1m_output_tokens)
        assert metrics["accuracy_delta"] == pytest.approx(accuracy_delta(row))
        assert metrics["operating_concurrency"] == row.operating_concurrency
        # one value, at that operating point (the curves are under by_concurrency/)
        history = client.get_metric_history(child.info.run_id, "ttft_p99_ms")
        assert [m.value for m in history] == [pytest.approx(row.ttft_p99_ms)]
        assert metrics["itl_p99_ms"] == pytest.approx(row.itl_p99_ms)
        assert metrics["output_tok_s_per_gpu"] == pytest.approx(row.tok_s_per_gpu)
        trial_dir = root / "ws" / "sweeps" / "tiny-sweep" / child.info.run_name
        record = TrialRecord.load(trial_dir / "record.json")
        assert metrics["engine_size_gb"] == pytest.approx(record.engine_bytes / 1e9)


def test_the_sweep_writes_its_report_with_each_successful_trial_in_every_plot(swept, client):
    """The flow's last step: report.html/.md and PNGs in the workspace and on the parent run;
    the HTML parsed: every section, and each figure's data has the successful trials' points.
    Then `enginesweep report SPEC latest` rebuilds it from MLflow into another folder."""
    from enginesweep.evaluation.records import TrialRecord
    from testkit.report_page import ONE_POINT_PER_TRIAL, SECTIONS, parse, points_by_trial

    path, root, done = swept
    assert "sweep report not written" not in done.stdout + done.stderr
    parent, _ = _first_sweep(client)
    run_id = parent.info.run_id
    folder = root / "ws" / "reports" / "tiny-sweep" / run_id
    sweep_dir = root / "ws" / "sweeps" / "tiny-sweep"
    records = [TrialRecord.load(p) for p in sweep_dir.glob("*/record.json")]
    ok = {r.slug: r for r in records if r.status == "ok"}
    assert len(ok) == 2

    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/figures"} <= logged
    pngs = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run_id, "report/figures")}
    assert pngs == {p.name for p in (folder / "figures").glob("*.png")}
    assert {f"{figure}.png" for figure in ONE_POINT_PER_TRIAL} <= pngs

    downloaded = Path(client.download_artifacts(run_id, "report/report.html", str(root)))
    for page_path in (folder / "report.html", downloaded):
        page = parse(page_path.read_text())
        assert page.sections == SECTIONS and page.external == []
        for figure in ONE_POINT_PER_TRIAL:
            assert points_by_trial(page.figures[figure]) == {slug: 1 for slug in ok}, figure
            title = page.figures[figure]["layout"]["title"]["text"]
            assert "measured on cpu (CPU reference stack" in title
        for figure in ("latency-ttft", "latency-itl"):
            assert {t["name"]: len(t["x"]) for t in page.figures[figure]["data"]} == {
                slug: len(r.benchmark.levels) for slug, r in ok.items()
            }
        assert points_by_trial(page.figures["predicted-vs-measured"]) == {
            slug: _paired_points(r) for slug, r in ok.items()
        }
        assert "predicted:roofline" in page.figures["predicted-vs-measured"]["layout"]["title"]["text"]
        memory = page.figures["memory-breakdown"]["data"]
        assert {slug for trace in memory for slug in trace["customdata"]} == set(ok)
        # The capacity plan, and its replay against one replica with its verdict.
        text = " ".join(page.text)
        assert (
            "Capacity replay (Poisson arrivals at the per-replica rate against one replica, measured on cpu"
            in text
        )
        assert "req/s per replica TTFT p99" in text

    again = cli("report", str(path), "latest", "--out", str(root / "again"), "--no-log", cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    rebuilt = parse((root / "again" / "report.html").read_text())
    assert rebuilt.sections == SECTIONS
    assert {f: points_by_trial(rebuilt.figures[f]) for f in ONE_POINT_PER_TRIAL} == {
        f: {slug: 1 for slug in ok} for f in ONE_POINT_PER_TRIAL
    }
    assert run_id in again.stdout


def test_an_unchanged_rerun_reuses_every_trial_and_runs_nothing(swept, client):
    """Last in the module: it adds a second sweep run to the store. Nothing is quantized,
    built, served, benchmarked or evaluated again: the trials' own records say so."""
    path, root, first = swept
    assert first.returncode == 0
    records = {p.parent.name: p for p in (root / "ws" / "sweeps" / "tiny-sweep").glob("*/record.json")}
    before = {slug: p.read_bytes() for slug, p in records.items()}
    # The capacity replay is a new measurement, not a trial: off here, where nothing should run.
    done = cli("run", str(path), "--set", "planner.verify_capacity=false", cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[reuse]" in done.stdout + done.stderr
    assert {slug: p.read_bytes() for slug, p in records.items()} == before  # untouched
    parents = client.search_runs(
        [client.get_experiment_by_name("enginesweep").experiment_id],
        "tags.`enginesweep.kind` = 'sweep'",
        order_by=["start_time DESC"],
    )
    latest = parents[0].info.run_id
    children = client.search_runs([parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{latest}'")
    assert sorted(c.info.run_name for c in children) == sorted(records)  # each trial once
    assert {c.data.tags["enginesweep.executed_stages"] for c in children} == {"none (reused)"}
    # The same champion engine is not registered again (versions 1 and 2 are the earlier test's).
    assert len(client.search_model_versions("name='tiny-engine'")) == 2
    assert str(client.get_model_version_by_alias("tiny-engine", "champion").version) == "1"
    # The first run's records name what they did: every stage ran there.
    for child in client.search_runs(
        [parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[-1].info.run_id}'"
    ):
        assert child.data.tags["enginesweep.executed_stages"] == "quantize,build,serve+benchmark,accuracy"
